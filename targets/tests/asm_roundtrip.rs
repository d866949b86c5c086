//! assemble(disassemble(p)) == p, labels, pasted objdump listings, and error positions.

mod isa_common;

use ciliumc_targets::asm::{AsmError, assemble};
use ciliumc_targets::disasm::{DisasmOptions, disassemble_program};
use ciliumc_targets::isa::{Insn, JmpOp, Reg};
use isa_common::strategy::{lossy_in_llvm_text, program};
use proptest::prelude::*;

fn text_of(p: &[Insn], opts: DisasmOptions) -> String {
    disassemble_program(p, opts).join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Every valid program survives the lossless text form.
    #[test]
    fn lossless_text_round_trips(p in program()) {
        let text = text_of(&p, DisasmOptions::LOSSLESS);
        prop_assert_eq!(assemble(&text).map_err(|e| format!("{e}\n{text}")), Ok(p));
    }

    /// Plain llvm-objdump text (with and without alu32) round-trips wherever it is not lossy.
    #[test]
    fn llvm_text_round_trips(p in program(), alu32 in any::<bool>()) {
        let p: Vec<Insn> = p.into_iter().filter(|i| !lossy_in_llvm_text(i, alu32)).collect();
        let text = text_of(&p, DisasmOptions { alu32, lossless: false });
        prop_assert_eq!(assemble(&text).map_err(|e| format!("{e}\n{text}")), Ok(p));
    }
}

#[test]
fn labels_resolve_to_slot_offsets() {
    let p = assemble(
        "
        ; count down from 3
        r1 = 0x3
    loop:
        r2 = 0x1122334455 ll      ; two slots
        r1 += -0x1
        if r1 != 0x0 goto loop
        call helper
        gotol done
        exit
    helper:
        r0 = 0x0
        exit
    done:
        r0 = 0x1
        exit
        ",
    )
    .unwrap();
    assert_eq!(p[3], Insn::jmp_imm(JmpOp::Ne, Reg::R1, 0, -4));
    assert_eq!(p[4], Insn::CallLocal { imm: 2 });
    assert_eq!(p[5], Insn::Gotol { imm: 3 });
    assert_eq!(p[0], Insn::mov64_imm(Reg::R1, 3));
}

#[test]
fn pasted_objdump_listing_assembles() {
    let listing = "
/tmp/x.o:\tfile format elf64-bpf

Disassembly of section classifier:

0000000000000000 <prog>:
       0:\tbf 16 00 00 00 00 00 00\tr6 = r1
       1:\t18 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00\tr1 = 0x0 ll
       3:\t15 01 01 00 00 00 00 00\tif r1 == 0x0 goto +0x1 <prog+0x28>
       4:\t85 00 00 00 01 00 00 00\tcall 0x1
       5:\tdb 21 00 00 41 00 00 00\tr2 = atomic_fetch_or((u64 *)(r1 + 0x0), r2)
       6:\t95 00 00 00 00 00 00 00\texit
";
    let p = assemble(listing).unwrap();
    assert_eq!(p.len(), 6);
    assert_eq!(p[2], Insn::jmp_imm(JmpOp::Eq, Reg::R1, 0, 1));
    assert_eq!(p[5], Insn::Exit);
}

fn err(text: &str) -> AsmError {
    assemble(text).expect_err("must not assemble")
}

#[test]
fn errors_name_line_and_column() {
    let e = err("r0 = 0x0\n  r1 += r2 r3\nexit");
    assert_eq!((e.line, e.column), (2, 11), "{e}");
    let e = err("exit\nr0 = *(u32 *)(r1 + 0x0\n");
    assert_eq!(e.line, 2, "{e}");
    let e = err("goto nowhere\n");
    assert_eq!(
        (e.line, e.column, e.message.as_str()),
        (1, 6, "undefined label `nowhere`")
    );
    let e = err("w1 += r2");
    assert_eq!((e.line, e.column), (1, 1), "{e}");
    let e = err("r11 = 0x1");
    assert_eq!(e.line, 1, "{e}");
    let e = err("x:\nx:\nexit");
    assert_eq!((e.line, e.message.as_str()), (2, "label `x` defined twice"));
    let e = err("goto +0x8000");
    assert!(e.message.contains("gotol"), "{e}");
    let e = err("r1 = -r2");
    assert!(e.message.contains("neg"), "{e}");
    let e = err("ld_pseudo r1, 0x9, 0x1");
    assert!(e.message.contains("pseudo source 9"), "{e}");
}

#[test]
fn far_labels_are_range_checked() {
    let mut text = String::from("goto far\n");
    for _ in 0..40_000 {
        text.push_str("r0 = 0x0\n");
    }
    text.push_str("far:\nexit\n");
    let e = err(&text);
    assert_eq!(e.line, 1);
    assert!(e.message.contains("out of range"), "{e}");
    let p = assemble(&text.replacen("goto far", "gotol far", 1)).unwrap();
    assert_eq!(p[0], Insn::Gotol { imm: 40_000 });
}

proptest! {
    /// `Insn`'s Display is the lossless text of that one instruction.
    #[test]
    fn display_is_lossless_text(i in isa_common::strategy::insn()) {
        prop_assert_eq!(assemble(&i.to_string()).map_err(|e| e.to_string()), Ok(vec![i]));
    }
}

#[test]
fn immediate_ranges_follow_operand_width() {
    use ciliumc_targets::isa::{AluOp, Operand, Size, Width};
    // 64-bit operations sign-extend imm: 0xffffffff would silently mean -1, so it is refused.
    for text in [
        "r1 = 0xffffffff",
        "r1 += 0x80000000",
        "if r1 == 0xffffffff goto +0x1",
        "*(u64 *)(r1 + 0x0) = 0xffffffff",
        "w1 = 0x100000000",
    ] {
        let e = err(text);
        assert_eq!(e.line, 1, "{text}: {e}");
        assert!(e.message.contains("32"), "{text}: {e}");
    }
    assert_eq!(
        assemble("w1 = 0xffffffff\n*(u32 *)(r1 + 0x0) = 0xffffffff\nr1 = -0x80000000").unwrap(),
        vec![
            Insn::alu32(AluOp::Mov, Reg::R1, Operand::Imm(-1)),
            Insn::st(Size::W, Reg::R1, 0, -1),
            Insn::alu64(AluOp::Mov, Reg::R1, Operand::Imm(i32::MIN)),
        ]
    );
    assert_eq!(
        assemble("if w1 == 0xffffffff goto +0x1").unwrap(),
        vec![Insn::Jmp {
            width: Width::Bits32,
            op: JmpOp::Eq,
            dst: Reg::R1,
            src: Operand::Imm(-1),
            off: 1
        }]
    );
    assert_eq!(
        assemble("ld_pseudo\tr1, 0x1, 0xfffffffb").unwrap(),
        vec![Insn::ld_map_fd(Reg::R1, -5)]
    );
}

#[test]
fn pasted_listing_errors_point_into_the_instruction_column() {
    let e = err("       3:\t15 01 01 00 00 00 00 00\tif r1 == 0x0 goto\n");
    assert_eq!(e.line, 1);
    // The instruction text starts after the second tab (column 34).
    assert!(e.column >= 34, "{e}");
}
