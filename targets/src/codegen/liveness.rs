//! Control-flow order and liveness of IR virtual registers.
//!
//! In: a [`Function`]. Out: the reachable blocks in reverse postorder (also the code layout: the
//! "else"/"ok" successor of a branch follows it, so it falls through) and per-block live-in/live-out
//! sets. Unreachable blocks get no order position: they are never emitted (the verifier refuses
//! unreachable instructions).

use super::ir::{BlockId, Function, Terminator};

/// A fixed-size set of small integers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    pub fn new(n: usize) -> Self {
        BitSet { words: vec![0; n.div_ceil(64)] }
    }

    pub fn insert(&mut self, i: usize) -> bool {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        let was = self.words[w] & b != 0;
        self.words[w] |= b;
        !was
    }

    pub fn remove(&mut self, i: usize) {
        self.words[i / 64] &= !(1u64 << (i % 64));
    }

    pub fn contains(&self, i: usize) -> bool {
        self.words.get(i / 64).is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// `self |= other`; whether anything changed.
    pub fn union_with(&mut self, other: &BitSet) -> bool {
        let mut changed = false;
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            let n = *a | *b;
            changed |= n != *a;
            *a = n;
        }
        changed
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }
}

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

/// One bit set per block, stored in one allocation (blocks of policy programs are tiny and
/// numerous; per-block allocations would dominate).
#[derive(Clone, Debug, Default)]
struct BitMatrix {
    words: usize,
    bits: Vec<u64>,
}

impl BitMatrix {
    fn new(rows: usize, cols: usize) -> Self {
        let words = cols.div_ceil(64);
        BitMatrix { words, bits: vec![0; rows * words] }
    }

    fn row(&self, r: usize) -> &[u64] {
        &self.bits[r * self.words..(r + 1) * self.words]
    }

    fn row_mut(&mut self, r: usize) -> &mut [u64] {
        &mut self.bits[r * self.words..(r + 1) * self.words]
    }

    fn insert(&mut self, r: usize, i: usize) {
        self.bits[r * self.words + i / 64] |= 1 << (i % 64);
    }

    fn contains(&self, r: usize, i: usize) -> bool {
        self.bits[r * self.words + i / 64] & (1 << (i % 64)) != 0
    }

    fn iter_row(&self, r: usize) -> impl Iterator<Item = usize> + '_ {
        self.row(r).iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

/// Live-in and live-out sets per block (indexed by block id; unreachable blocks stay empty).
///
/// Only "global" registers — those read in some block before (or without) being written there —
/// can be live at a block boundary, so the sets range over those alone: policy programs have
/// thousands of block-local temporaries and a handful of values that cross blocks.
pub struct Liveness {
    /// Global index → virtual register number.
    pub globals: Vec<u32>,
    /// Virtual register number → global index (`u32::MAX`: block-local).
    global_index: Vec<u32>,
    live_in: BitMatrix,
    live_out: BitMatrix,
}

impl Liveness {
    /// Virtual register numbers live into block `b`, in increasing global order.
    pub fn live_in(&self, b: BlockId) -> impl Iterator<Item = usize> + '_ {
        self.live_in.iter_row(b.0 as usize).map(|g| self.globals[g] as usize)
    }

    /// Virtual register numbers live out of block `b`.
    pub fn live_out(&self, b: BlockId) -> impl Iterator<Item = usize> + '_ {
        self.live_out.iter_row(b.0 as usize).map(|g| self.globals[g] as usize)
    }

    pub fn is_live_in(&self, b: BlockId, v: usize) -> bool {
        match self.global_index.get(v) {
            Some(&g) if g != u32::MAX => self.live_in.contains(b.0 as usize, g as usize),
            _ => false,
        }
    }
}

/// Backward dataflow over the reachable blocks.
pub fn liveness(func: &Function, rpo: &[BlockId]) -> Liveness {
    let nv = func.num_vregs as usize;
    let nb = func.blocks.len();
    // Pass 1: which registers are read before being written in some block.
    let mut def_stamp = vec![u32::MAX; nv];
    let mut global_index = vec![u32::MAX; nv];
    let mut globals = Vec::new();
    for &b in rpo {
        let block = func.block(b);
        let mut see_use = |v: super::ir::VReg, stamp: &Vec<u32>| {
            let v = v.0 as usize;
            if stamp[v] != b.0 && global_index[v] == u32::MAX {
                global_index[v] = globals.len() as u32;
                globals.push(v as u32);
            }
        };
        for inst in &block.insts {
            inst.for_each_use(|v| see_use(v, &def_stamp));
            if let Some(d) = inst.def() {
                def_stamp[d.0 as usize] = b.0;
            }
        }
        block.term.for_each_use(|v| see_use(v, &def_stamp));
    }
    let ng = globals.len();
    // Pass 2: per-block upward-exposed uses (straight into live_in) and definitions of globals.
    let mut live_in = BitMatrix::new(nb, ng);
    let mut defs = BitMatrix::new(nb, ng);
    for &b in rpo {
        let bi = b.0 as usize;
        let block = func.block(b);
        let see_use = |v: super::ir::VReg, defs: &BitMatrix, live_in: &mut BitMatrix| {
            let g = global_index[v.0 as usize];
            if g != u32::MAX && !defs.contains(bi, g as usize) {
                live_in.insert(bi, g as usize);
            }
        };
        for inst in &block.insts {
            inst.for_each_use(|v| see_use(v, &defs, &mut live_in));
            if let Some(v) = inst.def() {
                let g = global_index[v.0 as usize];
                if g != u32::MAX {
                    defs.insert(bi, g as usize);
                }
            }
        }
        block.term.for_each_use(|v| see_use(v, &defs, &mut live_in));
    }
    let mut live_out = BitMatrix::new(nb, ng);
    let w = live_in.words;
    let mut scratch = vec![0u64; w];
    let mut changed = true;
    while changed {
        changed = false;
        for &b in rpo.iter().rev() {
            let bi = b.0 as usize;
            scratch.iter_mut().for_each(|x| *x = 0);
            for s in func.block(b).term.successors() {
                for (x, y) in scratch.iter_mut().zip(live_in.row(s.0 as usize)) {
                    *x |= y;
                }
            }
            live_out.row_mut(bi).copy_from_slice(&scratch);
            // live_in = uses ∪ (out − defs); it only grows, so union the difference in.
            let d = defs.row(bi);
            for (k, x) in live_in.row_mut(bi).iter_mut().enumerate() {
                let n = *x | (scratch[k] & !d[k]);
                changed |= n != *x;
                *x = n;
            }
        }
    }
    Liveness { globals, global_index, live_in, live_out }
}
