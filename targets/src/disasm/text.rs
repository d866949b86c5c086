//! One instruction's text, modelled on LLVM 19's BPF disassembler rather than on our strict
//! decoder, so that every byte pattern prints as `llvm-objdump-19 -d` prints it: fields LLVM does
//! not look at are ignored (an ALU-immediate with a non-zero `src` still prints), fields it does
//! match must hold exactly (an `exit` with a non-zero `imm` is `<unknown>`), r11 prints, r12..r15
//! do not decode. The rules were established by sweeping every opcode against llvm-objdump-19 and
//! are checked by the `disasm_*` golden tests.

use std::fmt::Write;

/// Text conventions.
///
/// `Default` is plain `llvm-objdump-19 -d`. `alu32` matches `llvm-objdump-19 -d --mattr=+alu32`
/// (sub-64-bit loads/stores and 32-bit atomics name `w` registers; without it LLVM cannot print
/// most 32-bit atomics and shows `<unknown>`). `lossless` additionally prints what LLVM's text
/// drops (call kinds, the second immediate of a pseudo `ld_imm64`, the immediate of `LD_IND`) in
/// an extended syntax that `asm` reads, so that every valid program survives a text round trip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DisasmOptions {
    pub alu32: bool,
    pub lossless: bool,
}

impl DisasmOptions {
    /// The conventions under which `asm::assemble(disassemble(p)) == p` holds for every valid `p`.
    pub const LOSSLESS: DisasmOptions = DisasmOptions {
        alu32: true,
        lossless: true,
    };

    fn alu32(self) -> bool {
        self.alu32 || self.lossless
    }
}

/// What the disassembler made of the bytes at one position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// An instruction of `size` bytes (8 or 16). `branch` is the byte displacement of a jump
    /// target from the start of this instruction, for the `<sym+off>` annotation.
    Insn {
        text: String,
        size: usize,
        branch: Option<i64>,
    },
    /// LLVM fails to decode; it prints `<unknown>` and moves on by `size` bytes (8, or 1 when fewer
    /// than 8 bytes remain or an `ld_imm64` is cut off).
    Unknown { size: usize },
}

/// Signed hex as LLVM prints immediates: `0x4`, `-0x1`.
pub(crate) fn shex(v: i64) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("{v:#x}")
    }
}

/// `+0x3` / `-0x3` as LLVM prints jump offsets.
fn jump_off(v: i64) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("+{v:#x}")
    }
}

/// `r2 + 0x3` / `r2 - 0x3`.
fn mem(base: &str, off: i16) -> String {
    if off < 0 {
        format!("{base} - {:#x}", off.unsigned_abs())
    } else {
        format!("{base} + {off:#x}")
    }
}

/// Register as LLVM's decoder accepts it (r0..r11); `None` makes the whole instruction unknown.
fn reg(prefix: char, n: u8) -> Option<String> {
    (n <= 11).then(|| format!("{prefix}{n}"))
}

struct Fields {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

fn fields(b: &[u8]) -> Fields {
    Fields {
        code: b[0],
        dst: b[1] & 0x0f,
        src: b[1] >> 4,
        off: i16::from_le_bytes([b[2], b[3]]),
        imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    }
}

/// Decodes the bytes at the start of `bytes` (the rest of the section).
pub(crate) fn decode_at(bytes: &[u8], opts: DisasmOptions) -> Decoded {
    if bytes.len() < 8 {
        return Decoded::Unknown { size: 1 };
    }
    let f = fields(bytes);
    if f.code == 0x18 {
        if f.off != 0 {
            return Decoded::Unknown { size: 8 };
        }
        let Some(dst) = reg('r', f.dst) else {
            return Decoded::Unknown { size: 8 };
        };
        if bytes.len() < 16 {
            return Decoded::Unknown { size: 1 };
        }
        let hi = i32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        let text = if f.src == 0 {
            let v = (i64::from(hi) << 32) | i64::from(f.imm as u32);
            format!("{dst} = {} ll", shex(v))
        } else if opts.lossless && hi != 0 {
            format!(
                "ld_pseudo\t{dst}, {:#x}, {:#x}, {:#x}",
                f.src, f.imm as u32, hi as u32
            )
        } else {
            format!("ld_pseudo\t{dst}, {:#x}, {:#x}", f.src, f.imm as u32)
        };
        return Decoded::Insn {
            text,
            size: 16,
            branch: None,
        };
    }
    let single = match f.code & 0x07 {
        0x04 | 0x07 => alu(&f),
        0x05 | 0x06 => return jmp(&f, opts),
        0x01 => ldx(&f, opts),
        0x02 => st(&f),
        0x03 => stx(&f, opts),
        _ => ld(&f, opts),
    };
    match single {
        Some(text) => Decoded::Insn {
            text,
            size: 8,
            branch: None,
        },
        None => Decoded::Unknown { size: 8 },
    }
}

fn alu_symbol(op: u8, off: i16) -> Option<&'static str> {
    Some(match (op, off) {
        (0x00, 0) => "+=",
        (0x10, 0) => "-=",
        (0x20, 0) => "*=",
        (0x30, 0) => "/=",
        (0x30, 1) => "s/=",
        (0x40, 0) => "|=",
        (0x50, 0) => "&=",
        (0x60, 0) => "<<=",
        (0x70, 0) => ">>=",
        (0x90, 0) => "%=",
        (0x90, 1) => "s%=",
        (0xa0, 0) => "^=",
        (0xb0, 0) => "=",
        (0xc0, 0) => "s>>=",
        _ => return None,
    })
}

