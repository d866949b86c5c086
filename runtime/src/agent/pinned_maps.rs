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

/// The ipcache's bucket arrays and the map whose `buckets` word (bytes 8..12 of its entry 0)
/// tells programs to trust them (the compiler's `lower::maps`, `docs/datapath.md`).
const IPCACHE_BUCKETS: [&str; 2] = ["ciliumc_ipc4bkt", "ciliumc_ipc6bkt"];
const IPCACHE_INFO: &str = "ciliumc_ipcinfo";
const IPCACHE_INFO_BUCKETS: std::ops::Range<usize> = 8..12;

/// Writes the difference between the previous and the new entries of every pinned map (all
/// entries for a map that was created by this apply).
///
/// The bucket arrays are rewritten in place, a bucket at a time, and a program reading a bucket
/// being written could miss an address that stays. So before any bucket changes, the
/// `buckets` word of `ciliumc_ipcinfo` goes to 0 (programs then ask the exact-match maps, which
/// are updated additions first), and the new `ciliumc_ipcinfo` is written after every other map.
pub fn sync_pinned_maps(
    maps_dir: &Path,
    manifest: &Manifest,
    previous: Option<&Manifest>,
    preexisting: &BTreeSet<String>,
) -> Result<(usize, usize), AgentError> {
    let mut plan = Vec::new();
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
        plan.push((m, path, old, new));
    }
    let buckets_change = plan
        .iter()
        .any(|(m, _, old, new)| IPCACHE_BUCKETS.contains(&m.name.as_str()) && old != new);
    let info_at = plan
        .iter()
        .position(|(m, ..)| m.name == IPCACHE_INFO && m.map_type == "array");
    let mut info_last = None;
    if let (true, Some(at)) = (buckets_change, info_at) {
        let (m, path, old, new) = plan.remove(at);
        suspend_buckets(m, &path, &old)?;
        // Written in full: its entry may be what it was, but the suspension changed it.
        info_last = Some((m, path, BTreeMap::new(), new));
    }
    let (mut updates, mut deletes) = (0, 0);
    for (m, path, old, new) in plan.iter().chain(info_last.iter()) {
        let (u, d) = write_difference(m, path, old, new)?;
        updates += u;
        deletes += d;
    }
    Ok((updates, deletes))
}

fn map_error(m: &ManifestMap) -> impl Fn(String) -> AgentError + '_ {
    move |detail| AgentError::Map {
        name: m.name.clone(),
        detail,
    }
}

fn open_pinned(m: &ManifestMap, path: &Path) -> Result<MapData, AgentError> {
    MapData::from_pin(path).map_err(|e| map_error(m)(load::error_chain(&e)))
}

/// Writes the pinned `ciliumc_ipcinfo` entries of the previous generation with `buckets` = 0.
fn suspend_buckets(
    m: &ManifestMap,
    path: &Path,
    old: &BTreeMap<&str, &str>,
) -> Result<(), AgentError> {
    let data = open_pinned(m, path)?;
    let fd = std::os::fd::AsFd::as_fd(data.fd());
    let bad = map_error(m);
    for (k, v) in old {
        let (Ok(kb), Ok(mut vb)) = (hex::decode(k), hex::decode(v)) else {
            return Err(bad("entry is not hex".into()));
        };
        if let Some(word) = vb.get_mut(IPCACHE_INFO_BUCKETS) {
            word.fill(0);
        }
        sys::map_update(fd, &kb, &vb).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// Writes `new`'s entries that `old` does not have, then removes `old`'s others: deleted from a
/// hash or trie, zeroed in an array (whose entries always exist).
fn write_difference(
    m: &ManifestMap,
    path: &Path,
    old: &BTreeMap<&str, &str>,
    new: &BTreeMap<&str, &str>,
) -> Result<(usize, usize), AgentError> {
    if old == new {
        return Ok((0, 0));
    }
    let data = open_pinned(m, path)?;
    let fd = std::os::fd::AsFd::as_fd(data.fd());
    let bad = map_error(m);
    let (mut updates, mut deletes) = (0, 0);
    // Additions and changes before removals: a lookup never misses an address that stays.
    for (k, v) in new {
        if old.get(k) != Some(v) {
            let (Ok(kb), Ok(vb)) = (hex::decode(k), hex::decode(v)) else {
                return Err(bad("entry is not hex".into()));
            };
            sys::map_update(fd, &kb, &vb).map_err(|e| bad(e.to_string()))?;
            updates += 1;
        }
    }
    let zeroed = vec![0u8; m.value_size as usize];
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        let kb = hex::decode(k).map_err(|e| bad(e.to_string()))?;
        if m.map_type == "array" {
            sys::map_update(fd, &kb, &zeroed)
        } else {
            sys::map_delete(fd, &kb)
        }
        .map_err(|e| bad(e.to_string()))?;
        deletes += 1;
    }
    Ok((updates, deletes))
}
