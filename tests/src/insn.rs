//! Small instruction constructors for hand-written test programs (real programs come from
//! codegen). In: registers, offsets, immediates. Out: `RawInsn` slots (`ld_imm64` gives two).

use ciliumc_targets::isa::RawInsn;
use ciliumc_targets::isa::opcode::*;

pub const R0: u8 = 0;
pub const R1: u8 = 1;
pub const R2: u8 = 2;
pub const R3: u8 = 3;
pub const R4: u8 = 4;
pub const R5: u8 = 5;
pub const R6: u8 = 6;
pub const R7: u8 = 7;
pub const R8: u8 = 8;
pub const R9: u8 = 9;
pub const R10: u8 = 10;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> RawInsn {
    RawInsn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

pub fn mov64_imm(dst: u8, imm: i32) -> RawInsn {
    insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
}
pub fn mov64_reg(dst: u8, src: u8) -> RawInsn {
    insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)
}
/// `dst op= imm` (64-bit), `op` one of BPF_ADD, BPF_AND, ...
pub fn alu64_imm(op: u8, dst: u8, imm: i32) -> RawInsn {
    insn(BPF_ALU64 | op | BPF_K, dst, 0, 0, imm)
}
pub fn alu64_reg(op: u8, dst: u8, src: u8) -> RawInsn {
    insn(BPF_ALU64 | op | BPF_X, dst, src, 0, 0)
}
/// `dst = *(size *)(src + off)`, size one of BPF_B, BPF_H, BPF_W, BPF_DW.
pub fn ldx(size: u8, dst: u8, src: u8, off: i16) -> RawInsn {
    insn(BPF_LDX | BPF_MEM | size, dst, src, off, 0)
}
pub fn stx(size: u8, dst: u8, src: u8, off: i16) -> RawInsn {
    insn(BPF_STX | BPF_MEM | size, dst, src, off, 0)
}
pub fn st_imm(size: u8, dst: u8, off: i16, imm: i32) -> RawInsn {
    insn(BPF_ST | BPF_MEM | size, dst, 0, off, imm)
}
/// Conditional jump `if dst op imm goto +off`.
pub fn jmp_imm(op: u8, dst: u8, imm: i32, off: i16) -> RawInsn {
    insn(BPF_JMP | op | BPF_K, dst, 0, off, imm)
}
pub fn jmp_reg(op: u8, dst: u8, src: u8, off: i16) -> RawInsn {
    insn(BPF_JMP | op | BPF_X, dst, src, off, 0)
}
pub fn ja(off: i16) -> RawInsn {
    insn(BPF_JMP | BPF_JA, 0, 0, off, 0)
}
pub fn call_helper(id: i32) -> RawInsn {
    insn(BPF_JMP | BPF_CALL, 0, 0, 0, id)
}
/// A bpf-to-bpf call, to be relocated against a `.text` subprogram.
pub fn call_local() -> RawInsn {
    insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, -1)
}
pub fn exit() -> RawInsn {
    insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}
/// `dst = map` (two slots), to be relocated against a map.
pub fn ld_map(dst: u8) -> [RawInsn; 2] {
    [
        insn(BPF_LD | BPF_IMM | BPF_DW, dst, 0, 0, 0),
        RawInsn::default(),
    ]
}
/// `dst = imm64` (two slots).
pub fn ld_imm64(dst: u8, imm: u64) -> [RawInsn; 2] {
    [
        insn(BPF_LD | BPF_IMM | BPF_DW, dst, 0, 0, imm as u32 as i32),
        insn(0, 0, 0, 0, (imm >> 32) as u32 as i32),
    ]
}

/// A tiny label-resolving builder for test programs: jumps to named labels, map loads and
/// subprogram calls that become relocations. Out: a [`FunctionCode`].
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<RawInsn>,
    relocs: Vec<Reloc>,
    labels: std::collections::BTreeMap<String, usize>,
    fixups: Vec<(usize, String)>,
}

use ciliumc_targets::program::{FunctionCode, Reloc, RelocTarget};

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    pub fn push(&mut self, i: RawInsn) -> &mut Self {
        self.insns.push(i);
        self
    }

    pub fn extend(&mut self, is: impl IntoIterator<Item = RawInsn>) -> &mut Self {
        self.insns.extend(is);
        self
    }

    pub fn label(&mut self, name: &str) -> &mut Self {
        self.labels.insert(name.to_owned(), self.insns.len());
        self
    }

    /// `if dst op imm goto label` (`op` BPF_JEQ, ...; BPF_JA for an unconditional jump).
    pub fn jmp_imm_to(&mut self, op: u8, dst: u8, imm: i32, label: &str) -> &mut Self {
        self.fixups.push((self.insns.len(), label.to_owned()));
        self.push(jmp_imm(op, dst, imm, 0))
    }

    pub fn jmp_reg_to(&mut self, op: u8, dst: u8, src: u8, label: &str) -> &mut Self {
        self.fixups.push((self.insns.len(), label.to_owned()));
        self.push(jmp_reg(op, dst, src, 0))
    }

    /// `gotol label` (cpu v4 `JMP32|JA`, 32-bit offset in imm), for targets beyond ±32767.
    pub fn gotol_to(&mut self, label: &str) -> &mut Self {
        self.fixups.push((self.insns.len(), label.to_owned()));
        self.push(insn(BPF_JMP32 | BPF_JA, 0, 0, 0, 0))
    }

    pub fn ja_to(&mut self, label: &str) -> &mut Self {
        self.fixups.push((self.insns.len(), label.to_owned()));
        self.push(ja(0))
    }

    pub fn ld_map(&mut self, dst: u8, map: &str) -> &mut Self {
        self.relocs.push(Reloc {
            insn: self.insns.len(),
            target: RelocTarget::Map(map.to_owned()),
        });
        self.extend(ld_map(dst))
    }

    pub fn call(&mut self, subprogram: &str) -> &mut Self {
        self.relocs.push(Reloc {
            insn: self.insns.len(),
            target: RelocTarget::Subprogram(subprogram.to_owned()),
        });
        self.push(call_local())
    }

    /// The finished function. Panics on an unknown label or a jump out of range (test code).
    pub fn finish(&mut self, name: &str, section: &str) -> FunctionCode {
        let mut insns = self.insns.clone();
        for (at, label) in &self.fixups {
            let target = self
                .labels
                .get(label)
                .unwrap_or_else(|| panic!("unknown label {label}"));
            let delta = *target as i64 - *at as i64 - 1;
            if insns[*at].code == BPF_JMP32 | BPF_JA {
                insns[*at].imm = i32::try_from(delta)
                    .unwrap_or_else(|_| panic!("gotol to {label} out of range"));
            } else {
                insns[*at].off = i16::try_from(delta)
                    .unwrap_or_else(|_| panic!("jump to {label} out of range: use gotol_to"));
            }
        }
        FunctionCode {
            name: name.to_owned(),
            section: section.to_owned(),
            insns,
            relocs: self.relocs.clone(),
            line_info: Vec::new(),
        }
    }
}
