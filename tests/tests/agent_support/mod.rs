//! Shared pieces of the agent end-to-end tests: a node network namespace with one veth per demo
//! pod (documentation addresses 192.0.2.0/24 only), the `ciliumc` binary, a running agent, and
//! bounded TCP/UDP probes run from inside a pod's namespace. Every resource is owned by a guard
//! whose `Drop` removes it, also when the test fails.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The demo's pods: (endpoint, host-side interface, IPv4).
pub const PODS: [(&str, &str, &str); 3] = [
    ("default/deathstar-0", "ds", "192.0.2.10"),
    ("default/tiefighter", "tf", "192.0.2.20"),
    ("default/xwing", "xw", "192.0.2.30"),
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn ip(args: &[&str]) {
    let out = run(Command::new("ip").args(args));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `ciliumc` binary: `$CILIUMC_BIN`, else `target/debug/ciliumc` of this workspace.
pub fn ciliumc_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CILIUMC_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/ciliumc");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p ciliumc` first (or set CILIUMC_BIN)",
        p.display()
    );
    p
}

pub fn ciliumc(args: &[&str]) -> Output {
    run(Command::new(ciliumc_bin()).args(args))
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p =
            std::env::temp_dir().join(format!("ciliumc-agent-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ciliumc compile SRC -o DEST`.
pub fn compile(src: &Path, dest: &Path) {
    let out = ciliumc(&[
        "compile",
        &src.display().to_string(),
        "-o",
        &dest.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "compile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/demo")
}

/// A node namespace plus one namespace per demo pod, wired by veth pairs. The node side routes
/// between pods (static neighbours, proxy ARP towards the pods); nothing leaves the namespaces.
pub struct Topology {
    pub node: String,
    pub pods: Vec<String>,
}

impl Topology {
    pub fn new(tag: &str) -> Topology {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let base = format!("cca{}{tag}{n}", std::process::id() % 100_000);
        let t = Topology {
            node: format!("{base}n"),
            pods: Vec::new(),
        };
        let mut t = t;
        ip(&["netns", "add", &t.node]);
        sysctl(&t.node, "net.ipv4.ip_forward", "1");
        for (_, ifname, addr) in PODS {
            let ns = format!("{base}{ifname}");
            ip(&["netns", "add", &ns]);
            t.pods.push(ns.clone());
            ip(&[
                "-n", &t.node, "link", "add", ifname, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &t.node, "link", "set", ifname, "up"]);
            sysctl(&t.node, &format!("net.ipv4.conf.{ifname}.proxy_arp"), "1");
            sysctl(
                &t.node,
                &format!("net.ipv4.neigh.{ifname}.proxy_delay"),
                "0",
            );
            sysctl(
                &t.node,
                &format!("net.ipv6.conf.{ifname}.disable_ipv6"),
                "1",
            );
            ip(&[
                "-n",
                &t.node,
                "route",
                "add",
                &format!("{addr}/32"),
                "dev",
                ifname,
            ]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            sysctl(&ns, "net.ipv6.conf.eth0.disable_ipv6", "1");
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "route", "add", "default", "dev", "eth0"]);
            let mac = String::from_utf8_lossy(
                &run(Command::new("ip").args(["-n", &ns, "-br", "link", "show", "eth0"])).stdout,
            )
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
            // The node has no IPv4 address of its own, so it cannot ARP for the pods.
            ip(&[
                "-n",
                &t.node,
                "neigh",
                "replace",
                addr,
                "lladdr",
                &mac,
                "dev",
                ifname,
                "nud",
                "permanent",
            ]);
        }
        t
    }

    /// The namespace of pod `ifname` (`ds`, `tf`, `xw`).
    pub fn pod(&self, ifname: &str) -> String {
        let i = PODS.iter().position(|p| p.1 == ifname).unwrap();
        self.pods[i].clone()
    }

    pub fn interfaces_file(&self, dir: &Path) -> PathBuf {
        let p = dir.join("interfaces");
        let text: String = PODS
            .iter()
            .map(|(ep, ifname, _)| format!("{ep}: {ifname}\n"))
            .collect();
        std::fs::write(&p, text).unwrap();
        p
    }
}

fn sysctl(ns: &str, key: &str, value: &str) {
    let out = run(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        &format!("{key}={value}"),
    ]));
    assert!(
        out.status.success(),
        "sysctl {key}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.pods.iter().chain(std::iter::once(&self.node)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A running `ciliumc agent` in the node namespace (network namespace only: its bpffs mount
/// lives in the test's mount namespace, like a node agent's). Drop kills it and runs
/// `--cleanup`.
pub struct Agent {
    pub child: Option<Child>,
    pub state: PathBuf,
    pub node: String,
    pub interfaces: PathBuf,
}

impl Agent {
    pub fn start(node: &str, state: &Path, interfaces: &Path) -> Agent {
        let mut a = Agent {
            child: None,
            state: state.into(),
            node: node.into(),
            interfaces: interfaces.into(),
        };
        a.spawn();
        a
    }

    pub fn spawn(&mut self) {
        let sock = self.state.join("agent.sock");
        let _ = std::fs::remove_file(&sock);
        let log = File::create(self.state.with_extension("log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.node))
            .arg(ciliumc_bin())
            .args(["agent", "--state"])
            .arg(&self.state)
            .arg("--interfaces")
            .arg(&self.interfaces)
            .stdout(Stdio::null())
            .stderr(log)
            .env("CILIUMC_LOG", "info")
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_socket(&sock, Duration::from_secs(10), || self.log());
    }

    /// The agent's stderr, without terminal colour codes.
    pub fn log(&self) -> String {
        agent_log(&self.state)
    }

    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    /// `ciliumc apply OUT`; panics with the agent's log when refused.
    pub fn apply_expect_ok(&self, out: &Path) {
        let r = self.apply(out);
        assert!(
            r.status.success(),
            "apply: {} {}",
            String::from_utf8_lossy(&r.stderr),
            self.log()
        );
    }

    pub fn apply(&self, out: &Path) -> Output {
        ciliumc(&[
            "apply",
            &out.display().to_string(),
            "--state",
            &self.state.display().to_string(),
            "--json",
        ])
    }

    pub fn status(&self) -> serde_json::Value {
        let out = ciliumc(&[
            "status",
            "--state",
            &self.state.display().to_string(),
            "-o",
            "json",
        ]);
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `observe -o json` with extra arguments, one flow per element.
    pub fn observe(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        let state = self.state.display().to_string();
        let mut args = vec!["observe", "--state", &state, "-o", "json", "--last", "4095"];
        args.extend_from_slice(extra);
        let out = ciliumc(&args);
        assert!(
            out.status.success(),
            "observe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Pinned link files and the `(link id, prog id)` of each, from bpftool.
    pub fn pinned_links(&self) -> Vec<(String, u64, u64)> {
        let dir = self.state.join("bpffs/links");
        let mut v = Vec::new();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let out = run(Command::new("bpftool")
                .args(["-j", "link", "show", "pinned"])
                .arg(e.path()));
            let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            v.push((
                e.file_name().to_string_lossy().to_string(),
                j["id"].as_u64().unwrap_or(0),
                j["prog_id"].as_u64().unwrap_or(0),
            ));
        }
        v.sort();
        v
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        let _ = Command::new(ciliumc_bin())
            .args(["agent", "--cleanup", "--state"])
            .arg(&self.state)
            .output();
    }
}

/// Ids of all links / programs in the kernel (for leak checks).
pub fn kernel_ids(what: &str) -> Vec<u64> {
    let out = run(Command::new("bpftool").args(["-j", what, "list"]));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    j.as_array()
        .map(|a| a.iter().filter_map(|x| x["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// Runs `f` on a thread that entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap();
        // SAFETY: setns on an fd we own; it changes only this thread's network namespace.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// A TCP server in `ns` on `port` answering `ok` to each connection, for at most `life`.
pub fn tcp_server(ns: &str, port: u16, life: Duration) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_string();
    let h = std::thread::spawn(move || {
        in_netns(&ns, move || {
            let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            let end = Instant::now() + life;
            while Instant::now() < end {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(b"ok");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    });
    rx.recv().unwrap();
    h
}

/// Whether a TCP connection from `ns` to `addr:port` completes and reads the server's `ok`.
pub fn tcp_ok(ns: &str, addr: &str, port: u16) -> bool {
    let target: SocketAddr = format!("{addr}:{port}").parse().unwrap();
    in_netns(ns, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_millis(1500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(1500)));
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).is_ok() && &buf == b"ok"
    })
}

/// A UDP echo server in `ns` on `port`, for at most `life`.
pub fn udp_echo(ns: &str, port: u16, life: Duration) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_string();
    let h = std::thread::spawn(move || {
        in_netns(&ns, move || {
            let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            tx.send(()).unwrap();
            let end = Instant::now() + life;
            let mut buf = [0u8; 64];
            while Instant::now() < end {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        })
    });
    rx.recv().unwrap();
    h
}

/// Whether a UDP datagram from `ns` to `addr:port` is echoed (3 tries, bounded).
pub fn udp_ok(ns: &str, addr: &str, port: u16) -> bool {
    let target: SocketAddr = format!("{addr}:{port}").parse().unwrap();
    in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 8];
        for _ in 0..3 {
            let _ = s.send_to(b"ping", target);
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return &buf[..n] == b"ping";
            }
        }
        false
    })
}

/// A stream of numbered UDP packets at `pps` from `client_ns` to `addr:port` served in
/// `server_ns`; [`UdpLoad::stop`] returns (sent, received, misordered).
pub struct UdpLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sender: Option<std::thread::JoinHandle<u64>>,
    receiver: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl UdpLoad {
    pub fn start(server_ns: &str, client_ns: &str, addr: &str, port: u16, pps: u64) -> UdpLoad {
        use std::sync::atomic::AtomicBool;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let receiver = {
            let (stop, ns) = (stop.clone(), server_ns.to_string());
            std::thread::spawn(move || {
                in_netns(&ns, move || {
                    let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    tx.send(()).unwrap();
                    let (mut got, mut misordered, mut next) = (0u64, 0u64, 0u64);
                    let mut idle = 0;
                    let mut buf = [0u8; 64];
                    loop {
                        match s.recv_from(&mut buf) {
                            Ok((n, _)) if n >= 8 => {
                                idle = 0;
                                let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
                                if seq < next {
                                    misordered += 1;
                                }
                                next = seq + 1;
                                got += 1;
                            }
                            _ => {
                                if stop.load(Ordering::Relaxed) {
                                    idle += 1;
                                    if idle > 6 {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    (got, misordered)
                })
            })
        };
        rx.recv().unwrap();
        let target: SocketAddr = format!("{addr}:{port}").parse().unwrap();
        let sender = {
            let (stop, ns) = (stop.clone(), client_ns.to_string());
            std::thread::spawn(move || {
                in_netns(&ns, move || {
                    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                    s.connect(target).unwrap();
                    let start = Instant::now();
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let due = start.elapsed().as_micros() as u64 * pps / 1_000_000;
                        while seq < due {
                            if s.send(&seq.to_le_bytes()).is_ok() {
                                seq += 1;
                            }
                        }
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    seq
                })
            })
        };
        UdpLoad {
            stop,
            sender: Some(sender),
            receiver: Some(receiver),
        }
    }

    pub fn stop(mut self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self.sender.take().map(|h| h.join().unwrap()).unwrap_or(0);
        let (got, mis) = self
            .receiver
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or((0, 0));
        (sent, got, mis)
    }
}

impl Drop for UdpLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The agent's stderr log next to its state directory (all runs), without terminal colour codes.
pub fn agent_log(state: &Path) -> String {
    let raw = std::fs::read_to_string(state.with_extension("log")).unwrap_or_default();
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits until the agent's socket exists; panics with `log()` after `within`.
pub fn wait_for_socket(sock: &Path, within: Duration, log: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "agent did not come up: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kill -9` and reap, if running.
pub fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The demo's policy on real TCP: tiefighter → deathstar:80 passes, xwing → deathstar:80 does not.
pub fn assert_demo_enforced(topo: &Topology) {
    let (ds, tf, xw) = (topo.pod("ds"), topo.pod("tf"), topo.pod("xw"));
    let srv = tcp_server(&ds, 80, Duration::from_secs(8));
    assert!(
        tcp_ok(&tf, "192.0.2.10", 80),
        "tiefighter -> deathstar:80/TCP must be allowed"
    );
    assert!(
        !tcp_ok(&xw, "192.0.2.10", 80),
        "xwing -> deathstar:80/TCP must be denied"
    );
    srv.join().unwrap();
}

/// Whether `done()` holds within `limit` (polled every 20 ms): for kernel objects that go away
/// asynchronously (programs and links are freed after an RCU grace period).
pub fn gone_within(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
