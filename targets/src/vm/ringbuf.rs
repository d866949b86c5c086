//! A `BPF_MAP_TYPE_RINGBUF` model: the kernel's producer/consumer positions and record sizes
//! (8-byte header, length rounded up to 8), so `ringbuf_query` answers as in the kernel; records
//! are kept as byte vectors and handed to the caller in reservation order.
//!
//! In: reserve/commit/discard/output calls from the helpers. Out: committed records
//! ([`RingBuf::drain`]) and positions ([`RingBuf::query`]).

/// `BPF_RINGBUF_HDR_SZ`.
const HEADER: u64 = 8;

/// `ringbuf_output`/`submit` wake-up flags.
pub const BPF_RB_NO_WAKEUP: u64 = 1;
pub const BPF_RB_FORCE_WAKEUP: u64 = 2;
/// `ringbuf_query` flags.
pub const BPF_RB_AVAIL_DATA: u64 = 0;
pub const BPF_RB_RING_SIZE: u64 = 1;
pub const BPF_RB_CONS_POS: u64 = 2;
pub const BPF_RB_PROD_POS: u64 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordState {
    Reserved,
    Committed,
    Discarded,
}

#[derive(Clone, Debug)]
pub struct Record {
    pub data: Vec<u8>,
    pub state: RecordState,
}

#[derive(Clone, Debug)]
pub struct RingBuf {
    capacity: u64,
    producer: u64,
    consumer: u64,
    /// Records not yet consumed, oldest first.
    records: Vec<Record>,
    /// Index (in the ring's lifetime) of `records[0]`.
    first_index: u64,
}

fn footprint(len: u64) -> u64 {
    (len + HEADER).div_ceil(8) * 8
}

impl RingBuf {
    pub fn new(capacity: u64) -> RingBuf {
        RingBuf {
            capacity,
            producer: 0,
            consumer: 0,
            records: Vec::new(),
            first_index: 0,
        }
    }

    /// `bpf_ringbuf_reserve`: a record handle, or `None` when the ring has no room (the kernel's
    /// test is `new_prod - cons > mask`) or `flags` is not 0.
    pub fn reserve(&mut self, len: u64, flags: u64) -> Option<u64> {
        if flags != 0 || len > self.capacity || footprint(len) > self.capacity {
            return None;
        }
        let new_producer = self.producer + footprint(len);
        if new_producer - self.consumer > self.capacity - 1 {
            return None;
        }
        self.producer = new_producer;
        self.records.push(Record {
            data: vec![0; len as usize],
            state: RecordState::Reserved,
        });
        Some(self.first_index + self.records.len() as u64 - 1)
    }

    pub(crate) fn record_mut(&mut self, handle: u64) -> Option<&mut Record> {
        let i = handle.checked_sub(self.first_index)?;
        self.records.get_mut(usize::try_from(i).ok()?)
    }

    /// Commits or discards a reserved record; false when `handle` is not a reserved record.
    pub fn release(&mut self, handle: u64, commit: bool) -> bool {
        match self.record_mut(handle) {
            Some(r) if r.state == RecordState::Reserved => {
                r.state = if commit {
                    RecordState::Committed
                } else {
                    RecordState::Discarded
                };
                true
            }
            _ => false,
        }
    }

    /// Whether a reserved record was neither submitted nor discarded.
    pub fn has_reserved(&self) -> bool {
        self.records
            .iter()
            .any(|r| r.state == RecordState::Reserved)
    }

    /// `bpf_ringbuf_output`: 0, `-EINVAL` for unknown flags, `-EAGAIN` when full.
    pub fn output(&mut self, data: &[u8], flags: u64) -> i64 {
        if flags & !(BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP) != 0 {
            return -super::maps::EINVAL;
        }
        match self.reserve(data.len() as u64, 0) {
            Some(h) => {
                if let Some(r) = self.record_mut(h) {
                    r.data.copy_from_slice(data);
                    r.state = RecordState::Committed;
                }
                0
            }
            None => -super::maps::EAGAIN,
        }
    }

    /// `bpf_ringbuf_query`.
    pub fn query(&self, flags: u64) -> u64 {
        match flags {
            BPF_RB_AVAIL_DATA => self.producer - self.consumer,
            BPF_RB_RING_SIZE => self.capacity,
            BPF_RB_CONS_POS => self.consumer,
            BPF_RB_PROD_POS => self.producer,
            _ => 0,
        }
    }

    /// Consumes every record up to the first still reserved one and returns the committed ones'
    /// bytes, as a reader of the kernel's ring would.
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut consumed = 0;
        for r in &self.records {
            if r.state == RecordState::Reserved {
                break;
            }
            self.consumer += footprint(r.data.len() as u64);
            if r.state == RecordState::Committed {
                out.push(r.data.clone());
            }
            consumed += 1;
        }
        self.records.drain(..consumed);
        self.first_index += consumed as u64;
        out
    }
}
