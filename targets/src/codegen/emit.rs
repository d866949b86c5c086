//! Emission: machine IR + register allocation → eBPF instructions per block.
//!
//! In: an [`MFunction`] and its [`Allocation`]. Out: per block, the raw instructions of its body
//! (spill reloads and stores, call argument moves included) and a symbolic terminator that the
//! linker turns into jumps once block addresses are known.

use super::ir::{Annotation, BlockId, VReg};
use super::isel::{Callee, MArg, MFunction, MInst, MSrc, MTerm};
use super::regalloc::{Allocation, Loc};
use crate::isa::RawInsn;
use crate::isa::opcode::*;
use crate::program::RelocTarget;

/// How a block ends, before addresses are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ETerm {
    /// The body ends in `exit`.
    Exit,
    Jump(BlockId),
    /// `if dst op src/imm goto then_ else goto else_`.
    Cond {
        jmp32: bool,
        op: u8,
        dst: u8,
        src: Option<u8>,
        imm: i32,
        then_: BlockId,
        else_: BlockId,
    },
}

/// A block's body is `Emitted::insns[start..end]`.
#[derive(Clone, Debug)]
pub struct EBlock {
    pub id: BlockId,
    pub start: usize,
    pub end: usize,
    pub term: ETerm,
}

/// Emitted code of one function, blocks in layout order, bodies in one vector.
#[derive(Clone, Debug, Default)]
pub struct Emitted {
    pub insns: Vec<RawInsn>,
    /// (slot index within `insns`, target), in increasing slot order.
    pub relocs: Vec<(usize, RelocTarget)>,
    pub blocks: Vec<EBlock>,
    /// Source annotations, in layout order.
    pub annotations: Vec<EAnnotation>,
}

/// An annotation starting at slot `insn` of `Emitted::insns`, inside block `blocks[block]`
/// (`insn == end` of that block means its terminator's jumps, which the linker places).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EAnnotation {
    pub block: usize,
    pub insn: usize,
    pub source: Annotation,
}

fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> RawInsn {
    RawInsn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

struct Emitter<'a> {
    alloc: &'a Allocation,
    maps: &'a [String],
    out: Vec<RawInsn>,
    relocs: Vec<(usize, RelocTarget)>,
    /// Per register, the spill slot it holds a copy of since its last write (within the current
    /// block): a reload of that slot into it is left out.
    mirrors: [Option<i16>; 11],
}

