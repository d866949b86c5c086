//! Flow events: one record per policy verdict on a new flow and per drop, written to the
//! `ciliumc_events` ring buffer. Layout (64 bytes, little-endian; `docs/datapath.md`):
//!
//! | off | field |
//! |---|---|
//! | 0 | u64 timestamp (`bpf_ktime_get_ns`) |
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
use ciliumc_targets::codegen::{FunctionBuilder, MapId, Size, SlotId, VReg};
use ciliumc_targets::hooks;

pub const EVENT_SIZE: u32 = 64;
pub const EVENT_DROP: i64 = 1;
pub const EVENT_POLICY_VERDICT: i64 = 5;

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

/// Builds the record on the stack and copies it into the ring buffer. A full ring buffer loses the
/// event, never the packet.
pub fn emit_event(
    f: &mut FunctionBuilder,
    events: MapId,
    record: SlotId,
    flow_key: SlotId,
    direction: Direction,
    fields: &EventFields,
) {
    let now = f.call(&hooks::KTIME_GET_NS, &[]);
    f.stack_store(record, 0, now, Size::DW);
    f.stack_store(record, 8, fields.kind, Size::B);
    match fields.reason {
        Some(r) => f.stack_store(record, 9, r, Size::B),
        None => f.stack_store(record, 9, 0i64, Size::B),
    }
    let dir = match direction {
        Direction::Ingress => 1i64,
        Direction::Egress => 2,
    };
    f.stack_store(record, 10, dir, Size::B);
    f.stack_store(record, 11, i64::from(fields.verdict_dropped), Size::B);
    f.stack_store(record, 12, fields.rule, Size::W);
    f.stack_store(record, 16, i64::from(fields.local_identity), Size::W);
    f.stack_store(record, 20, fields.remote_identity, Size::W);
    for off in (0..32).step_by(8) {
        let w = f.stack_load(flow_key, off, Size::DW);
        f.stack_store(record, 24 + off, w, Size::DW);
    }
    let tail = f.stack_load(flow_key, 32, Size::W);
    f.stack_store(record, 56, tail, Size::W);
    let proto = f.stack_load(flow_key, 36, Size::B);
    f.stack_store(record, 60, proto, Size::B);
    let family = f.stack_load(flow_key, 37, Size::B);
    f.stack_store(record, 61, family, Size::B);
    f.stack_store(record, 62, fields.port, Size::H);
    let map = f.load_map(events);
    let ptr = f.stack_addr(record);
    f.call(
        &hooks::RINGBUF_OUTPUT,
        &[
            map.into(),
            ptr.into(),
            i64::from(EVENT_SIZE).into(),
            0i64.into(),
        ],
    );
}
