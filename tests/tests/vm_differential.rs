//! Differential test of the userspace interpreter (`ciliumc_targets::vm`) against the kernel: for
//! random policies from the shared generator, each compiled program runs on the same packets in
//! the kernel (`BPF_PROG_TEST_RUN` through aya) and in the VM, with the same map contents. The
//! return value and the event records (bytes, timestamp excluded) must be equal on every
//! packet. Connection tracking is not reset between packets on either side, and some packets
//! repeat earlier flows or their replies, so established-flow paths are compared too; some
//! packets are truncated, so parse failures and their drop events are compared as well; some are
//! trains of IP fragments (in order and reversed). After each policy set the hash maps the
//! programs write (connection tracking, fragment tracking) must hold the same entries. The cases
//! fill the ipcache in turn three ways (`IpcacheFill`): trie only, trie plus exact-match maps,
//! and the compiler's own entries with the bucket arrays on.
//!
//! `CILIUMC_VM_DIFF_CASES` changes the number of policy sets (default 200, 100 packets each).

mod policygen;

use std::net::IpAddr;

use aya::maps::MapData;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use ciliumc_compiler::lower::{self, maps};
use ciliumc_ir::policy::{Direction, Protocol};
use ciliumc_runtime::event_ring::{self, LookupRings, MappedRings};
use ciliumc_targets::elf::MapType;
use ciliumc_targets::vm::Vm;
use ciliumc_tests::kernel_or_skip;
use ciliumc_tests::loader::aya_map_view;
use ciliumc_tests::packet::Packet;
use policygen::*;

fn object(case: &Case) -> Vec<u8> {
    private_object(&case.policy, case.direction)
}

/// Key and value bytes.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;
/// Map name → initial entries.
type MapFill = Vec<(&'static str, Entries)>;

/// How a case fills the ipcache.
#[derive(Clone, Copy, Debug)]
enum IpcacheFill {
    /// Every prefix in the trie (as `ciliumc trace` loads it).
    TrieOnly,
    /// Every prefix in the trie, host routes also in the exact-match maps; buckets off.
    ExactFront,
    /// As the compiler's manifest: buckets, exact-match maps, the other prefixes in the trie.
    Compiled,
}

/// Map name → initial entries for a fill.
fn map_entries(case: &Case, fill: IpcacheFill) -> MapFill {
    if let IpcacheFill::Compiled = fill {
        let all = maps::ipcache_map_entries(&case.ipcache.0);
        return [
            maps::IPCACHE,
            maps::IPCACHE4,
            maps::IPCACHE6,
            maps::IPCACHE4_BUCKETS,
            maps::IPCACHE6_BUCKETS,
            maps::IPCACHE_INFO,
        ]
        .into_iter()
        .map(|name| {
            let entries = all
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, e)| e.clone())
                .unwrap_or_default();
            (name, entries)
        })
        .collect();
    }
    let exact_front = matches!(fill, IpcacheFill::ExactFront);
    let mut lpm = Vec::new();
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (cidr, id) in &case.ipcache.0 {
        lpm.push((maps::ipcache_key(cidr), maps::ipcache_value(*id)));
        if exact_front && cidr.prefix_len() == if cidr.addr().is_ipv4() { 32 } else { 128 } {
            match cidr.addr() {
                IpAddr::V4(a) => v4.push((a.octets().to_vec(), maps::ipcache_value(*id))),
                IpAddr::V6(a) => v6.push((a.octets().to_vec(), maps::ipcache_value(*id))),
            }
        }
    }
    let info = maps::ipcache_info_entry(lpm.iter().map(|(k, _)| k.as_slice()));
    vec![
        (maps::IPCACHE, lpm),
        (maps::IPCACHE4, v4),
        (maps::IPCACHE6, v6),
        (maps::IPCACHE_INFO, vec![info]),
    ]
}

struct Kernel {
    ebpf: aya::Ebpf,
    rings: MappedRings,
}

/// The events the VM wrote since `read` (its count of records already taken from its ring).
fn vm_events(vm: &Vm, read: &mut u64) -> Vec<Vec<u8>> {
    let map = vm.map(maps::EVENTS).expect("events map");
    let mut rings = LookupRings::new(|i: u32| map.get(&i.to_le_bytes()), vec![*read]);
    let mut events = Vec::new();
    event_ring::drain(&mut rings, |e| events.push(e.to_vec()));
    *read = rings.tails()[0];
    events
}

