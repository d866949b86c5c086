//! Program- and manifest-level differences.
//!
//! In: two [`ProgramSide`]s — compiled in memory from a resolved cluster ([`compile_side`]) or
//! read from a `ciliumc compile` output directory ([`read_output_dir`]). Out: [`ManifestDiff`]:
//! endpoints whose program object changes (bytes differ, added, removed, or manifest fields such as
//! identity and addresses), identities added/removed/renumbered (keyed by label set), maps whose
//! definition or initial entries change, and rule-table and tail-call changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ciliumc_ir::manifest::{Manifest, ManifestEndpoint, ManifestMap, ManifestRule};
use serde::Serialize;

use crate::compile;
use crate::resolve::ResolvedCluster;

/// Map entry keys listed per changed map; more are counted only.
pub const MAX_KEYS: usize = 16;

/// A manifest and each endpoint's object bytes.
pub struct ProgramSide {
    pub manifest: Manifest,
    /// Endpoint name → object bytes.
    pub objects: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgramChangeKind {
    Added,
    Removed,
    Modified,
}

impl ProgramChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramChangeKind::Added => "added",
            ProgramChangeKind::Removed => "removed",
            ProgramChangeKind::Modified => "modified",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointProgramChange {
    pub endpoint: String,
    pub change: ProgramChangeKind,
    /// What differs for a modified endpoint (`object bytes differ`, `identity 256 -> 300`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityRow {
    pub id: u32,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Renumbered {
    pub labels: Vec<String>,
    pub old_id: u32,
    pub new_id: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdentityDiff {
    pub added: Vec<IdentityRow>,
    pub removed: Vec<IdentityRow>,
    /// Same label set, another id: every peer of the identity sees a change.
    pub renumbered: Vec<Renumbered>,
}

impl IdentityDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.renumbered.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapChange {
    pub name: String,
    pub change: ProgramChangeKind,
    pub definition_changed: bool,
    pub entries_added: usize,
    pub entries_removed: usize,
    pub entries_changed: usize,
    /// Hex keys of the entries above, at most [`MAX_KEYS`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleTableDiff {
    pub added: usize,
    pub removed: usize,
    /// Same id, another policy, section or index.
    pub changed: usize,
    /// Same id and rule, another source location (files moved or edited above the rule): flow
    /// events name another place, nothing else changes.
    pub relocated: usize,
}

impl RuleTableDiff {
    /// Whether rule ids now mean other rules (relocation alone does not count).
    pub fn has_changes(&self) -> bool {
        self.added + self.removed + self.changed > 0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ManifestDiff {
    /// Sorted by endpoint name.
    pub endpoints: Vec<EndpointProgramChange>,
    pub identities: IdentityDiff,
    pub maps: Vec<MapChange>,
    pub rules: RuleTableDiff,
    pub tail_calls_changed: bool,
    pub inputs_digest_changed: bool,
    pub compiler_version_changed: bool,
}

impl ManifestDiff {
    /// Anything a loader would do differently (the digest and compiler version alone do not count).
    pub fn has_changes(&self) -> bool {
        !self.endpoints.is_empty()
            || !self.identities.is_empty()
            || !self.maps.is_empty()
            || self.rules.has_changes()
            || self.tail_calls_changed
    }
}

/// Compiles a resolved cluster in memory.
pub fn compile_side(cluster: &ResolvedCluster) -> Result<ProgramSide, String> {
    // The digest only labels the manifest; it plays no part in the comparison.
    let out = compile::compile(cluster, "").map_err(|e| e.to_string())?;
    let by_path: BTreeMap<&str, &Vec<u8>> = out
        .objects
        .iter()
        .map(|o| (o.path.as_str(), &o.bytes))
        .collect();
    let objects = out
        .manifest
        .endpoints
        .iter()
        .filter_map(|e| {
            by_path
                .get(e.object.as_str())
                .map(|b| (e.name.clone(), (*b).clone()))
        })
        .collect();
    Ok(ProgramSide {
        manifest: out.manifest,
        objects,
    })
}

/// Reads `DIR/manifest.json` and every endpoint's object.
pub fn read_output_dir(dir: &Path) -> Result<ProgramSide, String> {
    let path = dir.join("manifest.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a ciliumc manifest: {e}", path.display()))?;
    let mut objects = BTreeMap::new();
    for ep in &manifest.endpoints {
        let p = dir.join(&ep.object);
        let bytes = std::fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display()))?;
        objects.insert(ep.name.clone(), bytes);
    }
    Ok(ProgramSide { manifest, objects })
}

/// (id, labels) rows of a resolved cluster, as the manifest lists them.
pub fn identity_rows(cluster: &ResolvedCluster) -> Vec<IdentityRow> {
    cluster
        .identities
        .iter()
        .map(|i| IdentityRow {
            id: i.id.0,
            labels: i.labels.iter().map(|l| l.to_string()).collect(),
        })
        .collect()
}

fn manifest_identity_rows(m: &Manifest) -> Vec<IdentityRow> {
    m.identities
        .iter()
        .map(|i| IdentityRow {
            id: i.id,
            labels: i.labels.clone(),
        })
        .collect()
}

/// Identities keyed by label set.
pub fn diff_identities(old: &[IdentityRow], new: &[IdentityRow]) -> IdentityDiff {
    let index = |rows: &[IdentityRow]| -> BTreeMap<Vec<String>, u32> {
        rows.iter().map(|r| (r.labels.clone(), r.id)).collect()
    };
    let (o, n) = (index(old), index(new));
    let mut out = IdentityDiff::default();
    for (labels, id) in &o {
        match n.get(labels) {
            None => out.removed.push(IdentityRow {
                id: *id,
                labels: labels.clone(),
            }),
            Some(new_id) if new_id != id => out.renumbered.push(Renumbered {
                labels: labels.clone(),
                old_id: *id,
                new_id: *new_id,
            }),
            Some(_) => {}
        }
    }
    for (labels, id) in &n {
        if !o.contains_key(labels) {
            out.added.push(IdentityRow {
                id: *id,
                labels: labels.clone(),
            });
        }
    }
    let by_id = |a: &IdentityRow, b: &IdentityRow| (a.id, &a.labels).cmp(&(b.id, &b.labels));
    out.added.sort_by(by_id);
    out.removed.sort_by(by_id);
    out
}

fn endpoint_details(o: &ManifestEndpoint, n: &ManifestEndpoint) -> Vec<String> {
    let mut d = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            d.push(format!("{name} {a} -> {b}"));
        }
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
    field("identity", o.identity.to_string(), n.identity.to_string());
    field("ipv4", opt(&o.ipv4), opt(&n.ipv4));
    field("ipv6", opt(&o.ipv6), opt(&n.ipv6));
    field("node", opt(&o.node), opt(&n.node));
    field("object", o.object.clone(), n.object.clone());
    if o.programs != n.programs {
        d.push("program list differs".into());
    }
    d
}

/// Whether two objects differ in more than their rule annotations (BTF line info carries source
/// file paths, which move with the files without changing what the program does): compared by
/// their code as disassembled, plus byte equality as the fast path.
fn code_differs(old: Option<&Vec<u8>>, new: Option<&Vec<u8>>) -> bool {
    match (old, new) {
        (Some(a), Some(b)) if a == b => false,
        (Some(a), Some(b)) => {
            let text = |bytes: &[u8]| ciliumc_targets::disasm::disassemble_object(bytes, "object");
            match (text(a), text(b)) {
                (Ok(x), Ok(y)) => x != y,
                _ => true,
            }
        }
        (a, b) => a != b,
    }
}

fn diff_endpoints(old: &ProgramSide, new: &ProgramSide) -> Vec<EndpointProgramChange> {
    let index = |s: &'_ ProgramSide| -> BTreeMap<String, ManifestEndpoint> {
        s.manifest
            .endpoints
            .iter()
            .map(|e| (e.name.clone(), e.clone()))
            .collect()
    };
    let (o, n) = (index(old), index(new));
    let names: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let (change, details) = match (o.get(name), n.get(name)) {
            (Some(_), None) => (ProgramChangeKind::Removed, Vec::new()),
            (None, Some(_)) => (ProgramChangeKind::Added, Vec::new()),
            (Some(a), Some(b)) => {
                let mut details = Vec::new();
                if code_differs(old.objects.get(name), new.objects.get(name)) {
                    details.push("object bytes differ".to_string());
                }
                details.extend(endpoint_details(a, b));
                if details.is_empty() {
                    continue;
                }
                (ProgramChangeKind::Modified, details)
            }
            (None, None) => continue,
        };
        out.push(EndpointProgramChange {
            endpoint: name.clone(),
            change,
            details,
        });
    }
    out
}

