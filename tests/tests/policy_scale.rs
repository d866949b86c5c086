//! Scale: an endpoint direction selected by 5,000 rules with 20,000 distinct peer/port pairs, and
//! an identity set of 100,000 members, compile, load into the kernel, and decide as the reference
//! evaluator on sampled packets (large sets live in the program's own maps, filled from the
//! entries the compiler returns).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ciliumc_compiler::compile::{self, MapPinning};
use ciliumc_compiler::lower::{self, maps};
use ciliumc_ir::cidr::Cidr;
use ciliumc_ir::evaluator::{PeerInfo, verdict_direction};
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{
    Direction, DirectionPolicy, L4Match, PeerSet, PortRange, Protocol, Rule, RuleId, RuleKind,
};
use ciliumc_tests::kernel_or_skip;
use ciliumc_tests::loader::{LoadedObject, load_object_raw};
use ciliumc_tests::packet::Packet;

const ENDPOINT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

fn peer_addr(identity: u32) -> Ipv6Addr {
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        7,
        0,
        0,
        0,
        (identity >> 16) as u16,
        identity as u16,
    )
}

fn tcp(port: u16) -> L4Match {
    L4Match::new(Protocol::Tcp, PortRange::single(port))
}

/// Compiles, loads, fills the ipcache for `identities` and the program's own maps.
fn load(policy: &DirectionPolicy, direction: Direction, identities: &[u32]) -> LoadedObject {
    let started = Instant::now();
    let object = compile::direction_object(
        NumericIdentity(300),
        policy,
        direction,
        "scale/endpoint",
        MapPinning::Private,
    )
    .expect("compiles");
    eprintln!(
        "compiled in {:?}: {} bytes, maps {:?}",
        started.elapsed(),
        object.bytes.len(),
        object
            .maps
            .iter()
            .map(|(n, e)| (n.clone(), e.len()))
            .collect::<Vec<_>>()
    );
    let started = Instant::now();
    let obj = load_object_raw(&object.bytes).unwrap_or_else(|e| panic!("kernel refused: {e}"));
    eprintln!(
        "loaded in {:?}: {:?}",
        started.elapsed(),
        obj.verifier_stats()
    );
    for (name, entries) in &object.maps {
        let m = obj.map(name).expect("own map");
        for (k, v) in entries {
            m.update(k, v, 0).expect("own map update");
        }
    }
    let prefixes: Vec<(Cidr, u32)> = identities
        .iter()
        .map(|id| (Cidr::host(IpAddr::V6(peer_addr(*id))), *id))
        .collect();
    for (name, entries) in maps::ipcache_map_entries(&prefixes) {
        let m = obj.map(&name).expect("ipcache map");
        for (k, v) in entries {
            m.update(&k, &v, 0).expect("ipcache update");
        }
    }
    obj
}

fn check(obj: &LoadedObject, policy: &DirectionPolicy, direction: Direction, id: u32, port: u16) {
    check_proto(obj, policy, direction, id, Protocol::Tcp, port)
}

fn check_proto(
    obj: &LoadedObject,
    policy: &DirectionPolicy,
    direction: Direction,
    id: u32,
    proto: Protocol,
    port: u16,
) {
    let peer = peer_addr(id);
    let p = match direction {
        Direction::Ingress => Packet::ipv6(peer, ENDPOINT_V6),
        Direction::Egress => Packet::ipv6(ENDPOINT_V6, peer),
    };
    let packet = match proto {
        Protocol::Udp => p.udp(40000, port),
        Protocol::Sctp => p.sctp(40000, port),
        Protocol::Icmpv6 => p.icmpv6(port as u8, 0),
        _ => p.tcp(40000, port),
    }
    .build();
    let (name, _) = lower::program_for(direction);
    let got = obj
        .program(name)
        .expect("program")
        .run(&packet)
        .expect("run")
        .retval;
    let ct = obj.map(maps::CT).expect("ct");
    for k in ct.keys().expect("keys") {
        ct.delete(&k).expect("delete");
    }
    let want = verdict_direction(
        policy,
        direction,
        PeerInfo::new(NumericIdentity(id), Some(IpAddr::V6(peer))),
        proto,
        port,
    );
    assert_eq!(
        got == 0,
        want.is_allow(),
        "identity {id} port {port}: kernel {got}, evaluator {want:?}"
    );
}

