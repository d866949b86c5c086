//! The rtnetlink requests the clsact fallback needs beyond aya's attach: create and delete the
//! clsact qdisc (telling whether the agent created it), list the filters on a clsact hook, and
//! delete one filter by interface index (so `--cleanup` needs no interface name).
//!
//! In: interface indexes, hook parents, filter priority/handle. Out: `io::Result`s carrying the
//! kernel's errno, and [`TcFilter`]s parsed from `RTM_GETTFILTER` dumps.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;
const NLA_TYPE_MASK: u16 = 0x3fff;
const ETH_P_ALL: u16 = 0x0003;

/// Parent of the clsact qdisc (`TC_H_CLSACT`, equal to `TC_H_INGRESS`).
const TC_H_CLSACT: u32 = 0xffff_fff1;
/// Handle of the clsact qdisc (`ffff:`).
const CLSACT_HANDLE: u32 = 0xffff_0000;
/// Filter parent of the ingress hook (`TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`).
pub const PARENT_INGRESS: u32 = 0xffff_fff2;
/// Filter parent of the egress hook (`TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)`).
pub const PARENT_EGRESS: u32 = 0xffff_fff3;

const NLMSG_HDR: usize = 16;
const TCMSG: usize = 20;

/// One filter on a clsact hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcFilter {
    pub priority: u16,
    pub handle: u32,
    /// `bpf`, `matchall`, `u32`, ...
    pub kind: String,
    /// For `bpf` filters: the name given at attach time and the program id.
    pub bpf_name: Option<String>,
    pub prog_id: Option<u32>,
}

struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let sock = Socket(unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: zeroed sockaddr_nl is valid (pid 0: the kernel assigns one).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: addr lives across the call and its size is passed.
        let rc = unsafe {
            libc::bind(
                sock.0.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: msg is a live slice; the kernel copies it.
        let rc = unsafe { libc::send(self.0.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Reads messages until the ack (or error) of a request, or the end of a dump; returns the
    /// payloads of the other messages as `(type, payload)`.
    fn receive(&self, dump: bool) -> io::Result<Vec<(u16, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is a live, writable buffer of the size passed.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= NLMSG_HDR {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < NLMSG_HDR || len > rest.len() {
                    return Err(io::Error::other("truncated netlink message"));
                }
                let payload = &rest[NLMSG_HDR..len];
                match kind {
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        if errno != 0 {
                            return Err(io::Error::from_raw_os_error(-errno));
                        }
                        if !dump {
                            return Ok(out);
                        }
                    }
                    NLMSG_DONE => return Ok(out),
                    _ => out.push((kind, payload.to_vec())),
                }
                rest = &rest[align(len).min(rest.len())..];
            }
        }
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// A request: netlink header + tcmsg + attributes.
fn request(kind: u16, flags: u16, ifindex: u32, handle: u32, parent: u32, info: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by `finish`
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&handle.to_ne_bytes());
    m.extend_from_slice(&parent.to_ne_bytes());
    m.extend_from_slice(&info.to_ne_bytes());
    m
}

fn attr(m: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    m.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(align(m.len()), 0);
}

fn finish(mut m: Vec<u8>) -> Vec<u8> {
    let len = (m.len() as u32).to_ne_bytes();
    m[..4].copy_from_slice(&len);
    m
}

fn transact(msg: Vec<u8>, dump: bool) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let sock = Socket::open()?;
    sock.send(&finish(msg))?;
    sock.receive(dump)
}

/// `(prio << 16) | htons(ETH_P_ALL)`: the `tcm_info` of the filters aya attaches.
fn filter_info(priority: u16) -> u32 {
    (u32::from(priority) << 16) | u32::from(ETH_P_ALL.to_be())
}

/// Adds a clsact qdisc to `ifindex`. `Ok(true)`: created now; `Ok(false)`: one was there.
pub fn add_clsact(ifindex: u32) -> io::Result<bool> {
    let mut m = request(
        RTM_NEWQDISC,
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ifindex,
        CLSACT_HANDLE,
        TC_H_CLSACT,
        0,
    );
    attr(&mut m, TCA_KIND, b"clsact\0");
    match transact(m, false) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the clsact qdisc of `ifindex` (and with it every filter on it); a missing one is
/// not an error.
pub fn delete_clsact(ifindex: u32) -> io::Result<()> {
    let mut m = request(
        RTM_DELQDISC,
        NLM_F_ACK,
        ifindex,
        CLSACT_HANDLE,
        TC_H_CLSACT,
        0,
    );
    attr(&mut m, TCA_KIND, b"clsact\0");
    match transact(m, false) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINVAL)) => Ok(()),
        r => r.map(drop),
    }
}

/// Deletes one filter; a missing one (or a missing qdisc) is not an error.
pub fn delete_filter(ifindex: u32, parent: u32, priority: u16, handle: u32) -> io::Result<()> {
    let mut m = request(
        RTM_DELTFILTER,
        NLM_F_ACK,
        ifindex,
        handle,
        parent,
        filter_info(priority),
    );
    attr(&mut m, TCA_KIND, b"bpf\0");
    match transact(m, false) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINVAL)) => Ok(()),
        r => r.map(drop),
    }
}

/// The filters on one clsact hook (none when there is no clsact qdisc). Chain headers (handle 0)
/// are left out.
pub fn filters(ifindex: u32, parent: u32) -> io::Result<Vec<TcFilter>> {
    let m = request(RTM_GETTFILTER, NLM_F_DUMP, ifindex, 0, parent, 0);
    let msgs = match transact(m, true) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {
            return Ok(Vec::new());
        }
        r => r?,
    };
    let mut out = Vec::new();
    for (kind, payload) in msgs {
        if kind != RTM_NEWTFILTER || payload.len() < TCMSG {
            continue;
        }
        let word = |o: usize| {
            u32::from_ne_bytes([payload[o], payload[o + 1], payload[o + 2], payload[o + 3]])
        };
        let (handle, info) = (word(8), word(16));
        if handle == 0 {
            continue;
        }
        let mut f = TcFilter {
            priority: (info >> 16) as u16,
            handle,
            kind: String::new(),
            bpf_name: None,
            prog_id: None,
        };
        for (t, v) in attrs(&payload[TCMSG..]) {
            match t {
                TCA_KIND => f.kind = c_string(v),
                TCA_OPTIONS => {
                    for (t, v) in attrs(v) {
                        match t {
                            TCA_BPF_NAME => f.bpf_name = Some(c_string(v)),
                            TCA_BPF_ID if v.len() >= 4 => {
                                f.prog_id = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        out.push(f);
    }
    Ok(out)
}

fn c_string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// The `(type, payload)` attributes in `buf`.
fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_laid_out_like_the_kernel_headers() {
        let mut m = request(RTM_NEWQDISC, NLM_F_ACK, 7, CLSACT_HANDLE, TC_H_CLSACT, 0);
        attr(&mut m, TCA_KIND, b"clsact\0");
        let m = finish(m);
        assert_eq!(m.len(), NLMSG_HDR + TCMSG + 12);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWQDISC);
        assert_eq!(i32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        assert_eq!(
            &m[NLMSG_HDR + TCMSG + 4..NLMSG_HDR + TCMSG + 11],
            b"clsact\0"
        );
        let parsed = attrs(&m[NLMSG_HDR + TCMSG..]);
        assert_eq!(parsed, vec![(TCA_KIND, &b"clsact\0"[..])]);
    }

    #[test]
    fn filter_info_puts_priority_high_and_protocol_in_network_order() {
        assert_eq!(filter_info(1), 0x0001_0300);
    }
}
