//! Random policies, ipcache contents and packets for the policy tests (differential, events):
//! one generator, seeded, so a failure reproduces by its seed and case number.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ciliumc_ir::cidr::{Cidr, CidrRule};
use ciliumc_ir::evaluator::{PeerInfo, Verdict, verdict_direction};
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{
    Direction, DirectionPolicy, L4Match, PeerSet, PortRange, Protocol, Rule, RuleId, RuleKind,
};
use ciliumc_tests::packet::Packet;

/// SplitMix64: small, seedable, and the same on every machine, so a failure reproduces by seed.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

pub const ENDPOINT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const ENDPOINT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
pub const LOCAL_IDENTITY: u32 = 300;

/// The object of one direction's program for the endpoint with [`LOCAL_IDENTITY`], with the shared
/// maps private (not pinned): every load starts with empty CT and fragment maps.
pub fn private_object(
    policy: &ciliumc_ir::policy::DirectionPolicy,
    direction: ciliumc_ir::policy::Direction,
) -> Vec<u8> {
    use ciliumc_compiler::compile::{self, MapPinning};
    compile::inline_direction_object(
        NumericIdentity(LOCAL_IDENTITY),
        policy,
        direction,
        MapPinning::Private,
    )
    .expect("compile")
}

/// Cluster peers of a case: (identity, v4, v6).
/// Fills only the ipcache trie of a raw-loaded object with `entries` (`maps::ipcache_key` /
/// `ipcache_value` layout), host routes included, and sets `ciliumc_ipcinfo` to match, so the
/// programs ask the trie after their exact-match maps miss.
#[allow(dead_code)]
pub fn fill_ipcache_trie(
    obj: &ciliumc_tests::loader::LoadedObject,
    entries: &[(Vec<u8>, Vec<u8>)],
) {
    use ciliumc_compiler::lower::maps;
    let trie = obj.map(maps::IPCACHE).expect("ipcache map");
    for (k, v) in entries {
        trie.update(k, v, 0).expect("ipcache update");
    }
    let (k, v) = maps::ipcache_info_entry(entries.iter().map(|(k, _)| k.as_slice()));
    obj.map(maps::IPCACHE_INFO)
        .expect("ipcache info map")
        .update(&k, &v, 0)
        .expect("ipcache info update");
}

/// Fills every ipcache map of a raw-loaded object as the compiler's manifest does
/// (`maps::ipcache_map_entries`): host routes in the exact-match maps and the bucket arrays, the
/// other prefixes in the trie, `ciliumc_ipcinfo` with the buckets on.
#[allow(dead_code)]
pub fn fill_ipcache_compiled(obj: &ciliumc_tests::loader::LoadedObject, ipcache: &[(Cidr, u32)]) {
    use ciliumc_compiler::lower::maps;
    for (name, entries) in maps::ipcache_map_entries(ipcache) {
        let map = obj.map(&name).expect("ipcache map");
        for (k, v) in entries {
            map.update(&k, &v, 0).expect("ipcache update");
        }
    }
}

/// The trie entries of a case's ipcache.
#[allow(dead_code)]
pub fn trie_entries(ipcache: &[(Cidr, u32)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    use ciliumc_compiler::lower::maps;
    ipcache
        .iter()
        .map(|(c, id)| (maps::ipcache_key(c), maps::ipcache_value(*id)))
        .collect()
}

pub fn cluster_peers() -> Vec<(u32, Ipv4Addr, Ipv6Addr)> {
    let mut v = vec![
        (
            NumericIdentity::HOST.0,
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1),
        ),
        (
            NumericIdentity::REMOTE_NODE.0,
            Ipv4Addr::new(198, 51, 100, 2),
            Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2),
        ),
    ];
    for i in 0..12u32 {
        let a = 20 + i as u8;
        v.push((
            256 + i * 7,
            Ipv4Addr::new(192, 0, 2, a),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20 + i as u16),
        ));
    }
    v
}

pub fn random_cidr(rng: &mut Rng, v6: bool) -> Cidr {
    if v6 {
        let len = *rng.pick(&[32u8, 48, 64, 96, 112, 120, 127, 128]);
        let addr = Ipv6Addr::new(
            0x2001,
            0xdb8,
            rng.below(4) as u16,
            0,
            0,
            0,
            rng.below(3) as u16,
            rng.below(256) as u16,
        );
        Cidr::new(IpAddr::V6(addr), len).expect("valid")
    } else {
        let len = *rng.pick(&[0u8, 8, 16, 20, 24, 25, 28, 30, 31, 32]);
        let base = *rng.pick(&[[203u8, 0, 113], [198, 51, 100], [192, 0, 2]]);
        let addr = Ipv4Addr::new(base[0], base[1], base[2], rng.below(256) as u8);
        Cidr::new(IpAddr::V4(addr), len).expect("valid")
    }
}

