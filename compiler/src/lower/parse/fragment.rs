//! IP fragment tracking, as Cilium does it by default (`enable-ipv4-fragment-tracking`,
//! `enable-ipv6-fragment-tracking`): no reassembly, only the L4 ports of a datagram are
//! remembered, so that its later fragments (which carry no L4 header) are judged as the first one.
//!
//! In: the parser's state where a packet is known to be a fragment (IPv4: MF set or a non-zero
//! offset; IPv6: a fragment header with MF set or a non-zero offset). Out: code that
//! - for the first fragment (offset 0) of a TCP, UDP or SCTP datagram, writes its ports into the
//!   shared LRU map `ciliumc_frag4`/`ciliumc_frag6` under (addresses, fragment id, protocol)
//!   before CT and policy (so a denied datagram's later fragments are denied by policy too); it is
//!   otherwise parsed as any packet. Fewer than 4 bytes of L4: `DROP_CT_INVALID_HDR` (135), no
//!   entry; TCP without its flags: the entry is written, then 135 (Cilium's conntrack order);
//! - for a later fragment, looks the ports up and continues with them into CT, identity and
//!   policy exactly as an unfragmented packet with those ports; a miss drops with
//!   `DROP_FRAG_NOT_FOUND` (175);
//! - drops ICMP/ICMPv6 fragments as invalid (134), as Cilium's conntrack does (fragmented echo is
//!   not tracked); fragments of other protocols carry no ports and continue with port 0.
//!
//! Code shape, for the cost of unfragmented packets: fragments leave the parser's fast blocks at
//! the test that recognises them and never come back into them (first fragments get their own
//! copy of the L4 parse). The map operations (helper calls) are all in one region,
//! [`emit_pending`], reached only from fragment code and laid out after the parser; the operation
//! travels through a stack slot, and fragment code keeps few values at once. So no call sits in
//! the live range of a fast-path value, and the register allocator (linear scan: a pressure peak
//! anywhere spills the parser's longest-lived values everywhere) keeps most of the parser's
//! values in registers. Unfragmented IPv4 pays the flag/offset test (one AND and one branch, a
//! byte swap less than before); IPv6 the fragment-header compare it always had plus one stack
//! load and one branch at the L4 header (a first fragment marks the flow key's empty port fields
//! and padding while the extension headers are walked). `docs/datapath.md` ("Fragments") has the
//! measured per-packet cost.

use ciliumc_ir::policy::Direction;
use ciliumc_targets::codegen::{AluOp, BlockId, Cond, FunctionBuilder, Size, SlotId, VReg};
use ciliumc_targets::hooks;

use super::{
    DROP_INVALID, ETH_HLEN, Exits, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP,
    IPPROTO_UDP, KEY_PROTO, Parsed, address_slots, drop_with, parse_l4, port_slots,
};
use crate::lower::maps::{self, FAMILY_IPV4, FAMILY_IPV6};

/// Cilium `DROP_CT_INVALID_HDR`: the L4 ports (or TCP flags) of a first fragment are missing.
pub const DROP_CT_INVALID_HDR: i64 = 135;
/// Cilium `DROP_FRAG_NOT_FOUND`: a later fragment whose first fragment was not seen.
pub const DROP_FRAG_NOT_FOUND: i64 = 175;

/// The pending operation's `kind`: the action, plus [`KIND_V6`] for IPv6; 0 for nothing to do.
const KIND_RECORD: i64 = 1;
const KIND_RECORD_THEN_DROP: i64 = 2;
const KIND_LOOKUP: i64 = 3;
const KIND_V6: i64 = 4;

/// The pending slot: `{ u8 id[4] (network order; IPv4 uses 2); u8 proto; }`.
const OP_ID: u32 = 0;
const OP_PROTO: u32 = 4;

/// Flow key bytes that mark an IPv6 first fragment until its L4 header: the padding after the
/// family (`u8 kind; u8 proto`), zero otherwise and cleared before CT sees the key; the
/// identification waits in the (still empty) port fields.
const MARK_OFF: u32 = 38;
const MARK_ID_OFF: u32 = 32;

