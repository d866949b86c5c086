//! IP fragment tracking in the compiled policy programs, run by the kernel (`BPF_PROG_TEST_RUN`):
//! the first fragment of a TCP/UDP/SCTP datagram records its ports in `ciliumc_frag4` /
//! `ciliumc_frag6` (Cilium's key and value layout), later fragments, in any order, are judged
//! with those ports exactly as the whole packet (verdict, reason, rule, event fields); a later
//! fragment whose first fragment was not seen, or whose id, addresses or protocol differ, is
//! dropped with `DROP_FRAG_NOT_FOUND` (175); a first fragment too short for the ports (or TCP
//! flags) with `DROP_CT_INVALID_HDR` (135); fragmented ICMP as invalid (134).

mod policygen;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ciliumc_compiler::lower::{self, maps, parse};
use ciliumc_ir::cidr::Cidr;
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{
    Direction, DirectionPolicy, L4Match, PeerSet, PortRange, Protocol, Rule, RuleId, RuleKind,
};
use ciliumc_runtime::events::FlowEvent;
use ciliumc_runtime::testrun::LoadedPolicyObject;
use ciliumc_tests::kernel_or_skip;
use ciliumc_tests::loader::{LoadedObject, load_object_raw};
use ciliumc_tests::packet::{ExtHeader, Packet};
use policygen::*;

const PEER_IDENTITY: u32 = 5000;
const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7);
/// Another peer (same identity), for address mismatches.
const OTHER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 8);
const OTHER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 8);

const DROP_POLICY: u8 = 133;
const DROP_POLICY_DENY: u8 = 181;
const DROP_INVALID: u8 = 134;
const DROP_CT_INVALID_HDR: u8 = 135;
const DROP_FRAG_NOT_FOUND: u8 = 175;

const ALLOW_RULE: u32 = 1;
const DENY_RULE: u32 = 2;

/// From the peer's identity: allow TCP 80 and UDP 53 (rule 1), deny TCP 22 (rule 2); anything
/// else is denied by default.
fn policy() -> DirectionPolicy {
    let peers = PeerSet::Selected {
        identities: BTreeSet::from([NumericIdentity(PEER_IDENTITY)]),
        cidrs: vec![],
    };
    DirectionPolicy {
        enforced: true,
        default_deny: true,
        allow_localhost: false,
        rules: vec![
            Rule {
                id: RuleId(ALLOW_RULE),
                kind: RuleKind::Allow,
                peers: peers.clone(),
                l4: Some(vec![
                    L4Match::new(Protocol::Tcp, PortRange::single(80)),
                    L4Match::new(Protocol::Udp, PortRange::single(53)),
                    L4Match::icmp(Protocol::Icmp, None),
                    L4Match::icmp(Protocol::Icmpv6, None),
                ]),
            },
            Rule {
                id: RuleId(DENY_RULE),
                kind: RuleKind::Deny,
                peers,
                l4: Some(vec![L4Match::new(Protocol::Tcp, PortRange::single(22))]),
            },
        ],
    }
}

fn object(policy: &DirectionPolicy, direction: Direction) -> Vec<u8> {
    private_object(policy, direction)
}

fn peer_ipcache() -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        IpAddr::V4(PEER_V4),
        IpAddr::V6(PEER_V6),
        IpAddr::V4(OTHER_V4),
        IpAddr::V6(OTHER_V6),
    ]
    .into_iter()
    .map(|a| {
        (
            maps::ipcache_key(&Cidr::host(a)),
            maps::ipcache_value(PEER_IDENTITY),
        )
    })
    .collect()
}

/// A program loaded through aya: every run reports its events and forgets the CT entry it made,
/// so each fragment is judged (and reported) as a new flow; the fragment map is kept.
struct Prog {
    obj: LoadedPolicyObject,
    direction: Direction,
}

impl Prog {
    fn new(direction: Direction) -> Prog {
        let obj = LoadedPolicyObject::load(&object(&policy(), direction), &peer_ipcache())
            .expect("load through aya");
        Prog { obj, direction }
    }

