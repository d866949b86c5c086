//! Packet parsing for policy programs: Ethernet, IPv4 (options, fragments), IPv6 (extension
//! headers), and the L4 fields policy needs (TCP/UDP/SCTP ports, ICMP/ICMPv6 type and echo id).
//!
//! In: a [`FunctionBuilder`] positioned at the program's entry. Out: a [`Parsed`] set of virtual
//! registers and the flow key slots filled, with control continuing in the block where every field
//! is valid; malformed packets jump to the drop block with the reason set, non-IP packets follow
//! Cilium (ARP passes, anything else is dropped as unknown L3). The rare paths are global
//! subprograms the parser calls ([`subprograms`]): the IPv6 extension-header walk ([`exthdr`]) and
//! fragment tracking ([`fragment`]).

use ciliumc_ir::policy::Direction;
use ciliumc_targets::codegen::{
    AluOp, BlockId, CodegenError, Cond, Function, FunctionBuilder, Size, SlotId, VReg,
};

use super::maps::{FAMILY_IPV4, FAMILY_IPV6};

mod exthdr;
mod fragment;

pub use fragment::{DROP_CT_INVALID_HDR, DROP_FRAG_NOT_FOUND};

/// Cilium drop reasons used outside policy (`bpf/lib/common.h`, as positive codes).
pub const DROP_INVALID: i64 = 134;
pub const DROP_UNKNOWN_L3: i64 = 139;
/// Cilium's reason for fragments without fragment tracking; unused since fragments are tracked.
pub const DROP_FRAG_NOSUPPORT: i64 = 157;

const ETH_HLEN: i32 = 14;
/// `h_proto` as a little-endian load of the big-endian field sees it.
const ETH_P_IP_LE: i64 = 0x0008;
const ETH_P_IPV6_LE: i64 = 0xdd86;
const ETH_P_ARP_LE: i64 = 0x0608;

pub const IPPROTO_ICMP: i64 = 1;
pub const IPPROTO_TCP: i64 = 6;
pub const IPPROTO_UDP: i64 = 17;
pub const IPPROTO_SCTP: i64 = 132;
pub const IPPROTO_ICMPV6: i64 = 58;

const TCP_FIN: i64 = 0x01;
const TCP_SYN: i64 = 0x02;
const TCP_RST: i64 = 0x04;
const TCP_ACK: i64 = 0x10;

/// Offsets of the flow key in its stack slot (the CT key layout of `maps.rs`).
pub const KEY_EP_ADDR: u32 = 0;
pub const KEY_PEER_ADDR: u32 = 16;
pub const KEY_EP_PORT: u32 = 32;
pub const KEY_PEER_PORT: u32 = 34;
pub const KEY_PROTO: u32 = 36;
pub const KEY_FAMILY: u32 = 37;

/// Where parsing leaves its results. The family (4 or 6) is in the flow key only
/// ([`KEY_FAMILY`]).
pub struct Parsed {
    /// IP protocol number (also in the flow key, [`KEY_PROTO`]).
    pub proto: VReg,
    /// What policy matches as the port: the destination port, or the ICMP type.
    pub port: VReg,
    /// The flow key (CT key layout), oriented from the endpoint; zeroed before parsing.
    pub flow_key: SlotId,
    /// 1 for a TCP segment with SYN set and ACK, RST and FIN clear (a connection attempt, never a
    /// reply), else 0.
    pub tcp_syn: VReg,
}

/// The blocks and registers that failure paths use.
pub struct Exits {
    /// Drop with the reason in `reason`.
    pub drop: BlockId,
    pub reason: VReg,
    /// Pass without policy (ARP).
    pub pass: BlockId,
}