/// Where fragment code leaves its map operation: the slot holding it and the block performing
/// it; `done` is where parsing ends.
///
/// The kind has a slot of its own, written whole (8 aligned bytes): the verifier keeps such a
/// constant, so each path into the operations region walks only its own operation. (A byte
/// beside the datagram's fields would be plain memory to it, and every path would walk every
/// operation.)
pub(super) struct Pending {
    op: SlotId,
    kind: SlotId,
    ops: BlockId,
    done: BlockId,
}

impl Pending {
    pub(super) fn new(f: &mut FunctionBuilder, done: BlockId) -> Pending {
        Pending {
            op: f.stack_slot(8),
            kind: f.stack_slot(8),
            ops: f.block(),
            done,
        }
    }

    /// The datagram: `id` (`id_size`: H for IPv4, W for IPv6) and protocol.
    fn datagram(&self, f: &mut FunctionBuilder, id: VReg, id_size: Size, proto: VReg) {
        if id_size == Size::H {
            f.stack_store(self.op, OP_ID, 0i64, Size::W);
        }
        f.stack_store(self.op, OP_ID, id, id_size);
        f.stack_store(self.op, OP_PROTO, proto, Size::B);
    }

    fn kind(&self, f: &mut FunctionBuilder, kind: i64) {
        f.stack_store(self.kind, 0, kind, Size::DW);
    }

    fn load_kind(&self, f: &mut FunctionBuilder) -> VReg {
        f.stack_load(self.kind, 0, Size::DW)
    }

    /// Sets the kind and jumps to the operations.
    fn leave(&self, f: &mut FunctionBuilder, kind: i64) {
        self.kind(f, kind);
        f.jump(self.ops);
    }
}

/// What IPv6 fragment code needs from the parser; `later` is the one block all later fragments
/// leave the walk to (see [`ipv6_later`]).
pub(super) struct Ipv6Args<'a> {
    pub later: BlockId,
    pub pending: &'a Pending,
    pub direction: Direction,
    pub p: &'a Parsed,
    pub exits: &'a Exits,
}

/// Branches to `ports` for TCP, UDP and SCTP, to `icmp` for `icmp_proto`, else to `other`.
fn dispatch_proto(
    f: &mut FunctionBuilder,
    proto: VReg,
    icmp_proto: i64,
    ports: BlockId,
    icmp: BlockId,
    other: BlockId,
) {
    let mut next = f.current();
    for p in [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP] {
        f.switch_to(next);
        next = f.block();
        f.branch32(Cond::Eq, proto, p, ports, next);
    }
    f.switch_to(next);
    f.branch32(Cond::Eq, proto, icmp_proto, icmp, other);
}

/// IPv4, in the block where MF or the offset is set (`l4` points `ETH_HLEN` bytes before the L4
/// header).
#[allow(clippy::too_many_arguments)]
pub(super) fn ipv4(
    f: &mut FunctionBuilder,
    data: VReg,
    end: VReg,
    l4: VReg,
    pending: &Pending,
    direction: Direction,
    p: &Parsed,
    exits: &Exits,
) {
    // Loaded little-endian, the identification keeps its network byte order when stored back.
    let id = f.load(data, ETH_HLEN + 4, Size::H);
    pending.datagram(f, id, Size::H, p.proto);
    let frag_field = f.load(data, ETH_HLEN + 6, Size::H);
    let host = f.bswap(16, frag_field);
    let offset = f.alu32(AluOp::And, host, 0x1fff);
    let first = f.block();
    let later = f.block();
    f.branch32(Cond::Ne, offset, 0, later, first);

    f.switch_to(later);
    later_fragment(f, p, exits, pending, IPPROTO_ICMP, KIND_LOOKUP);

    f.switch_to(first);
    first_fragment(f, l4, end, 0, pending, direction, p, exits);
}

