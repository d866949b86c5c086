//! A whole BPF ELF object printed as `llvm-objdump-19 -d` prints it: every non-empty executable
//! section in header order, symbol headers, the address column (slot index), the raw bytes column
//! and the `<sym+off>` annotation of jump targets, chosen among the section's symbols as
//! llvm-objdump 19 chooses (section and file symbols and unnamed ones ignored, a dummy symbol
//! named after the section when nothing sits at offset 0, the last symbol by name at an address).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write;

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, SectionHeader};
use object::{Endianness, Object, ObjectSection, ObjectSymbol};

use super::DisasmError;
use super::text::{Decoded, DisasmOptions, decode_at};
use crate::btf::ext_read::ObjectLineInfo;

/// A symbol of one section as llvm-objdump sees it.
#[derive(Clone, Debug)]
struct SectionSymbol {
    addr: u64,
    name: String,
    st_type: u8,
}

/// One executable section to print.
struct CodeSection<'a> {
    name: String,
    data: &'a [u8],
    /// Sorted by (address, name), llvm-objdump's order.
    symbols: Vec<SectionSymbol>,
}

/// A comment source: `(section name, slot index)` -> lines to print before that instruction.
pub type Annotator<'a> = &'a dyn Fn(&str, usize) -> Option<String>;

/// The full `llvm-objdump-19 -d` output for `elf_bytes`; `path` is the file name to show in the
/// header line (llvm-objdump shows the path as given on its command line).
pub fn disassemble_object(elf_bytes: &[u8], path: &str) -> Result<String, DisasmError> {
    render(elf_bytes, path, DisasmOptions::default(), None)
}

/// As [`disassemble_object`] with other text conventions (e.g. `alu32` to match
/// `llvm-objdump-19 -d --mattr=+alu32`).
pub fn disassemble_object_with(
    elf_bytes: &[u8],
    path: &str,
    opts: DisasmOptions,
) -> Result<String, DisasmError> {
    render(elf_bytes, path, opts, None)
}

/// As [`disassemble_object`], with `; comment` lines inserted before every instruction for which
/// `annot(section, slot_index)` returns text (one `; ` line per line of that text).
pub fn disassemble_object_annotated(
    elf_bytes: &[u8],
    path: &str,
    annot: Annotator<'_>,
) -> Result<String, DisasmError> {
    render(elf_bytes, path, DisasmOptions::default(), Some(annot))
}

/// As [`disassemble_object`], with the object's `.BTF.ext` line_info printed as `; text` lines
/// before the instructions each record starts (what `ciliumc disasm` shows: the policy rule each
/// stretch of code implements). The text is what `llvm-objdump-19 -d -S` prints for the same
/// object: a record is shown unless its line is 0, its text is empty, or the instruction just
/// before has a record of the same file and line (llvm-objdump's rule for repeated lines).
/// Objects without line_info print as [`disassemble_object`] does.
pub fn disassemble_object_with_line_info(
    elf_bytes: &[u8],
    path: &str,
) -> Result<String, DisasmError> {
    let records = crate::btf::ext_read::read_line_info(elf_bytes)
        .map_err(|e| DisasmError::LineInfo(e.to_string()))?;
    // The first record wins where several share a slot (the kernel never loads such objects).
    let mut by_slot: BTreeMap<(&str, usize), &ObjectLineInfo> = BTreeMap::new();
    for r in &records {
        by_slot.entry((r.section.as_str(), r.insn)).or_insert(r);
    }
    // The renderer asks about every instruction in order, so the previous call is the previous
    // instruction.
    let previous: RefCell<Option<(String, usize)>> = RefCell::new(None);
    let annot = |section: &str, slot: usize| -> Option<String> {
        let prev = previous.replace(Some((section.to_owned(), slot)));
        let here = by_slot.get(&(section, slot))?;
        let before = prev
            .filter(|(s, _)| s == section)
            .and_then(|(_, p)| by_slot.get(&(section, p)));
        let repeated = before.is_some_and(|b| b.file == here.file && b.line == here.line);
        (here.line != 0 && !here.text.is_empty() && !repeated).then(|| here.text.clone())
    };
    render(elf_bytes, path, DisasmOptions::default(), Some(&annot))
}

fn render(
    bytes: &[u8],
    path: &str,
    opts: DisasmOptions,
    annot: Option<Annotator<'_>>,
) -> Result<String, DisasmError> {
    let sections = code_sections(bytes)?;
    let mut out = String::new();
    let _ = writeln!(out, "\n{path}:\tfile format elf64-bpf");
    for section in &sections {
        let _ = writeln!(out, "\nDisassembly of section {}:", section.name);
        render_section(&mut out, section, opts, annot);
    }
    Ok(out)
}

