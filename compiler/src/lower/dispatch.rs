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
/// Leaf map key: `{u32 prefixlen; be32 leaf; u8 proto; be16 port; u8 pad}`; value
/// `{u32 kind (0 deny, 1 allow, 2 no match); u32 rule}`.
pub const LEAF_KEY_SIZE: u32 = 12;
pub const LEAF_VALUE_SIZE: u32 = 8;
/// Port segments (summed over leaves) above which leaves are data in an LPM map, not code:
/// code grows by about four instructions per segment and the kernel's load time with it.
pub const LEAF_MAP_MIN_SEGMENTS: usize = 4096;

/// Names of a program's own maps.
pub struct MapNames {
    pub identity: String,
    pub leaves: String,
}

/// Blocks the dispatch jumps to when leaves are data: `rule` holds the rule id.
pub struct DataOutcomes {
    pub deny: BlockId,
    pub allow: BlockId,
    pub no_match: BlockId,
    pub rule: VReg,
}

/// Emits the identity dispatch and every leaf; returns the maps it declared. A decision too
/// large for one function is split into `parts` ([`Parts`]).
pub fn emit_dispatch(
    f: &mut FunctionBuilder,
    flat: &Flat,
    inputs: &Inputs,
    outcomes: &BTreeMap<Outcome, BlockId>,
    names: Option<&MapNames>,
    data: &DataOutcomes,
    parts: &mut Parts<'_>,
) -> Vec<ProgramMap> {
    let segments: usize = flat.leaves.iter().map(Leaf::segments).sum();
    if let Some(names) = names.filter(|_| segments >= LEAF_MAP_MIN_SEGMENTS) {
        return emit_data_dispatch(f, flat, inputs, names, data);
    }
    let mut maps = Vec::new();
    // The dispatch key (identity, or leaf index from the identity map) partitioned into leaves.
    let (key, partition) = match names {
        Some(names) if flat.by_identity.len() >= IDENTITY_MAP_MIN => {
            let name = names.identity.as_str();
            let miss = f.block();
            let keyed = f.block();
            let leaf = f.vreg();
            let (found, map) = identity_lookup(f, flat, inputs, name, miss);
            f.assign(leaf, found);
            f.jump(keyed);
            f.switch_to(miss);
            f.assign_const(leaf, flat.others as i64);
            f.jump(keyed);
            f.switch_to(keyed);
            maps.push(map);
            let by_index = (0..flat.leaves.len())
                .map(|i| (i as u32, i as u32, i))
                .collect();
            // Values are leaf indices below the leaf count; the last interval absorbs the rest.
            (leaf, close_intervals(by_index, flat.others))
        }
        _ => {
            let mut intervals: Vec<(u32, u32, usize)> = Vec::new();
            for (&id, &leaf) in &flat.by_identity {
                match intervals.last_mut() {
                    Some(last) if last.1.checked_add(1) == Some(id) && last.2 == leaf => {
                        last.1 = id
                    }
                    _ => intervals.push((id, id, leaf)),
                }
            }
            (inputs.identity, close_intervals(intervals, flat.others))
        }
    };
    if estimated_insns(flat, &partition) > SPLIT_MIN_INSNS {
        emit_uncovered_check(f, flat, inputs, data.no_match);
        emit_parts(f, flat, key, inputs, &partition, data, parts);
    } else {
        emit_tree_and_leaves(f, flat, key, inputs, &partition, outcomes);
    }
    maps
}

/// The tree over `partition` (key intervals → leaf index) and the leaves it reaches.
fn emit_tree_and_leaves(
    f: &mut FunctionBuilder,
    flat: &Flat,
    key: VReg,
    inputs: &Inputs,
    partition: &[(u32, u32, usize)],
    outcomes: &BTreeMap<Outcome, BlockId>,
) {
    let mut leaf_blocks: BTreeMap<usize, BlockId> = BTreeMap::new();
    let tree: Vec<(u32, u32, BlockId)> = partition
        .iter()
        .map(|&(lo, hi, leaf)| {
            (
                lo,
                hi,
                *leaf_blocks.entry(leaf).or_insert_with(|| f.block()),
            )
        })
        .collect();
    emit_u32_tree(f, key, &tree);
    for (leaf, block) in leaf_blocks {
        f.switch_to(block);
        emit_leaf(f, &flat.leaves[leaf], inputs, outcomes);
    }
}

