//! Semantic diff: which connections flip between OLD and NEW, and which rules make them flip.
//!
//! In: the two resolved clusters and the object diff (to say whether a rule's policy was added,
//! removed or modified). Out: [`SemanticDiff`]: [`ConnectionChange`]s grouped per (change, source,
//! destination, causes) with their protocol/port ranges, and the workloads present on one side only.
//!
//! Peers ([`peers`]) are named as connlist names them. A pair is decided as connlist decides it
//! (source egress AND destination ingress, any member pair of a workload), per interval of the
//! ports cut at every rule boundary of either side, by evaluating the interval's first port. The
//! same evaluation yields the verdict per endpoint direction and its deciding rules, so a change's
//! causes are exactly the endpoint directions whose decision differs, with the rules that
//! appeared and disappeared among the deciders.

pub mod peers;

use std::collections::{BTreeMap, BTreeSet};

use ciliumc_ir::evaluator::verdict_direction;
use ciliumc_ir::{
    AllowBasis, Direction, DropReason, PeerInfo, Protocol, RuleId, RuleKind, Verdict,
};
use serde::Serialize;

use super::WorkloadDiff;
use super::objects::{ObjectChangeKind, ObjectDiff};
use crate::resolve::ResolvedCluster;
use peers::{Peer, SideIndex};

/// Newly allowed or newly denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Allowed,
    Denied,
}

/// How one endpoint direction decided the representative packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Allowed by allow rules.
    AllowedByRule,
    /// No policy selects the endpoint in this direction.
    NotEnforced,
    /// The implicit ingress allow from the host.
    AllowedFromHost,
    /// Enforced without default deny, no deny matched.
    AllowedWithoutDefaultDeny,
    /// A deny rule matched.
    DeniedByRule,
    /// Enforced and no allow rule matched.
    DeniedNoAllowRule,
    /// The endpoint does not exist on this side.
    Absent,
}

impl Decision {
    fn of(v: &Verdict) -> Self {
        match v {
            Verdict::Allow { basis, .. } => match basis {
                AllowBasis::Rules => Decision::AllowedByRule,
                AllowBasis::Unenforced => Decision::NotEnforced,
                AllowBasis::Localhost => Decision::AllowedFromHost,
                AllowBasis::DefaultAllow => Decision::AllowedWithoutDefaultDeny,
            },
            Verdict::Deny { reason, .. } => match reason {
                DropReason::PolicyDenyExplicit => Decision::DeniedByRule,
                DropReason::PolicyDenied => Decision::DeniedNoAllowRule,
            },
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Decision::AllowedByRule => "allowed by rule",
            Decision::NotEnforced => "allowed (not enforced)",
            Decision::AllowedFromHost => "allowed (from host)",
            Decision::AllowedWithoutDefaultDeny => "allowed (no default deny)",
            Decision::DeniedByRule => "denied by deny rule",
            Decision::DeniedNoAllowRule => "denied (no rule allows)",
            Decision::Absent => "absent",
        }
    }
}

/// A source rule, as its origin describes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RuleRef {
    pub policy_kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub section: String,
    pub rule_index: usize,
    pub effect: RuleKind,
    /// `file:line:column` on the side where the rule decides.
    pub source: Option<String>,
    /// The rule's policy changed (`None`: unchanged, the rule decides because of another change).
    pub policy_change: Option<ObjectChangeKind>,
}

impl RuleRef {
    /// `Kind ns/name section[i]`.
    pub fn describe(&self) -> String {
        let obj = match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        };
        format!(
            "{} {obj} {}[{}]",
            self.policy_kind, self.section, self.rule_index
        )
    }

    pub fn policy_label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.policy_kind, self.name),
            None => format!("{} {}", self.policy_kind, self.name),
        }
    }

    /// Same rule on both sides, wherever it sits in the file.
    fn key(&self) -> RuleKey {
        (
            self.policy_kind.clone(),
            self.namespace.clone(),
            self.name.clone(),
            self.section.clone(),
            self.rule_index,
            self.effect,
        )
    }
}

/// Policy kind, namespace, name, section, index and effect: a rule's identity across the sides.
type RuleKey = (String, Option<String>, String, String, usize, RuleKind);

