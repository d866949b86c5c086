//! The policy decision as a global subprogram (`handle_policy`, `handle_policy_egress`, named as
//! Cilium names its policy tail calls).
//!
//! In: a direction's enforced policy. Out: a `.text` function with global linkage that takes the
//! peer's identity, its L4 fields and (when address rules need it) its address as scalars, and
//! returns `reason << 32 | rule`: reason 0 allows, any other value is the drop reason; rule is
//! the deciding rule id (0 for implicit decisions). The entry program calls it once per new flow
//! ([`call`]).
//!
//! Why a global function: the kernel verifies it once, on its own, with unknown arguments, and
//! the caller continues after the call with one unknown result instead of one verifier state per
//! leaf of the decision tree. Program load time then grows with the size of the decision, not
//! with the size of the decision times the paths that reach it, and the kernel's per-function
//! stack-liveness pass walks the smaller function. Costs a bpf-to-bpf call per new flow
//! (established packets never get here).

use std::collections::BTreeMap;

use ciliumc_ir::policy::{Direction, DirectionPolicy, PeerSet};
use ciliumc_targets::codegen::{
    AluOp, Annotation, Cond, Function, FunctionBuilder, ParamKind, Size, VReg,
};
use ciliumc_targets::hooks::Hook;

use super::{ProgramMap, decide, dispatch};

/// The subprogram deciding for `direction`'s policy.
pub fn name(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "handle_policy",
        Direction::Egress => "handle_policy_egress",
    }
}

/// Whether the decision compares peer addresses (rules with CIDR peers): then the address is
/// passed too.
pub fn needs_address(policy: &DirectionPolicy) -> bool {
    policy
        .rules
        .iter()
        .any(|r| matches!(&r.peers, PeerSet::Selected { cidrs, .. } if !cidrs.is_empty()))
}

/// `l4` argument layout: `family << 24 | proto << 16 | port`.
const L4_FAMILY_SHIFT: i64 = 24;
const L4_PROTO_SHIFT: i64 = 16;

/// The subprogram, its parts (when the decision is large) and the maps they own.
pub fn build(
    policy: &DirectionPolicy,
    direction: Direction,
    hook: Hook,
    names: Option<&dispatch::MapNames>,
    notes: Option<&BTreeMap<u32, Annotation>>,
) -> Result<(Vec<Function>, Vec<ProgramMap>), ciliumc_targets::codegen::CodegenError> {
    let with_address = needs_address(policy);
    let params: &[ParamKind] = if with_address {
        &[ParamKind::Scalar; 4]
    } else {
        &[ParamKind::Scalar; 2]
    };
    let mut f = FunctionBuilder::subprogram(name(direction), hook, params);
    let args: Vec<VReg> = (0..params.len()).filter_map(|i| f.param(i)).collect();
    let (identity, l4) = (args[0], args[1]);
    let port = f.alu32(AluOp::And, l4, 0xffff);
    let proto_shifted = f.alu32(AluOp::Rsh, l4, L4_PROTO_SHIFT);
    let proto = f.alu32(AluOp::And, proto_shifted, 0xff);
    let family_shifted = f.alu32(AluOp::Rsh, l4, L4_FAMILY_SHIFT);
    let family = f.alu32(AluOp::And, family_shifted, 0xff);
    // The address in network byte order, as the flow key holds it (two little-endian 8-byte
    // stores put the bytes of both words back in order).
    let peer_slot = f.stack_slot(16);
    if with_address {
        let (lo, hi) = (args[2], args[3]);
        f.stack_store(peer_slot, 0, lo, Size::DW);
        f.stack_store(peer_slot, 8, hi, Size::DW);
    }
    let rule = f.vreg();
    let reason = f.vreg();
    f.assign_const(rule, 0);
    f.assign_const(reason, 0);
    let allow = f.block();
    let drop = f.block();
    let inputs = decide::Inputs {
        identity,
        proto,
        port,
        family,
        peer_slot,
        peer_off: 0,
    };
    let targets = decide::Targets {
        allow,
        drop,
        rule,
        reason,
    };
    let mut parts = dispatch::Parts::new(name(direction), hook);
    let maps = decide::emit_decision(
        &mut f,
        policy,
        direction,
        &inputs,
        &targets,
        names,
        notes,
        Some(&mut parts),
    );
    f.switch_to(allow);
    f.ret(rule);
    f.switch_to(drop);
    let high = f.alu(AluOp::Lsh, reason, 32);
    let result = f.alu(AluOp::Or, high, rule);
    f.ret(result);
    if let Some(e) = parts.error {
        return Err(e);
    }
    let mut functions = vec![f.finish()?];
    functions.extend(parts.functions);
    Ok((functions, maps))
}

/// What the caller passes.
pub struct CallArgs {
    pub identity: VReg,
    pub family: VReg,
    pub proto: VReg,
    pub port: VReg,
    /// The peer address's first and last 8 bytes (network order, loaded little-endian), when
    /// [`needs_address`].
    pub address: Option<(VReg, VReg)>,
}

/// Calls the subprogram; returns (reason, rule), reason 0 for allow.
pub fn call(f: &mut FunctionBuilder, direction: Direction, args: &CallArgs) -> (VReg, VReg) {
    let family = f.alu(AluOp::Lsh, args.family, L4_FAMILY_SHIFT);
    let proto = f.alu(AluOp::Lsh, args.proto, L4_PROTO_SHIFT);
    let high = f.alu(AluOp::Or, family, proto);
    let l4 = f.alu(AluOp::Or, high, args.port);
    let mut call_args = vec![args.identity, l4];
    if let Some((lo, hi)) = args.address {
        call_args.extend([lo, hi]);
    }
    let result = f.call_local(name(direction), &call_args);
    let reason = f.alu(AluOp::Rsh, result, 32);
    let low = f.alu(AluOp::Lsh, result, 32);
    let rule = f.alu(AluOp::Rsh, low, 32);
    (reason, rule)
}

/// Branches on the result of [`call`]: reason 0 to `allow`, else to `drop`.
pub fn branch(
    f: &mut FunctionBuilder,
    reason: VReg,
    allow: ciliumc_targets::codegen::BlockId,
    drop: ciliumc_targets::codegen::BlockId,
) {
    f.branch(Cond::Eq, reason, 0, allow, drop);
}