    /// Runs one packet; returns the tc verdict and its single event.
    fn run(&mut self, packet: &[u8], what: &str) -> (u32, FlowEvent) {
        let (name, _) = lower::program_for(self.direction);
        let run = self.obj.run(name, packet).expect("test run");
        assert_eq!(run.events.len(), 1, "{what}: events {:?}", run.events);
        (run.retval, run.events[0].clone())
    }

    fn expect_drop(&mut self, packet: &[u8], reason: u8, what: &str) -> FlowEvent {
        let (retval, ev) = self.run(packet, what);
        assert_eq!(retval, 2, "{what}: verdict");
        assert!(ev.dropped && ev.kind == 1, "{what}: {ev:?}");
        assert_eq!(ev.reason, reason, "{what}: {ev:?}");
        ev
    }

    fn expect_allow(&mut self, packet: &[u8], what: &str) -> FlowEvent {
        let (retval, ev) = self.run(packet, what);
        assert_eq!(retval, 0, "{what}: verdict ({ev:?})");
        assert!(
            !ev.dropped && ev.kind == 5 && ev.reason == 0,
            "{what}: {ev:?}"
        );
        ev
    }
}

/// The peer address of a family.
fn peer(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(PEER_V6)
    } else {
        IpAddr::V4(PEER_V4)
    }
}

fn endpoint(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(ENDPOINT_V6)
    } else {
        IpAddr::V4(ENDPOINT_V4)
    }
}

/// A packet between `from` and `to` of the family of `from`.
fn packet(from: IpAddr, to: IpAddr) -> Packet {
    match (from, to) {
        (IpAddr::V4(a), IpAddr::V4(b)) => Packet::ipv4(a, b),
        (IpAddr::V6(a), IpAddr::V6(b)) => Packet::ipv6(a, b),
        _ => panic!("mixed families"),
    }
}

/// Oriented by the program's direction: ingress packets come from the peer.
fn oriented(direction: Direction, peer: IpAddr, v6: bool) -> Packet {
    match direction {
        Direction::Ingress => packet(peer, endpoint(v6)),
        Direction::Egress => packet(endpoint(v6), peer),
    }
}

fn with_l4(p: Packet, proto: Protocol, sport: u16, dport: u16) -> Packet {
    match proto {
        Protocol::Tcp => p.tcp(sport, dport),
        Protocol::Udp => p.udp(sport, dport),
        Protocol::Sctp => p.sctp(sport, dport),
        _ => panic!("no ports for {proto}"),
    }
}

const PAYLOAD: [u8; 48] = [0x5a; 48];

/// The datagram's fragments (24-byte pieces: 3 or more).
fn datagram(
    direction: Direction,
    v6: bool,
    proto: Protocol,
    sport: u16,
    dport: u16,
    id: u32,
) -> Vec<Vec<u8>> {
    let p = with_l4(oriented(direction, peer(v6), v6), proto, sport, dport).payload(&PAYLOAD);
    let parts = p.fragments(id, 24);
    assert!(parts.len() >= 3, "{} fragments", parts.len());
    parts
}

/// Which ports an event must carry for a packet from `sport` to `dport`.
fn check_event_fields(
    ev: &FlowEvent,
    direction: Direction,
    v6: bool,
    proto: Protocol,
    sport: u16,
    dport: u16,
    what: &str,
) {
    let (ep_port, peer_port) = match direction {
        Direction::Ingress => (dport, sport),
        Direction::Egress => (sport, dport),
    };
    assert_eq!(ev.policy_port, dport, "{what}: {ev:?}");
    assert_eq!(ev.endpoint_port, ep_port, "{what}: {ev:?}");
    assert_eq!(ev.peer_port, peer_port, "{what}: {ev:?}");
    assert_eq!(ev.proto, proto.number(), "{what}: {ev:?}");
    assert_eq!(ev.family, if v6 { 6 } else { 4 }, "{what}: {ev:?}");
    assert_eq!(ev.peer_addr, Some(peer(v6)), "{what}: {ev:?}");
    assert_eq!(ev.endpoint_addr, Some(endpoint(v6)), "{what}: {ev:?}");
    assert_eq!(ev.local_identity, LOCAL_IDENTITY, "{what}: {ev:?}");
    assert_eq!(ev.remote_identity, PEER_IDENTITY, "{what}: {ev:?}");
    assert_eq!(
        ev.direction,
        if direction == Direction::Ingress {
            1
        } else {
            2
        },
        "{what}"
    );
}