/// Smaller maps than deployed (loading dominates the test's time, and preallocated LRU maps and
/// the 19 MB of event rings are the slow part), set alike in the kernel and the VM; no case comes
/// near these sizes. The event rings: one per CPU this machine can have (`BPF_PROG_TEST_RUN` runs
/// on the caller's CPU).
fn smaller_maps() -> Vec<(&'static str, u32)> {
    vec![
        (maps::CT, 4096),
        ("ciliumc_frag4", 1024),
        ("ciliumc_frag6", 1024),
        (maps::EVENTS, possible_cpus() * maps::EVENT_RING_STRIDE),
    ]
}

/// The number of CPUs the kernel may ever bring up (`/sys/devices/system/cpu/possible`, "0-N").
fn possible_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            let last = s.trim().rsplit(['-', ',']).next()?.to_string();
            last.parse::<u32>().ok()
        })
        .map_or(maps::EVENT_RING_DEFAULT_CPUS, |n| n + 1)
}

impl Kernel {
    fn load(elf: &[u8], entries: &[(&str, Entries)], vm: &Vm) -> Kernel {
        let mut loader = aya::EbpfLoader::new();
        for (name, size) in smaller_maps() {
            if vm.map(name).is_some() {
                loader.map_max_entries(name, size);
            }
        }
        let mut ebpf = loader.load(elf).expect("aya load");
        for (name, list) in entries {
            let map = ebpf.map_mut(name).expect("map");
            if *name == maps::IPCACHE {
                let mut trie: LpmTrie<&mut MapData, [u8; 20], [u8; 8]> =
                    LpmTrie::try_from(map).expect("lpm");
                for (k, v) in list {
                    let prefix = u32::from_le_bytes(k[0..4].try_into().unwrap());
                    let data: [u8; 20] = k[4..24].try_into().unwrap();
                    trie.insert(
                        &Key::new(prefix, data),
                        <[u8; 8]>::try_from(&v[..]).unwrap(),
                        0,
                    )
                    .expect("ipcache insert");
                }
            } else {
                // Exact-match maps, bucket arrays, `ciliumc_ipcinfo`: raw bytes.
                let view = aya_map_view(&ebpf, name).expect("map view");
                for (k, v) in list {
                    view.update(k, v, 0).expect("map update");
                }
            }
        }
        let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
        for n in names {
            let p: &mut SchedClassifier = ebpf.program_mut(&n).unwrap().try_into().unwrap();
            p.load().expect("kernel load");
        }
        let rings = match ebpf.map(maps::EVENTS) {
            Some(aya::maps::Map::Array(data)) => MappedRings::map(data).expect("map the rings"),
            other => panic!("events map: {other:?}"),
        };
        Kernel { ebpf, rings }
    }

    fn run(&mut self, program: &str, packet: &[u8]) -> (u64, Vec<Vec<u8>>) {
        let p: &mut SchedClassifier = self.ebpf.program_mut(program).unwrap().try_into().unwrap();
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(packet);
        let ret = p
            .test_run(opts)
            .unwrap_or_else(|e| panic!("test run of {} bytes {packet:02x?}: {e:?}", packet.len()))
            .return_value;
        let mut events = Vec::new();
        event_ring::drain(&mut self.rings, |e| events.push(e.to_vec()));
        (u64::from(ret), events)
    }
}

impl Kernel {
    /// The entries of map `name`, sorted.
    fn entries(&self, name: &str) -> Entries {
        let view = aya_map_view(&self.ebpf, name).expect("map view");
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = view
            .keys()
            .expect("keys")
            .into_iter()
            .filter_map(|k| {
                let v = view.lookup(&k).expect("lookup")?;
                Some((k, v))
            })
            .collect();
        out.sort();
        out
    }
}

/// The entries of VM map `name`, sorted.
fn vm_entries(vm: &Vm, name: &str) -> Entries {
    let map = vm.map(name).expect("map");
    map.keys()
        .into_iter()
        .map(|k| {
            let v = map.get(&k).unwrap_or_default().to_vec();
            (k, v)
        })
        .collect()
}

/// The hash maps the programs write (connection tracking, fragments): compared after each case.
fn written_hash_maps(vm: &Vm) -> Vec<String> {
    vm.map_names()
        .into_iter()
        .filter(|n| {
            matches!(
                vm.map(n).map(|m| m.kind),
                Some(MapType::Hash | MapType::LruHash)
            )
        })
        .map(str::to_string)
        .collect()
}

