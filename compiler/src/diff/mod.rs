//! `ciliumc diff`: what changes between two versions of the inputs, or of two compile outputs.
//!
//! In (inputs mode, [`diff_inputs`]): the front end's objects of OLD and NEW (already loaded and
//! free of errors). Both are resolved with the same [`ResolveOptions`] and compared:
//! - **connections** ([`semantic`]): for every pair of peers named as connlist names them
//!   (workloads `ns/name[Kind]`, external ranges `a-b[External]` cut at every prefix either side
//!   mentions, plus the entities `host`, `remote-node` and `kube-apiserver`), every protocol (TCP,
//!   UDP, SCTP, ICMP, ICMPv6) and port (ICMP: type) interval, the reference evaluator decides in OLD
//!   and in NEW; an interval whose verdict flips is newly allowed or newly denied. Each change
//!   carries its causes: the endpoint directions whose decision differs, with the deciding rules
//!   that appeared and disappeared (policy, section, index, source location) and whether their
//!   policy was added, removed or modified. Pairs involving a workload present on one side only
//!   are not connection changes (the workload is listed as added/removed instead);
//! - **objects** ([`objects`]): policies and other objects added, removed or modified, compared by
//!   kind/namespace/name and their normalized JSON (with the changed field paths);
//! - **programs** ([`programs`]): both sides compiled; endpoints whose object bytes differ or that
//!   appear/disappear, identity, map-entry and rule-table changes. A side that does not compile is
//!   a note, not an error: the semantic diff does not need it.
//!
//! In (outputs mode, [`diff_outputs`]): two `ciliumc compile` output directories. Only program and
//! manifest differences exist there; the report says so.
//!
//! Out: a [`DiffReport`] (serializable; deterministic order) and [`render`] as text, JSON or
//! markdown. [`DiffReport::has_changes`] drives the exit code: semantic (connection) changes in
//! inputs mode, any program or manifest change in outputs mode.

pub mod objects;
pub mod programs;
pub mod render;
pub mod semantic;

use std::path::Path;

use serde::Serialize;

use crate::frontend::LoadedObject;
use crate::resolve::{self, ResolveOptions};

pub use objects::{ObjectChange, ObjectChangeKind, ObjectDiff};
pub use programs::{EndpointProgramChange, IdentityDiff, ManifestDiff, ProgramChangeKind};
pub use render::{Format, render};
pub use semantic::{Cause, ChangeKind, ConnectionChange, Decision, RuleRef};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{side}: {source}")]
    Resolve {
        side: Side,
        source: resolve::ResolveError,
    },
    #[error("{side}: {message}")]
    Output { side: Side, message: String },
}

/// Which of the two inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Old,
    New,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Old => "OLD",
            Side::New => "NEW",
        })
    }
}

/// What was compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Input files: semantic, object and program differences.
    Inputs,
    /// Compile output directories: program and manifest differences only.
    Outputs,
}

#[derive(Debug, Clone)]
pub struct DiffOptions {
    pub resolve: ResolveOptions,
    /// Compile both sides to list endpoints whose programs change.
    pub compare_programs: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            resolve: ResolveOptions::default(),
            compare_programs: true,
        }
    }
}

/// Counts for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub newly_allowed: usize,
    pub newly_denied: usize,
    pub programs_changed: usize,
    pub policies_added: usize,
    pub policies_removed: usize,
    pub policies_modified: usize,
}

/// Workloads (connlist names) present on one side only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkloadDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub mode: Mode,
    pub summary: Summary,
    /// Sorted: newly allowed first, then by source, destination and connections.
    pub connections: Vec<ConnectionChange>,
    pub workloads: WorkloadDiff,
    pub policies: Vec<ObjectChange>,
    /// Non-policy objects (inventory, services).
    pub objects: Vec<ObjectChange>,
    /// `None` when a side could not be compiled (see `notes`).
    pub programs: Option<ManifestDiff>,
    pub identities: IdentityDiff,
    pub notes: Vec<String>,
}

impl DiffReport {
    /// Whether the exit code is 1: connection changes (inputs), any program or manifest change
    /// (outputs).
    pub fn has_changes(&self) -> bool {
        match self.mode {
            Mode::Inputs => !self.connections.is_empty(),
            Mode::Outputs => self
                .programs
                .as_ref()
                .is_some_and(ManifestDiff::has_changes),
        }
    }
}

