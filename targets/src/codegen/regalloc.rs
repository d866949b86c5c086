//! Register allocation: linear scan over live ranges with holes, onto r1–r9.
//!
//! In: machine IR in layout order and the IR liveness (temporaries of instruction selection are
//! block-local, so block-boundary liveness covers every value that crosses blocks). Out: a location
//! (register or 8-byte spill slot) per virtual register and the frame size.
//!
//! Conventions that keep the verifier satisfied:
//! - r0 is never allocated: it is the scratch for spill reloads, the temporary that breaks cycles in
//!   argument moves, and where calls return; r10 is the read-only frame pointer.
//! - A value live across a call (helper, bpf-to-bpf, tail call) only gets r6–r9, which calls preserve;
//!   r1–r5 are clobbered.
//! - When anything spills, allocation is redone with r5 reserved as a second scratch (an instruction
//!   can need two spilled operands at once).
//! - Spill slots are 8 bytes, 8-aligned, written with 64-bit stores, so the verifier tracks spilled
//!   pointers with their types.
//!
//! A value's live range is a list of segments, one per run of blocks (in layout order) where it is
//! live, from its definition or the block's start to its last use or the block's end. Two values
//! share a register when their segments do not overlap. Why holes matter: policy programs set some
//! values on a few paths and read them at the end (the drop reason, set where a packet is dropped
//! and read by the event code); as one interval from first to last position, such a value held a
//! register through the whole parser and pushed the parser's own values onto the stack. Within a
//! block a segment has no holes, so a register is never reused while its value may still be read
//! on any path.

use super::ir::VReg;
use super::isel::{MArg, MFunction, MInst};
use super::liveness::Liveness;

/// Where a virtual register lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    Reg(u8),
    /// 64-bit slot at `r10 + off` (`off` negative).
    Spill(i16),
}

#[derive(Clone, Debug)]
pub struct Allocation {
    /// Per virtual register; `None` for registers that never occur.
    pub locs: Vec<Option<Loc>>,
    /// Stack bytes used: user slots plus spill slots.
    pub frame: u32,
    /// Scratch registers for spilled operands: `[first, second]`.
    pub scratch: [u8; 2],
    pub spills: u32,
}

const NONE: u32 = u32::MAX;

struct Intervals {
    start: Vec<u32>,
    end: Vec<u32>,
    /// Per value, its live segments in increasing order: `arena[index[v].0..][..index[v].1]`
    /// (one allocation for all values; most have one segment).
    arena: Vec<(u32, u32)>,
    index: Vec<(u32, u32)>,
    /// Call positions in increasing order.
    calls: Vec<u32>,
    /// Preferred register (argument position of a call that reads it), 0 = none.
    hint: Vec<u8>,
    /// For `dst = src` copies: `src`, whose register `dst` should take when `src` ends there
    /// (the copy then disappears).
    copy_of: Vec<u32>,
}