impl Emitter<'_> {
    /// Appends `insn`, keeping [`Self::mirrors`] true: a write to a register ends its copy, a
    /// 64-bit store of a register to the frame starts one, any store to the frame ends the copies
    /// of the bytes it overwrites, and a call clobbers r0–r5.
    fn push(&mut self, insn: RawInsn) {
        let class = insn.code & 0x07;
        match class {
            BPF_ALU | BPF_ALU64 | BPF_LDX | BPF_LD => {
                self.mirrors[usize::from(insn.dst & 0x0f)] = None
            }
            BPF_ST | BPF_STX => {
                if insn.code & 0xe0 != BPF_MEM {
                    // Atomics may write their source register (fetch) and the memory.
                    self.mirrors = [None; 11];
                } else if insn.dst == BPF_REG_FP {
                    let size = match insn.code & 0x18 {
                        BPF_DW => 8,
                        BPF_W => 4,
                        BPF_H => 2,
                        _ => 1,
                    };
                    let (lo, hi) = (i32::from(insn.off), i32::from(insn.off) + size);
                    for m in self.mirrors.iter_mut() {
                        if let Some(at) = *m
                            && i32::from(at) < hi
                            && lo < i32::from(at) + 8
                        {
                            *m = None;
                        }
                    }
                    if class == BPF_STX && insn.code & 0x18 == BPF_DW {
                        self.mirrors[usize::from(insn.src & 0x0f)] = Some(insn.off);
                    }
                }
            }
            BPF_JMP | BPF_JMP32 if insn.code & 0xf0 == BPF_CALL => {
                for m in &mut self.mirrors[0..=5] {
                    *m = None;
                }
            }
            _ => {}
        }
        self.out.push(insn);
    }

    /// Loads spill slot `off` into `reg` unless `reg` already holds a copy of it.
    fn reload(&mut self, reg: u8, off: i16) {
        if self.mirrors[usize::from(reg)] != Some(off) {
            self.push(ins(BPF_LDX | BPF_MEM | BPF_DW, reg, BPF_REG_FP, off, 0));
            self.mirrors[usize::from(reg)] = Some(off);
        }
    }

    fn loc(&self, v: VReg) -> Option<Loc> {
        self.alloc.locs.get(v.0 as usize).copied().flatten()
    }

    /// The register holding `v`, reloading a spilled value into `scratch`.
    fn read(&mut self, v: VReg, scratch: u8) -> u8 {
        match self.loc(v) {
            Some(Loc::Reg(r)) => r,
            Some(Loc::Spill(off)) => {
                self.reload(scratch, off);
                scratch
            }
            None => scratch,
        }
    }

    /// The register an instruction should write `v` into.
    fn target(&self, v: VReg, scratch: u8) -> u8 {
        match self.loc(v) {
            Some(Loc::Reg(r)) => r,
            _ => scratch,
        }
    }

    /// Stores `reg` back when `v` is spilled.
    fn commit(&mut self, v: VReg, reg: u8) {
        if let Some(Loc::Spill(off)) = self.loc(v) {
            self.push(ins(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_FP, reg, off, 0));
        }
    }

    fn mov_imm64(&mut self, dst: u8, value: i64) {
        if let Ok(k) = i32::try_from(value) {
            self.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, k));
        } else if let Ok(u) = u32::try_from(value) {
            self.push(ins(BPF_ALU | BPF_MOV | BPF_K, dst, 0, 0, u as i32));
        } else {
            self.push(ins(BPF_LD | BPF_DW | BPF_IMM, dst, 0, 0, value as i32));
            self.push(ins(0, 0, 0, 0, (value >> 32) as i32));
        }
    }

    /// Moves `src → dst` registers as if all at once, using r0 to break cycles (r0 is never a
    /// source: it holds no allocated value).
    fn parallel_move(&mut self, mut moves: Vec<(u8, u8)>) {
        moves.retain(|(d, s)| d != s);
        while !moves.is_empty() {
            if let Some(i) = moves
                .iter()
                .position(|&(d, _)| !moves.iter().any(|&(_, s)| s == d))
            {
                let (d, s) = moves.remove(i);
                self.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0));
            } else {
                let (d, _) = moves[0];
                self.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 0, d, 0, 0));
                for m in moves.iter_mut() {
                    if m.1 == d {
                        m.1 = 0;
                    }
                }
            }
        }
    }

    fn inst(&mut self, inst: &MInst) {
        let [s0, s1] = self.alloc.scratch;
        match inst {
            MInst::MovImm { dst, imm, w32 } => {
                let r = self.target(*dst, s0);
                let class = if *w32 { BPF_ALU } else { BPF_ALU64 };
                self.push(ins(class | BPF_MOV | BPF_K, r, 0, 0, *imm));
                self.commit(*dst, r);
            }
            MInst::LdImm64 { dst, imm } => {
                let r = self.target(*dst, s0);
                self.push(ins(BPF_LD | BPF_DW | BPF_IMM, r, 0, 0, *imm as i32));
                self.push(ins(0, 0, 0, 0, (*imm >> 32) as i32));
                self.commit(*dst, r);
            }
            MInst::LdMap { dst, map } => {
                let r = self.target(*dst, s0);
                let name = self.maps.get(*map as usize).cloned().unwrap_or_default();
                self.relocs.push((self.out.len(), RelocTarget::Map(name)));
                self.push(ins(BPF_LD | BPF_DW | BPF_IMM, r, BPF_PSEUDO_MAP_FD, 0, 0));
                self.push(ins(0, 0, 0, 0, 0));
                self.commit(*dst, r);
            }
            MInst::LinkConst { dst, name } => {
                let r = self.target(*dst, s0);
                self.relocs
                    .push((self.out.len(), RelocTarget::Constant((*name).to_owned())));
                self.push(ins(BPF_ALU | BPF_MOV | BPF_K, r, 0, 0, 0));
                self.commit(*dst, r);
            }
            MInst::Mov { dst, src, w32 } => {
                if self.loc(*dst) == self.loc(*src) && !*w32 {
                    return;
                }
                let rs = self.read(*src, s1);
                if let (Some(Loc::Spill(off)), false) = (self.loc(*dst), *w32) {
                    self.push(ins(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_FP, rs, off, 0));
                    return;
                }
                let rd = self.target(*dst, s0);
                let class = if *w32 { BPF_ALU } else { BPF_ALU64 };
                self.push(ins(class | BPF_MOV | BPF_X, rd, rs, 0, 0));
                self.commit(*dst, rd);
            }
            MInst::Alu { op, dst, src, w32 } => {
                let rd = self.read(*dst, s0);
                let class = if *w32 { BPF_ALU } else { BPF_ALU64 };
                match src {
                    MSrc::Reg(s) => {
                        let rs = self.read(*s, s1);
                        self.push(ins(class | op | BPF_X, rd, rs, 0, 0));
                    }
                    MSrc::Imm(k) => self.push(ins(class | op | BPF_K, rd, 0, 0, *k)),
                }
                self.commit(*dst, rd);
            }
            MInst::Neg { dst, w32 } => {
                let rd = self.read(*dst, s0);
                let class = if *w32 { BPF_ALU } else { BPF_ALU64 };
                self.push(ins(class | BPF_NEG | BPF_K, rd, 0, 0, 0));
                self.commit(*dst, rd);
            }
            MInst::Bswap { dst, bits } => {
                let rd = self.read(*dst, s0);
                self.push(ins(
                    BPF_ALU | BPF_END | BPF_TO_BE,
                    rd,
                    0,
                    0,
                    i32::from(*bits),
                ));
                self.commit(*dst, rd);
            }
            MInst::Ldx {
                dst,
                base,
                off,
                size,
            } => {
                let rb = self.read(*base, s1);
                let rd = self.target(*dst, s0);
                self.push(ins(BPF_LDX | BPF_MEM | size, rd, rb, *off, 0));
                self.commit(*dst, rd);
            }
            MInst::Stx {
                base,
                off,
                src,
                size,
            } => {
                let rb = self.read(*base, s0);
                let rs = self.read(*src, s1);
                self.push(ins(BPF_STX | BPF_MEM | size, rb, rs, *off, 0));
            }
            MInst::St {
                base,
                off,
                imm,
                size,
            } => {
                let rb = self.read(*base, s0);
                self.push(ins(BPF_ST | BPF_MEM | size, rb, 0, *off, *imm));
            }
            MInst::LdxFp { dst, off, size } => {
                let rd = self.target(*dst, s0);
                self.push(ins(BPF_LDX | BPF_MEM | size, rd, BPF_REG_FP, *off, 0));
                self.commit(*dst, rd);
            }
            MInst::StxFp { off, src, size } => {
                let rs = self.read(*src, s0);
                self.push(ins(BPF_STX | BPF_MEM | size, BPF_REG_FP, rs, *off, 0));
            }
            MInst::StFp { off, imm, size } => {
                self.push(ins(BPF_ST | BPF_MEM | size, BPF_REG_FP, 0, *off, *imm));
            }
            MInst::FpAddr { dst, off } => {
                let rd = self.target(*dst, s0);
                self.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, rd, BPF_REG_FP, 0, 0));
                self.push(ins(BPF_ALU64 | BPF_ADD | BPF_K, rd, 0, 0, i32::from(*off)));
                self.commit(*dst, rd);
            }
            MInst::Call { callee, args, ret } => {
                let mut moves = Vec::new();
                let mut later: Vec<(u8, Result<i16, i64>)> = Vec::new();
                for (i, a) in args.iter().enumerate() {
                    let d = i as u8 + 1;
                    match a {
                        MArg::Reg(v) => match self.loc(*v) {
                            Some(Loc::Reg(r)) => moves.push((d, r)),
                            Some(Loc::Spill(off)) => later.push((d, Ok(off))),
                            None => later.push((d, Err(0))),
                        },
                        MArg::Imm(k) => later.push((d, Err(*k))),
                    }
                }
                self.parallel_move(moves);
                for (d, src) in later {
                    match src {
                        Ok(off) => self.reload(d, off),
                        Err(k) => self.mov_imm64(d, k),
                    }
                }
                match callee {
                    Callee::Helper(id) => self.push(ins(BPF_JMP | BPF_CALL, 0, 0, 0, *id)),
                    Callee::Local(name) => {
                        self.relocs
                            .push((self.out.len(), RelocTarget::Subprogram(name.clone())));
                        self.push(ins(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, -1));
                    }
                }
                if let Some(r) = ret {
                    match self.loc(*r) {
                        Some(Loc::Reg(d)) => {
                            self.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, d, 0, 0, 0))
                        }
                        Some(Loc::Spill(off)) => {
                            self.push(ins(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_FP, 0, off, 0))
                        }
                        None => {}
                    }
                }
            }
        }
    }

    fn term(&mut self, term: &MTerm) -> ETerm {
        let [s0, s1] = self.alloc.scratch;
        match term {
            MTerm::Jump(t) => ETerm::Jump(*t),
            MTerm::Branch {
                op,
                w32,
                a,
                b,
                then_,
                else_,
            } => {
                let ra = self.read(*a, s0);
                let (src, imm) = match b {
                    MSrc::Reg(v) => (Some(self.read(*v, s1)), 0),
                    MSrc::Imm(k) => (None, *k),
                };
                ETerm::Cond {
                    jmp32: *w32,
                    op: *op,
                    dst: ra,
                    src,
                    imm,
                    then_: *then_,
                    else_: *else_,
                }
            }
            MTerm::Return(value) => {
                match value {
                    MArg::Reg(v) => match self.loc(*v) {
                        Some(Loc::Reg(r)) => {
                            self.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 0, r, 0, 0))
                        }
                        Some(Loc::Spill(off)) => {
                            self.push(ins(BPF_LDX | BPF_MEM | BPF_DW, 0, BPF_REG_FP, off, 0))
                        }
                        None => self.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0)),
                    },
                    MArg::Imm(k) => self.mov_imm64(0, *k),
                }
                self.push(ins(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
                ETerm::Exit
            }
        }
    }
}

