//! Structure of objects written by the ELF writer: sections, symbols, relocations, BTF and
//! `.BTF.ext`, as read back by the `object` reader and by aya-obj; input validation; determinism.

use ciliumc_targets::elf::{ElfError, MapDef, MapType, ObjectWriter, TypeDesc};
use ciliumc_targets::isa::RawInsn;
use ciliumc_targets::isa::opcode::*;
use ciliumc_targets::program::{FunctionCode, Reloc, RelocTarget};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

fn mov64_imm(dst: u8, imm: i32) -> RawInsn {
    RawInsn {
        code: BPF_ALU64 | BPF_MOV | BPF_K,
        dst,
        src: 0,
        off: 0,
        imm,
    }
}
fn exit() -> RawInsn {
    RawInsn {
        code: BPF_JMP | BPF_EXIT,
        ..Default::default()
    }
}
fn ld_map(dst: u8) -> [RawInsn; 2] {
    [
        RawInsn {
            code: BPF_LD | BPF_IMM | BPF_DW,
            dst,
            ..Default::default()
        },
        RawInsn::default(),
    ]
}
fn call_local() -> RawInsn {
    RawInsn {
        code: BPF_JMP | BPF_CALL,
        ..Default::default()
    }
}

fn func(name: &str, section: &str, insns: Vec<RawInsn>, relocs: Vec<Reloc>) -> FunctionCode {
    FunctionCode {
        name: name.into(),
        section: section.into(),
        insns,
        relocs,
        line_info: Vec::new(),
    }
}

fn sample_writer() -> ObjectWriter {
    let mut main = vec![];
    main.extend(ld_map(1));
    main.push(call_local());
    main.push(exit());
    let relocs = vec![
        Reloc {
            insn: 0,
            target: RelocTarget::Map("counters".into()),
        },
        Reloc {
            insn: 2,
            target: RelocTarget::Subprogram("helper".into()),
        },
    ];
    let key = TypeDesc::structure(
        "flow_key",
        [
            ("addr", TypeDesc::Bytes(4)),
            ("port", TypeDesc::U16),
            ("proto", TypeDesc::U8),
            ("pad", TypeDesc::U8),
        ],
    );
    ObjectWriter::new()
        .function(func("prog", "classifier", main, relocs))
        .function(func(
            "helper",
            ".text",
            vec![mov64_imm(0, 7), exit()],
            vec![],
        ))
        .map(MapDef::hash("counters", key, TypeDesc::U64, 16))
        .map(MapDef::prog_array("jumps", 4))
        .map(MapDef::ringbuf("events", 4096))
}

#[test]
fn writes_expected_sections_symbols_and_relocations() {
    let bytes = sample_writer().write().unwrap();
    if let Ok(p) = std::env::var("CILIUMC_DUMP_ELF") {
        std::fs::write(p, &bytes).unwrap();
    }
    let file = object::File::parse(&*bytes).unwrap();
    assert_eq!(file.architecture(), object::Architecture::Bpf);
    assert!(file.is_little_endian() && file.is_64());
    let names: Vec<&str> = file.sections().map(|s| s.name().unwrap()).collect();
    for want in [
        "classifier",
        ".text",
        ".maps",
        "license",
        ".BTF",
        ".BTF.ext",
    ] {
        assert!(names.contains(&want), "missing {want} in {names:?}");
    }
    let license = file.section_by_name("license").unwrap();
    assert_eq!(license.data().unwrap(), b"GPL\0");
    let prog = file.symbol_by_name("prog").unwrap();
    assert_eq!(prog.kind(), object::SymbolKind::Text);
    assert!(prog.is_global());
    assert_eq!(prog.size(), 4 * 8);
    let helper = file.symbol_by_name("helper").unwrap();
    assert!(helper.is_local());
    assert_eq!(helper.size(), 16);
    let counters = file.symbol_by_name("counters").unwrap();
    let jumps = file.symbol_by_name("jumps").unwrap();
    assert_eq!(counters.address(), 0);
    assert_eq!(jumps.address(), counters.size());

    let cls = file.section_by_name("classifier").unwrap();
    let relocs: Vec<_> = cls.relocations().collect();
    assert_eq!(relocs.len(), 2);
    let (off0, r0) = &relocs[0];
    assert_eq!(*off0, 0);
    assert_eq!(
        r0.flags(),
        object::RelocationFlags::Elf {
            r_type: object::elf::R_BPF_64_64
        }
    );
    assert_eq!(r0.target(), RelocationTarget::Symbol(counters.index()));
    let (off1, r1) = &relocs[1];
    assert_eq!(*off1, 16);
    assert_eq!(
        r1.flags(),
        object::RelocationFlags::Elf {
            r_type: object::elf::R_BPF_64_32
        }
    );
    assert_eq!(r1.target(), RelocationTarget::Symbol(helper.index()));
    let code = cls.data().unwrap();
    assert_eq!(
        code[1] >> 4,
        0,
        "map loads are left for the loader, as clang does"
    );
    assert_eq!(code[17] >> 4, BPF_PSEUDO_CALL);
    assert_eq!(i32::from_le_bytes(code[20..24].try_into().unwrap()), -1);
}

