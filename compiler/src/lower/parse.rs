//! Packet parsing for policy programs: Ethernet, IPv4 (options, fragments), IPv6 (extension
//! headers), and the L4 fields policy needs (TCP/UDP/SCTP ports, ICMP/ICMPv6 type and echo id).
//!
//! In: a [`FunctionBuilder`] positioned at the program's entry. Out: a [`Parsed`] set of virtual
//! registers and the flow key slots filled, with control continuing in the block where every field
//! is valid; malformed packets jump to the drop block with the reason set, non-IP packets follow
//! Cilium (ARP passes, anything else is dropped as unknown L3). Fragments: see [`fragment`].

use ciliumc_ir::policy::Direction;
use ciliumc_targets::codegen::{AluOp, BlockId, Cond, FunctionBuilder, Size, SlotId, VReg};

use super::maps::{FAMILY_IPV4, FAMILY_IPV6};

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

/// IPv6 extension headers walked before the L4 header; more than this many is malformed.
const MAX_IPV6_EXT_HEADERS: usize = 4;
/// The extension headers the walk passes by their length field: hop-by-hop options (0), routing
/// (43), AH (51) and destination options (60), as bits of a mask indexed by next header.
const GENERIC_EXT_HEADERS: i64 = (1 << 0) | (1 << 43) | (1 << 51) | (1 << 60);

/// Offsets of the flow key in its stack slot (the CT key layout of `maps.rs`).
pub const KEY_EP_ADDR: u32 = 0;
pub const KEY_PEER_ADDR: u32 = 16;
pub const KEY_EP_PORT: u32 = 32;
pub const KEY_PEER_PORT: u32 = 34;
pub const KEY_PROTO: u32 = 36;
pub const KEY_FAMILY: u32 = 37;

