//! From the remote identity to the outcome of the flattened identity rules (`flatten`).
//!
//! In: a [`Flat`] table, the decision's inputs and one block per outcome. Out: code that jumps to
//! the outcome block of the packet's identity, protocol and port, and the program's own identity
//! map when one is used. Choices (thresholds in `decide`):
//! - identity → leaf: a binary decision tree over identity intervals (runs of consecutive
//!   identities with the same leaf are one interval), or one hash lookup in a map of the
//!   program's own (`u32 identity` → `u32 leaf`; a miss is the default leaf) for large sets;
//! - leaf: a compare per protocol that has rules, then a binary decision tree over port segments.

use std::collections::BTreeMap;

use ciliumc_targets::codegen::{BlockId, Cond, FunctionBuilder, MapDecl, MapKind, Size, VReg};
use ciliumc_targets::elf::{MapDef, TypeDesc};

use super::ProgramMap;
use super::decide::{IDENTITY_MAP_MIN, Inputs};
use super::flatten::{Flat, Leaf, Outcome, Segment};

/// Value of the identity map: the leaf index.
pub const IDENTITY_MAP_VALUE_SIZE: u32 = 4;

/// Emits the identity dispatch and every leaf; returns the maps it declared.
pub fn emit_dispatch(
    f: &mut FunctionBuilder,
    flat: &Flat,
    inputs: &Inputs,
    outcomes: &BTreeMap<Outcome, BlockId>,
    identity_map: Option<&str>,
) -> Vec<ProgramMap> {
    let leaf_blocks: Vec<BlockId> = flat.leaves.iter().map(|_| f.block()).collect();
    let mut maps = Vec::new();
    match identity_map {
        Some(name) if flat.by_identity.len() >= IDENTITY_MAP_MIN => {
            let max_entries = u32::try_from(flat.by_identity.len()).unwrap_or(u32::MAX);
            let def = MapDef::hash(name, TypeDesc::U32, TypeDesc::U32, max_entries);
            let id = f.map(MapDecl {
                name: name.to_string(),
                kind: MapKind::Hash,
                key_size: 4,
                value_size: IDENTITY_MAP_VALUE_SIZE,
            });
            let key = f.stack_slot(4);
            f.stack_store(key, 0, inputs.identity, Size::W);
            let key_ptr = f.stack_addr(key);
            let hit = f.map_lookup(id, key_ptr);
            let found = f.block();
            f.branch_null(hit, leaf_blocks[flat.others], found);
            f.switch_to(found);
            let leaf = f.load(hit, 0, Size::W);
            let segments: Vec<(u32, u32, BlockId)> = leaf_blocks
                .iter()
                .enumerate()
                .map(|(i, b)| (i as u32, i as u32, *b))
                .collect();
            // Values are leaf indices below the leaf count; the last interval absorbs the rest.
            emit_u32_tree(f, leaf, &close_intervals(segments, leaf_blocks[flat.others]));
            maps.push(ProgramMap {
                def,
                entries: flat
                    .by_identity
                    .iter()
                    .map(|(id, leaf)| (id.to_le_bytes().to_vec(), (*leaf as u32).to_le_bytes().to_vec()))
                    .collect(),
            });
        }
        _ => {
            let mut intervals: Vec<(u32, u32, BlockId)> = Vec::new();
            for (&id, &leaf) in &flat.by_identity {
                match intervals.last_mut() {
                    Some(last) if last.1.checked_add(1) == Some(id) && last.2 == leaf_blocks[leaf] => {
                        last.1 = id
                    }
                    _ => intervals.push((id, id, leaf_blocks[leaf])),
                }
            }
            emit_u32_tree(f, inputs.identity, &close_intervals(intervals, leaf_blocks[flat.others]));
        }
    }
    for (leaf, block) in flat.leaves.iter().zip(&leaf_blocks) {
        f.switch_to(*block);
        emit_leaf(f, leaf, inputs, outcomes);
    }
    maps
}

/// Sorted disjoint intervals completed with `default` into a partition of the u32 space.
fn close_intervals(sorted: Vec<(u32, u32, BlockId)>, default: BlockId) -> Vec<(u32, u32, BlockId)> {
    let mut out = Vec::with_capacity(sorted.len() * 2 + 1);
    let mut next = 0u64;
    for (lo, hi, b) in sorted {
        if u64::from(lo) > next {
            push_merged(&mut out, (next as u32, lo - 1, default));
        }
        push_merged(&mut out, (lo, hi, b));
        next = u64::from(hi) + 1;
    }
    if next <= u64::from(u32::MAX) {
        push_merged(&mut out, (next as u32, u32::MAX, default));
    }
    out
}

fn push_merged(out: &mut Vec<(u32, u32, BlockId)>, iv: (u32, u32, BlockId)) {
    match out.last_mut() {
        Some(last) if last.2 == iv.2 => last.1 = iv.1,
        _ => out.push(iv),
    }
}

/// A balanced binary decision tree over a partition of the u32 space into intervals.
fn emit_u32_tree(f: &mut FunctionBuilder, value: VReg, intervals: &[(u32, u32, BlockId)]) {
    match intervals {
        [] => {}
        [(_, _, b)] => f.jump(*b),
        [(lo, hi, a), (_, _, b)] if lo == hi => {
            f.branch32(Cond::Eq, value, imm32(*lo), *a, *b);
            let _ = hi;
        }
        [(_, _, a), (lo, hi, b)] if lo == hi && *hi == u32::MAX => {
            f.branch32(Cond::Eq, value, imm32(*lo), *b, *a);
        }
        [(_, _, a), (lo, hi, b), (_, _, c)] if lo == hi && a == c => {
            f.branch32(Cond::Eq, value, imm32(*lo), *b, *a);
        }
        _ => {
            let mid = intervals.len() / 2;
            let left = f.block();
            let right = f.block();
            f.branch32(Cond::Lt, value, imm32(intervals[mid].0), left, right);
            f.switch_to(left);
            emit_u32_tree(f, value, &intervals[..mid]);
            f.switch_to(right);
            emit_u32_tree(f, value, &intervals[mid..]);
        }
    }
}

/// A 32-bit immediate as the JMP32 compare sees it (sign-extended bits of the u32).
fn imm32(v: u32) -> i64 {
    i64::from(v as i32)
}

fn emit_leaf(
    f: &mut FunctionBuilder,
    leaf: &Leaf,
    inputs: &Inputs,
    outcomes: &BTreeMap<Outcome, BlockId>,
) {
    let other = outcomes[&leaf.other];
    for (proto, segments) in &leaf.protocols {
        let this = f.block();
        let next = f.block();
        f.branch32(Cond::Eq, inputs.proto, i64::from(*proto), this, next);
        f.switch_to(this);
        let intervals: Vec<(u32, u32, BlockId)> = segments
            .iter()
            .map(|s: &Segment| (u32::from(s.lo), u32::from(s.hi), outcomes[&s.outcome]))
            .collect();
        // Ports are at most 65535: the last segment stands for everything above.
        let mut closed = intervals;
        if let Some(last) = closed.last_mut() {
            last.1 = u32::MAX;
        }
        emit_u32_tree(f, inputs.port, &closed);
        f.switch_to(next);
    }
    f.jump(other);
}