/// IPv6, in the extension-header walk at a fragment header `hdr` (bounds checked for 8 bytes
/// after `ETH_HLEN`). A later fragment leaves the walk for `a.later`; a first fragment marks the
/// flow key (its id, the fragment header's next header) and, like an atomic fragment (offset 0,
/// MF clear: not a fragment, RFC 6946), continues in the block left current (the walk goes on).
/// The walk is where the parser's register pressure peaks: this code holds one value at a time
/// (fields are loaded again rather than kept), so the fast path keeps its registers.
pub(super) fn ipv6_header(f: &mut FunctionBuilder, hdr: VReg, end: VReg, a: &Ipv6Args) {
    let field = f.load(hdr, ETH_HLEN + 2, Size::H);
    // Offset (0xfff8) as the little-endian load sees it.
    let offset_bits = f.alu32(AluOp::And, field, 0xf8ff);
    let later = f.block();
    let not_later = f.block();
    f.branch32(Cond::Ne, offset_bits, 0, later, not_later);

    f.switch_to(later);
    // Cilium keys IPv6 datagrams by the fragment header's next header.
    let id = f.load(hdr, ETH_HLEN + 4, Size::W);
    f.stack_store(a.pending.op, OP_ID, id, Size::W);
    let nh = f.load(hdr, ETH_HLEN, Size::B);
    f.stack_store(a.pending.op, OP_PROTO, nh, Size::B);
    f.stack_store(a.p.flow_key, KEY_PROTO, nh, Size::B);
    f.jump(a.later);

    f.switch_to(not_later);
    let field = f.load(hdr, ETH_HLEN + 2, Size::H);
    // MF (0x0001) as the little-endian load sees it.
    let more = f.alu32(AluOp::And, field, 0x0100);
    let first = f.block();
    let walk_on = f.block();
    f.branch32(Cond::Ne, more, 0, first, walk_on);
    f.switch_to(first);
    // When the ports follow this header, a first fragment too short for them is caught here
    // (behind other extension headers, the L4 parse drops it as invalid instead).
    let short = drop_with(f, a.exits, DROP_CT_INVALID_HDR);
    let ports = f.block();
    let mark = f.block();
    let nh = f.load(hdr, ETH_HLEN, Size::B);
    dispatch_proto(f, nh, -1, ports, mark, mark);
    f.switch_to(ports);
    f.check_packet_bounds(hdr, end, (ETH_HLEN + 8 + 4) as u32, short);
    f.jump(mark);
    f.switch_to(mark);
    let id = f.load(hdr, ETH_HLEN + 4, Size::W);
    f.stack_store(a.p.flow_key, MARK_ID_OFF, id, Size::W);
    let nh = f.load(hdr, ETH_HLEN, Size::B);
    f.stack_store(a.p.flow_key, MARK_OFF + 1, nh, Size::B);
    f.stack_store(a.p.flow_key, MARK_OFF, KIND_V6 | KIND_RECORD, Size::B);
    f.jump(walk_on);
    f.switch_to(walk_on);
}

/// IPv6 later fragment, out of the walk (protocol and datagram already on the stack).
pub(super) fn ipv6_later(f: &mut FunctionBuilder, a: &Ipv6Args) {
    let proto = f.stack_load(a.p.flow_key, KEY_PROTO, Size::B);
    f.assign(a.p.proto, proto);
    later_fragment(
        f,
        a.p,
        a.exits,
        a.pending,
        IPPROTO_ICMPV6,
        KIND_V6 | KIND_LOOKUP,
    );
}

/// IPv6 at the L4 header: a first fragment (marked flow key) takes its own path; others go on
/// to `whole`. Costs unfragmented packets one stack load and one branch.
pub(super) fn ipv6_at_l4(
    f: &mut FunctionBuilder,
    l4: VReg,
    end: VReg,
    a: &Ipv6Args,
    whole: BlockId,
) {
    let mark = f.stack_load(a.p.flow_key, MARK_OFF, Size::B);
    let first = f.block();
    f.branch32(Cond::Ne, mark, 0, first, whole);
    f.switch_to(first);
    let id = f.stack_load(a.p.flow_key, MARK_ID_OFF, Size::W);
    let nh = f.stack_load(a.p.flow_key, MARK_OFF + 1, Size::B);
    a.pending.datagram(f, id, Size::W, nh);
    // The flow key is the CT key: no trace of the mark may stay.
    f.stack_store(a.p.flow_key, MARK_ID_OFF, 0i64, Size::W);
    f.stack_store(a.p.flow_key, MARK_OFF, 0i64, Size::H);
    first_fragment(f, l4, end, KIND_V6, a.pending, a.direction, a.p, a.exits);
}

