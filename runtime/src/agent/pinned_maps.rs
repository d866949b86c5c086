//! The maps shared by all objects and generations (pinned by name): their layout is checked
//! against a new generation before anything is loaded, and their entries are written as a diff
//! against the previous generation.
//!
//! In: the pin directory of the maps, the new and the previous manifest. Out: the set of maps
//! that were pinned before the apply, the number of entries written and deleted, or
//! [`AgentError::LayoutChanged`] / [`AgentError::Map`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aya::maps::MapData;
use ciliumc_ir::manifest::{Manifest, ManifestMap};

use super::datapath::AgentError;
use super::load;
use super::output::is_pinned;
use super::sys;

/// Manifest type name → the kernel's, as aya's `MapType` prints it without underscores.
fn normalized_type(t: &str) -> String {
    let t = t.to_ascii_lowercase().replace('_', "");
    match t.as_str() {
        "progarray" => "programarray".into(),
        "lruhashmap" => "lruhash".into(),
        "hashmap" => "hash".into(),
        _ => t,
    }
}

fn layout(t: &str, k: u32, v: u32, n: u32) -> String {
    format!("type {t}, key {k} B, value {v} B, max_entries {n}")
}

/// Refuses a generation whose pinned maps differ in layout from the pinned ones. Returns the
/// names of the maps that were pinned before this apply.
pub fn check_pinned_layouts(
    maps_dir: &Path,
    maps: &[ManifestMap],
) -> Result<BTreeSet<String>, AgentError> {
    let mut existing = BTreeSet::new();
    for m in maps.iter().filter(|m| is_pinned(m)) {
        let path = maps_dir.join(&m.name);
        if !path.exists() {
            continue;
        }
        let data = MapData::from_pin(&path).map_err(|e| AgentError::Map {
            name: m.name.clone(),
            detail: load::error_chain(&e),
        })?;
        let info = data.info().map_err(|e| AgentError::Map {
            name: m.name.clone(),
            detail: load::error_chain(&e),
        })?;
        let ptype = info
            .map_type()
            .map(|t| format!("{t:?}"))
            .unwrap_or_else(|_| "unknown".into());
        let same = normalized_type(&ptype) == normalized_type(&m.map_type)
            && info.key_size() == m.key_size
            && info.value_size() == m.value_size
            && info.max_entries() == m.max_entries;
        if !same {
            return Err(AgentError::LayoutChanged {
                name: m.name.clone(),
                pinned: layout(
                    &ptype,
                    info.key_size(),
                    info.value_size(),
                    info.max_entries(),
                ),
                wanted: layout(&m.map_type, m.key_size, m.value_size, m.max_entries),
            });
        }
        existing.insert(m.name.clone());
    }
    Ok(existing)
}

/// Writes the difference between the previous and the new entries of every pinned map (all
/// entries for a map that was created by this apply).
pub fn sync_pinned_maps(
    maps_dir: &Path,
    manifest: &Manifest,
    previous: Option<&Manifest>,
    preexisting: &BTreeSet<String>,
) -> Result<(usize, usize), AgentError> {
    let (mut updates, mut deletes) = (0, 0);
    for m in manifest.maps.iter().filter(|m| is_pinned(m)) {
        let path = maps_dir.join(&m.name);
        if !path.exists() {
            if m.entries.is_empty() {
                continue;
            }
            return Err(AgentError::Map {
                name: m.name.clone(),
                detail: "has entries but no object declares it".into(),
            });
        }
        let old: BTreeMap<&str, &str> = if preexisting.contains(&m.name) {
            previous
                .and_then(|p| p.maps.iter().find(|x| x.name == m.name))
                .map(|x| {
                    x.entries
                        .iter()
                        .map(|e| (e.key.as_str(), e.value.as_str()))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            BTreeMap::new()
        };
        let new: BTreeMap<&str, &str> = m
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        if old == new {
            continue;
        }
        let data = MapData::from_pin(&path).map_err(|e| AgentError::Map {
            name: m.name.clone(),
            detail: load::error_chain(&e),
        })?;
        let fd = std::os::fd::AsFd::as_fd(data.fd());
        let bad = |detail: String| AgentError::Map {
            name: m.name.clone(),
            detail,
        };
        // Additions and changes before removals: a lookup never misses an address that stays.
        for (k, v) in &new {
            if old.get(k) != Some(v) {
                let (kb, vb) = (hex::decode(k), hex::decode(v));
                let (Ok(kb), Ok(vb)) = (kb, vb) else {
                    return Err(bad("entry is not hex".into()));
                };
                sys::map_update(fd, &kb, &vb).map_err(|e| bad(e.to_string()))?;
                updates += 1;
            }
        }
        for k in old.keys().filter(|k| !new.contains_key(*k)) {
            let kb = hex::decode(k).map_err(|e| bad(e.to_string()))?;
            sys::map_delete(fd, &kb).map_err(|e| bad(e.to_string()))?;
            deletes += 1;
        }
    }
    Ok((updates, deletes))
}
