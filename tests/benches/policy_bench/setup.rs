//! Bench setup: the generated policy, the anchor and our program loaded with equivalent maps.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ciliumc_compiler::compile::{self, DirectionObject, MapPinning};
use ciliumc_compiler::lower::{self, maps};
use ciliumc_ir::cidr::Cidr;
use ciliumc_ir::endpoint::{Endpoint, EndpointKind, WorkloadRef};
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{
    Direction, DirectionPolicy, EndpointPolicy, L4Match, PeerSet, PortRange, Protocol, Rule,
    RuleId, RuleKind,
};
use ciliumc_runtime::event_ring::{self, MappedRings};
use ciliumc_tests::loader::{aya_map_view, aya_program_fd, load_object_aya};

use ciliumc_tests::packet::{Packet, tcp_flags};
use ciliumc_tests::sys::{self, TestRunOutput};

const ENDPOINT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const LOCAL_IDENTITY: u32 = 300;
const FIRST_PEER_IDENTITY: u32 = 1000;

/// Peers: every documentation address but the endpoint's, each its own identity.
pub fn peers() -> Vec<(Ipv4Addr, u32)> {
    let mut out = Vec::new();
    for (net, from) in [
        ([198u8, 51, 100], 1u8),
        ([203, 0, 113], 1),
        ([192, 0, 2], 100),
    ] {
        for host in from..=254 {
            let id = FIRST_PEER_IDENTITY + out.len() as u32;
            out.push((Ipv4Addr::new(net[0], net[1], net[2], host), id));
        }
    }
    out
}

/// A generated ingress policy: rule i allows peer `i % P` on TCP port `1000 + (37 i mod K)`, K = 5000
/// or `CILIUMC_BENCH_PORTS`.
pub struct Spec {
    pub rules: usize,
    pub peers: Vec<(Ipv4Addr, u32)>,
    pub policy: DirectionPolicy,
    /// (peer index, port) of every rule.
    pub pairs: Vec<(usize, u16)>,
}