fn each_variant(mut f: impl FnMut(Direction, bool, Protocol)) {
    for direction in [Direction::Ingress, Direction::Egress] {
        for v6 in [false, true] {
            for proto in [Protocol::Tcp, Protocol::Udp] {
                f(direction, v6, proto);
            }
        }
    }
}

fn allowed_port(proto: Protocol) -> u16 {
    if proto == Protocol::Tcp { 80 } else { 53 }
}

#[test]
fn later_fragments_of_an_allowed_datagram_pass_in_any_order() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    each_variant(|direction, v6, proto| {
        let mut prog = Prog::new(direction);
        let dport = allowed_port(proto);
        let parts = datagram(direction, v6, proto, 40000, dport, 0x0abc);
        let what = format!("{direction} v6={v6} {proto}");
        // First, then the last before the middle ones.
        let mut order = vec![0, parts.len() - 1];
        order.extend(1..parts.len() - 1);
        for i in order {
            let what = format!("{what} fragment {i}");
            let ev = prog.expect_allow(&parts[i], &what);
            assert_eq!(ev.rule_id, ALLOW_RULE, "{what}");
            check_event_fields(&ev, direction, v6, proto, 40000, dport, &what);
        }
        // Repeats (retransmitted fragments) find the entry too.
        prog.expect_allow(&parts[1], &format!("{what} fragment 1 again"));
    });
}

#[test]
fn later_fragments_of_a_denied_datagram_are_dropped_by_policy() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    each_variant(|direction, v6, proto| {
        let mut prog = Prog::new(direction);
        let mut cases = vec![(8080u16, DROP_POLICY, 0u32)];
        if proto == Protocol::Tcp {
            cases.push((22, DROP_POLICY_DENY, DENY_RULE));
        }
        for (n, (dport, reason, rule)) in cases.into_iter().enumerate() {
            let parts = datagram(direction, v6, proto, 40000, dport, 0x100 + n as u32);
            // The first, then the later ones from the last.
            let order = std::iter::once(0).chain((1..parts.len()).rev());
            for i in order {
                let part = &parts[i];
                let what = format!("{direction} v6={v6} {proto} port {dport} fragment {i}");
                let ev = prog.expect_drop(part, reason, &what);
                assert_eq!(ev.rule_id, rule, "{what}");
                check_event_fields(&ev, direction, v6, proto, 40000, dport, &what);
            }
        }
    });
}

#[test]
fn later_fragment_without_its_first_is_dropped_as_not_found() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    each_variant(|direction, v6, proto| {
        let mut prog = Prog::new(direction);
        let parts = datagram(direction, v6, proto, 40000, allowed_port(proto), 77);
        for (i, part) in parts.iter().enumerate().skip(1) {
            let what = format!("{direction} v6={v6} {proto} fragment {i} alone");
            let ev = prog.expect_drop(part, DROP_FRAG_NOT_FOUND, &what);
            assert_eq!(ev.policy_port, 0, "{what}: no ports known");
            assert_eq!(ev.peer_addr, Some(peer(v6)), "{what}");
        }
        // Once the first fragment is seen, the same later fragments pass.
        prog.expect_allow(&parts[0], "first");
        for part in &parts[1..] {
            prog.expect_allow(part, "later, after the first");
        }
    });
}

