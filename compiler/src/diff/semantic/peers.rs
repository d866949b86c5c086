//! The peers a semantic diff talks about, and the port intervals it evaluates per pair.
//!
//! In: the two resolved clusters. Out: source and destination [`Peer`] lists shared by both sides:
//! workloads present on both sides (connlist's `ns/name[Kind]`, endpoints grouped by top owner),
//! external ranges (`a-b[External]`; sources cut at every ingress prefix, destinations at every
//! egress prefix, of either side, so both sides are judged on the same ranges; IPv4 and IPv6) and
//! the entities `host`, `remote-node` and `kube-apiserver`; plus the workloads on one side only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ciliumc_ir::{Cidr, DirectionPolicy, Endpoint, NumericIdentity, PeerInfo, Protocol};

use crate::diff::WorkloadDiff;
use crate::resolve::ResolvedCluster;

/// One side's endpoints grouped by workload label.
pub struct SideIndex<'a> {
    pub cluster: &'a ResolvedCluster,
    groups: BTreeMap<String, Vec<usize>>,
}

impl<'a> SideIndex<'a> {
    pub fn new(cluster: &'a ResolvedCluster) -> Self {
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, ep) in cluster.endpoints.iter().enumerate() {
            groups.entry(workload_label(ep)).or_default().push(i);
        }
        SideIndex { cluster, groups }
    }

    /// Endpoint indices of a workload (empty when it does not exist on this side).
    pub fn members(&self, label: &str) -> &[usize] {
        self.groups.get(label).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// connlist's workload name.
pub fn workload_label(ep: &Endpoint) -> String {
    format!(
        "{}/{}[{}]",
        ep.namespace, ep.workload.name, ep.workload.kind
    )
}

/// Entities listed as peers besides workloads and external ranges.
const ENTITIES: [(NumericIdentity, &str); 3] = [
    (NumericIdentity::HOST, "host"),
    (NumericIdentity::REMOTE_NODE, "remote-node"),
    (NumericIdentity::KUBE_APISERVER, "kube-apiserver"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A workload label.
    Workload(String),
    External {
        label: String,
        ip: IpAddr,
    },
    Entity {
        name: &'static str,
        id: NumericIdentity,
    },
}

impl Peer {
    pub fn label(&self) -> String {
        match self {
            Peer::Workload(l) | Peer::External { label: l, .. } => l.clone(),
            Peer::Entity { name, .. } => format!("{name}[Entity]"),
        }
    }

    /// How a non-workload peer appears to an endpoint.
    pub fn peer_info(&self) -> Option<PeerInfo> {
        match self {
            Peer::Workload(_) => None,
            Peer::External { ip, .. } => Some(world_peer(*ip)),
            Peer::Entity { id, .. } => Some(PeerInfo::new(*id, None)),
        }
    }

    /// Pairs with a workload on at least one side, never a workload with itself.
    pub fn is_pair(src: &Peer, dst: &Peer) -> bool {
        match (src, dst) {
            (Peer::Workload(a), Peer::Workload(b)) => a != b,
            (Peer::Workload(_), _) | (_, Peer::Workload(_)) => true,
            _ => false,
        }
    }
}

pub use crate::connlist::seen_as;
use crate::connlist::{segments, world_peer};

fn external_peers<'c>(cidrs: impl Iterator<Item = &'c Cidr>) -> Vec<Peer> {
    let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
    for c in cidrs {
        if c.is_ipv4() {
            v4.insert(c.range());
        } else {
            v6.insert(c.range());
        }
    }
    let mut out = Vec::new();
    for (lo, hi) in segments(&v4, u32::MAX as u128) {
        let (a, b) = (Ipv4Addr::from(lo as u32), Ipv4Addr::from(hi as u32));
        out.push(Peer::External {
            label: format!("{a}-{b}[External]"),
            ip: IpAddr::V4(a),
        });
    }
    for (lo, hi) in segments(&v6, u128::MAX) {
        let (a, b) = (Ipv6Addr::from(lo), Ipv6Addr::from(hi));
        out.push(Peer::External {
            label: format!("{a}-{b}[External]"),
            ip: IpAddr::V6(a),
        });
    }
    out
}

/// (sources, destinations, workloads on one side only).
pub fn peer_lists(old: &SideIndex, new: &SideIndex) -> (Vec<Peer>, Vec<Peer>, WorkloadDiff) {
    let mut workloads = Vec::new();
    let mut diff = WorkloadDiff::default();
    let labels: BTreeSet<&String> = old.groups.keys().chain(new.groups.keys()).collect();
    for l in labels {
        match (old.groups.contains_key(l), new.groups.contains_key(l)) {
            (true, true) => workloads.push(Peer::Workload(l.clone())),
            (true, false) => diff.removed.push(l.clone()),
            (false, true) => diff.added.push(l.clone()),
            (false, false) => {}
        }
    }
    let entities = ENTITIES.map(|(id, name)| Peer::Entity { name, id });
    let ingress = old
        .cluster
        .ingress_cidrs
        .iter()
        .chain(&new.cluster.ingress_cidrs);
    let egress = old
        .cluster
        .egress_cidrs
        .iter()
        .chain(&new.cluster.egress_cidrs);
    let mut sources = workloads.clone();
    sources.extend(external_peers(ingress));
    sources.extend(entities.iter().cloned());
    let mut destinations = workloads;
    destinations.extend(external_peers(egress));
    destinations.extend(entities);
    (sources, destinations, diff)
}

/// (has IPv4, has IPv6) of a peer on either side.
fn families(peer: &Peer, old: &SideIndex, new: &SideIndex) -> (bool, bool) {
    match peer {
        Peer::Workload(l) => {
            let eps = old
                .members(l)
                .iter()
                .map(|i| &old.cluster.endpoints[*i])
                .chain(new.members(l).iter().map(|i| &new.cluster.endpoints[*i]));
            eps.fold((false, false), |(v4, v6), e| {
                (v4 || e.ipv4.is_some(), v6 || e.ipv6.is_some())
            })
        }
        Peer::External { ip, .. } => (ip.is_ipv4(), ip.is_ipv6()),
        Peer::Entity { .. } => (true, true),
    }
}

/// TCP, UDP and SCTP always; ICMP when both ends have IPv4, ICMPv6 when both have IPv6.
pub fn pair_protocols(src: &Peer, dst: &Peer, old: &SideIndex, new: &SideIndex) -> Vec<Protocol> {
    let (s4, s6) = families(src, old, new);
    let (d4, d6) = families(dst, old, new);
    let mut out = vec![Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
    if s4 && d4 {
        out.push(Protocol::Icmp);
    }
    if s6 && d6 {
        out.push(Protocol::Icmpv6);
    }
    out
}

/// Ports 1-65535 (port 0 is not a connection, as in connlist); ICMP types 0-255.
pub fn port_domain(protocol: Protocol) -> (u16, u16) {
    if protocol.is_icmp() {
        (0, 255)
    } else {
        (1, u16::MAX)
    }
}

/// Intervals of the domain with the same rule boundaries in every policy the pair involves on
/// either side (source egress, destination ingress).
pub fn port_cuts(
    src: &Peer,
    dst: &Peer,
    protocol: Protocol,
    old: &SideIndex,
    new: &SideIndex,
) -> Vec<(u16, u16)> {
    let mut policies: Vec<&DirectionPolicy> = Vec::new();
    for side in [old, new] {
        if let Peer::Workload(l) = src {
            policies.extend(
                side.members(l)
                    .iter()
                    .map(|i| &side.cluster.policies[*i].egress),
            );
        }
        if let Peer::Workload(l) = dst {
            policies.extend(
                side.members(l)
                    .iter()
                    .map(|i| &side.cluster.policies[*i].ingress),
            );
        }
    }
    let (lo, hi) = port_domain(protocol);
    let (lo, hi) = (lo as u32, hi as u32);
    let mut cuts: BTreeSet<u32> = BTreeSet::from([lo]);
    for p in policies {
        for r in &p.rules {
            for m in r.l4.iter().flatten().filter(|m| m.protocol == protocol) {
                cuts.insert((m.ports.lo as u32).max(lo));
                cuts.insert(m.ports.hi as u32 + 1);
            }
        }
    }
    let cuts: Vec<u32> = cuts.into_iter().filter(|c| *c <= hi).collect();
    cuts.iter()
        .enumerate()
        .map(|(i, start)| {
            let end = cuts.get(i + 1).map(|n| n - 1).unwrap_or(hi);
            (*start as u16, end as u16)
        })
        .collect()
}