fn alu(f: &Fields) -> Option<String> {
    let is64 = f.code & 0x07 == 0x07;
    let p = if is64 { 'r' } else { 'w' };
    let op = f.code & 0xf0;
    let is_x = f.code & 0x08 != 0;
    let dst = reg(p, f.dst)?;
    match op {
        0x80 => {
            return (!is_x).then(|| format!("{dst} = -{dst}"));
        }
        0xd0 => {
            let rd = reg('r', f.dst)?;
            let bits = match f.imm {
                16 | 32 | 64 => f.imm,
                _ => return None,
            };
            let name = match (is64, is_x) {
                (false, false) => "le",
                (false, true) => "be",
                (true, false) => "bswap",
                (true, true) => return None,
            };
            return Some(format!("{rd} = {name}{bits} {rd}"));
        }
        _ => {}
    }
    if op == 0xb0 && is_x && f.off != 0 {
        let src = reg(p, f.src)?;
        return match (is64, f.off) {
            (_, 8 | 16) | (true, 32) => Some(format!("{dst} = (s{}){src}", f.off)),
            (true, 1) => Some(format!(
                "{dst} = addr_space_cast({src}, {:#x}, {:#x})",
                (f.imm as u32) >> 16,
                (f.imm as u32) & 0xffff
            )),
            _ => None,
        };
    }
    let sym = alu_symbol(op, f.off)?;
    if is_x {
        let src = reg(p, f.src)?;
        Some(format!("{dst} {sym} {src}"))
    } else {
        Some(format!("{dst} {sym} {}", shex(f.imm.into())))
    }
}

fn jmp_symbol(op: u8) -> Option<&'static str> {
    Some(match op {
        0x10 => "==",
        0x20 => ">",
        0x30 => ">=",
        0x40 => "&",
        0x50 => "!=",
        0x60 => "s>",
        0x70 => "s>=",
        0xa0 => "<",
        0xb0 => "<=",
        0xc0 => "s<",
        0xd0 => "s<=",
        _ => return None,
    })
}

fn jmp(f: &Fields, opts: DisasmOptions) -> Decoded {
    let is64 = f.code & 0x07 == 0x05;
    let unknown = Decoded::Unknown { size: 8 };
    let branch = |text: String, disp: i64| Decoded::Insn {
        text,
        size: 8,
        branch: Some((disp + 1) * 8),
    };
    let plain = |text: String| Decoded::Insn {
        text,
        size: 8,
        branch: None,
    };
    match f.code {
        0x05 => return branch(format!("goto {}", jump_off(f.off.into())), f.off.into()),
        0x06 => return branch(format!("gotol {}", jump_off(f.imm.into())), f.imm.into()),
        0xe5 => return branch(format!("may_goto {}", jump_off(f.off.into())), f.off.into()),
        0x85 => {
            if opts.lossless {
                return plain(match f.src {
                    1 => format!("call pc{}", jump_off(f.imm.into())),
                    2 if f.off != 0 => {
                        format!("call kfunc {}, {}", shex(f.imm.into()), shex(f.off.into()))
                    }
                    2 => format!("call kfunc {}", shex(f.imm.into())),
                    _ => format!("call {}", shex(f.imm.into())),
                });
            }
            return plain(format!("call {}", shex(f.imm.into())));
        }
        0x8d => {
            return match reg('r', f.dst) {
                Some(d) => plain(format!("callx {d}")),
                None => unknown,
            };
        }
        0x95 => {
            return if f.imm == 0 {
                plain("exit".to_string())
            } else {
                unknown
            };
        }
        _ => {}
    }
    let Some(sym) = jmp_symbol(f.code & 0xf0) else {
        return unknown;
    };
    let p = if is64 { 'r' } else { 'w' };
    let Some(dst) = reg(p, f.dst) else {
        return unknown;
    };
    let rhs = if f.code & 0x08 != 0 {
        match reg(p, f.src) {
            Some(s) => s,
            None => return unknown,
        }
    } else {
        shex(f.imm.into())
    };
    branch(
        format!("if {dst} {sym} {rhs} goto {}", jump_off(f.off.into())),
        f.off.into(),
    )
}

