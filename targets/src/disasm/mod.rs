//! # Disassembler: eBPF slots -> `llvm-objdump-19 -d` text
//!
//! In: raw slots ([`RawInsn`]), typed programs ([`Insn`]) or a whole BPF ELF object. Out: the text
//! llvm-objdump 19 prints for the same bytes, byte for byte.
//!
//! - [`disassemble_insns`]: one string per instruction (`r0 = 0x0`, `if r1 > 0x5 goto +0x3`,
//!   `r1 = 0x0 ll` for a two-slot `ld_imm64`). Without symbols there is no `<label>` after jump
//!   offsets; llvm-objdump adds one only when disassembling an object (it always has a symbol
//!   there, inventing one named after the section when needed).
//! - [`disassemble_object`]: the complete `llvm-objdump-19 -d FILE` output including the header
//!   line, section and symbol headers, the address column (slot index within the section), the raw
//!   bytes column (16 bytes on one line for `ld_imm64`) and `<sym+0x..>` jump annotations.
//!   [`disassemble_object_annotated`] inserts `; comment` lines (used by `ciliumc disasm` to show
//!   which policy rule a block came from; `asm` skips them), and
//!   [`disassemble_object_with_line_info`] feeds it the object's own `.BTF.ext` line_info.
//! - [`DisasmOptions`] selects `--mattr=+alu32` conventions or a `lossless` extension of the
//!   syntax for text round trips.
//!
//! The text follows LLVM's decoder, not ours: encodings the kernel would refuse but LLVM prints
//! (e.g. an ALU immediate with a non-zero `src`) print as LLVM prints them, and what LLVM cannot
//! decode prints as `<unknown>`. Where only data (`STT_OBJECT`) symbols name a stretch of an
//! executable section, llvm-objdump hex-dumps it, and so do we.

mod object;
mod text;

pub use object::{
    Annotator, disassemble_object, disassemble_object_annotated, disassemble_object_with,
    disassemble_object_with_line_info,
};
pub use text::DisasmOptions;

use crate::isa::{Insn, RawInsn, encode};
use text::{Decoded, decode_at};

/// Why an object could not be disassembled.
#[derive(Debug, thiserror::Error)]
pub enum DisasmError {
    #[error("not a readable ELF64 object: {0}")]
    Elf(String),
    #[error("not a BPF object (e_machine {0}, expected 247)")]
    NotBpf(u16),
    #[error("big-endian BPF objects are not supported")]
    BigEndian,
    #[error("unreadable line_info: {0}")]
    LineInfo(String),
}

/// The instruction text of each instruction in `insns`, as `llvm-objdump-19 -d` prints it in its
/// third column (no jump-target labels).
pub fn disassemble_insns(insns: &[RawInsn]) -> Vec<String> {
    disassemble_insns_with(insns, DisasmOptions::default())
}

/// As [`disassemble_insns`] with other text conventions.
pub fn disassemble_insns_with(insns: &[RawInsn], opts: DisasmOptions) -> Vec<String> {
    let bytes: Vec<u8> = insns.iter().flat_map(|i| i.to_bytes()).collect();
    let mut out = Vec::with_capacity(insns.len());
    let mut pos = 0;
    while pos < bytes.len() {
        match decode_at(&bytes[pos..], opts) {
            Decoded::Insn { text, size, .. } => {
                out.push(text);
                pos += size;
            }
            Decoded::Unknown { size } => {
                out.push("<unknown>".to_string());
                pos += size;
            }
        }
    }
    out
}

/// Encodes and disassembles a typed program: one string per `Insn`.
pub fn disassemble_program(program: &[Insn], opts: DisasmOptions) -> Vec<String> {
    disassemble_insns_with(&encode(program), opts)
}

/// An instruction's text in the lossless convention (llvm-objdump syntax with `--mattr=+alu32`
/// forms and the extensions of [`DisasmOptions::lossless`]), which `asm` reads back exactly.
impl std::fmt::Display for Insn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut slots = Vec::with_capacity(2);
        self.encode_into(&mut slots);
        let bytes: Vec<u8> = slots.iter().flat_map(|s| s.to_bytes()).collect();
        match decode_at(&bytes, DisasmOptions::LOSSLESS) {
            Decoded::Insn { text, .. } => f.write_str(&text),
            Decoded::Unknown { .. } => f.write_str("<unknown>"),
        }
    }
}
