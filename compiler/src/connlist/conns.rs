//! Sets of allowed connections (TCP/UDP/SCTP ports 1-65535) and their np-guard spelling.
//!
//! In: allowed port intervals per protocol. Out: `All Connections` or `SCTP 9003,TCP 8080-8090,UDP 53`
//! (protocols sorted by name, ports as single values or `lo-hi` ranges, comma separated).

use std::collections::BTreeMap;

use ciliumc_ir::{PortRange, Protocol};

/// The protocols a connection list talks about (ICMP is not modelled, as in np-guard).
pub const CONN_PROTOCOLS: [Protocol; 3] = [Protocol::Sctp, Protocol::Tcp, Protocol::Udp];

/// Allowed ports per protocol, as sorted, disjoint, non-adjacent ranges inside 1..=65535.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnSet {
    ports: BTreeMap<Protocol, Vec<PortRange>>,
}

impl ConnSet {
    pub fn is_empty(&self) -> bool {
        self.ports.values().all(|v| v.is_empty())
    }

    /// Adds a range (clipped to 1..=65535) and re-normalizes.
    pub fn add(&mut self, protocol: Protocol, range: PortRange) {
        let lo = range.lo.max(1);
        if lo > range.hi {
            return;
        }
        let v = self.ports.entry(protocol).or_default();
        v.push(PortRange { lo, hi: range.hi });
        v.sort();
        let mut merged: Vec<PortRange> = Vec::with_capacity(v.len());
        for r in v.drain(..) {
            match merged.last_mut() {
                Some(last) if r.lo as u32 <= last.hi as u32 + 1 => last.hi = last.hi.max(r.hi),
                _ => merged.push(r),
            }
        }
        *v = merged;
    }

    pub fn union(&mut self, other: &ConnSet) {
        for (p, ranges) in &other.ports {
            for r in ranges {
                self.add(*p, *r);
            }
        }
    }

    pub fn ranges(&self, protocol: Protocol) -> &[PortRange] {
        self.ports.get(&protocol).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn is_all(&self) -> bool {
        CONN_PROTOCOLS.iter().all(|p| {
            self.ranges(*p)
                == [PortRange {
                    lo: 1,
                    hi: u16::MAX,
                }]
        })
    }

    pub fn contains(&self, protocol: Protocol, port: u16) -> bool {
        self.ranges(protocol).iter().any(|r| r.contains(port))
    }
}

impl std::fmt::Display for ConnSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_all() {
            return f.write_str("All Connections");
        }
        let mut items = Vec::new();
        for p in CONN_PROTOCOLS {
            let ranges = self.ranges(p);
            if ranges.is_empty() {
                continue;
            }
            let ports: Vec<String> = ranges
                .iter()
                .map(|r| {
                    if r.lo == r.hi {
                        r.lo.to_string()
                    } else {
                        format!("{}-{}", r.lo, r.hi)
                    }
                })
                .collect();
            items.push(format!("{} {}", p.name(), ports.join(",")));
        }
        if items.is_empty() {
            return f.write_str("No Connections");
        }
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_np_guard() {
        let mut c = ConnSet::default();
        c.add(Protocol::Tcp, PortRange::new(9001, 9090).unwrap());
        c.add(Protocol::Tcp, PortRange::single(8099));
        c.add(Protocol::Sctp, PortRange::single(9003));
        c.add(Protocol::Udp, PortRange::single(5353));
        assert_eq!(c.to_string(), "SCTP 9003,TCP 8099,9001-9090,UDP 5353");
        let mut all = ConnSet::default();
        for p in CONN_PROTOCOLS {
            all.add(p, PortRange::ANY);
        }
        assert_eq!(all.to_string(), "All Connections");
        let mut adjacent = ConnSet::default();
        adjacent.add(Protocol::Tcp, PortRange::new(1, 79).unwrap());
        adjacent.add(Protocol::Tcp, PortRange::new(80, 80).unwrap());
        assert_eq!(adjacent.to_string(), "TCP 1-80");
    }
}
