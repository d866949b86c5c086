//! nom grammar for one instruction in llvm-objdump syntax (plus the `lossless` extensions and
//! label references). Input: the instruction text of one line. Output: an [`Parsed`] instruction
//! whose jump/call target may still be a label.

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::{char, digit1, hex_digit1, one_of, space0, space1};
use nom::combinator::{all_consuming, map, map_res, opt, recognize, value};
use nom::sequence::{delimited, preceded};
use nom::{IResult, Parser};

mod mem;

use crate::isa::{
    AluOp, ByteOrder, ExtFrom, Insn, JmpOp, Operand, PseudoKind, Reg, SwapBits, Width,
};
use mem::{fetch_atomic, load, lock, store};

type Res<'a, T> = IResult<&'a str, T>;

/// A jump or call target: a number as printed, or a label to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Offset(i64),
    Label(String),
}

/// What one instruction line parses to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    Done(Insn),
    /// `goto`/`if ... goto` (in `off`), `gotol` (in `imm`) or `call` (local, in `imm`) to a label.
    Jump {
        insn: Insn,
        label: String,
    },
}

/// A semantic problem found after the syntax matched: (byte offset in the text, message).
pub(crate) type SemErr = (usize, String);

fn ws<'a, O, P>(p: P) -> impl Parser<&'a str, Output = O, Error = nom::error::Error<&'a str>>
where
    P: Parser<&'a str, Output = O, Error = nom::error::Error<&'a str>>,
{
    delimited(space0, p, space0)
}

/// A register with its width prefix: `r3` -> (Bits64, r3), `w3` -> (Bits32, r3).
fn reg(i: &str) -> Res<'_, (Width, Reg)> {
    map_res(
        (one_of("rw"), digit1),
        |(p, n): (char, &str)| -> Result<(Width, Reg), &'static str> {
            let n: u8 = n.parse().map_err(|_| "register number")?;
            let r = Reg::new(n).ok_or("register out of range")?;
            Ok((
                if p == 'r' {
                    Width::Bits64
                } else {
                    Width::Bits32
                },
                r,
            ))
        },
    )
    .parse(i)
}

/// An integer as llvm prints it (`0x1f`, `-0x1`) or in decimal, as i128 for range checks later.
fn number(i: &str) -> Res<'_, i128> {
    let (i, sign) = opt(one_of("+-")).parse(i)?;
    let (i, mag) = alt((
        map_res(
            preceded(alt((tag("0x"), tag("0X"))), hex_digit1),
            |h: &str| u64::from_str_radix(h, 16),
        ),
        map_res(digit1, |d: &str| d.parse::<u64>()),
    ))
    .parse(i)?;
    let v = i128::from(mag);
    Ok((i, if sign == Some('-') { -v } else { v }))
}

/// A signed 32-bit immediate (what llvm prints). 64-bit operations sign-extend it, so
/// `r1 = 0xffffffff` would silently mean -1: only the signed range is accepted there.
fn to_i32(v: i128) -> Result<i32, &'static str> {
    i32::try_from(v).map_err(|_| "immediate does not fit in a signed 32-bit field")
}

/// A 32-bit pattern, signed or unsigned (`0xffffffff` = -1), for 32-bit operations and fields
/// llvm prints unsigned.
fn to_bits32(v: i128) -> Result<i32, &'static str> {
    if (i128::from(i32::MIN)..=i128::from(u32::MAX)).contains(&v) {
        Ok(v as i64 as i32)
    } else {
        Err("immediate does not fit in 32 bits")
    }
}

/// The immediate of an operation of `width`: 32-bit forms take any 32-bit pattern.
fn imm_for(width: Width, v: i128) -> Result<i32, SemErr> {
    match width {
        Width::Bits32 => to_bits32(v),
        Width::Bits64 => to_i32(v),
    }
    .map_err(|e| (0, e.to_string()))
}

fn to_i16(v: i128) -> Result<i16, &'static str> {
    if (i128::from(i16::MIN)..=i128::from(i16::MAX)).contains(&v) {
        Ok(v as i16)
    } else {
        Err("offset does not fit in 16 bits")
    }
}

