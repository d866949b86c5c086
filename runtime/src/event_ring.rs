//! The reader side of the per-CPU event rings in the `ciliumc_events` array.
//!
//! In: the array (pinned, or an open map), mapped into memory with `mmap`, or any other
//! [`RingMemory`] (the interpreter's copy of the map). Out: each complete record's 64 event bytes,
//! in order per CPU, and the number of records overwritten before they were read.
//!
//! Layout (`docs/datapath.md`, written by the compiler's `lower::events`): CPU `c` owns slots
//! `c * RING_STRIDE ..` of `SLOT_BYTES` each. Its first slot is the header: `u64 head` (records
//! the CPU ever wrote; written by programs) and `u64 tail` (records consumed; written by the
//! reader, so a later reader resumes where the last one stopped). Record `n` lives in slot
//! `1 + n % RING_RECORDS` as `u64 seq` (`n + 1` once complete, 0 while being written) followed by
//! the event.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use aya::maps::MapData;

use crate::events::EVENT_SIZE;

/// The array of per-CPU rings (the compiler's `lower::maps::EVENTS`).
pub const EVENTS: &str = "ciliumc_events";
/// Records in each CPU's ring (the compiler's `lower::maps::EVENT_RING_RECORDS`).
pub const RING_RECORDS: u64 = 4096;
/// Slots per CPU: the header and the records.
pub const RING_STRIDE: u64 = RING_RECORDS + 1;
/// Bytes per slot: `u64 seq` and the event.
pub const SLOT_BYTES: usize = 8 + EVENT_SIZE;

/// Offsets in a ring's header slot: records written (by programs), records consumed (by the
/// reader).
pub const HEAD: usize = 0;
pub const TAIL: usize = 8;

/// Memory holding the rings: the mapped array, or a copy of it.
pub trait RingMemory {
    /// Slots in the array.
    fn slots(&self) -> u64;
    /// The `u64` at byte `off` of `slot`, read with acquire ordering.
    fn load(&self, slot: u64, off: usize) -> u64;
    /// Stores the reader's `u64` at byte `off` of `slot`.
    fn store(&mut self, slot: u64, off: usize, value: u64);
    /// Copies the event of `slot` (the bytes after its `seq`).
    fn copy_event(&self, slot: u64, out: &mut [u8; EVENT_SIZE]);
}

/// What a drain found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Complete records handed to the caller.
    pub records: u64,
    /// Records overwritten by their CPU before this reader got to them.
    pub overwritten: u64,
    /// The most records one ring had written since the previous drain (how full the fullest
    /// ring got; above [`RING_RECORDS`] it overflowed).
    pub busiest: u64,
}

/// Reads every record written since the last drain, CPU by CPU, and advances each ring's tail.
/// `each` gets the event bytes of each complete record, in the order its CPU wrote them.
pub fn drain(memory: &mut impl RingMemory, mut each: impl FnMut(&[u8; EVENT_SIZE])) -> Drained {
    let mut out = Drained::default();
    let mut event = [0u8; EVENT_SIZE];
    for cpu in 0..memory.slots() / RING_STRIDE {
        let header = cpu * RING_STRIDE;
        let head = memory.load(header, HEAD);
        let mut tail = memory.load(header, TAIL);
        if head < tail {
            // The map was re-created under a reader that kept its tail: start over.
            tail = 0;
        }
        out.busiest = out.busiest.max(head - tail);
        if head - tail > RING_RECORDS {
            out.overwritten += head - tail - RING_RECORDS;
            tail = head - RING_RECORDS;
        }
        for n in tail..head {
            let slot = header + 1 + n % RING_RECORDS;
            let before = memory.load(slot, 0);
            memory.copy_event(slot, &mut event);
            // The writer zeroes `seq` before it rewrites a slot, so an equal `seq` after the copy
            // means the copy is of record `n` alone.
            fence(Ordering::Acquire);
            let after = memory.load(slot, 0);
            if before == n + 1 && after == n + 1 {
                out.records += 1;
                each(&event);
            } else {
                out.overwritten += 1;
            }
        }
        if head != memory.load(header, TAIL) {
            memory.store(header, TAIL, head);
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("events map {what}: {source}")]
    Map {
        what: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("events map is not rings of {SLOT_BYTES}-byte slots in groups of {RING_STRIDE}: {0}")]
    Layout(String),
    #[error("mapping the events map: {0}")]
    Mmap(#[source] std::io::Error),
}

/// The `ciliumc_events` array mapped read-write into this process (the reader writes the tails).
pub struct MappedRings {
    base: NonNull<u8>,
    len: usize,
    slots: u64,
}

// SAFETY: the mapping is plain shared memory, accessed only through atomics.
unsafe impl Send for MappedRings {}

impl MappedRings {
    /// Maps the array pinned at `path`.
    pub fn open_pinned(path: &Path) -> Result<MappedRings, RingError> {
        let data = MapData::from_pin(path).map_err(|source| RingError::Map {
            what: path.display().to_string(),
            source,
        })?;
        Self::map(&data)
    }

    /// Maps an open array (the mapping keeps the map alive on its own).
    pub fn map(data: &MapData) -> Result<MappedRings, RingError> {
        let info = data.info().map_err(|source| RingError::Map {
            what: "info".into(),
            source,
        })?;
        let (entries, value_size) = (info.max_entries(), info.value_size());
        Self::map_fd(data.fd().as_fd(), entries, value_size)
    }

    fn map_fd(fd: BorrowedFd<'_>, entries: u32, value_size: u32) -> Result<MappedRings, RingError> {
        if value_size as usize != SLOT_BYTES
            || entries == 0
            || u64::from(entries) % RING_STRIDE != 0
        {
            return Err(RingError::Layout(format!(
                "{entries} entries of {value_size} bytes"
            )));
        }
        let len = entries as usize * SLOT_BYTES;
        // SAFETY: a fresh shared mapping of the map's values; the kernel checks the length and
        // refuses maps created without BPF_F_MMAPABLE.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(RingError::Mmap(std::io::Error::last_os_error()));
        }
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| RingError::Mmap(std::io::Error::other("mmap returned NULL")))?;
        Ok(MappedRings {
            base,
            len,
            slots: u64::from(entries),
        })
    }

    fn word(&self, slot: u64, off: usize) -> &AtomicU64 {
        debug_assert!(slot < self.slots && off + 8 <= SLOT_BYTES);
        // SAFETY: in bounds (slot < slots, off within the slot); slots are 8-byte multiples from
        // a page-aligned base, so the word is aligned.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(slot as usize * SLOT_BYTES + off)
                .cast::<AtomicU64>()
        }
    }
}

