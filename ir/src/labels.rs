//! Labels with sources, as Cilium writes them: `source:key=value`.
//!
//! In: label strings (`k8s:app=web`, `reserved:host`, `cidr:10.0.0.0/8`) or parts.
//! Out: [`Label`] and the sorted, deduplicated [`LabelSet`] that identities are allocated for.

use std::collections::BTreeSet;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Source of Kubernetes-derived labels.
pub const SOURCE_K8S: &str = "k8s";
/// Source of reserved identity labels (`reserved:host`, ...).
pub const SOURCE_RESERVED: &str = "reserved";
/// Source of CIDR labels (`cidr:10.0.0.0/8`).
pub const SOURCE_CIDR: &str = "cidr";
/// Selector source that matches a label of any source.
pub const SOURCE_ANY: &str = "any";
/// Source given to a label written without one.
pub const SOURCE_UNSPEC: &str = "unspec";

/// Label key carrying the pod namespace.
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Prefix of the keys carrying namespace labels on pod identities.
pub const LABEL_NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// Label key carrying the pod's service account.
pub const LABEL_SERVICE_ACCOUNT: &str = "io.cilium.k8s.policy.serviceaccount";
/// Label key carrying the cluster name.
pub const LABEL_CLUSTER: &str = "io.cilium.k8s.policy.cluster";
/// Label every namespace gets automatically.
pub const LABEL_NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// A label parse failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("empty label key in {0:?}")]
    EmptyKey(String),
}

/// One label: `source:key=value` (value may be empty, e.g. `reserved:host`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct Label {
    pub source: String,
    pub key: String,
    pub value: String,
}

/// Splits `source:rest` when a `:` comes before any `=`; otherwise the whole string is `rest`.
pub(crate) fn split_source(s: &str) -> (Option<&str>, &str) {
    let colon = s.find(':');
    let eq = s.find('=');
    match (colon, eq) {
        (Some(c), Some(e)) if c < e => (Some(&s[..c]), &s[c + 1..]),
        (Some(c), None) => (Some(&s[..c]), &s[c + 1..]),
        _ => (None, s),
    }
}

impl Label {
    pub fn new(source: &str, key: &str, value: &str) -> Self {
        Label {
            source: source.to_string(),
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    pub fn k8s(key: &str, value: &str) -> Self {
        Label::new(SOURCE_K8S, key, value)
    }

    /// `reserved:<name>` with an empty value.
    pub fn reserved(name: &str) -> Self {
        Label::new(SOURCE_RESERVED, name, "")
    }

    /// Parses `source:key=value`; no source gives `unspec`.
    pub fn parse(s: &str) -> Result<Self, LabelError> {
        let (source, rest) = split_source(s);
        let (key, value) = match rest.find('=') {
            Some(e) => (&rest[..e], &rest[e + 1..]),
            None => (rest, ""),
        };
        if key.is_empty() {
            return Err(LabelError::EmptyKey(s.to_string()));
        }
        Ok(Label::new(source.unwrap_or(SOURCE_UNSPEC), key, value))
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.source, self.key)
        } else {
            write!(f, "{}:{}={}", self.source, self.key, self.value)
        }
    }
}

/// A sorted set of labels; the security-relevant label set of an identity.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct LabelSet(pub BTreeSet<Label>);

impl LabelSet {
    pub fn new() -> Self {
        LabelSet(BTreeSet::new())
    }

    pub fn insert(&mut self, label: Label) {
        self.0.insert(label);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Value of the label with this source and key, if present.
    pub fn get(&self, source: &str, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|l| l.source == source && l.key == key)
            .map(|l| l.value.as_str())
    }

    pub fn has_reserved(&self, name: &str) -> bool {
        self.get(SOURCE_RESERVED, name).is_some()
    }

    /// Labels as strings, in order (`k8s:app=web`, ...).
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(Label::to_string).collect()
    }
}

impl FromIterator<Label> for LabelSet {
    fn from_iter<T: IntoIterator<Item = Label>>(iter: T) -> Self {
        LabelSet(iter.into_iter().collect())
    }
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for l in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources_keys_and_values() {
        assert_eq!(
            Label::parse("k8s:app=web").unwrap(),
            Label::k8s("app", "web")
        );
        assert_eq!(
            Label::parse("reserved:host").unwrap(),
            Label::reserved("host")
        );
        assert_eq!(
            Label::parse("app=a:b").unwrap(),
            Label::new(SOURCE_UNSPEC, "app", "a:b")
        );
        assert_eq!(
            Label::parse("cidr:10.0.0.0/8").unwrap(),
            Label::new(SOURCE_CIDR, "10.0.0.0/8", "")
        );
        assert!(Label::parse("k8s:=x").is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "k8s:app=web",
            "reserved:world",
            "k8s:io.kubernetes.pod.namespace=default",
        ] {
            assert_eq!(Label::parse(s).unwrap().to_string(), s);
        }
    }
}
