//! Source annotations through the code generator: `FunctionBuilder::annotate` lands on the first
//! eBPF instruction generated for the annotated IR (spill reloads included), and stays there
//! through jump relaxation; random programs with random annotations keep line_info valid.

mod annotate_common;

use annotate_common::*;
use ciliumc_targets::codegen::testgen::{GenConfig, generate};
use ciliumc_targets::codegen::{Annotation, FunctionBuilder, compile, compile_with};
use ciliumc_targets::codegen::{CodegenOptions, LinkOptions};
use ciliumc_targets::hooks::Hook;
use ciliumc_targets::isa::opcode::BPF_DW;
use ciliumc_targets::isa::opcode::{BPF_IMM, BPF_LD};
use ciliumc_targets::program::FunctionCode;
use proptest::prelude::*;

/// For every rule: its annotation starts exactly where its code starts — after the previous
/// rule's last marker, at or before its marker, with only reloads/moves in between.
fn check_rule_slots(code: &FunctionCode, rules: usize) {
    let at = |text: &str| -> usize {
        code.line_info
            .iter()
            .find(|a| a.source.text == text)
            .unwrap_or_else(|| panic!("no annotation {text:?} in {:#?}", code.line_info))
            .insn
    };
    assert_eq!(code.line_info[0].insn, 0);
    assert_eq!(code.line_info[0].source, prologue_annotation());
    let mut prev_marker = 0;
    for r in 0..rules {
        for (ann, is_marker) in [
            (rule_annotation(r), is_xor_marker as fn(&_, usize) -> bool),
            (branch_annotation(r), is_branch_marker),
        ] {
            let slot = at(&ann.text);
            let marker = find(&code.insns, |i| is_marker(i, r))
                .unwrap_or_else(|| panic!("no marker for rule {r}"));
            assert!(
                slot > prev_marker && slot <= marker,
                "{:?} at {slot}, marker at {marker}, previous marker at {prev_marker}",
                ann.text
            );
            assert!(
                code.insns[slot..marker].iter().all(is_support),
                "{:?}: non-support code between annotation {slot} and marker {marker}",
                ann.text
            );
            prev_marker = marker;
        }
    }
    let entry = code
        .line_info
        .iter()
        .find(|a| a.source.text == "rule 0: toPorts check");
    assert!(entry.is_some());
}

#[test]
fn annotations_land_on_their_rules_code_with_spills() {
    let module = annotated_module(12, 10);
    let code = compile_module(&module, 10_000);
    check_rule_slots(&code[0], 12);
    // Some rule code starts with a reload: the annotation sits on it, not on the xor.
    let reload_first = (0..12).any(|r| {
        let slot = code[0]
            .line_info
            .iter()
            .find(|a| a.source == rule_annotation(r))
            .unwrap()
            .insn;
        is_support(&code[0].insns[slot]) && !is_xor_marker(&code[0].insns[slot], r)
    });
    assert!(
        reload_first,
        "no rule starts with a reload or move; the test lost its point"
    );
    assert!(code[1].line_info.is_empty(), "mix has no annotations");
}

#[test]
fn annotations_follow_jump_relaxation() {
    let module = annotated_module(30, 10);
    let (code, stats) = compile_with(
        &module,
        CodegenOptions {
            link: LinkOptions {
                short_jump_limit: 8,
            },
        },
    )
    .unwrap();
    assert!(stats[0].long_jumps > 0, "limit 8 should force gotol");
    check_rule_slots(&code[0], 30);
    let relaxed = compile_module(&module, 10_000);
    assert!(code[0].insns.len() > relaxed[0].insns.len());
    assert_eq!(code[0].line_info.len(), relaxed[0].line_info.len());
}

