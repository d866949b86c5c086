//! Raw slots -> `Insn`, strictly: every field the kernel reserves must be zero, registers must be
//! r0..=r10, and sizes/modes/operations must exist. Errors name the slot index and the reason.

use super::RawInsn;
use super::insn::{
    AluOp, AtomicOp, AtomicSize, ByteOrder, ExtFrom, Insn, JmpOp, Operand, PktSize, PseudoKind,
    Reg, Size, SwapBits, SxSize, Width,
};
use super::opcode::*;

/// Why a slot does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeReason {
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    #[error("{field} register r{value} out of range (r0..=r10)")]
    BadRegister { field: &'static str, value: u8 },
    #[error("reserved field {field} is {value:#x}, must be 0")]
    Reserved { field: &'static str, value: i64 },
    #[error("field {field} is {value:#x}, expected {expected}")]
    BadField {
        field: &'static str,
        value: i64,
        expected: &'static str,
    },
    #[error("ld_imm64 at the end of the program has no second slot")]
    TruncatedLdImm64,
    #[error("second slot of ld_imm64 must have code, dst, src and off 0 (found code {code:#04x})")]
    BadLdImm64Tail { code: u8 },
}

/// A decode failure at slot `index`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("slot {index}: {reason}")]
pub struct DecodeError {
    pub index: usize,
    pub reason: DecodeReason,
}

/// Decodes a whole program. `ld_imm64` consumes two slots.
pub fn decode(raw: &[RawInsn]) -> Result<Vec<Insn>, DecodeError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let (insn, n) = decode_one(raw, i)?;
        out.push(insn);
        i += n;
    }
    Ok(out)
}

/// Decodes the instruction starting at slot `index`; returns it and its slot count.
pub fn decode_one(raw: &[RawInsn], index: usize) -> Result<(Insn, usize), DecodeError> {
    let err = |reason| DecodeError { index, reason };
    let Some(&r) = raw.get(index) else {
        return Err(err(DecodeReason::TruncatedLdImm64));
    };
    if r.code == BPF_LD | BPF_IMM | BPF_DW {
        let Some(&tail) = raw.get(index + 1) else {
            return Err(err(DecodeReason::TruncatedLdImm64));
        };
        return decode_ld_imm64(r, tail)
            .map(|i| (i, 2))
            .map_err(|reason| DecodeError { index, reason });
    }
    decode_single(r).map(|i| (i, 1)).map_err(err)
}

fn reg(field: &'static str, value: u8) -> Result<Reg, DecodeReason> {
    Reg::new(value).ok_or(DecodeReason::BadRegister { field, value })
}

fn zero(field: &'static str, value: i64) -> Result<(), DecodeReason> {
    if value == 0 {
        Ok(())
    } else {
        Err(DecodeReason::Reserved { field, value })
    }
}

fn decode_ld_imm64(r: RawInsn, tail: RawInsn) -> Result<Insn, DecodeReason> {
    let dst = reg("dst", r.dst)?;
    zero("off", r.off.into())?;
    if tail.code != 0 || tail.dst != 0 || tail.src != 0 || tail.off != 0 {
        return Err(DecodeReason::BadLdImm64Tail { code: tail.code });
    }
    if r.src == 0 {
        let imm = (i64::from(tail.imm) << 32) | i64::from(r.imm as u32);
        return Ok(Insn::LdImm64 { dst, imm });
    }
    let kind = PseudoKind::from_src(r.src).ok_or(DecodeReason::BadField {
        field: "src",
        value: r.src.into(),
        expected: "an ld_imm64 pseudo source 0..=6",
    })?;
    Ok(Insn::LdPseudo {
        dst,
        kind,
        imm: r.imm,
        next_imm: tail.imm,
    })
}

fn decode_single(r: RawInsn) -> Result<Insn, DecodeReason> {
    let class = r.code & 0x07;
    match class {
        BPF_ALU | BPF_ALU64 => decode_alu(r),
        BPF_JMP | BPF_JMP32 => decode_jmp(r),
        BPF_LDX => decode_ldx(r),
        BPF_ST => decode_st(r),
        BPF_STX => decode_stx(r),
        _ => decode_ld(r),
    }
}

