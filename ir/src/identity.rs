//! Security identities: numeric ids, Cilium's reserved ids, and the identity table.
//!
//! In: label sets. Out: [`NumericIdentity`] values, the reserved identities with their labels
//! exactly as Cilium numbers them (`pkg/identity/numericidentity.go`), and [`IdentityInfo`] rows.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::labels::{Label, LabelSet};

/// A numeric security identity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct NumericIdentity(pub u32);

impl NumericIdentity {
    /// 0: unknown; in a policy map it means "any identity".
    pub const UNKNOWN: Self = NumericIdentity(0);
    pub const HOST: Self = NumericIdentity(1);
    pub const WORLD: Self = NumericIdentity(2);
    pub const UNMANAGED: Self = NumericIdentity(3);
    pub const HEALTH: Self = NumericIdentity(4);
    pub const INIT: Self = NumericIdentity(5);
    pub const REMOTE_NODE: Self = NumericIdentity(6);
    pub const KUBE_APISERVER: Self = NumericIdentity(7);
    pub const INGRESS: Self = NumericIdentity(8);
    pub const WORLD_IPV4: Self = NumericIdentity(9);
    pub const WORLD_IPV6: Self = NumericIdentity(10);

    /// First cluster-scoped (label-derived) identity (`MinimalNumericIdentity`).
    pub const MIN_CLUSTER: u32 = 256;
    /// Last cluster-scoped identity with cluster id 0 (16 local bits).
    pub const MAX_CLUSTER: u32 = 0xFFFF;
    /// Node-local CIDR identities (`IdentityScopeLocal`): `0x01000001..=0x01FFFFFF`.
    pub const MIN_CIDR: u32 = 0x0100_0001;
    pub const MAX_CIDR: u32 = 0x01FF_FFFF;

    pub fn is_reserved(self) -> bool {
        (1..Self::MIN_CLUSTER).contains(&self.0)
    }

    pub fn is_cidr(self) -> bool {
        (Self::MIN_CIDR..=Self::MAX_CIDR).contains(&self.0)
    }

    /// World-class peers: outside the cluster. CIDR rules can only match these.
    pub fn is_world(self) -> bool {
        self == Self::WORLD
            || self == Self::WORLD_IPV4
            || self == Self::WORLD_IPV6
            || self.is_cidr()
    }
}

impl fmt::Display for NumericIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The reserved identities ciliumc allocates, with their `reserved:` names.
pub const RESERVED_IDENTITIES: &[(NumericIdentity, &str)] = &[
    (NumericIdentity::HOST, "host"),
    (NumericIdentity::WORLD, "world"),
    (NumericIdentity::UNMANAGED, "unmanaged"),
    (NumericIdentity::HEALTH, "health"),
    (NumericIdentity::INIT, "init"),
    (NumericIdentity::REMOTE_NODE, "remote-node"),
    (NumericIdentity::KUBE_APISERVER, "kube-apiserver"),
    (NumericIdentity::INGRESS, "ingress"),
    (NumericIdentity::WORLD_IPV4, "world-ipv4"),
    (NumericIdentity::WORLD_IPV6, "world-ipv6"),
];

/// Labels of a reserved identity. kube-apiserver also carries `reserved:remote-node`, as in Cilium.
pub fn reserved_labels(id: NumericIdentity) -> Option<LabelSet> {
    let (_, name) = RESERVED_IDENTITIES.iter().find(|(i, _)| *i == id)?;
    let mut set = LabelSet::new();
    set.insert(Label::reserved(name));
    if id == NumericIdentity::KUBE_APISERVER {
        set.insert(Label::reserved("remote-node"));
    }
    Some(set)
}

/// What an identity stands for.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum IdentityKind {
    Reserved,
    /// Derived from an endpoint label set.
    Cluster,
    /// A prefix referenced by a CIDR rule (an `except` prefix included).
    Cidr {
        cidr: Cidr,
    },
}

/// One row of the identity table.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct IdentityInfo {
    pub id: NumericIdentity,
    pub labels: LabelSet,
    pub kind: IdentityKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ids_match_cilium() {
        let expect = [
            (1, "host"),
            (2, "world"),
            (3, "unmanaged"),
            (4, "health"),
            (5, "init"),
            (6, "remote-node"),
            (7, "kube-apiserver"),
            (8, "ingress"),
            (9, "world-ipv4"),
            (10, "world-ipv6"),
        ];
        for (id, name) in expect {
            let labels = reserved_labels(NumericIdentity(id)).unwrap();
            assert!(labels.has_reserved(name), "{id} {name}");
        }
        assert!(
            reserved_labels(NumericIdentity::KUBE_APISERVER)
                .unwrap()
                .has_reserved("remote-node")
        );
        assert!(reserved_labels(NumericIdentity(11)).is_none());
    }

    #[test]
    fn world_class_covers_world_ids_and_cidr_scope_only() {
        assert!(NumericIdentity::WORLD.is_world());
        assert!(NumericIdentity(0x0100_0001).is_world());
        assert!(!NumericIdentity::HOST.is_world());
        assert!(!NumericIdentity::REMOTE_NODE.is_world());
        assert!(!NumericIdentity(256).is_world());
    }
}