/// A changed policy named as the cause of a change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PolicyRef {
    /// `Kind ns/name`.
    pub policy: String,
    pub change: ObjectChangeKind,
}

/// One endpoint direction whose decision differs between OLD and NEW.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Cause {
    /// `ns/pod`.
    pub endpoint: String,
    pub direction: Direction,
    pub old: Vec<Decision>,
    pub new: Vec<Decision>,
    /// Deciding in NEW, not in OLD.
    pub rules_added: Vec<RuleRef>,
    /// Deciding in OLD, not in NEW.
    pub rules_removed: Vec<RuleRef>,
    /// Changed policies responsible: those of the rules above, or, when no deciding rule changed
    /// (enforcement switched on or off), the changed policies with rules for this endpoint
    /// direction on either side.
    pub policies: Vec<PolicyRef>,
}

/// One protocol and port (ICMP: type) range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ProtoRange {
    pub protocol: Protocol,
    pub lo: u16,
    pub hi: u16,
}

/// Connections of one pair that flip the same way for the same causes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionChange {
    pub change: ChangeKind,
    pub src: String,
    pub dst: String,
    /// np-guard style: `TCP 80,443-445,UDP 53`, `ICMP type 8`, or `All Connections`.
    pub conns: String,
    pub ranges: Vec<ProtoRange>,
    pub causes: Vec<Cause>,
}

pub struct SemanticDiff {
    pub changes: Vec<ConnectionChange>,
    pub workloads: WorkloadDiff,
}

/// Decisions of one endpoint direction over the member pairs of a peer pair.
#[derive(Debug, Default, PartialEq, Eq)]
struct DirDecision {
    decisions: BTreeSet<Decision>,
    rules: BTreeMap<RuleKey, RuleRef>,
}

#[derive(Debug, Default)]
struct Outcome {
    allowed: bool,
    dirs: BTreeMap<(String, Direction), DirDecision>,
}

struct Evaluator<'a> {
    side: &'a SideIndex<'a>,
    objects: &'a ObjectDiff,
}

impl Evaluator<'_> {
    fn rule_ref(&self, id: RuleId, effect: RuleKind) -> RuleRef {
        match self.side.cluster.rule_origins.get(&id) {
            Some(o) => RuleRef {
                policy_kind: o.policy_kind.clone(),
                namespace: o.namespace.clone(),
                name: o.name.clone(),
                section: o.section.clone(),
                rule_index: o.rule_index,
                effect,
                source: o.source.as_ref().map(|s| s.to_string()),
                policy_change: self.objects.policy_change(&(
                    o.policy_kind.clone(),
                    o.namespace.clone(),
                    o.name.clone(),
                )),
            },
            None => RuleRef {
                policy_kind: "rule".into(),
                namespace: None,
                name: id.to_string(),
                section: String::new(),
                rule_index: 0,
                effect,
                source: None,
                policy_change: None,
            },
        }
    }

    fn record(&self, out: &mut Outcome, endpoint: usize, direction: Direction, v: &Verdict) {
        let name = self.side.cluster.endpoints[endpoint].name.clone();
        let entry = out.dirs.entry((name, direction)).or_default();
        entry.decisions.insert(Decision::of(v));
        let effect = if v.is_allow() {
            RuleKind::Allow
        } else {
            RuleKind::Deny
        };
        for id in v.rules() {
            let r = self.rule_ref(*id, effect);
            entry.rules.insert(r.key(), r);
        }
    }

    /// Decides `src → dst` on one port, as connlist does, recording every endpoint direction.
    fn evaluate(&self, src: &Peer, dst: &Peer, protocol: Protocol, port: u16) -> Outcome {
        let c = self.side.cluster;
        let mut out = Outcome::default();
        let egress = |out: &mut Outcome, i: usize, peer: PeerInfo| {
            let v = verdict_direction(
                &c.policies[i].egress,
                Direction::Egress,
                peer,
                protocol,
                port,
            );
            self.record(out, i, Direction::Egress, &v);
            v.is_allow()
        };
        let ingress = |out: &mut Outcome, i: usize, peer: PeerInfo| {
            let v = verdict_direction(
                &c.policies[i].ingress,
                Direction::Ingress,
                peer,
                protocol,
                port,
            );
            self.record(out, i, Direction::Ingress, &v);
            v.is_allow()
        };
        match (src, dst) {
            (Peer::Workload(s), Peer::Workload(d)) => {
                for si in self.side.members(s) {
                    for di in self.side.members(d) {
                        let (se, de) = (&c.endpoints[*si], &c.endpoints[*di]);
                        let e = egress(&mut out, *si, peers::seen_as(de, Some(se)));
                        let i = ingress(&mut out, *di, peers::seen_as(se, Some(de)));
                        out.allowed |= e && i;
                    }
                }
            }
            (Peer::Workload(s), other) => {
                for si in self.side.members(s) {
                    if let Some(peer) = other.peer_info() {
                        out.allowed |= egress(&mut out, *si, peer);
                    }
                }
            }
            (other, Peer::Workload(d)) => {
                for di in self.side.members(d) {
                    if let Some(peer) = other.peer_info() {
                        out.allowed |= ingress(&mut out, *di, peer);
                    }
                }
            }
            _ => {}
        }
        out
    }
}

