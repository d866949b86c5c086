//! Userspace models of the kernel map types the policy programs use, with the kernel's update and
//! delete semantics (flags, return codes, capacity).
//!
//! In: a map's definition (type, key/value sizes, max entries) and key/value bytes from the
//! program (helpers) or from the loader (initial entries). Out: value handles ([`ValueId`]) that
//! the VM's memory maps to the stored bytes, so a program can write through a looked-up pointer as
//! it does in the kernel, plus ring-buffer records.
//!
//! Simplifications (documented in `docs/trace-vm.md`): per-CPU maps hold one CPU's value; the
//! LRU hash evicts exactly the least recently used entry when full (the kernel evicts
//! approximately, per-CPU list batches); the LPM trie is a set of masked prefixes probed from the
//! longest present length down (same answers as the kernel's trie, different complexity).

use std::collections::{BTreeSet, HashMap};

use super::VmError;
use super::ringbuf::RingBuf;
use crate::elf::MapType;

/// `bpf_map_update_elem` flags.
pub const BPF_ANY: u64 = 0;
pub const BPF_NOEXIST: u64 = 1;
pub const BPF_EXIST: u64 = 2;

/// Errno values the helpers return (negated).
pub const ENOENT: i64 = 2;
pub const E2BIG: i64 = 7;
pub const EAGAIN: i64 = 11;
pub const EFAULT: i64 = 14;
pub const EEXIST: i64 = 17;
pub const EINVAL: i64 = 22;
pub const ENOSPC: i64 = 28;

/// The VM models every map type ciliumc emits ([`MapType`], ids from [`MapType::from_id`]).
impl MapType {
    fn is_array(self) -> bool {
        matches!(self, MapType::Array | MapType::PercpuArray)
    }

    fn is_lru(self) -> bool {
        matches!(self, MapType::LruHash | MapType::LruPercpuHash)
    }
}

/// A stored value: the VM turns it into a pointer the program may read and write.
pub type ValueId = u64;

/// An entry of a hash-like store.
#[derive(Clone, Debug)]
struct Slot {
    id: ValueId,
    last_used: u64,
}

/// One map.
#[derive(Clone, Debug)]
pub struct UserMap {
    pub name: String,
    pub kind: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// Key (for the LPM trie: prefix length and masked data) → value slot.
    index: HashMap<Vec<u8>, Slot>,
    values: HashMap<ValueId, Vec<u8>>,
    next_id: ValueId,
    clock: u64,
    /// Prefix lengths present in the LPM trie, to probe longest first.
    prefix_lengths: BTreeSet<u32>,
    /// Prog-array slots: index → program name.
    programs: HashMap<u32, String>,
    ring: Option<RingBuf>,
}

