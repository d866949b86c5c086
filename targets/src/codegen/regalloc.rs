//! Register allocation: linear scan over live intervals, onto r1–r9.
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
//! Intervals are conservative (first to last position, holes ignored); a value's register is thus
//! never reused while it may still be read on any path.

use super::ir::{BlockId, VReg};
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
        calls: Vec::new(),
        hint: vec![0; n],
        copy_of: vec![NONE; n],
    };
    let touch = |iv: &mut Intervals, v: usize, p: u32| {
        if iv.start[v] == NONE || p < iv.start[v] {
            iv.start[v] = p;
        }
        if p > iv.end[v] {
            iv.end[v] = p;
        }
    };
    // Position 0: parameters arrive.
    for p in params {
        if live.is_live_in(BlockId(0), p.0 as usize) {
            touch(&mut iv, p.0 as usize, 0);
        }
    }
    let mut pos = 1u32;
    for &b in &m.order {
        let Some(block) = &m.blocks[b.0 as usize] else {
            continue;
        };
        let first = pos;
        let insts = &m.insts[block.start..block.end];
        let last = pos + insts.len() as u32;
        for v in live.live_in(b) {
            touch(&mut iv, v, first);
        }
        for inst in insts {
            inst.for_each_use(|v| touch(&mut iv, v.0 as usize, pos));
            if let Some(d) = inst.def() {
                touch(&mut iv, d.0 as usize, pos);
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
        block
            .term
            .for_each_use(|v| touch(&mut iv, v.0 as usize, last));
        for v in live.live_out(b) {
            touch(&mut iv, v, last);
        }
        pos = last + 1;
    }
    iv
}

fn crosses_call(calls: &[u32], s: u32, e: u32) -> bool {
    // Is there a call position p with s < p < e?
    let i = calls.partition_point(|&p| p <= s);
    calls.get(i).is_some_and(|&p| p < e)
}

/// One linear-scan pass; `None` entries in the result are spilled.
fn scan(
    iv: &Intervals,
    order: &[usize],
    cross: &[bool],
    pool: &[u8],
    pool_cross: &[u8],
) -> (Vec<Option<u8>>, bool) {
    let n = iv.start.len();
    let mut reg: Vec<Option<u8>> = vec![None; n];
    let mut active: Vec<(u32, usize, u8)> = Vec::with_capacity(10);
    let mut free = [true; 11];
    let mut spilled = false;
    for &v in order {
        let (s, e) = (iv.start[v], iv.end[v]);
        active.retain(|&(end, _, r)| {
            let keep = end > s;
            if !keep {
                free[r as usize] = true;
            }
            keep
        });
        let allowed = if cross[v] { pool_cross } else { pool };
        let hint = iv.hint[v];
        let copied = match iv.copy_of[v] {
            NONE => None,
            src => reg[src as usize].filter(|r| allowed.contains(r) && free[*r as usize]),
        };
        let pick = if let Some(r) = copied {
            Some(r)
        } else if hint != 0 && allowed.contains(&hint) && free[hint as usize] {
            Some(hint)
        } else {
            allowed.iter().copied().find(|&r| free[r as usize])
        };
        if let Some(r) = pick {
            free[r as usize] = false;
            reg[v] = Some(r);
            active.push((e, v, r));
            continue;
        }
        spilled = true;
        // Evict the interval that ends last among those holding a usable register.
        let victim = active
            .iter()
            .enumerate()
            .filter(|(_, a)| allowed.contains(&a.2))
            .max_by_key(|(_, a)| (a.0, a.1))
            .map(|(i, a)| (i, *a));
        match victim {
            Some((i, (end, w, r))) if end > e => {
                reg[w] = None;
                reg[v] = Some(r);
                active[i] = (e, v, r);
            }
            _ => {}
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
        .map(|v| iv.start[v] != NONE && crosses_call(&iv.calls, iv.start[v], iv.end[v]))
        .collect();
    const POOL: [u8; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];
    const POOL_SPILL: [u8; 8] = [1, 2, 3, 4, 6, 7, 8, 9];
    const CROSS: [u8; 4] = [6, 7, 8, 9];
    let (mut reg, spilled) = scan(&iv, &order, &cross, &POOL, &CROSS);
    let mut scratch = [0u8, 0u8];
    if spilled {
        reg = scan(&iv, &order, &cross, &POOL_SPILL, &CROSS).0;
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
