//! The IPv6 extension-header walk, as a global subprogram (Cilium's `ipv6_hdrlen_offset`).
//!
//! In: the context and the IPv6 header's next header, when that is an extension header (the
//! parser calls this only then). Out, as one `u64` ([`WalkResult`] layout): the upper-layer
//! protocol and its offset after the Ethernet header, the fragment header that makes the packet a
//! fragment (if any) and its kind, or a drop reason.
//!
//! Why a subprogram: the walk is four unrolled steps with three kinds of header each. Inline, the
//! verifier walked it inside the entry program, where every explored branch costs a liveness pass
//! over the whole entry program (kernel 6.18); compiling it out halved the 10-rule program's load
//! time in an experiment (docs/performance.md, session 6). A global function is verified once, on
//! its own, and the caller goes on after the call in one state. Packets with extension headers pay
//! one bpf-to-bpf call.
//!
//! What it decides (unchanged from the inline walk): at most [`MAX_IPV6_EXT_HEADERS`] headers are
//! passed, more is invalid (134), as is a header cut short. A fragment header with a non-zero
//! offset (a later fragment) ends the walk at once. One with MF set and offset 0 (a first
//! fragment) is remembered, and when TCP, UDP or SCTP follows it directly, the 4 bytes of ports
//! must be there (else 135); the walk then goes on. An atomic fragment (offset 0, MF clear) is not
//! a fragment (RFC 6946).

use ciliumc_targets::codegen::{
    AluOp, BlockId, CodegenError, Cond, Function, FunctionBuilder, Operand, ParamKind, Size, VReg,
    Width,
};
use ciliumc_targets::hooks::Hook;

use super::{
    DROP_INVALID, ETH_HLEN, branch_in_mask, dispatch_proto, fragment::DROP_CT_INVALID_HDR,
    returning,
};
use crate::lower::forget_value;

/// IPv6 extension headers walked before the L4 header; more than this many is malformed.
pub const MAX_IPV6_EXT_HEADERS: usize = 4;
/// The extension headers the walk passes by their length field: hop-by-hop options (0), routing
/// (43), AH (51) and destination options (60), as bits of a mask indexed by next header.
const GENERIC_EXT_HEADERS: i64 = (1 << 0) | (1 << 43) | (1 << 51) | (1 << 60);
/// Every extension header the walk handles: the generic ones and the fragment header (44). The
/// parser calls the walk when the IPv6 header's next header is one of these.
pub const EXT_HEADERS: i64 = GENERIC_EXT_HEADERS | (1 << IPPROTO_FRAGMENT);
const IPPROTO_FRAGMENT: i64 = 44;

/// Fragment kinds in the result.
pub const FRAG_NONE: i64 = 0;
pub const FRAG_FIRST: i64 = 1;
pub const FRAG_LATER: i64 = 2;

/// The walk's result, one `u64`. The drop reason and the kind sit where the fragment code's
/// result has its own (`fragment::FragResult`), so that the parser decodes both alike.
pub struct WalkResult;

impl WalkResult {
    /// Upper-layer protocol (bits 0..8).
    pub const NEXT_HEADER_MASK: i64 = 0xff;
    /// Offset of the upper-layer header after the Ethernet header (bits 8..22).
    pub const L4_OFFSET_SHIFT: i64 = 8;
    pub const OFFSET_MASK: i64 = 0x3fff;
    /// Drop reason, 0 for none (bits 32..40, as every parser subprogram's).
    pub const REASON_SHIFT: i64 = super::RESULT_REASON_SHIFT;
    /// `FRAG_*` (bits 40..42).
    pub const KIND_SHIFT: i64 = 40;
    /// Offset of the fragment header after the Ethernet header (bits 48..62), for a fragment.
    pub const FRAG_OFFSET_SHIFT: i64 = 48;
}

/// The walk's fragment state between steps: `kind << 16 | header offset`.
const FRAG_STATE_KIND_SHIFT: i64 = 16;
const FRAG_STATE_MASK: i64 = 0x3_ffff;

/// Builds the subprogram `name(ctx, next_header)`.
pub fn function(name: &str, hook: Hook) -> Result<Function, CodegenError> {
    let mut f = FunctionBuilder::subprogram(name, hook, &[ParamKind::Ctx, ParamKind::Scalar]);
    let Some(first) = f.param(1) else {
        return Err(CodegenError::Internal {
            func: name.to_string(),
            msg: "walk without its next-header parameter".into(),
        });
    };
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    let invalid = returning(&mut f, DROP_INVALID << WalkResult::REASON_SHIFT);
    let short = returning(&mut f, DROP_CT_INVALID_HDR << WalkResult::REASON_SHIFT);

    let next_hdr = f.alu(AluOp::And, first, 0xff);
    let offset = f.vreg();
    f.assign_const(offset, 40);
    let frag = f.vreg();
    f.assign_const(frag, 0);
    let at_l4 = f.block();
    let cursor = Cursor {
        data,
        end,
        next_hdr,
        offset,
        frag,
    };
    walk(&mut f, &cursor, (invalid, short), at_l4);

    f.switch_to(at_l4);
    let l4_offset = f.alu(AluOp::Lsh, offset, WalkResult::L4_OFFSET_SHIFT);
    let result = f.alu(AluOp::Or, next_hdr, l4_offset);
    let frag_offset = f.alu(AluOp::And, frag, WalkResult::OFFSET_MASK);
    let frag_offset = f.alu(AluOp::Lsh, frag_offset, WalkResult::FRAG_OFFSET_SHIFT);
    let result = f.alu(AluOp::Or, result, frag_offset);
    let kind = f.alu(AluOp::Rsh, frag, FRAG_STATE_KIND_SHIFT);
    let kind = f.alu(AluOp::Lsh, kind, WalkResult::KIND_SHIFT);
    let result = f.alu(AluOp::Or, result, kind);
    f.ret(result);
    f.finish()
}