pub fn random_cidr_rule(rng: &mut Rng) -> CidrRule {
    let v6 = rng.chance(35);
    let cidr = random_cidr(rng, v6);
    let mut except = Vec::new();
    if rng.chance(40) {
        for _ in 0..1 + rng.below(2) {
            let e = random_cidr(rng, v6);
            if e.prefix_len() > cidr.prefix_len() && cidr.contains(&e) {
                except.push(e);
            }
        }
    }
    CidrRule::with_except(cidr, except)
}

pub fn random_range(rng: &mut Rng) -> PortRange {
    match rng.below(5) {
        0 => PortRange::ANY,
        1 | 2 => PortRange::single(*rng.pick(&[80u16, 443, 53, 8080, 1, 65535, 0x2000])),
        _ => {
            let lo = *rng.pick(&[80u16, 1000, 8000, 9001, 1, 65000]);
            let hi = lo.saturating_add(rng.below(2000) as u16);
            PortRange::new(lo, hi).expect("lo <= hi")
        }
    }
}

pub fn random_l4(rng: &mut Rng) -> Option<Vec<L4Match>> {
    if rng.chance(25) {
        return None;
    }
    let n = rng.below(4);
    let mut list = Vec::new();
    for _ in 0..n {
        let proto = *rng.pick(&[
            Protocol::Tcp,
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Sctp,
            Protocol::Icmp,
            Protocol::Icmpv6,
        ]);
        let m = if proto.is_icmp() {
            L4Match::icmp(
                proto,
                if rng.chance(30) {
                    None
                } else {
                    Some(*rng.pick(&[8u8, 0, 3, 128, 129]))
                },
            )
        } else {
            L4Match::new(proto, random_range(rng))
        };
        list.push(m);
    }
    Some(list)
}

pub fn random_peers(rng: &mut Rng, peers: &[(u32, Ipv4Addr, Ipv6Addr)]) -> PeerSet {
    if rng.chance(10) {
        return PeerSet::All;
    }
    let mut identities = BTreeSet::new();
    let max_ids = if rng.chance(20) { 12 } else { 4 };
    let n_ids = rng.below(max_ids);
    for _ in 0..n_ids {
        let id = if rng.chance(15) {
            NumericIdentity::WORLD.0
        } else {
            rng.pick(peers).0
        };
        identities.insert(NumericIdentity(id));
    }
    let mut cidrs = Vec::new();
    if rng.chance(35) {
        for _ in 0..1 + rng.below(3) {
            cidrs.push(random_cidr_rule(rng));
        }
    }
    PeerSet::Selected { identities, cidrs }
}

pub fn random_policy(rng: &mut Rng, direction: Direction) -> DirectionPolicy {
    let n = rng.below(9);
    random_policy_of(rng, direction, n)
}

/// A random policy of `n` rules.
pub fn random_policy_of(rng: &mut Rng, direction: Direction, n: u64) -> DirectionPolicy {
    let peers = cluster_peers();
    let mut rules = Vec::new();
    for i in 0..n {
        rules.push(Rule {
            id: RuleId(1 + i as u32),
            kind: if rng.chance(25) {
                RuleKind::Deny
            } else {
                RuleKind::Allow
            },
            peers: random_peers(rng, &peers),
            l4: random_l4(rng),
        });
    }
    DirectionPolicy {
        enforced: !rng.chance(8),
        default_deny: !rng.chance(10),
        allow_localhost: direction == Direction::Ingress && !rng.chance(10),
        rules,
    }
}

/// Every prefix mentioned by a policy gets a CIDR identity, as resolve does.
pub fn cidr_identities(policy: &DirectionPolicy) -> Vec<(Cidr, u32)> {
    let mut set = BTreeSet::new();
    for r in &policy.rules {
        if let PeerSet::Selected { cidrs, .. } = &r.peers {
            for c in cidrs {
                set.insert(c.cidr);
                set.extend(c.except.iter().copied());
            }
        }
    }
    set.into_iter()
        .enumerate()
        .map(|(i, c)| (c, 0x0100_0001 + i as u32))
        .collect()
}

