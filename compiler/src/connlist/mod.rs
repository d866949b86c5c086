//! Connection lists: every allowed connection between workloads and external address ranges.
//!
//! In: a [`ResolvedCluster`]. Out: [`Connection`]s `src => dst : conns`, and their rendering as
//! `txt`, `json` or `netpol-analyzer` (np-guard's lines, byte for byte). Peers are workloads
//! (`ns/name[Kind]`, endpoints grouped by their top owner; self pairs omitted) and external ranges
//! (`a.b.c.d-e.f.g.h[External]`: the address space cut at every boundary of every CIDR any rule
//! mentions). A connection src→dst on (protocol, port) is allowed when the reference evaluator
//! allows it on src's egress AND dst's ingress; each maximal port interval with the same rule
//! boundaries is decided by evaluating one port of it. hostNetwork pods are seen by others with
//! their node's identity (host on the same node, remote-node elsewhere), as in Cilium.

pub mod conns;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ciliumc_ir::evaluator::verdict_direction;
use ciliumc_ir::{
    Direction, DirectionPolicy, Endpoint, EndpointKind, NumericIdentity, PeerInfo, PortRange,
};
use serde::Serialize;

pub use conns::{CONN_PROTOCOLS, ConnSet};

use crate::resolve::ResolvedCluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Txt,
    Json,
    NetpolAnalyzer,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "txt" => Ok(Format::Txt),
            "json" => Ok(Format::Json),
            "netpol-analyzer" => Ok(Format::NetpolAnalyzer),
            other => Err(format!(
                "unknown connlist format {other:?} (expected txt, json, netpol-analyzer)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub src: String,
    pub dst: String,
    pub conns: ConnSet,
}

#[derive(Serialize)]
struct JsonConnection<'a> {
    src: &'a str,
    dst: &'a str,
    conn: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnlistOptions {
    /// Also list IPv6 external ranges (np-guard lists IPv4 only).
    pub ipv6: bool,
}

enum Peer {
    Workload { label: String, members: Vec<usize> },
    External { label: String, ip: IpAddr },
}

fn workload_label(ep: &Endpoint) -> String {
    format!(
        "{}/{}[{}]",
        ep.namespace, ep.workload.name, ep.workload.kind
    )
}

fn fmt_v4(n: u128) -> String {
    Ipv4Addr::from(n as u32).to_string()
}

fn fmt_v6(n: u128) -> String {
    Ipv6Addr::from(n).to_string()
}

/// Cuts `[0, max]` at every prefix boundary; returns (first, last) per segment.
pub fn segments(prefixes: &BTreeSet<(u128, u128)>, max: u128) -> Vec<(u128, u128)> {
    let mut cuts: BTreeSet<u128> = BTreeSet::new();
    cuts.insert(0);
    for (lo, hi) in prefixes {
        cuts.insert(*lo);
        if *hi < max {
            cuts.insert(hi + 1);
        }
    }
    let cuts: Vec<u128> = cuts.into_iter().collect();
    cuts.iter()
        .enumerate()
        .map(|(i, lo)| (*lo, cuts.get(i + 1).map(|n| n - 1).unwrap_or(max)))
        .collect()
}

/// External ranges cut by the given prefixes.
fn external_peers(cidrs: &BTreeSet<ciliumc_ir::Cidr>, opts: &ConnlistOptions) -> Vec<Peer> {
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for c in cidrs {
        if c.is_ipv4() {
            v4.insert(c.range());
        } else {
            v6.insert(c.range());
        }
    }
    let mut out = Vec::new();
    for (lo, hi) in segments(&v4, u32::MAX as u128) {
        out.push(Peer::External {
            label: format!("{}-{}[External]", fmt_v4(lo), fmt_v4(hi)),
            ip: IpAddr::V4(Ipv4Addr::from(lo as u32)),
        });
    }
    if opts.ipv6 {
        for (lo, hi) in segments(&v6, u128::MAX) {
            out.push(Peer::External {
                label: format!("{}-{}[External]", fmt_v6(lo), fmt_v6(hi)),
                ip: IpAddr::V6(Ipv6Addr::from(lo)),
            });
        }
    }
    out
}

/// How `peer` appears to `observer`: a hostNetwork pod carries its node's identity.
pub fn seen_as(peer: &Endpoint, observer: Option<&Endpoint>) -> PeerInfo {
    let ip = peer.ipv4.map(IpAddr::V4).or(peer.ipv6.map(IpAddr::V6));
    let identity = if peer.kind == EndpointKind::HostNetwork {
        let same_node = matches!((observer.and_then(|o| o.node.as_ref()), &peer.node), (Some(a), Some(b)) if a == b);
        if same_node {
            NumericIdentity::HOST
        } else {
            NumericIdentity::REMOTE_NODE
        }
    } else {
        peer.identity
    };
    PeerInfo::new(identity, ip)
}

pub fn world_peer(ip: IpAddr) -> PeerInfo {
    let id = if ip.is_ipv4() {
        NumericIdentity::WORLD_IPV4
    } else {
        NumericIdentity::WORLD_IPV6
    };
    PeerInfo::new(id, Some(ip))
}

/// Port interval starts where some rule's port range begins or ends, per protocol.
fn port_cuts(policies: &[&DirectionPolicy], protocol: ciliumc_ir::Protocol) -> Vec<u16> {
    let mut cuts: BTreeSet<u32> = BTreeSet::from([1]);
    for p in policies {
        for r in &p.rules {
            for m in r.l4.iter().flatten().filter(|m| m.protocol == protocol) {
                cuts.insert(m.ports.lo.max(1) as u32);
                cuts.insert(m.ports.hi as u32 + 1);
            }
        }
    }
    cuts.into_iter()
        .filter(|c| (1..=65535).contains(c))
        .map(|c| c as u16)
        .collect()
}

/// Allowed connections from a peer to a peer, given each side's relevant policy (None = open).
fn allowed(
    egress: Option<(&DirectionPolicy, PeerInfo)>,
    ingress: Option<(&DirectionPolicy, PeerInfo)>,
) -> ConnSet {
    let mut set = ConnSet::default();
    let pols: Vec<&DirectionPolicy> = egress
        .iter()
        .map(|e| e.0)
        .chain(ingress.iter().map(|i| i.0))
        .collect();
    for protocol in CONN_PROTOCOLS {
        let cuts = port_cuts(&pols, protocol);
        for (i, lo) in cuts.iter().enumerate() {
            let hi = cuts.get(i + 1).map(|n| n - 1).unwrap_or(u16::MAX);
            let ok = egress.is_none_or(|(p, peer)| {
                verdict_direction(p, Direction::Egress, peer, protocol, *lo).is_allow()
            }) && ingress.is_none_or(|(p, peer)| {
                verdict_direction(p, Direction::Ingress, peer, protocol, *lo).is_allow()
            });
            if ok {
                set.add(protocol, PortRange { lo: *lo, hi });
            }
        }
    }
    set
}

/// Every allowed connection, sorted by its rendered line.
pub fn connections(cluster: &ResolvedCluster, opts: &ConnlistOptions) -> Vec<Connection> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, ep) in cluster.endpoints.iter().enumerate() {
        groups.entry(workload_label(ep)).or_default().push(i);
    }
    let workloads: Vec<Peer> = groups
        .into_iter()
        .map(|(label, members)| Peer::Workload { label, members })
        .collect();
    // As np-guard does, sources are cut by the prefixes of ingress rules, destinations by those of
    // egress rules.
    let sources: Vec<&Peer> = workloads.iter().collect();
    let destinations: Vec<&Peer> = workloads.iter().collect();
    let ext_src = external_peers(&cluster.ingress_cidrs, opts);
    let ext_dst = external_peers(&cluster.egress_cidrs, opts);
    let sources = sources.into_iter().chain(ext_src.iter());
    let destinations: Vec<&Peer> = destinations.into_iter().chain(ext_dst.iter()).collect();
    let mut out = Vec::new();
    for src in sources {
        for dst in destinations.iter().copied() {
            let conns = match (src, dst) {
                (Peer::Workload { label: a, .. }, Peer::Workload { label: b, .. }) if a == b => {
                    continue;
                }
                (Peer::External { .. }, Peer::External { .. }) => continue,
                (Peer::Workload { members: s, .. }, Peer::Workload { members: d, .. }) => {
                    let mut set = ConnSet::default();
                    for si in s {
                        for di in d {
                            let (se, de) = (&cluster.endpoints[*si], &cluster.endpoints[*di]);
                            set.union(&allowed(
                                Some((&cluster.policies[*si].egress, seen_as(de, Some(se)))),
                                Some((&cluster.policies[*di].ingress, seen_as(se, Some(de)))),
                            ));
                        }
                    }
                    set
                }
                (Peer::Workload { members: s, .. }, Peer::External { ip, .. }) => {
                    let mut set = ConnSet::default();
                    for si in s {
                        set.union(&allowed(
                            Some((&cluster.policies[*si].egress, world_peer(*ip))),
                            None,
                        ));
                    }
                    set
                }
                (Peer::External { ip, .. }, Peer::Workload { members: d, .. }) => {
                    let mut set = ConnSet::default();
                    for di in d {
                        set.union(&allowed(
                            None,
                            Some((&cluster.policies[*di].ingress, world_peer(*ip))),
                        ));
                    }
                    set
                }
            };
            if conns.is_empty() {
                continue;
            }
            out.push(Connection {
                src: peer_label(src).to_string(),
                dst: peer_label(dst).to_string(),
                conns,
            });
        }
    }
    out.sort_by_cached_key(line);
    out
}

