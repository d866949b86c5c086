//! proptest strategies for every `Insn` variant and for programs.

use ciliumc_targets::isa::{
    AluOp, AtomicOp, AtomicSize, ByteOrder, ExtFrom, Insn, JmpOp, Operand, PktSize, PseudoKind,
    Reg, Size, SwapBits, SxSize, Width,
};
use proptest::prelude::*;
use proptest::sample::select;

pub fn reg() -> impl Strategy<Value = Reg> {
    (0u8..=10).prop_map(|n| Reg::new(n).unwrap())
}

pub fn width() -> impl Strategy<Value = Width> {
    select(vec![Width::Bits32, Width::Bits64])
}

pub fn size() -> impl Strategy<Value = Size> {
    select(vec![Size::B, Size::H, Size::W, Size::DW])
}

/// Immediates biased towards edges (0, ±1, i32 limits) as well as arbitrary values.
pub fn imm32() -> impl Strategy<Value = i32> {
    prop_oneof![
        select(vec![0, 1, -1, i32::MIN, i32::MAX, 16, 32, 64, 0xff, -0x80]),
        any::<i32>(),
    ]
}

pub fn off16() -> impl Strategy<Value = i16> {
    prop_oneof![select(vec![0i16, 1, -1, i16::MIN, i16::MAX]), any::<i16>()]
}

pub fn operand() -> impl Strategy<Value = Operand> {
    prop_oneof![imm32().prop_map(Operand::Imm), reg().prop_map(Operand::Reg)]
}

pub fn swap_bits() -> impl Strategy<Value = SwapBits> {
    select(vec![SwapBits::B16, SwapBits::B32, SwapBits::B64])
}

/// Every instruction the ISA defines, each variant with its full operand space.
pub fn insn() -> impl Strategy<Value = Insn> {
    prop_oneof![
        (width(), select(AluOp::ALL.to_vec()), reg(), operand()).prop_map(
            |(width, op, dst, src)| Insn::Alu {
                width,
                op,
                dst,
                src
            }
        ),
        (width(), reg()).prop_map(|(width, dst)| Insn::Neg { width, dst }),
        (
            width(),
            reg(),
            reg(),
            select(vec![ExtFrom::B8, ExtFrom::B16, ExtFrom::B32])
        )
            .prop_map(|(width, dst, src, from)| {
                // A 32-bit movsx cannot extend from 32 bits.
                let from = if width == Width::Bits32 && from == ExtFrom::B32 {
                    ExtFrom::B16
                } else {
                    from
                };
                Insn::MovSx {
                    width,
                    dst,
                    src,
                    from,
                }
            }),
        (
            select(vec![ByteOrder::Le, ByteOrder::Be]),
            swap_bits(),
            reg()
        )
            .prop_map(|(order, bits, dst)| Insn::Endian { order, bits, dst }),
        (swap_bits(), reg()).prop_map(|(bits, dst)| Insn::Bswap { bits, dst }),
        (
            width(),
            select(JmpOp::ALL.to_vec()),
            reg(),
            operand(),
            off16()
        )
            .prop_map(|(width, op, dst, src, off)| Insn::Jmp {
                width,
                op,
                dst,
                src,
                off
            }),
        off16().prop_map(|off| Insn::Ja { off }),
        imm32().prop_map(|imm| Insn::Gotol { imm }),
        imm32().prop_map(|id| Insn::CallHelper { id }),
        imm32().prop_map(|imm| Insn::CallLocal { imm }),
        (imm32(), off16()).prop_map(|(btf_id, off)| Insn::CallKfunc { btf_id, off }),
        Just(Insn::Exit),
        (size(), reg(), reg(), off16()).prop_map(|(size, dst, src, off)| Insn::Ldx {
            size,
            dst,
            src,
            off
        }),
        (
            select(vec![SxSize::B, SxSize::H, SxSize::W]),
            reg(),
            reg(),
            off16()
        )
            .prop_map(|(size, dst, src, off)| Insn::LdxSx {
                size,
                dst,
                src,
                off
            }),
        (size(), reg(), off16(), imm32()).prop_map(|(size, dst, off, imm)| Insn::St {
            size,
            dst,
            off,
            imm
        }),
        (size(), reg(), reg(), off16()).prop_map(|(size, dst, src, off)| Insn::Stx {
            size,
            dst,
            src,
            off
        }),
        (
            select(vec![AtomicSize::W, AtomicSize::DW]),
            select(AtomicOp::ALL.to_vec()),
            reg(),
            reg(),
            off16()
        )
            .prop_map(|(size, op, dst, src, off)| Insn::Atomic {
                size,
                op,
                dst,
                src,
                off
            }),
        (
            reg(),
            prop_oneof![
                select(vec![0i64, -1, i64::MIN, i64::MAX, 1 << 32]),
                any::<i64>()
            ]
        )
            .prop_map(|(dst, imm)| Insn::LdImm64 { dst, imm }),
        (reg(), select(PseudoKind::ALL.to_vec()), imm32(), imm32()).prop_map(
            |(dst, kind, imm, next_imm)| Insn::LdPseudo {
                dst,
                kind,
                imm,
                next_imm
            }
        ),
        (select(vec![PktSize::B, PktSize::H, PktSize::W]), imm32())
            .prop_map(|(size, imm)| Insn::LdAbs { size, imm }),
        (
            select(vec![PktSize::B, PktSize::H, PktSize::W]),
            reg(),
            imm32()
        )
            .prop_map(|(size, src, imm)| Insn::LdInd { size, src, imm }),
    ]
}

pub fn program() -> impl Strategy<Value = Vec<Insn>> {
    prop::collection::vec(insn(), 1..40)
}

/// True if plain llvm-objdump text loses information about `i` (see `DisasmOptions`): call kinds,
/// the second immediate of pseudo loads, the immediate of `LD_IND`, and 32-bit atomics, which
/// LLVM prints only with `--mattr=+alu32`.
pub fn lossy_in_llvm_text(i: &Insn, alu32: bool) -> bool {
    match *i {
        Insn::CallLocal { .. } | Insn::CallKfunc { .. } => true,
        Insn::LdPseudo { next_imm, .. } => next_imm != 0,
        Insn::LdInd { imm, .. } => imm != 0,
        Insn::Atomic {
            size: AtomicSize::W,
            ..
        } => !alu32,
        _ => false,
    }
}
