//! The reference evaluator: what the compiled datapath must decide, written to be obviously right.
//!
//! In: an endpoint's [`EndpointPolicy`], a direction, the peer (identity and address), the
//! protocol and the port (ICMP: the type). Out: a [`Verdict`] with the deciding rule ids.
//!
//! The decision, in order (Cilium `pkg/policy`, `bpf/lib/policy.h`):
//! 1. direction not enforced → allow;
//! 2. any matching deny rule → drop, reason 181 (deny wins over every allow, whatever the order or
//!    the specificity);
//! 3. any matching allow rule → allow;
//! 4. ingress from `reserved:host` with `allow_localhost` → allow;
//! 5. `default_deny` off (every selecting rule set `enableDefaultDeny: false`) → allow;
//! 6. otherwise drop, reason 133.
//!
//! A rule matches when its peer set contains the peer and its L4 part matches (`None` matches
//! every protocol, ICMP included). CIDR peers match only world-class peers (no cluster identity),
//! by address: a CIDR rule never selects a pod, a node or the host.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::identity::NumericIdentity;
use crate::policy::{
    Direction, DirectionPolicy, EndpointPolicy, PeerSet, Protocol, Rule, RuleId, RuleKind,
};

/// Cilium drop reasons used by policy (`bpf/lib/common.h`, `DROP_POLICY*`, as positive codes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    /// 133 `DROP_POLICY`: no rule allows the packet.
    PolicyDenied,
    /// 181 `DROP_POLICY_DENY`: a deny rule matched.
    PolicyDenyExplicit,
}

impl DropReason {
    pub fn code(self) -> u8 {
        match self {
            DropReason::PolicyDenied => 133,
            DropReason::PolicyDenyExplicit => 181,
        }
    }
}

/// Why traffic was allowed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum AllowBasis {
    /// Allow rules matched (listed in `rules`).
    Rules,
    /// The direction is not enforced.
    Unenforced,
    /// The implicit ingress allow from the host.
    Localhost,
    /// Enforced without default deny and no deny matched.
    DefaultAllow,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    Allow {
        basis: AllowBasis,
        rules: Vec<RuleId>,
    },
    Deny {
        reason: DropReason,
        rules: Vec<RuleId>,
    },
}

impl Verdict {
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }

    /// The deciding rule ids (empty for implicit decisions).
    pub fn rules(&self) -> &[RuleId] {
        match self {
            Verdict::Allow { rules, .. } | Verdict::Deny { rules, .. } => rules,
        }
    }
}

/// The remote side of a flow: its identity (ipcache result; a miss is world) and its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerInfo {
    pub identity: NumericIdentity,
    /// Needed for CIDR rules to match a world-class peer.
    pub ip: Option<IpAddr>,
}

impl PeerInfo {
    pub fn new(identity: NumericIdentity, ip: Option<IpAddr>) -> Self {
        PeerInfo { identity, ip }
    }
}

/// Whether a peer set contains the peer.
pub fn peer_matches(peers: &PeerSet, peer: &PeerInfo) -> bool {
    match peers {
        PeerSet::All => true,
        PeerSet::Selected { identities, cidrs } => {
            identities.contains(&peer.identity)
                || (peer.identity.is_world()
                    && peer
                        .ip
                        .is_some_and(|ip| cidrs.iter().any(|c| c.matches_ip(&ip))))
        }
    }
}

/// Whether a rule matches the peer and the L4 tuple.
pub fn rule_matches(rule: &Rule, peer: &PeerInfo, protocol: Protocol, port: u16) -> bool {
    let l4 = match &rule.l4 {
        None => true,
        Some(list) => list.iter().any(|m| m.matches(protocol, port)),
    };
    l4 && peer_matches(&rule.peers, peer)
}

fn matching_ids(
    policy: &DirectionPolicy,
    kind: RuleKind,
    peer: &PeerInfo,
    protocol: Protocol,
    port: u16,
) -> Vec<RuleId> {
    let mut ids: Vec<RuleId> = policy
        .rules
        .iter()
        .filter(|r| r.kind == kind && rule_matches(r, peer, protocol, port))
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Decides one packet of a new flow. `port` is the destination port (ICMP: the type).
pub fn verdict(
    policy: &EndpointPolicy,
    direction: Direction,
    peer: PeerInfo,
    protocol: Protocol,
    port: u16,
) -> Verdict {
    verdict_direction(policy.direction(direction), direction, peer, protocol, port)
}

/// [`verdict`] for one direction's policy.
pub fn verdict_direction(
    policy: &DirectionPolicy,
    direction: Direction,
    peer: PeerInfo,
    protocol: Protocol,
    port: u16,
) -> Verdict {
    if !policy.enforced {
        return Verdict::Allow {
            basis: AllowBasis::Unenforced,
            rules: Vec::new(),
        };
    }
    let denies = matching_ids(policy, RuleKind::Deny, &peer, protocol, port);
    if !denies.is_empty() {
        return Verdict::Deny {
            reason: DropReason::PolicyDenyExplicit,
            rules: denies,
        };
    }
    let allows = matching_ids(policy, RuleKind::Allow, &peer, protocol, port);
    if !allows.is_empty() {
        return Verdict::Allow {
            basis: AllowBasis::Rules,
            rules: allows,
        };
    }
    if direction == Direction::Ingress
        && policy.allow_localhost
        && peer.identity == NumericIdentity::HOST
    {
        return Verdict::Allow {
            basis: AllowBasis::Localhost,
            rules: Vec::new(),
        };
    }
    if !policy.default_deny {
        return Verdict::Allow {
            basis: AllowBasis::DefaultAllow,
            rules: Vec::new(),
        };
    }
    Verdict::Deny {
        reason: DropReason::PolicyDenied,
        rules: Vec::new(),
    }
}
