//! Stack slot layout: the frame-pointer offset of every user stack slot.
//!
//! In: a [`Function`] and its block order (reverse postorder, which is also the code layout).
//! Out: a [`SlotLayout`] — per slot a negative, 8-aligned offset from r10, and the bytes all user
//! slots take (register spill slots go below them).
//!
//! Why share: the kernel verifier copies and compares the frame in every state it pushes or
//! compares, so frame size multiplies verification cost. Slots that are never live at the same time
//! (an ipcache key and a fragment key, say) can use the same bytes.
//!
//! Live range of a slot, over the linear order (blocks in `order`, each instruction, then the
//! terminator): the hull of every `StackAddr`/`StackLoad`/`StackStore` of the slot and every
//! definition or use of a register that may hold a pointer into it (results of `StackAddr`, closed
//! under `Copy` and `PtrAdd`) — loads, stores and helpers reach the slot through such pointers, and
//! the checker refuses passing them to subprograms or storing them to memory. The hull is a
//! conservative live range because the control-flow graph is acyclic and the order topological: a
//! path only moves forward, so when one slot's range ends before another's begins, every access of
//! the first on any path precedes every access of the second. A function with a back edge (loop)
//! keeps one region per slot. Reading another slot's leftovers is excluded by the checker, which
//! refuses a stack read of bytes the slot has not written on every path.
//!
//! Coloring is greedy by range start: a slot takes a run of adjacent regions that are all free at
//! its start (least waste first, then the one nearest the frame pointer), grows the bottom region
//! when it is free, or gets a new region. Every base stays 8-aligned because the lowering relies on
//! the alignment of offsets within a slot (unaligned scratch stores are kept as plain bytes by the
//! verifier). The result depends only on the function and the order (deterministic).

use super::ir::{BlockId, Function, Inst, SlotId, VReg};

/// Where the user stack slots of one function live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotLayout {
    /// Per slot: offset of its first byte from the frame pointer (negative, multiple of 8).
    pub offsets: Vec<i32>,
    /// Bytes below the frame pointer that user slots occupy (a multiple of 8).
    pub size: u32,
}

/// Whether slots whose live ranges do not overlap may share stack bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlotSharing {
    /// Share where live ranges allow (the default).
    #[default]
    Shared,
    /// One region per slot, in declaration order (the layout before sharing existed).
    Separate,
}

impl SlotSharing {
    /// The default, unless `CILIUMC_STACK_SLOT_SHARING=off` asks for separate slots: an escape
    /// hatch for operators comparing verifier behaviour without a rebuild. Read once per process.
    pub fn from_env() -> Self {
        static FROM_ENV: std::sync::OnceLock<SlotSharing> = std::sync::OnceLock::new();
        *FROM_ENV.get_or_init(|| match std::env::var("CILIUMC_STACK_SLOT_SHARING") {
            Ok(v) if v.eq_ignore_ascii_case("off") || v == "0" => SlotSharing::Separate,
            _ => SlotSharing::Shared,
        })
    }
}

/// Bytes a slot of `size` bytes takes (8-aligned).
fn rounded(size: u32) -> u32 {
    size.div_ceil(8).saturating_mul(8)
}

/// One region per slot, in declaration order.
pub fn separate(func: &Function) -> SlotLayout {
    let mut total = 0u32;
    let offsets = func
        .slots
        .iter()
        .map(|s| {
            total = total.saturating_add(rounded(s.size));
            -(total.min(i32::MAX as u32) as i32)
        })
        .collect();
    SlotLayout {
        offsets,
        size: total,
    }
}

/// The layout `sharing` asks for.
pub fn layout(func: &Function, order: &[BlockId], sharing: SlotSharing) -> SlotLayout {
    match sharing {
        SlotSharing::Separate => separate(func),
        SlotSharing::Shared => match live_ranges(func, order) {
            Some(ranges) => color(func, &ranges),
            None => separate(func),
        },
    }
}

/// Inclusive `[first, last]` positions of each slot in the linear order (`None`: never accessed),
/// or `None` when the order has a back edge (or too many slots for the pointer masks).
pub fn live_ranges(func: &Function, order: &[BlockId]) -> Option<Vec<Option<(u32, u32)>>> {
    let n_slots = func.slots.len();
    if n_slots > 64 {
        return None;
    }
    let mut pos_of = vec![usize::MAX; func.blocks.len()];
    for (i, b) in order.iter().enumerate() {
        pos_of[b.0 as usize] = i;
    }
    for (i, b) in order.iter().enumerate() {
        if func
            .block(*b)
            .term
            .successors()
            .any(|s| pos_of.get(s.0 as usize).is_none_or(|&p| p <= i))
        {
            return None;
        }
    }
    let masks = pointer_masks(func, order);
    let mut ranges: Vec<Option<(u32, u32)>> = vec![None; n_slots];
    let extend = |ranges: &mut Vec<Option<(u32, u32)>>, mut bits: u64, p: u32| {
        while bits != 0 {
            let s = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let r = &mut ranges[s];
            *r = Some(match *r {
                None => (p, p),
                Some((a, b)) => (a.min(p), b.max(p)),
            });
        }
    };
    let mask_of = |v: VReg| masks.get(v.0 as usize).copied().unwrap_or(0);
    let mut pos = 0u32;
    for &b in order {
        let block = func.block(b);
        for inst in &block.insts {
            let mut bits = match inst {
                Inst::StackAddr { slot, .. }
                | Inst::StackLoad { slot, .. }
                | Inst::StackStore { slot, .. } => 1u64 << slot.0,
                _ => 0,
            };
            inst.for_each_use(|v| bits |= mask_of(v));
            if let Some(d) = inst.def() {
                bits |= mask_of(d);
            }
            extend(&mut ranges, bits, pos);
            pos += 1;
        }
        let mut bits = 0u64;
        block.term.for_each_use(|v| bits |= mask_of(v));
        extend(&mut ranges, bits, pos);
        pos += 1;
    }
    Some(ranges)
}

