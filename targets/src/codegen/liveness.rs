//! Control-flow order and liveness of IR virtual registers.
//!
//! In: a [`Function`]. Out: the reachable blocks in reverse postorder (also the code layout: the
//! "else"/"ok" successor of a branch follows it, so it falls through) and per-block live-in/live-out
//! sets. Unreachable blocks get no order position: they are never emitted (the verifier refuses
//! unreachable instructions).

use super::ir::{BlockId, Function, Terminator};

/// Reachable blocks in reverse postorder; `None` when a reachable block has no terminator.
pub fn reverse_postorder(func: &Function) -> Result<Vec<BlockId>, BlockId> {
    let n = func.blocks.len();
    let mut visited = vec![false; n];
    let mut post = Vec::with_capacity(n);
    // Explicit stack: policy programs can be chains of thousands of blocks.
    let mut stack: Vec<(BlockId, [Option<BlockId>; 2], usize)> = Vec::new();
    let children = |b: BlockId| -> Result<[Option<BlockId>; 2], BlockId> {
        // Visit the successor that should fall through *last*, so it lands right after `b`.
        Ok(match func.block(b).term {
            Terminator::None => return Err(b),
            Terminator::Return(_) => [None, None],
            Terminator::Jump(t) => [Some(t), None],
            Terminator::Branch { then_, else_, .. } => [Some(then_), Some(else_)],
            Terminator::CheckPacketBounds { ok, fail, .. } => [Some(fail), Some(ok)],
        })
    };
    visited[0] = true;
    stack.push((BlockId(0), children(BlockId(0))?, 0));
    while let Some(top) = stack.last_mut() {
        if top.2 < 2 {
            let next = top.1[top.2];
            top.2 += 1;
            if let Some(s) = next
                && !visited[s.0 as usize]
            {
                visited[s.0 as usize] = true;
                let ch = children(s)?;
                stack.push((s, ch, 0));
            }
        } else {
            post.push(top.0);
            stack.pop();
        }
    }
    post.reverse();
    Ok(post)
}

/// Live-in and live-out sets per block, as sorted lists of virtual register numbers in one arena
/// (policy programs have thousands of tiny blocks with a handful of live values each; dense bit sets
/// or per-block allocations would dominate the cost).
pub struct Liveness {
    arena: Vec<u32>,
    live_in: Vec<(u32, u32)>,
    live_out: Vec<(u32, u32)>,
}

impl Liveness {
    fn slice(&self, r: (u32, u32)) -> &[u32] {
        &self.arena[r.0 as usize..r.1 as usize]
    }

    /// Virtual register numbers live into block `b`, in increasing order.
    pub fn live_in(&self, b: BlockId) -> impl Iterator<Item = usize> + '_ {
        self.slice(self.live_in[b.0 as usize])
            .iter()
            .map(|&v| v as usize)
    }

    /// Virtual register numbers live out of block `b`, in increasing order.
    pub fn live_out(&self, b: BlockId) -> impl Iterator<Item = usize> + '_ {
        self.slice(self.live_out[b.0 as usize])
            .iter()
            .map(|&v| v as usize)
    }

    pub fn is_live_in(&self, b: BlockId, v: usize) -> bool {
        self.slice(self.live_in[b.0 as usize])
            .binary_search(&(v as u32))
            .is_ok()
    }
}

/// `a − b` for sorted, deduplicated lists, appended to `out`.
fn difference_into(a: &[u32], b: &[u32], out: &mut Vec<u32>) {
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
}