fn code_sections(bytes: &[u8]) -> Result<Vec<CodeSection<'_>>, DisasmError> {
    let file =
        ElfFile64::<Endianness>::parse(bytes).map_err(|e| DisasmError::Elf(e.to_string()))?;
    let endian = file.endian();
    if file.elf_header().e_machine(endian) != elf::EM_BPF {
        return Err(DisasmError::NotBpf(file.elf_header().e_machine(endian).0));
    }
    if !file.is_little_endian() {
        return Err(DisasmError::BigEndian);
    }
    let mut sections = Vec::new();
    for section in file.sections() {
        let header = section.elf_section_header();
        let flags = header.sh_flags(endian);
        if !flags.contains(elf::SHF_EXECINSTR) || header.sh_type(endian) == elf::SHT_NOBITS {
            continue;
        }
        let data = section
            .data()
            .map_err(|e| DisasmError::Elf(e.to_string()))?;
        if data.is_empty() {
            continue;
        }
        let name = section
            .name()
            .map_err(|e| DisasmError::Elf(e.to_string()))?
            .to_string();
        let mut symbols: Vec<SectionSymbol> = file
            .symbols()
            .filter(|s| s.section_index() == Some(section.index()))
            .filter(|s| s.elf_symbol().st_type() != elf::STT_SECTION)
            .filter_map(|s| {
                let name = s.name().ok()?;
                (!name.is_empty()).then(|| SectionSymbol {
                    addr: s.address(),
                    name: name.to_string(),
                    st_type: s.elf_symbol().st_type().0,
                })
            })
            .collect();
        symbols.sort_by(|a, b| (a.addr, &a.name).cmp(&(b.addr, &b.name)));
        if symbols.first().is_none_or(|s| s.addr != 0) {
            symbols.insert(
                0,
                SectionSymbol {
                    addr: 0,
                    name: name.clone(),
                    st_type: elf::STT_FUNC.0,
                },
            );
        }
        sections.push(CodeSection {
            name,
            data,
            symbols,
        });
    }
    Ok(sections)
}

/// llvm-objdump's hex dump of a region that only data (`STT_OBJECT`) symbols name: the byte
/// address in hex, up to 8 bytes, then the printable ASCII.
fn dump_data(out: &mut String, bytes: &[u8], start: u64) {
    for (k, chunk) in bytes.chunks(8).enumerate() {
        let _ = write!(out, "{:>8x}:", start + 8 * k as u64);
        for b in chunk {
            let _ = write!(out, " {b:02x}");
        }
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let pad = 3 * (8 - chunk.len()) + 9;
        let _ = writeln!(out, "{:pad$}{ascii}", "");
    }
}

/// The symbol whose header llvm-objdump prints among several at one address: the last by name,
/// passing over data objects when anything else is there.
fn header_symbol(here: &[SectionSymbol]) -> &SectionSymbol {
    here.iter()
        .rev()
        .find(|s| s.st_type != elf::STT_OBJECT.0)
        .unwrap_or(&here[here.len() - 1])
}

/// `<sym>` / `<sym+0x10>` for a jump target (wrapping as llvm-objdump's u64 arithmetic does).
fn target_label(symbols: &[SectionSymbol], target: u64) -> Option<String> {
    let idx = symbols.partition_point(|s| s.addr <= target);
    let sym = symbols.get(idx.checked_sub(1)?)?;
    let disp = target.wrapping_sub(sym.addr);
    Some(if disp == 0 {
        format!("<{}>", sym.name)
    } else {
        format!("<{}+{disp:#x}>", sym.name)
    })
}

fn render_section(
    out: &mut String,
    section: &CodeSection<'_>,
    opts: DisasmOptions,
    annot: Option<Annotator<'_>>,
) {
    let data = section.data;
    let size = data.len() as u64;
    // Symbol groups by address, within the section.
    let mut starts: Vec<(u64, &SectionSymbol, bool)> = Vec::new();
    let mut i = 0;
    while i < section.symbols.len() {
        let addr = section.symbols[i].addr;
        let mut j = i;
        while j < section.symbols.len() && section.symbols[j].addr == addr {
            j += 1;
        }
        if addr < size {
            let here = &section.symbols[i..j];
            let as_data = here.iter().all(|s| s.st_type == elf::STT_OBJECT.0);
            starts.push((addr, header_symbol(here), as_data));
        }
        i = j;
    }
    for (k, &(start, sym, as_data)) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(size, |s| s.0);
        let _ = write!(out, "\n{start:016x} <{}>:\n", sym.name);
        if as_data {
            dump_data(out, &data[start as usize..end as usize], start);
            continue;
        }
        let mut pos = start;
        while pos < end {
            // An instruction may run past the next symbol (which then starts decoding afresh at
            // its own address), but not past the section.
            let rest = &data[pos as usize..];
            // Like llvm-objdump without --disassemble-zeroes: 8 or more zero bytes before the
            // next symbol collapse into `...` (skipping a multiple of 4 bytes).
            let zeros = data[pos as usize..end as usize]
                .iter()
                .take_while(|&&b| b == 0)
                .count();
            if zeros >= 8 {
                out.push_str("\t\t...\n");
                pos += (zeros & !3) as u64;
                continue;
            }
            if let Some(annot) = annot
                && pos % 8 == 0
                && let Some(comment) = annot(&section.name, (pos / 8) as usize)
            {
                for line in comment.lines() {
                    let _ = writeln!(out, "; {line}");
                }
            }
            let (text, len) = match decode_at(rest, opts) {
                Decoded::Insn { text, size, branch } => {
                    let text = match branch {
                        Some(disp) => {
                            let target = pos.wrapping_add(disp as u64);
                            match target_label(&section.symbols, target) {
                                Some(label) => format!("{text} {label}"),
                                None => text,
                            }
                        }
                        None => text,
                    };
                    (text, size)
                }
                Decoded::Unknown { size } => ("<unknown>".to_string(), size),
            };
            let len = len.min(rest.len());
            let hex: Vec<String> = rest[..len].iter().map(|b| format!("{b:02x}")).collect();
            let _ = writeln!(out, "{:>8}:\t{}\t{text}", pos / 8, hex.join(" "));
            pos += len as u64;
        }
    }
}