#[test]
fn annotation_on_a_terminator_only_block_and_merging() {
    let mut f = FunctionBuilder::new("t", Hook::TcIngress);
    let a = |t: &str| Annotation {
        file: "f.yaml".into(),
        line: 3,
        column: 2,
        text: t.into(),
    };
    f.annotate(a("first"));
    f.annotate(a("second"));
    let v = f.load_ctx("mark");
    let (x, y) = (f.block(), f.block());
    f.annotate(a("branch"));
    f.branch(ciliumc_targets::codegen::Cond::Eq, v, 5, x, y);
    f.switch_to(x);
    f.annotate(a("exit x"));
    f.ret(1);
    f.switch_to(y);
    f.ret(2);
    let code = compile(&[f.finish().unwrap()]).unwrap();
    let got: Vec<(usize, &str)> = code[0]
        .line_info
        .iter()
        .map(|l| (l.insn, l.source.text.as_str()))
        .collect();
    // ldxw r?, mark ; if r? == 5 goto ; ... r0 = 1; exit
    assert_eq!(got[0], (0, "first | second"));
    assert_eq!(got[1].1, "branch");
    let branch = code[0].insns[got[1].0];
    assert_eq!(
        branch.imm, 5,
        "branch annotation is on the compare: {branch:?}"
    );
    let exit_x = got[2].0;
    assert_eq!(code[0].insns[exit_x].imm, 1, "r0 = 1 of block x");
}

#[test]
fn annotation_after_terminator_is_a_builder_error() {
    let mut f = FunctionBuilder::new("t", Hook::TcIngress);
    f.ret(0);
    f.annotate(Annotation::default());
    assert!(f.finish().is_err());
}

fn ld_imm64_second_slots(insns: &[ciliumc_targets::isa::RawInsn]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < insns.len() {
        if insns[i].code == BPF_LD | BPF_IMM | BPF_DW {
            out.push(i + 1);
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Random programs with annotations at random places: line_info strictly increasing, on
    /// instruction starts, inside the code; every entry-block annotation survives; and the object
    /// writer accepts the result.
    #[test]
    fn random_annotations_stay_valid(seed in 0u64..10_000, picks in prop::collection::vec((0usize..64, 0usize..64), 1..24), limit in prop::sample::select(vec![6, 40, 10_000])) {
        let mut module = generate(seed, &GenConfig::default());
        let nf = module.len();
        for (n, (b, i)) in picks.iter().enumerate() {
            let f = &mut module[n % nf];
            let b = b % f.blocks.len();
            let mut blocks = f.blocks.to_vec();
            let block = &mut blocks[b];
            let i = i % (block.insts.len() + 1);
            let pos = block.annotations.partition_point(|(k, _)| *k <= i);
            block.annotations.insert(pos, (i, Annotation { file: "r.yaml".into(), line: n as u32 + 1, column: 0, text: format!("a{n} b{b}") }));
            f.blocks = blocks.into();
        }
        let opts = CodegenOptions { link: LinkOptions { short_jump_limit: limit } };
        let (code, _) = compile_with(&module, opts).unwrap();
        for (f, c) in module.iter().zip(&code) {
            let bad = ld_imm64_second_slots(&c.insns);
            for w in c.line_info.windows(2) {
                prop_assert!(w[0].insn < w[1].insn);
            }
            for l in &c.line_info {
                prop_assert!(l.insn < c.insns.len());
                prop_assert!(!bad.contains(&l.insn));
            }
            for (_, a) in &f.blocks[0].annotations {
                prop_assert!(c.line_info.iter().any(|l| l.source.text.split(" | ").any(|t| t == a.text)), "lost {}", a.text);
            }
        }
        let again = compile_with(&module, opts).unwrap().0;
        prop_assert_eq!(&again, &code);
        let bytes = ciliumc_targets::elf::ObjectWriter::new().functions(code).maps(module.iter().flat_map(|f| f.maps.iter()).map(|m| ciliumc_targets::elf::MapDef::hash(&m.name, ciliumc_targets::elf::TypeDesc::Bytes(m.key_size), ciliumc_targets::elf::TypeDesc::Bytes(m.value_size), 4)).fold(Vec::<ciliumc_targets::elf::MapDef>::new(), |mut v, m| { if v.iter().all(|d| d.name != m.name) { v.push(m) } v })).write();
        prop_assert!(bytes.is_ok(), "{:?}", bytes.err());
    }
}