/// Backward dataflow over the reachable blocks: one pass in postorder for an acyclic CFG, repeated
/// until nothing changes when there are loops.
pub fn liveness(func: &Function, rpo: &[BlockId]) -> Liveness {
    let nv = func.num_vregs as usize;
    let nb = func.blocks.len();
    // Per block: upward-exposed uses and definitions, sorted, in `local`.
    let mut local: Vec<u32> = Vec::new();
    let mut uses_rng = vec![(0u32, 0u32); nb];
    let mut defs_rng = vec![(0u32, 0u32); nb];
    let mut def_stamp = vec![u32::MAX; nv];
    let mut pos = vec![usize::MAX; nb];
    for (i, &b) in rpo.iter().enumerate() {
        pos[b.0 as usize] = i;
    }
    let mut has_back_edge = false;
    for &b in rpo {
        let block = func.block(b);
        let start = local.len() as u32;
        let see_use = |v: super::ir::VReg, stamp: &Vec<u32>, local: &mut Vec<u32>| {
            if stamp[v.0 as usize] != b.0 {
                local.push(v.0);
            }
        };
        for inst in &block.insts {
            inst.for_each_use(|v| see_use(v, &def_stamp, &mut local));
            if let Some(d) = inst.def() {
                def_stamp[d.0 as usize] = b.0;
            }
        }
        block
            .term
            .for_each_use(|v| see_use(v, &def_stamp, &mut local));
        let u = &mut local[start as usize..];
        u.sort_unstable();
        let n = dedup_len(u);
        local.truncate(start as usize + n);
        uses_rng[b.0 as usize] = (start, local.len() as u32);
        let dstart = local.len() as u32;
        for inst in &block.insts {
            if let Some(d) = inst.def() {
                local.push(d.0);
            }
        }
        let d = &mut local[dstart as usize..];
        d.sort_unstable();
        let n = dedup_len(d);
        local.truncate(dstart as usize + n);
        defs_rng[b.0 as usize] = (dstart, local.len() as u32);
        has_back_edge |= block
            .term
            .successors()
            .any(|s| pos[s.0 as usize] <= pos[b.0 as usize]);
    }
    let mut live = Liveness {
        arena: Vec::new(),
        live_in: vec![(0, 0); nb],
        live_out: vec![(0, 0); nb],
    };
    let mut rest: Vec<u32> = Vec::new();
    loop {
        let mut changed = false;
        for &b in rpo.iter().rev() {
            let bi = b.0 as usize;
            // live_out = ∪ live_in(successors): sorted sets, merged (no sort).
            let out_start = live.arena.len();
            let mut succ = func.block(b).term.successors();
            match (succ.next(), succ.next()) {
                (None, _) => {}
                (Some(s), None) => {
                    let r = live.live_in[s.0 as usize];
                    live.arena.extend_from_within(r.0 as usize..r.1 as usize);
                }
                (Some(s), Some(t)) => {
                    let (a, c) = (live.live_in[s.0 as usize], live.live_in[t.0 as usize]);
                    union_within(&mut live.arena, a, c);
                }
            }
            live.live_out[bi] = (out_start as u32, live.arena.len() as u32);
            // live_in = uses ∪ (out − defs)
            let (us, ue) = uses_rng[bi];
            let (ds, de) = defs_rng[bi];
            rest.clear();
            difference_into(
                &live.arena[out_start..],
                &local[ds as usize..de as usize],
                &mut rest,
            );
            let in_start = live.arena.len();
            union_into(&local[us as usize..ue as usize], &rest, &mut live.arena);
            let new_rng = (in_start as u32, live.arena.len() as u32);
            if live.slice(new_rng) != live.slice(live.live_in[bi]) {
                changed = true;
            }
            live.live_in[bi] = new_rng;
        }
        if !changed || !has_back_edge {
            break;
        }
    }
    live
}

/// `a ∪ b` for sorted, deduplicated lists, appended to `out`.
fn union_into(a: &[u32], b: &[u32], out: &mut Vec<u32>) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        out.push(x.min(y));
        i += usize::from(x <= y);
        j += usize::from(y <= x);
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}

/// [`union_into`] of two ranges of `arena`, appended to `arena`.
fn union_within(arena: &mut Vec<u32>, a: (u32, u32), b: (u32, u32)) {
    let (mut i, mut j) = (a.0 as usize, b.0 as usize);
    let (ae, be) = (a.1 as usize, b.1 as usize);
    while i < ae && j < be {
        let (x, y) = (arena[i], arena[j]);
        arena.push(x.min(y));
        i += usize::from(x <= y);
        j += usize::from(y <= x);
    }
    arena.extend_from_within(i..ae);
    arena.extend_from_within(j..be);
}

/// Moves the distinct values of a sorted slice to its front; returns how many there are.
fn dedup_len(v: &mut [u32]) -> usize {
    if v.is_empty() {
        return 0;
    }
    let mut w = 1;
    for r in 1..v.len() {
        if v[r] != v[w - 1] {
            v[w] = v[r];
            w += 1;
        }
    }
    w
}
