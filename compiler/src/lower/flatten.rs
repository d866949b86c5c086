//! Flattening a direction's identity rules into one decision per identity class.
//!
//! In: the rules of a [`DirectionPolicy`] (only their identity part: the CIDR part of a peer set is
//! decided by address later, see `decide`). Out: a [`Flat`] table: for every identity some rule
//! names, the leaf (per protocol, the ports partitioned into segments with the winning outcome)
//! its packets meet, and the leaf of every other identity. Leaves are deduplicated, so a set of
//! 100,000 identities that all behave alike is one leaf.
//!
//! The winner of a segment: a deny beats an allow (deny always wins); among equals the lowest rule
//! id, so the reported rule is deterministic.

use std::collections::{BTreeMap, HashMap};

use ciliumc_ir::policy::{DirectionPolicy, L4Match, PeerSet, Protocol, Rule, RuleKind};

/// What a packet meets at the end of the identity and port decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// A deny rule matched.
    Deny(u32),
    /// An allow rule matched (address-based denies may still apply).
    Allow(u32),
    /// No identity rule matched.
    NoMatch,
}

/// Ports `lo..=hi` meet `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    pub lo: u16,
    pub hi: u16,
    pub outcome: Outcome,
}

/// One identity class's decision: per protocol, a partition of the port space; any other protocol
/// meets `other`. Protocols whose partition is `other` over every port are left out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Leaf {
    pub protocols: Vec<(u8, Vec<Segment>)>,
    pub other: Outcome,
}

impl Leaf {
    /// Segments a packet can meet in this leaf, summed over protocols (a size measure).
    pub fn segments(&self) -> usize {
        self.protocols.iter().map(|(_, s)| s.len()).sum::<usize>() + 1
    }
}

/// The flattened decision of one direction.
#[derive(Debug, Clone, Default)]
pub struct Flat {
    /// Distinct leaves; `leaves[others]` is what identities not listed in `by_identity` meet.
    pub leaves: Vec<Leaf>,
    pub others: usize,
    /// Identity → leaf index, only for identities whose leaf differs from `others`.
    pub by_identity: BTreeMap<u32, usize>,
}

/// A rule's L4 part as (protocol, lo, hi) triples; `None` = every protocol and port.
fn l4_ranges(l4: &Option<Vec<L4Match>>) -> Option<Vec<(u8, u16, u16)>> {
    l4.as_ref().map(|list| {
        list.iter()
            .map(|m| (m.protocol.number(), m.ports.lo, m.ports.hi))
            .collect()
    })
}

/// The rule's priority: denies first, then lower ids.
fn rank(rule: &Rule) -> (u8, u32) {
    match rule.kind {
        RuleKind::Deny => (0, rule.id.0),
        RuleKind::Allow => (1, rule.id.0),
    }
}

fn outcome_of(rank: (u8, u32)) -> Outcome {
    match rank.0 {
        0 => Outcome::Deny(rank.1),
        _ => Outcome::Allow(rank.1),
    }
}

const PROTOCOLS: [Protocol; 5] = [
    Protocol::Tcp,
    Protocol::Udp,
    Protocol::Sctp,
    Protocol::Icmp,
    Protocol::Icmpv6,
];

/// The leaf of an identity that these rules apply to.
fn leaf_of(rules: &[&Rule]) -> Leaf {
    let any_proto = rules
        .iter()
        .filter(|r| r.l4.is_none())
        .map(|r| rank(r))
        .min();
    let other = any_proto.map(outcome_of).unwrap_or(Outcome::NoMatch);
    let mut protocols = Vec::new();
    for proto in PROTOCOLS.map(Protocol::number) {
        // Sweep over range starts and ends with the set of active ranks.
        let mut events: Vec<(u32, bool, (u8, u32))> = Vec::new();
        for r in rules {
            if let Some(ranges) = l4_ranges(&r.l4) {
                for (p, lo, hi) in ranges {
                    if p == proto {
                        events.push((u32::from(lo), true, rank(r)));
                        events.push((u32::from(hi) + 1, false, rank(r)));
                    }
                }
            }
        }
        if events.is_empty() {
            continue;
        }
        events.sort();
        let mut active: BTreeMap<(u8, u32), usize> = BTreeMap::new();
        let mut segments: Vec<Segment> = Vec::new();
        let mut start = 0u32;
        let mut i = 0;
        while i <= events.len() {
            let at = events.get(i).map_or(65536, |e| e.0);
            if at > start {
                let best = active.keys().next().copied();
                let best = match (best, any_proto) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let outcome = best.map(outcome_of).unwrap_or(Outcome::NoMatch);
                match segments.last_mut() {
                    Some(last) if last.outcome == outcome => last.hi = (at - 1) as u16,
                    _ => segments.push(Segment {
                        lo: start as u16,
                        hi: (at - 1) as u16,
                        outcome,
                    }),
                }
                start = at;
            }
            if i == events.len() || at >= 65536 {
                break;
            }
            // Apply every event at `at`.
            while let Some(&(pos, open, rk)) = events.get(i) {
                if pos != at {
                    break;
                }
                if open {
                    *active.entry(rk).or_default() += 1;
                } else if let Some(n) = active.get_mut(&rk) {
                    *n -= 1;
                    if *n == 0 {
                        active.remove(&rk);
                    }
                }
                i += 1;
            }
        }
        let trivial = segments.len() == 1 && segments[0].outcome == other;
        if !trivial {
            protocols.push((proto, segments));
        }
    }
    Leaf { protocols, other }
}

