//! Properties of the ELF writer over random maps and functions: aya-obj reads back every map
//! with the sizes, type, flags and entries we wrote (sizes computed by aya from our BTF), every
//! program with its exact size; output is deterministic. Also: llvm-objdump-19 reads the objects.

use ciliumc_targets::btf::read::ParsedBtf;
use ciliumc_targets::elf::{MapDef, MapType, ObjectWriter, TypeDesc};
use ciliumc_targets::isa::RawInsn;
use ciliumc_targets::isa::opcode::*;
use ciliumc_targets::program::{FunctionCode, Reloc, RelocTarget};
use proptest::prelude::*;

fn leaf() -> impl Strategy<Value = TypeDesc> {
    prop_oneof![
        Just(TypeDesc::U8),
        Just(TypeDesc::U16),
        Just(TypeDesc::U32),
        Just(TypeDesc::U64),
        Just(TypeDesc::I32),
        Just(TypeDesc::I64),
        (1u32..20).prop_map(TypeDesc::Bytes),
    ]
}

fn type_desc() -> impl Strategy<Value = TypeDesc> {
    leaf().prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            (inner.clone(), 1u32..4).prop_map(|(e, len)| TypeDesc::Array {
                elem: Box::new(e),
                len
            }),
            (0u32..1000, prop::collection::vec(inner, 1..4)).prop_map(|(id, fields)| {
                TypeDesc::structure(
                    &format!("s{id}"),
                    fields
                        .into_iter()
                        .enumerate()
                        .map(|(i, t)| (["a", "b", "c", "d"][i], t))
                        .collect::<Vec<_>>(),
                )
            }),
        ]
    })
}

fn map_def(i: usize) -> impl Strategy<Value = MapDef> {
    let name = format!("map{i}");
    prop_oneof![
        (type_desc(), type_desc(), 1u32..100).prop_map({
            let name = name.clone();
            move |(k, v, n)| MapDef::hash(&name, k, v, n)
        }),
        (type_desc(), 1u32..100).prop_map({
            let name = name.clone();
            move |(v, n)| MapDef::array(&name, v, n)
        }),
        (
            type_desc(),
            type_desc(),
            prop_oneof![
                Just(MapType::PercpuHash),
                Just(MapType::LruHash),
                Just(MapType::LruPercpuHash)
            ],
            1u32..100
        )
            .prop_map({
                let name = name.clone();
                move |(k, v, t, n)| MapDef::typed(&name, t, k, v, n)
            }),
        (1u32..64).prop_map({
            let name = name.clone();
            move |n| MapDef::prog_array(&name, n)
        }),
        (12u32..16).prop_map(move |shift| MapDef::ringbuf(&name, 1 << shift)),
    ]
}