fn size_name(code: u8) -> &'static str {
    match code & 0x18 {
        0x00 => "32",
        0x08 => "16",
        0x10 => "8",
        _ => "64",
    }
}

fn ldx(f: &Fields, opts: DisasmOptions) -> Option<String> {
    let mode = f.code & 0xe0;
    let size = size_name(f.code);
    let src = reg('r', f.src)?;
    match mode {
        0x60 => {
            let p = if opts.alu32() && size != "64" {
                'w'
            } else {
                'r'
            };
            let dst = reg(p, f.dst)?;
            Some(format!("{dst} = *(u{size} *)({})", mem(&src, f.off)))
        }
        0x80 if size != "64" => {
            let dst = reg('r', f.dst)?;
            Some(format!("{dst} = *(s{size} *)({})", mem(&src, f.off)))
        }
        _ => None,
    }
}

fn st(f: &Fields) -> Option<String> {
    if f.code & 0xe0 != 0x60 {
        return None;
    }
    let dst = reg('r', f.dst)?;
    Some(format!(
        "*(u{} *)({}) = {}",
        size_name(f.code),
        mem(&dst, f.off),
        shex(f.imm.into())
    ))
}

fn stx(f: &Fields, opts: DisasmOptions) -> Option<String> {
    let mode = f.code & 0xe0;
    let size = size_name(f.code);
    let dst = reg('r', f.dst)?;
    let p = if opts.alu32() && size != "64" {
        'w'
    } else {
        'r'
    };
    let src = reg(p, f.src)?;
    let addr = mem(&dst, f.off);
    match mode {
        0x60 => Some(format!("*(u{size} *)({addr}) = {src}")),
        0xc0 if size == "64" || size == "32" => atomic(f.imm, size, &addr, &src, opts),
        _ => None,
    }
}

fn atomic(imm: i32, size: &str, addr: &str, src: &str, opts: DisasmOptions) -> Option<String> {
    let op = (imm >> 4) & 0x0f;
    let fetch = imm & 0x0f == 1;
    // Without alu32, LLVM knows only the legacy 32-bit `lock +=` and matches it on the operation
    // nibble alone, so a 32-bit fetch-add prints as a plain add.
    if size == "32" && !opts.alu32() {
        return (op == 0).then(|| format!("lock *(u32 *)({addr}) += {src}"));
    }
    let (sym, name) = match op {
        0x0 => ("+=", "add"),
        0x4 => ("|=", "or"),
        0x5 => ("&=", "and"),
        0xa => ("^=", "xor"),
        0xe if fetch => {
            let name = if size == "64" { "xchg_64" } else { "xchg32_32" };
            return Some(format!("{src} = {name}({addr}, {src})"));
        }
        0xf if fetch => {
            let (name, r0) = if size == "64" {
                ("cmpxchg_64", "r0")
            } else {
                ("cmpxchg32_32", "w0")
            };
            return Some(format!("{r0} = {name}({addr}, {r0}, {src})"));
        }
        _ => return None,
    };
    if fetch {
        Some(format!(
            "{src} = atomic_fetch_{name}((u{size} *)({addr}), {src})"
        ))
    } else {
        Some(format!("lock *(u{size} *)({addr}) {sym} {src}"))
    }
}

fn ld(f: &Fields, opts: DisasmOptions) -> Option<String> {
    let size = size_name(f.code);
    if size == "64" {
        return None;
    }
    match f.code & 0xe0 {
        0x20 => Some(format!("r0 = *(u{size} *)skb[{}]", shex(f.imm.into()))),
        0x40 => {
            let src = reg('r', f.src)?;
            if opts.lossless && f.imm != 0 {
                let mut s = format!("r0 = *(u{size} *)skb[{src} ");
                let _ = if f.imm < 0 {
                    write!(s, "- {:#x}]", f.imm.unsigned_abs())
                } else {
                    write!(s, "+ {:#x}]", f.imm)
                };
                Some(s)
            } else {
                Some(format!("r0 = *(u{size} *)skb[{src}]"))
            }
        }
        _ => None,
    }
}
