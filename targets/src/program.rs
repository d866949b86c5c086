//! The hand-off between code generation and the ELF writer: finished instruction streams with
//! symbolic references that the ELF writer turns into relocations, and source annotations that
//! it turns into `.BTF.ext` line_info (what `bpftool prog dump xlated` and `ciliumc disasm` show).

use crate::isa::RawInsn;

/// What a relocated instruction refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RelocTarget {
    /// `ld_imm64 rX, map` against a map in `.maps` (becomes R_BPF_64_64, src = BPF_PSEUDO_MAP_FD).
    Map(String),
    /// `call` of a subprogram placed in `.text` (becomes R_BPF_64_32, src = BPF_PSEUDO_CALL).
    Subprogram(String),
    /// The immediate of `mov32 rX, imm`: a constant bound before the object is written
    /// ([`FunctionCode::bind_constant`]); the ELF writer refuses one left unbound.
    Constant(String),
}

/// A symbolic reference from instruction slot `insn` (index into `insns`, counting ld_imm64 as 2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reloc {
    pub insn: usize,
    pub target: RelocTarget,
}

/// Where a stretch of code came from: shown as `; text` above it by `bpftool prog dump xlated`
/// and `ciliumc disasm`. `file`/`line`/`column` locate the source (line 1-based; column 0-1023,
/// larger values are clamped because line_info packs it into 10 bits).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Annotation {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub text: String,
}

/// An [`Annotation`] that starts at instruction slot `insn` (counting ld_imm64 as 2; always the
/// first slot of an instruction).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineAnnotation {
    pub insn: usize,
    pub source: Annotation,
}

/// One function's finished code: an entry program (in its own section) or a `.text` subprogram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionCode {
    /// ELF symbol name.
    pub name: String,
    /// ELF section: `classifier`, `classifier/<x>`, `xdp`, ... for programs; `.text` for subprograms.
    pub section: String,
    pub insns: Vec<RawInsn>,
    pub relocs: Vec<Reloc>,
    /// Source annotations by slot, strictly increasing `insn`, each below `insns.len()`.
    pub line_info: Vec<LineAnnotation>,
}

impl FunctionCode {
    /// Writes `value` into every instruction that loads the constant `name` and drops their
    /// relocations; returns how many there were.
    pub fn bind_constant(&mut self, name: &str, value: u32) -> usize {
        let mut bound = 0;
        let insns = &mut self.insns;
        self.relocs.retain(|r| match &r.target {
            RelocTarget::Constant(n) if n == name => {
                if let Some(insn) = insns.get_mut(r.insn) {
                    // The immediate's bits: mov32 zero-extends them to the full value.
                    insn.imm = value as i32;
                    bound += 1;
                }
                false
            }
            _ => true,
        });
        bound
    }
}