fn intervals(m: &MFunction, live: &Liveness, params: &[VReg]) -> Intervals {
    let n = m.num_vregs as usize;
    let mut iv = Intervals {
        start: vec![NONE; n],
        end: vec![0; n],
        arena: Vec::new(),
        index: vec![(0, 0); n],
        calls: Vec::new(),
        hint: vec![0; n],
        copy_of: vec![NONE; n],
    };
    // Touches come in layout order, so per value in increasing position: the open segment grows
    // while touches stay in one block or continue from the previous block's end (live out there,
    // live in here); otherwise the open segment is closed into `raw` and a new one starts.
    let mut open_from = vec![NONE; n];
    let mut open_to = vec![0u32; n];
    let mut open_block = vec![0u32; n];
    let mut raw: Vec<(u32, u32, u32)> = Vec::with_capacity(n + n / 4);
    let mut touch = |v: usize, p: u32, k: u32| {
        if open_from[v] == NONE {
            open_from[v] = p;
        } else if open_block[v] != k && p > open_to[v] + 1 {
            raw.push((v as u32, open_from[v], open_to[v]));
            open_from[v] = p;
        }
        open_to[v] = open_to[v].max(p);
        open_block[v] = k;
    };
    // Position 0: parameters arrive (before the first block's parameter moves).
    if let Some(&b) = m.order.iter().find(|b| m.blocks[b.0 as usize].is_some()) {
        for p in params {
            if live.is_live_in(b, p.0 as usize) {
                touch(p.0 as usize, 0, 0);
            }
        }
    }
    let mut pos = 1u32;
    for (k, &b) in m.order.iter().enumerate() {
        let Some(block) = &m.blocks[b.0 as usize] else {
            continue;
        };
        let k = k as u32;
        // The block's entry (where live-in values start), then one position per instruction,
        // then the terminator.
        let first = pos;
        pos += 1;
        let insts = &m.insts[block.start..block.end];
        let last = pos + insts.len() as u32;
        for v in live.live_in(b) {
            touch(v, first, k);
        }
        for inst in insts {
            inst.for_each_use(|v| touch(v.0 as usize, pos, k));
            if let Some(d) = inst.def() {
                touch(d.0 as usize, pos, k);
            }
            if let MInst::Mov {
                dst,
                src,
                w32: false,
            } = inst
                && iv.copy_of[dst.0 as usize] == NONE
            {
                iv.copy_of[dst.0 as usize] = src.0;
            }
            if let MInst::Call { args, .. } = inst {
                iv.calls.push(pos);
                for (i, a) in args.iter().enumerate() {
                    if let MArg::Reg(v) = a
                        && iv.hint[v.0 as usize] == 0
                    {
                        iv.hint[v.0 as usize] = i as u8 + 1;
                    }
                }
            }
            pos += 1;
        }
        block.term.for_each_use(|v| touch(v.0 as usize, last, k));
        for v in live.live_out(b) {
            touch(v, last, k);
        }
        pos = last + 1;
    }
    for v in 0..n {
        if open_from[v] != NONE {
            raw.push((v as u32, open_from[v], open_to[v]));
        }
    }
    for &(v, from, to) in &raw {
        let v = v as usize;
        iv.start[v] = iv.start[v].min(from);
        iv.end[v] = iv.end[v].max(to);
    }
    // Counting sort by value (stable: each value's extents stay in layout order); an extent that
    // continues the previous one (live out of a block, live into the next) extends it.
    let mut offset = vec![0u32; n + 1];
    for &(v, _, _) in &raw {
        offset[v as usize + 1] += 1;
    }
    for v in 0..n {
        offset[v + 1] += offset[v];
    }
    iv.arena = vec![(0, 0); raw.len()];
    for (index, &at) in iv.index.iter_mut().zip(&offset) {
        *index = (at, 0);
    }
    for &(v, from, to) in &raw {
        let (at, len) = iv.index[v as usize];
        let last = (at + len) as usize;
        if len > 0 && iv.arena[last - 1].1 + 1 >= from {
            iv.arena[last - 1].1 = iv.arena[last - 1].1.max(to);
        } else {
            iv.arena[last] = (from, to);
            iv.index[v as usize].1 += 1;
        }
    }
    iv
}

impl Intervals {
    fn segments(&self, v: usize) -> &[(u32, u32)] {
        let (at, len) = self.index[v];
        &self.arena[at as usize..(at + len) as usize]
    }
}

/// Is there a call position strictly inside one of `segs`?
fn crosses_call(calls: &[u32], segs: &[(u32, u32)]) -> bool {
    segs.iter().any(|&(s, e)| {
        let i = calls.partition_point(|&p| p <= s);
        calls.get(i).is_some_and(|&p| p < e)
    })
}

/// The segments assigned to one register, as (start, end, value) sorted by start; no two overlap.
/// Values are taken in order of their start (`pos`), so:
/// - `reach` is at least the end of every segment ever inserted, and most values begin after it
///   (no search at all);
/// - `cursor` counts the segments starting before `pos`; new segments start at `pos` or later, so
///   they go at or after it. A value's first segment meets at most the segment before `cursor`
///   (the only one starting before `pos` that can reach past it) and those from `cursor` on that
///   start before its end: no binary search for the common case.
#[derive(Default)]
struct Occupancy {
    segments: Vec<(u32, u32, usize)>,
    reach: u32,
    pos: u32,
    cursor: usize,
}

