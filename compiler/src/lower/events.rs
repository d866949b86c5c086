//! Flow events: one record per policy verdict on a new flow and per drop, written to the CPU's
//! own ring in the `ciliumc_events` array (`lower::maps::EVENT_RING_*`; `docs/datapath.md`).
//!
//! Why not a `BPF_MAP_TYPE_RINGBUF`: its reserve and submit take a lock with interrupts off and
//! cost about 100 ns per record here, more than parse, CT and ipcache together, and the
//! reference numbers show one shared ring collapsing with many producers. A per-CPU ring in an
//! mmap-able array is written with two inlined lookups and plain stores (about 10 ns), and the
//! reader maps it and reads it without a syscall. Each CPU has one writer at a time (tc and XDP
//! programs run with migration and bottom halves disabled, and do not nest), so no lock is needed;
//! a full ring overwrites its oldest records, which the reader counts as lost.
//!
//! Slot: `u64 seq` then the 64-byte event. The writer sets `seq` to 0, writes the event, sets
//! `seq` to the record's number + 1, then advances the ring's head; the reader accepts a record
//! only if `seq` reads the expected value both before and after it copies the event (x86-64
//! keeps stores in program order; see `docs/datapath.md` for other architectures).
//!
//! Event layout (64 bytes, little-endian):
//!
//! | off | field |
//! |---|---|
//! | 0 | u64 timestamp (`bpf_ktime_get_coarse_ns`: CLOCK_MONOTONIC_COARSE, one-tick resolution) |
//! | 8 | u8 type: 1 drop, 5 policy verdict (Cilium `CILIUM_NOTIFY_*`) |
//! | 9 | u8 drop reason (Cilium codes: 133 policy denied, 181 explicit deny, ...), 0 if forwarded |
//! | 10 | u8 direction: 1 ingress, 2 egress |
//! | 11 | u8 verdict: 0 forwarded, 1 dropped |
//! | 12 | u32 deciding rule id (0: none; see the manifest's `rules`) |
//! | 16 | u32 endpoint identity |
//! | 20 | u32 remote identity |
//! | 24 | the flow key: u8 ep_addr[16], u8 peer_addr[16], u16 ep_port, u16 peer_port, u8 proto, u8 family |
//! | 62 | u16 policy port: destination port, or ICMP type |

use ciliumc_ir::policy::Direction;
use ciliumc_targets::codegen::{AluOp, Cond, FunctionBuilder, MapId, Size, SlotId, VReg};
use ciliumc_targets::hooks;

use super::maps;

pub const EVENT_SIZE: u32 = 64;
pub const EVENT_DROP: i64 = 1;
pub const EVENT_POLICY_VERDICT: i64 = 5;
/// Offset of the event in its slot, after the slot's `u64 seq`.
const EVENT_IN_SLOT: i32 = 8;

/// The maps events go to: the per-CPU rings and the per-CPU count of events without a ring.
#[derive(Clone, Copy)]
pub struct EventMaps {
    pub ring: MapId,
    pub lost: MapId,
}

/// What an event reports besides the flow key. Kind, verdict and reason are registers: one copy
/// of the event code serves allowed flows and drops (see `lower::lower_program`).
pub struct EventFields {
    /// `EVENT_DROP` or `EVENT_POLICY_VERDICT`.
    pub kind: VReg,
    /// 1 dropped, 0 forwarded.
    pub verdict_dropped: VReg,
    /// Drop reason, 0 if forwarded.
    pub reason: VReg,
    pub rule: VReg,
    pub remote_identity: VReg,
    pub port: VReg,
}

/// Offsets in a ring's header slot (`docs/datapath.md`): `u64 head` (records written), `u64 tail`
/// (the reader's), and the CPU's cached clock: the tick it was read in and its value.
const HEADER_CLOCK_TICK: i32 = 16;
const HEADER_CLOCK_NS: i32 = 24;