#[test]
fn fragments_of_other_datagrams_do_not_match() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    each_variant(|direction, v6, proto| {
        let mut prog = Prog::new(direction);
        let dport = allowed_port(proto);
        let what = format!("{direction} v6={v6} {proto}");
        let parts = datagram(direction, v6, proto, 40000, dport, 0x4242);
        prog.expect_allow(&parts[0], &format!("{what} first"));
        // Another identification (IPv6: also differing only in the high half).
        let mut ids = vec![0x4243u32];
        if v6 {
            ids.push(0x0001_4242);
        }
        for id in ids {
            let other = datagram(direction, v6, proto, 40000, dport, id);
            prog.expect_drop(
                &other[1],
                DROP_FRAG_NOT_FOUND,
                &format!("{what} id {id:#x}"),
            );
        }
        // Another peer address, same id (same identity, so only the key can tell).
        let other_peer = if v6 {
            IpAddr::V6(OTHER_V6)
        } else {
            IpAddr::V4(OTHER_V4)
        };
        let p = with_l4(oriented(direction, other_peer, v6), proto, 40000, dport).payload(&PAYLOAD);
        prog.expect_drop(
            &p.fragments(0x4242, 24)[1],
            DROP_FRAG_NOT_FOUND,
            &format!("{what} other address"),
        );
        // Reversed direction of the same pair (source and destination swapped), same id.
        let reversed = match direction {
            Direction::Ingress => packet(endpoint(v6), peer(v6)),
            Direction::Egress => packet(peer(v6), endpoint(v6)),
        };
        let p = with_l4(reversed, proto, 40000, dport).payload(&PAYLOAD);
        prog.expect_drop(
            &p.fragments(0x4242, 24)[1],
            DROP_FRAG_NOT_FOUND,
            &format!("{what} swapped addresses"),
        );
        // Another protocol, same id and addresses.
        let other_proto = if proto == Protocol::Tcp {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        let other = datagram(direction, v6, other_proto, 40000, dport, 0x4242);
        prog.expect_drop(
            &other[1],
            DROP_FRAG_NOT_FOUND,
            &format!("{what} other protocol"),
        );
        // The right datagram still matches.
        prog.expect_allow(&parts[2], &format!("{what} right datagram"));
    });
}

#[test]
fn ipv4_options_and_ipv6_extension_headers_with_fragments() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    for direction in [Direction::Ingress, Direction::Egress] {
        let mut prog = Prog::new(direction);
        // IPv4 with options (IHL 7) on every fragment.
        let p = oriented(direction, peer(false), false)
            .ipv4_options(&[1, 1, 1, 1, 1, 1, 1, 1])
            .udp(5353, 53)
            .payload(&PAYLOAD);
        let parts = p.fragments(9, 16);
        assert!(parts.len() >= 3);
        assert_eq!(parts[1][14] & 0x0f, 7, "options on later fragments too");
        for (i, part) in parts.iter().enumerate() {
            let what = format!("{direction} v4 options fragment {i}");
            let ev = prog.expect_allow(part, &what);
            check_event_fields(&ev, direction, false, Protocol::Udp, 5353, 53, &what);
        }
        // Denied through options: later fragments dropped by policy, not as invalid.
        let p = oriented(direction, peer(false), false)
            .ipv4_options(&[1, 1, 1, 1])
            .tcp(5353, 22)
            .payload(&PAYLOAD);
        for (i, part) in p.fragments(10, 24).iter().enumerate() {
            prog.expect_drop(
                part,
                DROP_POLICY_DENY,
                &format!("{direction} v4 options denied {i}"),
            );
        }
        // IPv6: hop-by-hop and destination options before the fragment header.
        let p = oriented(direction, peer(true), true)
            .ext_header(ExtHeader::HopByHop)
            .ext_header(ExtHeader::DestOpts)
            .tcp(5353, 80)
            .payload(&PAYLOAD);
        let parts = p.fragments(11, 24);
        for i in [0, 2, 1] {
            let what = format!("{direction} v6 ext fragment {i}");
            let ev = prog.expect_allow(&parts[i], &what);
            check_event_fields(&ev, direction, true, Protocol::Tcp, 5353, 80, &what);
        }
        // Four extension headers including the fragment header are still parsed.
        let p = oriented(direction, peer(true), true)
            .ext_header(ExtHeader::HopByHop)
            .ext_header(ExtHeader::Routing)
            .ext_header(ExtHeader::DestOpts)
            .udp(5353, 53)
            .payload(&PAYLOAD);
        for (i, part) in p.fragments(12, 24).iter().enumerate() {
            prog.expect_allow(part, &format!("{direction} v6 four headers fragment {i}"));
        }
        // An atomic fragment (offset 0, MF clear) is a whole packet (RFC 6946).
        let p = oriented(direction, peer(true), true)
            .ext_header(ExtHeader::Fragment {
                offset: 0,
                more: false,
                id: 13,
            })
            .tcp(5353, 80)
            .build();
        prog.expect_allow(&p, &format!("{direction} atomic fragment"));
        // AH counts its length in 4-byte units: the ports behind it are read at the right
        // offset (80 allowed, 22 denied by policy), whole and fragmented.
        for (port, what) in [(80, "allowed"), (22, "denied")] {
            let p = oriented(direction, peer(true), true)
                .ext_header(ExtHeader::HopByHop)
                .ext_header(ExtHeader::Auth)
                .tcp(5353, port)
                .build();
            let what = format!("{direction} v6 AH {what}");
            if port == 80 {
                let ev = prog.expect_allow(&p, &what);
                check_event_fields(&ev, direction, true, Protocol::Tcp, 5353, 80, &what);
            } else {
                prog.expect_drop(&p, DROP_POLICY_DENY, &what);
            }
        }
        let p = oriented(direction, peer(true), true)
            .ext_header(ExtHeader::Auth)
            .udp(5353, 53)
            .payload(&PAYLOAD);
        for (i, part) in p.fragments(14, 24).iter().enumerate() {
            prog.expect_allow(part, &format!("{direction} v6 AH fragment {i}"));
        }
        // Five extension headers before the upper layer: more than the walk inspects (Cilium's
        // limit is four too), so the packet is invalid.
        let p = oriented(direction, peer(true), true)
            .ext_header(ExtHeader::HopByHop)
            .ext_header(ExtHeader::DestOpts)
            .ext_header(ExtHeader::Routing)
            .ext_header(ExtHeader::Auth)
            .ext_header(ExtHeader::DestOpts)
            .tcp(5353, 80)
            .build();
        prog.expect_drop(&p, DROP_INVALID, &format!("{direction} v6 five headers"));
    }
}

