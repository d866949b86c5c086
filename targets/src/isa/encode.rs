//! `Insn` -> raw slots. Total: every `Insn` has exactly one encoding, and `decode` inverts it.

use super::RawInsn;
use super::insn::{
    AluOp, AtomicOp, AtomicSize, ByteOrder, Insn, JmpOp, Operand, PktSize, Size, SxSize, Width,
};
use super::opcode::*;

/// Encodes a program; `ld_imm64` instructions become two slots.
pub fn encode(insns: &[Insn]) -> Vec<RawInsn> {
    let mut out = Vec::with_capacity(insns.len() + insns.len() / 8);
    for insn in insns {
        encode_into(insn, &mut out);
    }
    out
}

impl Insn {
    /// Encodes one instruction (one or two slots) onto `out`.
    pub fn encode_into(&self, out: &mut Vec<RawInsn>) {
        encode_into(self, out)
    }
}

pub(crate) const fn alu_class(width: Width) -> u8 {
    match width {
        Width::Bits32 => BPF_ALU,
        Width::Bits64 => BPF_ALU64,
    }
}

pub(crate) const fn jmp_class(width: Width) -> u8 {
    match width {
        Width::Bits32 => BPF_JMP32,
        Width::Bits64 => BPF_JMP,
    }
}

/// The opcode bits and `off` field of an ALU operation (signed division is `off = 1`).
pub(crate) const fn alu_op_bits(op: AluOp) -> (u8, i16) {
    match op {
        AluOp::Add => (BPF_ADD, 0),
        AluOp::Sub => (BPF_SUB, 0),
        AluOp::Mul => (BPF_MUL, 0),
        AluOp::Div => (BPF_DIV, 0),
        AluOp::SDiv => (BPF_DIV, 1),
        AluOp::Or => (BPF_OR, 0),
        AluOp::And => (BPF_AND, 0),
        AluOp::Lsh => (BPF_LSH, 0),
        AluOp::Rsh => (BPF_RSH, 0),
        AluOp::Mod => (BPF_MOD, 0),
        AluOp::SMod => (BPF_MOD, 1),
        AluOp::Xor => (BPF_XOR, 0),
        AluOp::Mov => (BPF_MOV, 0),
        AluOp::Arsh => (BPF_ARSH, 0),
    }
}

pub(crate) const fn jmp_op_bits(op: JmpOp) -> u8 {
    match op {
        JmpOp::Eq => BPF_JEQ,
        JmpOp::Gt => BPF_JGT,
        JmpOp::Ge => BPF_JGE,
        JmpOp::Set => BPF_JSET,
        JmpOp::Ne => BPF_JNE,
        JmpOp::Sgt => BPF_JSGT,
        JmpOp::Sge => BPF_JSGE,
        JmpOp::Lt => BPF_JLT,
        JmpOp::Le => BPF_JLE,
        JmpOp::Slt => BPF_JSLT,
        JmpOp::Sle => BPF_JSLE,
    }
}

pub(crate) const fn size_bits(size: Size) -> u8 {
    match size {
        Size::B => BPF_B,
        Size::H => BPF_H,
        Size::W => BPF_W,
        Size::DW => BPF_DW,
    }
}

pub(crate) const fn atomic_imm(op: AtomicOp) -> i32 {
    match op {
        AtomicOp::Add => BPF_ADD as i32,
        AtomicOp::Or => BPF_OR as i32,
        AtomicOp::And => BPF_AND as i32,
        AtomicOp::Xor => BPF_XOR as i32,
        AtomicOp::FetchAdd => BPF_ADD as i32 | BPF_FETCH,
        AtomicOp::FetchOr => BPF_OR as i32 | BPF_FETCH,
        AtomicOp::FetchAnd => BPF_AND as i32 | BPF_FETCH,
        AtomicOp::FetchXor => BPF_XOR as i32 | BPF_FETCH,
        AtomicOp::Xchg => BPF_XCHG,
        AtomicOp::CmpXchg => BPF_CMPXCHG,
    }
}

const fn sx_size(size: SxSize) -> Size {
    match size {
        SxSize::B => Size::B,
        SxSize::H => Size::H,
        SxSize::W => Size::W,
    }
}

const fn pkt_size(size: PktSize) -> Size {
    match size {
        PktSize::B => Size::B,
        PktSize::H => Size::H,
        PktSize::W => Size::W,
    }
}

