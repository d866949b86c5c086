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

use ciliumc_ir::policy::{DirectionPolicy, PeerSet, Protocol, Rule, RuleKind};
use foldhash::fast::FixedState;

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

/// Buffers [`leaf_of`] reuses from one identity to the next.
#[derive(Default)]
struct Scratch {
    /// Range starts and ends: (protocol, port, opens, rank).
    events: Vec<(Protocol, u32, bool, (u8, u32))>,
    /// The multiset of active ranks, sorted: an identity meets few rules at one port.
    active: Vec<((u8, u32), usize)>,
}

/// The leaf of an identity that these rules apply to.
fn leaf_of<'r>(rules: impl Iterator<Item = &'r Rule> + Clone, scratch: &mut Scratch) -> Leaf {
    let any_proto = rules.clone().filter(|r| r.l4.is_none()).map(rank).min();
    let other = any_proto.map(outcome_of).unwrap_or(Outcome::NoMatch);
    // Swept in (protocol, port) order; protocols in declaration order: TCP first, as the decision
    // tests them.
    let Scratch { events, active } = scratch;
    events.clear();
    for r in rules {
        for m in r.l4.iter().flatten() {
            events.push((m.protocol, u32::from(m.ports.lo), true, rank(r)));
            events.push((m.protocol, u32::from(m.ports.hi) + 1, false, rank(r)));
        }
    }
    events.sort_unstable();
    let mut protocols = Vec::new();
    for group in events.chunk_by(|a, b| a.0 == b.0) {
        let proto = group[0].0.number();
        active.clear();
        let mut segments: Vec<Segment> = Vec::new();
        let mut start = 0u32;
        let mut i = 0;
        while i <= group.len() {
            let at = group.get(i).map_or(65536, |e| e.1);
            if at > start {
                let best = active.first().map(|(rank, _)| *rank);
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
            if i == group.len() || at >= 65536 {
                break;
            }
            // Apply every event at `at`.
            while let Some(&(_, pos, open, rk)) = group.get(i) {
                if pos != at {
                    break;
                }
                match active.binary_search_by_key(&rk, |(r, _)| *r) {
                    Ok(k) if open => active[k].1 += 1,
                    Ok(k) => {
                        active[k].1 -= 1;
                        if active[k].1 == 0 {
                            active.remove(k);
                        }
                    }
                    Err(k) if open => active.insert(k, (rk, 1)),
                    Err(_) => {}
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
    // (identity, index of a rule naming it), sorted: per identity, the rules naming it in
    // increasing order.
    let mut naming: Vec<(u32, u32)> = Vec::new();
    for (i, r) in policy.rules.iter().enumerate() {
        if let PeerSet::Selected { identities, .. } = &r.peers {
            naming.extend(identities.iter().map(|id| (id.0, i as u32)));
        }
    }
    naming.sort_unstable();
    naming.dedup();
    let rule_lists: Vec<u32> = naming.iter().map(|&(_, i)| i).collect();
    // Lookups only (the leaves' order is their first appearance), so hash maps keep the output
    // deterministic.
    let identities = naming.chunk_by(|a, b| a.0 == b.0).count();
    let mut index: HashMap<Leaf, usize, FixedState> =
        HashMap::with_capacity_and_hasher(identities + 1, FixedState::default());
    let mut intern = |leaf: Leaf| -> usize {
        let next = index.len();
        *index.entry(leaf).or_insert(next)
    };
    let mut scratch = Scratch::default();
    let others = intern(leaf_of(all.iter().copied(), &mut scratch));
    // Identities named by the same rules share a leaf without recomputing it.
    let mut by_rules: HashMap<&[u32], usize, FixedState> =
        HashMap::with_capacity_and_hasher(identities, FixedState::default());
    let mut by_identity: Vec<(u32, usize)> = Vec::with_capacity(identities);
    let mut at = 0;
    for group in naming.chunk_by(|a, b| a.0 == b.0) {
        let id = group[0].0;
        let rules = &rule_lists[at..at + group.len()];
        at += group.len();
        let leaf = match by_rules.get(rules) {
            Some(l) => *l,
            None => {
                let named = rules.iter().map(|&i| &policy.rules[i as usize]);
                let l = intern(leaf_of(named.chain(all.iter().copied()), &mut scratch));
                by_rules.insert(rules, l);
                l
            }
        };
        if leaf != others {
            by_identity.push((id, leaf));
        }
    }
    let mut leaves: Vec<(usize, Leaf)> = index.into_iter().map(|(leaf, i)| (i, leaf)).collect();
    leaves.sort_unstable_by_key(|(i, _)| *i);
    Flat {
        leaves: leaves.into_iter().map(|(_, leaf)| leaf).collect(),
        others,
        // Sorted by identity: built in bulk.
        by_identity: by_identity.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciliumc_ir::identity::NumericIdentity;
    use ciliumc_ir::policy::{Direction, L4Match, PortRange, RuleId};

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