/// The event's timestamp: `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE, which only moves at
/// a tick), read once per tick per CPU and cached in the ring's header. The helper call costs
/// ~10 ns a record here (every return goes through the SRSO return thunk); `bpf_jiffies64`,
/// which tells whether a tick has passed, is inlined by the verifier into one load.
fn tick_time(f: &mut FunctionBuilder, header: VReg) -> VReg {
    let tick = f.call(&hooks::JIFFIES64, &[]);
    let cached_tick = f.load(header, HEADER_CLOCK_TICK, Size::DW);
    let refresh = f.block();
    let read = f.block();
    f.branch(Cond::Eq, tick, cached_tick, read, refresh);
    f.switch_to(refresh);
    let now = f.call(&hooks::KTIME_GET_COARSE_NS, &[]);
    f.store(header, HEADER_CLOCK_NS, now, Size::DW);
    f.store(header, HEADER_CLOCK_TICK, tick, Size::DW);
    f.jump(read);
    f.switch_to(read);
    f.load(header, HEADER_CLOCK_NS, Size::DW)
}

/// Writes the event into this CPU's ring. A CPU the array has no ring for loses the event
/// (counted in `ciliumc_evlost`), never the packet.
pub fn emit_event(
    f: &mut FunctionBuilder,
    events: EventMaps,
    flow_key: SlotId,
    direction: Direction,
    fields: &EventFields,
) {
    let cpu = f.call(&hooks::GET_SMP_PROCESSOR_ID, &[]);
    let header_index = f.alu32(AluOp::Mul, cpu, i64::from(maps::EVENT_RING_STRIDE));
    let index = f.stack_slot(4);
    f.stack_store(index, 0, header_index, Size::W);
    let index_ptr = f.stack_addr(index);
    let header = f.map_lookup(events.ring, index_ptr);
    let lost = f.block();
    let locate = f.block();
    let fill = f.block();
    let done = f.block();
    f.branch_null(header, lost, locate);

    f.switch_to(locate);
    let head = f.load(header, 0, Size::DW);
    let position = f.alu32(AluOp::And, head, i64::from(maps::EVENT_RING_RECORDS - 1));
    let header_index = f.stack_load(index, 0, Size::W);
    let record_index = f.alu32(AluOp::Add, header_index, position);
    let record_index = f.alu32(AluOp::Add, record_index, 1i64);
    f.stack_store(index, 0, record_index, Size::W);
    let index_ptr = f.stack_addr(index);
    let slot = f.map_lookup(events.ring, index_ptr);
    f.branch_null(slot, lost, fill);

    f.switch_to(fill);
    // Marked incomplete first, so a reader copying this slot meanwhile discards it.
    f.store(slot, 0, 0i64, Size::DW);
    let now = tick_time(f, header);
    let at = |off: i32| EVENT_IN_SLOT + off;
    f.store(slot, at(0), now, Size::DW);
    f.store(slot, at(8), fields.kind, Size::B);
    f.store(slot, at(9), fields.reason, Size::B);
    let dir = match direction {
        Direction::Ingress => 1i64,
        Direction::Egress => 2,
    };
    f.store(slot, at(10), dir, Size::B);
    f.store(slot, at(11), fields.verdict_dropped, Size::B);
    f.store(slot, at(12), fields.rule, Size::W);
    // The endpoint's identity, bound when the object is assembled (`lower::LOCAL_IDENTITY`);
    // loaded here so that it holds a register only for the store.
    let local_identity = f.link_const(super::LOCAL_IDENTITY);
    f.store(slot, at(16), local_identity, Size::W);
    f.store(slot, at(20), fields.remote_identity, Size::W);
    for off in (0..32).step_by(8) {
        let w = f.stack_load(flow_key, off, Size::DW);
        f.store(slot, at(24 + off as i32), w, Size::DW);
    }
    let tail = f.stack_load(flow_key, 32, Size::W);
    f.store(slot, at(56), tail, Size::W);
    let proto = f.stack_load(flow_key, 36, Size::B);
    f.store(slot, at(60), proto, Size::B);
    let family = f.stack_load(flow_key, 37, Size::B);
    f.store(slot, at(61), family, Size::B);
    f.store(slot, at(62), fields.port, Size::H);
    // Complete: the sequence number, then the head that publishes it.
    let next = f.alu(AluOp::Add, head, 1i64);
    f.store(slot, 0, next, Size::DW);
    f.store(header, 0, next, Size::DW);
    f.jump(done);

    // The loss is counted for the reader (`ciliumc status`).
    f.switch_to(lost);
    let counter = f.map_lookup_u32(events.lost, 0i64);
    let count = f.block();
    f.branch_null(counter, done, count);
    f.switch_to(count);
    let n = f.load(counter, 0, Size::DW);
    let n = f.alu(AluOp::Add, n, 1i64);
    f.store(counter, 0, n, Size::DW);
    f.jump(done);
    f.switch_to(done);
}
