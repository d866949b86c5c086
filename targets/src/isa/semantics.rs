//! What eBPF instructions compute, as the kernel defines it (division by zero gives 0, modulo by
//! zero leaves the dividend, shifts take the count modulo the width, 32-bit operations zero the
//! upper half). Shared by the interpreters (`vm`, `codegen::interp`) so that they cannot disagree
//! with each other about the instruction set.

use super::{AluOp, JmpOp, SwapBits, Width};

/// The result of ALU operation `op` on `a` and `b` (`Mov` yields `b`).
pub fn alu(op: AluOp, width: Width, a: u64, b: u64) -> u64 {
    if width == Width::Bits32 {
        let (a, b) = (a as u32, b as u32);
        let r = match op {
            AluOp::Add => a.wrapping_add(b),
            AluOp::Sub => a.wrapping_sub(b),
            AluOp::Mul => a.wrapping_mul(b),
            AluOp::Div => a.checked_div(b).unwrap_or(0),
            AluOp::SDiv => {
                if b == 0 {
                    0
                } else {
                    (a as i32).wrapping_div(b as i32) as u32
                }
            }
            AluOp::Mod => a.checked_rem(b).unwrap_or(a),
            AluOp::SMod => {
                if b == 0 {
                    a
                } else {
                    (a as i32).wrapping_rem(b as i32) as u32
                }
            }
            AluOp::Or => a | b,
            AluOp::And => a & b,
            AluOp::Xor => a ^ b,
            AluOp::Lsh => a << (b & 31),
            AluOp::Rsh => a >> (b & 31),
            AluOp::Arsh => ((a as i32) >> (b & 31)) as u32,
            AluOp::Mov => b,
        };
        u64::from(r)
    } else {
        match op {
            AluOp::Add => a.wrapping_add(b),
            AluOp::Sub => a.wrapping_sub(b),
            AluOp::Mul => a.wrapping_mul(b),
            AluOp::Div => a.checked_div(b).unwrap_or(0),
            AluOp::SDiv => {
                if b == 0 {
                    0
                } else {
                    (a as i64).wrapping_div(b as i64) as u64
                }
            }
            AluOp::Mod => a.checked_rem(b).unwrap_or(a),
            AluOp::SMod => {
                if b == 0 {
                    a
                } else {
                    (a as i64).wrapping_rem(b as i64) as u64
                }
            }
            AluOp::Or => a | b,
            AluOp::And => a & b,
            AluOp::Xor => a ^ b,
            AluOp::Lsh => a << (b & 63),
            AluOp::Rsh => a >> (b & 63),
            AluOp::Arsh => ((a as i64) >> (b & 63)) as u64,
            AluOp::Mov => b,
        }
    }
}

/// Whether a conditional jump `op` is taken for `a` and `b`.
pub fn jump_taken(op: JmpOp, width: Width, a: u64, b: u64) -> bool {
    let (ua, ub, sa, sb) = if width == Width::Bits32 {
        (
            u64::from(a as u32),
            u64::from(b as u32),
            i64::from(a as i32),
            i64::from(b as i32),
        )
    } else {
        (a, b, a as i64, b as i64)
    };
    match op {
        JmpOp::Eq => ua == ub,
        JmpOp::Ne => ua != ub,
        JmpOp::Gt => ua > ub,
        JmpOp::Ge => ua >= ub,
        JmpOp::Lt => ua < ub,
        JmpOp::Le => ua <= ub,
        JmpOp::Set => ua & ub != 0,
        JmpOp::Sgt => sa > sb,
        JmpOp::Sge => sa >= sb,
        JmpOp::Slt => sa < sb,
        JmpOp::Sle => sa <= sb,
    }
}

/// `bswap` of the low `bits` of `v` (the upper bits are cleared).
pub fn swap(bits: SwapBits, v: u64) -> u64 {
    match bits {
        SwapBits::B16 => u64::from((v as u16).swap_bytes()),
        SwapBits::B32 => u64::from((v as u32).swap_bytes()),
        SwapBits::B64 => v.swap_bytes(),
    }
}
