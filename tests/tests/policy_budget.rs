//! Verifier budgets: the compiler's prediction of processed instructions
//! (`ciliumc_compiler::lower::budget`) against the kernel's `verified_insns`, over policies from a
//! handful of rules to thousands (code and map choices, both directions, address rules), and the
//! compile-time refusal of a program over budget, naming the endpoint and the rule.

use std::net::{IpAddr, Ipv4Addr};

use ciliumc_compiler::compile::{self, MapPinning};
use ciliumc_compiler::lower::budget;
use ciliumc_ir::cidr::{Cidr, CidrRule};
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{
    Direction, DirectionPolicy, L4Match, PeerSet, PortRange, Protocol, Rule, RuleId, RuleKind,
};
use ciliumc_tests::kernel_or_skip;
use ciliumc_tests::loader::load_object_raw;

fn identity_rules(n: u32, direction: Direction) -> DirectionPolicy {
    let rules = (0..n)
        .map(|i| Rule {
            id: RuleId(1 + i),
            kind: if i % 7 == 3 {
                RuleKind::Deny
            } else {
                RuleKind::Allow
            },
            peers: PeerSet::identities([NumericIdentity(1000 + i % 600)]),
            l4: Some(vec![L4Match::new(
                Protocol::Tcp,
                PortRange::new(
                    1000 + (i * 37 % 5000) as u16,
                    1000 + (i * 37 % 5000) as u16 + (i % 3) as u16,
                )
                .expect("range"),
            )]),
        })
        .collect();
    DirectionPolicy::enforced(direction, rules)
}

fn address_rules(n: u32, direction: Direction) -> DirectionPolicy {
    let rules = (0..n)
        .map(|i| Rule {
            id: RuleId(1 + i),
            kind: RuleKind::Allow,
            peers: PeerSet::cidrs(vec![CidrRule::new(
                Cidr::new(
                    IpAddr::V4(Ipv4Addr::new(203, 0, 113, (i % 256) as u8)),
                    24 + (i % 9) as u8,
                )
                .expect("cidr"),
            )]),
            l4: Some(vec![L4Match::new(
                Protocol::Tcp,
                PortRange::single(80 + i as u16),
            )]),
        })
        .collect();
    DirectionPolicy::enforced(direction, rules)
}

#[test]
fn predicted_processed_instructions_bound_the_kernel_count() {
    let Some(_k) = kernel_or_skip!() else { return };
    let mut cases = Vec::new();
    for d in [Direction::Ingress, Direction::Egress] {
        cases.push(("unenforced", DirectionPolicy::unenforced(), d));
        for n in [1, 10, 100, 1000, 5000] {
            cases.push(("identity", identity_rules(n, d), d));
        }
        for n in [1, 10, 50, budget::MAX_ADDRESS_RULES as u32] {
            cases.push(("address", address_rules(n, d), d));
        }
    }
    for (what, policy, d) in cases {
        let object = compile::direction_object(
            NumericIdentity(300),
            &policy,
            d,
            "budget",
            MapPinning::Private,
        )
        .expect("compiles");
        let predicted = object.budgets[0].clone();
        let obj = load_object_raw(&object.bytes).expect("loads");
        let kernel = *obj.verifier_stats().values().next().expect("one program");
        eprintln!(
            "{what:10} {d:7} rules {:5}: insns {:6} predicted {:7} kernel {:7}",
            policy.rules.len(),
            predicted.insns,
            predicted.processed,
            kernel
        );
        assert!(
            u64::from(kernel) <= predicted.processed,
            "{what} {d} {} rules: kernel processed {kernel} > predicted {}",
            policy.rules.len(),
            predicted.processed
        );
        assert!(
            predicted.processed <= 3 * u64::from(kernel),
            "{what} {d} {} rules: prediction {} is not within 3x of the kernel's {kernel}",
            policy.rules.len(),
            predicted.processed
        );
    }
}

#[test]
fn a_program_over_budget_is_refused_at_compile_time_naming_the_endpoint_and_rule() {
    let policy = address_rules(budget::MAX_ADDRESS_RULES as u32 + 1, Direction::Ingress);
    let err = compile::direction_object(
        NumericIdentity(300),
        &policy,
        Direction::Ingress,
        "ns/too-many-cidrs",
        MapPinning::Private,
    )
    .expect_err("over budget");
    let text = err.to_string();
    assert!(text.contains("ns/too-many-cidrs"), "{text}");
    assert!(
        text.contains(&format!("rule {}", budget::MAX_ADDRESS_RULES + 1)),
        "{text}"
    );
}
