//! The per-endpoint, per-direction policy IR.
//!
//! In: what resolve computes from CNP/CCNP/KNP. Out: for each endpoint, an [`EndpointPolicy`] with
//! one [`DirectionPolicy`] per direction: whether enforcement is on, whether unmatched traffic is
//! denied, the implicit host allow, and a flat list of allow/deny [`Rule`]s, each with a peer set,
//! an optional L4 match and a [`RuleId`] that the origin table maps to the policy it came from.

use std::collections::BTreeSet;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cidr::CidrRule;
use crate::identity::NumericIdentity;

/// Policy direction relative to the endpoint: ingress = traffic to it, egress = traffic from it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// L4 protocols policy can name. ICMP "ports" are ICMP types.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
}

impl Protocol {
    /// What `protocol: ANY` (or an omitted CNP protocol) expands to: not ICMP.
    pub const ANY: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Icmp => 1,
            Protocol::Icmpv6 => 58,
        }
    }

    pub fn from_number(n: u8) -> Option<Self> {
        [
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Sctp,
            Protocol::Icmp,
            Protocol::Icmpv6,
        ]
        .into_iter()
        .find(|p| p.number() == n)
    }

    pub fn is_icmp(self) -> bool {
        matches!(self, Protocol::Icmp | Protocol::Icmpv6)
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmp => "ICMP",
            Protocol::Icmpv6 => "ICMPv6",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Inclusive port range (for ICMP: type range). `0..=65535` means any port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    /// `None` when `lo > hi`.
    pub fn new(lo: u16, hi: u16) -> Option<Self> {
        (lo <= hi).then_some(PortRange { lo, hi })
    }

    pub fn single(port: u16) -> Self {
        PortRange { lo: port, hi: port }
    }

    /// Cilium's `port`/`endPort` rule: port 0 = all ports; the range applies only when
    /// `endPort > port`, otherwise the single port.
    pub fn from_port_end(port: u16, end_port: Option<u16>) -> Self {
        match (port, end_port) {
            (0, _) => PortRange::ANY,
            (p, Some(e)) if e > p => PortRange { lo: p, hi: e },
            (p, _) => PortRange::single(p),
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    pub fn is_any(&self) -> bool {
        *self == PortRange::ANY
    }
}

/// One L4 match: a protocol and a port (or ICMP type) range.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct L4Match {
    pub protocol: Protocol,
    pub ports: PortRange,
}

impl L4Match {
    pub fn new(protocol: Protocol, ports: PortRange) -> Self {
        L4Match { protocol, ports }
    }

    /// An ICMP/ICMPv6 type (or every type with `None`).
    pub fn icmp(protocol: Protocol, icmp_type: Option<u8>) -> Self {
        let ports = match icmp_type {
            Some(t) => PortRange::single(t as u16),
            None => PortRange::ANY,
        };
        L4Match { protocol, ports }
    }

    pub fn matches(&self, protocol: Protocol, port: u16) -> bool {
        self.protocol == protocol && self.ports.contains(port)
    }
}

/// Whether a rule allows or denies what it matches.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    Allow,
    Deny,
}

/// Stable id of a source rule (one rule of one policy section); several IR rules may share it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct RuleId(pub u32);

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The peers a rule matches.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum PeerSet {
    /// Every peer: every identity and every address (entity `all`, L4-only rules, KNP rules
    /// without peers).
    All,
    /// Peers with one of these identities, or world-class peers (no cluster identity) whose
    /// address one of the CIDR rules matches. Empty = nothing.
    Selected {
        identities: BTreeSet<NumericIdentity>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cidrs: Vec<CidrRule>,
    },
}

impl PeerSet {
    pub fn none() -> Self {
        PeerSet::Selected {
            identities: BTreeSet::new(),
            cidrs: Vec::new(),
        }
    }

    pub fn identities(ids: impl IntoIterator<Item = NumericIdentity>) -> Self {
        PeerSet::Selected {
            identities: ids.into_iter().collect(),
            cidrs: Vec::new(),
        }
    }

    pub fn cidrs(cidrs: Vec<CidrRule>) -> Self {
        PeerSet::Selected {
            identities: BTreeSet::new(),
            cidrs,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, PeerSet::Selected { identities, cidrs } if identities.is_empty() && cidrs.is_empty())
    }
}

/// One allow or deny rule of one direction of one endpoint.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct Rule {
    pub id: RuleId,
    pub kind: RuleKind,
    pub peers: PeerSet,
    /// `None`: every protocol and port, ICMP included (an L3-only rule).
    /// `Some(list)`: only these; an empty list matches nothing (e.g. unresolved named ports).
    pub l4: Option<Vec<L4Match>>,
}

/// Policy of one endpoint in one direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct DirectionPolicy {
    /// Off: no rule selects the endpoint in this direction, everything passes.
    pub enforced: bool,
    /// On (the usual case when enforced): traffic no allow rule matches is dropped. Off when every
    /// selecting rule set `enableDefaultDeny` false for this direction: only denies apply.
    pub default_deny: bool,
    /// Ingress only: the implicit allow from `reserved:host` (Cilium `--allow-localhost`).
    pub allow_localhost: bool,
    pub rules: Vec<Rule>,
}

impl DirectionPolicy {
    /// Not enforced: allow everything.
    pub fn unenforced() -> Self {
        DirectionPolicy {
            enforced: false,
            default_deny: false,
            allow_localhost: false,
            rules: Vec::new(),
        }
    }

    /// Enforced with default deny, the implicit host allow set for ingress.
    pub fn enforced(direction: Direction, rules: Vec<Rule>) -> Self {
        DirectionPolicy {
            enforced: true,
            default_deny: true,
            allow_localhost: direction == Direction::Ingress,
            rules,
        }
    }
}

/// Both directions of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct EndpointPolicy {
    pub ingress: DirectionPolicy,
    pub egress: DirectionPolicy,
}

impl EndpointPolicy {
    pub fn unenforced() -> Self {
        EndpointPolicy {
            ingress: DirectionPolicy::unenforced(),
            egress: DirectionPolicy::unenforced(),
        }
    }

    pub fn direction(&self, direction: Direction) -> &DirectionPolicy {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub fn direction_mut(&mut self, direction: Direction) -> &mut DirectionPolicy {
        match direction {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }
}

/// A position in an input file (1-based line and column).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct SourceLocation {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Where a rule came from.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct RuleOrigin {
    /// `CiliumNetworkPolicy`, `CiliumClusterwideNetworkPolicy`, `NetworkPolicy`.
    pub policy_kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// `ingress`, `egress`, `ingressDeny`, `egressDeny`; with `specs[i]` prefixed for CNP specs lists.
    pub section: String,
    /// Index of the rule inside its section.
    pub rule_index: usize,
    pub source: Option<SourceLocation>,
}

impl RuleOrigin {
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
}