fn diff_map(o: Option<&ManifestMap>, n: Option<&ManifestMap>, name: &str) -> Option<MapChange> {
    let entries = |m: Option<&ManifestMap>| -> BTreeMap<String, String> {
        m.map(|m| {
            m.entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect()
        })
        .unwrap_or_default()
    };
    let (eo, en) = (entries(o), entries(n));
    let mut keys = Vec::new();
    let (mut added, mut removed, mut changed) = (0, 0, 0);
    for (k, v) in &eo {
        match en.get(k) {
            None => {
                removed += 1;
                keys.push(k.clone());
            }
            Some(w) if w != v => {
                changed += 1;
                keys.push(k.clone());
            }
            Some(_) => {}
        }
    }
    for k in en.keys().filter(|k| !eo.contains_key(*k)) {
        added += 1;
        keys.push(k.clone());
    }
    keys.sort();
    keys.truncate(MAX_KEYS);
    let definition = |m: &ManifestMap| {
        (
            m.map_type.clone(),
            m.key_size,
            m.value_size,
            m.max_entries,
            m.flags,
            m.pinning.clone(),
        )
    };
    let (change, definition_changed) = match (o, n) {
        (Some(_), None) => (ProgramChangeKind::Removed, false),
        (None, Some(_)) => (ProgramChangeKind::Added, false),
        (Some(a), Some(b)) => (ProgramChangeKind::Modified, definition(a) != definition(b)),
        (None, None) => return None,
    };
    if change == ProgramChangeKind::Modified && !definition_changed && keys.is_empty() {
        return None;
    }
    Some(MapChange {
        name: name.to_string(),
        change,
        definition_changed,
        entries_added: added,
        entries_removed: removed,
        entries_changed: changed,
        keys,
    })
}

