//! Golden test: objects written with `object::write` from generated instruction streams,
//! including instructions clang never emits and arbitrary (often invalid) raw slots, disassembled
//! by us and by `llvm-objdump-19 -d` (with and without `--mattr=+alu32`).

mod isa_common;

use ciliumc_targets::disasm::{DisasmOptions, disassemble_object, disassemble_object_with};
use ciliumc_targets::isa::{Insn, RawInsn, encode};
use isa_common::tools::{first_differences, objdump, require_tool, scratch_dir};
use object::write::{Object, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

/// One executable section: its name, bytes, and (name, offset, kind) symbols.
struct Sec {
    name: String,
    bytes: Vec<u8>,
    symbols: Vec<(String, u64, SymbolKind)>,
}

fn build_object(sections: &[Sec]) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    for s in sections {
        let id = obj.add_section(vec![], s.name.as_bytes().to_vec(), SectionKind::Text);
        obj.append_section_data(id, &s.bytes, 8);
        for (name, value, kind) in &s.symbols {
            obj.add_symbol(Symbol {
                name: name.as_bytes().to_vec(),
                value: *value,
                size: 0,
                kind: *kind,
                scope: if *kind == SymbolKind::Label {
                    SymbolScope::Compilation
                } else {
                    SymbolScope::Linkage
                },
                weak: false,
                section: SymbolSection::Section(id),
                flags: SymbolFlags::None,
            });
        }
    }
    let lic = obj.add_section(vec![], b"license".to_vec(), SectionKind::Data);
    obj.append_section_data(lic, b"GPL\0", 1);
    obj.write().expect("write object")
}

fn bytes_of(slots: &[RawInsn]) -> Vec<u8> {
    slots.iter().flat_map(|s| s.to_bytes()).collect()
}

