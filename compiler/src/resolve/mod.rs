//! Resolve: typed objects → identities, endpoints and the per-endpoint policy IR.
//!
//! In: the frontend's objects (anything implementing [`SourceObject`], e.g. `PlainObject`, or the
//! loader's objects) and [`ResolveOptions`]. Out: a [`ResolvedCluster`]: the identity table (reserved
//! ids as in Cilium, cluster identities from 256, CIDR identities in the node-local 0x01 scope), the
//! endpoints (sorted by name) with their [`EndpointPolicy`] (ingress and egress), the CIDR → identity
//! map, the nodes, and the rule origin table (rule id → policy, section, index, file:line:col).
//!
//! Stages: [`inventory`] (namespaces, pods, workloads, external workloads, nodes), [`policies`]
//! (CNP/CCNP/KNP → subject rules), [`build`] (identities, selector matching, named ports, IR).
//! Identity and rule numbering is deterministic and stable (see `ciliumc_ir::stable_id`): ids are
//! derived from a hash of the label set (rule: policy and position), so adding an unrelated pod or
//! policy leaves existing ids alone; `ResolveOptions::previous_identities` pins ids exactly.

pub mod build;
pub mod inventory;
pub mod names;
pub mod policies;
pub mod selectors;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ciliumc_ir::stable_id::{StableIdError, allocate_stable_ids};
use ciliumc_ir::{
    Cidr, Endpoint, EndpointKind, EndpointPolicy, IdentityInfo, NumericIdentity, RuleId,
    RuleOrigin, SourceLocation,
};

use crate::frontend::model::Object;
pub use inventory::{INTERFACE_ANNOTATION, NodeInfo};

/// An input object with a way to locate its fields.
pub trait SourceObject {
    fn object(&self) -> &Object;
    /// Location of a field path such as `spec.ingress[0]`, when known.
    fn location_of(&self, path: &str) -> Option<SourceLocation>;
}

impl SourceObject for crate::frontend::load::LoadedObject {
    fn object(&self) -> &Object {
        &self.object
    }

    fn location_of(&self, path: &str) -> Option<SourceLocation> {
        let l = crate::frontend::load::LoadedObject::location_of(self, path)?;
        Some(SourceLocation {
            file: l.file,
            line: l.line,
            column: l.column,
        })
    }
}

/// An object without span information (tests, generated inputs).
#[derive(Debug, Clone)]
pub struct PlainObject {
    pub object: Object,
    /// File name reported in rule origins (line/column 0: unknown).
    pub file: Option<String>,
}

impl PlainObject {
    pub fn new(object: Object) -> Self {
        PlainObject { object, file: None }
    }
}

impl SourceObject for PlainObject {
    fn object(&self) -> &Object {
        &self.object
    }

