//! `connlist --verify-bytecode`: executes the compiled programs for one packet per (peer pair,
//! protocol, port interval) and compares every verdict with the reference evaluator's.
//!
//! Peers are every endpoint with an address and one address of each external range that the
//! policies' CIDRs cut out; port intervals are cut at every rule's range edges on both sides.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context;
use ciliumc_compiler::compile::{self, MapPinning};
use ciliumc_compiler::lower;
use ciliumc_compiler::resolve::ResolvedCluster;
use ciliumc_ir::endpoint::EndpointKind;
use ciliumc_ir::evaluator::{PeerInfo, verdict};
use ciliumc_ir::policy::{Direction, DirectionPolicy, Protocol};
use ciliumc_runtime::packet::Packet;
use ciliumc_runtime::testrun::LoadedPolicyObject;

pub struct VerifyReport {
    pub packets: usize,
    pub disagreements: Vec<String>,
}

struct Peer {
    name: String,
    endpoint: Option<usize>,
    ip: IpAddr,
}

fn peers(cluster: &ResolvedCluster) -> Vec<Peer> {
    let mut out = Vec::new();
    for (i, ep) in cluster.endpoints.iter().enumerate() {
        if ep.kind == EndpointKind::HostNetwork {
            continue;
        }
        if let Some(ip) = ep.ipv4.map(IpAddr::V4).or(ep.ipv6.map(IpAddr::V6)) {
            out.push(Peer {
                name: ep.name.clone(),
                endpoint: Some(i),
                ip,
            });
        }
    }
    let mut cuts: BTreeSet<IpAddr> = BTreeSet::new();
    cuts.insert(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)));
    for cidr in cluster.cidr_identities.keys() {
        let (lo, hi) = cidr.range();
        match cidr.addr() {
            IpAddr::V4(_) => {
                cuts.insert(IpAddr::V4(Ipv4Addr::from(lo as u32)));
                if hi < u128::from(u32::MAX) {
                    cuts.insert(IpAddr::V4(Ipv4Addr::from(hi as u32 + 1)));
                }
            }
            IpAddr::V6(_) => {
                cuts.insert(IpAddr::V6(Ipv6Addr::from(lo)));
                if hi < u128::MAX {
                    cuts.insert(IpAddr::V6(Ipv6Addr::from(hi + 1)));
                }
            }
        }
    }
    for ip in cuts {
        out.push(Peer {
            name: format!("{ip}[External]"),
            endpoint: None,
            ip,
        });
    }
    out
}

/// Interval starts: 0 and every rule range's start and end + 1.
fn port_starts(policies: &[&DirectionPolicy], protocol: Protocol) -> BTreeSet<u16> {
    let mut cuts = BTreeSet::from([0u16, 1]);
    for p in policies {
        for r in &p.rules {
            for m in r.l4.iter().flatten().filter(|m| m.protocol == protocol) {
                cuts.insert(m.ports.lo);
                if let Some(next) = m.ports.hi.checked_add(1) {
                    cuts.insert(next);
                }
            }
        }
    }
    if matches!(protocol, Protocol::Icmp | Protocol::Icmpv6) {
        cuts.retain(|t| *t <= 255);
    }
    cuts
}

fn packet(src: IpAddr, dst: IpAddr, proto: Protocol, port: u16) -> Option<Vec<u8>> {
    let p = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Packet::ipv4(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => Packet::ipv6(s, d),
        _ => return None,
    };
    let p = match proto {
        Protocol::Tcp => p.tcp(40000, port),
        Protocol::Udp => p.udp(40000, port),
        Protocol::Sctp => p.sctp(40000, port),
        Protocol::Icmp if src.is_ipv4() => p.icmp(u8::try_from(port).ok()?, 0),
        Protocol::Icmpv6 if src.is_ipv6() => p.icmpv6(u8::try_from(port).ok()?, 0),
        _ => return None,
    };
    Some(p.build())
}

pub fn verify_bytecode(cluster: &ResolvedCluster) -> anyhow::Result<VerifyReport> {
    let ipcache = compile::ipcache_entries(cluster);
    let mut objects: Vec<Option<LoadedPolicyObject>> = Vec::with_capacity(cluster.endpoints.len());
    for (ep, policy) in cluster.endpoints.iter().zip(&cluster.policies) {
        if ep.kind == EndpointKind::HostNetwork {
            objects.push(None);
            continue;
        }
        let (bytes, _) = compile::endpoint_object(ep, policy, MapPinning::Private)?;
        let loaded = LoadedPolicyObject::load(&bytes, &ipcache)
            .with_context(|| format!("loading the programs of {} into the kernel", ep.name))?;
        objects.push(Some(loaded));
    }
    let peers = peers(cluster);
    let mut report = VerifyReport {
        packets: 0,
        disagreements: Vec::new(),
    };
    for src in &peers {
        for dst in &peers {
            if std::ptr::eq(src, dst) || (src.endpoint.is_none() && dst.endpoint.is_none()) {
                continue;
            }
            if src.ip.is_ipv4() != dst.ip.is_ipv4() {
                continue;
            }
            let sides = [
                (src.endpoint, Direction::Egress, dst.ip),
                (dst.endpoint, Direction::Ingress, src.ip),
            ];
            let policies: Vec<&DirectionPolicy> = sides
                .iter()
                .filter_map(|(e, d, _)| e.map(|i| cluster.policies[i].direction(*d)))
                .collect();
            for proto in [
                Protocol::Tcp,
                Protocol::Udp,
                Protocol::Sctp,
                Protocol::Icmp,
                Protocol::Icmpv6,
            ] {
                for port in port_starts(&policies, proto) {
                    let Some(pkt) = packet(src.ip, dst.ip, proto, port) else {
                        continue;
                    };
                    for (endpoint, direction, peer_ip) in sides {
                        let Some(i) = endpoint else { continue };
                        let Some(obj) = objects[i].as_mut() else {
                            continue;
                        };
                        let (program, _) = lower::program_for(direction);
                        let got = obj.run(program, &pkt)?.retval == 0;
                        let peer = PeerInfo::new(
                            compile::ipcache_identity(cluster, peer_ip),
                            Some(peer_ip),
                        );
                        let want =
                            verdict(&cluster.policies[i], direction, peer, proto, port).is_allow();
                        report.packets += 1;
                        if got != want {
                            report.disagreements.push(format!(
                                "{} => {} {proto}/{port}: {direction} program of {} {} but the evaluator {}",
                                src.name,
                                dst.name,
                                cluster.endpoints[i].name,
                                if got { "allows" } else { "drops" },
                                if want { "allows" } else { "drops" },
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(report)
}