/// A TCP/UDP/SCTP datagram with a payload, cut into fragments of 24 bytes.
fn fragment_train(
    case: &Case,
    peer: IpAddr,
    proto: Protocol,
    port: u16,
    id: u32,
) -> Option<Vec<Vec<u8>>> {
    let p = match (peer, case.direction) {
        (IpAddr::V4(peer), Direction::Ingress) => Packet::ipv4(peer, ENDPOINT_V4),
        (IpAddr::V4(peer), Direction::Egress) => Packet::ipv4(ENDPOINT_V4, peer),
        (IpAddr::V6(peer), Direction::Ingress) => Packet::ipv6(peer, ENDPOINT_V6),
        (IpAddr::V6(peer), Direction::Egress) => Packet::ipv6(ENDPOINT_V6, peer),
    };
    let p = match proto {
        Protocol::Tcp => p.tcp(40000, port),
        Protocol::Udp => p.udp(40000, port),
        Protocol::Sctp => p.sctp(40000, port),
        _ => return None,
    };
    let payload: Vec<u8> = (0..56u8).collect();
    Some(p.payload(&payload).fragments(id, 24))
}

fn without_timestamps(events: &[Vec<u8>]) -> Vec<Vec<u8>> {
    events
        .iter()
        .map(|e| e.get(8..).unwrap_or_default().to_vec())
        .collect()
}

/// The reply to `packet` (addresses and ports swapped), for TCP/UDP/SCTP over IPv4/IPv6.
fn reply(packet: &[u8]) -> Option<Vec<u8>> {
    let mut p = packet.to_vec();
    let ethertype = u16::from_be_bytes([*p.get(12)?, *p.get(13)?]);
    let (l4, proto) = match ethertype {
        0x0800 => {
            let ihl = usize::from(p.get(14)? & 0x0f) * 4;
            let (s, d) = (14 + 12, 14 + 16);
            for i in 0..4 {
                p.swap(s + i, d + i);
            }
            (14 + ihl, *p.get(14 + 9)?)
        }
        0x86dd => {
            for i in 0..16 {
                p.swap(22 + i, 38 + i);
            }
            (14 + 40, *p.get(14 + 6)?)
        }
        _ => return None,
    };
    if !matches!(proto, 6 | 17 | 132) || p.len() < l4 + 4 {
        return None;
    }
    p.swap(l4, l4 + 2);
    p.swap(l4 + 1, l4 + 3);
    Some(p)
}

#[test]
fn interpreter_agrees_with_the_kernel_on_verdicts_and_events() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    let cases: u64 = std::env::var("CILIUMC_VM_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let packets_per_case = 100;
    let mut rng = Rng(0x766d_766d);
    let (mut total, mut events_seen, mut steps) = (0usize, 0usize, 0u64);
    let (mut fragments, mut written_entries) = (0usize, 0usize);
    for case_no in 0..cases {
        let case = random_case(&mut rng);
        let elf = object(&case);
        let fill = [
            IpcacheFill::TrieOnly,
            IpcacheFill::ExactFront,
            IpcacheFill::Compiled,
        ][case_no as usize % 3];
        let entries = map_entries(&case, fill);
        let mut vm = Vm::from_object(&elf).expect("VM loads the object");
        assert_eq!(
            vm.unsupported_helpers(),
            Vec::<i32>::new(),
            "helpers the VM lacks"
        );
        for (name, size) in smaller_maps() {
            if vm.map(name).is_some() {
                vm.set_max_entries(name, size).expect("resize");
            }
        }
        let mut kernel = Kernel::load(&elf, &entries, &vm);
        let mut vm_read = 0u64;
        for (name, list) in &entries {
            vm.fill_map(name, list).expect("VM map fill");
        }
        let (program, _) = lower::program_for(case.direction);
        let peers = candidate_peers(&case);
        let ports = candidate_ports(&case.policy);
        let mut history: Vec<Vec<u8>> = Vec::new();
        let mut queued: Vec<Vec<u8>> = Vec::new();
        let mut sent = 0;
        while sent < packets_per_case {
            let packet = if let Some(p) = queued.pop() {
                p
            } else if rng.chance(5) {
                // All fragments of a datagram, in order or reversed (non-first before first).
                let peer = *rng.pick(&peers);
                let proto = *rng.pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp]);
                let Some(mut train) =
                    fragment_train(&case, peer, proto, *rng.pick(&ports), rng.next() as u32)
                else {
                    continue;
                };
                if rng.chance(70) {
                    train.reverse();
                }
                fragments += train.len();
                queued = train;
                continue;
            } else if !history.is_empty() && rng.chance(15) {
                let old = rng.pick(&history).clone();
                if rng.chance(50) {
                    reply(&old).unwrap_or(old)
                } else {
                    old
                }
            } else {
                let Some((_, _, _, packet)) = random_packet(&mut rng, &case, &peers, &ports) else {
                    continue;
                };
                if rng.chance(8) {
                    // Truncated L4 headers (the kernel refuses a run on a truncated IP header).
                    let l3 = if packet[12] == 0x86 {
                        40
                    } else {
                        usize::from(packet[14] & 15) * 4
                    };
                    let keep = 14 + l3;
                    let len = keep + rng.below((packet.len() - keep) as u64) as usize;
                    packet[..len].to_vec()
                } else {
                    packet
                }
            };
            sent += 1;
            let (k_ret, k_events) = kernel.run(program, &packet);
            let got = vm
                .run(program, &packet)
                .unwrap_or_else(|e| panic!("case {case_no}: VM failed: {e}\npacket {packet:02x?}"));
            steps += got.steps;
            let vm_got = vm_events(&vm, &mut vm_read);
            assert_eq!(
                (k_ret, without_timestamps(&k_events)),
                (got.ret, without_timestamps(&vm_got)),
                "case {case_no} packet {sent}: kernel (left) and VM (right) differ\n{:?} policy {:#?}\npacket {packet:02x?}",
                case.direction,
                case.policy
            );
            events_seen += k_events.len();
            history.push(packet);
        }
        for name in written_hash_maps(&vm) {
            let kernel_entries = kernel.entries(&name);
            assert_eq!(
                kernel_entries,
                vm_entries(&vm, &name),
                "case {case_no}: entries of {name} differ (kernel left, VM right)"
            );
            if !name.starts_with("ciliumc_ipc") {
                written_entries += kernel_entries.len();
            }
        }
        total += sent;
    }
    eprintln!(
        "{cases} policy sets, {total} packets ({fragments} fragments), {events_seen} events, \
         {written_entries} CT/fragment entries, {steps} VM instructions: kernel and VM agree"
    );
    assert!(
        events_seen > 0 && written_entries > 0 && fragments > 0,
        "nothing compared: the test would prove nothing"
    );
}

