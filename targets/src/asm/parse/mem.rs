//! Memory forms of the instruction grammar: loads (incl. sign-extending and legacy packet loads),
//! stores and atomics.

use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::tag;
use nom::character::complete::{char, one_of, space0, space1};
use nom::combinator::{all_consuming, map, map_res, opt, value};
use nom::sequence::{delimited, preceded};

use super::{
    PResult, Parsed, Res, SemErr, imm_for, imm32, number, operand, reg, to_i16, to_i32, ws,
};
use crate::isa::{AtomicOp, AtomicSize, Insn, PktSize, Reg, Size, SxSize, Width};

/// `(r2 + 0x3)` / `(r2 - 0x3)` / `r2 + 0x3`.
fn addr(i: &str) -> Res<'_, (Reg, i16)> {
    map_res(
        (reg, ws(one_of("+-")), number),
        |((w, r), sign, n)| -> Result<(Reg, i16), &'static str> {
            if w != Width::Bits64 {
                return Err("address base must be an r register");
            }
            to_i16(if sign == '-' { -n } else { n }).map(|off| (r, off))
        },
    )
    .parse(i)
}

fn paren_addr(i: &str) -> Res<'_, (Reg, i16)> {
    delimited(char('('), ws(addr), char(')')).parse(i)
}

/// `*(u32 *)` -> (signed, bits).
fn deref_type(i: &str) -> Res<'_, (bool, u32)> {
    delimited(
        (char('*'), char('(')),
        map(
            (
                alt((value(false, char('u')), value(true, char('s')))),
                alt((
                    value(8u32, tag("8")),
                    value(16, tag("16")),
                    value(32, tag("32")),
                    value(64, tag("64")),
                )),
            ),
            |(s, b)| (s, b),
        ),
        (space1, tag("*)")),
    )
    .parse(i)
}

/// `(u32 *)`, the pointer cast inside `atomic_fetch_*`.
fn cast_type(i: &str) -> Res<'_, (bool, u32)> {
    preceded(
        char('('),
        (
            alt((value(false, char('u')), value(true, char('s')))),
            alt((
                value(8u32, tag("8")),
                value(16, tag("16")),
                value(32, tag("32")),
                value(64, tag("64")),
            )),
        ),
    )
    .parse(i)
    .and_then(|(rest, t)| (space1, tag("*)")).parse(rest).map(|(rest, _)| (rest, t)))
}

fn size_of_bits(bits: u32) -> Size {
    match bits {
        8 => Size::B,
        16 => Size::H,
        32 => Size::W,
        _ => Size::DW,
    }
}

fn atomic_sym(i: &str) -> Res<'_, AtomicOp> {
    alt((
        value(AtomicOp::Add, tag("+=")),
        value(AtomicOp::Or, tag("|=")),
        value(AtomicOp::And, tag("&=")),
        value(AtomicOp::Xor, tag("^=")),
    ))
    .parse(i)
}

fn atomic_size(bits: u32) -> Result<AtomicSize, SemErr> {
    match bits {
        32 => Ok(AtomicSize::W),
        64 => Ok(AtomicSize::DW),
        _ => Err((0, "atomics exist only for u32 and u64".into())),
    }
}

pub(super) fn lock(text: &str) -> PResult<'_> {
    let (_, (_, (signed, bits), _, (dst, off), op, (_, src))) = all_consuming((
        (tag("lock"), space1),
        deref_type,
        space0,
        paren_addr,
        ws(atomic_sym),
        reg,
    ))
    .parse(text)?;
    if signed {
        return Ok(Err((0, "atomics take u32/u64".into())));
    }
    Ok(atomic_size(bits).map(|size| {
        Parsed::Done(Insn::Atomic {
            size,
            op,
            dst,
            src,
            off,
        })
    }))
}

pub(super) fn store(text: &str) -> PResult<'_> {
    let (_, ((signed, bits), _, (dst, off), _, rhs)) =
        all_consuming((deref_type, space0, paren_addr, ws(char('=')), operand)).parse(text)?;
    if signed {
        return Ok(Err((0, "stores take u8/u16/u32/u64".into())));
    }
    let size = size_of_bits(bits);
    // A u64 store sign-extends its immediate; narrower stores take any 32-bit pattern.
    let width = if size == Size::DW {
        Width::Bits64
    } else {
        Width::Bits32
    };
    let rhs = match rhs {
        Ok(r) => Ok(r),
        Err(n) => match imm_for(width, n) {
            Ok(imm) => Err(imm),
            Err(e) => return Ok(Err(e)),
        },
    };
    Ok(Ok(Parsed::Done(match rhs {
        Ok((_, src)) => Insn::Stx {
            size,
            dst,
            src,
            off,
        },
        Err(imm) => Insn::St {
            size,
            dst,
            off,
            imm,
        },
    })))
}

