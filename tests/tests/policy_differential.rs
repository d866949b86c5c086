//! Differential test: random policies and packets; the verdict of the compiled program, executed
//! by the kernel (`BPF_PROG_TEST_RUN`), must equal the reference evaluator's on every packet.
//!
//! Each case builds one direction's policy IR directly (identity sets, CIDR rules with excepts,
//! L4 ranges, deny and allow, enforcement flags), lowers it with `ciliumc_compiler::lower`, loads
//! the object through raw `bpf()`, fills the ipcache with the case's identities and prefixes, and
//! runs packets whose addresses and ports sit at the edges of the rules. A disagreement panics
//! with a minimized reproducer: the smallest rule subset that still disagrees on that packet.

use std::net::IpAddr;

use ciliumc_compiler::compile::{self, MapPinning};
use ciliumc_compiler::lower::{self, maps};
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{Direction, DirectionPolicy, Protocol};
use ciliumc_tests::kernel_or_skip;
use ciliumc_tests::loader::{LoadedObject, load_object_raw};

mod policygen;

use policygen::*;

fn compile_case(case: &Case) -> Vec<u8> {
    compile::inline_direction_object(
        NumericIdentity(LOCAL_IDENTITY),
        &case.policy,
        case.direction,
        MapPinning::ByName,
    )
    .expect("compile")
}

fn load_case(case: &Case) -> LoadedObject {
    let obj = load_object_raw(&compile_case(case)).unwrap_or_else(|e| {
        panic!(
            "kernel refused the program for {:?}:\n{e}\npolicy: {:#?}",
            case.direction, case.policy
        )
    });
    if compiled_fill(case) {
        fill_ipcache_compiled(&obj, &case.ipcache.0);
    } else {
        fill_ipcache_trie(&obj, &trie_entries(&case.ipcache.0));
    }
    obj
}

/// About half the cases fill the ipcache as the compiler's manifest does (bucket arrays,
/// exact-match maps, then the trie), the others only the trie (as `ciliumc trace` does), so
/// that both lookup paths meet every kind of policy. Decided by the case's ipcache alone, so
/// that its minimized reproducers take the same path.
fn compiled_fill(case: &Case) -> bool {
    case.ipcache.0.len().is_multiple_of(2)
}

fn kernel_verdict(obj: &LoadedObject, direction: Direction, packet: &[u8]) -> u32 {
    let (name, _) = lower::program_for(direction);
    let prog = obj.program(name).expect("program");
    let out = prog.run(packet).expect("test run");
    // Flows are judged one packet each: forget the connection this packet may have created.
    let ct = obj.map(maps::CT).expect("ct map");
    for k in ct.keys().expect("ct keys") {
        ct.delete(&k).expect("ct delete");
    }
    out.retval
}

fn expected(case: &Case, peer: IpAddr, proto: Protocol, port: u16) -> bool {
    expected_verdict(case, peer, proto, port).is_allow()
}

/// The smallest prefix of rules (then single rules dropped one at a time) that still disagrees.
fn minimize(
    case: &Case,
    peer: IpAddr,
    proto: Protocol,
    port: u16,
    packet: &[u8],
) -> DirectionPolicy {
    let mut policy = case.policy.clone();
    let disagrees = |policy: &DirectionPolicy| {
        let c = Case {
            policy: policy.clone(),
            direction: case.direction,
            ipcache: IpcacheModel(case.ipcache.0.clone()),
        };
        let obj = load_case(&c);
        let got = kernel_verdict(&obj, c.direction, packet) == 0;
        got != expected(&c, peer, proto, port)
    };
    let mut i = 0;
    while i < policy.rules.len() {
        let mut smaller = policy.clone();
        smaller.rules.remove(i);
        if disagrees(&smaller) {
            policy = smaller;
        } else {
            i += 1;
        }
    }
    policy
}

/// Loads `case` and sends it `packets` random packets; a verdict the evaluator does not give
/// panics with a minimized reproducer. Returns the packets sent.
fn check_case(label: &str, case: &Case, rng: &mut Rng, packets: usize) -> usize {
    let obj = load_case(case);
    let peers = candidate_peers(case);
    let ports = candidate_ports(&case.policy);
    let mut sent = 0;
    while sent < packets {
        let Some((peer, proto, port, packet)) = random_packet(rng, case, &peers, &ports) else {
            continue;
        };
        sent += 1;
        let got = kernel_verdict(&obj, case.direction, &packet);
        assert!(got == 0 || got == 2, "unexpected tc verdict {got}");
        let want = expected(case, peer, proto, port);
        if (got == 0) != want {
            let min = minimize(case, peer, proto, port, &packet);
            panic!(
                "{label}: {} {proto} peer {peer} port {port}: kernel says {}, evaluator says {}\nminimized policy: {min:#?}\nipcache identity of peer: {}",
                case.direction,
                if got == 0 { "allow" } else { "drop" },
                if want { "allow" } else { "drop" },
                case.ipcache.lookup(peer)
            );
        }
    }
    sent
}

#[test]
fn compiled_policy_agrees_with_reference_evaluator() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    let cases: u64 = std::env::var("CILIUMC_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut total = 0usize;
    let mut compiled = 0u64;
    let mut rng = Rng(0x00c1_1105);
    for case_no in 0..cases {
        let case = random_case(&mut rng);
        compiled += u64::from(compiled_fill(&case));
        total += check_case(&format!("case {case_no}"), &case, &mut rng, 200);
    }
    eprintln!(
        "{cases} policy sets ({compiled} with the compiler's ipcache maps), {total} packets: \
         kernel and evaluator agree"
    );
    assert!(
        compiled >= cases / 4 && cases - compiled >= cases / 4,
        "both ipcache fills must be exercised: {compiled} of {cases} cases used the compiled one"
    );
}

