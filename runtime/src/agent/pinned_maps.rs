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
use crate::testrun::{IPCACHE_BUCKETS, IPCACHE_INFO};

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

/// The `buckets` word of `ciliumc_ipcinfo`'s entry 0 (`docs/datapath.md`).
const IPCACHE_INFO_BUCKETS: std::ops::Range<usize> = 8..12;

/// One write to a pinned map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapWrite {
    pub map: String,
    pub key: Vec<u8>,
    pub op: WriteOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Update(Vec<u8>),
    /// Removed from a hash or trie; an array's entries always exist and are zeroed instead.
    Delete,
    /// Not a write: wait until every program that may have read `map` before this point has
    /// returned (an RCU grace period, `sys::wait_for_bpf_readers`).
    WaitForReaders,
}

/// Writes the difference between the previous and the new entries of every pinned map (all
/// entries for a map that was created by this apply), in the order [`plan_writes`] gives.
/// Returns the number of entries written and deleted.
pub fn sync_pinned_maps(
    maps_dir: &Path,
    manifest: &Manifest,
    previous: Option<&Manifest>,
    preexisting: &BTreeSet<String>,
) -> Result<(usize, usize), AgentError> {
    let writes = plan_writes(manifest, previous, preexisting, |name: &str| {
        maps_dir.join(name).exists()
    })?;
    let mut open: BTreeMap<&str, MapData> = BTreeMap::new();
    let (mut updates, mut deletes) = (0, 0);
    for w in &writes {
        let bad = |detail: String| AgentError::Map {
            name: w.map.clone(),
            detail,
        };
        if w.op == WriteOp::WaitForReaders {
            if let Err(e) = sys::wait_for_bpf_readers() {
                // membarrier is refused with nohz_full: programs run for microseconds, so a
                // pause far longer than any of them stands in for the grace period.
                tracing::warn!(error = %e, "membarrier refused; pausing 10 ms for BPF readers");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            continue;
        }
        if !open.contains_key(w.map.as_str()) {
            let data =
                MapData::from_pin(maps_dir.join(&w.map)).map_err(|e| bad(load::error_chain(&e)))?;
            open.insert(&w.map, data);
        }
        let Some(data) = open.get(w.map.as_str()) else {
            continue;
        };
        let fd = std::os::fd::AsFd::as_fd(data.fd());
        match &w.op {
            WriteOp::Update(value) => {
                sys::map_update(fd, &w.key, value).map_err(|e| bad(e.to_string()))?;
                updates += 1;
            }
            WriteOp::Delete => {
                sys::map_delete(fd, &w.key).map_err(|e| bad(e.to_string()))?;
                deletes += 1;
            }
            WriteOp::WaitForReaders => {}
        }
    }
    Ok((updates, deletes))
}

/// The writes that take the pinned maps (those for which `pinned` is true) from `previous`'s
/// entries to `manifest`'s, in order: map by map, additions and changes before removals, so a
/// lookup never misses an address that stays.
///
/// The bucket arrays are rewritten in place, a bucket at a time, and a program reading a bucket
/// being written could miss an address that stays. So when a bucket changes, the first write sets
/// the `buckets` word of `ciliumc_ipcinfo` to 0 (programs then ask the exact-match maps, which
/// stay complete throughout), then the plan waits for the programs that read the word before it
/// changed to return, and the new `ciliumc_ipcinfo` is written last, in full.
pub fn plan_writes(
    manifest: &Manifest,
    previous: Option<&Manifest>,
    preexisting: &BTreeSet<String>,
    pinned: impl Fn(&str) -> bool,
) -> Result<Vec<MapWrite>, AgentError> {
    let mut maps = Vec::new();
    for m in manifest.maps.iter().filter(|m| is_pinned(m)) {
        if !pinned(&m.name) {
            if m.entries.is_empty() {
                continue;
            }
            return Err(AgentError::Map {
                name: m.name.clone(),
                detail: "has entries but no object declares it".into(),
            });
        }
        let old = if preexisting.contains(&m.name) {
            previous
                .and_then(|p| p.maps.iter().find(|x| x.name == m.name))
                .map(decoded)
                .transpose()?
                .unwrap_or_default()
        } else {
            BTreeMap::new()
        };
        maps.push((m, old, decoded(m)?));
    }
    let buckets_change = maps
        .iter()
        .any(|(m, old, new)| IPCACHE_BUCKETS.contains(&m.name.as_str()) && old != new);
    let mut writes = Vec::new();
    let info_at = maps
        .iter()
        .position(|(m, ..)| m.name == IPCACHE_INFO && m.map_type == "array");
    if let (true, Some(at)) = (buckets_change, info_at) {
        let (m, old, new) = maps.remove(at);
        for (key, value) in &old {
            let mut value = value.clone();
            if let Some(word) = value.get_mut(IPCACHE_INFO_BUCKETS) {
                word.fill(0);
            }
            writes.push(MapWrite {
                map: m.name.clone(),
                key: key.clone(),
                op: WriteOp::Update(value),
            });
        }
        if !old.is_empty() {
            writes.push(MapWrite {
                map: m.name.clone(),
                key: Vec::new(),
                op: WriteOp::WaitForReaders,
            });
        }
        // Written in full at the end: its entry may be unchanged, but the writes above changed
        // what the map holds.
        maps.push((m, BTreeMap::new(), new));
    }
    for (m, old, new) in &maps {
        for (key, value) in new {
            if old.get(key) != Some(value) {
                writes.push(MapWrite {
                    map: m.name.clone(),
                    key: key.clone(),
                    op: WriteOp::Update(value.clone()),
                });
            }
        }
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            let op = if m.map_type == "array" {
                WriteOp::Update(vec![0; m.value_size as usize])
            } else {
                WriteOp::Delete
            };
            writes.push(MapWrite {
                map: m.name.clone(),
                key: key.clone(),
                op,
            });
        }
    }
    Ok(writes)
}

