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

/// Live-in and live-out sets per block (indexed by block id; unreachable blocks stay empty).
pub struct Liveness {
    pub live_in: Vec<BitSet>,
    pub live_out: Vec<BitSet>,
}

/// Backward dataflow over the reachable blocks.
pub fn liveness(func: &Function, rpo: &[BlockId]) -> Liveness {
    let nv = func.num_vregs as usize;
    let nb = func.blocks.len();
    let mut uses = vec![BitSet::default(); nb];
    let mut defs = vec![BitSet::default(); nb];
    for &b in rpo {
        let mut u = BitSet::new(nv);
        let mut d = BitSet::new(nv);
        let block = func.block(b);
        for inst in &block.insts {
            inst.for_each_use(|v| {
                if !d.contains(v.0 as usize) {
                    u.insert(v.0 as usize);
                }
            });
            if let Some(v) = inst.def() {
                d.insert(v.0 as usize);
            }
        }
        block.term.for_each_use(|v| {
            if !d.contains(v.0 as usize) {
                u.insert(v.0 as usize);
            }
        });
        uses[b.0 as usize] = u;
        defs[b.0 as usize] = d;
    }
    let mut live_in: Vec<BitSet> = vec![BitSet::default(); nb];
    let mut live_out: Vec<BitSet> = vec![BitSet::default(); nb];
    for &b in rpo {
        live_in[b.0 as usize] = uses[b.0 as usize].clone();
        live_out[b.0 as usize] = BitSet::new(nv);
    }
    let mut changed = true;
    while changed {
        changed = false;
        for &b in rpo.iter().rev() {
            let bi = b.0 as usize;
            let mut out = std::mem::take(&mut live_out[bi]);
            for s in func.block(b).term.successors() {
                out.union_with(&live_in[s.0 as usize]);
            }
            // live_in = uses ∪ (out − defs); only grows, so union the difference in.
            let mut add = out.clone();
            for (a, d) in add.words.iter_mut().zip(&defs[bi].words) {
                *a &= !d;
            }
            changed |= live_in[bi].union_with(&add);
            live_out[bi] = out;
        }
    }
    Liveness { live_in, live_out }
}
