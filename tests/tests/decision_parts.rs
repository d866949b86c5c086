//! A large decision split into global parts (`lower::dispatch::Parts`), with rule annotations
//! (line info in every function), as `ciliumc compile` writes it:
//! - without the kernel: the disassembly shows every part and the annotations of its rules, the
//!   budget counts the parts, and a small decision stays in the program;
//! - in the kernel: the raw loader, aya, `bpftool prog loadall` and `tc ... bpf obj` load it, the
//!   kernel verifies the parts as global functions, and packets are decided by a part. Skips
//!   where bpf() is refused unless CILIUMC_REQUIRE_KERNEL=1.
//!
//! The parts' verdicts against the reference evaluator: `policy_differential.rs`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;

use ciliumc_compiler::compile::{self, DirectionObject, MapPinning};
use ciliumc_compiler::lower::{self, dispatch, maps};
use ciliumc_ir::cidr::Cidr;
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{
    Direction, DirectionPolicy, L4Match, PeerSet, PortRange, Protocol, Rule, RuleId, RuleKind,
    RuleOrigin, SourceLocation,
};
use ciliumc_targets::codegen;
use ciliumc_targets::disasm::disassemble_object_with_line_info;
use ciliumc_targets::elf::{ObjectWriter, Pinning};
use ciliumc_targets::hooks::{TC_ACT_OK, TC_ACT_SHOT};
use ciliumc_tests::loader::{LoadOptions, load_object_raw_with};
use ciliumc_tests::packet::{Packet, tcp_flags};
use ciliumc_tests::tools::{TempObject, tc_attach_check};
use ciliumc_tests::{bpftool_loadall, kernel_or_skip, load_object_aya, load_object_raw};

const RULES: u32 = 200;
const ENDPOINT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn peer(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 1 + i as u8)
}

/// Rule i allows identity 1000 + i on TCP port 1000 + i.
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

/// Rule i comes from CNP `default/p<i>` at `parts.yaml:<10 + i>:7`.
fn options(rules: u32) -> lower::LowerOptions {
    let origins: BTreeMap<RuleId, RuleOrigin> = (0..rules)
        .map(|i| {
            let origin = RuleOrigin {
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
            };
            (RuleId(1 + i), origin)
        })
        .collect();
    lower::LowerOptions {
        map_tag: Some("parts".into()),
        rule_notes: Some(lower::rule_notes(&origins)),
    }
}

/// The object as the compiler writes it (maps private).
fn compiled(rules: u32) -> DirectionObject {
    compile::direction_object_with(
        NumericIdentity(300),
        &policy(rules),
        Direction::Ingress,
        "parts",
        &options(rules),
        MapPinning::Private,
    )
    .expect("compiles")
}

/// The same program with the parts left static (the writer's default for `.text` functions):
/// the kernel then verifies them in the caller's context.
fn with_static_parts() -> Vec<u8> {
    let lowered = lower::lower_direction_with(
        NumericIdentity(300),
        &policy(RULES),
        Direction::Ingress,
        &options(RULES),
    )
    .expect("lowers");
    let mut code = codegen::compile(&lowered.functions).expect("codegen");
    lowered.bind(&mut code);
    let defs = maps::shared_map_defs()
        .into_iter()
        .map(|m| m.with_pinning(Pinning::None));
    ObjectWriter::new()
        .functions(code)
        .maps(defs)
        .write()
        .expect("elf")
}

fn part_names(object: &DirectionObject) -> Vec<&str> {
    let base = dispatch::parts_base(Direction::Ingress);
    object
        .stats
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| dispatch::Parts::is_part(base, n))
        .collect()
}

#[test]
fn a_large_decision_is_split_into_annotated_global_parts() {
    let object = compiled(RULES);
    let parts = part_names(&object);
    assert!(parts.len() >= 2, "functions: {:?}", object.stats);
    assert_eq!(object.stats[0].name, lower::TO_CONTAINER);
    let text = disassemble_object_with_line_info(&object.bytes, "parts.o").expect("disassembles");
    for p in &parts {
        assert!(text.contains(p), "{p} missing from:\n{text}");
    }
    // Every rule's annotation is shown, in the part that decides for it.
    for i in [0u32, 57, 199] {
        let note = format!("rule {}: CiliumNetworkPolicy default/p{i}", i + 1);
        assert!(text.contains(&note), "{note} missing");
    }
    // The budget counts the parts' instructions with the program's.
    let total: usize = object.stats.iter().map(|s| s.insns).sum();
    assert_eq!(object.budgets[0].insns, total);
}

