//! Label selectors (matchLabels + matchExpressions) with Cilium's source-aware matching.
//!
//! In: requirements on `source:key` (an unprefixed key means `any:`, which matches a label of any
//! source; `k8s:app` matches only k8s-sourced labels). Out: [`LabelSelector::matches`] on a
//! [`LabelSet`]. All requirements are ANDed; a selector without requirements matches everything.

use std::collections::BTreeSet;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::labels::{LabelSet, SOURCE_ANY, split_source};

/// The key of a requirement: which label source (or `any`) and key it looks at.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct SelectorKey {
    pub source: String,
    pub key: String,
}

impl SelectorKey {
    pub fn new(source: &str, key: &str) -> Self {
        SelectorKey {
            source: source.to_string(),
            key: key.to_string(),
        }
    }

    /// Parses a selector key as written in a policy: `k8s:app`, `reserved:host`, or `app` (= `any:app`).
    /// Cilium also accepts the internal `source.key` form only for known sources; we do not, since
    /// keys such as `io.kubernetes.pod.namespace` would be ambiguous.
    pub fn parse(s: &str) -> Self {
        match split_source(s) {
            (Some(source), key) => SelectorKey::new(source, key),
            (None, key) => SelectorKey::new(SOURCE_ANY, key),
        }
    }

    fn values_in<'a>(&self, labels: &'a LabelSet) -> impl Iterator<Item = &'a str> {
        labels
            .iter()
            .filter(move |l| {
                l.key == self.key && (self.source == SOURCE_ANY || l.source == self.source)
            })
            .map(|l| l.value.as_str())
    }
}

impl fmt::Display for SelectorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.key)
    }
}

/// matchExpressions operators.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One requirement; `values` is used by `In`/`NotIn` only.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct Requirement {
    pub key: SelectorKey,
    pub operator: Operator,
    pub values: BTreeSet<String>,
}

impl Requirement {
    pub fn new(
        key: SelectorKey,
        operator: Operator,
        values: impl IntoIterator<Item = String>,
    ) -> Self {
        Requirement {
            key,
            operator,
            values: values.into_iter().collect(),
        }
    }

    /// `key In [value]`, what a matchLabels entry means.
    pub fn equals(key: SelectorKey, value: &str) -> Self {
        Requirement::new(key, Operator::In, [value.to_string()])
    }

    pub fn exists(key: SelectorKey) -> Self {
        Requirement::new(key, Operator::Exists, [])
    }

    /// Kubernetes semantics: `NotIn` and `DoesNotExist` also match when the key is absent.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        let mut values = self.key.values_in(labels).peekable();
        match self.operator {
            Operator::In => values.any(|v| self.values.contains(v)),
            Operator::NotIn => !values.any(|v| self.values.contains(v)),
            Operator::Exists => values.peek().is_some(),
            Operator::DoesNotExist => values.peek().is_none(),
        }
    }
}

/// A label selector: the AND of its requirements.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Selects every label set.
    pub fn all() -> Self {
        LabelSelector::default()
    }

    pub fn new(requirements: Vec<Requirement>) -> Self {
        LabelSelector { requirements }
    }

    pub fn with(mut self, requirement: Requirement) -> Self {
        self.requirements.push(requirement);
        self
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The single namespace this selector requires (`io.kubernetes.pod.namespace In [ns]`, source
    /// `k8s` or `any`), used to index selections by namespace.
    pub fn required_namespace(&self) -> Option<&str> {
        self.requirements.iter().find_map(|r| {
            let source_ok = r.key.source == crate::labels::SOURCE_K8S || r.key.source == SOURCE_ANY;
            if source_ok
                && r.key.key == crate::labels::LABEL_POD_NAMESPACE
                && r.operator == Operator::In
                && r.values.len() == 1
            {
                r.values.iter().next().map(String::as_str)
            } else {
                None
            }
        })
    }

    /// Whether some requirement looks at this key (any source).
    pub fn mentions_key(&self, key: &str) -> bool {
        self.requirements.iter().any(|r| r.key.key == key)
    }

    /// Whether some requirement looks at a key with this prefix.
    pub fn mentions_key_prefix(&self, prefix: &str) -> bool {
        self.requirements
            .iter()
            .any(|r| r.key.key.starts_with(prefix))
    }

    /// Whether some requirement looks at a key of this source.
    pub fn mentions_source(&self, source: &str) -> bool {
        self.requirements.iter().any(|r| r.key.source == source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Label;

    fn set(labels: &[&str]) -> LabelSet {
        labels.iter().map(|l| Label::parse(l).unwrap()).collect()
    }

    #[test]
    fn any_source_matches_every_source_but_k8s_only_k8s() {
        let labels = set(&["k8s:app=web", "container:tier=db"]);
        assert!(Requirement::equals(SelectorKey::parse("app"), "web").matches(&labels));
        assert!(Requirement::equals(SelectorKey::parse("k8s:app"), "web").matches(&labels));
        assert!(Requirement::equals(SelectorKey::parse("any:tier"), "db").matches(&labels));
        assert!(!Requirement::equals(SelectorKey::parse("k8s:tier"), "db").matches(&labels));
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let labels = set(&["k8s:app=web"]);
        let k = || SelectorKey::parse("app");
        let missing = || SelectorKey::parse("tier");
        let vals = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(Requirement::new(k(), Operator::In, vals(&["web", "x"])).matches(&labels));
        assert!(!Requirement::new(k(), Operator::In, vals(&["x"])).matches(&labels));
        assert!(!Requirement::new(k(), Operator::NotIn, vals(&["web"])).matches(&labels));
        assert!(Requirement::new(missing(), Operator::NotIn, vals(&["web"])).matches(&labels));
        assert!(Requirement::new(k(), Operator::Exists, vals(&[])).matches(&labels));
        assert!(!Requirement::new(missing(), Operator::Exists, vals(&[])).matches(&labels));
        assert!(Requirement::new(missing(), Operator::DoesNotExist, vals(&[])).matches(&labels));
        assert!(!Requirement::new(k(), Operator::DoesNotExist, vals(&[])).matches(&labels));
    }

    #[test]
    fn empty_selector_matches_everything_and_requirements_are_anded() {
        let labels = set(&["k8s:app=web", "k8s:tier=fe"]);
        assert!(LabelSelector::all().matches(&LabelSet::new()));
        let sel = LabelSelector::all()
            .with(Requirement::equals(SelectorKey::parse("app"), "web"))
            .with(Requirement::equals(SelectorKey::parse("tier"), "be"));
        assert!(!sel.matches(&labels));
    }

    #[test]
    fn reserved_selector_matches_empty_valued_reserved_label() {
        let host = set(&["reserved:host"]);
        assert!(Requirement::equals(SelectorKey::parse("reserved:host"), "").matches(&host));
        assert!(!Requirement::equals(SelectorKey::parse("k8s:host"), "").matches(&host));
    }
}
