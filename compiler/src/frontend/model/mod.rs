//! The typed model of every accepted kind (serde + schemars), one file per group of kinds.
//!
//! In: nothing (data types only); `frontend::load` fills them from files. Out: [`Object`], one variant per
//! kind, plus the small enums ([`Kind`], [`Entity`], [`L4Protocol`]) that validation guarantees parse.
pub mod cilium_l4;
pub mod cilium_policy;
pub mod cilium_rule;
pub mod k8s_core;
pub mod k8s_netpol;
pub mod meta;
pub mod workloads;

pub use cilium_l4::*;
pub use cilium_policy::*;
pub use cilium_rule::*;
pub use k8s_core::*;
pub use k8s_netpol::*;
pub use meta::*;
pub use workloads::*;

use serde::Serialize;

/// Every kind ciliumc accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    NetworkPolicy,
    CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy,
    CiliumLocalRedirectPolicy,
    Service,
    EndpointSlice,
    Namespace,
    Pod,
    Node,
    CiliumExternalWorkload,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
}

impl Kind {
    /// All kinds, in a fixed order.
    pub const ALL: [Kind; 16] = [
        Kind::NetworkPolicy,
        Kind::CiliumNetworkPolicy,
        Kind::CiliumClusterwideNetworkPolicy,
        Kind::CiliumLocalRedirectPolicy,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Namespace,
        Kind::Pod,
        Kind::Node,
        Kind::CiliumExternalWorkload,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::ReplicaSet,
        Kind::Job,
        Kind::CronJob,
    ];

    /// The `kind:` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
            Kind::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
            Kind::CiliumLocalRedirectPolicy => "CiliumLocalRedirectPolicy",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Node => "Node",
            Kind::CiliumExternalWorkload => "CiliumExternalWorkload",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
        }
    }

    /// Looks a `kind:` string up (exact, case-sensitive like Kubernetes).
    pub fn from_kind_str(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The API groups (`apiVersion` without the version) that may carry this kind. `""` is the core group.
    pub fn api_groups(self) -> &'static [&'static str] {
        match self {
            Kind::NetworkPolicy => &["networking.k8s.io"],
            Kind::CiliumNetworkPolicy
            | Kind::CiliumClusterwideNetworkPolicy
            | Kind::CiliumLocalRedirectPolicy
            | Kind::CiliumExternalWorkload => &["cilium.io"],
            Kind::Service | Kind::Namespace | Kind::Pod | Kind::Node => &[""],
            Kind::EndpointSlice => &["discovery.k8s.io"],
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::ReplicaSet => {
                &["apps", "extensions"]
            }
            Kind::Job | Kind::CronJob => &["batch"],
        }
    }

    /// Cluster-scoped kinds have no namespace.
    pub fn is_cluster_scoped(self) -> bool {
        matches!(
            self,
            Kind::CiliumClusterwideNetworkPolicy
                | Kind::Namespace
                | Kind::Node
                | Kind::CiliumExternalWorkload
        )
    }

    /// Policy kinds get unknown-field warnings; inventory kinds carry many fields ciliumc ignores on purpose.
    pub fn is_policy(self) -> bool {
        matches!(
            self,
            Kind::NetworkPolicy
                | Kind::CiliumNetworkPolicy
                | Kind::CiliumClusterwideNetworkPolicy
                | Kind::CiliumLocalRedirectPolicy
        )
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One typed object. Variants differ in size; objects live in a `Vec` and are matched by value by
/// resolve, so they are not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    NetworkPolicy(NetworkPolicy),
    CiliumNetworkPolicy(CiliumNetworkPolicy),
    CiliumClusterwideNetworkPolicy(CiliumClusterwideNetworkPolicy),
    CiliumLocalRedirectPolicy(CiliumLocalRedirectPolicy),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Namespace(Namespace),
    Pod(Pod),
    Node(Node),
    CiliumExternalWorkload(CiliumExternalWorkload),
    /// Deployment, StatefulSet, DaemonSet, ReplicaSet, Job (see `Workload::kind`).
    Workload(Workload),
    CronJob(CronJob),
}

impl Object {
    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::NetworkPolicy(o) => &o.metadata,
            Object::CiliumNetworkPolicy(o) | Object::CiliumClusterwideNetworkPolicy(o) => {
                &o.metadata
            }
            Object::CiliumLocalRedirectPolicy(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::CiliumExternalWorkload(o) => &o.metadata,
            Object::Workload(o) => &o.metadata,
            Object::CronJob(o) => &o.metadata,
        }
    }
}

/// Cilium entities (`fromEntities`/`toEntities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Entity {
    All,
    World,
    WorldIpv4,
    WorldIpv6,
    Cluster,
    Host,
    RemoteNode,
    KubeApiserver,
    Init,
    Health,
    Unmanaged,
    Ingress,
    None,
}

impl Entity {
    /// Every entity with its spelling in policies.
    pub const ALL: [(&'static str, Entity); 13] = [
        ("all", Entity::All),
        ("world", Entity::World),
        ("world-ipv4", Entity::WorldIpv4),
        ("world-ipv6", Entity::WorldIpv6),
        ("cluster", Entity::Cluster),
        ("host", Entity::Host),
        ("remote-node", Entity::RemoteNode),
        ("kube-apiserver", Entity::KubeApiserver),
        ("init", Entity::Init),
        ("health", Entity::Health),
        ("unmanaged", Entity::Unmanaged),
        ("ingress", Entity::Ingress),
        ("none", Entity::None),
    ];

    /// Parses an entity name (exact spelling, as Cilium does).
    pub fn parse(name: &str) -> Option<Entity> {
        Entity::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, e)| *e)
    }
}

/// L4 protocol of a `toPorts` or NetworkPolicy port entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum L4Protocol {
    Tcp,
    Udp,
    Sctp,
    /// `ANY`, empty or absent in Cilium rules: TCP + UDP + SCTP (never ICMP).
    Any,
    /// Extended IP protocols (need `--enable-extended-ip-protocols`; no ports).
    Vrrp,
    Igmp,
    Gre,
    Ipip,
    Ipv6,
    Esp,
    Ah,
}

impl L4Protocol {
    /// Parses a Cilium `protocol` (case-insensitive like Cilium's `ParseL4Proto`; empty = ANY).
    pub fn parse_cilium(text: &str) -> Option<L4Protocol> {
        Some(match text.to_ascii_uppercase().as_str() {
            "" | "ANY" => L4Protocol::Any,
            "TCP" => L4Protocol::Tcp,
            "UDP" => L4Protocol::Udp,
            "SCTP" => L4Protocol::Sctp,
            "VRRP" => L4Protocol::Vrrp,
            "IGMP" => L4Protocol::Igmp,
            "GRE" => L4Protocol::Gre,
            "IPIP" => L4Protocol::Ipip,
            "IPV6" => L4Protocol::Ipv6,
            "ESP" => L4Protocol::Esp,
            "AH" => L4Protocol::Ah,
            _ => return None,
        })
    }

    /// Parses a Kubernetes `protocol` (TCP, UDP, SCTP; exact case as the API server requires).
    pub fn parse_k8s(text: &str) -> Option<L4Protocol> {
        match text {
            "TCP" => Some(L4Protocol::Tcp),
            "UDP" => Some(L4Protocol::Udp),
            "SCTP" => Some(L4Protocol::Sctp),
            _ => None,
        }
    }
}