#[test]
fn a_small_decision_stays_in_the_program() {
    let object = compiled(10);
    let names: Vec<&str> = object.stats.iter().map(|s| s.name.as_str()).collect();
    let base = dispatch::parts_base(Direction::Ingress);
    assert!(
        !names.iter().any(|n| dispatch::Parts::is_part(base, n)),
        "{names:?}"
    );
    // Besides the program, only the parser's subprograms.
    assert_eq!(names[0], lower::TO_CONTAINER);
    assert!(
        names[1..]
            .iter()
            .all(|n| lower::parse::is_subprogram(Direction::Ingress, n)),
        "{names:?}"
    );
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

fn syn(from: Ipv4Addr, port: u16) -> Vec<u8> {
    Packet::ipv4(from, ENDPOINT)
        .tcp(40000, port)
        .tcp_flags(tcp_flags::SYN)
        .build()
}

#[test]
fn split_annotated_object_loads_everywhere_and_decides() {
    let Some(_k) = kernel_or_skip!() else { return };
    let bytes = compiled(RULES).bytes;
    let loaded = load_object_raw_with(
        &bytes,
        LoadOptions {
            verifier_log_level: 1,
        },
    )
    .expect("raw loader");
    let (name, _) = lower::program_for(Direction::Ingress);
    let prog = loaded.program(name).expect("program");
    // The kernel verified the parts as global functions (on their own).
    assert!(
        prog.log.contains("handle_policy_part"),
        "log names no part:\n{}",
        prog.log
    );
    // The peers in the ipcache, as the agent would write them (every map the entries name).
    let hosts: Vec<(Cidr, u32)> = [0u32, 57, 199]
        .iter()
        .map(|&i| (Cidr::host(IpAddr::V4(peer(i))), 1000 + i))
        .collect();
    for (map, entries) in maps::ipcache_map_entries(&hosts) {
        let fd = loaded.map(&map).expect("ipcache map");
        for (k, v) in entries {
            fd.update(&k, &v, 0).expect("ipcache update");
        }
    }
    for i in [0u32, 57, 199] {
        let allowed = prog.run(&syn(peer(i), 1000 + i as u16)).expect("run");
        assert_eq!(allowed.retval, TC_ACT_OK as u32, "rule {}", i + 1);
        let denied = prog.run(&syn(peer(i), 1001 + i as u16)).expect("run");
        assert_eq!(
            denied.retval,
            TC_ACT_SHOT as u32,
            "rule {} other port",
            i + 1
        );
    }
    load_object_aya(&bytes).expect("aya");
    // The agent's loader (`btf(None)`) passes the func_info too: the kernel does the same work as
    // for the raw loader, which verifies the parts as global functions (static ones would be
    // verified in the caller's context, at a different count).
    let mut loader = aya::EbpfLoader::new();
    loader.btf(None);
    let mut ebpf = loader.load(&bytes).expect("aya, btf(None)");
    for (n, p) in ebpf.programs_mut() {
        let aya::programs::Program::SchedClassifier(p) = p else {
            panic!("{n}: not a classifier");
        };
        p.load().expect("aya load");
    }
    let fd = ciliumc_tests::loader::aya_program_fd(&ebpf, name).expect("fd");
    let info = ciliumc_tests::sys::prog_info(fd.as_fd()).expect("prog info");
    assert_eq!(info.verified_insns, prog.verified_insns());
    let as_static = load_object_raw(&with_static_parts()).expect("static parts");
    let static_insns = as_static.program(name).expect("program").verified_insns();
    assert_ne!(
        static_insns,
        prog.verified_insns(),
        "static and global parts verify alike: the comparison above proves nothing"
    );
    let file = TempObject::new(&bytes).expect("temp object");
    bpftool_loadall(&file.path).expect("bpftool prog loadall");
    tc_attach_check(&file.path, "classifier").expect("tc filter add ... bpf obj");
}
