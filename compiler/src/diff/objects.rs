//! Object-level differences: which policies and other objects were added, removed or modified.
//!
//! In: the loaded objects of OLD and NEW. Out: [`ObjectDiff`], policies (NetworkPolicy, CNP, CCNP,
//! CLRP) apart from the rest, each change keyed by kind/namespace/name and sorted by that key. Two
//! objects are equal when their normalized JSON (the typed model, serialized) is; a modification
//! lists the field paths that differ (`spec.ingress[0].toPorts[0].ports[1]`), at most
//! [`MAX_FIELDS`] of them.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::frontend::LoadedObject;

/// Field paths listed per modified object; more are summarized as a count.
pub const MAX_FIELDS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectChangeKind {
    Added,
    Removed,
    Modified,
}

impl ObjectChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectChangeKind::Added => "added",
            ObjectChangeKind::Removed => "removed",
            ObjectChangeKind::Modified => "modified",
        }
    }
}

/// Identity of an object across the two sides.
pub type ObjectKey = (String, Option<String>, String);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectChange {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub change: ObjectChangeKind,
    /// Changed field paths (modified only), at most [`MAX_FIELDS`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// How many more paths changed than `fields` lists.
    #[serde(skip_serializing_if = "is_zero")]
    pub more_fields: usize,
    /// `file:line:column` of the object on each side.
    pub old_source: Option<String>,
    pub new_source: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ObjectChange {
    /// `Kind ns/name`.
    pub fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    pub fn key(&self) -> ObjectKey {
        (self.kind.clone(), self.namespace.clone(), self.name.clone())
    }
}

#[derive(Debug, Clone, Default)]
pub struct ObjectDiff {
    pub policies: Vec<ObjectChange>,
    pub others: Vec<ObjectChange>,
}

impl ObjectDiff {
    /// The change of a policy, if it changed.
    pub fn policy_change(&self, key: &ObjectKey) -> Option<ObjectChangeKind> {
        self.policies
            .iter()
            .find(|p| p.kind == key.0 && p.namespace == key.1 && p.name == key.2)
            .map(|p| p.change)
    }
}

struct Entry<'a> {
    is_policy: bool,
    value: Value,
    object: &'a LoadedObject,
}

fn index(objects: &[LoadedObject]) -> BTreeMap<ObjectKey, Entry<'_>> {
    objects
        .iter()
        .map(|o| {
            let key = (
                o.kind.as_str().to_string(),
                o.namespace.clone(),
                o.name.clone(),
            );
            // The typed model always serializes; a failure would only hide a difference in
            // fields, so an unserializable object compares as null.
            let value = serde_json::to_value(&o.object).unwrap_or(Value::Null);
            (
                key,
                Entry {
                    is_policy: o.kind.is_policy(),
                    value,
                    object: o,
                },
            )
        })
        .collect()
}

/// Compares the objects of the two sides.
pub fn diff_objects(old: &[LoadedObject], new: &[LoadedObject]) -> ObjectDiff {
    let old = index(old);
    let new = index(new);
    let mut keys: Vec<&ObjectKey> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = ObjectDiff::default();
    for key in keys {
        let (o, n) = (old.get(key), new.get(key));
        let (change, fields) = match (o, n) {
            (Some(_), None) => (ObjectChangeKind::Removed, Vec::new()),
            (None, Some(_)) => (ObjectChangeKind::Added, Vec::new()),
            (Some(o), Some(n)) if o.value != n.value => {
                let mut paths = Vec::new();
                changed_paths(&o.value, &n.value, String::new(), &mut paths);
                (ObjectChangeKind::Modified, paths)
            }
            _ => continue,
        };
        let more_fields = fields.len().saturating_sub(MAX_FIELDS);
        let change = ObjectChange {
            kind: key.0.clone(),
            namespace: key.1.clone(),
            name: key.2.clone(),
            change,
            fields: fields.into_iter().take(MAX_FIELDS).collect(),
            more_fields,
            old_source: o.map(|e| e.object.location.to_string()),
            new_source: n.map(|e| e.object.location.to_string()),
        };
        if o.or(n).is_some_and(|e| e.is_policy) {
            out.policies.push(change);
        } else {
            out.others.push(change);
        }
    }
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Leaf-most paths where `a` and `b` differ, in document order.
fn changed_paths(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k)));
            for k in keys {
                let p = join(&path, k);
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => changed_paths(va, vb, p, out),
                    _ => out.push(p),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let p = format!("{path}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => changed_paths(va, vb, p, out),
                    _ => out.push(p),
                }
            }
        }
        _ => out.push(if path.is_empty() { ".".into() } else { path }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_paths_are_leaf_most_and_cover_added_keys_and_elements() {
        let a = json!({"spec": {"ingress": [{"ports": [80]}], "x": 1}});
        let b = json!({"spec": {"ingress": [{"ports": [80, 443]}], "x": 1, "y": 2}});
        let mut out = Vec::new();
        changed_paths(&a, &b, String::new(), &mut out);
        assert_eq!(out, vec!["spec.ingress[0].ports[1]", "spec.y"]);
    }
}