fn diff_rules(old: &Manifest, new: &Manifest) -> RuleTableDiff {
    let index = |m: &Manifest| -> BTreeMap<u32, ManifestRule> {
        m.rules.iter().map(|r| (r.id, r.clone())).collect()
    };
    let (o, n) = (index(old), index(new));
    let same_rule = |a: &ManifestRule, b: &ManifestRule| {
        (
            &a.policy_kind,
            &a.namespace,
            &a.name,
            &a.section,
            a.rule_index,
        ) == (
            &b.policy_kind,
            &b.namespace,
            &b.name,
            &b.section,
            b.rule_index,
        )
    };
    let mut out = RuleTableDiff {
        added: n.keys().filter(|k| !o.contains_key(*k)).count(),
        removed: o.keys().filter(|k| !n.contains_key(*k)).count(),
        ..RuleTableDiff::default()
    };
    for (id, a) in &o {
        if let Some(b) = n.get(id) {
            if !same_rule(a, b) {
                out.changed += 1;
            } else if a.source != b.source {
                out.relocated += 1;
            }
        }
    }
    out
}

/// Compares two compiled sides.
pub fn diff_manifests(old: &ProgramSide, new: &ProgramSide) -> ManifestDiff {
    let (om, nm) = (&old.manifest, &new.manifest);
    let maps_o: BTreeMap<&str, &ManifestMap> =
        om.maps.iter().map(|m| (m.name.as_str(), m)).collect();
    let maps_n: BTreeMap<&str, &ManifestMap> =
        nm.maps.iter().map(|m| (m.name.as_str(), m)).collect();
    let names: BTreeSet<&str> = maps_o.keys().chain(maps_n.keys()).copied().collect();
    ManifestDiff {
        endpoints: diff_endpoints(old, new),
        identities: diff_identities(&manifest_identity_rows(om), &manifest_identity_rows(nm)),
        maps: names
            .into_iter()
            .filter_map(|n| diff_map(maps_o.get(n).copied(), maps_n.get(n).copied(), n))
            .collect(),
        rules: diff_rules(om, nm),
        tail_calls_changed: om.tail_calls != nm.tail_calls,
        inputs_digest_changed: om.inputs_digest != nm.inputs_digest,
        compiler_version_changed: om.compiler_version != nm.compiler_version,
    }
}
