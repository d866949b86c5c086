//! The policy decision as code: deny rules, then allow rules, then the implicit decisions, in
//! exactly the order of the reference evaluator (`ciliumc_ir::evaluator`).
//!
//! In: one direction's [`DirectionPolicy`] and the parsed flow (remote identity, protocol, port,
//! peer address). Out: branches to the allow or drop block with the deciding rule id and drop
//! reason set. The optimizer's choices per construct:
//! - identity sets: a compare chain up to [`CHAIN_MAX`] members, a binary decision tree above;
//! - L4: per protocol, port ranges merged and tested as interval compares;
//! - CIDRs: masked compares on the peer address, excepts as further masked compares.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ciliumc_ir::cidr::{Cidr, CidrRule};
use ciliumc_ir::evaluator::DropReason;
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{Direction, DirectionPolicy, L4Match, PeerSet, PortRange, Rule, RuleKind};
use ciliumc_targets::codegen::{AluOp, BlockId, Cond, FunctionBuilder, Size, SlotId, VReg};

use super::maps::{FAMILY_IPV4, FAMILY_IPV6};

/// Identity sets up to this size are tested with a chain of equality compares.
pub const CHAIN_MAX: usize = 4;

/// What the decision reads.
pub struct Inputs {
    pub identity: VReg,
    pub proto: VReg,
    pub port: VReg,
    pub family: VReg,
    /// Slot holding the peer address (network order) at `peer_off`.
    pub peer_slot: SlotId,
    pub peer_off: u32,
}

/// Where the decision goes.
pub struct Outcome {
    pub allow: BlockId,
    pub drop: BlockId,
    /// Set to the deciding rule id (0 for implicit decisions).
    pub rule: VReg,
    /// Set to the drop reason on the way to `drop`.
    pub reason: VReg,
}

/// Emits the decision for `policy`, starting in the current block.
pub fn emit_decision(
    f: &mut FunctionBuilder,
    policy: &DirectionPolicy,
    direction: Direction,
    inputs: &Inputs,
    out: &Outcome,
) {
    if !policy.enforced {
        f.assign_const(out.rule, 0);
        f.jump(out.allow);
        return;
    }
    for kind in [RuleKind::Deny, RuleKind::Allow] {
        for rule in policy.rules.iter().filter(|r| r.kind == kind) {
            let hit = f.block();
            emit_rule(f, rule, inputs, hit);
            let next = f.current();
            f.switch_to(hit);
            f.assign_const(out.rule, i64::from(rule.id.0));
            match kind {
                RuleKind::Deny => {
                    f.assign_const(out.reason, i64::from(DropReason::PolicyDenyExplicit.code()));
                    f.jump(out.drop);
                }
                RuleKind::Allow => f.jump(out.allow),
            }
            f.switch_to(next);
        }
    }
    f.assign_const(out.rule, 0);
    if direction == Direction::Ingress && policy.allow_localhost {
        let deny = f.block();
        f.branch32(
            Cond::Eq,
            inputs.identity,
            i64::from(NumericIdentity::HOST.0),
            out.allow,
            deny,
        );
        f.switch_to(deny);
    }
    if policy.default_deny {
        f.assign_const(out.reason, i64::from(DropReason::PolicyDenied.code()));
        f.jump(out.drop);
    } else {
        f.jump(out.allow);
    }
}

/// Tests one rule; on a match jumps to `hit`, otherwise continues in a fresh current block.
fn emit_rule(f: &mut FunctionBuilder, rule: &Rule, inputs: &Inputs, hit: BlockId) {
    let miss = f.block();
    if let Some(l4) = &rule.l4 {
        let l4_ok = f.block();
        emit_l4(f, l4, inputs, l4_ok, miss);
        f.switch_to(l4_ok);
    }
    emit_peers(f, &rule.peers, inputs, hit, miss);
    f.switch_to(miss);
}

/// Ranges per protocol, merged and sorted, so each protocol is tested once.
fn ranges_by_protocol(l4: &[L4Match]) -> BTreeMap<u8, Vec<PortRange>> {
    let mut by: BTreeMap<u8, Vec<PortRange>> = BTreeMap::new();
    for m in l4 {
        by.entry(m.protocol.number()).or_default().push(m.ports);
    }
    for ranges in by.values_mut() {
        ranges.sort();
        let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for r in ranges.iter() {
            match merged.last_mut() {
                Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => {
                    last.hi = last.hi.max(r.hi)
                }
                _ => merged.push(*r),
            }
        }
        *ranges = merged;
    }
    by
}

fn emit_l4(f: &mut FunctionBuilder, l4: &[L4Match], inputs: &Inputs, yes: BlockId, no: BlockId) {
    for (proto, ranges) in ranges_by_protocol(l4) {
        let this_proto = f.block();
        let next_proto = f.block();
        f.branch32(
            Cond::Eq,
            inputs.proto,
            i64::from(proto),
            this_proto,
            next_proto,
        );
        f.switch_to(this_proto);
        for r in ranges {
            if r.is_any() {
                f.jump(yes);
                break;
            }
            let next = f.block();
            if r.lo == r.hi {
                f.branch32(Cond::Eq, inputs.port, i64::from(r.lo), yes, next);
            } else {
                let above_lo = f.block();
                f.branch32(Cond::Lt, inputs.port, i64::from(r.lo), next, above_lo);
                f.switch_to(above_lo);
                f.branch32(Cond::Le, inputs.port, i64::from(r.hi), yes, next);
            }
            f.switch_to(next);
        }
        if !f.is_terminated() {
            f.jump(next_proto);
        }
        f.switch_to(next_proto);
    }
    f.jump(no);
}