#[test]
fn first_fragment_too_short_for_the_l4_header() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    for direction in [Direction::Ingress, Direction::Egress] {
        for v6 in [false, true] {
            let mut prog = Prog::new(direction);
            let what = format!("{direction} v6={v6}");
            // A hand-made UDP fragment with `body` as its only upper-layer bytes.
            let tiny = |base: Packet, id: u32, offset: u16, more: bool, body: &[u8]| -> Vec<u8> {
                let p = if v6 {
                    base.ext_header(ExtHeader::Fragment { offset, more, id })
                } else {
                    base.ip_id(id as u16).fragment(offset, more)
                };
                p.l4_proto(17).payload(body).build()
            };
            let base = oriented(direction, peer(v6), v6);
            // Two bytes of UDP: no ports, nothing recorded.
            let first = tiny(base.clone(), 21, 0, true, &[0x9c, 0x40]);
            prog.expect_drop(&first, DROP_CT_INVALID_HDR, &format!("{what} 2-byte first"));
            let later = tiny(base.clone(), 21, 1, false, &[0; 16]);
            prog.expect_drop(
                &later,
                DROP_FRAG_NOT_FOUND,
                &format!("{what} after 2-byte first"),
            );

            // TCP cut after 8 bytes: ports but no flags. Cilium records the ports, then drops
            // the fragment for the missing flags; later fragments are judged by policy.
            let parts = with_l4(base.clone(), Protocol::Tcp, 40000, 80)
                .payload(&PAYLOAD)
                .fragments(22, 8);
            prog.expect_drop(
                &parts[0],
                DROP_CT_INVALID_HDR,
                &format!("{what} 8-byte TCP first"),
            );
            let ev = prog.expect_allow(&parts[3], &format!("{what} after 8-byte TCP first"));
            check_event_fields(&ev, direction, v6, Protocol::Tcp, 40000, 80, &what);
            let parts = with_l4(base.clone(), Protocol::Tcp, 40000, 22)
                .payload(&PAYLOAD)
                .fragments(23, 8);
            prog.expect_drop(
                &parts[0],
                DROP_CT_INVALID_HDR,
                &format!("{what} 8-byte denied first"),
            );
            prog.expect_drop(
                &parts[2],
                DROP_POLICY_DENY,
                &format!("{what} after 8-byte denied first"),
            );
            // UDP needs only its ports: an 8-byte first fragment is enough.
            let parts = with_l4(base, Protocol::Udp, 40000, 53)
                .payload(&PAYLOAD)
                .fragments(24, 8);
            prog.expect_allow(&parts[0], &format!("{what} 8-byte UDP first"));
            prog.expect_allow(&parts[4], &format!("{what} after 8-byte UDP first"));
        }
    }
}