impl Spec {
    pub fn new(rules: usize) -> Spec {
        let peers = peers();
        // `CILIUMC_BENCH_PORTS=k`: rules open only k distinct ports (as services do), instead of
        // one port per rule.
        let distinct_ports = std::env::var("CILIUMC_BENCH_PORTS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&k| k > 0)
            .unwrap_or(5000);
        let pairs: Vec<(usize, u16)> = (0..rules)
            .map(|i| (i % peers.len(), 1000 + ((i * 37) % distinct_ports) as u16))
            .collect();
        let rules_ir = pairs
            .iter()
            .enumerate()
            .map(|(i, (p, port))| Rule {
                id: RuleId(1 + i as u32),
                kind: RuleKind::Allow,
                peers: PeerSet::identities([NumericIdentity(peers[*p].1)]),
                l4: Some(vec![L4Match::new(Protocol::Tcp, PortRange::single(*port))]),
            })
            .collect();
        Spec {
            rules,
            policy: DirectionPolicy::enforced(Direction::Ingress, rules_ir),
            peers,
            pairs,
        }
    }

    pub fn packet(&self, class: PacketClass) -> Vec<u8> {
        let (peer, port) = match class {
            PacketClass::AllowedLast => {
                let (p, port) = self.pairs[self.rules - 1];
                (self.peers[p].0, port)
            }
            PacketClass::AllowedFirst => {
                let (p, port) = self.pairs[0];
                (self.peers[p].0, port)
            }
            PacketClass::DeniedKnownPeer => (self.peers[0].0, 999),
            PacketClass::DeniedWorld => (Ipv4Addr::new(203, 0, 113, 255), 80),
        };
        let packet = Packet::ipv4(peer, ENDPOINT).tcp(40000, port);
        match class {
            // Segments of a connection: the first run finds no entry, policy allows and records
            // the flow; every later run is an established packet.
            PacketClass::AllowedFirst | PacketClass::AllowedLast => {
                packet.tcp_flags(tcp_flags::ACK).build()
            }
            // Connection attempts, judged by policy every time.
            PacketClass::DeniedKnownPeer | PacketClass::DeniedWorld => packet.build(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum PacketClass {
    AllowedFirst,
    AllowedLast,
    DeniedKnownPeer,
    DeniedWorld,
}

impl PacketClass {
    pub const ALL: [PacketClass; 4] = [
        PacketClass::AllowedFirst,
        PacketClass::AllowedLast,
        PacketClass::DeniedKnownPeer,
        PacketClass::DeniedWorld,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            PacketClass::AllowedFirst => "allowed (rule 1; established after run 1)",
            PacketClass::AllowedLast => "allowed (last rule; established after run 1)",
            PacketClass::DeniedKnownPeer => "denied, known peer (new flow, drop event)",
            PacketClass::DeniedWorld => "denied, world (new flow, drop event)",
        }
    }
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Builds the anchor with clang-19, as its README says.
pub fn build_anchor() -> Result<Vec<u8>, String> {
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/anchors/cilium_style_policy.c"
    );
    let out = std::env::temp_dir().join(format!("ciliumc_anchor_{}.o", std::process::id()));
    let status = Command::new("clang-19")
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
            src,
            "-o",
        ])
        .arg(&out)
        .status()
        .map_err(|e| format!("clang-19: {e}"))?;
    if !status.success() {
        return Err(format!("clang-19 exited with {status}"));
    }
    let bytes = std::fs::read(&out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out);
    Ok(bytes)
}

pub struct Anchor {
    ebpf: aya::Ebpf,
}

impl Anchor {
    pub fn load(elf: &[u8], spec: &Spec) -> Result<Anchor, String> {
        let ebpf = load_object_aya(elf).map_err(|e| e.to_string())?;
        {
            let ipc = aya_map_view(&ebpf, "anchor_ipcache").map_err(|e| e.to_string())?;
            for (addr, id) in &spec.peers {
                let mut key = 32u32.to_le_bytes().to_vec();
                key.extend_from_slice(&addr.octets());
                ipc.update(&key, &id.to_le_bytes(), 0)
                    .map_err(|e| e.to_string())?;
            }
            let pol = aya_map_view(&ebpf, "anchor_policy").map_err(|e| e.to_string())?;
            for (p, port) in &spec.pairs {
                let mut key = spec.peers[*p].1.to_le_bytes().to_vec();
                key.extend_from_slice(&[0, 6]);
                key.extend_from_slice(&port.to_le_bytes());
                pol.update(&key, &[0, 0, 0, 0], 0)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(Anchor { ebpf })
    }

    pub fn run(&self, packet: &[u8], repeat: u32) -> Result<TestRunOutput, String> {
        let fd = aya_program_fd(&self.ebpf, "anchor_ingress").map_err(|e| e.to_string())?;
        sys::test_run(fd, packet, repeat).map_err(|e| e.to_string())
    }
}

pub fn compile_ours(spec: &Spec) -> Result<DirectionObject, String> {
    compile::direction_object(
        NumericIdentity(LOCAL_IDENTITY),
        &spec.policy,
        Direction::Ingress,
        "bench",
        MapPinning::Private,
    )
    .map_err(|e| e.to_string())
}

/// How many compiles the compile-time columns average: enough to be stable, few above 1,000
/// rules (each takes milliseconds there).
fn compile_runs(spec: &Spec) -> u32 {
    if spec.rules <= 1000 { 50 } else { 2 }
}

/// (lowering only, lowering + codegen + ELF emit) per endpoint direction, averaged over enough
/// runs to be stable.
pub fn codegen_time(spec: &Spec) -> Option<(Duration, Duration)> {
    let runs = compile_runs(spec);
    let options = lower::LowerOptions::for_tag("bench");
    let started = Instant::now();
    for _ in 0..runs {
        lower::lower_direction_with(
            NumericIdentity(LOCAL_IDENTITY),
            &spec.policy,
            Direction::Ingress,
            &options,
        )
        .ok()?;
    }
    let lowering = started.elapsed() / runs;
    let started = Instant::now();
    for _ in 0..runs {
        compile_ours(spec).ok()?;
    }
    Some((lowering, started.elapsed() / runs))
}

/// The bench's endpoint as `ciliumc compile` sees it: the generated policy on ingress, egress
/// unenforced.
pub fn endpoint(spec: &Spec) -> (Endpoint, EndpointPolicy) {
    let endpoint = Endpoint {
        name: "default/bench".into(),
        namespace: "default".into(),
        pod: "bench".into(),
        node: None,
        identity: NumericIdentity(LOCAL_IDENTITY),
        ipv4: Some(ENDPOINT),
        ipv6: None,
        kind: EndpointKind::Pod,
        workload: WorkloadRef {
            kind: "Pod".into(),
            name: "bench".into(),
        },
        labels: Default::default(),
        named_ports: Vec::new(),
    };
    let policy = EndpointPolicy {
        ingress: spec.policy.clone(),
        egress: DirectionPolicy::unenforced(),
    };
    (endpoint, policy)
}

/// Lowering + codegen + ELF emit of the endpoint's object (both programs, maps named per
/// endpoint, as `ciliumc compile` writes it), averaged as [`codegen_time`] does.
pub fn endpoint_compile_time(spec: &Spec) -> Result<Duration, String> {
    let runs = compile_runs(spec);
    let (ep, policy) = endpoint(spec);
    let started = Instant::now();
    for _ in 0..runs {
        compile::endpoint_object_with_maps(&ep, &policy, MapPinning::ByName, None)
            .map_err(|e| e.to_string())?;
    }
    Ok(started.elapsed() / runs)
}

/// Program load times (verifier + JIT) of `object`, `runs` times: each run creates the object's
/// maps with aya first, then times each program's `load()` alone. One load is noisy on a shared
/// VM; report the median and the minimum.
pub fn program_load_times(elf: &[u8], runs: usize) -> Result<Vec<Duration>, String> {
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut ebpf = aya::EbpfLoader::new()
            .load(elf)
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        for (name, program) in ebpf.programs_mut() {
            let aya::programs::Program::SchedClassifier(p) = program else {
                return Err(format!("{name}: not a classifier"));
            };
            p.load().map_err(|e| format!("{name}: {e}"))?;
        }
        out.push(started.elapsed());
    }
    out.sort();
    Ok(out)
}

pub struct Ours {
    ebpf: aya::Ebpf,
    /// Map creation and program load.
    pub object_time: Duration,
    pub verified_insns: u32,
    pub insns: u32,
    stop: Arc<AtomicBool>,
    drained: Arc<AtomicU64>,
    drainer: Option<std::thread::JoinHandle<()>>,
}

impl Ours {
    pub fn load(object: &DirectionObject, spec: &Spec) -> Result<Ours, String> {
        let started = Instant::now();
        let mut ebpf = aya::EbpfLoader::new()
            .load(&object.bytes)
            .map_err(|e| e.to_string())?;
        for (name, program) in ebpf.programs_mut() {
            let aya::programs::Program::SchedClassifier(p) = program else {
                return Err(format!("{name}: not a classifier"));
            };
            p.load().map_err(|e| format!("{name}: {e}"))?;
        }
        let object_time = started.elapsed();
        for (name, entries) in &object.maps {
            let view = aya_map_view(&ebpf, name).map_err(|e| e.to_string())?;
            for (k, v) in entries {
                view.update(k, v, 0).map_err(|e| format!("{name}: {e}"))?;
            }
        }
        let ipcache: Vec<(Cidr, u32)> = spec
            .peers
            .iter()
            .map(|(a, id)| (Cidr::host(IpAddr::V4(*a)), *id))
            .collect();
        for (name, entries) in maps::ipcache_map_entries(&ipcache) {
            let view = aya_map_view(&ebpf, &name).map_err(|e| e.to_string())?;
            for (k, v) in entries {
                view.update(&k, &v, 0).map_err(|e| format!("{name}: {e}"))?;
            }
        }
        let (name, _) = lower::program_for(Direction::Ingress);
        let info = {
            let fd = aya_program_fd(&ebpf, name).map_err(|e| e.to_string())?;
            sys::prog_info(fd.as_fd()).map_err(|e| e.to_string())?
        };
        // The agent drains the rings while traffic flows: so does the bench, the same way.
        let mut rings = match ebpf.map(maps::EVENTS) {
            Some(aya::maps::Map::Array(data)) => {
                MappedRings::map(data).map_err(|e| e.to_string())?
            }
            _ => return Err("no events array".into()),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let drained = Arc::new(AtomicU64::new(0));
        let drainer = {
            let (stop, drained) = (stop.clone(), drained.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let d = event_ring::drain(&mut rings, |_| {});
                    drained.fetch_add(d.records, Ordering::Relaxed);
                    // As the agent: a timed poll.
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            })
        };
        Ok(Ours {
            ebpf,
            object_time,
            verified_insns: info.verified_insns,
            insns: info.xlated_prog_len / 8,
            stop,
            drained,
            drainer: Some(drainer),
        })
    }

    pub fn run(&self, packet: &[u8], repeat: u32) -> Result<TestRunOutput, String> {
        let (name, _) = lower::program_for(Direction::Ingress);
        let fd = aya_program_fd(&self.ebpf, name).map_err(|e| e.to_string())?;
        sys::test_run(fd, packet, repeat).map_err(|e| e.to_string())
    }

    /// Stops the drainer; returns (events read, 0).
    pub fn stop_events(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.drainer.take() {
            let _ = t.join();
        }
        (self.drained.load(Ordering::Relaxed), 0)
    }
}