fn decode_alu(r: RawInsn) -> Result<Insn, DecodeReason> {
    let width = if r.code & 0x07 == BPF_ALU64 {
        Width::Bits64
    } else {
        Width::Bits32
    };
    let op = r.code & 0xf0;
    let is_x = r.code & BPF_X != 0;
    let dst = reg("dst", r.dst)?;
    let unknown = DecodeReason::UnknownOpcode(r.code);
    if op == BPF_NEG {
        if is_x {
            return Err(unknown);
        }
        zero("src", r.src.into())?;
        zero("off", r.off.into())?;
        zero("imm", r.imm.into())?;
        return Ok(Insn::Neg { width, dst });
    }
    if op == BPF_END {
        if width == Width::Bits64 && is_x {
            return Err(unknown);
        }
        zero("src", r.src.into())?;
        zero("off", r.off.into())?;
        let bits = match r.imm {
            16 => SwapBits::B16,
            32 => SwapBits::B32,
            64 => SwapBits::B64,
            v => {
                return Err(DecodeReason::BadField {
                    field: "imm",
                    value: v.into(),
                    expected: "a swap width of 16, 32 or 64",
                });
            }
        };
        return match (width, is_x) {
            (Width::Bits32, false) => Ok(Insn::Endian {
                order: ByteOrder::Le,
                bits,
                dst,
            }),
            (Width::Bits32, true) => Ok(Insn::Endian {
                order: ByteOrder::Be,
                bits,
                dst,
            }),
            (Width::Bits64, _) => Ok(Insn::Bswap { bits, dst }),
        };
    }
    let base = match op {
        BPF_ADD => AluOp::Add,
        BPF_SUB => AluOp::Sub,
        BPF_MUL => AluOp::Mul,
        BPF_DIV => AluOp::Div,
        BPF_OR => AluOp::Or,
        BPF_AND => AluOp::And,
        BPF_LSH => AluOp::Lsh,
        BPF_RSH => AluOp::Rsh,
        BPF_MOD => AluOp::Mod,
        BPF_XOR => AluOp::Xor,
        BPF_MOV => AluOp::Mov,
        BPF_ARSH => AluOp::Arsh,
        _ => return Err(unknown),
    };
    let op = match (base, r.off) {
        (_, 0) => base,
        (AluOp::Div, 1) => AluOp::SDiv,
        (AluOp::Mod, 1) => AluOp::SMod,
        (AluOp::Mov, 8 | 16 | 32) if is_x => {
            zero("imm", r.imm.into())?;
            let from = match r.off {
                8 => ExtFrom::B8,
                16 => ExtFrom::B16,
                _ if width == Width::Bits64 => ExtFrom::B32,
                _ => {
                    return Err(DecodeReason::BadField {
                        field: "off",
                        value: 32,
                        expected: "8 or 16 for a 32-bit movsx",
                    });
                }
            };
            let src = reg("src", r.src)?;
            return Ok(Insn::MovSx {
                width,
                dst,
                src,
                from,
            });
        }
        (AluOp::Div | AluOp::Mod, v) => {
            return Err(DecodeReason::BadField {
                field: "off",
                value: v.into(),
                expected: "0 (unsigned) or 1 (signed)",
            });
        }
        (AluOp::Mov, v) if is_x => {
            return Err(DecodeReason::BadField {
                field: "off",
                value: v.into(),
                expected: "0 or a movsx width 8, 16, 32",
            });
        }
        (_, v) => {
            return Err(DecodeReason::Reserved {
                field: "off",
                value: v.into(),
            });
        }
    };
    let src = if is_x {
        zero("imm", r.imm.into())?;
        Operand::Reg(reg("src", r.src)?)
    } else {
        zero("src", r.src.into())?;
        Operand::Imm(r.imm)
    };
    Ok(Insn::Alu {
        width,
        op,
        dst,
        src,
    })
}

fn decode_jmp(r: RawInsn) -> Result<Insn, DecodeReason> {
    let width = if r.code & 0x07 == BPF_JMP {
        Width::Bits64
    } else {
        Width::Bits32
    };
    let op = r.code & 0xf0;
    let is_x = r.code & BPF_X != 0;
    let unknown = DecodeReason::UnknownOpcode(r.code);
    let cond = match op {
        BPF_JA => {
            if is_x {
                return Err(unknown);
            }
            zero("dst", r.dst.into())?;
            zero("src", r.src.into())?;
            return match width {
                Width::Bits64 => {
                    zero("imm", r.imm.into())?;
                    Ok(Insn::Ja { off: r.off })
                }
                Width::Bits32 => {
                    zero("off", r.off.into())?;
                    Ok(Insn::Gotol { imm: r.imm })
                }
            };
        }
        BPF_CALL => {
            if is_x || width == Width::Bits32 {
                return Err(unknown);
            }
            zero("dst", r.dst.into())?;
            return match r.src {
                0 => zero("off", r.off.into()).map(|()| Insn::CallHelper { id: r.imm }),
                BPF_PSEUDO_CALL => {
                    zero("off", r.off.into()).map(|()| Insn::CallLocal { imm: r.imm })
                }
                BPF_PSEUDO_KFUNC_CALL => Ok(Insn::CallKfunc {
                    btf_id: r.imm,
                    off: r.off,
                }),
                v => Err(DecodeReason::BadField {
                    field: "src",
                    value: v.into(),
                    expected: "0 (helper), 1 (bpf-to-bpf) or 2 (kfunc)",
                }),
            };
        }
        BPF_EXIT => {
            if is_x || width == Width::Bits32 {
                return Err(unknown);
            }
            zero("dst", r.dst.into())?;
            zero("src", r.src.into())?;
            zero("off", r.off.into())?;
            zero("imm", r.imm.into())?;
            return Ok(Insn::Exit);
        }
        BPF_JEQ => JmpOp::Eq,
        BPF_JGT => JmpOp::Gt,
        BPF_JGE => JmpOp::Ge,
        BPF_JSET => JmpOp::Set,
        BPF_JNE => JmpOp::Ne,
        BPF_JSGT => JmpOp::Sgt,
        BPF_JSGE => JmpOp::Sge,
        BPF_JLT => JmpOp::Lt,
        BPF_JLE => JmpOp::Le,
        BPF_JSLT => JmpOp::Slt,
        BPF_JSLE => JmpOp::Sle,
        _ => return Err(unknown),
    };
    let dst = reg("dst", r.dst)?;
    let src = if is_x {
        zero("imm", r.imm.into())?;
        Operand::Reg(reg("src", r.src)?)
    } else {
        zero("src", r.src.into())?;
        Operand::Imm(r.imm)
    };
    Ok(Insn::Jmp {
        width,
        op: cond,
        dst,
        src,
        off: r.off,
    })
}