const fn slot(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> RawInsn {
    RawInsn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

fn encode_into(insn: &Insn, out: &mut Vec<RawInsn>) {
    let raw = match *insn {
        Insn::Alu {
            width,
            op,
            dst,
            src,
        } => {
            let (bits, off) = alu_op_bits(op);
            let class = alu_class(width);
            match src {
                Operand::Imm(imm) => slot(class | bits | BPF_K, dst.index(), 0, off, imm),
                Operand::Reg(s) => slot(class | bits | BPF_X, dst.index(), s.index(), off, 0),
            }
        }
        Insn::Neg { width, dst } => slot(alu_class(width) | BPF_NEG, dst.index(), 0, 0, 0),
        Insn::MovSx {
            width,
            dst,
            src,
            from,
        } => slot(
            alu_class(width) | BPF_MOV | BPF_X,
            dst.index(),
            src.index(),
            from.bits(),
            0,
        ),
        Insn::Endian { order, bits, dst } => {
            let dir = match order {
                ByteOrder::Le => BPF_TO_LE,
                ByteOrder::Be => BPF_TO_BE,
            };
            slot(BPF_ALU | BPF_END | dir, dst.index(), 0, 0, bits.bits())
        }
        Insn::Bswap { bits, dst } => slot(BPF_ALU64 | BPF_END, dst.index(), 0, 0, bits.bits()),
        Insn::Jmp {
            width,
            op,
            dst,
            src,
            off,
        } => {
            let class = jmp_class(width) | jmp_op_bits(op);
            match src {
                Operand::Imm(imm) => slot(class | BPF_K, dst.index(), 0, off, imm),
                Operand::Reg(s) => slot(class | BPF_X, dst.index(), s.index(), off, 0),
            }
        }
        Insn::Ja { off } => slot(BPF_JMP | BPF_JA, 0, 0, off, 0),
        Insn::Gotol { imm } => slot(BPF_JMP32 | BPF_JA, 0, 0, 0, imm),
        Insn::CallHelper { id } => slot(BPF_JMP | BPF_CALL, 0, 0, 0, id),
        Insn::CallLocal { imm } => slot(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, imm),
        Insn::CallKfunc { btf_id, off } => {
            slot(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, off, btf_id)
        }
        Insn::Exit => slot(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
        Insn::Ldx {
            size,
            dst,
            src,
            off,
        } => slot(
            BPF_LDX | BPF_MEM | size_bits(size),
            dst.index(),
            src.index(),
            off,
            0,
        ),
        Insn::LdxSx {
            size,
            dst,
            src,
            off,
        } => slot(
            BPF_LDX | BPF_MEMSX | size_bits(sx_size(size)),
            dst.index(),
            src.index(),
            off,
            0,
        ),
        Insn::St {
            size,
            dst,
            off,
            imm,
        } => slot(BPF_ST | BPF_MEM | size_bits(size), dst.index(), 0, off, imm),
        Insn::Stx {
            size,
            dst,
            src,
            off,
        } => slot(
            BPF_STX | BPF_MEM | size_bits(size),
            dst.index(),
            src.index(),
            off,
            0,
        ),
        Insn::Atomic {
            size,
            op,
            dst,
            src,
            off,
        } => {
            let size = match size {
                AtomicSize::W => BPF_W,
                AtomicSize::DW => BPF_DW,
            };
            slot(
                BPF_STX | BPF_ATOMIC | size,
                dst.index(),
                src.index(),
                off,
                atomic_imm(op),
            )
        }
        Insn::LdImm64 { dst, imm } => {
            out.push(slot(
                BPF_LD | BPF_IMM | BPF_DW,
                dst.index(),
                0,
                0,
                imm as i32,
            ));
            slot(0, 0, 0, 0, (imm >> 32) as i32)
        }
        Insn::LdPseudo {
            dst,
            kind,
            imm,
            next_imm,
        } => {
            out.push(slot(
                BPF_LD | BPF_IMM | BPF_DW,
                dst.index(),
                kind.src(),
                0,
                imm,
            ));
            slot(0, 0, 0, 0, next_imm)
        }
        Insn::LdAbs { size, imm } => {
            slot(BPF_LD | BPF_ABS | size_bits(pkt_size(size)), 0, 0, 0, imm)
        }
        Insn::LdInd { size, src, imm } => slot(
            BPF_LD | BPF_IND | size_bits(pkt_size(size)),
            0,
            src.index(),
            0,
            imm,
        ),
    };
    out.push(raw);
}