/// A later fragment (datagram already in the pending slot): TCP, UDP and SCTP leave a lookup
/// pending (ports 0 until it is done), ICMP is invalid, other protocols have no ports and
/// nothing pending.
fn later_fragment(
    f: &mut FunctionBuilder,
    p: &Parsed,
    exits: &Exits,
    pending: &Pending,
    icmp_proto: i64,
    lookup: i64,
) {
    let invalid = drop_with(f, exits, DROP_INVALID);
    let ports = f.block();
    let other = f.block();
    dispatch_proto(f, p.proto, icmp_proto, ports, invalid, other);
    f.switch_to(ports);
    f.assign_const(p.port, 0);
    pending.leave(f, lookup);
    f.switch_to(other);
    f.assign_const(p.port, 0);
    f.jump(pending.done);
}

/// A first fragment (datagram already in the pending slot): ICMP is invalid; TCP, UDP and SCTP
/// need their ports (else 135) and leave a record pending (TCP without its flags: record, then
/// 135), other protocols nothing; all then go through their own copy of the L4 parse, which ends
/// in the operations.
#[allow(clippy::too_many_arguments)]
fn first_fragment(
    f: &mut FunctionBuilder,
    l4: VReg,
    end: VReg,
    family_kind: i64,
    pending: &Pending,
    direction: Direction,
    p: &Parsed,
    exits: &Exits,
) {
    let (icmp_proto, echo_types) = if family_kind == KIND_V6 {
        (IPPROTO_ICMPV6, [128, 129])
    } else {
        (IPPROTO_ICMP, [8, 0])
    };
    let invalid = drop_with(f, exits, DROP_INVALID);
    let short = drop_with(f, exits, DROP_CT_INVALID_HDR);
    let ports = f.block();
    let other = f.block();
    let parse = f.block();
    dispatch_proto(f, p.proto, icmp_proto, ports, invalid, other);
    f.switch_to(other);
    pending.kind(f, 0);
    f.jump(parse);

    f.switch_to(ports);
    f.check_packet_bounds(l4, end, (ETH_HLEN + 4) as u32, short);
    let tcp = f.block();
    let record = f.block();
    f.branch32(Cond::Eq, p.proto, IPPROTO_TCP, tcp, record);
    f.switch_to(tcp);
    let no_flags = f.block();
    f.check_packet_bounds(l4, end, (ETH_HLEN + 14) as u32, no_flags);
    f.jump(record);
    f.switch_to(record);
    pending.kind(f, family_kind | KIND_RECORD);
    f.jump(parse);

    // Cilium records the ports, then drops the fragment for its missing TCP flags: the ports go
    // to the flow key here, since the L4 parse is skipped.
    f.switch_to(no_flags);
    let (sport_slot, dport_slot) = port_slots(direction);
    let sport_raw = f.load(l4, ETH_HLEN, Size::H);
    let sport = f.bswap(16, sport_raw);
    f.stack_store(p.flow_key, sport_slot, sport, Size::H);
    let dport_raw = f.load(l4, ETH_HLEN + 2, Size::H);
    let dport = f.bswap(16, dport_raw);
    f.stack_store(p.flow_key, dport_slot, dport, Size::H);
    f.assign(p.port, dport);
    pending.leave(f, family_kind | KIND_RECORD_THEN_DROP);

    f.switch_to(parse);
    parse_l4(
        f,
        l4,
        end,
        direction,
        p,
        exits,
        pending.ops,
        icmp_proto,
        echo_types,
    );
}

