//! Deterministic, stable numbering of string keys inside an id range.
//!
//! In: the keys to number, the range, and optionally a previous assignment to keep. Out: key → id.
//! Each key starts at a slot given by a hash of the key (FNV-1a, fixed so that numbering never
//! depends on the Rust version) and probes linearly to the next free id; keys are placed in sorted
//! order, so the result depends only on the set of keys. Adding a key moves an existing key only
//! when the new key probes into that key's slot first (a hash collision: about n/range per added
//! key); keys present in `previous` keep their id exactly.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StableIdError {
    #[error("id range {lo}..={hi} is exhausted ({needed} ids needed)")]
    Exhausted { lo: u32, hi: u32, needed: usize },
}

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Numbers `keys` inside `lo..=hi`. Entries of `previous` whose id is in range and not taken twice
/// are kept; the other keys are hashed and probed.
pub fn allocate_stable_ids(
    keys: &BTreeSet<String>,
    lo: u32,
    hi: u32,
    previous: &BTreeMap<String, u32>,
) -> Result<BTreeMap<String, u32>, StableIdError> {
    let size = (hi - lo) as u64 + 1;
    if keys.len() as u64 > size {
        return Err(StableIdError::Exhausted {
            lo,
            hi,
            needed: keys.len(),
        });
    }
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut out = BTreeMap::new();
    for key in keys {
        if let Some(&id) = previous.get(key)
            && (lo..=hi).contains(&id)
            && taken.insert(id)
        {
            out.insert(key.clone(), id);
        }
    }
    for key in keys {
        if out.contains_key(key) {
            continue;
        }
        let mut slot = fnv1a(key.as_bytes()) % size;
        while taken.contains(&(lo + slot as u32)) {
            slot = (slot + 1) % size;
        }
        let id = lo + slot as u32;
        taken.insert(id);
        out.insert(key.clone(), id);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn adding_keys_keeps_existing_ids_without_collision() {
        let a = allocate_stable_ids(&keys(&["a", "b", "c"]), 256, 65535, &BTreeMap::new()).unwrap();
        let b = allocate_stable_ids(
            &keys(&["a", "b", "c", "d", "e"]),
            256,
            65535,
            &BTreeMap::new(),
        )
        .unwrap();
        for (k, v) in &a {
            assert_eq!(b[k], *v);
        }
    }

    #[test]
    fn collisions_probe_and_previous_pins() {
        // A range of 2 forces collisions.
        let a = allocate_stable_ids(&keys(&["x", "y"]), 10, 11, &BTreeMap::new()).unwrap();
        let ids: BTreeSet<u32> = a.values().copied().collect();
        assert_eq!(ids, [10, 11].into_iter().collect());
        let pinned: BTreeMap<String, u32> = [("y".to_string(), 10)].into_iter().collect();
        let b = allocate_stable_ids(&keys(&["x", "y"]), 10, 11, &pinned).unwrap();
        assert_eq!(b["y"], 10);
        assert_eq!(b["x"], 11);
        assert!(allocate_stable_ids(&keys(&["x", "y", "z"]), 10, 11, &BTreeMap::new()).is_err());
    }
}