    fn location_of(&self, _path: &str) -> Option<SourceLocation> {
        self.file.as_ref().map(|f| SourceLocation {
            file: f.clone(),
            line: 0,
            column: 0,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// Pool for endpoints without addresses (data only, never traffic).
    pub pod_cidr_v4: Cidr,
    pub pod_cidr_v6: Cidr,
    /// Value of `k8s:io.cilium.k8s.policy.cluster` (entity `cluster`).
    pub cluster_name: String,
    /// The node being compiled for: its Node gets `host`, the others `remote-node`.
    pub local_node: Option<String>,
    /// Label-set string → id, kept exactly (e.g. from a previous manifest).
    pub previous_identities: BTreeMap<String, u32>,
    /// np-guard's model instead of Cilium's: `hostNetwork` pods become ordinary endpoints with their
    /// own identity and policy. Off by default; Cilium gives them the node's identity.
    pub host_network_pods_as_endpoints: bool,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        ResolveOptions {
            pod_cidr_v4: Cidr::new([10, 0, 0, 0].into(), 16).expect("valid prefix"),
            pod_cidr_v6: Cidr::new("fd00::".parse().expect("valid address"), 104)
                .expect("valid prefix"),
            cluster_name: "default".to_string(),
            local_node: None,
            previous_identities: BTreeMap::new(),
            host_network_pods_as_endpoints: false,
        }
    }
}

/// Something resolve could not honour; never fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveWarning {
    /// `Kind ns/name`, or empty.
    pub object: String,
    pub message: String,
}

impl ResolveWarning {
    pub fn new(object: &str, message: impl Into<String>) -> Self {
        ResolveWarning {
            object: object.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot number identities, rules or addresses: {0}")]
    Ids(#[from] StableIdError),
}

#[derive(Debug, Clone)]
pub struct ResolvedCluster {
    /// Sorted by id.
    pub identities: Vec<IdentityInfo>,
    /// Sorted by name.
    pub endpoints: Vec<Endpoint>,
    /// `policies[i]` belongs to `endpoints[i]`.
    pub policies: Vec<EndpointPolicy>,
    /// Every prefix that a rule mentions (excepts included) and its identity.
    pub cidr_identities: BTreeMap<Cidr, NumericIdentity>,
    /// Prefixes mentioned by ingress (from) rules and by egress (to) rules, of every policy
    /// whether it selects an endpoint or not.
    pub ingress_cidrs: BTreeSet<Cidr>,
    pub egress_cidrs: BTreeSet<Cidr>,
    pub nodes: Vec<NodeInfo>,
    pub rule_origins: BTreeMap<RuleId, RuleOrigin>,
    pub warnings: Vec<ResolveWarning>,
    /// Endpoint name → host-side interface from the `ciliumc.io/interface` annotation (only
    /// endpoints that have one); becomes the manifest endpoint's `interface`.
    pub interfaces: BTreeMap<String, String>,
}

impl ResolvedCluster {
    pub fn endpoint(&self, name: &str) -> Option<(&Endpoint, &EndpointPolicy)> {
        let i = self
            .endpoints
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()?;
        Some((&self.endpoints[i], &self.policies[i]))
    }

    pub fn identity(&self, id: NumericIdentity) -> Option<&IdentityInfo> {
        self.identities
            .binary_search_by_key(&id, |i| i.id)
            .ok()
            .map(|i| &self.identities[i])
    }
}

fn collect_cidrs(
    subjects: &[policies::SubjectRule],
    direction: Option<ciliumc_ir::Direction>,
) -> BTreeSet<Cidr> {
    let mut out = BTreeSet::new();
    for s in subjects {
        for r in s
            .rules
            .iter()
            .filter(|r| direction.is_none_or(|d| d == r.direction))
        {
            for c in &r.peers.cidrs {
                out.insert(c.cidr);
                out.extend(c.except.iter().copied());
            }
        }
    }
    out
}

/// Resolves the objects into identities, endpoints and per-endpoint policy.
pub fn resolve<O: SourceObject>(
    objects: &[O],
    opts: &ResolveOptions,
) -> Result<ResolvedCluster, ResolveError> {
    let mut warnings = Vec::new();
    let inv = inventory::build_inventory(objects, opts, &mut warnings)?;
    let services = policies::collect_services(objects);
    let translated = policies::translate_policies(objects, &services, &mut warnings);
    let mut endpoints = inv.endpoints;
    let cidrs = collect_cidrs(&translated.subjects, None);
    let ingress_cidrs = collect_cidrs(&translated.subjects, Some(ciliumc_ir::Direction::Ingress));
    let egress_cidrs = collect_cidrs(&translated.subjects, Some(ciliumc_ir::Direction::Egress));
    let (identities, cidr_identities) = build::allocate_identities(&mut endpoints, &cidrs, opts)?;

    let keys: BTreeSet<String> = translated.origins.iter().map(|(k, _)| k.clone()).collect();
    let ids = allocate_stable_ids(&keys, 1, u32::MAX - 1, &BTreeMap::new())?;
    let rule_ids: Vec<RuleId> = translated
        .origins
        .iter()
        .map(|(k, _)| RuleId(ids.get(k).copied().unwrap_or(0)))
        .collect();
    let rule_origins: BTreeMap<RuleId, RuleOrigin> = translated
        .origins
        .iter()
        .zip(&rule_ids)
        .map(|((_, o), id)| (*id, o.clone()))
        .collect();

    let mut builder = build::PolicyBuilder::new(&identities, &endpoints, &opts.cluster_name);
    // Selection depends only on labels: index subjects by the namespace they require, and compute
    // the selecting subjects once per label set.
    let mut subjects_by_ns: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut subjects_any_ns: Vec<usize> = Vec::new();
    for (i, s) in translated.subjects.iter().enumerate() {
        match s.subject.required_namespace() {
            Some(ns) => subjects_by_ns.entry(ns).or_default().push(i),
            None => subjects_any_ns.push(i),
        }
    }
    let mut selecting_by_labels: HashMap<&ciliumc_ir::LabelSet, Vec<usize>> = HashMap::new();
    // Endpoints with the same labels and named ports get the same policy: compute it once.
    let mut policy_cache: HashMap<
        (&ciliumc_ir::LabelSet, &[ciliumc_ir::NamedPort]),
        EndpointPolicy,
    > = HashMap::new();
    let mut policies_out = Vec::with_capacity(endpoints.len());
    for ep in &endpoints {
        if ep.kind == EndpointKind::HostNetwork {
            policies_out.push(EndpointPolicy::unenforced());
            continue;
        }
        if let Some(p) = policy_cache.get(&(&ep.labels, ep.named_ports.as_slice())) {
            policies_out.push(p.clone());
            continue;
        }
        let selecting = selecting_by_labels.entry(&ep.labels).or_insert_with(|| {
            let ns = ep.labels.get(
                ciliumc_ir::labels::SOURCE_K8S,
                ciliumc_ir::labels::LABEL_POD_NAMESPACE,
            );
            let mut v: Vec<usize> = ns
                .and_then(|ns| subjects_by_ns.get(ns))
                .into_iter()
                .flatten()
                .chain(subjects_any_ns.iter())
                .copied()
                .filter(|i| translated.subjects[*i].subject.matches(&ep.labels))
                .collect();
            v.sort_unstable();
            v
        });
        let refs: Vec<&policies::SubjectRule> =
            selecting.iter().map(|i| &translated.subjects[*i]).collect();
        let policy = builder.endpoint_policy(ep, &refs, &rule_ids);
        policy_cache.insert((&ep.labels, ep.named_ports.as_slice()), policy.clone());
        policies_out.push(policy);
    }
    Ok(ResolvedCluster {
        identities,
        endpoints,
        policies: policies_out,
        cidr_identities,
        ingress_cidrs,
        egress_cidrs,
        nodes: inv.nodes,
        rule_origins,
        warnings,
        interfaces: inv.interfaces,
    })
}
