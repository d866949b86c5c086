//! The policy decision as code, deciding exactly as the reference evaluator
//! (`ciliumc_ir::evaluator`): deny wins, then allow, then the implicit decisions.
//!
//! In: one direction's [`DirectionPolicy`] and the parsed flow (remote identity, protocol, port,
//! peer address). Out: branches to the allow or drop block with the deciding rule id and drop
//! reason set, and the program's own maps when the optimizer chose one.
//!
//! Structure, cheapest first:
//! 1. the identity part of every rule, flattened (`flatten`): the remote identity selects a leaf
//!    (a binary decision tree over identity intervals in code, or, above
//!    [`IDENTITY_MAP_MIN`] identities, one hash lookup identity → leaf in a map of the program's
//!    own), the leaf selects the outcome by protocol and a decision tree over port segments;
//! 2. address rules (CIDR peers, world-class peers only): deny rules, then, unless an identity rule
//!    already allowed, allow rules — compare chains of masked compares, excepts as further compares;
//! 3. the implicit decisions (host allow on ingress, default deny).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ciliumc_ir::cidr::{Cidr, CidrRule};
use ciliumc_ir::evaluator::DropReason;
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{Direction, DirectionPolicy, L4Match, PeerSet, PortRange, Rule, RuleKind};
use ciliumc_targets::codegen::{AluOp, BlockId, Cond, FunctionBuilder, Size, SlotId, VReg};

use super::ProgramMap;
use super::dispatch;
use super::flatten::{self, Outcome};
use super::maps::{FAMILY_IPV4, FAMILY_IPV6};

/// Identity classes (identities whose leaf differs from the default) from which the leaf is
/// found with one hash lookup instead of a decision tree in code; set by `policy_datapath`
/// benchmarks (docs/performance.md).
pub const IDENTITY_MAP_MIN: usize = 256;

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
pub struct Targets {
    pub allow: BlockId,
    pub drop: BlockId,
    /// Set to the deciding rule id (0 for implicit decisions).
    pub rule: VReg,
    /// Set to the drop reason on the way to `drop`.
    pub reason: VReg,
}

/// Emits the decision for `policy`, starting in the current block. `identity_map` names the map
/// the optimizer may put the identity classes in (`None`: always code). Returns the maps used.
pub fn emit_decision(
    f: &mut FunctionBuilder,
    policy: &DirectionPolicy,
    direction: Direction,
    inputs: &Inputs,
    out: &Targets,
    names: Option<&dispatch::MapNames>,
    parts: &mut dispatch::Parts<'_>,
) -> Vec<ProgramMap> {
    let notes = parts.notes;
    // The code deciding for a rule starts with the rule's annotation.
    let annotate = |f: &mut FunctionBuilder, rule: u32| {
        if let Some(note) = notes.and_then(|n| n.get(&rule)) {
            f.annotate(note.clone());
        }
    };
    if !policy.enforced {
        f.assign_const(out.rule, 0);
        f.jump(out.allow);
        return Vec::new();
    }
    let flat = flatten::flatten(policy);
    let cidr_rules = |kind: RuleKind| -> Vec<&Rule> {
        policy
            .rules
            .iter()
            .filter(|r| {
                r.kind == kind
                    && matches!(&r.peers, PeerSet::Selected { cidrs, .. } if !cidrs.is_empty())
            })
            .collect()
    };
    let (cidr_deny, cidr_allow) = (cidr_rules(RuleKind::Deny), cidr_rules(RuleKind::Allow));
    let implicit = f.block();
    let cidr_allow_block = f.block();
    let cidr_deny_block = if cidr_deny.is_empty() {
        cidr_allow_block
    } else {
        f.block()
    };
    // Set when an identity rule allowed and address denies are still to be checked.
    let allowed = f.vreg();
    f.assign_const(allowed, 0);
    let dispatch_entry = f.current();

    let mut outcome_blocks: BTreeMap<Outcome, BlockId> = BTreeMap::new();
    let mut outcomes: Vec<Outcome> = flat
        .leaves
        .iter()
        .flat_map(|l| {
            l.protocols
                .iter()
                .flat_map(|(_, segs)| segs.iter().map(|s| s.outcome))
                .chain([l.other])
        })
        .collect();
    outcomes.sort();
    outcomes.dedup();
    for o in outcomes {
        let b = f.block();
        f.switch_to(b);
        match o {
            Outcome::Deny(r) => {
                annotate(f, r);
                f.assign_const(out.rule, i64::from(r));
                f.assign_const(out.reason, i64::from(DropReason::PolicyDenyExplicit.code()));
                f.jump(out.drop);
            }
            Outcome::Allow(r) => {
                annotate(f, r);
                f.assign_const(out.rule, i64::from(r));
                if cidr_deny.is_empty() {
                    f.jump(out.allow);
                } else {
                    f.assign_const(allowed, 1);
                    f.jump(cidr_deny_block);
                }
            }
            Outcome::NoMatch => {
                f.assign_const(out.rule, 0);
                f.jump(cidr_deny_block);
            }
        }
        outcome_blocks.insert(o, b);
    }
    // Outcomes read from a map carry the rule in `out.rule`.
    let data = dispatch::DataOutcomes {
        deny: f.block(),
        allow: f.block(),
        no_match: f.block(),
        rule: out.rule,
    };
    f.switch_to(data.deny);
    f.assign_const(out.reason, i64::from(DropReason::PolicyDenyExplicit.code()));
    f.jump(out.drop);
    f.switch_to(data.allow);
    if cidr_deny.is_empty() {
        f.jump(out.allow);
    } else {
        f.assign_const(allowed, 1);
        f.jump(cidr_deny_block);
    }
    f.switch_to(data.no_match);
    f.assign_const(out.rule, 0);
    f.jump(cidr_deny_block);
    f.switch_to(dispatch_entry);
    let maps = dispatch::emit_dispatch(f, &flat, inputs, &outcome_blocks, names, &data, parts);

    // Everything after the tree starts in `cidr_deny_block` (which is `cidr_allow_block` when
    // there are no address denies), reached from every leaf.
    f.switch_to(cidr_deny_block);
    let after_tree = forget_tree_bounds(f, inputs, !cidr_deny.is_empty() || !cidr_allow.is_empty());
    let inputs = &after_tree;
    if !cidr_deny.is_empty() {
        let after = f.block();
        let hit = f.block();
        let world = world_class(f, inputs, after);
        f.switch_to(world);
        let words = peer_words(f, inputs);
        for rule in &cidr_deny {
            let next = f.block();
            let matched = f.block();
            emit_address_rule(f, rule, inputs, &words, matched, next);
            f.switch_to(matched);
            annotate(f, rule.id.0);
            f.assign_const(out.rule, i64::from(rule.id.0));
            f.jump(hit);
            f.switch_to(next);
        }
        f.jump(after);
        f.switch_to(hit);
        f.assign_const(out.reason, i64::from(DropReason::PolicyDenyExplicit.code()));
        f.jump(out.drop);
        f.switch_to(after);
        f.branch32(Cond::Ne, allowed, 0, out.allow, cidr_allow_block);
    }

    if !cidr_deny.is_empty() {
        f.switch_to(cidr_allow_block);
    }
    if cidr_allow.is_empty() {
        f.jump(implicit);
    } else {
        let world = world_class(f, inputs, implicit);
        f.switch_to(world);
        let words = peer_words(f, inputs);
        for rule in &cidr_allow {
            let next = f.block();
            let matched = f.block();
            emit_address_rule(f, rule, inputs, &words, matched, next);
            f.switch_to(matched);
            annotate(f, rule.id.0);
            f.assign_const(out.rule, i64::from(rule.id.0));
            f.jump(out.allow);
            f.switch_to(next);
        }
        f.jump(implicit);
    }

    f.switch_to(implicit);
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
    maps
}

