//! ciliumc-ir: the data model shared by every pass, and the reference evaluator.
//!
//! In: nothing of YAML or eBPF — resolve fills these types from the parsed inputs, the policy
//! compiler lowers them, the runtime reads the manifest. Out:
//! - [`labels`]: labels with sources (`k8s:`, `reserved:`, `cidr:`, ...) and label sets;
//! - [`selector`]: label selectors with Cilium's source-aware matching (`any:` matches any source);
//! - [`identity`]: numeric identities, the reserved ids exactly as Cilium numbers them;
//! - [`cidr`]: IPv4/IPv6 prefixes and CIDR rules with `except`;
//! - [`endpoint`]: endpoints (pods, workload stand-ins, external workloads);
//! - [`policy`]: the per-endpoint, per-direction policy IR (rules, peers, L4, origins);
//! - [`evaluator`]: `verdict(policy, direction, peer, protocol, port)`, the specification the
//!   generated eBPF is tested against;
//! - [`stable_id`]: deterministic, stable numbering (identities, rule ids);
//! - [`manifest`]: `manifest.json` types (`ciliumc/v1`).

pub mod cidr;
pub mod endpoint;
pub mod evaluator;
pub mod identity;
pub mod labels;
pub mod manifest;
pub mod policy;
pub mod selector;
pub mod stable_id;

pub use cidr::{Cidr, CidrError, CidrRule};
pub use endpoint::{Endpoint, EndpointKind, NamedPort, WorkloadRef};
pub use evaluator::{AllowBasis, DropReason, PeerInfo, Verdict, verdict};
pub use identity::{IdentityInfo, IdentityKind, NumericIdentity};
pub use labels::{Label, LabelSet};
pub use policy::{
    Direction, DirectionPolicy, EndpointPolicy, L4Match, PeerSet, PortRange, Protocol, Rule,
    RuleId, RuleKind, RuleOrigin, SourceLocation,
};
pub use selector::{LabelSelector, Operator, Requirement, SelectorKey};
