//! # Assembler: llvm-objdump text -> `Insn`s
//!
//! In: text, one instruction per line, in the syntax `llvm-objdump-19 -d` prints (`r0 = 0x0`,
//! `if w1 s> 0x3 goto +0x7`, `r1 = 0x0 ll`, `lock *(u64 *)(r1 + 0x0) += r2`, ...), also with
//! `--mattr=+alu32` forms (`w1 = *(u32 *)(r2 + 0x0)`) and the `disasm` lossless extensions
//! (`call pc+0x3`, `call kfunc 0x5`, `ld_pseudo r1, 0x2, 0x5, 0x8`, `skb[r3 + 0x8]`).
//! Out: the typed program, or an [`AsmError`] naming line and column.
//!
//! A pasted objdump listing assembles as is: leading address and byte columns, `<sym+0x10>`
//! annotations, `Disassembly of section` and file-format lines are skipped, and symbol header
//! lines (`0000000000000000 <prog>:`) define labels. For hand-written tests, `name:` lines define
//! labels that `goto name`, `gotol name`, `if ... goto name` and `call name` (bpf-to-bpf)
//! reference; offsets are resolved in slots (an `ld_imm64` counts two) and range-checked.
//! `;` starts a comment.

mod parse;

use std::collections::HashMap;

use crate::isa::Insn;
use parse::{Parsed, instruction};

/// An assembly error at `line` (1-based) and `column` (1-based, in characters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct AsmError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Assembles `text` (see the module docs for the syntax).
pub fn assemble(text: &str) -> Result<Vec<Insn>, AsmError> {
    let mut insns: Vec<Insn> = Vec::new();
    // (instruction index, slot index, label, line, column) for every label reference.
    let mut fixups: Vec<(usize, usize, String, usize, usize)> = Vec::new();
    let mut labels: HashMap<String, usize> = HashMap::new();
    let mut slot = 0usize;
    for (n, raw_line) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = raw_line.split(';').next().unwrap_or("");
        let (body, body_col) = strip_columns(line);
        let body = body.trim_end();
        if body.is_empty() || is_listing_header(body) {
            continue;
        }
        let err = |col: usize, message: String| AsmError {
            line: line_no,
            column: char_column(line, col),
            message,
        };
        if let Some(label) = label_definition(body) {
            if labels.insert(label.to_string(), slot).is_some() {
                return Err(err(body_col, format!("label `{label}` defined twice")));
            }
            continue;
        }
        match instruction(body) {
            Ok(Ok(parsed)) => {
                let insn = match parsed {
                    Parsed::Done(insn) => insn,
                    Parsed::Jump { insn, label } => {
                        let col = body.find(label.as_str()).unwrap_or(0) + body_col;
                        fixups.push((insns.len(), slot, label, line_no, char_column(line, col)));
                        insn
                    }
                };
                slot += insn.slots();
                insns.push(insn);
            }
            Ok(Err((offset, message))) => return Err(err(body_col + offset, message)),
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
                let offset = body.len() - e.input.len();
                let found = e.input.split_whitespace().next().unwrap_or("end of line");
                return Err(err(
                    body_col + offset,
                    format!("cannot parse instruction `{body}` at `{found}`"),
                ));
            }
            Err(nom::Err::Incomplete(_)) => {
                return Err(err(body_col, format!("incomplete instruction `{body}`")));
            }
        }
    }
    for (idx, at_slot, label, line, column) in fixups {
        let Some(&target) = labels.get(&label) else {
            return Err(AsmError {
                line,
                column,
                message: format!("undefined label `{label}`"),
            });
        };
        let delta = target as i64 - (at_slot as i64 + 1);
        let out_of_range = |what: &str| AsmError {
            line,
            column,
            message: format!("label `{label}` is {delta} slots away, out of range for {what}"),
        };
        insns[idx] = match insns[idx] {
            Insn::Ja { .. } => Insn::Ja {
                off: i16::try_from(delta).map_err(|_| out_of_range("goto (use gotol)"))?,
            },
            Insn::Jmp {
                width,
                op,
                dst,
                src,
                ..
            } => Insn::Jmp {
                width,
                op,
                dst,
                src,
                off: i16::try_from(delta).map_err(|_| out_of_range("a conditional jump"))?,
            },
            Insn::Gotol { .. } => Insn::Gotol {
                imm: i32::try_from(delta).map_err(|_| out_of_range("gotol"))?,
            },
            Insn::CallLocal { .. } => Insn::CallLocal {
                imm: i32::try_from(delta).map_err(|_| out_of_range("call"))?,
            },
            other => other,
        };
    }
    Ok(insns)
}

/// Column (1-based, characters) of byte offset `byte` in `line`.
fn char_column(line: &str, byte: usize) -> usize {
    line.get(..byte.min(line.len()))
        .map_or(byte, |s| s.chars().count())
        + 1
}

fn is_listing_header(body: &str) -> bool {
    body.starts_with("Disassembly of section ") || body.contains(":\tfile format ")
}

/// `name:` or an objdump symbol header `0000000000000000 <name>:`.
fn label_definition(body: &str) -> Option<&str> {
    let head = body.strip_suffix(':')?;
    if let Some((addr, sym)) = head.split_once(' ')
        && addr.len() == 16
        && addr.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return sym.strip_prefix('<')?.strip_suffix('>');
    }
    let ok = head
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '.')
        && head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    ok.then_some(head)
}

/// Skips llvm-objdump's `      12:\t95 00 00 00 00 00 00 00\t` columns when present. Returns
/// the rest of the line and its byte offset.
fn strip_columns(line: &str) -> (&str, usize) {
    let trimmed = line.trim_start();
    let lead = line.len() - trimmed.len();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || trimmed.as_bytes().get(digits) != Some(&b':') {
        return (trimmed, lead);
    }
    let mut pos = lead + digits + 1;
    let bytes = line.as_bytes();
    // Hex byte pairs separated by whitespace.
    loop {
        let ws = line[pos..].len() - line[pos..].trim_start().len();
        let p = pos + ws;
        let pair = bytes.get(p..p + 2);
        let after = bytes.get(p + 2);
        match (pair, after) {
            (Some(pr), Some(a))
                if pr.iter().all(u8::is_ascii_hexdigit) && a.is_ascii_whitespace() =>
            {
                pos = p + 2;
            }
            (Some(pr), None) if pr.iter().all(u8::is_ascii_hexdigit) => {
                pos = p + 2;
            }
            _ => {
                pos = p;
                break;
            }
        }
    }
    (&line[pos..], pos)
}