#[test]
fn fragmented_icmp_is_dropped_as_invalid() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    for direction in [Direction::Ingress, Direction::Egress] {
        let mut prog = Prog::new(direction);
        for v6 in [false, true] {
            let base = oriented(direction, peer(v6), v6);
            let whole = if v6 {
                base.icmpv6(128, 0)
            } else {
                base.icmp(8, 0)
            }
            .payload(&PAYLOAD);
            // The whole echo request is allowed (rule 1 allows ICMP)...
            prog.expect_allow(&whole.build(), &format!("{direction} v6={v6} whole echo"));
            // ...its fragments are not.
            for (i, part) in whole.fragments(31, 24).iter().enumerate() {
                prog.expect_drop(
                    part,
                    DROP_INVALID,
                    &format!("{direction} v6={v6} echo fragment {i}"),
                );
            }
        }
    }
}

/// Bytes of a map's only entry after one run.
fn only_entry(obj: &LoadedObject, map: &str) -> (Vec<u8>, Vec<u8>) {
    let m = obj.map(map).expect("fragment map");
    let keys = m.keys().expect("keys");
    assert_eq!(keys.len(), 1, "{map}: {keys:02x?}");
    let value = m.lookup(&keys[0]).expect("lookup").expect("value");
    (keys[0].clone(), value)
}

fn load_raw(direction: Direction) -> LoadedObject {
    let obj = load_object_raw(&object(&policy(), direction)).expect("load");
    fill_ipcache_trie(&obj, &peer_ipcache());
    obj
}

#[test]
fn fragment_map_entries_have_ciliums_layout() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    assert_eq!(parse::DROP_FRAG_NOT_FOUND, i64::from(DROP_FRAG_NOT_FOUND));
    assert_eq!(parse::DROP_CT_INVALID_HDR, i64::from(DROP_CT_INVALID_HDR));
    for direction in [Direction::Ingress, Direction::Egress] {
        let (name, _) = lower::program_for(direction);
        // IPv4: daddr, saddr, id (network order), proto, pad → sport, dport (network order).
        let obj = load_raw(direction);
        let parts = datagram(direction, false, Protocol::Udp, 0x1234, 53, 0xbeef);
        assert_eq!(obj.program(name).unwrap().run(&parts[0]).unwrap().retval, 0);
        let (key, value) = only_entry(&obj, maps::FRAG4);
        let mut want = parts[0][30..34].to_vec();
        want.extend_from_slice(&parts[0][26..30]);
        want.extend_from_slice(&[0xbe, 0xef, 17, 0]);
        assert_eq!(key, want, "{direction} v4 key");
        assert_eq!(value, [0x12, 0x34, 0, 53], "{direction} v4 value");
        assert!(obj.map(maps::FRAG6).unwrap().keys().unwrap().is_empty());

        // IPv6: id (network order), proto, pad[3], saddr, daddr.
        let parts = datagram(direction, true, Protocol::Tcp, 0x1234, 80, 0xdead_beef);
        assert_eq!(obj.program(name).unwrap().run(&parts[0]).unwrap().retval, 0);
        let (key, value) = only_entry(&obj, maps::FRAG6);
        let mut want = vec![0xde, 0xad, 0xbe, 0xef, 6, 0, 0, 0];
        want.extend_from_slice(&parts[0][22..54]);
        assert_eq!(key, want, "{direction} v6 key");
        assert_eq!(value, [0x12, 0x34, 0, 80], "{direction} v6 value");

        // The entry is written before policy: a denied first fragment leaves one too.
        let obj = load_raw(direction);
        let parts = datagram(direction, false, Protocol::Tcp, 0x1234, 22, 0x0102);
        assert_eq!(obj.program(name).unwrap().run(&parts[0]).unwrap().retval, 2);
        let (_, value) = only_entry(&obj, maps::FRAG4);
        assert_eq!(value, [0x12, 0x34, 0, 22]);
        // An unfragmented packet writes nothing.
        let obj = load_raw(direction);
        let whole = with_l4(
            oriented(direction, peer(false), false),
            Protocol::Udp,
            1,
            53,
        )
        .build();
        assert_eq!(obj.program(name).unwrap().run(&whole).unwrap().retval, 0);
        assert!(obj.map(maps::FRAG4).unwrap().keys().unwrap().is_empty());
    }
}