type Decoded = BTreeMap<Vec<u8>, Vec<u8>>;

fn decoded(m: &ManifestMap) -> Result<Decoded, AgentError> {
    m.entries
        .iter()
        .map(|e| match (hex::decode(&e.key), hex::decode(&e.value)) {
            (Ok(k), Ok(v)) => Ok((k, v)),
            _ => Err(AgentError::Map {
                name: m.name.clone(),
                detail: "entry is not hex".into(),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciliumc_ir::manifest::MapEntry;

    fn map(name: &str, map_type: &str, value_size: u32, entries: &[(u32, Vec<u8>)]) -> ManifestMap {
        ManifestMap {
            name: name.into(),
            map_type: map_type.into(),
            key_size: 4,
            value_size,
            max_entries: 16,
            flags: 0,
            pinning: "by_name".into(),
            entries: entries
                .iter()
                .map(|(k, v)| MapEntry {
                    key: hex::encode(k.to_le_bytes()),
                    value: hex::encode(v),
                })
                .collect(),
        }
    }

    fn info(v4_prefixes: u8) -> Vec<u8> {
        let mut v = vec![0; 16];
        v[0] = v4_prefixes;
        v[8] = 1;
        v
    }

    fn manifest(maps: Vec<ManifestMap>) -> Manifest {
        Manifest {
            format: "ciliumc/v1".into(),
            inputs_digest: String::new(),
            compiler_version: String::new(),
            identities: Vec::new(),
            endpoints: Vec::new(),
            maps,
            tail_calls: Vec::new(),
            rules: Vec::new(),
        }
    }

    fn generation(bucket: Option<Vec<u8>>, hash: &[u32]) -> Manifest {
        let buckets: Vec<(u32, Vec<u8>)> = bucket.into_iter().map(|b| (3, b)).collect();
        let hash: Vec<(u32, Vec<u8>)> = hash.iter().map(|k| (*k, vec![7; 8])).collect();
        manifest(vec![
            map("ciliumc_ipc4", "hash", 8, &hash),
            map(IPCACHE_BUCKETS[0], "array", 8, &buckets),
            map(IPCACHE_INFO, "array", 16, &[(0, info(0))]),
        ])
    }

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn buckets_are_off_while_they_change() {
        let old = generation(Some(vec![1; 8]), &[1, 2]);
        let new = generation(Some(vec![2; 8]), &[2, 3]);
        let pre: BTreeSet<String> = old.maps.iter().map(|m| m.name.clone()).collect();
        let writes = plan_writes(&new, Some(&old), &pre, all).expect("plan");
        let first = &writes[0];
        assert_eq!(first.map, IPCACHE_INFO);
        let WriteOp::Update(v) = &first.op else {
            panic!("first write: {first:?}");
        };
        assert_eq!(&v[8..12], &[0; 4], "buckets off first");
        assert_eq!(
            writes[1].op,
            WriteOp::WaitForReaders,
            "then the programs that read the flag return"
        );
        let last = writes.last().expect("writes");
        assert_eq!(
            (last.map.as_str(), &last.op),
            (IPCACHE_INFO, &WriteOp::Update(info(0)))
        );
        let bucket_at = writes
            .iter()
            .position(|w| w.map == IPCACHE_BUCKETS[0])
            .expect("bucket write");
        assert!(1 < bucket_at && bucket_at < writes.len() - 1);
        // The hash map: 3 added before 1 is deleted.
        let hash: Vec<&MapWrite> = writes.iter().filter(|w| w.map == "ciliumc_ipc4").collect();
        assert_eq!(hash[0].op, WriteOp::Update(vec![7; 8]));
        assert_eq!(hash[1].op, WriteOp::Delete);
    }

    #[test]
    fn unchanged_buckets_leave_the_flag_alone_and_a_removed_bucket_is_zeroed() {
        let old = generation(Some(vec![1; 8]), &[1]);
        let same = plan_writes(
            &generation(Some(vec![1; 8]), &[1, 2]),
            Some(&old),
            &old.maps.iter().map(|m| m.name.clone()).collect(),
            all,
        )
        .expect("plan");
        assert!(same.iter().all(|w| w.map == "ciliumc_ipc4"), "{same:?}");
        let emptied = plan_writes(
            &generation(None, &[1]),
            Some(&old),
            &old.maps.iter().map(|m| m.name.clone()).collect(),
            all,
        )
        .expect("plan");
        let bucket: Vec<&MapWrite> = emptied
            .iter()
            .filter(|w| w.map == IPCACHE_BUCKETS[0])
            .collect();
        assert_eq!(bucket.len(), 1);
        assert_eq!(
            bucket[0].op,
            WriteOp::Update(vec![0; 8]),
            "zeroed, not deleted"
        );
    }

    #[test]
    fn a_first_apply_writes_the_flag_last() {
        let new = generation(Some(vec![1; 8]), &[1]);
        let writes = plan_writes(&new, None, &BTreeSet::new(), all).expect("plan");
        assert_eq!(writes.last().map(|w| w.map.as_str()), Some(IPCACHE_INFO));
        // Nothing read the flag before: no suspension, no wait.
        assert_eq!(writes.iter().filter(|w| w.map == IPCACHE_INFO).count(), 1);
    }
}