mod no_kernel_needed {
    //! The VM on compiled policy programs and arbitrary bytes: every run ends with a tc verdict
    //! and at most one well-formed event — never an error or a panic (the programs passed the
    //! verifier, so any VM error here is a VM bug).

    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    struct Compiled {
        elf: Vec<u8>,
        program: &'static str,
        entries: MapFill,
        sample: Vec<u8>,
    }

    fn compiled() -> &'static [Compiled] {
        static CASES: OnceLock<Vec<Compiled>> = OnceLock::new();
        CASES.get_or_init(|| {
            let mut rng = Rng(0x0070_7270);
            (0..6)
                .map(|i| {
                    let case = random_case(&mut rng);
                    let peers = candidate_peers(&case);
                    let ports = candidate_ports(&case.policy);
                    let sample = loop {
                        if let Some((_, _, _, p)) = random_packet(&mut rng, &case, &peers, &ports) {
                            break p;
                        }
                    };
                    Compiled {
                        elf: object(&case),
                        program: lower::program_for(case.direction).0,
                        entries: map_entries(
                            &case,
                            [IpcacheFill::TrieOnly, IpcacheFill::Compiled][i % 2],
                        ),
                        sample,
                    }
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_packets_get_a_verdict_from_the_vm(
            which in 0usize..6,
            noise in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in any::<prop::sample::Index>(),
            random in prop::collection::vec(any::<u8>(), 0..120),
            use_random in any::<bool>(),
        ) {
            let c = &compiled()[which];
            let mut packet = if use_random { random } else { c.sample.clone() };
            if !packet.is_empty() {
                for (i, b) in noise {
                    let at = i.index(packet.len());
                    packet[at] = b;
                }
                let len = cut.index(packet.len() + 1);
                packet.truncate(len.max(packet.len() / 2));
            }
            let mut vm = Vm::from_object(&c.elf).expect("VM loads");
            for (name, list) in &c.entries {
                vm.fill_map(name, list).expect("fill");
            }
            let run = vm.run(c.program, &packet);
            prop_assert!(run.is_ok(), "{run:?} on {packet:02x?}");
            let run = run.unwrap();
            prop_assert!(run.ret == 0 || run.ret == 2, "verdict {}", run.ret);
            let events = vm_events(&vm, &mut 0);
            prop_assert!(events.len() <= 1, "{} events", events.len());
            for e in &events {
                let event = ciliumc_runtime::events::FlowEvent::decode(e);
                prop_assert!(event.is_ok_and(|e| e.kind == 1 || e.kind == 5));
            }
        }
    }
}
