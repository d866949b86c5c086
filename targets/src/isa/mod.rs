//! The eBPF instruction set through cpu v4.

pub mod opcode;

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
