//! An independent ELF reader and linker for BPF objects (neither libbpf nor aya-obj), so that the
//! raw loader cross-checks both.
//!
//! In: ELF bytes. Out: [`LinkedObject`]: map definitions read from `.BTF` `.maps`, and per entry
//! program its instructions with every `.text` subprogram it calls (transitively) appended and
//! call offsets fixed, the slots that load a map (by name), and func/line info remapped to the
//! linked instruction indices. Map fds are filled in by the loader.

use std::collections::BTreeMap;

use ciliumc_targets::btf::read::{MapDefinition, ParsedBtf};
use ciliumc_targets::isa::RawInsn;
use ciliumc_targets::isa::opcode::{BPF_CALL, BPF_DW, BPF_IMM, BPF_JMP, BPF_LD, BPF_PSEUDO_CALL};
use object::{
    Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SectionKind, SymbolKind,
};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("ELF: {0}")]
    Elf(String),
    #[error(transparent)]
    Btf(#[from] ciliumc_targets::btf::read::BtfReadError),
    #[error("{0}")]
    Link(String),
}

/// One entry program, linked.
#[derive(Clone, Debug)]
pub struct LinkedProgram {
    pub name: String,
    pub section: String,
    pub insns: Vec<RawInsn>,
    /// `(slot, map name)` for every `ld_imm64` of a map.
    pub map_loads: Vec<(usize, String)>,
    /// `(slot, BTF type id)`, one per function in the linked program, in slot order.
    pub func_info: Vec<(u32, u32)>,
    /// `(slot, file name offset, line offset, line << 10 | column)`.
    pub line_info: Vec<[u32; 4]>,
}

#[derive(Clone, Debug)]
pub struct LinkedObject {
    pub license: String,
    pub btf: Option<Vec<u8>>,
    pub maps: Vec<MapDefinition>,
    pub programs: Vec<LinkedProgram>,
}

#[derive(Clone, Debug)]
struct Func {
    name: String,
    section: String,
    offset: u64,
    insns: Vec<RawInsn>,
    /// Relocations inside the function: slot -> (symbol section name, symbol name, symbol offset).
    relocs: BTreeMap<usize, (String, String, u64)>,
}

/// `.BTF.ext` records: section name -> list of (byte offset, rest of the record).
type ExtRecords = BTreeMap<String, Vec<(u32, Vec<u32>)>>;