fn imm32(i: &str) -> Res<'_, i32> {
    map_res(number, to_i32).parse(i)
}

fn bits32(i: &str) -> Res<'_, i32> {
    map_res(number, to_bits32).parse(i)
}

fn label_name(i: &str) -> Res<'_, &str> {
    recognize((
        take_while1(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '.'),
        take_while(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.'),
    ))
    .parse(i)
}

/// `+0x3 <f+0x20>` (the `<...>` annotation ignored) or a label.
fn target(i: &str) -> Res<'_, Target> {
    alt((
        map(
            (
                number,
                opt(preceded(
                    space1,
                    delimited(char('<'), take_while(|c| c != '>'), char('>')),
                )),
            ),
            |(n, _)| Target::Offset(n as i64),
        ),
        map(label_name, |s: &str| Target::Label(s.to_string())),
    ))
    .parse(i)
}

/// Parses one instruction. Syntax errors come back as nom errors (with the failing position);
/// well-formed text that names an impossible instruction comes back as `SemErr`.
pub(crate) fn instruction(
    text: &str,
) -> Result<Result<Parsed, SemErr>, nom::Err<nom::error::Error<&str>>> {
    let first = text.split_whitespace().next().unwrap_or("");
    let r = match first {
        "exit" => all_consuming(tag("exit"))
            .parse(text)
            .map(|(_, _)| Ok(Parsed::Done(Insn::Exit))),
        "goto" | "gotol" => all_consuming((alt((tag("gotol"), tag("goto"))), space1, target))
            .parse(text)
            .map(|(_, (kw, _, t))| goto(kw == "gotol", t)),
        "call" => call(text),
        "callx" => {
            return Ok(Err((0, "callx is not a kernel instruction".to_string())));
        }
        "if" => cond(text),
        "lock" => lock(text),
        "ld_pseudo" => ld_pseudo(text),
        _ if text.starts_with("*(") => store(text),
        _ => assign(text),
    };
    r.map_err(|e| match e {
        nom::Err::Incomplete(_) => {
            nom::Err::Error(nom::error::Error::new(text, nom::error::ErrorKind::Eof))
        }
        e => e,
    })
}

fn goto(long: bool, t: Target) -> Result<Parsed, SemErr> {
    Ok(match (long, t) {
        (false, Target::Offset(n)) => match to_i16(n.into()) {
            Ok(off) => Parsed::Done(Insn::Ja { off }),
            Err(_) => return Err((0, "goto offset out of 16-bit range; use gotol".into())),
        },
        (true, Target::Offset(n)) => match to_i32(n.into()) {
            Ok(imm) => Parsed::Done(Insn::Gotol { imm }),
            Err(e) => return Err((0, e.into())),
        },
        (false, Target::Label(label)) => Parsed::Jump {
            insn: Insn::Ja { off: 0 },
            label,
        },
        (true, Target::Label(label)) => Parsed::Jump {
            insn: Insn::Gotol { imm: 0 },
            label,
        },
    })
}

type PResult<'a> = Result<Result<Parsed, SemErr>, nom::Err<nom::error::Error<&'a str>>>;

fn call(text: &str) -> PResult<'_> {
    let local = map((tag("pc"), number), |(_, n)| {
        Parsed::Done(Insn::CallLocal { imm: n as i32 })
    });
    let kfunc = map(
        (
            tag("kfunc"),
            space1,
            imm32,
            opt(preceded(ws(char(',')), number)),
        ),
        |(_, _, id, off)| {
            Parsed::Done(Insn::CallKfunc {
                btf_id: id,
                off: off.map_or(0, |o| o as i16),
            })
        },
    );
    let helper = map(imm32, |id| Parsed::Done(Insn::CallHelper { id }));
    let label = map(label_name, |l: &str| Parsed::Jump {
        insn: Insn::CallLocal { imm: 0 },
        label: l.to_string(),
    });
    all_consuming(preceded(
        (tag("call"), space1),
        alt((local, kfunc, helper, label)),
    ))
    .parse(text)
    .map(|(_, p)| Ok(p))
}