/// Where parsing leaves its results.
pub struct Parsed {
    /// 4 or 6.
    pub family: VReg,
    /// IP protocol number.
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
        family: f.vreg(),
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
    let frag = fragment::Pending::new(f, done);
    f.switch_to(ipv4);
    parse_ipv4(f, data, end, &frag, direction, &parsed, exits, done);
    f.switch_to(ipv6);
    parse_ipv6(f, data, end, &frag, direction, &parsed, exits, done);
    fragment::emit_pending(f, &frag, direction, &parsed, exits);
    f.switch_to(done);
    parsed
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

#[allow(clippy::too_many_arguments)]
fn parse_ipv4(
    f: &mut FunctionBuilder,
    data: VReg,
    end: VReg,
    frag: &fragment::Pending,
    direction: Direction,
    p: &Parsed,
    exits: &Exits,
    done: BlockId,
) {
    let invalid = drop_with(f, exits, DROP_INVALID);
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
    f.assign_const(p.family, FAMILY_IPV4 as i64);
    let (src_slot, dst_slot) = address_slots(direction);
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
    fragment::ipv4(f, data, end, l4, frag, direction, p, exits);
    f.switch_to(whole);
    parse_l4(f, l4, end, direction, p, exits, done, IPPROTO_ICMP, [8, 0]);
}

#[allow(clippy::too_many_arguments)]
fn parse_ipv6(
    f: &mut FunctionBuilder,
    data: VReg,
    end: VReg,
    frag: &fragment::Pending,
    direction: Direction,
    p: &Parsed,
    exits: &Exits,
    done: BlockId,
) {
    let invalid = drop_with(f, exits, DROP_INVALID);
    f.check_packet_bounds(data, end, (ETH_HLEN + 40) as u32, invalid);
    let first = f.load(data, ETH_HLEN, Size::B);
    let version = f.alu32(AluOp::Rsh, first, 4);
    let ok_version = f.block();
    f.branch32(Cond::Ne, version, 6, invalid, ok_version);
    f.switch_to(ok_version);
    f.assign_const(p.family, FAMILY_IPV6 as i64);
    let (src_slot, dst_slot) = address_slots(direction);
    for i in 0..4u32 {
        let s = f.load(data, ETH_HLEN + 8 + 4 * i as i32, Size::W);
        f.stack_store(p.flow_key, src_slot + 4 * i, s, Size::W);
        let d = f.load(data, ETH_HLEN + 24 + 4 * i as i32, Size::W);
        f.stack_store(p.flow_key, dst_slot + 4 * i, d, Size::W);
    }
    f.stack_store(p.flow_key, KEY_FAMILY, FAMILY_IPV6 as i64, Size::B);

    let next_hdr = f.vreg();
    let nh = f.load(data, ETH_HLEN + 6, Size::B);
    f.assign(next_hdr, nh);
    let offset = f.vreg();
    f.assign_const(offset, 40);
    let at_l4 = f.block();
    let frag_args = fragment::Ipv6Args {
        later: f.block(),
        pending: frag,
        direction,
        p,
        exits,
    };
    ext_walk(f, data, end, invalid, (next_hdr, offset), &frag_args, at_l4);

    f.switch_to(frag_args.later);
    fragment::ipv6_later(f, &frag_args);

    f.switch_to(at_l4);
    f.assign(p.proto, next_hdr);
    f.stack_store(p.flow_key, KEY_PROTO, next_hdr, Size::B);
    // Forgotten like each step of the walk: without extension headers the offset is the
    // constant 40, and the L4 code would be verified once for that and once for the walk's.
    let scratch = f.stack_slot(8);
    let masked = super::forget_value(f, scratch, offset, 0x3fff);
    let l4 = f.ptr_add(data, masked);
    let whole = f.block();
    fragment::ipv6_at_l4(f, l4, end, &frag_args, whole);
    f.switch_to(whole);
    parse_l4(
        f,
        l4,
        end,
        direction,
        p,
        exits,
        done,
        IPPROTO_ICMPV6,
        [128, 129],
    );
}

/// Walks at most `MAX_IPV6_EXT_HEADERS` IPv6 extension headers: `cursor` is (next header, offset
/// of that header after the Ethernet header), updated as headers are passed; at the upper-layer
/// header, jumps to `at_l4`. Fragment headers go through `fragment::ipv6_header`. More headers:
/// invalid.
fn ext_walk(
    f: &mut FunctionBuilder,
    data: VReg,
    end: VReg,
    invalid: BlockId,
    cursor: (VReg, VReg),
    fragment: &fragment::Ipv6Args,
    at_l4: BlockId,
) {
    let (next_hdr, offset) = cursor;
    let advance = |f: &mut FunctionBuilder, bytes: ciliumc_targets::codegen::Operand| {
        f.alu_into(
            offset,
            AluOp::Add,
            ciliumc_targets::codegen::Width::W64,
            offset,
            bytes,
        );
    };
    // Each header kind advances the offset by a differently bounded amount; the verifier keeps
    // those bounds apart (the offset feeds pointer arithmetic) and would walk the rest once per
    // combination of header kinds (3^4), so the offset is forgotten to 0..0x3fff after each step.
    let scratch = f.stack_slot(8);
    // Unrolled walk: the verifier needs a bounded number of steps.
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let generic = f.block();
        let frag_hdr = f.block();
        let step = f.block();
        let not_generic = f.block();
        // One test for the four generic kinds (bit `next_hdr` of a mask): four compares would each
        // reach `generic` knowing the kind as a different constant, and the verifier would walk
        // it once per kind in every step of the walk.
        let in_mask = f.block();
        f.branch(Cond::Gt, next_hdr, 63, not_generic, in_mask);
        f.switch_to(in_mask);
        let mask = f.constant(GENERIC_EXT_HEADERS);
        let shifted = f.alu(AluOp::Rsh, mask, next_hdr);
        let bit = f.alu(AluOp::And, shifted, 1);
        f.branch(Cond::Ne, bit, 0, generic, not_generic);
        f.switch_to(not_generic);
        f.branch32(Cond::Eq, next_hdr, 44, frag_hdr, at_l4);

        // Hop-by-hop, routing, destination options: length in 8-byte units after the first 8;
        // AH: in 4-byte units after the first 8. Both are read as (len + 1) << 3 here and
        // corrected for AH below.
        f.switch_to(generic);
        let masked = f.alu(AluOp::And, offset, 0x3fff);
        let hdr = f.ptr_add(data, masked);
        f.check_packet_bounds(hdr, end, (ETH_HLEN + 8) as u32, invalid);
        let nh = f.load(hdr, ETH_HLEN, Size::B);
        let len = f.load(hdr, ETH_HLEN + 1, Size::B);
        let ah = f.block();
        let not_ah = f.block();
        f.branch32(Cond::Eq, next_hdr, 51, ah, not_ah);
        f.switch_to(ah);
        let units = f.alu(AluOp::Add, len, 2);
        let bytes = f.alu(AluOp::Lsh, units, 2);
        advance(f, bytes.into());
        f.assign(next_hdr, nh);
        f.jump(step);
        f.switch_to(not_ah);
        let units = f.alu(AluOp::Add, len, 1);
        let bytes = f.alu(AluOp::Lsh, units, 3);
        advance(f, bytes.into());
        f.assign(next_hdr, nh);
        f.jump(step);

        f.switch_to(frag_hdr);
        let masked = f.alu(AluOp::And, offset, 0x3fff);
        let hdr = f.ptr_add(data, masked);
        f.check_packet_bounds(hdr, end, (ETH_HLEN + 8) as u32, invalid);
        fragment::ipv6_header(f, hdr, end, fragment);
        let nh = f.load(hdr, ETH_HLEN, Size::B);
        advance(f, 8i64.into());
        f.assign(next_hdr, nh);
        f.jump(step);
        f.switch_to(step);
        let forgotten = super::forget_value(f, scratch, offset, 0x3fff);
        f.assign(offset, forgotten);
    }
    // Still an extension header after the walk: too many to inspect.
    let leftover = f.block();
    for proto in [0i64, 43, 60, 51, 44] {
        let next = f.block();
        f.branch32(Cond::Eq, next_hdr, proto, leftover, next);
        f.switch_to(next);
    }
    f.jump(at_l4);
    f.switch_to(leftover);
    f.jump(invalid);
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
    let mut next = f.current();
    for proto in [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP] {
        f.switch_to(next);
        next = f.block();
        f.branch32(Cond::Eq, p.proto, proto, ports, next);
    }
    f.switch_to(next);
    f.branch32(Cond::Eq, p.proto, icmp_proto, icmp, other);

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