/// Without clearing CT: the first fragment of an allowed datagram creates exactly the flow entry
/// the whole packet would (no trace of fragment bookkeeping in the key), and its later
/// fragments, carrying the same ports, belong to that flow.
#[test]
fn later_fragments_join_the_flow_of_the_first() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    for direction in [Direction::Ingress, Direction::Egress] {
        for v6 in [false, true] {
            for proto in [Protocol::Udp, Protocol::Tcp] {
                let what = format!("{direction} v6={v6} {proto}");
                let (name, _) = lower::program_for(direction);
                let dport = allowed_port(proto);
                let whole = with_l4(oriented(direction, peer(v6), v6), proto, 1000, dport)
                    .payload(&PAYLOAD)
                    .build();
                let obj = load_raw(direction);
                assert_eq!(obj.program(name).unwrap().run(&whole).unwrap().retval, 0);
                let want = obj.map(maps::CT).unwrap().keys().unwrap();
                assert_eq!(want.len(), 1, "{what}: one flow");

                let obj = load_raw(direction);
                let run = |p: &[u8]| obj.program(name).unwrap().run(p).unwrap().retval;
                let parts = datagram(direction, v6, proto, 1000, dport, 5);
                assert_eq!(run(&parts[0]), 0, "{what}");
                let ct = obj.map(maps::CT).unwrap().keys().unwrap();
                assert_eq!(
                    ct, want,
                    "{what}: the first fragment's flow is the packet's"
                );
                for part in &parts[1..] {
                    assert_eq!(run(part), 0, "{what}");
                }
                assert_eq!(
                    obj.map(maps::CT).unwrap().keys().unwrap(),
                    want,
                    "{what}: the same flow"
                );
            }
        }
    }
}

/// Random policies and datagrams: every fragment of a TCP/UDP/SCTP datagram, first and later in
/// a random order, gets the reference evaluator's verdict for the whole packet.
#[test]
fn every_fragment_agrees_with_the_reference_evaluator() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    let mut rng = Rng(0x0f4a_6000);
    let mut judged = 0usize;
    for case_no in 0..60 {
        let case = random_case(&mut rng);
        let obj = load_object_raw(&object(&case.policy, case.direction)).expect("load");
        fill_ipcache_trie(&obj, &trie_entries(&case.ipcache.0));
        let (name, _) = lower::program_for(case.direction);
        let prog = obj.program(name).expect("program");
        let ct = obj.map(maps::CT).expect("ct");
        let peers = candidate_peers(&case);
        let ports = candidate_ports(&case.policy);
        for n in 0..25u32 {
            let peer = *rng.pick(&peers);
            let proto = *rng.pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp]);
            let port = if rng.chance(80) {
                *rng.pick(&ports)
            } else {
                rng.below(65536) as u16
            };
            let sport = 1024 + rng.below(60000) as u16;
            let id = case_no * 1000 + n;
            let mut parts =
                build_fragments(case.direction, peer, proto, port, sport, id).expect("fragments");
            let want = expected_verdict(&case, peer, proto, port);
            // The first goes first; the others in a random order.
            for i in (2..parts.len()).rev() {
                let j = 1 + rng.below(i as u64) as usize;
                parts.swap(i, j);
            }
            for (i, part) in parts.iter().enumerate() {
                let got = prog.run(part).expect("test run").retval;
                for k in ct.keys().expect("ct keys") {
                    ct.delete(&k).expect("ct delete");
                }
                assert_eq!(
                    got == 0,
                    want.is_allow(),
                    "case {case_no}: {} {proto} peer {peer} port {port} piece {i}: kernel {got}, evaluator {want:?}",
                    case.direction
                );
                judged += 1;
            }
        }
    }
    assert!(judged >= 60 * 25 * 3, "{judged} fragments judged");
}
