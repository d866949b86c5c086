//! Policy label selectors → IR selectors, with the namespace rules of each policy kind.
//!
//! In: model selectors (keys as written, e.g. `app`, `k8s:app`, `reserved:host`). Out: IR
//! selectors with Cilium's implicit namespace requirements (`pkg/k8s/apis/cilium.io/utils/utils.go`,
//! `pkg/k8s/network_policy.go`):
//! - CNP subject: `k8s:io.kubernetes.pod.namespace=<ns>`, replacing any user namespace match;
//! - CNP peer: the same, unless the selector already looks at the namespace, a namespace label or a
//!   `reserved:` key;
//! - CCNP peer: `io.kubernetes.pod.namespace Exists` under the same exceptions (pods only);
//! - KNP: podSelector keys get the `k8s:` source; namespaceSelector keys become
//!   `k8s:io.cilium.k8s.namespace.labels.<key>`; `namespaceSelector: {}` = namespace `Exists`.

use ciliumc_ir::labels::{
    LABEL_NAMESPACE_LABELS_PREFIX, LABEL_POD_NAMESPACE, SOURCE_K8S, SOURCE_RESERVED,
};
use ciliumc_ir::{LabelSelector, Operator, Requirement, SelectorKey};

use crate::frontend::model;

fn operator(op: model::SelectorOperator) -> Operator {
    match op {
        model::SelectorOperator::In => Operator::In,
        model::SelectorOperator::NotIn => Operator::NotIn,
        model::SelectorOperator::Exists => Operator::Exists,
        model::SelectorOperator::DoesNotExist => Operator::DoesNotExist,
    }
}

/// Converts a selector, mapping each written key through `key`.
fn convert_with(sel: &model::LabelSelector, key: impl Fn(&str) -> SelectorKey) -> LabelSelector {
    let mut out = LabelSelector::all();
    for (k, v) in sel.match_labels.iter().flatten() {
        out.requirements.push(Requirement::equals(key(k), v));
    }
    for e in sel.match_expressions.iter().flatten() {
        out.requirements.push(Requirement::new(
            key(&e.key),
            operator(e.operator),
            e.values.iter().flatten().cloned(),
        ));
    }
    out
}

/// A Cilium selector as written: unprefixed keys match any source.
pub fn convert(sel: &model::LabelSelector) -> LabelSelector {
    convert_with(sel, SelectorKey::parse)
}

fn namespace_key() -> SelectorKey {
    SelectorKey::new(SOURCE_K8S, LABEL_POD_NAMESPACE)
}

fn namespace_is(ns: &str) -> Requirement {
    Requirement::equals(namespace_key(), ns)
}

/// Whether Cilium leaves a peer selector's namespace alone.
fn has_namespace_scope(sel: &LabelSelector) -> bool {
    sel.mentions_key(LABEL_POD_NAMESPACE)
        || sel.mentions_key_prefix(LABEL_NAMESPACE_LABELS_PREFIX)
        || sel.mentions_source(SOURCE_RESERVED)
}

/// CNP `endpointSelector`: always the policy's namespace (a user namespace match is replaced);
/// subjects selecting `reserved:init` are left alone.
pub fn cnp_subject(sel: &model::LabelSelector, ns: &str) -> LabelSelector {
    let mut out = convert(sel);
    let selects_init = out
        .requirements
        .iter()
        .any(|r| r.key.source == SOURCE_RESERVED && r.key.key == "init");
    if selects_init {
        return out;
    }
    out.requirements
        .retain(|r| r.key.key != LABEL_POD_NAMESPACE);
    out.with(namespace_is(ns))
}

/// CNP `fromEndpoints`/`toEndpoints` entry.
pub fn cnp_peer(sel: &model::LabelSelector, ns: &str) -> LabelSelector {
    let out = convert(sel);
    if has_namespace_scope(&out) {
        out
    } else {
        out.with(namespace_is(ns))
    }
}

/// CCNP `fromEndpoints`/`toEndpoints` entry: without a namespace it means pods of every namespace.
pub fn ccnp_peer(sel: &model::LabelSelector) -> LabelSelector {
    let out = convert(sel);
    if has_namespace_scope(&out) {
        out
    } else {
        out.with(Requirement::exists(namespace_key()))
    }
}

fn k8s_key(key: &str) -> SelectorKey {
    let parsed = SelectorKey::parse(key);
    if parsed.source == ciliumc_ir::labels::SOURCE_ANY {
        SelectorKey::new(SOURCE_K8S, &parsed.key)
    } else {
        parsed
    }
}

/// KNP `podSelector` keys are k8s-sourced labels.
pub fn knp_pod_selector(sel: &model::LabelSelector) -> LabelSelector {
    convert_with(sel, k8s_key)
}

/// KNP `spec.podSelector`: scoped to the policy's namespace.
pub fn knp_subject(sel: &model::LabelSelector, ns: &str) -> LabelSelector {
    knp_pod_selector(sel).with(namespace_is(ns))
}

/// KNP peer (`from[]`/`to[]` entry without ipBlock).
pub fn knp_peer(
    pod: Option<&model::LabelSelector>,
    namespace: Option<&model::LabelSelector>,
    policy_ns: &str,
) -> LabelSelector {
    let mut out = pod.map(knp_pod_selector).unwrap_or_default();
    match namespace {
        None => out.requirements.push(namespace_is(policy_ns)),
        Some(ns_sel) if ns_sel.is_empty() => {
            out.requirements.push(Requirement::exists(namespace_key()))
        }
        Some(ns_sel) => {
            let ns = convert_with(ns_sel, |k| {
                SelectorKey::new(SOURCE_K8S, &format!("{LABEL_NAMESPACE_LABELS_PREFIX}{k}"))
            });
            out.requirements.extend(ns.requirements);
        }
    }
    out
}

/// A Service `spec.selector` as the endpoint selector Cilium rewrites `toServices` into.
pub fn service_backends(
    selector: &std::collections::BTreeMap<String, String>,
    ns: &str,
) -> LabelSelector {
    let mut out = LabelSelector::all();
    for (k, v) in selector {
        out.requirements.push(Requirement::equals(k8s_key(k), v));
    }
    out.with(namespace_is(ns))
}
