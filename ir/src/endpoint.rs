//! Endpoints: the things policy is enforced for (pods, workload stand-ins, external workloads).
//!
//! In: what resolve derives from Pods, workload controllers and CiliumExternalWorkloads. Out: plain
//! data — name, addresses, identity, labels, named ports and the owning workload (for connlist).

use std::net::{Ipv4Addr, Ipv6Addr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::identity::NumericIdentity;
use crate::labels::LabelSet;
use crate::policy::Protocol;

/// A container port with a name, as policies refer to it.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// The top owner of an endpoint, e.g. `Deployment frontend`; a bare pod owns itself (`Pod`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct WorkloadRef {
    pub kind: String,
    pub name: String,
}

/// Where the endpoint came from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointKind {
    /// A `Pod` object.
    Pod,
    /// Stand-in for a workload controller given without its Pods.
    Workload,
    /// A `CiliumExternalWorkload`.
    ExternalWorkload,
    /// A `hostNetwork: true` pod: it has its node's identity (host or remote-node) and no endpoint
    /// policy of its own (only the host firewall, which ciliumc does not model, would apply).
    HostNetwork,
}

#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct Endpoint {
    /// `ns/pod` (`name` alone for cluster-scoped external workloads).
    pub name: String,
    pub namespace: String,
    pub pod: String,
    pub node: Option<String>,
    pub identity: NumericIdentity,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub kind: EndpointKind,
    pub workload: WorkloadRef,
    /// Security-relevant labels (those the identity is allocated for).
    pub labels: LabelSet,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<NamedPort>,
}

impl Endpoint {
    /// Port number for a named port of this protocol, if the endpoint defines it.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}