/// Above this many (estimated) instructions the tree and leaves are split into parts
/// ([`Parts`]); below, they stay in the program, where a new flow pays no call. A bpf-to-bpf call
/// and its return cost about 20 ns per new flow on the benchmark machine (AMD, SRSO "Safe RET":
/// every return goes through the return thunk), against load time that grows quadratically with
/// the tree's size in one function. 512 (about 40 single-port identity rules) is the largest tree
/// that keeps program load near 5 ms in the `policy_datapath` benchmark (docs/performance.md).
pub const SPLIT_MIN_INSNS: usize = 512;
/// Estimated instructions per part. Each part is verified on its own, so its load cost grows
/// with its size squared, while every part also costs a function's fixed work in codegen and the
/// object. 512 loads as fast as 256 did (100 and 1,000 rules, `policy_datapath`) with half the
/// parts; a new flow still calls exactly one part.
pub const PART_MAX_INSNS: usize = 512;

/// Base name of `direction`'s parts (after Cilium's policy tail calls).
pub fn parts_base(direction: ciliumc_ir::policy::Direction) -> &'static str {
    match direction {
        ciliumc_ir::policy::Direction::Ingress => "handle_policy",
        ciliumc_ir::policy::Direction::Egress => "handle_policy_egress",
    }
}

/// Instructions a tree and its leaves take, about: two per interval, four per port segment, two
/// per protocol of each distinct leaf.
fn estimated_insns(flat: &Flat, partition: &[(u32, u32, usize)]) -> usize {
    let mut leaves: Vec<usize> = partition.iter().map(|p| p.2).collect();
    leaves.sort_unstable();
    leaves.dedup();
    2 * partition.len()
        + leaves
            .iter()
            .map(|&l| 4 * flat.leaves[l].segments() + 2 * flat.leaves[l].protocols.len())
            .sum::<usize>()
}

/// Where the parts of a large decision go: global subprograms named `<base>_part<i>`, each
/// deciding for a run of key intervals and returning `kind << 32 | rule` (kind as in the leaf
/// map: 0 deny, 1 allow, 2 no match).
///
/// Why: the kernel's stack-liveness pass (6.18) walks the whole function being verified after
/// every explored branch that visited new instructions, so verifying one function costs about
/// branches × size: quadratic in the decision's size. A global function is verified once, on its
/// own, and the caller continues after the call in one state; parts of bounded size make load
/// time linear (docs/performance.md). Each new flow pays one bpf-to-bpf call.
pub struct Parts<'a> {
    pub base: String,
    pub hook: ciliumc_targets::hooks::Hook,
    /// Rule annotations, placed on each part's outcome for its rule (as in the program).
    pub notes: Option<&'a BTreeMap<u32, ciliumc_targets::codegen::Annotation>>,
    pub functions: Vec<ciliumc_targets::codegen::Function>,
    pub error: Option<ciliumc_targets::codegen::CodegenError>,
}