/// Compares our output with llvm-objdump's for `sections`; returns a failure description.
fn compare(tag: &str, sections: &[Sec]) -> Option<String> {
    let llvm = require_tool("llvm-objdump-19")?;
    let dir = scratch_dir(tag);
    let path = dir.join(format!("{tag}.o"));
    let bytes = build_object(sections);
    std::fs::write(&path, &bytes).unwrap();
    let shown = path.to_string_lossy().to_string();
    let mut failures = String::new();
    for alu32 in [false, true] {
        let (ours, theirs) = if alu32 {
            let opts = DisasmOptions {
                alu32: true,
                lossless: false,
            };
            (
                disassemble_object_with(&bytes, &shown, opts).unwrap(),
                objdump(&llvm, &path, &["--mattr=+alu32"]),
            )
        } else {
            (
                disassemble_object(&bytes, &shown).unwrap(),
                objdump(&llvm, &path, &[]),
            )
        };
        if ours != theirs {
            failures.push_str(&format!(
                "{tag} alu32={alu32}:\n{}",
                first_differences(&ours, &theirs, 8)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    (!failures.is_empty()).then_some(failures)
}

fn generated_programs(count: usize, seed_tag: u8) -> Vec<Vec<Insn>> {
    let mut runner = TestRunner::deterministic();
    // Advance differently per caller so tests do not all see the same programs.
    for _ in 0..seed_tag {
        let _ = isa_common::strategy::insn().new_tree(&mut runner);
    }
    (0..count)
        .map(|_| {
            isa_common::strategy::program()
                .new_tree(&mut runner)
                .unwrap()
                .current()
        })
        .collect()
}

#[test]
fn every_instruction_kind_matches_llvm_objdump() {
    if require_tool("llvm-objdump-19").is_none() {
        return;
    }
    let programs = generated_programs(300, 1);
    // Six sections of 50 programs; each program gets a function symbol, and some get a local label
    // in the middle, so jump annotations pick among several symbols.
    let mut sections = Vec::new();
    for (k, chunk) in programs.chunks(50).enumerate() {
        let mut bytes = Vec::new();
        let mut symbols = Vec::new();
        for (j, p) in chunk.iter().enumerate() {
            let start = bytes.len() as u64;
            // The first program of each section has no symbol at offset 0 on odd sections, so the
            // section-named dummy symbol appears.
            if !(j == 0 && k % 2 == 1) {
                symbols.push((format!("f{k}_{j}"), start, SymbolKind::Text));
            }
            bytes.extend(bytes_of(&encode(p)));
            if j % 3 == 0 && p.len() > 2 {
                let mid = start + 8 * p[0].slots() as u64;
                symbols.push((format!("L{k}_{j}"), mid, SymbolKind::Label));
            }
        }
        let name = if k == 0 {
            ".text".to_string()
        } else {
            format!("classifier/s{k}")
        };
        sections.push(Sec {
            name,
            bytes,
            symbols,
        });
    }
    if let Some(f) = compare("every_kind", &sections) {
        panic!("{f}");
    }
}

#[test]
fn arbitrary_raw_slots_match_llvm_objdump() {
    if require_tool("llvm-objdump-19").is_none() {
        return;
    }
    // Raw slots biased to real opcodes and small field values, to probe LLVM's leniency and
    // strictness per opcode (ignored fields, r11, unknown encodings, cut-off ld_imm64).
    // CILIUMC_DISASM_FUZZ_SLOTS / _SEED widen the search when exploring LLVM's behaviour.
    let count: usize = std::env::var("CILIUMC_DISASM_FUZZ_SLOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let seed: u8 = std::env::var("CILIUMC_DISASM_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut runner = TestRunner::new_with_rng(
        proptest::test_runner::Config::default(),
        proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &[seed; 32],
        ),
    );
    let field = proptest::prop_oneof![0u8..=2, 0u8..=15];
    let slot = (
        any_code(),
        field.clone(),
        field,
        small_or_any_i16(),
        small_or_any_i32(),
    );
    let mut bytes = Vec::new();
    for _ in 0..count {
        let (code, dst, src, off, imm) = slot.new_tree(&mut runner).unwrap().current();
        bytes.extend(
            RawInsn {
                code,
                dst,
                src,
                off,
                imm,
            }
            .to_bytes(),
        );
    }
    // A trailing partial slot: llvm prints it byte by byte.
    bytes.extend([0x18, 0x01, 0x00]);
    let sections = [Sec {
        name: "raw".into(),
        bytes,
        symbols: vec![("raw_start".into(), 0, SymbolKind::Text)],
    }];
    if let Some(f) = compare("raw_slots", &sections) {
        panic!("{f}");
    }
}

fn any_code() -> impl Strategy<Value = u8> {
    use proptest::prelude::*;
    prop_oneof![
        3 => proptest::sample::select(vec![
            0x04u8, 0x07, 0x0c, 0x0f, 0x34, 0x37, 0x3c, 0x3f, 0x84, 0x87, 0x94, 0x97, 0xb4, 0xb7, 0xbc,
            0xbf, 0xd4, 0xd7, 0xdc, 0xdf, 0x05, 0x06, 0x15, 0x16, 0x1d, 0x1e, 0x85, 0x8d, 0x95, 0x96,
            0xe5, 0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91, 0x99, 0x62, 0x72, 0x63, 0x7b, 0xc3, 0xdb,
            0xcb, 0x18, 0x20, 0x28, 0x30, 0x38, 0x40, 0x48, 0x50, 0x00,
        ]),
        1 => any::<u8>(),
    ]
}

fn small_or_any_i16() -> impl Strategy<Value = i16> {
    use proptest::prelude::*;
    prop_oneof![
        proptest::sample::select(vec![0i16, 1, 8, 16, 32, -1]),
        any::<i16>()
    ]
}

fn small_or_any_i32() -> impl Strategy<Value = i32> {
    use proptest::prelude::*;
    prop_oneof![
        proptest::sample::select(vec![
            0i32, 1, 16, 32, 64, 0x40, 0x41, 0x51, 0xa1, 0xe1, 0xf1, 0xe0, -1
        ]),
        any::<i32>()
    ]
}

#[test]
fn symbol_layouts_match_llvm_objdump() {
    if require_tool("llvm-objdump-19").is_none() {
        return;
    }
    // Random symbol tables over generated code: several symbols at one address with different
    // types and names, data (STT_OBJECT) symbols that llvm hex-dumps, unaligned symbols, symbols
    // inside an ld_imm64, symbols past the end, unnamed symbols.
    use proptest::prelude::*;
    let names = proptest::sample::select(vec!["a", "b", "zz", "f", "main", "L1", "", "c.d"]);
    let kind =
        proptest::sample::select(vec![SymbolKind::Text, SymbolKind::Data, SymbolKind::Label]);
    let sym = (names, 0u64..60, kind, any::<bool>());
    let layout = (
        isa_common::strategy::program(),
        prop::collection::vec(sym, 0..6),
    );
    let mut runner = TestRunner::deterministic();
    let mut sections = Vec::new();
    for k in 0..40 {
        let (p, syms) = layout.new_tree(&mut runner).unwrap().current();
        let bytes = bytes_of(&encode(&p));
        let len = bytes.len() as u64;
        let symbols = syms
            .into_iter()
            .map(|(n, slot, kind, unaligned)| {
                let at = (slot * 8 + if unaligned { 4 } else { 0 }).min(len + 8);
                (n.to_string(), at, kind)
            })
            .collect();
        sections.push(Sec {
            name: format!("sec{k}"),
            bytes,
            symbols,
        });
    }
    if let Some(f) = compare("symbol_layouts", &sections) {
        panic!("{f}");
    }
}

#[test]
fn instruction_text_equals_objdump_third_column() {
    let Some(llvm) = require_tool("llvm-objdump-19") else {
        return;
    };
    for (n, p) in generated_programs(40, 7).into_iter().enumerate() {
        let slots = encode(&p);
        let sections = [Sec {
            name: "t".into(),
            bytes: bytes_of(&slots),
            symbols: vec![],
        }];
        let dir = scratch_dir(&format!("third{n}"));
        let path = dir.join("t.o");
        std::fs::write(&path, build_object(&sections)).unwrap();
        let listing = objdump(&llvm, &path, &[]);
        let _ = std::fs::remove_dir_all(&dir);
        let theirs: Vec<String> = listing
            .lines()
            .filter_map(|l| l.splitn(3, '\t').nth(2))
            .map(|t| match t.rfind(" <") {
                Some(i) if t.ends_with('>') && !t.starts_with('<') => t[..i].to_string(),
                _ => t.to_string(),
            })
            .collect();
        assert_eq!(
            ciliumc_targets::disasm::disassemble_insns(&slots),
            theirs,
            "program {n}"
        );
    }
}

#[test]
fn object_without_code_matches_llvm_objdump() {
    if require_tool("llvm-objdump-19").is_none() {
        return;
    }
    let empty = [Sec {
        name: "empty".into(),
        bytes: vec![],
        symbols: vec![],
    }];
    if let Some(f) = compare("no_code", &empty) {
        panic!("{f}");
    }
}

#[test]
fn cut_off_and_malformed_ld_imm64_match_llvm_objdump() {
    if require_tool("llvm-objdump-19").is_none() {
        return;
    }
    let slot = |code: u8, dst: u8, src: u8, off: i16, imm: i32| {
        RawInsn {
            code,
            dst,
            src,
            off,
            imm,
        }
        .to_bytes()
        .to_vec()
    };
    let mov = slot(0xb7, 1, 0, 0, 5);
    let ld = slot(0x18, 1, 0, 0, 5);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("cut_after_first_slot", [mov.clone(), ld.clone()].concat()),
        ("cut_inside_second_slot", [ld.clone(), vec![0; 7]].concat()),
        ("cut_short", [mov.clone(), vec![0x95, 0, 0]].concat()),
        (
            "ld_with_off",
            [slot(0x18, 1, 0, 3, 5), slot(0, 0, 0, 0, 7), mov.clone()].concat(),
        ),
        (
            "ld_bad_dst",
            [slot(0x18, 12, 0, 0, 5), slot(0, 0, 0, 0, 7)].concat(),
        ),
        (
            "ld_tail_garbage",
            [ld.clone(), slot(0x95, 3, 4, 5, 6), mov.clone()].concat(),
        ),
        ("zeros", [mov.clone(), vec![0; 20], mov.clone()].concat()),
    ];
    let sections: Vec<Sec> = cases
        .into_iter()
        .map(|(name, bytes)| Sec {
            name: name.into(),
            bytes,
            symbols: vec![(format!("{name}_sym"), 0, SymbolKind::Text)],
        })
        .collect();
    if let Some(f) = compare("cut_off", &sections) {
        panic!("{f}");
    }
}
