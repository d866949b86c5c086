//! Reads a BPF ELF object into what the VM executes: every executable section decoded into
//! operations (map loads and bpf-to-bpf calls already resolved through the relocations, as libbpf
//! resolves them), the entry programs by symbol name, and the map definitions from `.BTF`.
//!
//! In: object bytes (as `ciliumc compile` writes them, or any libbpf-style object with BTF-defined
//! maps). Out: [`Code`] and [`MapSpec`]s, or a [`VmError`] naming what could not be resolved.

use std::collections::{BTreeMap, HashMap, HashSet};

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind, SymbolKind};

use super::VmError;
use crate::btf::read::ParsedBtf;
use crate::elf::MapType;
use crate::isa::{Insn, PseudoKind, RawInsn, Reg, decode_one};

/// One executable operation at a slot.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Insn(Insn),
    /// `ld_imm64 dst, map` after relocation: the map's index in the VM.
    LoadMap {
        dst: Reg,
        map: usize,
    },
    /// A bpf-to-bpf call to `slot` of `section`.
    Call {
        section: usize,
        slot: usize,
    },
    /// The second slot of an `ld_imm64`: never executed.
    Tail,
}

pub(crate) struct Section {
    pub name: String,
    pub ops: Vec<Op>,
}

/// The executable part of an object.
pub(crate) struct Code {
    pub sections: Vec<Section>,
    /// Entry program name → (section, slot).
    pub entries: BTreeMap<String, (usize, usize)>,
}

/// A map as the object declares it.
#[derive(Clone, Debug)]
pub(crate) struct MapSpec {
    pub name: String,
    pub kind: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

fn elf_err(e: impl std::fmt::Display) -> VmError {
    VmError::Object(e.to_string())
}

/// Map definitions from `.BTF`'s `.maps` DATASEC.
fn map_specs(file: &object::File<'_>) -> Result<Vec<MapSpec>, VmError> {
    let Some(btf) = file.section_by_name(".BTF") else {
        return Ok(Vec::new());
    };
    let parsed = ParsedBtf::parse(btf.data().map_err(elf_err)?).map_err(elf_err)?;
    parsed
        .map_definitions()
        .map_err(elf_err)?
        .into_iter()
        .map(|d| {
            let kind = MapType::from_id(d.map_type).ok_or_else(|| VmError::BadMap {
                map: d.name.clone(),
                reason: format!("map type {} is not modelled by the interpreter", d.map_type),
            })?;
            Ok(MapSpec {
                name: d.name,
                kind,
                key_size: d.key_size,
                value_size: d.value_size,
                max_entries: d.max_entries,
            })
        })
        .collect()
}

fn decode_section(name: &str, data: &[u8]) -> Result<Vec<Op>, VmError> {
    let raw = RawInsn::slots_from_bytes(data)
        .ok_or_else(|| VmError::Object(format!("section {name}: size is not a multiple of 8")))?;
    let mut ops = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let (insn, n) = decode_one(&raw, i).map_err(|source| VmError::Decode {
            section: name.to_string(),
            source,
        })?;
        ops.push(Op::Insn(insn));
        if n == 2 {
            ops.push(Op::Tail);
        }
        i += n;
    }
    Ok(ops)
}

