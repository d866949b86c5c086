//! Top-level Cilium kinds (cilium.io/v2): CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy,
//! CiliumLocalRedirectPolicy, CiliumExternalWorkload.
//!
//! In: whole objects. Out: typed objects; `status` is kept opaque because nothing reads it.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cilium_rule::Rule;
use super::meta::{LabelSelector, ObjectMeta};

/// CiliumNetworkPolicy: `spec` (one rule) and/or `specs` (several rules).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CiliumNetworkPolicy {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specs: Option<Vec<Rule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl CiliumNetworkPolicy {
    /// `spec` followed by `specs[]`, in source order, with their field paths (`spec`, `specs[1]`).
    pub fn rules(&self) -> Vec<(String, &Rule)> {
        let mut out = Vec::new();
        if let Some(rule) = &self.spec {
            out.push(("spec".to_string(), rule));
        }
        for (i, rule) in self.specs.iter().flatten().enumerate() {
            out.push((format!("specs[{i}]"), rule));
        }
        out
    }
}

/// CiliumClusterwideNetworkPolicy: same shape as CiliumNetworkPolicy, cluster scoped.
pub type CiliumClusterwideNetworkPolicy = CiliumNetworkPolicy;

/// CiliumLocalRedirectPolicy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CiliumLocalRedirectPolicy {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: LocalRedirectSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// CLRP `spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRedirectSpec {
    pub redirect_frontend: RedirectFrontend,
    pub redirect_backend: RedirectBackend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_redirect_from_backend: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// CLRP `redirectFrontend`: exactly one of `addressMatcher`, `serviceMatcher`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedirectFrontend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_matcher: Option<AddressMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_matcher: Option<ServiceMatcher>,
}

/// CLRP `addressMatcher`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressMatcher {
    pub ip: String,
    #[serde(default)]
    pub to_ports: Vec<LrpPort>,
}

/// CLRP `serviceMatcher`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMatcher {
    pub service_name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<Vec<LrpPort>>,
}

/// CLRP `redirectBackend`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedirectBackend {
    pub local_endpoint_selector: LabelSelector,
    #[serde(default)]
    pub to_ports: Vec<LrpPort>,
}

/// CLRP port: `port` is a string in the CRD; `protocol` TCP or UDP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LrpPort {
    pub port: String,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// CiliumExternalWorkload: a VM joining the cluster; its labels come from `metadata.labels`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CiliumExternalWorkload {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ExternalWorkloadSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ExternalWorkloadStatus>,
}

/// CEW `spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExternalWorkloadSpec {
    #[serde(
        default,
        rename = "ipv4-alloc-cidr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_alloc_cidr: Option<String>,
    #[serde(
        default,
        rename = "ipv6-alloc-cidr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_alloc_cidr: Option<String>,
}

/// CEW `status`: the workload's identity id and IP once registered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExternalWorkloadStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}
