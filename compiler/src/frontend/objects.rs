//! Small helpers about object identity shared by the loader and validation.
//!
//! In: kind, namespace, name. Out: the effective namespace and the `Kind namespace/name` label.
use super::model::Kind;

/// The namespace an object lives in: as written, `default` for namespaced kinds without one (what
/// `kubectl apply` does), none for cluster-scoped kinds.
pub fn resolve_namespace(kind: Kind, written: Option<&str>) -> Option<String> {
    if kind.is_cluster_scoped() {
        return None;
    }
    Some(
        written
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string(),
    )
}

/// `Kind namespace/name`, or `Kind name` without namespace.
pub fn object_label(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}
