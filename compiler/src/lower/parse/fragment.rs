//! IP fragment tracking, as Cilium does it by default (`enable-ipv4-fragment-tracking`,
//! `enable-ipv6-fragment-tracking`): no reassembly, only the L4 ports of a datagram are
//! remembered, so that its later fragments (which carry no L4 header) are judged as the first one.
//!
//! In: the parser at a packet known to be a fragment (IPv4: MF set or a non-zero offset; IPv6: the
//! extension-header walk found a fragment header with MF set or a non-zero offset). Out: a call of
//! the global subprogram [`function`] (Cilium's `ipv4_handle_fragmentation` and
//! `ipv6_handle_fragmentation` in one), whose result [`emit_call`] turns into the parser's state:
//! - a first fragment (offset 0) of a TCP, UDP or SCTP datagram has its ports written into the
//!   shared LRU map `ciliumc_frag4`/`ciliumc_frag6` under (addresses, fragment id, protocol) before
//!   CT and policy (so a denied datagram's later fragments are denied by policy too); it is then
//!   parsed as any packet. Fewer than 4 bytes of L4: `DROP_CT_INVALID_HDR` (135), no entry; TCP
//!   without its flags: the entry is written, then 135 (Cilium's conntrack order);
//! - a later fragment has its ports looked up and continues with them into CT, identity and
//!   policy exactly as an unfragmented packet with those ports; a miss drops with
//!   `DROP_FRAG_NOT_FOUND` (175);
//! - ICMP/ICMPv6 fragments are invalid (134), as in Cilium's conntrack (fragmented echo is not
//!   tracked); fragments of other protocols carry no ports and continue with port 0.
//!
//! Why a subprogram: fragments are rare, and their code (two families, first and later, the map
//! operations) was half of what the verifier walked in the entry program, where every explored
//! branch costs a liveness pass over the whole program (kernel 6.18). A global function is
//! verified once, on its own; the entry program goes on after the call in one state. The fast
//! path (unfragmented packets) never reaches the call. Keys are in packet order (Cilium's
//! `ipv4_frag_id`/`ipv6_frag_id`), values the ports in network order, so the subprogram does not
//! depend on the program's direction.

use ciliumc_ir::policy::Direction;
use ciliumc_targets::codegen::{
    AluOp, BlockId, CodegenError, Cond, Function, FunctionBuilder, ParamKind, Size, SlotId, VReg,
};
use ciliumc_targets::hooks::{self, Hook};

use super::{
    DROP_INVALID, ETH_HLEN, Exits, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, KEY_PROTO, Parsed,
    dispatch_proto, port_slots, returning,
};
use crate::lower::maps::{self, FAMILY_IPV4, FAMILY_IPV6};

/// Cilium `DROP_CT_INVALID_HDR`: the L4 ports (or TCP flags) of a first fragment are missing.
pub const DROP_CT_INVALID_HDR: i64 = 135;
/// Cilium `DROP_FRAG_NOT_FOUND`: a later fragment whose first fragment was not seen.
pub const DROP_FRAG_NOT_FOUND: i64 = 175;

/// The subprogram's result, one `u64`.
pub struct FragResult;

/// Bits 0..16 hold the source port, host order: a later fragment's from the map, a first
/// fragment's when it is dropped for its missing TCP flags; else 0.
impl FragResult {
    /// Destination port, host order (bits 16..32), as the source port.
    pub const DPORT_SHIFT: i64 = 16;
    /// Drop reason, 0 for none (bits 32..40, as every parser subprogram's).
    pub const REASON_SHIFT: i64 = super::RESULT_REASON_SHIFT;
    /// What the parser does next (bits 40..42): [`CONTINUE`](Self::CONTINUE) or
    /// [`LATER`](Self::LATER).
    pub const ACTION_SHIFT: i64 = 40;
    /// Parse the L4 header as for any packet (a first fragment).
    pub const CONTINUE: i64 = 0;
    /// A later fragment: no L4 header; the ports are those in the result (0 for protocols
    /// without ports) and the protocol is the one in bits 48..56.
    pub const LATER: i64 = 1;
    pub const PROTO_SHIFT: i64 = 48;
}

