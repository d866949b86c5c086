//! The hand-off between code generation and the ELF writer: finished instruction streams with
//! symbolic references that the ELF writer turns into relocations.

use crate::isa::RawInsn;

/// What a relocated instruction refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RelocTarget {
    /// `ld_imm64 rX, map` against a map in `.maps` (becomes R_BPF_64_64, src = BPF_PSEUDO_MAP_FD).
    Map(String),
    /// `call` of a subprogram placed in `.text` (becomes R_BPF_64_32, src = BPF_PSEUDO_CALL).
    Subprogram(String),
}

/// A symbolic reference from instruction slot `insn` (index into `insns`, counting ld_imm64 as 2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reloc {
    pub insn: usize,
    pub target: RelocTarget,
}

/// One function's finished code: an entry program (in its own section) or a `.text` subprogram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionCode {
    /// ELF symbol name.
    pub name: String,
    /// ELF section: `classifier`, `classifier/<x>`, `xdp`, ... for programs; `.text` for subprograms.
    pub section: String,
    pub insns: Vec<RawInsn>,
    pub relocs: Vec<Reloc>,
}