/// Emits every block of `m` in layout order; `params[i]` arrives in r(i+1) and is moved to its
/// location at the top of the entry block.
pub fn emit(m: &MFunction, alloc: &Allocation, params: &[VReg], maps: &[String]) -> Emitted {
    let mut em = Emitter {
        alloc,
        maps,
        out: Vec::with_capacity(m.insts.len() + m.insts.len() / 4),
        relocs: Vec::new(),
        mirrors: [None; 11],
    };
    let mut blocks = Vec::with_capacity(m.order.len());
    let mut annotations = Vec::new();
    for (i, &b) in m.order.iter().enumerate() {
        let Some(block) = &m.blocks[b.0 as usize] else {
            continue;
        };
        let start = em.out.len();
        // A block may be entered by a jump: no copy is known at its start.
        em.mirrors = [None; 11];
        if i == 0 {
            let mut moves = Vec::new();
            for (k, p) in params.iter().enumerate() {
                let from = k as u8 + 1;
                match em.loc(*p) {
                    Some(Loc::Spill(off)) => {
                        em.push(ins(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_FP, from, off, 0))
                    }
                    Some(Loc::Reg(r)) => moves.push((r, from)),
                    None => {}
                }
            }
            em.parallel_move(moves);
        }
        let layout_index = blocks.len();
        let mut pending = block.annotations.iter().peekable();
        // Annotations of the first instruction also cover what comes before it in the block
        // (parameter moves), so an annotated block's code starts annotated.
        while let Some((_, a)) = pending.next_if(|(k, _)| *k <= block.start) {
            annotations.push(EAnnotation {
                block: layout_index,
                insn: start,
                source: a.clone(),
            });
        }
        for (k, inst) in m.insts[block.start..block.end].iter().enumerate() {
            while let Some((_, a)) = pending.next_if(|(at, _)| *at <= block.start + k) {
                annotations.push(EAnnotation {
                    block: layout_index,
                    insn: em.out.len(),
                    source: a.clone(),
                });
            }
            em.inst(inst);
        }
        for (_, a) in pending {
            annotations.push(EAnnotation {
                block: layout_index,
                insn: em.out.len(),
                source: a.clone(),
            });
        }
        let term = em.term(&block.term);
        blocks.push(EBlock {
            id: b,
            start,
            end: em.out.len(),
            term,
        });
    }
    Emitted {
        insns: em.out,
        relocs: em.relocs,
        blocks,
        annotations,
    }
}
