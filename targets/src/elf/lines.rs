//! line_info for `.BTF.ext`: a function's source annotations as kernel-acceptable records.
//!
//! In: a [`FunctionCode`] with its [`FunctionCode::line_info`] and its byte offset in the section.
//! Out: [`LineInfo`] records (strings interned in the object's BTF), or why the annotations would
//! make the kernel refuse the program.
//!
//! The kernel (`check_btf_line`) wants, per loaded program: offsets strictly increasing, each on
//! the first slot of an instruction, every string offset valid, and a record exactly at the start
//! of every function (a subprogram without one fails with "missing bpf_line_info for func#N").
//! So every function gets a record at slot 0: its own first annotation when it has one there,
//! otherwise one naming the function.

use super::ElfError;
use crate::btf::Btf;
use crate::btf::ext::LineInfo;
use crate::isa::RawInsn;
use crate::program::FunctionCode;

use super::LD_IMM64;

/// The file name of the record that only names a function.
pub(super) const GENERATED_FILE: &str = "ciliumc";

/// Largest column line_info can hold (10 bits) and largest line (the other 22).
const MAX_COLUMN: u32 = 0x3ff;
const MAX_LINE: u32 = (1 << 22) - 1;

/// Checks that `f.line_info` is sorted, unique, within the code and never on the second slot of
/// an `ld_imm64`.
pub(super) fn validate(f: &FunctionCode) -> Result<(), ElfError> {
    let starts = instruction_starts(&f.insns);
    let mut prev: Option<usize> = None;
    for a in &f.line_info {
        let why = if prev.is_some_and(|p| a.insn <= p) {
            Some("not after the previous annotation")
        } else if a.insn >= f.insns.len() {
            Some("past the last instruction")
        } else if !starts[a.insn] {
            Some("on the second slot of an ld_imm64")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ElfError::BadLineInfo {
                function: f.name.clone(),
                insn: a.insn,
                why,
            });
        }
        prev = Some(a.insn);
    }
    Ok(())
}

/// Whether each slot begins an instruction.
fn instruction_starts(insns: &[RawInsn]) -> Vec<bool> {
    let mut starts = vec![false; insns.len()];
    let mut i = 0;
    while i < insns.len() {
        starts[i] = true;
        i += if insns[i].code == LD_IMM64 { 2 } else { 1 };
    }
    starts
}

/// Tools print the text after `; ` as one line: a line break would start a line they do not
/// mark as a comment.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\n', '\r']) {
        text.replace(['\n', '\r'], " ").into()
    } else {
        text.into()
    }
}

/// The records of `f`, placed at byte offset `func_byte_off` of its section.
pub(super) fn records(btf: &mut Btf, f: &FunctionCode, func_byte_off: u32) -> Vec<LineInfo> {
    let mut out = Vec::with_capacity(f.line_info.len() + 1);
    if f.line_info.first().is_none_or(|a| a.insn != 0) {
        out.push(LineInfo {
            insn_byte_off: func_byte_off,
            file_name_off: btf.add_string(GENERATED_FILE),
            line_off: btf.add_string(&f.name),
            line: 1,
            column: 0,
        });
    }
    for a in &f.line_info {
        // Offsets fit: validate() keeps insn below the function length, and the whole section
        // was already checked to fit in u32 bytes by the caller.
        let insn_byte_off = func_byte_off.saturating_add((a.insn as u32).saturating_mul(8));
        out.push(LineInfo {
            insn_byte_off,
            file_name_off: btf.add_string(&a.source.file),
            line_off: btf.add_string(&one_line(&a.source.text)),
            line: a.source.line.min(MAX_LINE),
            column: a.source.column.min(MAX_COLUMN),
        });
    }
    out
}