fn jmp_op(i: &str) -> Res<'_, JmpOp> {
    alt((
        value(JmpOp::Eq, tag("==")),
        value(JmpOp::Ne, tag("!=")),
        value(JmpOp::Sge, tag("s>=")),
        value(JmpOp::Sle, tag("s<=")),
        value(JmpOp::Sgt, tag("s>")),
        value(JmpOp::Slt, tag("s<")),
        value(JmpOp::Ge, tag(">=")),
        value(JmpOp::Le, tag("<=")),
        value(JmpOp::Gt, tag(">")),
        value(JmpOp::Lt, tag("<")),
        value(JmpOp::Set, tag("&")),
    ))
    .parse(i)
}

/// A register or an immediate (range-checked by the caller, which knows the width).
fn operand(i: &str) -> Res<'_, Result<(Width, Reg), i128>> {
    alt((map(reg, Ok), map(number, Err))).parse(i)
}

fn cond(text: &str) -> PResult<'_> {
    let (_, (_, (w, dst), op, rhs, _, t)) = all_consuming((
        (tag("if"), space1),
        reg,
        ws(jmp_op),
        operand,
        (space1, tag("goto"), space1),
        target,
    ))
    .parse(text)?;
    let src = match rhs {
        Ok((w2, s)) if w2 == w => Operand::Reg(s),
        Ok(_) => {
            return Ok(Err((
                0,
                "both registers of a compare must be r or both w".into(),
            )));
        }
        Err(n) => match imm_for(w, n) {
            Ok(imm) => Operand::Imm(imm),
            Err(e) => return Ok(Err(e)),
        },
    };
    let insn = Insn::Jmp {
        width: w,
        op,
        dst,
        src,
        off: 0,
    };
    Ok(Ok(match t {
        Target::Offset(n) => match to_i16(n.into()) {
            Ok(off) => Parsed::Done(Insn::Jmp {
                width: w,
                op,
                dst,
                src,
                off,
            }),
            Err(e) => return Ok(Err((0, e.to_string()))),
        },
        Target::Label(label) => Parsed::Jump { insn, label },
    }))
}

fn ld_pseudo(text: &str) -> PResult<'_> {
    let (_, (_, (w, dst), _, src, _, imm, next)) = all_consuming((
        (tag("ld_pseudo"), space1),
        reg,
        ws(char(',')),
        number,
        ws(char(',')),
        bits32,
        opt(preceded(ws(char(',')), bits32)),
    ))
    .parse(text)?;
    if w != Width::Bits64 {
        return Ok(Err((0, "ld_pseudo loads a 64-bit r register".into())));
    }
    let Some(kind) = u8::try_from(src).ok().and_then(PseudoKind::from_src) else {
        return Ok(Err((0, format!("pseudo source {src} is not one of 1..=6"))));
    };
    Ok(Ok(Parsed::Done(Insn::LdPseudo {
        dst,
        kind,
        imm,
        next_imm: next.unwrap_or(0),
    })))
}

fn alu_op(i: &str) -> Res<'_, AluOp> {
    alt((
        value(AluOp::Add, tag("+=")),
        value(AluOp::Sub, tag("-=")),
        value(AluOp::Mul, tag("*=")),
        value(AluOp::SDiv, tag("s/=")),
        value(AluOp::SMod, tag("s%=")),
        value(AluOp::Arsh, tag("s>>=")),
        value(AluOp::Div, tag("/=")),
        value(AluOp::Mod, tag("%=")),
        value(AluOp::Or, tag("|=")),
        value(AluOp::And, tag("&=")),
        value(AluOp::Lsh, tag("<<=")),
        value(AluOp::Rsh, tag(">>=")),
        value(AluOp::Xor, tag("^=")),
    ))
    .parse(i)
}

/// Everything of the form `reg ...`: ALU, moves, loads, atomics with a result.
fn assign(text: &str) -> PResult<'_> {
    let (rest, (w, dst)) = reg(text)?;
    if let Ok((after_op, op)) = ws(alu_op).parse(rest) {
        let (_, rhs) = all_consuming(operand).parse(after_op)?;
        return Ok(alu(w, op, dst, rhs));
    }
    let (rest, _) = ws(char('=')).parse(rest)?;
    rhs(rest, w, dst)
}