fn parse_ext(data: &[u8], btf: &ParsedBtf) -> Result<(ExtRecords, ExtRecords), LinkError> {
    let bad = |m: &str| LinkError::Elf(format!(".BTF.ext: {m}"));
    let word = |at: usize| -> Result<u32, LinkError> {
        let b = data.get(at..at + 4).ok_or_else(|| bad("truncated"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let hdr_len = word(4)? as usize;
    let mut out = Vec::new();
    for (off_at, len_at) in [(8, 12), (16, 20)] {
        let (start, len) = (hdr_len + word(off_at)? as usize, word(len_at)? as usize);
        let mut recs = ExtRecords::new();
        if len > 0 {
            let rec_size = word(start)? as usize;
            if rec_size < 8 || !rec_size.is_multiple_of(4) {
                return Err(bad("bad record size"));
            }
            let mut at = start + 4;
            while at < start + len {
                let sec = btf
                    .string(word(at)?)
                    .ok_or_else(|| bad("section name"))?
                    .to_owned();
                let n = word(at + 4)? as usize;
                at += 8;
                let list = recs.entry(sec).or_default();
                for _ in 0..n {
                    let words = (0..rec_size / 4)
                        .map(|i| word(at + 4 * i))
                        .collect::<Result<Vec<_>, _>>()?;
                    list.push((words[0], words[1..].to_vec()));
                    at += rec_size;
                }
            }
        }
        out.push(recs);
    }
    let line = out.pop().unwrap_or_default();
    let func = out.pop().unwrap_or_default();
    Ok((func, line))
}

pub fn link(elf: &[u8]) -> Result<LinkedObject, LinkError> {
    let file = object::File::parse(elf).map_err(|e| LinkError::Elf(e.to_string()))?;
    let section_data = |name: &str| {
        file.section_by_name(name)
            .and_then(|s| s.data().ok())
            .map(<[u8]>::to_vec)
    };
    let license = section_data("license")
        .map(|d| {
            String::from_utf8_lossy(d.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
        })
        .unwrap_or_default();
    let btf_bytes = section_data(".BTF");
    let btf = btf_bytes.as_deref().map(ParsedBtf::parse).transpose()?;
    let maps = btf
        .as_ref()
        .map(ParsedBtf::map_definitions)
        .transpose()?
        .unwrap_or_default();
    let (func_ext, line_ext) = match (section_data(".BTF.ext"), &btf) {
        (Some(d), Some(b)) => parse_ext(&d, b)?,
        _ => Default::default(),
    };

    let mut funcs: Vec<Func> = Vec::new();
    for section in file.sections() {
        // The object reader classifies SHF_ALLOC|SHF_EXECINSTR sections as text.
        let executable = section.kind() == SectionKind::Text;
        let data = section.data().map_err(|e| LinkError::Elf(e.to_string()))?;
        if !executable || data.is_empty() {
            continue;
        }
        let sec_name = section
            .name()
            .map_err(|e| LinkError::Elf(e.to_string()))?
            .to_owned();
        let mut relocs = BTreeMap::new();
        for (offset, r) in section.relocations() {
            let RelocationTarget::Symbol(idx) = r.target() else {
                continue;
            };
            let sym = file
                .symbol_by_index(idx)
                .map_err(|e| LinkError::Elf(e.to_string()))?;
            let target_sec = sym
                .section_index()
                .and_then(|i| file.section_by_index(i).ok())
                .and_then(|s| s.name().ok().map(str::to_owned))
                .unwrap_or_default();
            relocs.insert(
                offset,
                (
                    target_sec,
                    sym.name().unwrap_or_default().to_owned(),
                    sym.address(),
                ),
            );
        }
        for sym in file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.section_index() == Some(section.index()))
        {
            let (start, size) = (sym.address(), sym.size());
            let bytes = data
                .get(start as usize..(start + size) as usize)
                .ok_or_else(|| {
                    LinkError::Elf(format!(
                        "symbol {} outside its section",
                        sym.name().unwrap_or("?")
                    ))
                })?;
            let insns = bytes
                .chunks_exact(8)
                .map(|c| RawInsn::from_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            let local = relocs
                .range(start..start + size)
                .map(|(off, t)| (((off - start) / 8) as usize, t.clone()))
                .collect();
            funcs.push(Func {
                name: sym.name().unwrap_or_default().to_owned(),
                section: sec_name.clone(),
                offset: start,
                insns,
                relocs: local,
            });
        }
    }

    let mut programs = Vec::new();
    for main in funcs.iter().filter(|f| f.section != ".text") {
        programs.push(link_program(main, &funcs, &func_ext, &line_ext)?);
    }
    programs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(LinkedObject {
        license,
        btf: btf_bytes,
        maps,
        programs,
    })
}

fn link_program(
    main: &Func,
    funcs: &[Func],
    func_ext: &ExtRecords,
    line_ext: &ExtRecords,
) -> Result<LinkedProgram, LinkError> {
    let mut out = LinkedProgram {
        name: main.name.clone(),
        section: main.section.clone(),
        insns: Vec::new(),
        map_loads: Vec::new(),
        func_info: Vec::new(),
        line_info: Vec::new(),
    };
    // (function, slot where it starts in the linked program)
    let mut placed: Vec<(&Func, usize)> = vec![(main, 0)];
    let mut next = 0;
    out.insns.extend(&main.insns);
    while next < placed.len() {
        let (f, base) = placed[next];
        next += 1;
        for (slot, insn) in f.insns.iter().enumerate() {
            let at = base + slot;
            let reloc = f.relocs.get(&slot);
            if insn.code == BPF_LD | BPF_IMM | BPF_DW {
                if let Some((sec, name, _)) = reloc {
                    if sec != ".maps" {
                        return Err(LinkError::Link(format!(
                            "{}: ld_imm64 at {slot} against `{name}` in `{sec}`",
                            f.name
                        )));
                    }
                    out.map_loads.push((at, name.clone()));
                }
            } else if insn.code == BPF_JMP | BPF_CALL && insn.src == BPF_PSEUDO_CALL {
                // Target section offset as libbpf computes it.
                let target = match reloc {
                    Some((sec, _, sym_off)) if sec == ".text" => {
                        *sym_off as i64 + (i64::from(insn.imm) + 1) * 8
                    }
                    Some((sec, name, _)) => {
                        return Err(LinkError::Link(format!(
                            "{}: call against `{name}` in `{sec}`",
                            f.name
                        )));
                    }
                    None if f.section == ".text" => {
                        (f.offset as i64) + (slot as i64 + 1 + i64::from(insn.imm)) * 8
                    }
                    None => {
                        return Err(LinkError::Link(format!(
                            "{}: call at {slot} without relocation",
                            f.name
                        )));
                    }
                };
                let callee = funcs
                    .iter()
                    .find(|c| c.section == ".text" && c.offset as i64 == target)
                    .ok_or_else(|| {
                        LinkError::Link(format!(
                            "{}: call at {slot} to no function (offset {target})",
                            f.name
                        ))
                    })?;
                let callee_base = match placed.iter().find(|(p, _)| std::ptr::eq(*p, callee)) {
                    Some((_, b)) => *b,
                    None => {
                        let b = out.insns.len();
                        out.insns.extend(&callee.insns);
                        placed.push((callee, b));
                        b
                    }
                };
                out.insns[at].imm = (callee_base as i64 - at as i64 - 1) as i32;
            }
        }
    }
    for (f, base) in &placed {
        let range = f.offset..f.offset + 8 * f.insns.len() as u64;
        let slot_of = |off: u32| base + ((u64::from(off) - f.offset) / 8) as usize;
        if let Some(recs) = func_ext.get(&f.section) {
            for (off, rest) in recs.iter().filter(|(o, _)| u64::from(*o) == f.offset) {
                out.func_info
                    .push((slot_of(*off) as u32, rest.first().copied().unwrap_or(0)));
            }
        }
        if let Some(recs) = line_ext.get(&f.section) {
            for (off, rest) in recs.iter().filter(|(o, _)| range.contains(&u64::from(*o))) {
                if let [file, line, col] = rest[..] {
                    out.line_info.push([slot_of(*off) as u32, file, line, col]);
                }
            }
        }
    }
    out.func_info.sort();
    out.line_info.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::*;
    use ciliumc_targets::elf::{MapDef, ObjectWriter, TypeDesc};

    #[test]
    fn appends_called_subprograms_once_and_fixes_calls() {
        let main = Asm::new()
            .ld_map(R1, "m")
            .call("twice")
            .call("add")
            .push(exit())
            .finish("prog", "classifier");
        let twice = Asm::new()
            .push(mov64_reg(R2, R1))
            .call("add")
            .push(exit())
            .finish("twice", ".text");
        let add = Asm::new()
            .push(mov64_reg(R0, R1))
            .push(exit())
            .finish("add", ".text");
        let unused = Asm::new()
            .push(mov64_imm(R0, 0))
            .push(exit())
            .finish("unused", ".text");
        let elf = ObjectWriter::new()
            .function(main)
            .function(twice)
            .function(add)
            .function(unused)
            .map(MapDef::array("m", TypeDesc::U64, 1))
            .write()
            .unwrap();
        let linked = link(&elf).unwrap();
        assert_eq!(linked.license, "GPL");
        assert_eq!(linked.maps.len(), 1);
        assert_eq!((linked.maps[0].key_size, linked.maps[0].value_size), (4, 8));
        assert_eq!(linked.programs.len(), 1);
        let p = &linked.programs[0];
        // main (5 slots), then twice (3) at 5, then add (2) at 8; `unused` is not linked.
        assert_eq!(p.insns.len(), 10);
        assert_eq!(p.map_loads, vec![(0, "m".to_owned())]);
        let target = |slot: usize| slot as i64 + 1 + i64::from(p.insns[slot].imm);
        assert_eq!(target(2), 5, "main calls twice");
        assert_eq!(target(3), 8, "main calls add");
        assert_eq!(target(6), 8, "twice calls add");
        let slots: Vec<u32> = p.func_info.iter().map(|(s, _)| *s).collect();
        assert_eq!(slots, vec![0, 5, 8]);
        assert_eq!(p.line_info.len(), 3);
    }
}