impl Occupancy {
    /// Moves to the next value's start (`pos` never decreases).
    fn advance(&mut self, pos: u32) {
        self.pos = pos;
        while self
            .segments
            .get(self.cursor)
            .is_some_and(|&(os, _, _)| os < pos)
        {
            self.cursor += 1;
        }
    }

    /// Calls `found` with each value whose segments overlap `segs` (repeats possible) until it
    /// returns true; returns whether it did.
    fn conflicts(&self, segs: &[(u32, u32)], mut found: impl FnMut(usize) -> bool) -> bool {
        for (k, &(s, e)) in segs.iter().enumerate() {
            if s > self.reach || (s == self.reach && s != e) {
                continue;
            }
            if k == 0 && s == self.pos {
                if let Some(&(os, oe, w)) = self.cursor.checked_sub(1).map(|i| &self.segments[i])
                    && overlaps((os, oe), (s, e))
                    && found(w)
                {
                    return true;
                }
                for &(os, oe, w) in &self.segments[self.cursor..] {
                    if os > e {
                        break;
                    }
                    if overlaps((os, oe), (s, e)) && found(w) {
                        return true;
                    }
                }
                continue;
            }
            // Non-overlapping segments ordered by start are ordered by end too: walking back from
            // the last one starting at or before `e`, the first that ends before `s` ends the walk.
            let upto = self.segments.partition_point(|&(os, _, _)| os <= e);
            for &(os, oe, w) in self.segments[..upto].iter().rev() {
                if oe < s {
                    break;
                }
                if overlaps((os, oe), (s, e)) && found(w) {
                    return true;
                }
            }
        }
        false
    }

    fn is_free_for(&self, segs: &[(u32, u32)]) -> bool {
        !self.conflicts(segs, |_| true)
    }

    /// New segments start at `pos` or later: they go after `cursor`, among the few segments
    /// reserved for later values, found without searching the register's past.
    fn insert(&mut self, segs: &[(u32, u32)], v: usize) {
        for &(s, e) in segs {
            let at =
                self.cursor + self.segments[self.cursor..].partition_point(|&(os, _, _)| os <= s);
            self.segments.insert(at, (s, e, v));
            self.reach = self.reach.max(e);
        }
    }

    /// Removes the segments `segs` of `v` (an evicted value).
    fn remove(&mut self, segs: &[(u32, u32)], v: usize) {
        for &(s, _) in segs {
            let from = self.segments.partition_point(|&(os, _, _)| os < s);
            if let Some(k) = self.segments[from..]
                .iter()
                .take_while(|&&(os, _, _)| os == s)
                .position(|&(_, _, w)| w == v)
            {
                self.segments.remove(from + k);
            }
        }
        let pos = self.pos;
        self.cursor = self.segments.partition_point(|&(os, _, _)| os < pos);
    }
}

/// Whether two segments overlap. Positions are block entries (where live-in values start) and
/// instructions, and an instruction reads its operands before it writes: a value ending at `p`
/// and one defined at `p` may share a register, while a value defined at `p` and never read
/// (`[p, p]`) still clobbers one live across `p`.
fn overlaps(a: (u32, u32), b: (u32, u32)) -> bool {
    if a.0 == a.1 || b.0 == b.1 {
        let (p, (s, e)) = if a.0 == a.1 { (a.0, b) } else { (b.0, a) };
        return s < p && p < e || (s == e && s == p);
    }
    a.0 < b.1 && b.0 < a.1
}