impl UserMap {
    pub fn new(
        name: &str,
        kind: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> Result<UserMap, VmError> {
        let bad = |reason: &str| VmError::BadMap {
            map: name.to_string(),
            reason: reason.to_string(),
        };
        match kind {
            MapType::Array | MapType::PercpuArray | MapType::ProgArray if key_size != 4 => {
                return Err(bad("array key size must be 4"));
            }
            MapType::LpmTrie if key_size <= 4 => {
                return Err(bad("LPM trie key must hold a u32 prefix length and data"));
            }
            MapType::RingBuf if !max_entries.is_power_of_two() => {
                return Err(bad("ring buffer size must be a power of two"));
            }
            _ => {}
        }
        let ring = (kind == MapType::RingBuf).then(|| RingBuf::new(u64::from(max_entries)));
        Ok(UserMap {
            name: name.to_string(),
            kind,
            key_size,
            value_size,
            max_entries,
            index: HashMap::new(),
            values: HashMap::new(),
            next_id: 0,
            clock: 0,
            prefix_lengths: BTreeSet::new(),
            programs: HashMap::new(),
            ring,
        })
    }

    /// Entries stored (for arrays: elements written at least once).
    pub fn len(&self) -> usize {
        if self.kind.is_array() {
            self.values.len()
        } else {
            self.index.len()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ring buffer of a `RINGBUF` map.
    pub fn ring(&self) -> Option<&RingBuf> {
        self.ring.as_ref()
    }

    pub(crate) fn ring_mut(&mut self) -> Option<&mut RingBuf> {
        self.ring.as_mut()
    }

    /// The bytes behind a handle [`UserMap::lookup`] returned.
    pub fn value(&self, id: ValueId) -> Option<&[u8]> {
        self.values.get(&id).map(Vec::as_slice)
    }

    /// Bytes of a stored value (a pointer the program holds resolves through this).
    pub(crate) fn value_mut(&mut self, id: ValueId) -> Option<&mut Vec<u8>> {
        self.values.get_mut(&id)
    }

    fn array_index(&self, key: &[u8]) -> Option<u32> {
        let k = u32::from_le_bytes(key.get(..4)?.try_into().ok()?);
        (k < self.max_entries).then_some(k)
    }

    /// LPM trie: the prefix length of `key` and its data masked to that length, or `None` when the
    /// prefix length exceeds the data.
    fn lpm_canonical(&self, key: &[u8], prefixlen: u32) -> Option<Vec<u8>> {
        let data = key.get(4..)?;
        if prefixlen as usize > data.len() * 8 {
            return None;
        }
        let mut out = prefixlen.to_le_bytes().to_vec();
        out.extend(data.iter().enumerate().map(|(i, b)| {
            let bit = i as u32 * 8;
            if bit + 8 <= prefixlen {
                *b
            } else if bit >= prefixlen {
                0
            } else {
                b & (0xffu8 << (8 - (prefixlen - bit)))
            }
        }));
        Some(out)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), i64> {
        if key.len() != self.key_size as usize {
            return Err(-EINVAL);
        }
        Ok(())
    }

    /// `bpf_map_lookup_elem`: the value, or `None`. For an array the element exists (zeroed) for
    /// every index below `max_entries`; an LRU lookup marks the entry used.
    pub fn lookup(&mut self, key: &[u8]) -> Option<ValueId> {
        if self.check_key(key).is_err() {
            return None;
        }
        self.clock += 1;
        match self.kind {
            MapType::Array | MapType::PercpuArray => {
                let i = self.array_index(key)?;
                let size = self.value_size as usize;
                self.values
                    .entry(u64::from(i))
                    .or_insert_with(|| vec![0; size]);
                Some(u64::from(i))
            }
            MapType::LpmTrie => {
                let wanted = u32::from_le_bytes(key.get(..4)?.try_into().ok()?);
                let lengths: Vec<u32> = self
                    .prefix_lengths
                    .range(..=wanted)
                    .rev()
                    .copied()
                    .collect();
                lengths.into_iter().find_map(|len| {
                    let k = self.lpm_canonical(key, len)?;
                    self.index.get(&k).map(|s| s.id)
                })
            }
            MapType::ProgArray | MapType::RingBuf => None,
            _ => {
                let clock = self.clock;
                let slot = self.index.get_mut(key)?;
                slot.last_used = clock;
                Some(slot.id)
            }
        }
    }

    /// The bytes stored under `key`, for tests and tools (no LRU side effect, exact key).
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        match self.kind {
            MapType::Array | MapType::PercpuArray => {
                let i = self.array_index(key)?;
                self.values.get(&u64::from(i)).map(Vec::as_slice)
            }
            MapType::LpmTrie => {
                let len = u32::from_le_bytes(key.get(..4)?.try_into().ok()?);
                let k = self.lpm_canonical(key, len)?;
                let slot = self.index.get(&k)?;
                self.values.get(&slot.id).map(Vec::as_slice)
            }
            _ => {
                let slot = self.index.get(key)?;
                self.values.get(&slot.id).map(Vec::as_slice)
            }
        }
    }

    /// Keys stored (sorted, for deterministic output).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = if self.kind.is_array() {
            self.values
                .keys()
                .map(|i| (*i as u32).to_le_bytes().to_vec())
                .collect()
        } else {
            self.index.keys().cloned().collect()
        };
        keys.sort();
        keys
    }

    /// `bpf_map_update_elem`: 0 or a negative errno, as the kernel returns.
    pub fn update(&mut self, key: &[u8], value: &[u8], flags: u64) -> i64 {
        if let Err(e) = self.check_key(key) {
            return e;
        }
        if value.len() != self.value_size as usize {
            return -EINVAL;
        }
        if flags > BPF_EXIST {
            return -EINVAL;
        }
        self.clock += 1;
        match self.kind {
            MapType::Array | MapType::PercpuArray => {
                let Some(i) = self.array_index(key) else {
                    return -E2BIG;
                };
                if flags == BPF_NOEXIST {
                    return -EEXIST;
                }
                self.values.insert(u64::from(i), value.to_vec());
                0
            }
            MapType::ProgArray | MapType::RingBuf => -EINVAL,
            MapType::LpmTrie => {
                let Some(len) = key.get(..4).and_then(|b| b.try_into().ok()) else {
                    return -EINVAL;
                };
                let len = u32::from_le_bytes(len);
                let Some(k) = self.lpm_canonical(key, len) else {
                    return -EINVAL;
                };
                let status = self.store(k, value, flags, false);
                if status == 0 {
                    self.prefix_lengths.insert(len);
                }
                status
            }
            kind => self.store(key.to_vec(), value, flags, kind.is_lru()),
        }
    }