/// The decision inputs for the code after the tree, with the bounds each leaf put on them
/// forgotten (`lower::forget_value`).
///
/// Every leaf of the tree knows the identity (and port) within its own interval. A branch after
/// the tree that one leaf's bounds decide (is the peer the host? in world?) marks the value
/// precise, and then the states of different leaves no longer prune against each other: the code
/// after the tree was verified once per leaf (149 times at 100 rules). Re-read through the stack,
/// the values are the same unknown on every leaf, and that code is verified once. `l4` also
/// forgets protocol and port (address rules test them again).
fn forget_tree_bounds(f: &mut FunctionBuilder, inputs: &Inputs, l4: bool) -> Inputs {
    let scratch = f.stack_slot(8);
    // Identities stay below 2^25 (`NumericIdentity::MAX_CIDR`): the 31 bits kept are enough.
    let identity = super::forget_value(f, scratch, inputs.identity, 0x7fff_ffff);
    let (proto, port) = if l4 {
        (
            super::forget_value(f, scratch, inputs.proto, 0xff),
            super::forget_value(f, scratch, inputs.port, 0xffff),
        )
    } else {
        (inputs.proto, inputs.port)
    };
    Inputs {
        identity,
        proto,
        port,
        ..*inputs
    }
}

/// Continues in the returned block when the peer has no cluster identity (world, world-ipv4,
/// world-ipv6, or a CIDR identity); otherwise jumps to `not_world`.
fn world_class(f: &mut FunctionBuilder, inputs: &Inputs, not_world: BlockId) -> BlockId {
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
    f.branch32(Cond::Eq, scope, 1, world, not_world);
    world
}

/// The address part of one rule: its L4 part, then its CIDR rules.
fn emit_address_rule(
    f: &mut FunctionBuilder,
    rule: &Rule,
    inputs: &Inputs,
    words: &[VReg; 4],
    yes: BlockId,
    no: BlockId,
) {
    let PeerSet::Selected { cidrs, .. } = &rule.peers else {
        f.jump(no);
        return;
    };
    if let Some(l4) = &rule.l4 {
        let l4_ok = f.block();
        emit_l4(f, l4, inputs, l4_ok, no);
        f.switch_to(l4_ok);
    }
    for c in cidrs {
        let next = f.block();
        emit_cidr_rule(f, c, inputs, words, yes, next);
        f.switch_to(next);
    }
    f.jump(no);
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