/// The walk's registers: next header, offset of that header after the Ethernet header (starts
/// at 40), and the fragment state.
struct Cursor {
    data: VReg,
    end: VReg,
    next_hdr: VReg,
    offset: VReg,
    frag: VReg,
}

/// The unrolled walk; jumps to `at_l4` at the upper-layer header.
fn walk(f: &mut FunctionBuilder, c: &Cursor, (invalid, short): (BlockId, BlockId), at_l4: BlockId) {
    let advance = |f: &mut FunctionBuilder, bytes: Operand| {
        f.alu_into(c.offset, AluOp::Add, Width::W64, c.offset, bytes);
    };
    // Each header kind advances the offset by a differently bounded amount; the verifier keeps
    // those bounds apart (the offset feeds pointer arithmetic) and would walk the rest once per
    // combination of header kinds, so offset and fragment state are forgotten after each step.
    let scratch = f.stack_slot(8);
    let frag_scratch = f.stack_slot(8);
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let generic = f.block();
        let frag_hdr = f.block();
        let step = f.block();
        let not_generic = f.block();
        // One test for the four generic kinds: four compares would each reach `generic` knowing
        // the kind as a different constant, and the verifier would walk it once per kind in
        // every step.
        branch_in_mask(f, c.next_hdr, GENERIC_EXT_HEADERS, (generic, not_generic));
        f.switch_to(not_generic);
        f.branch32(Cond::Eq, c.next_hdr, IPPROTO_FRAGMENT, frag_hdr, at_l4);

        // Hop-by-hop, routing, destination options: length in 8-byte units after the first 8;
        // AH: in 4-byte units after the first 8.
        f.switch_to(generic);
        let masked = f.alu(AluOp::And, c.offset, WalkResult::OFFSET_MASK);
        let hdr = f.ptr_add(c.data, masked);
        f.check_packet_bounds(hdr, c.end, (ETH_HLEN + 8) as u32, invalid);
        let nh = f.load(hdr, ETH_HLEN, Size::B);
        let len = f.load(hdr, ETH_HLEN + 1, Size::B);
        let ah = f.block();
        let not_ah = f.block();
        f.branch32(Cond::Eq, c.next_hdr, 51, ah, not_ah);
        // (len + extra) << shift bytes: AH (len + 2) 4-byte units, the others (len + 1) 8-byte.
        for (block, extra, shift) in [(ah, 2, 2), (not_ah, 1, 3)] {
            f.switch_to(block);
            let units = f.alu(AluOp::Add, len, extra);
            let bytes = f.alu(AluOp::Lsh, units, shift);
            advance(f, bytes.into());
            f.assign(c.next_hdr, nh);
            f.jump(step);
        }

        f.switch_to(frag_hdr);
        let masked = f.alu(AluOp::And, c.offset, WalkResult::OFFSET_MASK);
        let hdr = f.ptr_add(c.data, masked);
        f.check_packet_bounds(hdr, c.end, (ETH_HLEN + 8) as u32, invalid);
        fragment_header(f, c, (hdr, masked), short);
        let nh = f.load(hdr, ETH_HLEN, Size::B);
        advance(f, 8i64.into());
        f.assign(c.next_hdr, nh);
        f.jump(step);

        f.switch_to(step);
        let forgotten = forget_value(f, scratch, c.offset, WalkResult::OFFSET_MASK);
        f.assign(c.offset, forgotten);
        let forgotten = forget_value(f, frag_scratch, c.frag, FRAG_STATE_MASK);
        f.assign(c.frag, forgotten);
    }
    // Still an extension header after the walk: too many to inspect.
    branch_in_mask(f, c.next_hdr, EXT_HEADERS, (invalid, at_l4));
}

/// At a fragment header `hdr` (at `offset`, 8 bytes checked): a later fragment returns at once;
/// a first fragment is remembered in the fragment state (its ports checked when they follow);
/// control continues in the block left current.
fn fragment_header(
    f: &mut FunctionBuilder,
    c: &Cursor,
    (hdr, offset): (VReg, VReg),
    short: BlockId,
) {
    let (field, offset_bits) = super::ipv6_fragment_offset(f, hdr);
    let later = f.block();
    let not_later = f.block();
    f.branch32(Cond::Ne, offset_bits, 0, later, not_later);

    f.switch_to(later);
    let at = f.alu(AluOp::Lsh, offset, WalkResult::FRAG_OFFSET_SHIFT);
    let result = f.alu(AluOp::Or, at, FRAG_LATER << WalkResult::KIND_SHIFT);
    f.ret(result);

    f.switch_to(not_later);
    // MF (0x0001) as the little-endian load sees it.
    let more = f.alu32(AluOp::And, field, 0x0100);
    let first = f.block();
    let walk_on = f.block();
    f.branch32(Cond::Ne, more, 0, first, walk_on);
    f.switch_to(first);
    let ports = f.block();
    let mark = f.block();
    let nh = f.load(hdr, ETH_HLEN, Size::B);
    dispatch_proto(f, nh, -1, ports, mark, mark);
    f.switch_to(ports);
    f.check_packet_bounds(hdr, c.end, (ETH_HLEN + 8 + 4) as u32, short);
    f.jump(mark);
    f.switch_to(mark);
    f.alu_into(
        c.frag,
        AluOp::Or,
        Width::W64,
        offset,
        FRAG_FIRST << FRAG_STATE_KIND_SHIFT,
    );
    f.jump(walk_on);
    f.switch_to(walk_on);
}