/// Whether the case's decision is split into parts (`dispatch::Parts`).
fn splits_into_parts(case: &Case) -> bool {
    let lowered = lower::lower_direction(
        NumericIdentity(LOCAL_IDENTITY),
        &case.policy,
        case.direction,
    )
    .expect("lowering");
    let base = lower::dispatch::parts_base(case.direction);
    lowered
        .functions
        .iter()
        .any(|f| lower::dispatch::Parts::is_part(base, &f.name))
}

/// Policies large enough that the decision is split into parts (`dispatch::Parts`: global
/// subprograms the program calls), against the evaluator.
#[test]
fn decisions_split_into_parts_agree_with_reference_evaluator() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    let mut rng = Rng(0x9a57_5011);
    let (mut split, mut total) = (0, 0usize);
    let cases = 30;
    for case_no in 0..cases {
        let n = 60 + rng.below(200);
        let case = random_case_of(&mut rng, n);
        split += usize::from(splits_into_parts(&case));
        total += check_case(&format!("large case {case_no}"), &case, &mut rng, 300);
    }
    eprintln!("{cases} large policy sets ({split} split into parts), {total} packets: agree");
    assert!(
        split >= cases / 2,
        "only {split} of {cases} large policies were split into parts: the test no longer covers them"
    );
}

/// After an exact-match miss the programs ask the ipcache trie only for a family it holds
/// prefixes of (`ciliumc_ipcinfo`): with the IPv4 count at 0 an address inside an IPv4 CIDR
/// identity is world, with it at 1 it has the CIDR identity, whatever the IPv6 count says.
#[test]
fn the_trie_is_asked_only_for_a_family_it_holds_prefixes_of() {
    use ciliumc_ir::cidr::Cidr;
    use ciliumc_ir::policy::{L4Match, PeerSet, PortRange, Rule, RuleId, RuleKind};
    let Some(_k) = kernel_or_skip!() else {
        return;
    };
    let cidr_identity = 16_777_217;
    let policy = DirectionPolicy::enforced(
        Direction::Ingress,
        vec![Rule {
            id: RuleId(1),
            kind: RuleKind::Allow,
            peers: PeerSet::identities([NumericIdentity(cidr_identity)]),
            l4: Some(vec![L4Match::new(Protocol::Tcp, PortRange::single(80))]),
        }],
    );
    let case = case_for(policy, Direction::Ingress);
    let obj = load_object_raw(&compile_case(&case)).expect("load");
    let prefix: Cidr = "198.51.100.0/24".parse().expect("cidr");
    obj.map(maps::IPCACHE)
        .expect("trie")
        .update(
            &maps::ipcache_key(&prefix),
            &maps::ipcache_value(cidr_identity),
            0,
        )
        .expect("trie update");
    let packet = ciliumc_tests::Packet::ipv4([198, 51, 100, 7], ENDPOINT_V4)
        .tcp(40000, 80)
        .build();
    let verdict_with = |v4: u32, v6: u32| {
        let mut value = v4.to_le_bytes().to_vec();
        value.extend_from_slice(&v6.to_le_bytes());
        value.extend_from_slice(&[0; 8]);
        obj.map(maps::IPCACHE_INFO)
            .expect("info")
            .update(&0u32.to_le_bytes(), &value, 0)
            .expect("info update");
        kernel_verdict(&obj, Direction::Ingress, &packet)
    };
    assert_eq!(verdict_with(0, 0), 2, "no IPv4 prefixes: world, denied");
    assert_eq!(verdict_with(0, 5), 2, "IPv6 prefixes only: still world");
    assert_eq!(verdict_with(1, 0), 0, "the CIDR identity is allowed");
}

/// Large decisions whose rules open only a few ports: the program decides a (protocol, port) no
/// rule covers before it calls a part (`dispatch::emit_uncovered_check`), and must still agree
/// with the evaluator on every packet, at the edges of the covered ports and outside them.
#[test]
fn split_decisions_over_few_ports_agree_with_reference_evaluator() {
    use ciliumc_ir::policy::{L4Match, PortRange};
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    let few = [
        PortRange { lo: 80, hi: 80 },
        PortRange { lo: 443, hi: 443 },
        PortRange { lo: 8000, hi: 8080 },
    ];
    let mut rng = Rng(0x0f3e_90a7);
    let (mut split, mut total) = (0, 0usize);
    let cases = 20;
    for case_no in 0..cases {
        let n = 60 + rng.below(120);
        let mut case = random_case_of(&mut rng, n);
        // Every rule on one of the few ports, TCP or UDP: other protocols and ports are
        // covered by no rule.
        for (i, rule) in case.policy.rules.iter_mut().enumerate() {
            let proto = if i % 2 == 0 {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            rule.l4 = Some(vec![L4Match::new(proto, few[i % few.len()])]);
        }
        split += usize::from(splits_into_parts(&case));
        total += check_case(&format!("few-ports case {case_no}"), &case, &mut rng, 300);
    }
    eprintln!("{cases} large policy sets over few ports ({split} split), {total} packets: agree");
    assert!(
        split >= cases / 2,
        "only {split} of {cases} policies were split into parts: the test no longer covers the check"
    );
}