/// The ipcache as the datapath sees it: longest-prefix match, a miss is world.
pub struct IpcacheModel(pub Vec<(Cidr, u32)>);
impl IpcacheModel {
    pub fn lookup(&self, ip: IpAddr) -> u32 {
        self.0
            .iter()
            .filter(|(c, _)| c.contains_ip(&ip))
            .max_by_key(|(c, _)| c.prefix_len())
            .map(|(_, id)| *id)
            .unwrap_or(NumericIdentity::WORLD.0)
    }
}

pub struct Case {
    pub policy: DirectionPolicy,
    pub direction: Direction,
    pub ipcache: IpcacheModel,
}

/// A packet between the endpoint and `peer`, oriented by the program's direction.
pub fn build_packet(
    direction: Direction,
    peer: IpAddr,
    proto: Protocol,
    port: u16,
    sport: u16,
) -> Option<Vec<u8>> {
    packet_builder(direction, peer, proto, port, sport).map(|p| p.build())
}

fn packet_builder(
    direction: Direction,
    peer: IpAddr,
    proto: Protocol,
    port: u16,
    sport: u16,
) -> Option<Packet> {
    let p = match (peer, direction) {
        (IpAddr::V4(peer), Direction::Ingress) => Packet::ipv4(peer, ENDPOINT_V4),
        (IpAddr::V4(peer), Direction::Egress) => Packet::ipv4(ENDPOINT_V4, peer),
        (IpAddr::V6(peer), Direction::Ingress) => Packet::ipv6(peer, ENDPOINT_V6),
        (IpAddr::V6(peer), Direction::Egress) => Packet::ipv6(ENDPOINT_V6, peer),
    };
    Some(match proto {
        Protocol::Tcp => p.tcp(sport, port),
        Protocol::Udp => p.udp(sport, port),
        Protocol::Sctp => p.sctp(sport, port),
        Protocol::Icmp if peer.is_ipv4() => p.icmp(u8::try_from(port).ok()?, 0),
        Protocol::Icmpv6 if peer.is_ipv6() => p.icmpv6(u8::try_from(port).ok()?, 0),
        _ => return None,
    })
}

/// Fragments: the datagram of [`build_packet`] with a 56-byte payload, cut into 24-byte pieces
/// (3 or more; the first holds the whole TCP, UDP or SCTP header) with identification `id`. `None` for
/// ICMP, whose fragments are dropped as invalid whatever the policy (as in Cilium).
pub fn build_fragments(
    direction: Direction,
    peer: IpAddr,
    proto: Protocol,
    port: u16,
    sport: u16,
    id: u32,
) -> Option<Vec<Vec<u8>>> {
    if !matches!(proto, Protocol::Tcp | Protocol::Udp | Protocol::Sctp) {
        return None;
    }
    let payload: Vec<u8> = (0..56u8).collect();
    let p = packet_builder(direction, peer, proto, port, sport)?.payload(&payload);
    Some(p.fragments(id, 24))
}

/// Addresses at the edges of every CIDR the policy mentions, plus cluster peers and strangers.
pub fn candidate_peers(case: &Case) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = cluster_peers()
        .iter()
        .flat_map(|(_, a, b)| [IpAddr::V4(*a), IpAddr::V6(*b)])
        .collect();
    out.push(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77)));
    out.push(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 5)));
    for (c, _) in &case.ipcache.0 {
        let (first, last) = first_last(c);
        out.extend([first, last]);
        if let Some(before) = step(first, -1) {
            out.push(before);
        }
        if let Some(after) = step(last, 1) {
            out.push(after);
        }
    }
    out
}

pub fn first_last(c: &Cidr) -> (IpAddr, IpAddr) {
    match c.addr() {
        IpAddr::V4(a) => {
            let host = u32::MAX.checked_shr(u32::from(c.prefix_len())).unwrap_or(0);
            (
                IpAddr::V4(a),
                IpAddr::V4(Ipv4Addr::from(u32::from(a) | host)),
            )
        }
        IpAddr::V6(a) => {
            let host = u128::MAX
                .checked_shr(u32::from(c.prefix_len()))
                .unwrap_or(0);
            (
                IpAddr::V6(a),
                IpAddr::V6(Ipv6Addr::from(u128::from(a) | host)),
            )
        }
    }
}

pub fn step(ip: IpAddr, by: i128) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(a) => u32::try_from(i128::from(u32::from(a)) + by)
            .ok()
            .map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            let n = if by < 0 {
                v.checked_sub(by.unsigned_abs())
            } else {
                v.checked_add(by as u128)
            };
            n.map(|v| IpAddr::V6(Ipv6Addr::from(v)))
        }
    }
}

