//! `.BTF.ext` encoder: per-section `func_info` and `line_info` records.
//!
//! In: records per ELF section, with instruction offsets in **bytes** from the section start (the
//! ELF convention; libbpf and aya convert to instruction indices when they load). Names and file
//! names are offsets into the `.BTF` string table, so interning goes through [`Btf::add_string`].
//! Out: the `.BTF.ext` section bytes from [`BtfExt::to_bytes`].

use super::{Btf, TypeId};

const FUNC_INFO_REC_SIZE: u32 = 8;
const LINE_INFO_REC_SIZE: u32 = 16;
/// The header including the (empty) CO-RE relocation part, as clang emits it; llvm-objdump
/// misreads shorter headers.
const HEADER_LEN: u32 = 32;

/// `struct bpf_func_info`: the function whose code starts at `insn_byte_off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncInfo {
    pub insn_byte_off: u32,
    pub type_id: TypeId,
}

/// `struct bpf_line_info`: a source line that code at `insn_byte_off` came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineInfo {
    pub insn_byte_off: u32,
    pub file_name_off: u32,
    pub line_off: u32,
    pub line: u32,
    pub column: u32,
}

/// `.BTF.ext` contents, sections kept in insertion order.
#[derive(Clone, Debug, Default)]
pub struct BtfExt {
    func_info: Vec<(u32, Vec<FuncInfo>)>,
    line_info: Vec<(u32, Vec<LineInfo>)>,
}

impl BtfExt {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the func_info records of ELF section `section` (interned in `btf`).
    pub fn add_func_info(&mut self, btf: &mut Btf, section: &str, records: Vec<FuncInfo>) {
        let name = btf.add_string(section);
        self.func_info.push((name, records));
    }

    /// Adds the line_info records of ELF section `section` (interned in `btf`).
    pub fn add_line_info(&mut self, btf: &mut Btf, section: &str, records: Vec<LineInfo>) {
        let name = btf.add_string(section);
        self.line_info.push((name, records));
    }

    pub fn is_empty(&self) -> bool {
        self.func_info.is_empty() && self.line_info.is_empty()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut func = Vec::new();
        if !self.func_info.is_empty() {
            func.extend_from_slice(&FUNC_INFO_REC_SIZE.to_le_bytes());
            for (sec, recs) in &self.func_info {
                push_words(&mut func, &[*sec, recs.len() as u32]);
                for r in recs {
                    push_words(&mut func, &[r.insn_byte_off, r.type_id]);
                }
            }
        }
        let mut line = Vec::new();
        if !self.line_info.is_empty() {
            line.extend_from_slice(&LINE_INFO_REC_SIZE.to_le_bytes());
            for (sec, recs) in &self.line_info {
                push_words(&mut line, &[*sec, recs.len() as u32]);
                for r in recs {
                    let line_col = (r.line << 10) | (r.column & 0x3ff);
                    push_words(
                        &mut line,
                        &[r.insn_byte_off, r.file_name_off, r.line_off, line_col],
                    );
                }
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_le_bytes());
        out.push(1);
        out.push(0);
        let func_len = func.len() as u32;
        let line_len = line.len() as u32;
        push_words(
            &mut out,
            &[
                HEADER_LEN,
                0,
                func_len,
                func_len,
                line_len,
                func_len + line_len,
                0,
            ],
        );
        out.extend_from_slice(&func);
        out.extend_from_slice(&line);
        out
    }
}

fn push_words(out: &mut Vec<u8>, words: &[u32]) {
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn func_info_layout() {
        let mut btf = Btf::new();
        let mut ext = BtfExt::new();
        ext.add_func_info(
            &mut btf,
            ".text",
            vec![FuncInfo {
                insn_byte_off: 16,
                type_id: 3,
            }],
        );
        let b = ext.to_bytes();
        let w = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        assert_eq!(w(4), 32);
        assert_eq!((w(8), w(12)), (0, 20));
        assert_eq!((w(16), w(20)), (20, 0));
        assert_eq!((w(24), w(28)), (20, 0));
        assert_eq!(w(32), 8);
        assert_eq!(btf.string_at(w(36)), Some(".text"));
        assert_eq!((w(40), w(44), w(48)), (1, 16, 3));
        assert_eq!(b.len(), 52);
    }
}