/// The operations region: performs the pending map operation, then jumps to the end of parsing
/// (or drops). Keys are rebuilt from the flow key (addresses back in packet order) and the
/// pending slot (id, protocol).
pub(super) fn emit_pending(
    f: &mut FunctionBuilder,
    pending: &Pending,
    direction: Direction,
    p: &Parsed,
    exits: &Exits,
) {
    f.switch_to(pending.ops);
    let short = drop_with(f, exits, DROP_CT_INVALID_HDR);
    let not_found = drop_with(f, exits, DROP_FRAG_NOT_FOUND);
    let kind = pending.load_kind(f);
    let something = f.block();
    f.branch32(Cond::Eq, kind, 0, pending.done, something);
    f.switch_to(something);
    let v4 = f.block();
    let v6 = f.block();
    let is_v6 = f.alu32(AluOp::And, kind, KIND_V6);
    f.branch32(Cond::Ne, is_v6, 0, v6, v4);

    let (src_slot, dst_slot) = address_slots(direction);
    // One key slot for both families (each path writes all the bytes its map reads).
    let key = f.stack_slot(maps::FRAG6_KEY_SIZE);
    let value = f.stack_slot(8);
    for (block, family) in [(v4, FAMILY_IPV4), (v6, FAMILY_IPV6)] {
        f.switch_to(block);
        let map = f.map(maps::frag_decl(family));
        if family == FAMILY_IPV4 {
            // daddr, saddr, id, proto, pad (Cilium's struct ipv4_frag_id).
            f.stack_store(key, 8, 0i64, Size::DW);
            copy(f, (p.flow_key, dst_slot), (key, 0), Size::W);
            copy(f, (p.flow_key, src_slot), (key, 4), Size::W);
            copy(f, (pending.op, OP_ID), (key, 8), Size::H);
            copy(f, (pending.op, OP_PROTO), (key, 10), Size::B);
        } else {
            // id, proto, pad[3], saddr, daddr (Cilium's struct ipv6_frag_id).
            f.stack_store(key, 0, 0i64, Size::DW);
            copy(f, (pending.op, OP_ID), (key, 0), Size::W);
            copy(f, (pending.op, OP_PROTO), (key, 4), Size::B);
            for i in 0..4 {
                copy(f, (p.flow_key, src_slot + 4 * i), (key, 8 + 4 * i), Size::W);
                copy(
                    f,
                    (p.flow_key, dst_slot + 4 * i),
                    (key, 24 + 4 * i),
                    Size::W,
                );
            }
        }
        let kind = pending.load_kind(f);
        let action = f.alu32(AluOp::And, kind, KIND_V6 - 1);
        let lookup = f.block();
        let record = f.block();
        f.branch32(Cond::Eq, action, KIND_LOOKUP, lookup, record);

        f.switch_to(record);
        ports_value(f, p.flow_key, direction, value);
        let map_ptr = f.load_map(map);
        let key_ptr = f.stack_addr(key);
        let value_ptr = f.stack_addr(value);
        // A failed update (LRU full of busy entries) does not drop: this fragment has its ports.
        f.call(
            &hooks::MAP_UPDATE_ELEM,
            &[
                map_ptr.into(),
                key_ptr.into(),
                value_ptr.into(),
                0i64.into(),
            ],
        );
        let kind = pending.load_kind(f);
        let action = f.alu32(AluOp::And, kind, KIND_V6 - 1);
        f.branch32(Cond::Eq, action, KIND_RECORD_THEN_DROP, short, pending.done);

        f.switch_to(lookup);
        let key_ptr = f.stack_addr(key);
        let entry = f.map_lookup(map, key_ptr);
        let hit = f.block();
        f.branch_null(entry, not_found, hit);
        f.switch_to(hit);
        let (sport_slot, dport_slot) = port_slots(direction);
        let sport_raw = f.load(entry, 0, Size::H);
        let sport = f.bswap(16, sport_raw);
        f.stack_store(p.flow_key, sport_slot, sport, Size::H);
        let dport_raw = f.load(entry, 2, Size::H);
        let dport = f.bswap(16, dport_raw);
        f.stack_store(p.flow_key, dport_slot, dport, Size::H);
        f.assign(p.port, dport);
        f.jump(pending.done);
    }
}

/// Copies `size` bytes between stack slots.
fn copy(f: &mut FunctionBuilder, from: (SlotId, u32), to: (SlotId, u32), size: Size) {
    let v = f.stack_load(from.0, from.1, size);
    f.stack_store(to.0, to.1, v, size);
}

/// The map value (`be16 sport; be16 dport`) from the flow key's (host order, oriented) ports.
fn ports_value(f: &mut FunctionBuilder, flow_key: SlotId, direction: Direction, value: SlotId) {
    let (sport_slot, dport_slot) = port_slots(direction);
    let sport = f.stack_load(flow_key, sport_slot, Size::H);
    let sport_be = f.bswap(16, sport);
    f.stack_store(value, 0, sport_be, Size::H);
    let dport = f.stack_load(flow_key, dport_slot, Size::H);
    let dport_be = f.bswap(16, dport);
    f.stack_store(value, 2, dport_be, Size::H);
}