/// Compares the two clusters connection by connection.
pub fn diff_clusters(
    old: &ResolvedCluster,
    new: &ResolvedCluster,
    objects: &ObjectDiff,
) -> SemanticDiff {
    let old_index = SideIndex::new(old);
    let new_index = SideIndex::new(new);
    let old_eval = Evaluator {
        side: &old_index,
        objects,
    };
    let new_eval = Evaluator {
        side: &new_index,
        objects,
    };
    let (sources, destinations, workloads) = peers::peer_lists(&old_index, &new_index);
    // (change, src, dst, causes) → ranges, in evaluation order so adjacent intervals merge.
    let mut groups: BTreeMap<(ChangeKind, String, String, Vec<Cause>), Vec<ProtoRange>> =
        BTreeMap::new();
    let mut pair_protocols: BTreeMap<(String, String), Vec<Protocol>> = BTreeMap::new();
    for src in &sources {
        for dst in &destinations {
            if !Peer::is_pair(src, dst) {
                continue;
            }
            let protocols = peers::pair_protocols(src, dst, &old_index, &new_index);
            for protocol in &protocols {
                let cuts = peers::port_cuts(src, dst, *protocol, &old_index, &new_index);
                for (lo, hi) in cuts {
                    let o = old_eval.evaluate(src, dst, *protocol, lo);
                    let n = new_eval.evaluate(src, dst, *protocol, lo);
                    if o.allowed == n.allowed {
                        continue;
                    }
                    let change = if n.allowed {
                        ChangeKind::Allowed
                    } else {
                        ChangeKind::Denied
                    };
                    let causes = causes(&o, &n, old, new, objects);
                    let ranges = groups
                        .entry((change, src.label(), dst.label(), causes))
                        .or_default();
                    push_range(ranges, *protocol, lo, hi);
                }
            }
            pair_protocols.insert((src.label(), dst.label()), protocols);
        }
    }
    let mut changes: Vec<ConnectionChange> = groups
        .into_iter()
        .map(|((change, src, dst, causes), ranges)| {
            let all = pair_protocols
                .get(&(src.clone(), dst.clone()))
                .map(|p| covers_all(&ranges, p))
                .unwrap_or(false);
            ConnectionChange {
                change,
                conns: if all {
                    "All Connections".to_string()
                } else {
                    format_ranges(&ranges)
                },
                src,
                dst,
                ranges,
                causes,
            }
        })
        .collect();
    changes.sort_by(|a, b| {
        (a.change, &a.src, &a.dst, &a.ranges).cmp(&(b.change, &b.src, &b.dst, &b.ranges))
    });
    SemanticDiff { changes, workloads }
}

fn push_range(ranges: &mut Vec<ProtoRange>, protocol: Protocol, lo: u16, hi: u16) {
    if let Some(last) = ranges.last_mut()
        && last.protocol == protocol
        && last.hi as u32 + 1 == lo as u32
    {
        last.hi = hi;
        return;
    }
    ranges.push(ProtoRange { protocol, lo, hi });
}