#[test]
fn five_thousand_rules_with_twenty_thousand_peer_port_pairs() {
    let Some(_k) = kernel_or_skip!() else { return };
    // Rule i: identities {2i, 2i+1} (offset) × ports {p_i, q_i}: four distinct pairs per rule.
    let mut pairs = BTreeSet::new();
    let rules: Vec<Rule> = (0..5000u32)
        .map(|i| {
            let ids = [10_000 + 2 * i, 10_001 + 2 * i];
            let ports = [1000 + (i % 3000) as u16, 40_000 + (i * 7 % 20_000) as u16];
            for id in ids {
                for p in ports {
                    pairs.insert((id, p));
                }
            }
            Rule {
                id: RuleId(1 + i),
                kind: if i % 10 == 9 {
                    RuleKind::Deny
                } else {
                    RuleKind::Allow
                },
                peers: PeerSet::identities(ids.map(NumericIdentity)),
                l4: Some(ports.iter().map(|p| tcp(*p)).collect()),
            }
        })
        .collect();
    assert_eq!(pairs.len(), 20_000);
    let mut policy = DirectionPolicy::enforced(Direction::Egress, rules);
    // An address rule next to the identity rules keeps the slow path in the program too.
    policy.rules.push(Rule {
        id: RuleId(9999),
        kind: RuleKind::Allow,
        peers: PeerSet::cidrs(vec![ciliumc_ir::cidr::CidrRule::new(
            Cidr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)), 24).expect("cidr"),
        )]),
        l4: None,
    });
    let identities: Vec<u32> = (10_000..20_000).collect();
    let obj = load(&policy, Direction::Egress, &identities);
    for (n, (id, port)) in pairs.iter().enumerate().step_by(97) {
        check(&obj, &policy, Direction::Egress, *id, *port);
        check(
            &obj,
            &policy,
            Direction::Egress,
            *id,
            port.wrapping_add(1 + n as u16 % 3),
        );
    }
}

#[test]
fn identity_set_of_one_hundred_thousand_members() {
    let Some(_k) = kernel_or_skip!() else { return };
    let members: Vec<u32> = (0..100_000u32).map(|i| 100_000 + 3 * i).collect();
    let policy = DirectionPolicy::enforced(
        Direction::Ingress,
        vec![
            Rule {
                id: RuleId(1),
                kind: RuleKind::Allow,
                peers: PeerSet::identities(members.iter().map(|i| NumericIdentity(*i))),
                l4: Some(vec![tcp(443)]),
            },
            Rule {
                id: RuleId(2),
                kind: RuleKind::Deny,
                peers: PeerSet::identities([NumericIdentity(100_003)]),
                l4: None,
            },
        ],
    );
    let sample: Vec<u32> = members
        .iter()
        .step_by(1000)
        .flat_map(|m| [*m, m + 1])
        .chain([100_003])
        .collect();
    let obj = load(&policy, Direction::Ingress, &sample);
    for id in sample {
        for port in [443, 444, 80] {
            check(&obj, &policy, Direction::Ingress, id, port);
        }
    }
}

/// Identity rules as data (identity map and leaf LPM map), mixed kinds, ranges, every-protocol
/// rules and rules for every peer: the kernel agrees with the evaluator at range edges.
#[test]
fn rules_as_data_agree_with_the_evaluator() {
    let Some(_k) = kernel_or_skip!() else { return };
    for direction in [Direction::Ingress, Direction::Egress] {
        let mut rules = Vec::new();
        for i in 0..3000u32 {
            let lo = 1 + (i * 53 % 60_000) as u16;
            let hi = lo + (i % 5) as u16 * 100;
            let proto = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][(i % 3) as usize];
            rules.push(Rule {
                id: RuleId(1 + i),
                kind: if i % 6 == 5 {
                    RuleKind::Deny
                } else {
                    RuleKind::Allow
                },
                peers: PeerSet::identities([
                    NumericIdentity(5000 + i % 700),
                    NumericIdentity(5000 + (i * 7) % 700),
                ]),
                l4: if i % 50 == 7 {
                    None
                } else {
                    Some(vec![
                        L4Match::new(proto, PortRange::new(lo, hi).expect("range")),
                        L4Match::icmp(Protocol::Icmpv6, Some((i % 3) as u8 + 128)),
                    ])
                },
            });
        }
        rules.push(Rule {
            id: RuleId(9000),
            kind: RuleKind::Allow,
            peers: PeerSet::All,
            l4: Some(vec![L4Match::new(Protocol::Udp, PortRange::single(53))]),
        });
        rules.push(Rule {
            id: RuleId(9001),
            kind: RuleKind::Deny,
            peers: PeerSet::All,
            l4: Some(vec![L4Match::new(
                Protocol::Tcp,
                PortRange::new(7000, 7010).expect("range"),
            )]),
        });
        let policy = DirectionPolicy::enforced(direction, rules);
        let identities: Vec<u32> = (4990..5710).collect();
        let obj = load(&policy, direction, &identities);
        for (n, r) in policy.rules.iter().enumerate().step_by(13) {
            let PeerSet::Selected {
                identities: ids, ..
            } = &r.peers
            else {
                continue;
            };
            let id = ids.iter().next().map_or(4995, |i| i.0);
            for m in r.l4.iter().flatten() {
                for port in [
                    m.ports.lo.wrapping_sub(1),
                    m.ports.lo,
                    m.ports.hi,
                    m.ports.hi.wrapping_add(1),
                ] {
                    check_proto(&obj, &policy, direction, id, m.protocol, port);
                }
            }
            let stranger = 4990 + (n % 10) as u32;
            check_proto(&obj, &policy, direction, stranger, Protocol::Udp, 53);
            check_proto(&obj, &policy, direction, id, Protocol::Tcp, 7005);
            check_proto(&obj, &policy, direction, stranger, Protocol::Tcp, 80);
        }
    }
}