fn peer_label(p: &Peer) -> &str {
    match p {
        Peer::Workload { label, .. } | Peer::External { label, .. } => label,
    }
}

fn line(c: &Connection) -> String {
    format!("{} => {} : {}", c.src, c.dst, c.conns)
}

/// Renders connections; `txt` and `netpol-analyzer` are one line per connection, `json` an array
/// of `{src, dst, conn}`.
pub fn render(conns: &[Connection], format: Format) -> String {
    match format {
        Format::Txt | Format::NetpolAnalyzer => {
            let mut s = String::new();
            for c in conns {
                s.push_str(&line(c));
                s.push('\n');
            }
            s
        }
        Format::Json => {
            let items: Vec<JsonConnection> = conns
                .iter()
                .map(|c| JsonConnection {
                    src: &c.src,
                    dst: &c.dst,
                    conn: c.conns.to_string(),
                })
                .collect();
            let mut s = serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".into());
            s.push('\n');
            s
        }
    }
}

/// Connections rendered in a format (IPv6 ranges only in `txt`/`json`).
pub fn connlist(cluster: &ResolvedCluster, format: Format) -> String {
    let opts = ConnlistOptions {
        ipv6: format != Format::NetpolAnalyzer,
    };
    render(&connections(cluster, &opts), format)
}