    fn store(&mut self, key: Vec<u8>, value: &[u8], flags: u64, lru: bool) -> i64 {
        if let Some(slot) = self.index.get_mut(&key) {
            if flags == BPF_NOEXIST {
                return -EEXIST;
            }
            slot.last_used = self.clock;
            let id = slot.id;
            self.values.insert(id, value.to_vec());
            return 0;
        }
        if flags == BPF_EXIST {
            return -ENOENT;
        }
        if self.index.len() >= self.max_entries as usize {
            if !lru {
                return if self.kind == MapType::LpmTrie {
                    -ENOSPC
                } else {
                    -E2BIG
                };
            }
            self.evict_least_recent();
        }
        let id = self.next_id;
        self.next_id += 1;
        self.values.insert(id, value.to_vec());
        self.index.insert(
            key,
            Slot {
                id,
                last_used: self.clock,
            },
        );
        0
    }

    fn evict_least_recent(&mut self) {
        let victim = self
            .index
            .iter()
            .min_by_key(|(_, s)| s.last_used)
            .map(|(k, _)| k.clone());
        if let Some(k) = victim
            && let Some(slot) = self.index.remove(&k)
        {
            self.values.remove(&slot.id);
        }
    }

    /// `bpf_map_delete_elem`: 0, `-ENOENT`, or `-EINVAL` for arrays.
    pub fn delete(&mut self, key: &[u8]) -> i64 {
        if let Err(e) = self.check_key(key) {
            return e;
        }
        let key = match self.kind {
            MapType::Array | MapType::PercpuArray | MapType::ProgArray | MapType::RingBuf => {
                return -EINVAL;
            }
            MapType::LpmTrie => {
                let Some(len) = key.get(..4).and_then(|b| b.try_into().ok()) else {
                    return -EINVAL;
                };
                let len = u32::from_le_bytes(len);
                match self.lpm_canonical(key, len) {
                    Some(k) => k,
                    None => return -EINVAL,
                }
            }
            _ => key.to_vec(),
        };
        match self.index.remove(&key) {
            Some(slot) => {
                self.values.remove(&slot.id);
                if self.kind == MapType::LpmTrie {
                    let len = u32::from_le_bytes([key[0], key[1], key[2], key[3]]);
                    if !self.index.keys().any(|k| k[..4] == key[..4]) {
                        self.prefix_lengths.remove(&len);
                    }
                }
                0
            }
            None => -ENOENT,
        }
    }

    /// Removes every entry (arrays: back to zero).
    pub fn clear(&mut self) {
        self.index.clear();
        self.values.clear();
        self.prefix_lengths.clear();
        self.programs.clear();
    }

    /// Puts `program` (a program name of the same object) into prog-array slot `index`.
    pub fn set_program(&mut self, index: u32, program: &str) -> Result<(), VmError> {
        if self.kind != MapType::ProgArray || index >= self.max_entries {
            return Err(VmError::BadMap {
                map: self.name.clone(),
                reason: format!("slot {index} is not a prog-array slot"),
            });
        }
        self.programs.insert(index, program.to_string());
        Ok(())
    }

    /// The program in prog-array slot `index`.
    pub fn program(&self, index: u32) -> Option<&str> {
        self.programs.get(&index).map(String::as_str)
    }

    /// A loader's initial entry: the value may be given for one CPU or, for per-CPU maps, as the
    /// kernel's user-space layout (one 8-byte-aligned value per CPU; the first is kept).
    pub fn insert_initial(&mut self, key: &[u8], value: &[u8]) -> Result<(), VmError> {
        let size = self.value_size as usize;
        let per_cpu = matches!(
            self.kind,
            MapType::PercpuArray | MapType::PercpuHash | MapType::LruPercpuHash
        );
        let stride = size.div_ceil(8) * 8;
        let value =
            if per_cpu && value.len() != size && stride > 0 && value.len().is_multiple_of(stride) {
                &value[..size]
            } else {
                value
            };
        match self.update(key, value, BPF_ANY) {
            0 => Ok(()),
            e => Err(VmError::BadMap {
                map: self.name.clone(),
                reason: format!(
                    "initial entry with a {}-byte key and {}-byte value refused (errno {})",
                    key.len(),
                    value.len(),
                    -e
                ),
            }),
        }
    }
}