/// Emits the parser. `direction` decides which packet address is the endpoint's: for ingress
/// (traffic to the endpoint) the destination, for egress the source.
pub fn emit_parse(f: &mut FunctionBuilder, direction: Direction, exits: &Exits) -> Parsed {
    let parsed = Parsed {
        proto: f.vreg(),
        port: f.vreg(),
        flow_key: f.stack_slot(40),
        tcp_syn: f.vreg(),
    };
    f.assign_const(parsed.tcp_syn, 0);
    for off in (0..40).step_by(8) {
        f.stack_store(parsed.flow_key, off, 0i64, Size::DW);
    }
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    let invalid = drop_with(f, exits, DROP_INVALID);
    f.check_packet_bounds(data, end, ETH_HLEN as u32, invalid);
    let h_proto = f.load(data, 12, Size::H);

    let ipv4 = f.block();
    let not_v4 = f.block();
    f.branch32(Cond::Eq, h_proto, ETH_P_IP_LE, ipv4, not_v4);
    f.switch_to(not_v4);
    let ipv6 = f.block();
    let not_ip = f.block();
    f.branch32(Cond::Eq, h_proto, ETH_P_IPV6_LE, ipv6, not_ip);
    f.switch_to(not_ip);
    let unknown_l3 = drop_with(f, exits, DROP_UNKNOWN_L3);
    f.branch32(Cond::Eq, h_proto, ETH_P_ARP_LE, exits.pass, unknown_l3);

    let done = f.block();
    let names = subprogram_names(direction);
    let ctx = Context {
        data,
        end,
        direction,
        names: &names,
        p: &parsed,
        exits,
        done,
    };
    f.switch_to(ipv4);
    parse_ipv4(f, &ctx);
    f.switch_to(ipv6);
    parse_ipv6(f, &ctx);
    f.switch_to(done);
    parsed
}

/// Names of the parser's global subprograms in `direction`'s program.
pub struct SubprogramNames {
    /// The IPv6 extension-header walk ([`exthdr`]).
    pub ext_headers: String,
    /// Fragment tracking ([`fragment`]).
    pub fragments: String,
}

/// The names are those of Cilium's functions; egress programs get an `_egress` suffix, as the
/// parts of a large decision do, so that the two directions never share a symbol.
pub fn subprogram_names(direction: Direction) -> SubprogramNames {
    let suffix = match direction {
        Direction::Ingress => "",
        Direction::Egress => "_egress",
    };
    SubprogramNames {
        ext_headers: format!("ipv6_hdrlen_offset{suffix}"),
        fragments: format!("handle_fragmentation{suffix}"),
    }
}

/// Whether `name` is one of the parser's subprograms in `direction`'s program.
pub fn is_subprogram(direction: Direction, name: &str) -> bool {
    let names = subprogram_names(direction);
    name == names.ext_headers || name == names.fragments
}

/// The parser's global subprograms for `direction`'s program, which [`emit_parse`] calls.
///
/// They depend on nothing but the direction (and the hook its program attaches at): built once
/// per process, and marked recurring, so codegen compiles them once too.
pub fn subprograms(direction: Direction) -> Result<Vec<Function>, CodegenError> {
    static BUILT: super::PerDirection = super::PerDirection::new();
    BUILT.get_or_build(direction, || {
        let (_, hook) = super::program_for(direction);
        let names = subprogram_names(direction);
        Ok(vec![
            exthdr::function(&names.ext_headers, hook)?,
            fragment::function(&names.fragments, hook)?,
        ])
    })
}

/// What the per-family parsers share.
struct Context<'a> {
    data: VReg,
    end: VReg,
    direction: Direction,
    names: &'a SubprogramNames,
    p: &'a Parsed,
    exits: &'a Exits,
    /// Where parsing ends.
    done: BlockId,
}

/// Where the parser's subprograms put a drop reason (0: none) in their `u64` result: bits 32..40.
const RESULT_REASON_SHIFT: i64 = 32;

/// Drops with the reason a subprogram's `result` carries ([`RESULT_REASON_SHIFT`]) when it is not
/// 0; else continues in a new current block.
fn drop_on_reason(f: &mut FunctionBuilder, exits: &Exits, result: VReg) {
    let shifted = f.alu(AluOp::Rsh, result, RESULT_REASON_SHIFT);
    let reason = f.alu32(AluOp::And, shifted, 0xff);
    let (drop, go_on) = (f.block(), f.block());
    f.branch32(Cond::Ne, reason, 0, drop, go_on);
    f.switch_to(drop);
    f.assign(exits.reason, reason);
    f.jump(exits.drop);
    f.switch_to(go_on);
}

