//! Flow events on demand for a running agent: the deathstar's ingress program of the demo,
//! loaded again with aya so that it shares the agent's pinned maps (ipcache, CT, `ciliumc_events`,
//! `ciliumc_evlost`), run with `BPF_PROG_TEST_RUN` on a UDP packet the policy denies. A denied
//! packet records no connection, so every run writes one drop event into the agent's ring.
//! Also reads an agent's memory and CPU time from /proc. Used by `agent_events_poll` and by the
//! `agent_events` bench (through `#[path]`).
//!
//! In: a compile output of `testdata/demo` and the agent's pinned-maps directory. Out: runs.

#![allow(dead_code)]

use std::path::Path;

use ciliumc_tests::Packet;

/// The demo endpoint whose ingress program is run, and that program.
const OBJECT: &str = "bpf/default_deathstar-0.o";
const PROGRAM: &str = "cil_to_container";
/// `TC_ACT_SHOT`.
pub const TC_DROP: u32 = 2;

/// The loaded program (its maps are the agent's pins) and the denied packet.
pub struct EventGen {
    ebpf: aya::Ebpf,
    packet: Vec<u8>,
}

impl EventGen {
    /// Loads the program of `out_dir` against the maps pinned in `pinned_maps`; events carry
    /// `source_port` (tiefighter 192.0.2.20 -> deathstar 192.0.2.10:80/UDP, denied: the deathstar
    /// allows only TCP/80).
    pub fn new(out_dir: &Path, pinned_maps: &Path, source_port: u16) -> Result<EventGen, String> {
        let elf = std::fs::read(out_dir.join(OBJECT))
            .map_err(|e| format!("{}: {e}", out_dir.join(OBJECT).display()))?;
        let ebpf = ciliumc_tests::loader::load_object_aya_pinned(&elf, pinned_maps)
            .map_err(|e| format!("loading {OBJECT}: {e}"))?;
        let packet = Packet::ipv4([192, 0, 2, 20], [192, 0, 2, 10])
            .udp(source_port, 80)
            .payload(b"event")
            .build();
        Ok(EventGen { ebpf, packet })
    }

    /// Runs the program `repeat` times in one `BPF_PROG_TEST_RUN` (≥ 1); returns its verdict.
    pub fn run(&self, repeat: u32) -> Result<u32, String> {
        let fd = ciliumc_tests::loader::aya_program_fd(&self.ebpf, PROGRAM)
            .map_err(|e| e.to_string())?;
        ciliumc_tests::sys::test_run(fd, &self.packet, repeat.max(1))
            .map(|o| o.retval)
            .map_err(|e| e.to_string())
    }
}

/// `VmRSS` and `VmHWM` of `pid`, KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User plus system CPU time of `pid` so far, seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime
    // are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

/// Stops (`SIGSTOP`) or resumes (`SIGCONT`) `pid`; after `SIGSTOP`, returns only once every
/// thread of `pid` is stopped (the signal is delivered asynchronously, and a reader thread still
/// running would drain the ring).
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child process this test started.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
    if sig != libc::SIGSTOP {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten();
        let all_stopped = tasks.into_iter().all(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // The state is the first field after the parenthesised command name.
            matches!(
                stat.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().next()),
                Some("T" | "t")
            )
        });
        if all_stopped {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pid} did not stop within 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