/// What the parser passes to the subprogram.
pub(super) struct CallArgs {
    /// `FAMILY_IPV4` or `FAMILY_IPV6`.
    pub family: i64,
    /// Offset of the L4 header after the Ethernet header.
    pub l4_offset: VReg,
    /// IPv6: offset of the fragment header after the Ethernet header; IPv4: unused.
    pub frag_offset: VReg,
    /// The L4 protocol (IPv6: the walk's upper-layer header, which may differ from the fragment
    /// header's next header).
    pub l4_proto: VReg,
}

/// Calls the subprogram `name` and applies its result: drops with its reason, sends a later
/// fragment to `done` with its ports and protocol, and leaves a first fragment in `parse_l4` (the
/// block where the L4 header is parsed).
#[allow(clippy::too_many_arguments)]
pub(super) fn emit_call(
    f: &mut FunctionBuilder,
    name: &str,
    args: &CallArgs,
    direction: Direction,
    p: &Parsed,
    exits: &Exits,
    parse_l4: BlockId,
    done: BlockId,
) {
    let ctx = f.ctx();
    let family = f.constant(args.family);
    let result = f.call_local(
        name,
        &[ctx, family, args.l4_offset, args.frag_offset, args.l4_proto],
    );
    // Ports first: a drop's event shows them (TCP without flags), a later fragment uses them,
    // and for a first fragment they are 0 and the L4 parse writes its own.
    let (sport_slot, dport_slot) = port_slots(direction);
    let sport = f.alu32(AluOp::And, result, 0xffff);
    f.stack_store(p.flow_key, sport_slot, sport, Size::H);
    let dport_shifted = f.alu(AluOp::Rsh, result, FragResult::DPORT_SHIFT);
    let dport = f.alu32(AluOp::And, dport_shifted, 0xffff);
    f.stack_store(p.flow_key, dport_slot, dport, Size::H);
    super::drop_on_reason(f, exits, result);

    let action_shifted = f.alu(AluOp::Rsh, result, FragResult::ACTION_SHIFT);
    let action = f.alu32(AluOp::And, action_shifted, 3);
    let later = f.block();
    f.branch32(Cond::Eq, action, FragResult::CONTINUE, parse_l4, later);
    f.switch_to(later);
    let proto_shifted = f.alu(AluOp::Rsh, result, FragResult::PROTO_SHIFT);
    let proto = f.alu32(AluOp::And, proto_shifted, 0xff);
    f.assign(p.proto, proto);
    f.stack_store(p.flow_key, KEY_PROTO, proto, Size::B);
    f.assign(p.port, dport);
    f.jump(done);
}

