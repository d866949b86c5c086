//! `disassemble_object_annotated`: comment lines land before the annotated instructions, the rest
//! is exactly the unannotated listing, and the annotated listing still assembles.

mod isa_common;

use ciliumc_targets::asm::assemble;
use ciliumc_targets::disasm::{disassemble_object, disassemble_object_annotated};
use ciliumc_targets::isa::{JmpOp, encode};
use object::write::{Object, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};

fn object_with(section: &str, name: &str, code: &[u8]) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let id = obj.add_section(vec![], section.as_bytes().to_vec(), SectionKind::Text);
    obj.append_section_data(id, code, 8);
    obj.add_symbol(Symbol {
        name: name.as_bytes().to_vec(),
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
fn comments_precede_annotated_instructions() {
    let program = assemble(
        "
        r0 = 0x0
        r1 = 0x1122334455 ll
        if r1 > 0x5 goto out
        r0 = 0x1
    out:
        exit
        ",
    )
    .unwrap();
    assert_eq!(
        program[2],
        ciliumc_targets::isa::Insn::jmp_imm(JmpOp::Gt, ciliumc_targets::isa::Reg::R1, 5, 1)
    );
    let code: Vec<u8> = encode(&program).iter().flat_map(|s| s.to_bytes()).collect();
    let elf = object_with("classifier/ingress", "prog", &code);
    let plain = disassemble_object(&elf, "x.o").unwrap();
    let annotated = disassemble_object_annotated(&elf, "x.o", &|section, slot| {
        assert_eq!(section, "classifier/ingress");
        match slot {
            0 => Some("rule 1: allow tcp/80\nfrom policy web/allow-http".to_string()),
            3 => Some("rule 2: default deny".to_string()),
            // Slot 2 is the second half of the ld_imm64 and is never asked for.
            2 => panic!("asked about the middle of an ld_imm64"),
            _ => None,
        }
    })
    .unwrap();
    let comment_lines: Vec<&str> = annotated.lines().filter(|l| l.starts_with("; ")).collect();
    assert_eq!(
        comment_lines,
        [
            "; rule 1: allow tcp/80",
            "; from policy web/allow-http",
            "; rule 2: default deny"
        ]
    );
    let without: Vec<&str> = annotated.lines().filter(|l| !l.starts_with("; ")).collect();
    assert_eq!(without, plain.lines().collect::<Vec<_>>());
    let lines: Vec<&str> = annotated.lines().collect();
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
    assert_eq!(at("; rule 1") + 2, at("\tr0 = 0x0"));
    assert_eq!(
        at("; rule 2") + 1,
        at("\tif r1 > 0x5 goto +0x1 <prog+0x28>")
    );
    assert_eq!(assemble(&annotated).unwrap(), program);
}