impl<'a> Parts<'a> {
    pub fn new(
        base: &str,
        hook: ciliumc_targets::hooks::Hook,
        notes: Option<&'a BTreeMap<u32, ciliumc_targets::codegen::Annotation>>,
    ) -> Parts<'a> {
        Parts {
            base: base.to_string(),
            hook,
            notes,
            functions: Vec::new(),
            error: None,
        }
    }

    /// Whether `name` is one of the parts named after `base`.
    pub fn is_part(base: &str, name: &str) -> bool {
        name.strip_prefix(base)
            .and_then(|rest| rest.strip_prefix("_part"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// Consecutive index ranges covering `partition`, each as long as it stays within
/// [`PART_MAX_INSNS`] (a single interval whose leaf is larger stands alone).
fn split_runs(flat: &Flat, partition: &[(u32, u32, usize)]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for end in 1..=partition.len() {
        if end - start > 1 && estimated_insns(flat, &partition[start..end]) > PART_MAX_INSNS {
            runs.push(start..end - 1);
            start = end - 1;
        }
    }
    if start < partition.len() {
        runs.push(start..partition.len());
    }
    runs
}

/// Splits `partition` into runs of bounded size, emits each as a part and, here, a tree over the
/// runs that calls the part and sends its result to `data`'s outcome blocks.
fn emit_parts(
    f: &mut FunctionBuilder,
    flat: &Flat,
    key: VReg,
    inputs: &Inputs,
    partition: &[(u32, u32, usize)],
    data: &DataOutcomes,
    parts: &mut Parts<'_>,
) {
    use ciliumc_targets::codegen::{AluOp, ParamKind};
    let runs: Vec<&[(u32, u32, usize)]> = split_runs(flat, partition)
        .into_iter()
        .map(|r| &partition[r])
        .collect();

    let port_proto = {
        let proto = f.alu(AluOp::Lsh, inputs.proto, 16);
        f.alu(AluOp::Or, proto, inputs.port)
    };
    let result = f.vreg();
    let decode = f.block();
    let mut tree = Vec::with_capacity(runs.len());
    for run in &runs {
        let index = parts.functions.len();
        let name = format!("{}_part{index}", parts.base);
        let call = f.block();
        tree.push((run[0].0, run[run.len() - 1].1, call));
        let here = f.current();
        f.switch_to(call);
        let r = f.call_local(&name, &[key, port_proto]);
        f.assign(result, r);
        f.jump(decode);
        f.switch_to(here);

        let mut g = FunctionBuilder::subprogram(&name, parts.hook, &[ParamKind::Scalar; 2]);
        let (Some(part_key), Some(l4)) = (g.param(0), g.param(1)) else {
            // Unreachable (the builder made both parameters), but a call above now names a
            // function that will not exist: fail the lowering rather than emit it.
            parts
                .error
                .get_or_insert(ciliumc_targets::codegen::CodegenError::Internal {
                    func: name,
                    msg: "part without its parameters".into(),
                });
            continue;
        };
        let port = g.alu32(AluOp::And, l4, 0xffff);
        let proto_shifted = g.alu32(AluOp::Rsh, l4, 16);
        let proto = g.alu32(AluOp::And, proto_shifted, 0xff);
        let part_inputs = Inputs {
            identity: part_key,
            proto,
            port,
            ..*inputs
        };
        let mut outcomes = BTreeMap::new();
        for &(_, _, leaf) in run.iter() {
            let l = &flat.leaves[leaf];
            let all = l
                .protocols
                .iter()
                .flat_map(|(_, segs)| segs.iter().map(|s| s.outcome))
                .chain([l.other]);
            for o in all {
                outcomes.entry(o).or_insert_with(|| g.block());
            }
        }
        let entry = g.current();
        for (o, b) in &outcomes {
            g.switch_to(*b);
            let annotated = match o {
                Outcome::Deny(r) | Outcome::Allow(r) => parts.notes.and_then(|n| n.get(r)),
                Outcome::NoMatch => None,
            };
            if let Some(note) = annotated {
                g.annotate(note.clone());
            }
            let (kind, rule) = match o {
                Outcome::Deny(r) => (0i64, *r),
                Outcome::Allow(r) => (1, *r),
                Outcome::NoMatch => (2, 0),
            };
            g.ret((kind << 32) | i64::from(rule));
        }
        g.switch_to(entry);
        // The caller's tree guarantees the key is within the run; the verifier does not know
        // that, so the run's ends stand for everything beyond them.
        let mut closed = run.to_vec();
        closed[0].0 = 0;
        if let Some(last) = closed.last_mut() {
            last.1 = u32::MAX;
        }
        emit_tree_and_leaves(&mut g, flat, part_key, &part_inputs, &closed, &outcomes);
        match g.finish() {
            Ok(func) => parts.functions.push(func),
            Err(e) => {
                parts.error.get_or_insert(e);
            }
        }
    }
    emit_u32_tree(f, key, &tree);
    f.switch_to(decode);
    let kind = f.alu(AluOp::Rsh, result, 32);
    let low = f.alu(AluOp::Lsh, result, 32);
    let rule = f.alu(AluOp::Rsh, low, 32);
    f.assign(data.rule, rule);
    let not_deny = f.block();
    f.branch32(Cond::Eq, kind, 0, data.deny, not_deny);
    f.switch_to(not_deny);
    f.branch32(Cond::Eq, kind, 1, data.allow, data.no_match);
}

/// `leaf = identity_map[identity]`; a miss jumps to `miss`. Returns the leaf register (valid in
/// the block the function leaves current) and the map with its entries.
fn identity_lookup(
    f: &mut FunctionBuilder,
    flat: &Flat,
    inputs: &Inputs,
    name: &str,
    miss: BlockId,
) -> (VReg, ProgramMap) {
    let max_entries = u32::try_from(flat.by_identity.len().max(1)).unwrap_or(u32::MAX);
    let def = MapDef::hash(name, TypeDesc::U32, TypeDesc::U32, max_entries);
    let id = f.map(MapDecl {
        name: name.to_string(),
        kind: MapKind::Hash,
        key_size: 4,
        value_size: IDENTITY_MAP_VALUE_SIZE,
    });
    let hit = f.map_lookup_u32(id, inputs.identity);
    let found = f.block();
    f.branch_null(hit, miss, found);
    f.switch_to(found);
    let leaf = f.load(hit, 0, Size::W);
    let entries = flat
        .by_identity
        .iter()
        .map(|(id, leaf)| {
            let leaf = u32::try_from(*leaf).unwrap_or(u32::MAX);
            (id.to_le_bytes().to_vec(), leaf.to_le_bytes().to_vec())
        })
        .collect();
    (leaf, ProgramMap { def, entries })
}

/// Leaves as data: `leaf` from the identity map (a miss is the default leaf), then one LPM
/// lookup of `(leaf, protocol, port)` gives the outcome kind and rule.
fn emit_data_dispatch(
    f: &mut FunctionBuilder,
    flat: &Flat,
    inputs: &Inputs,
    names: &MapNames,
    data: &DataOutcomes,
) -> Vec<ProgramMap> {
    let leaf = f.vreg();
    let keyed = f.block();
    let miss = f.block();
    let (found_leaf, identity_map) = identity_lookup(f, flat, inputs, &names.identity, miss);
    f.assign(leaf, found_leaf);
    f.jump(keyed);
    f.switch_to(miss);
    let others = u32::try_from(flat.others).unwrap_or(u32::MAX);
    f.assign_const(leaf, i64::from(others));
    f.jump(keyed);
    f.switch_to(keyed);
    let entries = leaf_entries(flat);
    let max_entries = u32::try_from(entries.len().max(1)).unwrap_or(u32::MAX);
    let def = MapDef::lpm_trie(
        &names.leaves,
        TypeDesc::structure(
            "ciliumc_leaf_key",
            [
                ("prefixlen", TypeDesc::U32),
                ("leaf", TypeDesc::U32),
                ("proto", TypeDesc::U8),
                ("port_hi", TypeDesc::U8),
                ("port_lo", TypeDesc::U8),
                ("pad", TypeDesc::U8),
            ],
        ),
        TypeDesc::structure(
            "ciliumc_leaf_value",
            [("kind", TypeDesc::U32), ("rule", TypeDesc::U32)],
        ),
        max_entries,
    );
    let map = f.map(MapDecl {
        name: names.leaves.clone(),
        kind: MapKind::LpmTrie,
        key_size: LEAF_KEY_SIZE,
        value_size: LEAF_VALUE_SIZE,
    });
    let key = f.stack_slot(LEAF_KEY_SIZE);
    f.stack_store(key, 0, 56i64, Size::W);
    let leaf_be = f.bswap(32, leaf);
    f.stack_store(key, 4, leaf_be, Size::W);
    f.stack_store(key, 8, inputs.proto, Size::B);
    // Byte stores: a 2-byte store at offset 9 would be a misaligned stack access.
    let port_hi = f.alu32(ciliumc_targets::codegen::AluOp::Rsh, inputs.port, 8);
    f.stack_store(key, 9, port_hi, Size::B);
    f.stack_store(key, 10, inputs.port, Size::B);
    f.stack_store(key, 11, 0i64, Size::B);
    let key_ptr = f.stack_addr(key);
    let hit = f.map_lookup(map, key_ptr);
    let found = f.block();
    f.branch_null(hit, data.no_match, found);
    f.switch_to(found);
    let kind = f.load(hit, 0, Size::W);
    let rule = f.load(hit, 4, Size::W);
    f.assign(data.rule, rule);
    let not_deny = f.block();
    f.branch32(Cond::Eq, kind, 0, data.deny, not_deny);
    f.switch_to(not_deny);
    f.branch32(Cond::Eq, kind, 1, data.allow, data.no_match);
    vec![
        identity_map,
        ProgramMap {
            def,
            entries: entries
                .into_iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
        },
    ]
}

fn outcome_value(o: Outcome) -> [u8; 8] {
    let (kind, rule) = match o {
        Outcome::Deny(r) => (0u32, r),
        Outcome::Allow(r) => (1, r),
        Outcome::NoMatch => (2, 0),
    };
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&kind.to_le_bytes());
    v[4..].copy_from_slice(&rule.to_le_bytes());
    v
}

/// The LPM entries of every leaf: the leaf alone (prefix 32) gives its `other` outcome; each
/// segment whose outcome differs gives its own as (protocol, port prefix) entries, longer, so
/// they win.
pub fn leaf_entries(flat: &Flat) -> Vec<([u8; 12], [u8; 8])> {
    let mut out = Vec::new();
    for (i, leaf) in flat.leaves.iter().enumerate() {
        let leaf_be = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
        let key = |prefix: u32, proto: u8, port: u16| {
            let mut k = [0u8; 12];
            k[..4].copy_from_slice(&prefix.to_le_bytes());
            k[4..8].copy_from_slice(&leaf_be);
            k[8] = proto;
            k[9..11].copy_from_slice(&port.to_be_bytes());
            k
        };
        out.push((key(32, 0, 0), outcome_value(leaf.other)));
        for (proto, segments) in &leaf.protocols {
            for s in segments.iter().filter(|s| s.outcome != leaf.other) {
                for (port, bits) in port_prefixes(s.lo, s.hi) {
                    out.push((key(40 + bits, *proto, port), outcome_value(s.outcome)));
                }
            }
        }
    }
    out
}

/// The minimal prefixes (port, prefix bits) covering `lo..=hi`.
pub fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        let mut size = if lo == 0 {
            1 << 16
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, 16 - size.trailing_zeros()));
        lo += size;
    }
    out
}

