//! Hostile inputs: corrupted ELF objects and arbitrary text never panic the disassembler or the
//! assembler; they return errors (or, for objects that still parse, some listing).

use ciliumc_targets::asm::assemble;
use ciliumc_targets::disasm::{disassemble_insns, disassemble_object};
use ciliumc_targets::isa::RawInsn;
use object::write::{Object, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};
use proptest::prelude::*;

fn sample_object() -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let id = obj.add_section(vec![], b"classifier".to_vec(), SectionKind::Text);
    let code: Vec<u8> = [
        RawInsn {
            code: 0xb7,
            dst: 0,
            src: 0,
            off: 0,
            imm: 2,
        },
        RawInsn {
            code: 0x15,
            dst: 1,
            src: 0,
            off: 1,
            imm: 0,
        },
        RawInsn {
            code: 0x18,
            dst: 1,
            src: 0,
            off: 0,
            imm: 7,
        },
        RawInsn {
            code: 0,
            dst: 0,
            src: 0,
            off: 0,
            imm: 0,
        },
        RawInsn {
            code: 0x95,
            dst: 0,
            src: 0,
            off: 0,
            imm: 0,
        },
    ]
    .iter()
    .flat_map(|s| s.to_bytes())
    .collect();
    obj.append_section_data(id, &code, 8);
    obj.add_symbol(Symbol {
        name: b"prog".to_vec(),
        value: 0,
        size: code.len() as u64,
        kind: SymbolKind::Text,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(id),
        flags: SymbolFlags::None,
    });
    obj.write().unwrap()
}

#[test]
fn non_bpf_and_garbage_inputs_are_errors() {
    assert!(disassemble_object(b"", "x").is_err());
    assert!(disassemble_object(b"\x7fELF garbage", "x").is_err());
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    obj.add_section(vec![], b".text".to_vec(), SectionKind::Text);
    let x86 = obj.write().unwrap();
    let e = disassemble_object(&x86, "x").unwrap_err();
    assert!(e.to_string().contains("not a BPF object"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn corrupted_objects_do_not_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = sample_object();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        let _ = disassemble_object(&bytes, "x.o");
    }

    #[test]
    fn truncated_objects_do_not_panic(cut in any::<prop::sample::Index>()) {
        let bytes = sample_object();
        let _ = disassemble_object(&bytes[..cut.index(bytes.len())], "x.o");
    }

    #[test]
    fn arbitrary_slots_disassemble(words in prop::collection::vec(any::<[u8; 8]>(), 0..20)) {
        let slots: Vec<RawInsn> = words.into_iter().map(RawInsn::from_bytes).collect();
        let text = disassemble_insns(&slots);
        prop_assert!(text.len() <= slots.len() * 8);
    }

    #[test]
    fn arbitrary_text_does_not_panic_the_assembler(text in "(\\PC{0,40}\n){0,6}") {
        if let Err(e) = assemble(&text) {
            prop_assert!(e.line >= 1 && e.column >= 1, "{e:?}");
        }
    }

    #[test]
    fn objdump_like_text_does_not_panic_the_assembler(
        text in "( {0,8}[0-9]{1,3}:[\t ]([0-9a-f]{2} ){0,9}[\t ]?[a-z0-9 =*()+<>,_.-]{0,30}\n){0,6}"
    ) {
        if let Err(e) = assemble(&text) {
            prop_assert!(e.line >= 1 && e.column >= 1, "{e:?}");
        }
    }
}
