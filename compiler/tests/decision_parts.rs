//! A large decision split into global parts (`lower::dispatch::Parts`): the object declares them
//! as global `.text` functions, the disassembly shows them with the rule annotations of their
//! outcomes, and a small decision stays in the program. (The parts' verdicts are checked against
//! the reference evaluator in the kernel by `tests/tests/policy_differential.rs`.)

use std::collections::BTreeMap;

use ciliumc_compiler::compile::{self, MapPinning};
use ciliumc_compiler::lower::{self, dispatch};
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{
    Direction, DirectionPolicy, L4Match, PeerSet, PortRange, Protocol, Rule, RuleId, RuleKind,
    RuleOrigin, SourceLocation,
};
use ciliumc_targets::codegen::{self, CodegenOptions};
use ciliumc_targets::disasm::disassemble_object_with_line_info;
use ciliumc_targets::elf::ObjectWriter;

fn policy(rules: u32) -> DirectionPolicy {
    let rules = (0..rules)
        .map(|i| Rule {
            id: RuleId(1 + i),
            kind: RuleKind::Allow,
            peers: PeerSet::identities([NumericIdentity(1000 + i)]),
            l4: Some(vec![L4Match::new(
                Protocol::Tcp,
                PortRange::single(1000 + i as u16),
            )]),
        })
        .collect();
    DirectionPolicy::enforced(Direction::Ingress, rules)
}

fn notes(rules: u32) -> lower::RuleNotes {
    let origins: BTreeMap<RuleId, RuleOrigin> = (0..rules)
        .map(|i| {
            (
                RuleId(1 + i),
                RuleOrigin {
                    policy_kind: "CiliumNetworkPolicy".into(),
                    namespace: Some("default".into()),
                    name: format!("p{i}"),
                    section: "ingress".into(),
                    rule_index: 0,
                    source: Some(SourceLocation {
                        file: "parts.yaml".into(),
                        line: 10 + i,
                        column: 7,
                    }),
                },
            )
        })
        .collect();
    lower::rule_notes(&origins)
}

/// The object and the names of its functions.
fn compiled(rules: u32) -> (Vec<u8>, Vec<String>) {
    let options = lower::LowerOptions {
        map_tag: None,
        rule_notes: Some(notes(rules)),
    };
    let lowered = lower::lower_direction_with(
        NumericIdentity(300),
        &policy(rules),
        Direction::Ingress,
        &options,
    )
    .expect("lowers");
    let names = lowered.functions.iter().map(|f| f.name.clone()).collect();
    let (code, _) =
        codegen::compile_with(&lowered.functions, CodegenOptions::default()).expect("codegen");
    let bytes = lowered
        .signatures
        .iter()
        .fold(ObjectWriter::new(), |w, (n, s)| w.signature(n, s.clone()))
        .functions(code)
        .maps(lower::maps::shared_map_defs())
        .write()
        .expect("elf");
    (bytes, names)
}

#[test]
fn a_large_decision_is_split_into_annotated_global_parts() {
    let (bytes, names) = compiled(200);
    let base = dispatch::parts_base(Direction::Ingress);
    let parts: Vec<&String> = names
        .iter()
        .filter(|n| dispatch::Parts::is_part(base, n))
        .collect();
    assert!(parts.len() >= 2, "functions: {names:?}");
    assert_eq!(names[0], lower::TO_CONTAINER);
    let text = disassemble_object_with_line_info(&bytes, "parts.o").expect("disassembles");
    for p in &parts {
        assert!(text.contains(p.as_str()), "{p} missing from:\n{text}");
    }
    // Every rule's annotation is shown, in the part that decides for it.
    for i in [0u32, 57, 199] {
        let note = format!("rule {}: CiliumNetworkPolicy default/p{i}", i + 1);
        assert!(text.contains(&note), "{note} missing");
    }
    // The budget counts the parts' instructions with the program's.
    let object = compile::direction_object(
        NumericIdentity(300),
        &policy(200),
        Direction::Ingress,
        "parts",
        MapPinning::Private,
    )
    .expect("compiles");
    let total: usize = object.stats.iter().map(|s| s.insns).sum();
    assert_eq!(object.budgets[0].insns, total);
}

#[test]
fn a_small_decision_stays_in_the_program() {
    let (_, names) = compiled(10);
    assert_eq!(names, vec![lower::TO_CONTAINER.to_string()]);
}

#[test]
fn part_names_are_recognised_exactly() {
    assert!(dispatch::Parts::is_part(
        "handle_policy",
        "handle_policy_part0"
    ));
    assert!(dispatch::Parts::is_part(
        "handle_policy",
        "handle_policy_part17"
    ));
    assert!(!dispatch::Parts::is_part(
        "handle_policy",
        "handle_policy_egress_part0"
    ));
    assert!(!dispatch::Parts::is_part(
        "handle_policy",
        "handle_policy_part"
    ));
    assert!(!dispatch::Parts::is_part(
        "handle_policy",
        "handle_policy_partx"
    ));
    assert!(dispatch::Parts::is_part(
        "handle_policy_egress",
        "handle_policy_egress_part3"
    ));
}