/// Reads `bytes` into code and map specs.
pub(crate) fn read(bytes: &[u8]) -> Result<(Code, Vec<MapSpec>), VmError> {
    let file = object::File::parse(bytes).map_err(elf_err)?;
    if file.architecture() != object::Architecture::Bpf {
        return Err(VmError::Object("not a BPF object".into()));
    }
    if !file.is_little_endian() {
        return Err(VmError::Object(
            "big-endian BPF objects are not supported".into(),
        ));
    }
    let specs = map_specs(&file)?;
    let map_index: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), i))
        .collect();

    let mut sections = Vec::new();
    let mut section_of = HashMap::new();
    for s in file.sections() {
        if s.kind() != SectionKind::Text {
            continue;
        }
        let name = s.name().map_err(elf_err)?.to_string();
        let data = s.data().map_err(elf_err)?;
        if data.is_empty() {
            continue;
        }
        section_of.insert(s.index(), sections.len());
        sections.push(Section {
            ops: decode_section(&name, data)?,
            name,
        });
    }

    // Relocations first: a relocated call's `imm` is relative to its symbol, not to the caller.
    let mut relocated = vec![HashSet::<usize>::new(); sections.len()];
    for s in file.sections() {
        let Some(&si) = section_of.get(&s.index()) else {
            continue;
        };
        for (offset, reloc) in s.relocations() {
            let slot = (offset / 8) as usize;
            let RelocationTarget::Symbol(sym_index) = reloc.target() else {
                return Err(VmError::Object(format!(
                    "section {}: relocation at slot {slot} has no symbol",
                    sections[si].name
                )));
            };
            let sym = file.symbol_by_index(sym_index).map_err(elf_err)?;
            let sym_name = sym.name().map_err(elf_err)?;
            let bad = |why: String| {
                VmError::Object(format!(
                    "section {}: relocation at slot {slot} ({sym_name}): {why}",
                    sections[si].name
                ))
            };
            match sections[si].ops.get(slot).copied() {
                Some(Op::Insn(Insn::LdPseudo {
                    dst,
                    kind: PseudoKind::MapFd,
                    ..
                }))
                | Some(Op::Insn(Insn::LdImm64 { dst, .. })) => {
                    let map = *map_index
                        .get(sym_name)
                        .ok_or_else(|| bad("not a map declared in .maps".into()))?;
                    sections[si].ops[slot] = Op::LoadMap { dst, map };
                }
                Some(Op::Insn(Insn::CallLocal { imm })) => {
                    let target_section = sym
                        .section_index()
                        .and_then(|i| section_of.get(&i))
                        .copied()
                        .ok_or_else(|| bad("call into a non-code section".into()))?;
                    let target = (sym.address() / 8) as i64 + i64::from(imm) + 1;
                    let target = usize::try_from(target)
                        .map_err(|_| bad(format!("call target {target} before the section")))?;
                    sections[si].ops[slot] = Op::Call {
                        section: target_section,
                        slot: target,
                    };
                }
                other => return Err(bad(format!("unsupported relocated instruction {other:?}"))),
            }
            relocated[si].insert(slot);
        }
    }

    // Unrelocated calls are relative to the caller, within its section.
    for (si, section) in sections.iter_mut().enumerate() {
        for slot in 0..section.ops.len() {
            if relocated[si].contains(&slot) {
                continue;
            }
            match section.ops[slot] {
                Op::Insn(Insn::CallLocal { imm }) => {
                    let target = slot as i64 + i64::from(imm) + 1;
                    let target = usize::try_from(target).map_err(|_| {
                        VmError::Object(format!(
                            "section {}: call at slot {slot} leaves the section",
                            section.name
                        ))
                    })?;
                    section.ops[slot] = Op::Call {
                        section: si,
                        slot: target,
                    };
                }
                Op::Insn(Insn::LdPseudo { kind, .. }) => {
                    return Err(VmError::Object(format!(
                        "section {}: ld_imm64 at slot {slot} with pseudo source {kind:?} has no relocation",
                        section.name
                    )));
                }
                _ => {}
            }
        }
    }

    let mut entries = BTreeMap::new();
    for sym in file.symbols() {
        if sym.kind() != SymbolKind::Text {
            continue;
        }
        let Some(&si) = sym.section_index().and_then(|i| section_of.get(&i)) else {
            continue;
        };
        if sections[si].name == crate::elf::TEXT_SECTION {
            continue;
        }
        let name = sym.name().map_err(elf_err)?;
        if name.is_empty() {
            continue;
        }
        entries.insert(name.to_string(), (si, (sym.address() / 8) as usize));
    }
    Ok((Code { sections, entries }, specs))
}
