//! Inventory: namespaces, pods, workload controllers, external workloads and nodes → endpoints.
//!
//! In: the model objects and [`ResolveOptions`]. Out: [`Inventory`] — namespace labels (with the
//! automatic `kubernetes.io/metadata.name`), one [`Endpoint`] per Pod, per workload controller given
//! without Pods, and per CiliumExternalWorkload (identity still unset), plus the node list.
//! Endpoint labels follow Cilium: `k8s:<pod label>`, `k8s:io.kubernetes.pod.namespace`,
//! `k8s:io.cilium.k8s.namespace.labels.<k>`, `k8s:io.cilium.k8s.policy.serviceaccount`,
//! `k8s:io.cilium.k8s.policy.cluster`. Addresses missing from the input are allocated from the
//! configured pod CIDRs, deterministically per endpoint name (data only, never traffic addresses;
//! an allocated address is not checked against addresses given explicitly in the input).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ciliumc_ir::labels::{
    LABEL_CLUSTER, LABEL_NAMESPACE_LABELS_PREFIX, LABEL_NAMESPACE_NAME, LABEL_POD_NAMESPACE,
    LABEL_SERVICE_ACCOUNT,
};
use ciliumc_ir::stable_id::allocate_stable_ids;
use ciliumc_ir::{
    Endpoint, EndpointKind, Label, LabelSet, NamedPort, NumericIdentity, Protocol, WorkloadRef,
};

use super::{ResolveOptions, ResolveWarning, SourceObject};
use crate::frontend::model::{self, Object};

/// Pod labels Cilium's default label filter drops from identities (they differ per replica or
/// revision and would only split identities).
const IGNORED_POD_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
];

/// A node and the addresses it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    /// `host` for the local node (`--node`), `remote-node` otherwise.
    pub identity: NumericIdentity,
}

#[derive(Debug, Default)]
pub struct Inventory {
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub endpoints: Vec<Endpoint>,
    pub nodes: Vec<NodeInfo>,
    /// Endpoint name → host-side interface, from [`INTERFACE_ANNOTATION`].
    pub interfaces: BTreeMap<String, String>,
}

/// Pod (template) or CiliumExternalWorkload annotation naming the host-side interface the
/// agent attaches the endpoint's programs to; carried into the manifest as `interface`.
pub const INTERFACE_ANNOTATION: &str = "ciliumc.io/interface";

struct PendingEndpoint {
    endpoint: Endpoint,
    host_network: bool,
    interface: Option<String>,
}

/// The [`INTERFACE_ANNOTATION`] of an object, if it is a usable Linux interface name (1..=15
/// bytes, no `/`, `:`, whitespace or NUL); an unusable one is dropped with a warning.
fn interface_annotation(
    meta: &model::ObjectMeta,
    what: &str,
    warnings: &mut Vec<ResolveWarning>,
) -> Option<String> {
    let value = meta.annotations.as_ref()?.get(INTERFACE_ANNOTATION)?.trim();
    let usable = !value.is_empty()
        && value.len() <= 15
        && value != "."
        && value != ".."
        && !value
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0');
    if usable {
        Some(value.to_string())
    } else {
        warnings.push(ResolveWarning::new(
            what,
            format!(
                "annotation {INTERFACE_ANNOTATION}={value:?} is not an interface name \
                 (1-15 bytes, no `/`, `:` or spaces); ignored"
            ),
        ));
        None
    }
}

fn object_ns(meta: &model::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

fn object_name(meta: &model::ObjectMeta) -> String {
    meta.name
        .clone()
        .or_else(|| meta.generate_name.clone())
        .unwrap_or_default()
}

fn protocol_of(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// Named container ports of a pod spec (lower-cased, as Cilium compares them).
fn named_ports(spec: &model::PodSpec) -> Vec<NamedPort> {
    let mut out = BTreeSet::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            let (Some(name), Some(protocol), Ok(port)) = (
                p.name.as_ref(),
                protocol_of(p.protocol.as_deref()),
                u16::try_from(p.container_port),
            ) else {
                continue;
            };
            out.insert(NamedPort {
                name: name.to_ascii_lowercase(),
                protocol,
                port,
            });
        }
    }
    out.into_iter().collect()
}