fn emit_peers(
    f: &mut FunctionBuilder,
    peers: &PeerSet,
    inputs: &Inputs,
    yes: BlockId,
    no: BlockId,
) {
    let (identities, cidrs) = match peers {
        PeerSet::All => {
            f.jump(yes);
            return;
        }
        PeerSet::Selected { identities, cidrs } => (identities, cidrs),
    };
    let after_ids = if cidrs.is_empty() { no } else { f.block() };
    let ids: Vec<u32> = identities.iter().map(|i| i.0).collect();
    emit_identity_set(f, inputs.identity, &ids, yes, after_ids);
    if cidrs.is_empty() {
        return;
    }
    f.switch_to(after_ids);
    // CIDR rules only match peers without a cluster identity (world and CIDR identities).
    let world = f.block();
    let mut next = f.current();
    for id in [
        NumericIdentity::WORLD,
        NumericIdentity::WORLD_IPV4,
        NumericIdentity::WORLD_IPV6,
    ] {
        f.switch_to(next);
        next = f.block();
        f.branch32(Cond::Eq, inputs.identity, i64::from(id.0), world, next);
    }
    f.switch_to(next);
    let scope = f.alu32(AluOp::Rsh, inputs.identity, 24);
    f.branch32(Cond::Eq, scope, 1, world, no);
    f.switch_to(world);
    let words = peer_words(f, inputs);
    for rule in cidrs {
        let next = f.block();
        emit_cidr_rule(f, rule, inputs, &words, yes, next);
        f.switch_to(next);
    }
    f.jump(no);
}

/// The peer address in host order: four 32-bit words (IPv4 in word 0).
fn peer_words(f: &mut FunctionBuilder, inputs: &Inputs) -> [VReg; 4] {
    let mut words = [inputs.identity; 4];
    for (i, w) in words.iter_mut().enumerate() {
        let raw = f.stack_load(inputs.peer_slot, inputs.peer_off + 4 * i as u32, Size::W);
        *w = f.bswap(32, raw);
    }
    words
}

fn emit_cidr_rule(
    f: &mut FunctionBuilder,
    rule: &CidrRule,
    inputs: &Inputs,
    words: &[VReg; 4],
    yes: BlockId,
    no: BlockId,
) {
    let inside = f.block();
    emit_cidr(f, &rule.cidr, inputs, words, inside, no);
    f.switch_to(inside);
    for except in &rule.except {
        let next = f.block();
        emit_cidr(f, except, inputs, words, no, next);
        f.switch_to(next);
    }
    f.jump(yes);
}

/// `if peer in cidr goto yes else goto no`, as a family check and masked word compares.
fn emit_cidr(
    f: &mut FunctionBuilder,
    cidr: &Cidr,
    inputs: &Inputs,
    words: &[VReg; 4],
    yes: BlockId,
    no: BlockId,
) {
    let (family, net): (u32, Vec<u32>) = match cidr.addr() {
        IpAddr::V4(a) => (FAMILY_IPV4, vec![u32::from(a)]),
        IpAddr::V6(a) => {
            let o = a.octets();
            (
                FAMILY_IPV6,
                (0..4)
                    .map(|i| {
                        u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
                    })
                    .collect(),
            )
        }
    };
    let family_ok = f.block();
    f.branch32(Cond::Eq, inputs.family, i64::from(family), family_ok, no);
    f.switch_to(family_ok);
    let mut remaining = u32::from(cidr.prefix_len());
    for (i, net_word) in net.iter().enumerate() {
        if remaining == 0 {
            break;
        }
        let bits = remaining.min(32);
        remaining -= bits;
        let mask: u32 = if bits == 32 {
            u32::MAX
        } else {
            !(u32::MAX >> bits)
        };
        let next = f.block();
        let masked = if bits == 32 {
            words[i]
        } else {
            f.alu32(AluOp::And, words[i], i64::from(mask))
        };
        f.branch32(
            Cond::Eq,
            masked,
            i64::from(*net_word & mask) as i32 as i64,
            next,
            no,
        );
        f.switch_to(next);
    }
    f.jump(yes);
}

/// `if id in ids goto yes else goto no` over sorted ids: a compare chain for small sets, a
/// balanced binary decision tree above.
fn emit_identity_set(f: &mut FunctionBuilder, id: VReg, ids: &[u32], yes: BlockId, no: BlockId) {
    if ids.len() <= CHAIN_MAX {
        for &k in ids {
            let next = f.block();
            f.branch32(Cond::Eq, id, i64::from(k) as i32 as i64, yes, next);
            f.switch_to(next);
        }
        f.jump(no);
        return;
    }
    let mid = ids.len() / 2;
    let left = f.block();
    let right = f.block();
    f.branch32(Cond::Lt, id, i64::from(ids[mid]) as i32 as i64, left, right);
    f.switch_to(left);
    emit_identity_set(f, id, &ids[..mid], yes, no);
    f.switch_to(right);
    emit_identity_set(f, id, &ids[mid..], yes, no);
}