/// `r3`, `r3 + 0x8` or `r3 - 0x8` inside `skb[...]` (the offset is the 32-bit `imm`).
fn skb_index(i: &str) -> Res<'_, (Reg, i32)> {
    map_res(
        (reg, opt((ws(one_of("+-")), number))),
        |((w, r), off)| -> Result<(Reg, i32), &'static str> {
            if w != Width::Bits64 {
                return Err("packet index must be an r register");
            }
            match off {
                None => Ok((r, 0)),
                Some((sign, n)) => to_i32(if sign == '-' { -n } else { n }).map(|imm| (r, imm)),
            }
        },
    )
    .parse(i)
}

pub(super) fn load(i: &str, w: Width, dst: Reg) -> PResult<'_> {
    let (rest, (signed, bits)) = deref_type(i)?;
    if let Ok((_, (_, _, idx, _))) = all_consuming((
        space0,
        tag("skb["),
        alt((map(skb_index, Ok), map(imm32, Err))),
        char(']'),
    ))
    .parse(rest)
    {
        if dst != Reg::R0 || w != Width::Bits64 {
            return Ok(Err((0, "packet loads write r0".into())));
        }
        let size = match (signed, bits) {
            (false, 8) => PktSize::B,
            (false, 16) => PktSize::H,
            (false, 32) => PktSize::W,
            _ => return Ok(Err((0, "packet loads are u8/u16/u32".into()))),
        };
        return Ok(Ok(Parsed::Done(match idx {
            Ok((src, imm)) => Insn::LdInd { size, src, imm },
            Err(imm) => Insn::LdAbs { size, imm },
        })));
    }
    let (_, (_, (src, off))) = all_consuming((space0, paren_addr)).parse(rest)?;
    if signed {
        if w != Width::Bits64 {
            return Ok(Err((0, "sign-extending loads write an r register".into())));
        }
        let size = match bits {
            8 => SxSize::B,
            16 => SxSize::H,
            32 => SxSize::W,
            _ => return Ok(Err((0, "sign-extending loads are s8/s16/s32".into()))),
        };
        return Ok(Ok(Parsed::Done(Insn::LdxSx {
            size,
            dst,
            src,
            off,
        })));
    }
    if w == Width::Bits32 && bits == 64 {
        return Ok(Err((0, "a u64 load writes an r register".into())));
    }
    Ok(Ok(Parsed::Done(Insn::Ldx {
        size: size_of_bits(bits),
        dst,
        src,
        off,
    })))
}

pub(super) fn fetch_atomic(i: &str, w: Width, dst: Reg) -> PResult<'_> {
    let fetch_op = alt((
        value(AtomicOp::FetchAdd, tag("atomic_fetch_add")),
        value(AtomicOp::FetchOr, tag("atomic_fetch_or")),
        value(AtomicOp::FetchAnd, tag("atomic_fetch_and")),
        value(AtomicOp::FetchXor, tag("atomic_fetch_xor")),
    ));
    if let Ok((_, (op, _, (_, bits), _, (base, off), _, (w2, src), _))) = all_consuming((
        fetch_op,
        char('('),
        cast_type,
        space0,
        paren_addr,
        ws(char(',')),
        reg,
        char(')'),
    ))
    .parse(i)
    {
        if w2 != w || src != dst {
            return Ok(Err((
                0,
                "atomic_fetch_* returns into its source register".into(),
            )));
        }
        let size = match atomic_size(bits) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        return Ok(Ok(Parsed::Done(Insn::Atomic {
            size,
            op,
            dst: base,
            src,
            off,
        })));
    }
    let xchg = all_consuming((
        alt((
            value(AtomicSize::DW, tag("xchg_64")),
            value(AtomicSize::W, tag("xchg32_32")),
        )),
        char('('),
        ws(addr),
        char(','),
        ws(reg),
        char(')'),
    ))
    .parse(i);
    if let Ok((_, (size, _, (base, off), _, (w2, src), _))) = xchg {
        if w2 != w || src != dst {
            return Ok(Err((0, "xchg returns into its source register".into())));
        }
        return Ok(Ok(Parsed::Done(Insn::Atomic {
            size,
            op: AtomicOp::Xchg,
            dst: base,
            src,
            off,
        })));
    }
    let (_, (size, _, (base, off), _, (_, r0), _, (w2, src), _)) = all_consuming((
        alt((
            value(AtomicSize::DW, tag("cmpxchg_64")),
            value(AtomicSize::W, tag("cmpxchg32_32")),
        )),
        char('('),
        ws(addr),
        char(','),
        ws(reg),
        char(','),
        ws(reg),
        char(')'),
    ))
    .parse(i)?;
    if dst != Reg::R0 || r0 != Reg::R0 || w2 != w {
        return Ok(Err((0, "cmpxchg compares and returns r0/w0".into())));
    }
    Ok(Ok(Parsed::Done(Insn::Atomic {
        size,
        op: AtomicOp::CmpXchg,
        dst: base,
        src,
        off,
    })))
}