fn endpoint_labels(
    pod_labels: Option<&BTreeMap<String, String>>,
    ns: &str,
    ns_labels: &BTreeMap<String, String>,
    service_account: &str,
    cluster: &str,
) -> LabelSet {
    let mut set = LabelSet::new();
    for (k, v) in pod_labels.into_iter().flatten() {
        if !IGNORED_POD_LABELS.contains(&k.as_str()) {
            set.insert(Label::k8s(k, v));
        }
    }
    set.insert(Label::k8s(LABEL_POD_NAMESPACE, ns));
    for (k, v) in ns_labels {
        set.insert(Label::k8s(
            &format!("{LABEL_NAMESPACE_LABELS_PREFIX}{k}"),
            v,
        ));
    }
    set.insert(Label::k8s(LABEL_SERVICE_ACCOUNT, service_account));
    set.insert(Label::k8s(LABEL_CLUSTER, cluster));
    set
}

fn parse_ips(ips: impl Iterator<Item = String>) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let (mut v4, mut v6) = (None, None);
    for ip in ips {
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if v4.is_none() => v4 = Some(a),
            Ok(IpAddr::V6(a)) if v6.is_none() => v6 = Some(a),
            _ => {}
        }
    }
    (v4, v6)
}

/// The top owner: a pod's controller, followed through a ReplicaSet/Job to its own owner when that
/// object is part of the input (np-guard groups pods the same way).
fn top_owner(
    meta: &model::ObjectMeta,
    ns: &str,
    owners_of_workloads: &BTreeMap<(String, String, String), WorkloadRef>,
    self_kind: &str,
) -> WorkloadRef {
    let refs = meta.owner_references.iter().flatten();
    let owner = refs
        .clone()
        .find(|o| o.controller == Some(true))
        .or_else(|| refs.clone().next());
    match owner.and_then(|o| o.name.clone().map(|n| (o.kind.clone(), n))) {
        Some((kind, name)) => {
            let kind = kind.unwrap_or_else(|| "Pod".to_string());
            match owners_of_workloads.get(&(ns.to_string(), kind.clone(), name.clone())) {
                Some(up) => up.clone(),
                None => WorkloadRef { kind, name },
            }
        }
        None => WorkloadRef {
            kind: self_kind.to_string(),
            name: object_name(meta),
        },
    }
}

fn allocate_addresses(
    pending: &mut [PendingEndpoint],
    opts: &ResolveOptions,
) -> Result<(), super::ResolveError> {
    let names: BTreeSet<String> = pending.iter().map(|p| p.endpoint.name.clone()).collect();
    let v4_host_bits = 32 - opts.pod_cidr_v4.prefix_len() as u32;
    let v6_host_bits = (128 - opts.pod_cidr_v6.prefix_len() as u32).min(31);
    let v4_max = if v4_host_bits >= 32 {
        u32::MAX - 1
    } else {
        (1u32 << v4_host_bits).saturating_sub(2)
    };
    let v6_max = (1u32 << v6_host_bits).saturating_sub(2);
    let none = BTreeMap::new();
    let v4 = allocate_stable_ids(&names, 1, v4_max.max(1), &none)?;
    let v6 = allocate_stable_ids(&names, 1, v6_max.max(1), &none)?;
    let (base4, _) = opts.pod_cidr_v4.range();
    let (base6, _) = opts.pod_cidr_v6.range();
    for p in pending.iter_mut() {
        let ep = &mut p.endpoint;
        if ep.ipv4.is_none() && ep.ipv6.is_none() {
            if let Some(off) = v4.get(&ep.name) {
                ep.ipv4 = Some(Ipv4Addr::from((base4 as u32).wrapping_add(*off)));
            }
            if let Some(off) = v6.get(&ep.name) {
                ep.ipv6 = Some(Ipv6Addr::from(base6.wrapping_add(*off as u128)));
            }
        }
    }
    Ok(())
}

