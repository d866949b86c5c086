//! Flow events: one record per policy verdict on a new flow and per drop, written to the
//! `ciliumc_events` ring buffer. Layout (64 bytes, little-endian; `docs/datapath.md`):
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

pub const EVENT_SIZE: u32 = 64;
pub const EVENT_DROP: i64 = 1;
pub const EVENT_POLICY_VERDICT: i64 = 5;

/// Unconsumed bytes in the ring buffer at which a program wakes the reader (about 450 records).
/// Below it the reader is not woken and finds the records on its next timed poll
/// (`docs/datapath.md`: readers must poll at least every few milliseconds).
pub const WAKEUP_BACKLOG_BYTES: i64 = 32 * 1024;
/// A record's footprint in the ring: the kernel's 8-byte header plus the 64-byte event.
const RECORD_STRIDE: i64 = 8 + EVENT_SIZE as i64;
const BPF_RB_AVAIL_DATA: i64 = 0;
const BPF_RB_NO_WAKEUP: i64 = 1;
const BPF_RB_FORCE_WAKEUP: i64 = 2;

/// The maps events go to: the ring buffer and the per-CPU count of events it had no room for.
#[derive(Clone, Copy)]
pub struct EventMaps {
    pub ring: MapId,
    pub lost: MapId,
}

/// What an event reports besides the flow key.
pub struct EventFields {
    pub kind: i64,
    pub verdict_dropped: bool,
    pub reason: Option<VReg>,
    pub rule: VReg,
    pub local_identity: u32,
    pub remote_identity: VReg,
    pub port: VReg,
}

/// Reserves the record in the ring buffer and writes it in place. A full ring buffer loses the
/// event (counted in `ciliumc_evlost`), never the packet.
pub fn emit_event(
    f: &mut FunctionBuilder,
    events: EventMaps,
    flow_key: SlotId,
    direction: Direction,
    fields: &EventFields,
) {
    // Waking the reader on every record costs an interrupt (microseconds in a VM) per event once
    // the reader keeps up; so the program wakes it once per `WAKEUP_BACKLOG_BYTES` of backlog
    // (records are `RECORD_STRIDE` apart, so exactly one record starts in the first stride of
    // each window) and readers also poll on a timer.
    let map = f.load_map(events.ring);
    let backlog = f.call(
        &hooks::RINGBUF_QUERY,
        &[map.into(), BPF_RB_AVAIL_DATA.into()],
    );
    let flags = f.vreg();
    f.assign_const(flags, BPF_RB_NO_WAKEUP);
    let crossing = f.block();
    let wake = f.block();
    let reserve = f.block();
    f.branch(Cond::Ge, backlog, WAKEUP_BACKLOG_BYTES, crossing, reserve);
    f.switch_to(crossing);
    let into_window = f.alu(AluOp::And, backlog, WAKEUP_BACKLOG_BYTES - 1);
    f.branch(Cond::Lt, into_window, RECORD_STRIDE, wake, reserve);
    f.switch_to(wake);
    f.assign_const(flags, BPF_RB_FORCE_WAKEUP);
    f.jump(reserve);

    f.switch_to(reserve);
    let map = f.load_map(events.ring);
    let record = f.call(
        &hooks::RINGBUF_RESERVE,
        &[map.into(), i64::from(EVENT_SIZE).into(), 0i64.into()],
    );
    let lost = f.block();
    let fill = f.block();
    let done = f.block();
    f.branch_null(record, lost, fill);

    f.switch_to(fill);
    // The tick-granular clock: a fine clock read costs as much as the rest of the record in a
    // VM, and flows are shown to the millisecond (ring order keeps events of one tick ordered).
    let now = f.call(&hooks::KTIME_GET_COARSE_NS, &[]);
    f.store(record, 0, now, Size::DW);
    f.store(record, 8, fields.kind, Size::B);
    match fields.reason {
        Some(r) => f.store(record, 9, r, Size::B),
        None => f.store(record, 9, 0i64, Size::B),
    }
    let dir = match direction {
        Direction::Ingress => 1i64,
        Direction::Egress => 2,
    };
    f.store(record, 10, dir, Size::B);
    f.store(record, 11, i64::from(fields.verdict_dropped), Size::B);
    f.store(record, 12, fields.rule, Size::W);
    f.store(record, 16, i64::from(fields.local_identity), Size::W);
    f.store(record, 20, fields.remote_identity, Size::W);
    for off in (0..32).step_by(8) {
        let w = f.stack_load(flow_key, off, Size::DW);
        f.store(record, 24 + off as i32, w, Size::DW);
    }
    let tail = f.stack_load(flow_key, 32, Size::W);
    f.store(record, 56, tail, Size::W);
    let proto = f.stack_load(flow_key, 36, Size::B);
    f.store(record, 60, proto, Size::B);
    let family = f.stack_load(flow_key, 37, Size::B);
    f.store(record, 61, family, Size::B);
    f.store(record, 62, fields.port, Size::H);
    f.call(&hooks::RINGBUF_SUBMIT, &[record.into(), flags.into()]);
    f.jump(done);

    // The loss is counted for the reader (`ciliumc status`).
    f.switch_to(lost);
    let index = f.stack_slot(4);
    f.stack_store(index, 0, 0i64, Size::W);
    let index_ptr = f.stack_addr(index);
    let counter = f.map_lookup(events.lost, index_ptr);
    let count = f.block();
    f.branch_null(counter, done, count);
    f.switch_to(count);
    let n = f.load(counter, 0, Size::DW);
    let n = f.alu(AluOp::Add, n, 1i64);
    f.store(counter, 0, n, Size::DW);
    f.jump(done);
    f.switch_to(done);
}