impl RingMemory for MappedRings {
    fn slots(&self) -> u64 {
        self.slots
    }

    fn load(&self, slot: u64, off: usize) -> u64 {
        self.word(slot, off).load(Ordering::Acquire)
    }

    fn store(&mut self, slot: u64, off: usize, value: u64) {
        self.word(slot, off).store(value, Ordering::Release);
    }

    fn copy_event(&self, slot: u64, out: &mut [u8; EVENT_SIZE]) {
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            let word = self.word(slot, 8 + i * 8).load(Ordering::Relaxed);
            chunk.copy_from_slice(&word.to_le_bytes());
        }
    }
}

impl Drop for MappedRings {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map_fd`, unmapped once.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// Rings read slot by slot through a lookup (the interpreter's copy of the map: `lookup(index)`
/// gives a slot's value, `None` for one never written). Only the slots a drain needs are read;
/// the reader's tails are kept here, not written into the map.
pub struct LookupRings<F> {
    lookup: F,
    tails: Vec<u64>,
}

impl<'a, F: Fn(u32) -> Option<&'a [u8]>> LookupRings<F> {
    /// The rings of `tails.len()` CPUs, each already read up to its tail.
    pub fn new(lookup: F, tails: Vec<u64>) -> LookupRings<F> {
        LookupRings { lookup, tails }
    }

    /// Each CPU's tail after the drains so far.
    pub fn tails(&self) -> &[u64] {
        &self.tails
    }

    fn bytes(&self, slot: u64, off: usize, len: usize) -> Option<&'a [u8]> {
        let index = u32::try_from(slot).ok()?;
        (self.lookup)(index)?.get(off..off + len)
    }
}

impl<'a, F: Fn(u32) -> Option<&'a [u8]>> RingMemory for LookupRings<F> {
    fn slots(&self) -> u64 {
        self.tails.len() as u64 * RING_STRIDE
    }

    fn load(&self, slot: u64, off: usize) -> u64 {
        if off == TAIL && slot.is_multiple_of(RING_STRIDE) {
            return self.tails[(slot / RING_STRIDE) as usize];
        }
        self.bytes(slot, off, 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes)
    }

    fn store(&mut self, slot: u64, off: usize, value: u64) {
        // The reader stores only tails.
        if off == TAIL && slot.is_multiple_of(RING_STRIDE) {
            self.tails[(slot / RING_STRIDE) as usize] = value;
        }
    }

    fn copy_event(&self, slot: u64, out: &mut [u8; EVENT_SIZE]) {
        match self.bytes(slot, 8, EVENT_SIZE) {
            Some(b) => out.copy_from_slice(b),
            None => out.fill(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of the rings in ordinary memory.
    struct CopiedRings {
        bytes: Vec<u8>,
    }

    impl CopiedRings {
        fn at(&self, slot: u64, off: usize) -> usize {
            slot as usize * SLOT_BYTES + off
        }
    }

    impl RingMemory for CopiedRings {
        fn slots(&self) -> u64 {
            (self.bytes.len() / SLOT_BYTES) as u64
        }

        fn load(&self, slot: u64, off: usize) -> u64 {
            let at = self.at(slot, off);
            let mut w = [0u8; 8];
            w.copy_from_slice(&self.bytes[at..at + 8]);
            u64::from_le_bytes(w)
        }

        fn store(&mut self, slot: u64, off: usize, value: u64) {
            let at = self.at(slot, off);
            self.bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }

        fn copy_event(&self, slot: u64, out: &mut [u8; EVENT_SIZE]) {
            let at = self.at(slot, 8);
            out.copy_from_slice(&self.bytes[at..at + EVENT_SIZE]);
        }
    }

    /// Writes record `n` on `cpu` as the programs do (head advanced after the record).
    fn write(rings: &mut CopiedRings, cpu: u64, marker: u8) {
        let header = cpu * RING_STRIDE;
        let n = rings.load(header, HEAD);
        let slot = header + 1 + n % RING_RECORDS;
        let at = rings.at(slot, 8);
        rings.bytes[at..at + EVENT_SIZE].fill(marker);
        rings.store(slot, 0, n + 1);
        rings.store(header, HEAD, n + 1);
    }

    fn rings(cpus: u64) -> CopiedRings {
        CopiedRings {
            bytes: vec![0; (cpus * RING_STRIDE) as usize * SLOT_BYTES],
        }
    }

    fn markers(rings: &mut CopiedRings) -> (Vec<u8>, Drained) {
        let mut seen = Vec::new();
        let d = drain(rings, |e| seen.push(e[0]));
        (seen, d)
    }

    #[test]
    fn records_come_back_once_in_order_per_cpu() {
        let mut r = rings(2);
        write(&mut r, 1, 7);
        write(&mut r, 0, 1);
        write(&mut r, 0, 2);
        let (seen, d) = markers(&mut r);
        assert_eq!(seen, [1, 2, 7]);
        assert_eq!(
            d,
            Drained {
                records: 3,
                overwritten: 0,
                busiest: 2
            }
        );
        write(&mut r, 1, 8);
        assert_eq!(markers(&mut r).0, [8]);
        assert_eq!(markers(&mut r), (vec![], Drained::default()));
    }

    #[test]
    fn a_lapped_ring_reports_what_was_overwritten() {
        let mut r = rings(1);
        for i in 0..RING_RECORDS + 5 {
            write(&mut r, 0, (i % 251) as u8);
        }
        let (seen, d) = markers(&mut r);
        assert_eq!(
            d,
            Drained {
                records: RING_RECORDS,
                overwritten: 5,
                busiest: RING_RECORDS + 5
            }
        );
        assert_eq!(seen[0], 5);
        assert_eq!(*seen.last().unwrap_or(&0), ((RING_RECORDS + 4) % 251) as u8);
    }

    #[test]
    fn rings_read_through_a_lookup_touch_only_what_they_need() {
        let mut r = rings(2);
        write(&mut r, 1, 3);
        write(&mut r, 1, 4);
        write(&mut r, 0, 9);
        let read = std::cell::RefCell::new(Vec::new());
        let slots: Vec<&[u8]> = r.bytes.chunks_exact(SLOT_BYTES).collect();
        let mut lookup = LookupRings::new(
            |i: u32| {
                read.borrow_mut().push(i);
                slots.get(i as usize).copied()
            },
            vec![0, 1],
        );
        let mut seen = Vec::new();
        let d = drain(&mut lookup, |e| seen.push(e[0]));
        assert_eq!(seen, [9, 4]);
        assert_eq!(d.records, 2);
        assert_eq!(lookup.tails(), [1, 2]);
        // Headers, and the two records (each read for seq, event, seq).
        let mut touched = read.borrow().clone();
        touched.sort_unstable();
        touched.dedup();
        let stride = RING_STRIDE as u32;
        assert_eq!(touched, [0, 1, stride, stride + 2]);
    }

    #[test]
    fn a_record_being_rewritten_is_not_returned() {
        let mut r = rings(1);
        write(&mut r, 0, 1);
        write(&mut r, 0, 2);
        // The writer has lapped the ring up to record 1's slot and is rewriting it.
        r.store(1 + 1, 0, 0);
        let (seen, d) = markers(&mut r);
        assert_eq!(seen, [1]);
        assert_eq!(
            d,
            Drained {
                records: 1,
                overwritten: 1,
                busiest: 2
            }
        );
    }
}