pub fn build_inventory<O: SourceObject>(
    objects: &[O],
    opts: &ResolveOptions,
    warnings: &mut Vec<ResolveWarning>,
) -> Result<Inventory, super::ResolveError> {
    let mut inv = Inventory::default();
    for o in objects {
        if let Object::Namespace(ns) = o.object() {
            let name = object_name(&ns.metadata);
            let mut labels = ns.metadata.labels.clone().unwrap_or_default();
            labels.insert(LABEL_NAMESPACE_NAME.to_string(), name.clone());
            inv.namespaces.insert(name, labels);
        }
    }
    // Workload controllers owned by another controller in the input (ReplicaSet → Deployment).
    let mut owners_of_workloads = BTreeMap::new();
    for o in objects {
        if let Object::Workload(w) = o.object() {
            let ns = object_ns(&w.metadata);
            let up = top_owner(&w.metadata, &ns, &BTreeMap::new(), &w.kind);
            owners_of_workloads.insert((ns, w.kind.clone(), object_name(&w.metadata)), up);
        }
    }
    let mut pending: Vec<PendingEndpoint> = Vec::new();
    let mut owned: BTreeSet<(String, String, String)> = BTreeSet::new();
    let ensure_ns = |inv: &mut Inventory, ns: &str| {
        inv.namespaces
            .entry(ns.to_string())
            .or_insert_with(|| BTreeMap::from([(LABEL_NAMESPACE_NAME.to_string(), ns.to_string())]))
            .clone()
    };
    for o in objects {
        let Object::Pod(pod) = o.object() else {
            continue;
        };
        let ns = object_ns(&pod.metadata);
        let name = object_name(&pod.metadata);
        let ns_labels = ensure_ns(&mut inv, &ns);
        for r in pod.metadata.owner_references.iter().flatten() {
            if let (Some(k), Some(n)) = (&r.kind, &r.name) {
                owned.insert((ns.clone(), k.clone(), n.clone()));
            }
        }
        let top = top_owner(&pod.metadata, &ns, &owners_of_workloads, "Pod");
        owned.insert((ns.clone(), top.kind.clone(), top.name.clone()));
        let sa = pod
            .spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let status = pod.status.as_ref();
        let ips = status
            .map(|s| {
                s.pod_ips
                    .iter()
                    .flatten()
                    .filter_map(|e| e.ip.clone())
                    .chain(s.pod_ip.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let (ipv4, ipv6) = parse_ips(ips.into_iter());
        let interface = interface_annotation(&pod.metadata, &format!("pod {ns}/{name}"), warnings);
        pending.push(PendingEndpoint {
            endpoint: Endpoint {
                name: format!("{ns}/{name}"),
                namespace: ns.clone(),
                pod: name,
                node: pod.spec.node_name.clone(),
                identity: NumericIdentity::UNKNOWN,
                ipv4,
                ipv6,
                kind: EndpointKind::Pod,
                workload: top.clone(),
                labels: endpoint_labels(
                    pod.metadata.labels.as_ref(),
                    &ns,
                    &ns_labels,
                    &sa,
                    &opts.cluster_name,
                ),
                named_ports: named_ports(&pod.spec),
            },
            host_network: pod.spec.host_network == Some(true),
            interface,
        });
    }
    for o in objects {
        let (meta, kind, template) = match o.object() {
            Object::Workload(w) => (&w.metadata, w.kind.as_str(), &w.spec.template),
            Object::CronJob(c) => (&c.metadata, "CronJob", &c.spec.job_template.spec.template),
            _ => continue,
        };
        let ns = object_ns(meta);
        let name = object_name(meta);
        // Controllers that own Pods of the input, or that another controller owns, add nothing.
        if owned.contains(&(ns.clone(), kind.to_string(), name.clone()))
            || owners_of_workloads
                .get(&(ns.clone(), kind.to_string(), name.clone()))
                .is_some_and(|up| up.kind != kind || up.name != name)
        {
            continue;
        }
        let ns_labels = ensure_ns(&mut inv, &ns);
        let sa = template
            .spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        pending.push(PendingEndpoint {
            endpoint: Endpoint {
                name: format!("{ns}/{name}"),
                namespace: ns.clone(),
                pod: name.clone(),
                node: template.spec.node_name.clone(),
                identity: NumericIdentity::UNKNOWN,
                ipv4: None,
                ipv6: None,
                kind: EndpointKind::Workload,
                workload: WorkloadRef {
                    kind: kind.to_string(),
                    name,
                },
                labels: endpoint_labels(
                    template.metadata.labels.as_ref(),
                    &ns,
                    &ns_labels,
                    &sa,
                    &opts.cluster_name,
                ),
                named_ports: named_ports(&template.spec),
            },
            host_network: template.spec.host_network == Some(true),
            interface: interface_annotation(
                &template.metadata,
                &format!("{kind} {ns}/{}: pod template", object_name(meta)),
                warnings,
            ),
        });
    }
    for o in objects {
        let Object::CiliumExternalWorkload(w) = o.object() else {
            continue;
        };
        let name = object_name(&w.metadata);
        // ciliumc places external workloads in namespace `default` so that CNP peers can name them.
        let ns = "default".to_string();
        let ns_labels = ensure_ns(&mut inv, &ns);
        let (ipv4, ipv6) = parse_ips(w.status.iter().filter_map(|s| s.ip.clone()));
        pending.push(PendingEndpoint {
            endpoint: Endpoint {
                name: name.clone(),
                namespace: ns.clone(),
                pod: name.clone(),
                node: None,
                identity: NumericIdentity::UNKNOWN,
                ipv4,
                ipv6,
                kind: EndpointKind::ExternalWorkload,
                workload: WorkloadRef {
                    kind: "CiliumExternalWorkload".into(),
                    name,
                },
                labels: endpoint_labels(
                    w.metadata.labels.as_ref(),
                    &ns,
                    &ns_labels,
                    "default",
                    &opts.cluster_name,
                ),
                named_ports: Vec::new(),
            },
            host_network: false,
            interface: interface_annotation(
                &w.metadata,
                &format!("CiliumExternalWorkload {}", object_name(&w.metadata)),
                warnings,
            ),
        });
    }
    for o in objects {
        let Object::Node(n) = o.object() else {
            continue;
        };
        let name = object_name(&n.metadata);
        let addresses = n
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter(|a| a.address_type == "InternalIP" || a.address_type == "ExternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        let identity = if opts.local_node.as_deref() == Some(name.as_str()) {
            NumericIdentity::HOST
        } else {
            NumericIdentity::REMOTE_NODE
        };
        inv.nodes.push(NodeInfo {
            name,
            addresses,
            identity,
        });
    }
    pending.sort_by(|a, b| a.endpoint.name.cmp(&b.endpoint.name));
    let before = pending.len();
    pending.dedup_by(|a, b| a.endpoint.name == b.endpoint.name);
    if pending.len() != before {
        warnings.push(ResolveWarning::new(
            "",
            "duplicate endpoint names; the first of each is kept",
        ));
    }
    allocate_addresses(&mut pending, opts)?;
    for p in pending {
        let mut ep = p.endpoint;
        if p.host_network && !opts.host_network_pods_as_endpoints {
            ep.kind = EndpointKind::HostNetwork;
            ep.identity = match (&opts.local_node, &ep.node) {
                (Some(local), Some(node)) if local == node => NumericIdentity::HOST,
                _ => NumericIdentity::REMOTE_NODE,
            };
        }
        if let Some(ifname) = p.interface {
            inv.interfaces.insert(ep.name.clone(), ifname);
        }
        inv.endpoints.push(ep);
    }
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::INTERFACE_ANNOTATION;
    use crate::frontend::load::{LoadOptions, load_str};
    use crate::resolve::{ResolveOptions, resolve};

    fn resolve_text(text: &str) -> crate::resolve::ResolvedCluster {
        let loaded = load_str(text, "t.yaml", &LoadOptions::default());
        assert!(
            loaded.diagnostics.iter().all(|d| !d.is_error()),
            "{:?}",
            loaded.diagnostics
        );
        resolve(&loaded.objects, &ResolveOptions::default()).unwrap()
    }

    #[test]
    fn interface_annotation_of_pods_templates_and_external_workloads_is_kept_per_endpoint() {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: ns, annotations: {{{INTERFACE_ANNOTATION}: lxc-a}}}}\nspec: {{containers: [{{name: c}}]}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: b, namespace: ns}}\nspec: {{containers: [{{name: c}}]}}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d, namespace: ns}}\nspec:\n  selector: {{matchLabels: {{app: d}}}}\n  template:\n    metadata: {{labels: {{app: d}}, annotations: {{{INTERFACE_ANNOTATION}: \" veth-d \"}}}}\n    spec: {{containers: [{{name: c}}]}}\n---\n\
             apiVersion: cilium.io/v2\nkind: CiliumExternalWorkload\nmetadata: {{name: vm1, annotations: {{{INTERFACE_ANNOTATION}: tap-vm1}}}}\nspec: {{}}\n"
        );
        let c = resolve_text(&text);
        let got: Vec<(&str, &str)> = c
            .interfaces
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [("ns/a", "lxc-a"), ("ns/d", "veth-d"), ("vm1", "tap-vm1")]
        );
        assert!(c.endpoints.iter().any(|e| e.name == "ns/b"));
    }

    #[test]
    fn unusable_interface_names_are_ignored_with_a_warning() {
        for bad in ["", "a/b", "name-longer-than-15", "a b", "x:y"] {
            let text = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: ns, annotations: {{{INTERFACE_ANNOTATION}: \"{bad}\"}}}}\nspec: {{containers: [{{name: c}}]}}\n"
            );
            let c = resolve_text(&text);
            assert!(c.interfaces.is_empty(), "{bad:?} accepted");
            assert!(
                c.warnings
                    .iter()
                    .any(|w| w.object == "pod ns/a" && w.message.contains(INTERFACE_ANNOTATION)),
                "{bad:?}: {:?}",
                c.warnings
            );
        }
    }
}
