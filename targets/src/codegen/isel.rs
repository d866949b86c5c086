//! Instruction selection: checked IR → machine IR (eBPF operations on virtual registers).
//!
//! In: a checked [`Function`] and the checker's facts. Out: an [`MFunction`] whose instructions map
//! one-to-one onto eBPF instructions except for calls and returns (argument and result moves are
//! placed after register allocation). Three-address IR becomes eBPF's two-address form here;
//! immediates that eBPF cannot encode are materialized into temporaries, which are always local to
//! one block (so the IR liveness still describes every value that crosses blocks).
//!
//! 32-bit subregisters: a constant in `[2^31, 2^32)` is one `mov32` instead of an `ld_imm64`, and a
//! 64-bit compare of a value known to fit in 32 bits against such a constant becomes a JMP32 compare.

use super::check::CheckInfo;
use super::ir::*;
use super::slots::SlotLayout;
use crate::isa::opcode::*;

/// A machine-IR source operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MSrc {
    Reg(VReg),
    Imm(i32),
}

/// A call argument: register, or a constant loaded straight into the argument register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MArg {
    Reg(VReg),
    Imm(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Callee {
    Helper(i32),
    Local(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MInst {
    /// `mov dst, imm` (64-bit: sign-extended; `w32`: zero-extended).
    MovImm {
        dst: VReg,
        imm: i32,
        w32: bool,
    },
    LdImm64 {
        dst: VReg,
        imm: i64,
    },
    LdMap {
        dst: VReg,
        map: u32,
    },
    /// `mov32 dst, <name>`, bound later ([`Inst::LinkConst`]).
    LinkConst {
        dst: VReg,
        name: &'static str,
    },
    Mov {
        dst: VReg,
        src: VReg,
        w32: bool,
    },
    /// `dst op= src` (`op` one of the `BPF_ADD`.. constants).
    Alu {
        op: u8,
        dst: VReg,
        src: MSrc,
        w32: bool,
    },
    Neg {
        dst: VReg,
        w32: bool,
    },
    /// Host → big endian of the low `bits` (`be16/32/64`).
    Bswap {
        dst: VReg,
        bits: u8,
    },
    Ldx {
        dst: VReg,
        base: VReg,
        off: i16,
        size: u8,
    },
    Stx {
        base: VReg,
        off: i16,
        src: VReg,
        size: u8,
    },
    St {
        base: VReg,
        off: i16,
        imm: i32,
        size: u8,
    },
    /// Frame-pointer relative (user stack slots).
    LdxFp {
        dst: VReg,
        off: i16,
        size: u8,
    },
    StxFp {
        off: i16,
        src: VReg,
        size: u8,
    },
    StFp {
        off: i16,
        imm: i32,
        size: u8,
    },
    FpAddr {
        dst: VReg,
        off: i16,
    },
    Call {
        callee: Callee,
        args: Vec<MArg>,
        ret: Option<VReg>,
    },
}

impl MInst {
    pub fn def(&self) -> Option<VReg> {
        match self {
            MInst::MovImm { dst, .. }
            | MInst::LdImm64 { dst, .. }
            | MInst::LdMap { dst, .. }
            | MInst::LinkConst { dst, .. }
            | MInst::Mov { dst, .. }
            | MInst::Alu { dst, .. }
            | MInst::Neg { dst, .. }
            | MInst::Bswap { dst, .. }
            | MInst::Ldx { dst, .. }
            | MInst::LdxFp { dst, .. }
            | MInst::FpAddr { dst, .. } => Some(*dst),
            MInst::Call { ret, .. } => *ret,
            MInst::Stx { .. } | MInst::St { .. } | MInst::StxFp { .. } | MInst::StFp { .. } => None,
        }
    }

    pub fn for_each_use(&self, mut f: impl FnMut(VReg)) {
        match self {
            MInst::MovImm { .. }
            | MInst::LdImm64 { .. }
            | MInst::LdMap { .. }
            | MInst::LinkConst { .. }
            | MInst::FpAddr { .. } => {}
            MInst::LdxFp { .. } | MInst::StFp { .. } => {}
            MInst::Mov { src, .. } => f(*src),
            MInst::Alu { dst, src, .. } => {
                f(*dst);
                if let MSrc::Reg(s) = src {
                    f(*s)
                }
            }
            MInst::Neg { dst, .. } | MInst::Bswap { dst, .. } => f(*dst),
            MInst::Ldx { base, .. } | MInst::St { base, .. } => f(*base),
            MInst::Stx { base, src, .. } => {
                f(*base);
                f(*src);
            }
            MInst::StxFp { src, .. } => f(*src),
            MInst::Call { args, .. } => args.iter().for_each(|a| {
                if let MArg::Reg(v) = a {
                    f(*v)
                }
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MTerm {
    Jump(BlockId),
    /// `if a op b goto then_ else goto else_` (`op` one of `BPF_JEQ`..; `w32`: JMP32 class).
    Branch {
        op: u8,
        w32: bool,
        a: VReg,
        b: MSrc,
        then_: BlockId,
        else_: BlockId,
    },
    Return(MArg),
}

impl MTerm {
    pub fn for_each_use(&self, mut f: impl FnMut(VReg)) {
        match self {
            MTerm::Jump(_) => {}
            MTerm::Branch { a, b, .. } => {
                f(*a);
                if let MSrc::Reg(s) = b {
                    f(*s)
                }
            }
            MTerm::Return(MArg::Reg(v)) => f(*v),
            MTerm::Return(MArg::Imm(_)) => {}
        }
    }
}

/// A block's instructions are `MFunction::insts[start..end]`.
#[derive(Clone, Debug)]
pub struct MBlock {
    pub start: usize,
    pub end: usize,
    pub term: MTerm,
    /// `(i, a)`: annotation `a` starts at `insts[i]`, or at the terminator's code when `i == end`.
    pub annotations: Vec<(usize, Annotation)>,
}

/// A function in machine IR. `blocks` is indexed like the IR's; only blocks in `order` exist.
/// Instructions of all blocks share one vector (blocks are small and many).
#[derive(Clone, Debug)]
pub struct MFunction {
    pub insts: Vec<MInst>,
    pub blocks: Vec<Option<MBlock>>,
    pub order: Vec<BlockId>,
    pub num_vregs: u32,
    /// Bytes of user stack slots (spill slots go below them).
    pub user_stack: u32,
}

pub fn alu_code(op: AluOp) -> u8 {
    match op {
        AluOp::Add => BPF_ADD,
        AluOp::Sub => BPF_SUB,
        AluOp::Mul => BPF_MUL,
        AluOp::Div => BPF_DIV,
        AluOp::Mod => BPF_MOD,
        AluOp::Or => BPF_OR,
        AluOp::And => BPF_AND,
        AluOp::Xor => BPF_XOR,
        AluOp::Lsh => BPF_LSH,
        AluOp::Rsh => BPF_RSH,
        AluOp::Arsh => BPF_ARSH,
    }
}

pub fn jmp_code(c: Cond) -> u8 {
    match c {
        Cond::Eq => BPF_JEQ,
        Cond::Ne => BPF_JNE,
        Cond::Gt => BPF_JGT,
        Cond::Ge => BPF_JGE,
        Cond::Lt => BPF_JLT,
        Cond::Le => BPF_JLE,
        Cond::Sgt => BPF_JSGT,
        Cond::Sge => BPF_JSGE,
        Cond::Slt => BPF_JSLT,
        Cond::Sle => BPF_JSLE,
        Cond::Set => BPF_JSET,
    }
}

fn size_code(s: Size) -> u8 {
    match s {
        Size::B => BPF_B,
        Size::H => BPF_H,
        Size::W => BPF_W,
        Size::DW => BPF_DW,
    }
}

struct Lower {
    next: u32,
    out: Vec<MInst>,
}

impl Lower {
    fn temp(&mut self) -> VReg {
        let v = VReg(self.next);
        self.next += 1;
        v
    }

    fn constant(&mut self, dst: VReg, value: i64) {
        if let Ok(imm) = i32::try_from(value) {
            self.out.push(MInst::MovImm {
                dst,
                imm,
                w32: false,
            });
        } else if let Ok(u) = u32::try_from(value) {
            self.out.push(MInst::MovImm {
                dst,
                imm: u as i32,
                w32: true,
            });
        } else {
            self.out.push(MInst::LdImm64 { dst, imm: value });
        }
    }

    /// An ALU source for a 64-bit (or, with `w32`, 32-bit) operation.
    fn src(&mut self, o: Operand, w32: bool) -> MSrc {
        match o {
            Operand::Reg(v) => MSrc::Reg(v),
            Operand::Imm(i) if w32 => MSrc::Imm(i as u32 as i32),
            Operand::Imm(i) => match i32::try_from(i) {
                Ok(k) => MSrc::Imm(k),
                Err(_) => {
                    let t = self.temp();
                    self.constant(t, i);
                    MSrc::Reg(t)
                }
            },
        }
    }

    /// `dst = a op b` in two-address form.
    fn alu(&mut self, op: u8, w32: bool, dst: VReg, a: VReg, b: Operand) {
        let src = self.src(b, w32);
        if src == MSrc::Reg(dst) && a != dst {
            let t = self.temp();
            self.out.push(MInst::Mov {
                dst: t,
                src: a,
                w32: false,
            });
            self.out.push(MInst::Alu {
                op,
                dst: t,
                src,
                w32,
            });
            self.out.push(MInst::Mov {
                dst,
                src: t,
                w32: false,
            });
        } else {
            if a != dst {
                self.out.push(MInst::Mov {
                    dst,
                    src: a,
                    w32: false,
                });
            }
            self.out.push(MInst::Alu { op, dst, src, w32 });
        }
    }

    fn unary(&mut self, dst: VReg, src: VReg, inst: MInst) {
        if src != dst {
            self.out.push(MInst::Mov {
                dst,
                src,
                w32: false,
            });
        }
        self.out.push(inst);
    }

    /// A base register and 16-bit offset for `ptr + off`.
    fn addr(&mut self, ptr: VReg, off: i32) -> (VReg, i16) {
        match i16::try_from(off) {
            Ok(o) => (ptr, o),
            Err(_) => {
                let t = self.temp();
                self.out.push(MInst::Mov {
                    dst: t,
                    src: ptr,
                    w32: false,
                });
                self.out.push(MInst::Alu {
                    op: BPF_ADD,
                    dst: t,
                    src: MSrc::Imm(off),
                    w32: false,
                });
                (t, 0)
            }
        }
    }

    fn store_value(&mut self, value: Operand, size: Size) -> Result<i32, VReg> {
        match value {
            Operand::Imm(i) => match i32::try_from(i) {
                // A 32-bit-or-narrower store truncates, so any low 32 bits will do.
                _ if size != Size::DW => Ok(i as u32 as i32),
                Ok(k) => Ok(k),
                Err(_) => {
                    let t = self.temp();
                    self.constant(t, i);
                    Err(t)
                }
            },
            Operand::Reg(v) => Err(v),
        }
    }
}

/// Frame-pointer offsets of the user stack slots, one region each in declaration order, and their
/// total size: the reference layout (the IR interpreter's, and the checker's 512-byte limit).
pub fn slot_offsets(func: &Function) -> (Vec<i32>, u32) {
    let l = super::slots::separate(func);
    (l.offsets, l.size)
}

/// Lowers a checked function (blocks in `order`), with the default stack slot layout.
pub fn select(func: &Function, order: &[BlockId], info: &CheckInfo) -> MFunction {
    let layout = super::slots::layout(func, order, super::slots::SlotSharing::default());
    select_with_layout(func, order, info, &layout)
}

/// Lowers a checked function (blocks in `order`) with user stack slots at `layout`.
pub fn select_with_layout(
    func: &Function,
    order: &[BlockId],
    info: &CheckInfo,
    layout: &SlotLayout,
) -> MFunction {
    let (slot_off, user_stack) = (&layout.offsets, layout.size);
    // User slots total at most 512 bytes is checked by the caller; clamp keeps the cast total.
    let fp = |slot: SlotId, off: u32| -> i16 {
        (slot_off[slot.0 as usize] + off as i32).clamp(i32::from(i16::MIN), 0) as i16
    };
    let total: usize = order.iter().map(|b| func.block(*b).insts.len()).sum();
    let mut lw = Lower {
        next: func.num_vregs,
        out: Vec::with_capacity(total + total / 2),
    };
    let mut blocks: Vec<Option<MBlock>> = vec![None; func.blocks.len()];
    for &bid in order {
        let block = func.block(bid);
        let start = lw.out.len();
        let mut annotations = Vec::with_capacity(block.annotations.len());
        let mut pending = block.annotations.iter().peekable();
        for (k, inst) in block.insts.iter().enumerate() {
            while let Some((_, a)) = pending.next_if(|(i, _)| *i <= k) {
                annotations.push((lw.out.len(), a.clone()));
            }
            match inst {
                Inst::Const { dst, value } => lw.constant(*dst, *value),
                Inst::Copy { dst, src } => {
                    if dst != src {
                        lw.out.push(MInst::Mov {
                            dst: *dst,
                            src: *src,
                            w32: false,
                        });
                    }
                }
                Inst::Alu {
                    op,
                    width,
                    dst,
                    a,
                    b,
                } => lw.alu(alu_code(*op), *width == Width::W32, *dst, *a, *b),
                Inst::Neg { width, dst, src } => lw.unary(
                    *dst,
                    *src,
                    MInst::Neg {
                        dst: *dst,
                        w32: *width == Width::W32,
                    },
                ),
                Inst::Bswap { bits, dst, src } => lw.unary(
                    *dst,
                    *src,
                    MInst::Bswap {
                        dst: *dst,
                        bits: *bits,
                    },
                ),
                Inst::LoadCtx { dst, ctx, field } => lw.out.push(MInst::Ldx {
                    dst: *dst,
                    base: *ctx,
                    off: field.offset as i16,
                    size: if field.size == 8 { BPF_DW } else { BPF_W },
                }),
                Inst::Load {
                    dst,
                    ptr,
                    off,
                    size,
                } => {
                    let (base, off) = lw.addr(*ptr, *off);
                    lw.out.push(MInst::Ldx {
                        dst: *dst,
                        base,
                        off,
                        size: size_code(*size),
                    });
                }
                Inst::Store {
                    ptr,
                    off,
                    value,
                    size,
                } => {
                    let (base, off) = lw.addr(*ptr, *off);
                    let size_c = size_code(*size);
                    match lw.store_value(*value, *size) {
                        Ok(imm) => lw.out.push(MInst::St {
                            base,
                            off,
                            imm,
                            size: size_c,
                        }),
                        Err(src) => lw.out.push(MInst::Stx {
                            base,
                            off,
                            src,
                            size: size_c,
                        }),
                    }
                }
                Inst::PtrAdd { dst, ptr, offset } => lw.alu(BPF_ADD, false, *dst, *ptr, *offset),
                Inst::StackAddr { dst, slot } => lw.out.push(MInst::FpAddr {
                    dst: *dst,
                    off: fp(*slot, 0),
                }),
                Inst::StackLoad {
                    dst,
                    slot,
                    off,
                    size,
                } => lw.out.push(MInst::LdxFp {
                    dst: *dst,
                    off: fp(*slot, *off),
                    size: size_code(*size),
                }),
                Inst::StackStore {
                    slot,
                    off,
                    value,
                    size,
                } => {
                    let off = fp(*slot, *off);
                    let size_c = size_code(*size);
                    match lw.store_value(*value, *size) {
                        Ok(imm) => lw.out.push(MInst::StFp {
                            off,
                            imm,
                            size: size_c,
                        }),
                        Err(src) => lw.out.push(MInst::StxFp {
                            off,
                            src,
                            size: size_c,
                        }),
                    }
                }
                Inst::LoadMap { dst, map } => lw.out.push(MInst::LdMap {
                    dst: *dst,
                    map: map.0,
                }),
                Inst::LinkConst { dst, name } => lw.out.push(MInst::LinkConst { dst: *dst, name }),
                Inst::Call { dst, helper, args } => {
                    let args = args
                        .iter()
                        .map(|a| match a {
                            Operand::Reg(v) => MArg::Reg(*v),
                            Operand::Imm(i) => MArg::Imm(*i),
                        })
                        .collect();
                    lw.out.push(MInst::Call {
                        callee: Callee::Helper(helper.id),
                        args,
                        ret: *dst,
                    });
                }
                Inst::CallLocal { dst, func, args } => lw.out.push(MInst::Call {
                    callee: Callee::Local(func.clone()),
                    args: args.iter().map(|v| MArg::Reg(*v)).collect(),
                    ret: *dst,
                }),
            }
        }
        // Checking packet bounds adds instructions before the branch, so the terminator's code
        // starts here.
        for (_, a) in pending {
            annotations.push((lw.out.len(), a.clone()));
        }
        let term = match &block.term {
            Terminator::None => MTerm::Return(MArg::Imm(0)),
            Terminator::Jump(t) => MTerm::Jump(*t),
            Terminator::Return(Operand::Reg(v)) => MTerm::Return(MArg::Reg(*v)),
            Terminator::Return(Operand::Imm(i)) => MTerm::Return(MArg::Imm(*i)),
            Terminator::Branch {
                cond,
                width,
                a,
                b,
                then_,
                else_,
            } => {
                let op = jmp_code(*cond);
                let (w32, b) = match (*width, *b) {
                    (Width::W32, o) => (true, lw.src(o, true)),
                    (Width::W64, Operand::Imm(i))
                        if i32::try_from(i).is_err()
                            && info.narrow_branch[bid.0 as usize]
                            && !cond.is_signed()
                            && u32::try_from(i).is_ok() =>
                    {
                        (true, MSrc::Imm(i as u32 as i32))
                    }
                    (Width::W64, o) => (false, lw.src(o, false)),
                };
                MTerm::Branch {
                    op,
                    w32,
                    a: *a,
                    b,
                    then_: *then_,
                    else_: *else_,
                }
            }
            Terminator::CheckPacketBounds {
                ptr,
                end,
                len,
                ok,
                fail,
            } => {
                let t = lw.temp();
                lw.out.push(MInst::Mov {
                    dst: t,
                    src: *ptr,
                    w32: false,
                });
                lw.out.push(MInst::Alu {
                    op: BPF_ADD,
                    dst: t,
                    src: MSrc::Imm(*len as i32),
                    w32: false,
                });
                MTerm::Branch {
                    op: BPF_JGT,
                    w32: false,
                    a: t,
                    b: MSrc::Reg(*end),
                    then_: *fail,
                    else_: *ok,
                }
            }
        };
        blocks[bid.0 as usize] = Some(MBlock {
            start,
            end: lw.out.len(),
            term,
            annotations,
        });
    }
    MFunction {
        insts: lw.out,
        blocks,
        order: order.to_vec(),
        num_vregs: lw.next,
        user_stack,
    }
}