pub fn candidate_ports(policy: &DirectionPolicy) -> Vec<u16> {
    let mut out = vec![0u16, 1, 80, 443, 65535, 8, 128, 129, 3];
    for r in &policy.rules {
        for m in r.l4.iter().flatten() {
            out.extend([m.ports.lo, m.ports.hi]);
            out.extend(m.ports.lo.checked_sub(1));
            out.extend(m.ports.hi.checked_add(1));
        }
    }
    out
}

/// The evaluator's verdict for a packet of `case` from/to `peer`.
pub fn expected_verdict(case: &Case, peer: IpAddr, proto: Protocol, port: u16) -> Verdict {
    let id = case.ipcache.lookup(peer);
    verdict_direction(
        &case.policy,
        case.direction,
        PeerInfo::new(NumericIdentity(id), Some(peer)),
        proto,
        port,
    )
}

/// A random case: direction, policy, and the ipcache (cluster peers plus the policy's prefixes).
pub fn random_case(rng: &mut Rng) -> Case {
    let direction = if rng.chance(50) {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    let policy = random_policy(rng, direction);
    case_for(policy, direction)
}

/// A random case with `n` rules that mostly name one peer and a few ports each, so that every
/// identity class gets many port segments (a large decision); one rule in ten is fully random.
pub fn random_case_of(rng: &mut Rng, n: u64) -> Case {
    let direction = if rng.chance(50) {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    let peers = cluster_peers();
    let mut policy = random_policy_of(rng, direction, 0);
    policy.enforced = true;
    for i in 0..n {
        let (peers, l4) = if rng.chance(10) {
            (random_peers(rng, &peers), random_l4(rng))
        } else {
            let id = if rng.chance(10) {
                NumericIdentity::WORLD.0
            } else {
                rng.pick(&peers).0
            };
            let l4 = (0..1 + rng.below(3))
                .map(|_| {
                    let proto = *rng.pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp]);
                    L4Match::new(proto, random_range(rng))
                })
                .collect();
            (PeerSet::identities([NumericIdentity(id)]), Some(l4))
        };
        policy.rules.push(Rule {
            id: RuleId(1 + i as u32),
            kind: if rng.chance(20) {
                RuleKind::Deny
            } else {
                RuleKind::Allow
            },
            peers,
            l4,
        });
    }
    case_for(policy, direction)
}

/// `policy` with the cluster peers and its CIDR identities in the ipcache. A prefix has one
/// identity, and an endpoint's or node's wins over a CIDR identity of the same prefix (as
/// Cilium's ipcache and `compile::ipcache_identity` have it).
pub fn case_for(policy: DirectionPolicy, direction: Direction) -> Case {
    let mut ipcache: Vec<(Cidr, u32)> = cluster_peers()
        .iter()
        .flat_map(|(id, a, b)| {
            [
                (Cidr::host(IpAddr::V4(*a)), *id),
                (Cidr::host(IpAddr::V6(*b)), *id),
            ]
        })
        .collect();
    for (cidr, id) in cidr_identities(&policy) {
        if !ipcache.iter().any(|(c, _)| *c == cidr) {
            ipcache.push((cidr, id));
        }
    }
    Case {
        policy,
        direction,
        ipcache: IpcacheModel(ipcache),
    }
}

/// A random packet of `case` (peer at a CIDR edge or a cluster peer, port at a range edge).
pub fn random_packet(
    rng: &mut Rng,
    case: &Case,
    peers: &[IpAddr],
    ports: &[u16],
) -> Option<(IpAddr, Protocol, u16, Vec<u8>)> {
    let peer = *rng.pick(peers);
    let proto = *rng.pick(&[
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Sctp,
        Protocol::Icmp,
        Protocol::Icmpv6,
    ]);
    let port = if rng.chance(80) {
        *rng.pick(ports)
    } else {
        rng.below(65536) as u16
    };
    let sport = 1024 + rng.below(60000) as u16;
    // Now and then the first fragment of the datagram instead: it records its ports and is
    // judged as the whole packet would be.
    if rng.chance(10) {
        let id = rng.next() as u32;
        if let Some(mut parts) = build_fragments(case.direction, peer, proto, port, sport, id) {
            return Some((peer, proto, port, parts.swap_remove(0)));
        }
    }
    let packet = build_packet(case.direction, peer, proto, port, sport)?;
    Some((peer, proto, port, packet))
}