/// Whether `path` is a compile output directory (it holds `manifest.json`).
pub fn is_output_dir(path: &Path) -> bool {
    path.is_dir() && path.join("manifest.json").is_file()
}

/// Compares two sets of loaded input objects.
pub fn diff_inputs(
    old: &[LoadedObject],
    new: &[LoadedObject],
    opts: &DiffOptions,
) -> Result<DiffReport, DiffError> {
    let old_cluster =
        resolve::resolve(old, &opts.resolve).map_err(|source| DiffError::Resolve {
            side: Side::Old,
            source,
        })?;
    let new_cluster =
        resolve::resolve(new, &opts.resolve).map_err(|source| DiffError::Resolve {
            side: Side::New,
            source,
        })?;
    let object_diff = objects::diff_objects(old, new);
    let semantic = semantic::diff_clusters(&old_cluster, &new_cluster, &object_diff);
    let identities = programs::diff_identities(
        &programs::identity_rows(&old_cluster),
        &programs::identity_rows(&new_cluster),
    );
    let mut notes = Vec::new();
    // Warnings both sides share are the unchanged background; list NEW's, and OLD's that went away.
    for (side, cluster, other) in [
        (Side::Old, &old_cluster, &new_cluster),
        (Side::New, &new_cluster, &old_cluster),
    ] {
        for w in &cluster.warnings {
            if side == Side::Old && other.warnings.contains(w) {
                continue;
            }
            notes.push(format!("{side}: warning: {}: {}", w.object, w.message));
        }
    }
    let programs = if opts.compare_programs {
        match (
            programs::compile_side(&old_cluster),
            programs::compile_side(&new_cluster),
        ) {
            (Ok(o), Ok(n)) => Some(programs::diff_manifests(&o, &n)),
            (o, n) => {
                for (side, r) in [(Side::Old, o.err()), (Side::New, n.err())] {
                    if let Some(e) = r {
                        notes.push(format!(
                            "{side} does not compile ({e}); program changes are not listed"
                        ));
                    }
                }
                None
            }
        }
    } else {
        None
    };
    let summary = summarize(&semantic.changes, programs.as_ref(), &object_diff.policies);
    Ok(DiffReport {
        mode: Mode::Inputs,
        summary,
        connections: semantic.changes,
        workloads: semantic.workloads,
        policies: object_diff.policies,
        objects: object_diff.others,
        programs,
        identities,
        notes,
    })
}

/// Compares two compile output directories.
pub fn diff_outputs(old_dir: &Path, new_dir: &Path) -> Result<DiffReport, DiffError> {
    let old = programs::read_output_dir(old_dir).map_err(|message| DiffError::Output {
        side: Side::Old,
        message,
    })?;
    let new = programs::read_output_dir(new_dir).map_err(|message| DiffError::Output {
        side: Side::New,
        message,
    })?;
    let diff = programs::diff_manifests(&old, &new);
    let identities = diff.identities.clone();
    let summary = summarize(&[], Some(&diff), &[]);
    Ok(DiffReport {
        mode: Mode::Outputs,
        summary,
        connections: Vec::new(),
        workloads: WorkloadDiff::default(),
        policies: Vec::new(),
        objects: Vec::new(),
        programs: Some(diff),
        identities,
        notes: vec![
            "OLD and NEW are compile outputs: only program and manifest differences can be shown \
             (no connections, no policy causes); diff the input files for those"
                .to_string(),
        ],
    })
}

fn summarize(
    changes: &[ConnectionChange],
    programs: Option<&ManifestDiff>,
    policies: &[ObjectChange],
) -> Summary {
    let count = |k: ObjectChangeKind| policies.iter().filter(|p| p.change == k).count();
    Summary {
        newly_allowed: changes
            .iter()
            .filter(|c| c.change == ChangeKind::Allowed)
            .count(),
        newly_denied: changes
            .iter()
            .filter(|c| c.change == ChangeKind::Denied)
            .count(),
        programs_changed: programs.map(|p| p.endpoints.len()).unwrap_or(0),
        policies_added: count(ObjectChangeKind::Added),
        policies_removed: count(ObjectChangeKind::Removed),
        policies_modified: count(ObjectChangeKind::Modified),
    }
}
