//! Building blocks of `ciliumc demo`: a throw-away network (one node namespace, one namespace
//! and veth pair per endpoint, documentation addresses only) and bounded TCP/UDP probes run from
//! inside a namespace. Everything is removed when [`DemoNetwork`] is dropped.
//!
//! In: the manifest's endpoints. Out: namespaces, an interfaces table for the agent, probe results.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use ciliumc_ir::manifest::Manifest;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error(
        "endpoint {0}: the demo uses documentation addresses only (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24)"
    )]
    Address(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn ip(args: &[&str]) -> Result<(), DemoError> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(DemoError::Command {
            cmd: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<(), DemoError> {
    ip(&[
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        &format!("{key}={value}"),
    ])
}

fn documentation_v4(a: &str) -> bool {
    matches!(a.parse::<IpAddr>(), Ok(IpAddr::V4(v)) if {
        let o = v.octets();
        matches!((o[0], o[1], o[2]), (192, 0, 2) | (198, 51, 100) | (203, 0, 113))
    })
}

/// One pod of the demo network.
#[derive(Debug, Clone)]
pub struct DemoPod {
    pub endpoint: String,
    pub netns: String,
    pub ifname: String,
    pub ipv4: String,
}

/// The namespaces of a demo run.
#[derive(Debug)]
pub struct DemoNetwork {
    pub node: String,
    pub pods: Vec<DemoPod>,
    created: Vec<String>,
}

impl DemoNetwork {
    /// Builds the network for every endpoint of `m` with an IPv4 address.
    pub fn create(m: &Manifest, tag: &str) -> Result<DemoNetwork, DemoError> {
        let mut net = DemoNetwork {
            node: format!("{tag}n"),
            pods: Vec::new(),
            created: Vec::new(),
        };
        for ep in &m.endpoints {
            match &ep.ipv4 {
                Some(a) if documentation_v4(a) => {}
                _ => return Err(DemoError::Address(ep.name.clone())),
            }
        }
        ip(&["netns", "add", &net.node])?;
        net.created.push(net.node.clone());
        sysctl(&net.node, "net.ipv4.ip_forward", "1")?;
        for (i, ep) in m.endpoints.iter().enumerate() {
            let addr = ep.ipv4.clone().unwrap_or_default();
            let ns = format!("{tag}{i}");
            let ifname = format!("lxc{i}");
            ip(&["netns", "add", &ns])?;
            net.created.push(ns.clone());
            ip(&[
                "-n", &net.node, "link", "add", &ifname, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &net.node, "link", "set", &ifname, "up"])?;
            sysctl(&net.node, &format!("net.ipv4.conf.{ifname}.proxy_arp"), "1")?;
            sysctl(
                &net.node,
                &format!("net.ipv4.neigh.{ifname}.proxy_delay"),
                "0",
            )?;
            sysctl(
                &net.node,
                &format!("net.ipv6.conf.{ifname}.disable_ipv6"),
                "1",
            )?;
            ip(&[
                "-n",
                &net.node,
                "route",
                "add",
                &format!("{addr}/32"),
                "dev",
                &ifname,
            ])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            sysctl(&ns, "net.ipv6.conf.eth0.disable_ipv6", "1")?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "route", "add", "default", "dev", "eth0"])?;
            let out = Command::new("ip")
                .args(["-n", &ns, "-br", "link", "show", "eth0"])
                .output()?;
            let mac = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .to_string();
            // The node has no address of its own to ARP with.
            ip(&[
                "-n",
                &net.node,
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &mac,
                "dev",
                &ifname,
                "nud",
                "permanent",
            ])?;
            net.pods.push(DemoPod {
                endpoint: ep.name.clone(),
                netns: ns,
                ifname,
                ipv4: addr,
            });
        }
        Ok(net)
    }

    /// `ns/pod: ifname` lines for `ciliumc agent --interfaces`.
    pub fn interfaces(&self) -> String {
        self.pods
            .iter()
            .map(|p| format!("{}: {}\n", p.endpoint, p.ifname))
            .collect()
    }
}

impl Drop for DemoNetwork {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs `f` on a thread inside network namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let path = format!("/run/netns/{ns}");
    let h = std::thread::spawn(move || -> std::io::Result<T> {
        let fd = File::open(&path)?;
        // SAFETY: setns on an fd we own; it moves only this thread.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f())
    });
    h.join()
        .map_err(|_| std::io::Error::other("probe thread panicked"))?
}

/// Serves TCP (answers `ok`) and UDP (echo) on `port` in `ns` for `life`.
pub fn serve(ns: &str, port: u16, life: Duration) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_string();
    let h = std::thread::spawn(move || {
        let _ = in_netns(&ns, move || {
            let (Ok(t), Ok(u)) = (
                TcpListener::bind(("0.0.0.0", port)),
                UdpSocket::bind(("0.0.0.0", port)),
            ) else {
                let _ = tx.send(false);
                return;
            };
            let _ = t.set_nonblocking(true);
            let _ = u.set_nonblocking(true);
            let _ = tx.send(true);
            let end = Instant::now() + life;
            let mut buf = [0u8; 64];
            while Instant::now() < end {
                if let Ok((mut s, _)) = t.accept() {
                    let _ = s.write_all(b"ok");
                }
                if let Ok((n, from)) = u.recv_from(&mut buf) {
                    let _ = u.send_to(&buf[..n], from);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
    });
    match rx.recv() {
        Ok(true) => Ok(h),
        _ => Err(std::io::Error::other("could not bind the demo server")),
    }
}

/// One TCP connection attempt (bounded by `timeout`): whether the server's `ok` came back.
pub fn tcp_probe(ns: &str, addr: &str, port: u16, timeout: Duration) -> bool {
    let Ok(target) = format!("{addr}:{port}").parse::<SocketAddr>() else {
        return false;
    };
    in_netns(ns, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&target, timeout) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).is_ok() && &buf == b"ok"
    })
    .unwrap_or(false)
}

/// One UDP datagram (bounded by `timeout`): whether its echo came back.
pub fn udp_probe(ns: &str, addr: &str, port: u16, timeout: Duration) -> bool {
    let Ok(target) = format!("{addr}:{port}").parse::<SocketAddr>() else {
        return false;
    };
    in_netns(ns, move || {
        let Ok(s) = UdpSocket::bind("0.0.0.0:0") else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        let _ = s.send_to(b"ping", target);
        let mut buf = [0u8; 8];
        matches!(s.recv_from(&mut buf), Ok((4, _)))
    })
    .unwrap_or(false)
}