/// The IPv6 fragment header at `hdr` (8 bytes checked after `ETH_HLEN`): its offset/flags
/// half-word as loaded, and the fragment offset bits of it (non-zero: a later fragment).
fn ipv6_fragment_offset(f: &mut FunctionBuilder, hdr: VReg) -> (VReg, VReg) {
    let field = f.load(hdr, ETH_HLEN + 2, Size::H);
    // The offset (0xfff8) as the little-endian load sees it.
    let offset_bits = f.alu32(AluOp::And, field, 0xf8ff);
    (field, offset_bits)
}

/// A block returning `value` (in a subprogram).
fn returning(f: &mut FunctionBuilder, value: i64) -> BlockId {
    let here = f.current();
    let b = f.block();
    f.switch_to(b);
    f.ret(value);
    f.switch_to(here);
    b
}

/// Branches to `inside` when `value` (at most 8 bits) is below 64 and its bit is set in `mask`,
/// else to `outside`: one test for a set of protocol numbers, which reaches `inside` in one
/// verifier state rather than one per number.
fn branch_in_mask(
    f: &mut FunctionBuilder,
    value: VReg,
    mask: i64,
    (inside, outside): (BlockId, BlockId),
) {
    let below = f.block();
    f.branch(Cond::Gt, value, 63, outside, below);
    f.switch_to(below);
    let mask = f.constant(mask);
    let shifted = f.alu(AluOp::Rsh, mask, value);
    let bit = f.alu(AluOp::And, shifted, 1);
    f.branch(Cond::Ne, bit, 0, inside, outside);
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

/// A block that sets the drop reason and jumps to the drop exit.
fn drop_with(f: &mut FunctionBuilder, exits: &Exits, reason: i64) -> BlockId {
    let here = f.current();
    let b = f.block();
    f.switch_to(b);
    f.assign_const(exits.reason, reason);
    f.jump(exits.drop);
    f.switch_to(here);
    b
}

/// Flow key offsets of the packet's (source, destination) ports.
fn port_slots(direction: Direction) -> (u32, u32) {
    match direction {
        Direction::Ingress => (KEY_PEER_PORT, KEY_EP_PORT),
        Direction::Egress => (KEY_EP_PORT, KEY_PEER_PORT),
    }
}

/// Offsets of (endpoint, peer) addresses in the packet's (source, destination) order.
fn address_slots(direction: Direction) -> (u32, u32) {
    match direction {
        Direction::Ingress => (KEY_PEER_ADDR, KEY_EP_ADDR),
        Direction::Egress => (KEY_EP_ADDR, KEY_PEER_ADDR),
    }
}

fn parse_ipv4(f: &mut FunctionBuilder, c: &Context) {
    let (data, end, p) = (c.data, c.end, c.p);
    let invalid = drop_with(f, c.exits, DROP_INVALID);
    f.check_packet_bounds(data, end, (ETH_HLEN + 20) as u32, invalid);
    let ver_ihl = f.load(data, ETH_HLEN, Size::B);
    let version = f.alu32(AluOp::Rsh, ver_ihl, 4);
    let ok_version = f.block();
    f.branch32(Cond::Ne, version, 4, invalid, ok_version);
    f.switch_to(ok_version);
    let ihl = f.alu32(AluOp::And, ver_ihl, 0xf);
    let ok_ihl = f.block();
    f.branch32(Cond::Lt, ihl, 5, invalid, ok_ihl);
    f.switch_to(ok_ihl);
    let proto = f.load(data, ETH_HLEN + 9, Size::B);
    f.assign(p.proto, proto);
    let (src_slot, dst_slot) = address_slots(c.direction);
    let saddr = f.load(data, ETH_HLEN + 12, Size::W);
    f.stack_store(p.flow_key, src_slot, saddr, Size::W);
    let daddr = f.load(data, ETH_HLEN + 16, Size::W);
    f.stack_store(p.flow_key, dst_slot, daddr, Size::W);
    f.stack_store(p.flow_key, KEY_PROTO, proto, Size::B);
    f.stack_store(p.flow_key, KEY_FAMILY, FAMILY_IPV4 as i64, Size::B);
    let hdr_len = f.alu32(AluOp::Lsh, ihl, 2);
    let l4 = f.ptr_add(data, hdr_len);
    // MF or a non-zero offset: a fragment. One test on the raw half-word, whose little-endian
    // load sees the mask 0x3fff as 0xff3f.
    let frag_field = f.load(data, ETH_HLEN + 6, Size::H);
    let frag_bits = f.alu32(AluOp::And, frag_field, 0xff3f);
    let whole = f.block();
    let fragmented = f.block();
    f.branch32(Cond::Ne, frag_bits, 0, fragmented, whole);
    f.switch_to(fragmented);
    let unused = f.constant(0);
    let args = fragment::CallArgs {
        family: FAMILY_IPV4 as i64,
        l4_offset: hdr_len,
        frag_offset: unused,
        l4_proto: proto,
    };
    fragment::emit_call(
        f,
        &c.names.fragments,
        &args,
        c.direction,
        p,
        c.exits,
        whole,
        c.done,
    );
    f.switch_to(whole);
    parse_l4(
        f,
        l4,
        end,
        c.direction,
        p,
        c.exits,
        c.done,
        IPPROTO_ICMP,
        [8, 0],
    );
}

fn parse_ipv6(f: &mut FunctionBuilder, c: &Context) {
    let (data, end, p) = (c.data, c.end, c.p);
    let invalid = drop_with(f, c.exits, DROP_INVALID);
    f.check_packet_bounds(data, end, (ETH_HLEN + 40) as u32, invalid);
    let first = f.load(data, ETH_HLEN, Size::B);
    let version = f.alu32(AluOp::Rsh, first, 4);
    let ok_version = f.block();
    f.branch32(Cond::Ne, version, 6, invalid, ok_version);
    f.switch_to(ok_version);
    let (src_slot, dst_slot) = address_slots(c.direction);
    for i in 0..4u32 {
        let s = f.load(data, ETH_HLEN + 8 + 4 * i as i32, Size::W);
        f.stack_store(p.flow_key, src_slot + 4 * i, s, Size::W);
        let d = f.load(data, ETH_HLEN + 24 + 4 * i as i32, Size::W);
        f.stack_store(p.flow_key, dst_slot + 4 * i, d, Size::W);
    }
    f.stack_store(p.flow_key, KEY_FAMILY, FAMILY_IPV6 as i64, Size::B);

    // The upper-layer protocol and its offset: directly after the IPv6 header, or where the
    // extension-header walk (a subprogram, called only when there are extension headers) ends.
    let next_hdr = f.load(data, ETH_HLEN + 6, Size::B);
    let l4_proto = f.vreg();
    let l4_offset = f.vreg();
    let (direct, walk, at_l4) = (f.block(), f.block(), f.block());
    branch_in_mask(f, next_hdr, exthdr::EXT_HEADERS, (walk, direct));
    f.switch_to(direct);
    f.assign(l4_proto, next_hdr);
    f.assign_const(l4_offset, 40);
    f.jump(at_l4);

    f.switch_to(walk);
    let ctx = f.ctx();
    let result = f.call_local(&c.names.ext_headers, &[ctx, next_hdr]);
    drop_on_reason(f, c.exits, result);
    let nh = f.alu32(AluOp::And, result, exthdr::WalkResult::NEXT_HEADER_MASK);
    f.assign(l4_proto, nh);
    let shifted = f.alu(AluOp::Rsh, result, exthdr::WalkResult::L4_OFFSET_SHIFT);
    let offset = f.alu32(AluOp::And, shifted, exthdr::WalkResult::OFFSET_MASK);
    f.assign(l4_offset, offset);
    let kind_shifted = f.alu(AluOp::Rsh, result, exthdr::WalkResult::KIND_SHIFT);
    let kind = f.alu32(AluOp::And, kind_shifted, 3);
    let fragmented = f.block();
    f.branch32(Cond::Ne, kind, exthdr::FRAG_NONE, fragmented, at_l4);
    f.switch_to(fragmented);
    let frag_shifted = f.alu(AluOp::Rsh, result, exthdr::WalkResult::FRAG_OFFSET_SHIFT);
    let frag_offset = f.alu32(AluOp::And, frag_shifted, exthdr::WalkResult::OFFSET_MASK);
    let args = fragment::CallArgs {
        family: FAMILY_IPV6 as i64,
        l4_offset,
        frag_offset,
        l4_proto,
    };
    fragment::emit_call(
        f,
        &c.names.fragments,
        &args,
        c.direction,
        p,
        c.exits,
        at_l4,
        c.done,
    );

    f.switch_to(at_l4);
    f.assign(p.proto, l4_proto);
    f.stack_store(p.flow_key, KEY_PROTO, l4_proto, Size::B);
    // Forgotten: without extension headers the offset is the constant 40, and the L4 code would
    // be verified once for that and once for the walk's.
    let scratch = f.stack_slot(8);
    let masked = super::forget_value(f, scratch, l4_offset, exthdr::WalkResult::OFFSET_MASK);
    let l4 = f.ptr_add(data, masked);
    parse_l4(
        f,
        l4,
        end,
        c.direction,
        p,
        c.exits,
        c.done,
        IPPROTO_ICMPV6,
        [128, 129],
    );
}

/// L4 fields from `l4` (which points `ETH_HLEN` bytes before the L4 header, like `data`).
#[allow(clippy::too_many_arguments)]
fn parse_l4(
    f: &mut FunctionBuilder,
    l4: VReg,
    end: VReg,
    direction: Direction,
    p: &Parsed,
    exits: &Exits,
    done: BlockId,
    icmp_proto: i64,
    echo_types: [i64; 2],
) {
    let invalid = drop_with(f, exits, DROP_INVALID);
    let (sport_slot, dport_slot) = match direction {
        Direction::Ingress => (KEY_PEER_PORT, KEY_EP_PORT),
        Direction::Egress => (KEY_EP_PORT, KEY_PEER_PORT),
    };
    let ports = f.block();
    let icmp = f.block();
    let other = f.block();
    dispatch_proto(f, p.proto, icmp_proto, ports, icmp, other);

    f.switch_to(ports);
    f.check_packet_bounds(l4, end, (ETH_HLEN + 4) as u32, invalid);
    let sport_raw = f.load(l4, ETH_HLEN, Size::H);
    let sport = f.bswap(16, sport_raw);
    let dport_raw = f.load(l4, ETH_HLEN + 2, Size::H);
    let dport = f.bswap(16, dport_raw);
    f.stack_store(p.flow_key, sport_slot, sport, Size::H);
    f.stack_store(p.flow_key, dport_slot, dport, Size::H);
    f.assign(p.port, dport);
    let tcp = f.block();
    // The protocol again from the flow key (a byte the verifier does not track), not from the
    // compare that brought us here: TCP, UDP and SCTP then reach this block in one verifier
    // state, and the port code is verified once instead of once per protocol.
    let proto = f.stack_load(p.flow_key, KEY_PROTO, Size::B);
    f.branch32(Cond::Eq, proto, IPPROTO_TCP, tcp, done);
    // The flags byte (TCP offset 13); a segment too short to hold it is left to CT as before.
    f.switch_to(tcp);
    f.check_packet_bounds(l4, end, (ETH_HLEN + 14) as u32, done);
    let flags = f.load(l4, ETH_HLEN + 13, Size::B);
    let handshake_bits = f.alu32(AluOp::And, flags, TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN);
    let syn = f.block();
    f.branch32(Cond::Eq, handshake_bits, TCP_SYN, syn, done);
    f.switch_to(syn);
    f.assign_const(p.tcp_syn, 1);
    f.jump(done);

    f.switch_to(icmp);
    f.check_packet_bounds(l4, end, (ETH_HLEN + 8) as u32, invalid);
    let icmp_type = f.load(l4, ETH_HLEN, Size::B);
    f.assign(p.port, icmp_type);
    // Echo request and reply share the identifier, which pairs them in the flow key.
    let echo = f.block();
    let not_req = f.block();
    f.branch32(Cond::Eq, icmp_type, echo_types[0], echo, not_req);
    f.switch_to(not_req);
    f.branch32(Cond::Eq, icmp_type, echo_types[1], echo, done);
    f.switch_to(echo);
    let id_raw = f.load(l4, ETH_HLEN + 4, Size::H);
    let id = f.bswap(16, id_raw);
    f.stack_store(p.flow_key, KEY_EP_PORT, id, Size::H);
    f.stack_store(p.flow_key, KEY_PEER_PORT, id, Size::H);
    f.jump(done);

    f.switch_to(other);
    f.assign_const(p.port, 0);
    f.jump(done);
}
