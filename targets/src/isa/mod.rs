//! # The eBPF instruction set, cpu v1..v4
//!
//! In: typed instructions ([`Insn`]) or raw 8-byte slots ([`RawInsn`]). Out: the other one.
//!
//! - [`Insn`] is the source of truth: one variant per instruction form (ALU/ALU64 with K and X
//!   sources incl. signed div/mod and `movsx`, `le`/`be`/`bswap`, JMP/JMP32, `goto`/`gotol`,
//!   helper / bpf-to-bpf / kfunc calls, `exit`, loads and stores incl. sign-extending loads,
//!   atomics, `ld_imm64` with pseudo sources, legacy `LD_ABS`/`LD_IND`). Operands are newtypes
//!   ([`Reg`]) and small enums, so codegen cannot build a structurally invalid instruction.
//! - [`encode`] turns a program into slots (an `ld_imm64` takes two), [`decode`] does the reverse
//!   strictly (reserved fields must be zero, as the kernel demands) and reports the failing slot
//!   index and reason in [`DecodeError`]. `decode(&encode(p)) == p` for every program.
//! - [`opcode`] holds the kernel's opcode constants for code that works on raw slots.
//!
//! Text forms live next door: `disasm` prints slots as `llvm-objdump-19 -d` does, `asm` parses
//! that text back into `Insn`s.

mod decode;
mod encode;
mod insn;
pub mod opcode;
pub mod semantics;

pub use decode::{DecodeError, DecodeReason, decode, decode_one};
pub use encode::encode;
pub use insn::{
    AluOp, AtomicOp, AtomicSize, ByteOrder, ExtFrom, Insn, JmpOp, Operand, PktSize, PseudoKind,
    Reg, Size, SwapBits, SxSize, Width,
};

/// One raw 8-byte eBPF instruction slot, as the kernel's `struct bpf_insn`.
/// `ld_imm64` occupies two consecutive slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RawInsn {
    pub code: u8,
    /// Destination register, 0..=10.
    pub dst: u8,
    /// Source register (or pseudo source for ld_imm64 / call), 0..=15.
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl RawInsn {
    /// Little-endian encoding of this slot.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }

    /// Slots of a little-endian byte stream (an ELF program section); `None` unless the length
    /// is a multiple of 8.
    pub fn slots_from_bytes(bytes: &[u8]) -> Option<Vec<RawInsn>> {
        if !bytes.len().is_multiple_of(8) {
            return None;
        }
        Some(
            bytes
                .chunks_exact(8)
                .map(|c| RawInsn::from_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        )
    }

    /// The little-endian byte stream of `slots`.
    pub fn bytes_of(slots: &[RawInsn]) -> Vec<u8> {
        slots.iter().flat_map(|s| s.to_bytes()).collect()
    }

    pub fn from_bytes(b: [u8; 8]) -> Self {
        RawInsn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}