/// Flattens the identity part of every rule of `policy`.
pub fn flatten(policy: &DirectionPolicy) -> Flat {
    let all: Vec<&Rule> = policy
        .rules
        .iter()
        .filter(|r| matches!(r.peers, PeerSet::All))
        .collect();
    // Identity → the indices of the rules naming it, increasing (rules are visited in order).
    let mut naming: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, r) in policy.rules.iter().enumerate() {
        if let PeerSet::Selected { identities, .. } = &r.peers {
            for id in identities {
                let rules = naming.entry(id.0).or_default();
                if rules.last() != Some(&i) {
                    rules.push(i);
                }
            }
        }
    }
    // Lookups only (never iterated), so hash maps keep the output deterministic.
    let mut leaves: Vec<Leaf> = Vec::new();
    let mut index: HashMap<Leaf, usize> = HashMap::new();
    let mut intern = |leaf: Leaf| -> usize {
        if let Some(&i) = index.get(&leaf) {
            return i;
        }
        leaves.push(leaf.clone());
        index.insert(leaf, leaves.len() - 1);
        leaves.len() - 1
    };
    let others = intern(leaf_of(&all));
    // Identities named by the same rules share a leaf without recomputing it.
    let mut by_rules: HashMap<Vec<usize>, usize> = HashMap::new();
    let mut by_identity = BTreeMap::new();
    for (id, rules) in naming {
        let leaf = match by_rules.get(&rules) {
            Some(l) => *l,
            None => {
                let mut applicable: Vec<&Rule> = rules.iter().map(|&i| &policy.rules[i]).collect();
                applicable.extend(all.iter().copied());
                let l = intern(leaf_of(&applicable));
                by_rules.insert(rules, l);
                l
            }
        };
        if leaf != others {
            by_identity.insert(id, leaf);
        }
    }
    Flat {
        leaves,
        others,
        by_identity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciliumc_ir::identity::NumericIdentity;
    use ciliumc_ir::policy::{Direction, PortRange, RuleId};

    fn rule(id: u32, kind: RuleKind, ids: &[u32], l4: Option<Vec<L4Match>>) -> Rule {
        Rule {
            id: RuleId(id),
            kind,
            peers: PeerSet::identities(ids.iter().map(|i| NumericIdentity(*i))),
            l4,
        }
    }

    #[test]
    fn deny_wins_inside_an_allowed_range_and_identities_share_leaves() {
        let tcp = |lo, hi| L4Match::new(Protocol::Tcp, PortRange::new(lo, hi).unwrap());
        let policy = DirectionPolicy::enforced(
            Direction::Ingress,
            vec![
                rule(1, RuleKind::Allow, &[500, 501], Some(vec![tcp(80, 90)])),
                rule(2, RuleKind::Deny, &[500, 501], Some(vec![tcp(85, 85)])),
            ],
        );
        let flat = flatten(&policy);
        assert_eq!(flat.by_identity.len(), 2);
        assert_eq!(flat.by_identity[&500], flat.by_identity[&501]);
        let leaf = &flat.leaves[flat.by_identity[&500]];
        let segs: Vec<_> = leaf.protocols[0]
            .1
            .iter()
            .map(|s| (s.lo, s.hi, s.outcome))
            .collect();
        assert_eq!(
            segs,
            vec![
                (0, 79, Outcome::NoMatch),
                (80, 84, Outcome::Allow(1)),
                (85, 85, Outcome::Deny(2)),
                (86, 90, Outcome::Allow(1)),
                (91, 65535, Outcome::NoMatch),
            ]
        );
        assert_eq!(flat.leaves[flat.others].protocols.len(), 0);
    }
}