fn covers_all(ranges: &[ProtoRange], protocols: &[Protocol]) -> bool {
    protocols.iter().all(|p| {
        let (lo, hi) = peers::port_domain(*p);
        ranges
            .iter()
            .any(|r| r.protocol == *p && r.lo == lo && r.hi == hi)
    })
}

/// `TCP 80,443-445,UDP 53,ICMP type 8`: protocols in np-guard's (name) order.
pub fn format_ranges(ranges: &[ProtoRange]) -> String {
    let mut by_protocol: BTreeMap<&str, Vec<&ProtoRange>> = BTreeMap::new();
    for r in ranges {
        by_protocol.entry(r.protocol.name()).or_default().push(r);
    }
    let mut items = Vec::new();
    for (name, mut rs) in by_protocol {
        rs.sort();
        let protocol = rs[0].protocol;
        let ports: Vec<String> = rs
            .iter()
            .map(|r| {
                if r.lo == r.hi {
                    r.lo.to_string()
                } else {
                    format!("{}-{}", r.lo, r.hi)
                }
            })
            .collect();
        if protocol.is_icmp() {
            let (lo, hi) = peers::port_domain(protocol);
            if rs.len() == 1 && rs[0].lo == lo && rs[0].hi == hi {
                items.push(name.to_string());
            } else {
                items.push(format!("{name} type {}", ports.join(",")));
            }
        } else {
            items.push(format!("{name} {}", ports.join(",")));
        }
    }
    items.join(",")
}

fn causes(
    old: &Outcome,
    new: &Outcome,
    old_cluster: &ResolvedCluster,
    new_cluster: &ResolvedCluster,
    objects: &ObjectDiff,
) -> Vec<Cause> {
    let absent = DirDecision {
        decisions: BTreeSet::from([Decision::Absent]),
        rules: BTreeMap::new(),
    };
    let keys: BTreeSet<&(String, Direction)> = old.dirs.keys().chain(new.dirs.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let o = old.dirs.get(key).unwrap_or(&absent);
        let n = new.dirs.get(key).unwrap_or(&absent);
        if o == n {
            continue;
        }
        let rules_added: Vec<RuleRef> = n
            .rules
            .iter()
            .filter(|(k, _)| !o.rules.contains_key(*k))
            .map(|(_, r)| r.clone())
            .collect();
        let rules_removed: Vec<RuleRef> = o
            .rules
            .iter()
            .filter(|(k, _)| !n.rules.contains_key(*k))
            .map(|(_, r)| r.clone())
            .collect();
        let mut policies: BTreeSet<PolicyRef> = rules_added
            .iter()
            .chain(&rules_removed)
            .filter_map(|r| {
                r.policy_change.map(|change| PolicyRef {
                    policy: r.policy_label(),
                    change,
                })
            })
            .collect();
        if policies.is_empty() {
            for cluster in [old_cluster, new_cluster] {
                policies.extend(contributing_changed_policies(cluster, key, objects));
            }
        }
        out.push(Cause {
            endpoint: key.0.clone(),
            direction: key.1,
            old: o.decisions.iter().copied().collect(),
            new: n.decisions.iter().copied().collect(),
            rules_added,
            rules_removed,
            policies: policies.into_iter().collect(),
        });
    }
    out
}

/// Changed policies with at least one rule in this endpoint direction.
fn contributing_changed_policies(
    cluster: &ResolvedCluster,
    (endpoint, direction): &(String, Direction),
    objects: &ObjectDiff,
) -> Vec<PolicyRef> {
    let Some((_, policy)) = cluster.endpoint(endpoint) else {
        return Vec::new();
    };
    policy
        .direction(*direction)
        .rules
        .iter()
        .filter_map(|r| cluster.rule_origins.get(&r.id))
        .filter_map(|o| {
            let key = (o.policy_kind.clone(), o.namespace.clone(), o.name.clone());
            objects.policy_change(&key).map(|change| PolicyRef {
                policy: match &o.namespace {
                    Some(ns) => format!("{} {ns}/{}", o.policy_kind, o.name),
                    None => format!("{} {}", o.policy_kind, o.name),
                },
                change,
            })
        })
        .collect()
}