/// Sorted disjoint intervals completed with `default` into a partition of the u32 space.
fn close_intervals<T: Copy + PartialEq>(
    sorted: Vec<(u32, u32, T)>,
    default: T,
) -> Vec<(u32, u32, T)> {
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

fn push_merged<T: PartialEq>(out: &mut Vec<(u32, u32, T)>, iv: (u32, u32, T)) {
    match out.last_mut() {
        Some(last) if last.2 == iv.2 => last.1 = iv.1,
        _ => out.push(iv),
    }
}

/// Most port intervals (all protocols together) [`emit_uncovered_check`] compares in code: a
/// few compares cost less than the call into a part, and keep the verifier's work small.
pub const UNCOVERED_CHECK_MAX_INTERVALS: usize = 8;

/// Per listed protocol, the merged port intervals some leaf decides (allow or deny); and whether
/// some leaf decides the protocols it does not list.
pub fn covered_ports(flat: &Flat) -> (BTreeMap<u8, Vec<(u16, u16)>>, bool) {
    let mut covered: BTreeMap<u8, Vec<(u16, u16)>> = BTreeMap::new();
    for (proto, _) in flat.leaves.iter().flat_map(|l| l.protocols.iter()) {
        covered.entry(*proto).or_default();
    }
    for (proto, intervals) in covered.iter_mut() {
        for leaf in &flat.leaves {
            match leaf.protocols.iter().find(|(p, _)| p == proto) {
                Some((_, segments)) => intervals.extend(
                    segments
                        .iter()
                        .filter(|s| s.outcome != Outcome::NoMatch)
                        .map(|s| (s.lo, s.hi)),
                ),
                None if leaf.other != Outcome::NoMatch => intervals.push((0, u16::MAX)),
                None => {}
            }
        }
        intervals.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::new();
        for &(lo, hi) in intervals.iter() {
            match merged.last_mut() {
                Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        *intervals = merged;
    }
    let others = flat.leaves.iter().any(|l| l.other != Outcome::NoMatch);
    (covered, others)
}

/// Before the call into a part: a packet whose protocol and port no leaf decides gets no match
/// from every leaf, whatever its identity, so it goes to `no_match` without the call (a port
/// scan, traffic to a port no rule opens). Emitted only when the covered ports are a few
/// intervals ([`UNCOVERED_CHECK_MAX_INTERVALS`]) and leave something uncovered.
fn emit_uncovered_check(f: &mut FunctionBuilder, flat: &Flat, inputs: &Inputs, no_match: BlockId) {
    let (covered, others) = covered_ports(flat);
    let intervals: usize = covered.values().map(Vec::len).sum();
    let full = |ivs: &Vec<(u16, u16)>| ivs.as_slice() == [(0, u16::MAX)];
    let anything_uncovered = !others || covered.values().any(|ivs| !full(ivs));
    if intervals > UNCOVERED_CHECK_MAX_INTERVALS || !anything_uncovered {
        return;
    }
    let decided = f.block();
    for (proto, ivs) in &covered {
        let this = f.block();
        let next = f.block();
        f.branch32(Cond::Eq, inputs.proto, i64::from(*proto), this, next);
        f.switch_to(this);
        let mut partition: Vec<(u32, u32, BlockId)> = Vec::new();
        let mut from = 0u32;
        for &(lo, hi) in ivs {
            if u32::from(lo) > from {
                partition.push((from, u32::from(lo) - 1, no_match));
            }
            partition.push((u32::from(lo), u32::from(hi), decided));
            from = u32::from(hi) + 1;
        }
        // Up to u32::MAX, as `emit_u32_tree` wants (ports above 65535 do not occur).
        partition.push((from, u32::MAX, no_match));
        let mut merged: Vec<(u32, u32, BlockId)> = Vec::new();
        for iv in partition {
            push_merged(&mut merged, iv);
        }
        emit_u32_tree(f, inputs.port, &merged);
        f.switch_to(next);
    }
    f.jump(if others { decided } else { no_match });
    f.switch_to(decided);
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

#[cfg(test)]
mod tests {
    use super::port_prefixes;
    use super::{Flat, Leaf, Outcome, PART_MAX_INSNS, Segment, estimated_insns, split_runs};
    use proptest::prelude::*;

    fn leaf(segments: u16) -> Leaf {
        let segs = (0..segments)
            .map(|i| Segment {
                lo: i * 10,
                hi: i * 10 + 9,
                outcome: Outcome::Allow(u32::from(i) + 1),
            })
            .collect();
        Leaf {
            protocols: vec![(6, segs)],
            other: Outcome::NoMatch,
        }
    }

    proptest! {
        /// Runs are consecutive, cover the partition exactly, and each stays within the part
        /// budget unless it is a single interval.
        #[test]
        fn runs_partition_the_intervals_within_budget(
            sizes in prop::collection::vec(0u16..200, 1..40),
            picks in prop::collection::vec(0usize..40, 1..300),
        ) {
            let flat = Flat {
                leaves: sizes.iter().map(|&n| leaf(n)).collect(),
                others: 0,
                by_identity: Default::default(),
            };
            let partition: Vec<(u32, u32, usize)> = picks
                .iter()
                .enumerate()
                .map(|(i, p)| (i as u32 * 2, i as u32 * 2 + 1, p % sizes.len()))
                .collect();
            let runs = split_runs(&flat, &partition);
            let mut next = 0;
            for r in &runs {
                prop_assert_eq!(r.start, next);
                prop_assert!(r.end > r.start);
                next = r.end;
                let est = estimated_insns(&flat, &partition[r.clone()]);
                prop_assert!(r.len() == 1 || est <= PART_MAX_INSNS, "run {:?}: {}", r, est);
            }
            prop_assert_eq!(next, partition.len());
        }
    }

    /// A leaf with `protocols` partitioned at the cut points (sorted, deduplicated) into
    /// segments with the given outcomes.
    fn random_leaf(protocols: &[(u8, Vec<u16>, Vec<u8>)], other: u8) -> Leaf {
        let outcome = |o: u8| match o % 3 {
            0 => Outcome::NoMatch,
            1 => Outcome::Allow(u32::from(o)),
            _ => Outcome::Deny(u32::from(o)),
        };
        let mut listed = Vec::new();
        for (proto, cuts, outcomes) in protocols {
            if listed.iter().any(|(p, _)| p == proto) {
                continue;
            }
            let mut cuts: Vec<u16> = cuts.iter().copied().filter(|&c| c > 0).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut segments = Vec::new();
            let mut lo = 0u16;
            for (i, &cut) in cuts.iter().chain([&0]).enumerate() {
                let hi = if i == cuts.len() { u16::MAX } else { cut - 1 };
                segments.push(Segment {
                    lo,
                    hi,
                    outcome: outcome(outcomes.get(i).copied().unwrap_or(0)),
                });
                lo = cut;
            }
            listed.push((*proto, segments));
        }
        Leaf {
            protocols: listed,
            other: outcome(other),
        }
    }

    fn outcome_of(leaf: &Leaf, proto: u8, port: u16) -> Outcome {
        match leaf.protocols.iter().find(|(p, _)| *p == proto) {
            Some((_, segments)) => segments
                .iter()
                .find(|s| s.lo <= port && port <= s.hi)
                .map_or(Outcome::NoMatch, |s| s.outcome),
            None => leaf.other,
        }
    }

    proptest! {
        /// `covered_ports` says a (protocol, port) is uncovered exactly when every leaf gives
        /// no match for it: the check before the parts never skips a decision.
        #[test]
        fn uncovered_ports_are_no_match_in_every_leaf(
            leaves in prop::collection::vec(
                (
                    prop::collection::vec(
                        (
                            prop::sample::select(vec![1u8, 6, 17]),
                            prop::collection::vec(any::<u16>(), 0..4),
                            prop::collection::vec(any::<u8>(), 0..5),
                        ),
                        0..3,
                    ),
                    any::<u8>(),
                ),
                1..5,
            ),
            probes in prop::collection::vec((prop::sample::select(vec![1u8, 6, 17, 132]), any::<u16>()), 1..40),
        ) {
            let flat = Flat {
                leaves: leaves.iter().map(|(p, o)| random_leaf(p, *o)).collect(),
                others: 0,
                by_identity: Default::default(),
            };
            let (covered, others) = super::covered_ports(&flat);
            let mut probes = probes;
            // Probe the segment edges too.
            for leaf in &flat.leaves {
                for (p, segments) in &leaf.protocols {
                    for s in segments {
                        probes.push((*p, s.lo));
                        probes.push((*p, s.hi));
                    }
                }
            }
            for (proto, port) in probes {
                let no_match_everywhere = flat
                    .leaves
                    .iter()
                    .all(|l| outcome_of(l, proto, port) == Outcome::NoMatch);
                let is_covered = match covered.get(&proto) {
                    Some(ivs) => ivs.iter().any(|&(lo, hi)| lo <= port && port <= hi),
                    None => others,
                };
                prop_assert_eq!(is_covered, !no_match_everywhere, "proto {} port {}", proto, port);
            }
        }
    }

    #[test]
    fn port_prefixes_cover_exactly_the_range() {
        for (lo, hi) in [
            (0u16, 65535u16),
            (80, 80),
            (1, 65535),
            (1024, 65535),
            (10000, 20000),
            (81, 65535),
        ] {
            let p = port_prefixes(lo, hi);
            let mut covered = 0u32;
            for (start, bits) in &p {
                let size = 1u32 << (16 - bits);
                assert_eq!(u32::from(*start) % size, 0, "aligned");
                covered += size;
            }
            assert_eq!(covered, u32::from(hi) - u32::from(lo) + 1);
            assert!(p.len() <= 30);
        }
        assert_eq!(port_prefixes(1024, 65535).len(), 6);
    }
}