/// One linear-scan pass; `None` entries in the result are spilled. With `give_up_on_spill`, the
/// pass stops at the first spill (the caller then allocates again with a scratch reserved).
fn scan(
    iv: &Intervals,
    order: &[usize],
    cross: &[bool],
    (pool, pool_cross): (&[u8], &[u8]),
    give_up_on_spill: bool,
) -> (Vec<Option<u8>>, bool) {
    let n = iv.start.len();
    let mut reg: Vec<Option<u8>> = vec![None; n];
    // Room for every value's segments spread over the registers, so inserts rarely reallocate.
    let room = iv.arena.len() / 4 + 16;
    let mut occupied: Vec<Occupancy> = (0..11)
        .map(|_| Occupancy {
            segments: Vec::with_capacity(room),
            ..Occupancy::default()
        })
        .collect();
    let mut spilled = false;
    for &v in order {
        let segs = iv.segments(v);
        for o in occupied.iter_mut() {
            o.advance(iv.start[v]);
        }
        let allowed = if cross[v] { pool_cross } else { pool };
        let free = |r: u8, occupied: &[Occupancy]| occupied[r as usize].is_free_for(segs);
        let hint = iv.hint[v];
        let copied = match iv.copy_of[v] {
            NONE => None,
            src => reg[src as usize].filter(|r| allowed.contains(r) && free(*r, &occupied)),
        };
        let pick = if let Some(r) = copied {
            Some(r)
        } else if hint != 0 && allowed.contains(&hint) && free(hint, &occupied) {
            Some(hint)
        } else {
            allowed.iter().copied().find(|&r| free(r, &occupied))
        };
        if let Some(r) = pick {
            occupied[r as usize].insert(segs, v);
            reg[v] = Some(r);
            continue;
        }
        spilled = true;
        if give_up_on_spill {
            break;
        }
        // Evict the value that ends last among those that are alone in the way in a usable
        // register, if it ends after this one; else this one is spilled.
        let mut victim: Option<(u32, usize, u8)> = None;
        for &r in allowed {
            let mut ws: Vec<usize> = Vec::new();
            occupied[r as usize].conflicts(segs, |w| {
                if !ws.contains(&w) {
                    ws.push(w);
                }
                ws.len() > 1
            });
            if let [w] = ws[..]
                && iv.end[w] > iv.end[v]
                && victim.is_none_or(|(e, x, _)| (iv.end[w], w) > (e, x))
            {
                victim = Some((iv.end[w], w, r));
            }
        }
        if let Some((_, w, r)) = victim {
            occupied[r as usize].remove(iv.segments(w), w);
            reg[w] = None;
            occupied[r as usize].insert(segs, v);
            reg[v] = Some(r);
        }
    }
    (reg, spilled)
}

/// Allocates registers for `m`; `params[i]` arrives in r(i+1).
pub fn allocate(m: &MFunction, live: &Liveness, params: &[VReg]) -> Allocation {
    let iv = intervals(m, live, params);
    let n = iv.start.len();
    let mut order: Vec<usize> = (0..n).filter(|&v| iv.start[v] != NONE).collect();
    order.sort_by_key(|&v| (iv.start[v], v));
    let cross: Vec<bool> = (0..n)
        .map(|v| iv.start[v] != NONE && crosses_call(&iv.calls, iv.segments(v)))
        .collect();
    const POOL: [u8; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];
    const POOL_SPILL: [u8; 8] = [1, 2, 3, 4, 6, 7, 8, 9];
    const CROSS: [u8; 4] = [6, 7, 8, 9];
    let (mut reg, spilled) = scan(&iv, &order, &cross, (&POOL, &CROSS), true);
    let mut scratch = [0u8, 0u8];
    if spilled {
        reg = scan(&iv, &order, &cross, (&POOL_SPILL, &CROSS), false).0;
        scratch = [0, 5];
    }
    // Spill slots, reused once their interval has ended.
    let mut locs: Vec<Option<Loc>> = vec![None; n];
    let mut slot_free_at: Vec<u32> = Vec::new();
    let base = m.user_stack;
    let mut spills = 0u32;
    for &v in &order {
        locs[v] = Some(match reg[v] {
            Some(r) => Loc::Reg(r),
            None => {
                spills += 1;
                let s = iv.start[v];
                let k = match slot_free_at.iter().position(|&end| end <= s) {
                    Some(k) => {
                        slot_free_at[k] = iv.end[v];
                        k
                    }
                    None => {
                        slot_free_at.push(iv.end[v]);
                        slot_free_at.len() - 1
                    }
                };
                let off = i64::from(base) + 8 * (k as i64 + 1);
                Loc::Spill((-off).max(i64::from(i16::MIN)) as i16)
            }
        });
    }
    let frame = base + 8 * slot_free_at.len() as u32;
    Allocation {
        locs,
        frame,
        scratch,
        spills,
    }
}