fn alu(
    width: Width,
    op: AluOp,
    dst: Reg,
    rhs: Result<(Width, Reg), i128>,
) -> Result<Parsed, SemErr> {
    let src = match rhs {
        Ok((w2, s)) if w2 == width => Operand::Reg(s),
        Ok(_) => {
            return Err((
                0,
                "both registers must be r (64-bit) or both w (32-bit)".into(),
            ));
        }
        Err(n) => Operand::Imm(imm_for(width, n)?),
    };
    Ok(Parsed::Done(Insn::Alu {
        width,
        op,
        dst,
        src,
    }))
}

fn swap(i: &str) -> Res<'_, (&str, SwapBits)> {
    (
        alt((tag("bswap"), tag("le"), tag("be"))),
        alt((
            value(SwapBits::B16, tag("16")),
            value(SwapBits::B32, tag("32")),
            value(SwapBits::B64, tag("64")),
        )),
    )
        .parse(i)
}

fn rhs(i: &str, w: Width, dst: Reg) -> PResult<'_> {
    let same = |w2: Width, r: Reg, what: &str| -> Result<(), SemErr> {
        if w2 == w && r == dst {
            Ok(())
        } else {
            Err((
                0,
                format!("{what} must name the destination register on both sides"),
            ))
        }
    };
    // dst = -dst
    if let Ok((_, (_, (w2, r)))) = all_consuming((char('-'), reg)).parse(i) {
        return Ok(same(w2, r, "neg").map(|()| Parsed::Done(Insn::Neg { width: w, dst })));
    }
    // dst = le16 dst / bswap64 dst
    if let Ok((_, ((kind, bits), _, (w2, r)))) = all_consuming((swap, space1, reg)).parse(i) {
        if w2 != Width::Bits64 || w != Width::Bits64 || r != dst {
            return Ok(Err((
                0,
                format!("{kind} operates on one r register: rN = {kind}NN rN"),
            )));
        }
        let insn = match kind {
            "le" => Insn::Endian {
                order: ByteOrder::Le,
                bits,
                dst,
            },
            "be" => Insn::Endian {
                order: ByteOrder::Be,
                bits,
                dst,
            },
            _ => Insn::Bswap { bits, dst },
        };
        return Ok(Ok(Parsed::Done(insn)));
    }
    // dst = (s8)src
    if let Ok((_, (_, bits, _, (w2, src)))) = all_consuming((
        tag("(s"),
        alt((tag("8"), tag("16"), tag("32"))),
        char(')'),
        reg,
    ))
    .parse(i)
    {
        if w2 != w {
            return Ok(Err((0, "movsx registers must both be r or both w".into())));
        }
        let from = match bits {
            "8" => ExtFrom::B8,
            "16" => ExtFrom::B16,
            _ if w == Width::Bits64 => ExtFrom::B32,
            _ => return Ok(Err((0, "a 32-bit movsx extends from 8 or 16 bits".into()))),
        };
        return Ok(Ok(Parsed::Done(Insn::MovSx {
            width: w,
            dst,
            src,
            from,
        })));
    }
    // dst = *(u32 *)(src + off) / skb[...]
    if i.starts_with("*(") {
        return load(i, w, dst);
    }
    if i.starts_with("atomic_fetch_") || i.starts_with("xchg") || i.starts_with("cmpxchg") {
        return fetch_atomic(i, w, dst);
    }
    // dst = imm ll
    if let Ok((_, (n, _, _))) = all_consuming((number, space1, tag("ll"))).parse(i) {
        if w != Width::Bits64 {
            return Ok(Err((0, "ld_imm64 loads an r register".into())));
        }
        if !(i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(&n) {
            return Ok(Err((0, "immediate does not fit in 64 bits".into())));
        }
        return Ok(Ok(Parsed::Done(Insn::LdImm64 { dst, imm: n as i64 })));
    }
    let (_, rhs) = all_consuming(operand).parse(i)?;
    Ok(alu(w, AluOp::Mov, dst, rhs))
}