/// Builds the subprogram `name(ctx, family, l4_offset, frag_offset, l4_proto)`.
pub fn function(name: &str, hook: Hook) -> Result<Function, CodegenError> {
    let mut f = FunctionBuilder::subprogram(
        name,
        hook,
        &[
            ParamKind::Ctx,
            ParamKind::Scalar,
            ParamKind::Scalar,
            ParamKind::Scalar,
            ParamKind::Scalar,
        ],
    );
    let (Some(family), Some(l4_offset), Some(frag_offset), Some(l4_proto)) =
        (f.param(1), f.param(2), f.param(3), f.param(4))
    else {
        return Err(CodegenError::Internal {
            func: name.to_string(),
            msg: "fragment code without its parameters".into(),
        });
    };
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    let exits = Returns {
        invalid: returning(&mut f, DROP_INVALID << FragResult::REASON_SHIFT),
        short: returning(&mut f, DROP_CT_INVALID_HDR << FragResult::REASON_SHIFT),
        not_found: returning(&mut f, DROP_FRAG_NOT_FOUND << FragResult::REASON_SHIFT),
    };
    // One key slot for both families (each path writes all the bytes its map reads).
    let key = f.stack_slot(maps::FRAG6_KEY_SIZE);
    let l4_masked = f.alu(AluOp::And, l4_offset, 0x3fff);
    let l4 = f.ptr_add(data, l4_masked);
    let l4_proto = f.alu(AluOp::And, l4_proto, 0xff);

    let v4 = f.block();
    let v6 = f.block();
    f.branch(Cond::Eq, family, FAMILY_IPV4 as i64, v4, v6);

    // daddr, saddr, id, proto, pad (Cilium's struct ipv4_frag_id).
    f.switch_to(v4);
    f.check_packet_bounds(data, end, (ETH_HLEN + 20) as u32, exits.invalid);
    let map = f.map(maps::frag_decl(FAMILY_IPV4));
    f.stack_store(key, 8, 0i64, Size::DW);
    copy_packet(&mut f, (data, ETH_HLEN + 16), (key, 0), Size::W);
    copy_packet(&mut f, (data, ETH_HLEN + 12), (key, 4), Size::W);
    // Loaded little-endian, the identification keeps its network byte order when stored back.
    copy_packet(&mut f, (data, ETH_HLEN + 4), (key, 8), Size::H);
    copy_packet(&mut f, (data, ETH_HLEN + 9), (key, 10), Size::B);
    let frag_field = f.load(data, ETH_HLEN + 6, Size::H);
    let host = f.bswap(16, frag_field);
    let offset = f.alu32(AluOp::And, host, 0x1fff);
    let v4_datagram = Datagram {
        map,
        key,
        proto_off: 10,
        icmp: IPPROTO_ICMP,
    };
    later_or_first(&mut f, offset, &v4_datagram, (l4, end, l4_proto), &exits);

    // id, proto, pad[3], saddr, daddr (Cilium's struct ipv6_frag_id), the fragment header's
    // next header as the protocol.
    f.switch_to(v6);
    f.check_packet_bounds(data, end, (ETH_HLEN + 40) as u32, exits.invalid);
    let hdr_masked = f.alu(AluOp::And, frag_offset, 0x3fff);
    let hdr = f.ptr_add(data, hdr_masked);
    f.check_packet_bounds(hdr, end, (ETH_HLEN + 8) as u32, exits.invalid);
    let map = f.map(maps::frag_decl(FAMILY_IPV6));
    f.stack_store(key, 0, 0i64, Size::DW);
    copy_packet(&mut f, (hdr, ETH_HLEN + 4), (key, 0), Size::W);
    copy_packet(&mut f, (hdr, ETH_HLEN), (key, 4), Size::B);
    for i in 0..4 {
        copy_packet(
            &mut f,
            (data, ETH_HLEN + 8 + 4 * i),
            (key, 8 + 4 * i as u32),
            Size::W,
        );
        copy_packet(
            &mut f,
            (data, ETH_HLEN + 24 + 4 * i),
            (key, 24 + 4 * i as u32),
            Size::W,
        );
    }
    let (_, offset_bits) = super::ipv6_fragment_offset(&mut f, hdr);
    let v6_datagram = Datagram {
        map,
        key,
        proto_off: 4,
        icmp: IPPROTO_ICMPV6,
    };
    later_or_first(
        &mut f,
        offset_bits,
        &v6_datagram,
        (l4, end, l4_proto),
        &exits,
    );
    f.finish()
}

/// The subprogram's drop exits.
struct Returns {
    invalid: BlockId,
    short: BlockId,
    not_found: BlockId,
}

/// One family's datagram: its map, the key (filled), where the key holds the protocol, and the
/// family's ICMP.
struct Datagram {
    map: ciliumc_targets::codegen::MapId,
    key: SlotId,
    proto_off: u32,
    icmp: i64,
}

fn copy_packet(f: &mut FunctionBuilder, from: (VReg, i32), to: (SlotId, u32), size: Size) {
    let v = f.load(from.0, from.1, size);
    f.stack_store(to.0, to.1, v, size);
}

/// A later fragment when `offset` (the fragment offset bits) is not 0, else a first fragment.
fn later_or_first(
    f: &mut FunctionBuilder,
    offset: VReg,
    d: &Datagram,
    l4: (VReg, VReg, VReg),
    exits: &Returns,
) {
    let (later, first) = (f.block(), f.block());
    f.branch32(Cond::Ne, offset, 0, later, first);
    f.switch_to(later);
    later_fragment(f, d, exits);
    f.switch_to(first);
    first_fragment(f, d, l4, exits);
}