#[test]
fn aya_obj_parses_maps_and_programs() {
    let bytes = sample_writer().write().unwrap();
    let obj = aya_obj::Object::parse(&bytes).unwrap();
    assert_eq!(obj.license.to_str().unwrap(), "GPL");
    let counters = &obj.maps["counters"];
    assert_eq!(counters.map_type(), MapType::Hash.id());
    assert_eq!(counters.key_size(), 8);
    assert_eq!(counters.value_size(), 8);
    assert_eq!(counters.max_entries(), 16);
    let jumps = &obj.maps["jumps"];
    assert_eq!(
        (jumps.map_type(), jumps.key_size(), jumps.value_size()),
        (3, 4, 4)
    );
    assert_eq!(obj.maps["events"].max_entries(), 4096);
    assert!(obj.programs.contains_key("prog"));
    assert!(obj.btf_ext.is_some());
}

#[test]
fn output_is_deterministic() {
    let a = sample_writer().write().unwrap();
    let b = sample_writer().write().unwrap();
    assert_eq!(a, b);
}

#[test]
fn rejects_bad_relocations_and_names() {
    let bad_index = ObjectWriter::new().function(func(
        "p",
        "classifier",
        vec![mov64_imm(0, 0), exit()],
        vec![Reloc {
            insn: 5,
            target: RelocTarget::Map("m".into()),
        }],
    ));
    assert!(matches!(
        bad_index.write(),
        Err(ElfError::RelocOutOfRange { insn: 5, .. })
    ));

    let not_ld = ObjectWriter::new()
        .function(func(
            "p",
            "classifier",
            vec![mov64_imm(0, 0), exit()],
            vec![Reloc {
                insn: 0,
                target: RelocTarget::Map("m".into()),
            }],
        ))
        .map(MapDef::array("m", TypeDesc::U32, 1));
    assert!(matches!(
        not_ld.write(),
        Err(ElfError::MapRelocNotLdImm64 { .. })
    ));

    let mut insns = ld_map(1).to_vec();
    insns.push(exit());
    let unknown_map = ObjectWriter::new().function(func(
        "p",
        "classifier",
        insns,
        vec![Reloc {
            insn: 0,
            target: RelocTarget::Map("nope".into()),
        }],
    ));
    assert_eq!(
        unknown_map.write(),
        Err(ElfError::UnknownMap {
            function: "p".into(),
            map: "nope".into()
        })
    );

    let not_call = ObjectWriter::new()
        .function(func(
            "p",
            "classifier",
            vec![mov64_imm(0, 0), exit()],
            vec![Reloc {
                insn: 1,
                target: RelocTarget::Subprogram("h".into()),
            }],
        ))
        .function(func("h", ".text", vec![mov64_imm(0, 0), exit()], vec![]));
    assert!(matches!(
        not_call.write(),
        Err(ElfError::CallRelocNotCall { insn: 1, .. })
    ));

    let callee_not_text = ObjectWriter::new()
        .function(func(
            "p",
            "classifier",
            vec![call_local(), exit()],
            vec![Reloc {
                insn: 0,
                target: RelocTarget::Subprogram("q".into()),
            }],
        ))
        .function(func(
            "q",
            "classifier",
            vec![mov64_imm(0, 0), exit()],
            vec![],
        ));
    assert!(matches!(
        callee_not_text.write(),
        Err(ElfError::UnknownSubprogram { .. })
    ));

    let dup = ObjectWriter::new()
        .function(func(
            "x",
            "classifier",
            vec![mov64_imm(0, 0), exit()],
            vec![],
        ))
        .map(MapDef::array("x", TypeDesc::U32, 1));
    assert_eq!(dup.write(), Err(ElfError::DuplicateSymbol("x".into())));

    let bad_ringbuf = ObjectWriter::new().map(MapDef::ringbuf("r", 1000));
    assert!(matches!(
        bad_ringbuf.write(),
        Err(ElfError::InvalidMap { .. })
    ));
}

#[test]
fn rejects_sections_some_loader_refuses() {
    for section in ["classifier/ingress", "tc", "tcx/ingress", "socket"] {
        let w =
            ObjectWriter::new().function(func("p", section, vec![mov64_imm(0, 0), exit()], vec![]));
        assert!(
            matches!(w.write(), Err(ElfError::UnportableSection { .. })),
            "{section}"
        );
    }
    for section in ["classifier", "xdp"] {
        let w =
            ObjectWriter::new().function(func("p", section, vec![mov64_imm(0, 0), exit()], vec![]));
        assert!(w.write().is_ok(), "{section}");
    }
}