fn size_of(code: u8) -> Size {
    match code & 0x18 {
        BPF_B => Size::B,
        BPF_H => Size::H,
        BPF_W => Size::W,
        _ => Size::DW,
    }
}

fn decode_ldx(r: RawInsn) -> Result<Insn, DecodeReason> {
    let mode = r.code & 0xe0;
    let size = size_of(r.code);
    if mode != BPF_MEM && mode != BPF_MEMSX {
        return Err(DecodeReason::UnknownOpcode(r.code));
    }
    let dst = reg("dst", r.dst)?;
    let src = reg("src", r.src)?;
    zero("imm", r.imm.into())?;
    if mode == BPF_MEM {
        return Ok(Insn::Ldx {
            size,
            dst,
            src,
            off: r.off,
        });
    }
    let size = match size {
        Size::B => SxSize::B,
        Size::H => SxSize::H,
        Size::W => SxSize::W,
        Size::DW => return Err(DecodeReason::UnknownOpcode(r.code)),
    };
    Ok(Insn::LdxSx {
        size,
        dst,
        src,
        off: r.off,
    })
}

fn decode_st(r: RawInsn) -> Result<Insn, DecodeReason> {
    if r.code & 0xe0 != BPF_MEM {
        return Err(DecodeReason::UnknownOpcode(r.code));
    }
    let dst = reg("dst", r.dst)?;
    zero("src", r.src.into())?;
    Ok(Insn::St {
        size: size_of(r.code),
        dst,
        off: r.off,
        imm: r.imm,
    })
}

fn decode_stx(r: RawInsn) -> Result<Insn, DecodeReason> {
    let mode = r.code & 0xe0;
    let size = size_of(r.code);
    if mode != BPF_MEM && mode != BPF_ATOMIC {
        return Err(DecodeReason::UnknownOpcode(r.code));
    }
    let dst = reg("dst", r.dst)?;
    let src = reg("src", r.src)?;
    if mode == BPF_MEM {
        zero("imm", r.imm.into())?;
        return Ok(Insn::Stx {
            size,
            dst,
            src,
            off: r.off,
        });
    }
    let size = match size {
        Size::W => AtomicSize::W,
        Size::DW => AtomicSize::DW,
        _ => return Err(DecodeReason::UnknownOpcode(r.code)),
    };
    let op = AtomicOp::ALL
        .into_iter()
        .find(|op| super::encode::atomic_imm(*op) == r.imm)
        .ok_or(DecodeReason::BadField {
            field: "imm",
            value: r.imm.into(),
            expected: "an atomic operation (add/or/and/xor [|fetch], xchg, cmpxchg)",
        })?;
    Ok(Insn::Atomic {
        size,
        op,
        dst,
        src,
        off: r.off,
    })
}

fn decode_ld(r: RawInsn) -> Result<Insn, DecodeReason> {
    let mode = r.code & 0xe0;
    let size = match size_of(r.code) {
        Size::B => PktSize::B,
        Size::H => PktSize::H,
        Size::W => PktSize::W,
        Size::DW => return Err(DecodeReason::UnknownOpcode(r.code)),
    };
    match mode {
        BPF_ABS => {
            zero("dst", r.dst.into())?;
            zero("src", r.src.into())?;
            zero("off", r.off.into())?;
            Ok(Insn::LdAbs { size, imm: r.imm })
        }
        BPF_IND => {
            zero("dst", r.dst.into())?;
            zero("off", r.off.into())?;
            let src = reg("src", r.src)?;
            Ok(Insn::LdInd {
                size,
                src,
                imm: r.imm,
            })
        }
        _ => Err(DecodeReason::UnknownOpcode(r.code)),
    }
}