/// A later fragment, by the datagram's protocol: TCP, UDP and SCTP look their ports up (a miss
/// drops), ICMP is invalid, other protocols have no ports.
fn later_fragment(f: &mut FunctionBuilder, d: &Datagram, exits: &Returns) {
    let proto = f.stack_load(d.key, d.proto_off, Size::B);
    let tag = f.alu(AluOp::Lsh, proto, FragResult::PROTO_SHIFT);
    let later = f.alu(
        AluOp::Or,
        tag,
        FragResult::LATER << FragResult::ACTION_SHIFT,
    );
    let (ports, other) = (f.block(), f.block());
    dispatch_proto(f, proto, d.icmp, ports, exits.invalid, other);
    f.switch_to(other);
    f.ret(later);

    f.switch_to(ports);
    let key_ptr = f.stack_addr(d.key);
    let entry = f.map_lookup(d.map, key_ptr);
    let hit = f.block();
    f.branch_null(entry, exits.not_found, hit);
    f.switch_to(hit);
    let sport_raw = f.load(entry, 0, Size::H);
    let sport = f.bswap(16, sport_raw);
    let dport_raw = f.load(entry, 2, Size::H);
    let dport = f.bswap(16, dport_raw);
    let dport = f.alu(AluOp::Lsh, dport, FragResult::DPORT_SHIFT);
    let ports = f.alu(AluOp::Or, sport, dport);
    let result = f.alu(AluOp::Or, ports, later);
    f.ret(result);
}

/// A first fragment, by its L4 protocol: ICMP is invalid; TCP, UDP and SCTP need their ports
/// (else 135) and record them (TCP without its flags: record, then 135 with the ports); other
/// protocols record nothing. All that are not dropped continue to the L4 parse.
fn first_fragment(
    f: &mut FunctionBuilder,
    d: &Datagram,
    (l4, end, proto): (VReg, VReg, VReg),
    exits: &Returns,
) {
    let (ports, other) = (f.block(), f.block());
    dispatch_proto(f, proto, d.icmp, ports, exits.invalid, other);
    f.switch_to(other);
    f.ret(FragResult::CONTINUE << FragResult::ACTION_SHIFT);

    f.switch_to(ports);
    f.check_packet_bounds(l4, end, (ETH_HLEN + 4) as u32, exits.short);
    // The map value: both ports as they are in the packet (network order).
    let value = f.stack_slot(8);
    let ports_raw = f.load(l4, ETH_HLEN, Size::W);
    f.stack_store(value, 0, ports_raw, Size::W);
    let map_ptr = f.load_map(d.map);
    let key_ptr = f.stack_addr(d.key);
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
    let (tcp, whole) = (f.block(), f.block());
    f.branch32(Cond::Eq, proto, IPPROTO_TCP, tcp, whole);
    f.switch_to(whole);
    f.ret(FragResult::CONTINUE << FragResult::ACTION_SHIFT);
    // Cilium records the ports, then drops the fragment for its missing TCP flags; the ports go
    // back with the reason so that the drop's event shows them.
    f.switch_to(tcp);
    let no_flags = f.block();
    f.check_packet_bounds(l4, end, (ETH_HLEN + 14) as u32, no_flags);
    f.ret(FragResult::CONTINUE << FragResult::ACTION_SHIFT);
    f.switch_to(no_flags);
    let sport_raw = f.stack_load(value, 0, Size::H);
    let sport = f.bswap(16, sport_raw);
    let dport_raw = f.stack_load(value, 2, Size::H);
    let dport = f.bswap(16, dport_raw);
    let dport = f.alu(AluOp::Lsh, dport, FragResult::DPORT_SHIFT);
    let ports = f.alu(AluOp::Or, sport, dport);
    let result = f.alu(
        AluOp::Or,
        ports,
        DROP_CT_INVALID_HDR << FragResult::REASON_SHIFT,
    );
    f.ret(result);
}