fn mov(dst: u8, imm: i32) -> RawInsn {
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

/// A program of `pad` movs, then a map load per map, a call to `sub` if any, and exit.
fn program(
    name: &str,
    section: &str,
    pad: usize,
    maps: &[String],
    call: Option<&str>,
) -> FunctionCode {
    let mut insns: Vec<RawInsn> = (0..pad).map(|i| mov(0, i as i32)).collect();
    let mut relocs = Vec::new();
    for m in maps {
        relocs.push(Reloc {
            insn: insns.len(),
            target: RelocTarget::Map(m.clone()),
        });
        insns.push(RawInsn {
            code: BPF_LD | BPF_IMM | BPF_DW,
            dst: 1,
            ..Default::default()
        });
        insns.push(RawInsn::default());
    }
    if let Some(c) = call {
        relocs.push(Reloc {
            insn: insns.len(),
            target: RelocTarget::Subprogram(c.to_owned()),
        });
        insns.push(RawInsn {
            code: BPF_JMP | BPF_CALL,
            ..Default::default()
        });
    }
    insns.push(exit());
    FunctionCode {
        name: name.into(),
        section: section.into(),
        insns,
        relocs,
        line_info: Vec::new(),
    }
}

fn writer_case() -> impl Strategy<Value = (ObjectWriter, Vec<MapDef>, Vec<FunctionCode>)> {
    (0usize..5)
        .prop_flat_map(|n| (0..n).map(map_def).collect::<Vec<_>>())
        .prop_flat_map(|maps| {
            (
                Just(maps),
                1usize..4,
                0usize..6,
                any::<bool>(),
                any::<bool>(),
            )
        })
        .prop_map(|(maps, programs, pad, with_sub, btf_ext)| {
            let names: Vec<String> = maps.iter().map(|m| m.name.clone()).collect();
            let sections = ["classifier", "xdp", "classifier"];
            let mut functions: Vec<FunctionCode> = (0..programs)
                .map(|i| {
                    program(
                        &format!("prog{i}"),
                        sections[i % 3],
                        pad + i,
                        &names,
                        with_sub.then_some("sub"),
                    )
                })
                .collect();
            if with_sub {
                functions.push(program("sub", ".text", pad, &[], None));
            }
            let w = ObjectWriter::new()
                .btf_ext(btf_ext)
                .maps(maps.clone())
                .functions(functions.clone());
            (w, maps, functions)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn aya_obj_reads_back_what_was_written((writer, maps, functions) in writer_case()) {
        let bytes = writer.write().unwrap();
        prop_assert_eq!(&bytes, &writer.write().unwrap());
        let obj = aya_obj::Object::parse(&bytes).unwrap();
        prop_assert_eq!(obj.maps.len(), maps.len());
        for m in &maps {
            let got = &obj.maps[&m.name];
            prop_assert_eq!(got.map_type(), m.map_type.id());
            prop_assert_eq!(got.key_size(), m.key_size(), "key of {}", m.name);
            prop_assert_eq!(got.value_size(), m.value_size(), "value of {}", m.name);
            prop_assert_eq!(got.max_entries(), m.max_entries);
            prop_assert_eq!(got.map_flags(), m.map_flags);
        }
        // Our own reader agrees with aya-obj and with the definitions.
        let file = object::File::parse(&*bytes).unwrap();
        if let Some(btf) = object::Object::section_by_name(&file, ".BTF") {
            let parsed = ParsedBtf::parse(object::ObjectSection::data(&btf).unwrap()).unwrap();
            let defs = parsed.map_definitions().unwrap();
            prop_assert_eq!(defs.len(), maps.len());
            for (d, m) in defs.iter().zip(&maps) {
                prop_assert_eq!(&d.name, &m.name);
                prop_assert_eq!((d.map_type, d.key_size, d.value_size), (m.map_type.id(), m.key_size(), m.value_size()));
                prop_assert_eq!((d.max_entries, d.map_flags, d.pinning), (m.max_entries, m.map_flags, m.pinning as u32));
            }
        } else {
            prop_assert!(maps.is_empty() && !bytes.windows(4).any(|w| w == b".BTF"));
        }
        for f in functions.iter().filter(|f| f.section != ".text") {
            let p = &obj.programs[&f.name];
            let code = &obj.functions[&p.function_key()];
            prop_assert_eq!(code.instructions.len(), f.insns.len(), "size of {}", f.name);
        }
    }
}

#[test]
fn llvm_objdump_disassembles_written_objects() {
    let Ok(out) = std::process::Command::new("llvm-objdump-19")
        .arg("--version")
        .output()
    else {
        eprintln!("SKIPPED: llvm-objdump-19 not installed");
        return;
    };
    assert!(out.status.success());
    let names = vec!["m".to_owned()];
    let obj = ObjectWriter::new()
        .function(program("prog", "classifier", 2, &names, Some("sub")))
        .function(program("sub", ".text", 1, &[], None))
        .map(MapDef::array("m", TypeDesc::U32, 1))
        .write()
        .unwrap();
    let path = std::env::temp_dir().join(format!("ciliumc-elf-props-{}.o", std::process::id()));
    std::fs::write(&path, &obj).unwrap();
    let out = std::process::Command::new("llvm-objdump-19")
        .arg("-dr")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "<prog>:",
        "<sub>:",
        "r1 = 0x0 ll",
        "R_BPF_64_64\tm",
        "call -0x1",
        "R_BPF_64_32\tsub",
        "exit",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
}