/// Per virtual register, the slots it may point into (bit `i` = slot `i`).
fn pointer_masks(func: &Function, order: &[BlockId]) -> Vec<u64> {
    let mut masks = vec![0u64; func.num_vregs as usize];
    // (dst, src or None for a StackAddr with its bit), in layout order.
    let mut flows: Vec<(usize, Option<usize>, u64)> = Vec::new();
    for &b in order {
        for inst in &func.block(b).insts {
            match inst {
                Inst::StackAddr { dst, slot } => {
                    flows.push((dst.0 as usize, None, 1u64 << slot.0));
                }
                Inst::Copy { dst, src } => flows.push((dst.0 as usize, Some(src.0 as usize), 0)),
                Inst::PtrAdd { dst, ptr, .. } => {
                    flows.push((dst.0 as usize, Some(ptr.0 as usize), 0))
                }
                _ => {}
            }
        }
    }
    // A register may be reassigned anywhere, so iterate to a fixpoint (usually one pass).
    loop {
        let mut changed = false;
        for &(dst, src, bit) in &flows {
            let add = match src {
                None => bit,
                Some(s) => masks.get(s).copied().unwrap_or(0),
            };
            if let Some(m) = masks.get_mut(dst)
                && *m | add != *m
            {
                *m |= add;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    masks
}

/// A run of stack bytes `[lo, lo + size)` below the frame pointer.
#[derive(Clone, Copy, Debug)]
struct Region {
    lo: u32,
    size: u32,
    /// Last position of the slot occupying it (free for a slot starting after this).
    busy_until: Option<u32>,
}

impl Region {
    fn free_at(&self, start: u32) -> bool {
        self.busy_until.is_none_or(|e| e < start)
    }
}

/// Greedy interval coloring of slots with known ranges.
fn color(func: &Function, ranges: &[Option<(u32, u32)>]) -> SlotLayout {
    let mut by_start: Vec<usize> = (0..ranges.len()).filter(|&s| ranges[s].is_some()).collect();
    by_start.sort_by_key(|&s| (ranges[s].map(|r| r.0), s));
    let mut regions: Vec<Region> = Vec::new();
    // Slots never accessed get no bytes; their offset only has to be well formed.
    let mut offsets: Vec<i32> = func
        .slots
        .iter()
        .map(|s| -(rounded(s.size).min(512) as i32))
        .collect();
    for s in by_start {
        let Some((start, end)) = ranges[s] else {
            continue;
        };
        let need = rounded(func.slots[s].size);
        if need == 0 {
            continue;
        }
        let (i, j) = choose(&regions, start, need);
        let lo = match regions.get(i) {
            Some(r) => r.lo,
            None => regions.last().map_or(0, |r| r.lo + r.size),
        };
        let have: u32 = regions
            .get(i..j)
            .map_or(0, |rs| rs.iter().map(|r| r.size).sum());
        let rest = have.saturating_sub(need);
        let old_busy = regions
            .get(i..j)
            .and_then(|rs| rs.iter().filter_map(|r| r.busy_until).max());
        let mut merged = vec![Region {
            lo,
            size: need,
            busy_until: Some(end),
        }];
        if rest > 0 {
            merged.push(Region {
                lo: lo + need,
                size: rest,
                busy_until: old_busy,
            });
        }
        let i = i.min(regions.len());
        let j = j.min(regions.len()).max(i);
        regions.splice(i..j, merged);
        offsets[s] = -((lo + need) as i32);
    }
    let size = regions.last().map_or(0, |r| r.lo + r.size);
    SlotLayout { offsets, size }
}

/// `(growth, waste, lo)` of a candidate run of regions.
type Cost = (u32, u32, u32);

/// Regions `[i, j)` a slot of `need` bytes starting at `start` takes: adjacent regions all free at
/// `start`, possibly reaching past the bottom (the frame grows); `i == regions.len()` means a new
/// region.
fn choose(regions: &[Region], start: u32, need: u32) -> (usize, usize) {
    // (growth, waste, lo) → smallest wins; ties keep the first found (lowest lo).
    let mut best: Option<(Cost, (usize, usize))> = None;
    for i in 0..regions.len() {
        let mut have = 0u32;
        for j in i..regions.len() {
            if !regions[j].free_at(start) {
                break;
            }
            have += regions[j].size;
            let at_bottom = j + 1 == regions.len();
            if have >= need || at_bottom {
                let growth = need.saturating_sub(have);
                let key = (growth, have.saturating_sub(need), regions[i].lo);
                if best.is_none_or(|(k, _)| key < k) {
                    best = Some((key, (i, j + 1)));
                }
                break;
            }
        }
    }
    match best {
        // A fresh region costs `need` bytes of growth; reuse wins whenever it grows less.
        Some(((growth, _, _), run)) if growth < need => run,
        _ => (regions.len(), regions.len()),
    }
}

/// Slot `a` and slot `b` share at least one byte in `layout`.
pub fn overlap(func: &Function, layout: &SlotLayout, a: SlotId, b: SlotId) -> bool {
    let span = |s: SlotId| {
        let lo = i64::from(layout.offsets[s.0 as usize]);
        (lo, lo + i64::from(rounded(func.slots[s.0 as usize].size)))
    };
    let (a0, a1) = span(a);
    let (b0, b1) = span(b);
    a0 < b1 && b0 < a1
}
