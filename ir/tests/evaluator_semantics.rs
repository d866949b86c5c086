//! The reference evaluator against the semantic statements of
//! `reference/policy-semantics-and-oracles.md` §3 and the scenarios of `cilium-datapath-facts.md` §4
//! that the IR itself decides (translation rules are tested in compiler/tests/resolve_semantics.rs).

use std::net::IpAddr;

use ciliumc_ir::evaluator::{AllowBasis, DropReason, PeerInfo, Verdict, verdict};
use ciliumc_ir::{
    Cidr, CidrRule, Direction, DirectionPolicy, EndpointPolicy, L4Match, NumericIdentity, PeerSet,
    PortRange, Protocol, Rule, RuleId, RuleKind,
};
use proptest::prelude::*;

const FOO: NumericIdentity = NumericIdentity(300);
const BAR: NumericIdentity = NumericIdentity(400);

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}
fn peer(id: NumericIdentity) -> PeerInfo {
    PeerInfo::new(id, ip("10.0.0.9"))
}
fn world(addr: &str) -> PeerInfo {
    PeerInfo::new(NumericIdentity::WORLD, ip(addr))
}
fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}
fn rule(id: u32, kind: RuleKind, peers: PeerSet, l4: Option<Vec<L4Match>>) -> Rule {
    Rule {
        id: RuleId(id),
        kind,
        peers,
        l4,
    }
}
fn tcp(lo: u16, hi: u16) -> L4Match {
    L4Match::new(Protocol::Tcp, PortRange::new(lo, hi).unwrap())
}
fn ingress(rules: Vec<Rule>) -> EndpointPolicy {
    EndpointPolicy {
        ingress: DirectionPolicy::enforced(Direction::Ingress, rules),
        egress: DirectionPolicy::unenforced(),
    }
}
fn egress(rules: Vec<Rule>) -> EndpointPolicy {
    EndpointPolicy {
        ingress: DirectionPolicy::unenforced(),
        egress: DirectionPolicy::enforced(Direction::Egress, rules),
    }
}
fn allows(p: &EndpointPolicy, d: Direction, from: PeerInfo, proto: Protocol, port: u16) -> bool {
    verdict(p, d, from, proto, port).is_allow()
}

#[test]
fn unenforced_direction_allows_everything() {
    let p = EndpointPolicy::unenforced();
    let v = verdict(&p, Direction::Ingress, peer(FOO), Protocol::Udp, 53);
    assert_eq!(
        v,
        Verdict::Allow {
            basis: AllowBasis::Unenforced,
            rules: vec![]
        }
    );
}

#[test]
fn default_deny_is_per_direction() {
    let p = ingress(vec![rule(
        1,
        RuleKind::Allow,
        PeerSet::identities([FOO]),
        None,
    )]);
    assert!(allows(&p, Direction::Ingress, peer(FOO), Protocol::Tcp, 80));
    assert_eq!(
        verdict(&p, Direction::Ingress, peer(BAR), Protocol::Tcp, 80),
        Verdict::Deny {
            reason: DropReason::PolicyDenied,
            rules: vec![]
        }
    );
    assert!(
        allows(&p, Direction::Egress, peer(BAR), Protocol::Tcp, 80),
        "egress is not enforced"
    );
}

#[test]
fn empty_rule_set_with_enforcement_denies_everything() {
    // What `ingress: [{}]` becomes in a CNP: enforced, no rule allows anything.
    let p = ingress(vec![rule(1, RuleKind::Allow, PeerSet::none(), None)]);
    assert!(!allows(
        &p,
        Direction::Ingress,
        peer(FOO),
        Protocol::Tcp,
        80
    ));
    assert!(!allows(
        &p,
        Direction::Ingress,
        world("192.0.2.1"),
        Protocol::Icmp,
        8
    ));
}

#[test]
fn deny_wins_over_allow_regardless_of_order_and_specificity() {
    let deny = rule(1, RuleKind::Deny, PeerSet::All, Some(vec![tcp(80, 80)]));
    let allow = rule(
        2,
        RuleKind::Allow,
        PeerSet::identities([FOO]),
        Some(vec![tcp(80, 80)]),
    );
    for rules in [vec![deny.clone(), allow.clone()], vec![allow, deny]] {
        let p = ingress(rules);
        assert_eq!(
            verdict(&p, Direction::Ingress, peer(FOO), Protocol::Tcp, 80),
            Verdict::Deny {
                reason: DropReason::PolicyDenyExplicit,
                rules: vec![RuleId(1)]
            }
        );
    }
}

#[test]
fn deny_beats_allow_regardless_of_prefix_length() {
    // deny 10.0.0.0/8 + allow 10.1.1.1/32 → denied.
    let p = egress(vec![
        rule(
            1,
            RuleKind::Deny,
            PeerSet::cidrs(vec![CidrRule::new(cidr("10.0.0.0/8"))]),
            None,
        ),
        rule(
            2,
            RuleKind::Allow,
            PeerSet::cidrs(vec![CidrRule::new(cidr("10.1.1.1/32"))]),
            None,
        ),
    ]);
    let v = verdict(&p, Direction::Egress, world("10.1.1.1"), Protocol::Tcp, 443);
    assert_eq!(
        v,
        Verdict::Deny {
            reason: DropReason::PolicyDenyExplicit,
            rules: vec![RuleId(1)]
        }
    );
}

#[test]
fn deny_only_policy_flips_direction_to_default_deny() {
    let p = ingress(vec![rule(
        1,
        RuleKind::Deny,
        PeerSet::All,
        Some(vec![tcp(80, 80)]),
    )]);
    assert_eq!(
        verdict(&p, Direction::Ingress, peer(FOO), Protocol::Tcp, 81),
        Verdict::Deny {
            reason: DropReason::PolicyDenied,
            rules: vec![]
        }
    );
    assert!(!allows(
        &p,
        Direction::Ingress,
        peer(FOO),
        Protocol::Icmp,
        8
    ));
}

#[test]
fn enable_default_deny_false_allows_unmatched_but_denies_still_apply() {
    let mut p = ingress(vec![rule(
        1,
        RuleKind::Deny,
        PeerSet::identities([BAR]),
        None,
    )]);
    p.ingress.default_deny = false;
    assert_eq!(
        verdict(&p, Direction::Ingress, peer(FOO), Protocol::Tcp, 1),
        Verdict::Allow {
            basis: AllowBasis::DefaultAllow,
            rules: vec![]
        }
    );
    assert!(!allows(&p, Direction::Ingress, peer(BAR), Protocol::Tcp, 1));
}

#[test]
fn host_to_pod_ingress_allowed_by_default_allow_localhost() {
    let p = ingress(vec![rule(
        1,
        RuleKind::Allow,
        PeerSet::identities([FOO]),
        None,
    )]);
    let host = PeerInfo::new(NumericIdentity::HOST, None);
    assert_eq!(
        verdict(&p, Direction::Ingress, host, Protocol::Tcp, 8080),
        Verdict::Allow {
            basis: AllowBasis::Localhost,
            rules: vec![]
        }
    );
    // Only ingress: an enforced egress does not implicitly allow the host.
    let e = egress(vec![rule(
        1,
        RuleKind::Allow,
        PeerSet::identities([FOO]),
        None,
    )]);
    assert!(!allows(&e, Direction::Egress, host, Protocol::Tcp, 8080));
    // A deny overrides it.
    let d = ingress(vec![rule(
        2,
        RuleKind::Deny,
        PeerSet::identities([NumericIdentity::HOST]),
        None,
    )]);
    assert!(!allows(&d, Direction::Ingress, host, Protocol::Tcp, 8080));
}

#[test]
fn l4_rule_blocks_icmp_unless_an_l3_only_rule_allows_it() {
    let l4_only = ingress(vec![rule(
        1,
        RuleKind::Allow,
        PeerSet::All,
        Some(vec![tcp(80, 80)]),
    )]);
    assert!(allows(
        &l4_only,
        Direction::Ingress,
        peer(FOO),
        Protocol::Tcp,
        80
    ));
    assert!(!allows(
        &l4_only,
        Direction::Ingress,
        peer(FOO),
        Protocol::Icmp,
        8
    ));
    assert!(!allows(
        &l4_only,
        Direction::Ingress,
        peer(FOO),
        Protocol::Icmpv6,
        128
    ));
    let with_l3 = ingress(vec![
        rule(1, RuleKind::Allow, PeerSet::All, Some(vec![tcp(80, 80)])),
        rule(2, RuleKind::Allow, PeerSet::identities([FOO]), None),
    ]);
    assert!(allows(
        &with_l3,
        Direction::Ingress,
        peer(FOO),
        Protocol::Icmp,
        8
    ));
    assert!(!allows(
        &with_l3,
        Direction::Ingress,
        peer(BAR),
        Protocol::Icmp,
        8
    ));
}

#[test]
fn icmp_rule_matches_its_type_and_family_only() {
    let p = ingress(vec![rule(
        1,
        RuleKind::Allow,
        PeerSet::All,
        Some(vec![L4Match::icmp(Protocol::Icmp, Some(8))]),
    )]);
    assert!(allows(&p, Direction::Ingress, peer(FOO), Protocol::Icmp, 8));
    assert!(!allows(
        &p,
        Direction::Ingress,
        peer(FOO),
        Protocol::Icmp,
        0
    ));
    assert!(!allows(
        &p,
        Direction::Ingress,
        peer(FOO),
        Protocol::Icmpv6,
        8
    ));
    assert!(!allows(&p, Direction::Ingress, peer(FOO), Protocol::Tcp, 8));
}

#[test]
fn deny_rules_report_reason_181_and_missing_allow_133() {
    assert_eq!(DropReason::PolicyDenied.code(), 133);
    assert_eq!(DropReason::PolicyDenyExplicit.code(), 181);
}

#[test]
fn port_zero_means_all_ports_and_end_port_only_when_greater() {
    assert_eq!(PortRange::from_port_end(0, Some(90)), PortRange::ANY);
    assert_eq!(
        PortRange::from_port_end(80, Some(90)),
        PortRange::new(80, 90).unwrap()
    );
    assert_eq!(
        PortRange::from_port_end(80, Some(80)),
        PortRange::single(80)
    );
    assert_eq!(
        PortRange::from_port_end(80, Some(70)),
        PortRange::single(80)
    );
    assert_eq!(PortRange::from_port_end(80, None), PortRange::single(80));
}

#[test]
fn port_ranges_match_at_both_edges() {
    let p = ingress(vec![rule(
        1,
        RuleKind::Allow,
        PeerSet::All,
        Some(vec![tcp(80, 444)]),
    )]);
    for (port, ok) in [
        (79, false),
        (80, true),
        (81, true),
        (443, true),
        (444, true),
        (445, false),
    ] {
        assert_eq!(
            allows(&p, Direction::Ingress, peer(FOO), Protocol::Tcp, port),
            ok,
            "{port}"
        );
    }
    assert!(!allows(
        &p,
        Direction::Ingress,
        peer(FOO),
        Protocol::Udp,
        80
    ));
}

#[test]
fn overlapping_allows_with_deny_range_carve_a_hole() {
    // Allows 80–90 and 90–100 + deny 85–95 → 80–84 allowed, 85–95 denied, 96–100 allowed.
    let p = ingress(vec![
        rule(1, RuleKind::Allow, PeerSet::All, Some(vec![tcp(80, 90)])),
        rule(2, RuleKind::Allow, PeerSet::All, Some(vec![tcp(90, 100)])),
        rule(3, RuleKind::Deny, PeerSet::All, Some(vec![tcp(85, 95)])),
    ]);
    for (port, ok) in [
        (79, false),
        (80, true),
        (84, true),
        (85, false),
        (95, false),
        (96, true),
        (100, true),
        (101, false),
    ] {
        assert_eq!(
            allows(&p, Direction::Ingress, peer(FOO), Protocol::Tcp, port),
            ok,
            "{port}"
        );
    }
}

#[test]
fn egress_allow_all_ports_with_deny_range() {
    // Allow all ports + deny 1–1024: 1–2 and 1023–1024 denied; 1025–1026 and 65534 allowed.
    let p = egress(vec![
        rule(1, RuleKind::Allow, PeerSet::All, Some(vec![tcp(0, 65535)])),
        rule(2, RuleKind::Deny, PeerSet::All, Some(vec![tcp(1, 1024)])),
    ]);
    for (port, ok) in [
        (1, false),
        (2, false),
        (1023, false),
        (1024, false),
        (1025, true),
        (1026, true),
        (65534, true),
    ] {
        assert_eq!(
            allows(&p, Direction::Egress, peer(FOO), Protocol::Tcp, port),
            ok,
            "{port}"
        );
    }
}

#[test]
fn cidr_rules_never_match_cluster_endpoints() {
    let p = ingress(vec![rule(
        1,
        RuleKind::Allow,
        PeerSet::cidrs(vec![CidrRule::new(cidr("10.0.0.0/8"))]),
        None,
    )]);
    // A pod whose address lies inside the prefix is still not matched.
    assert!(!allows(
        &p,
        Direction::Ingress,
        PeerInfo::new(FOO, ip("10.0.0.9")),
        Protocol::Tcp,
        80
    ));
    assert!(!allows(
        &p,
        Direction::Ingress,
        PeerInfo::new(NumericIdentity::REMOTE_NODE, ip("10.0.0.1")),
        Protocol::Tcp,
        80
    ));
    assert!(allows(
        &p,
        Direction::Ingress,
        world("10.0.0.9"),
        Protocol::Tcp,
        80
    ));
    assert!(allows(
        &p,
        Direction::Ingress,
        PeerInfo::new(NumericIdentity(0x0100_0002), ip("10.2.0.1")),
        Protocol::Tcp,
        80
    ));
    assert!(!allows(
        &p,
        Direction::Ingress,
        world("11.0.0.1"),
        Protocol::Tcp,
        80
    ));
}

#[test]
fn cidr_except_carves_a_hole_at_its_edges() {
    let p = egress(vec![rule(
        1,
        RuleKind::Allow,
        PeerSet::cidrs(vec![CidrRule::with_except(
            cidr("10.0.0.0/8"),
            vec![cidr("10.10.0.0/16")],
        )]),
        None,
    )]);
    for (addr, ok) in [
        ("10.9.255.255", true),
        ("10.10.0.0", false),
        ("10.10.255.255", false),
        ("10.11.0.0", true),
    ] {
        assert_eq!(
            allows(&p, Direction::Egress, world(addr), Protocol::Udp, 53),
            ok,
            "{addr}"
        );
    }
}

#[test]
fn deny_part_of_a_subnet_with_an_ip() {
    // allow-all + deny 192.0.2.3/32 + allow 192.0.2.0/24 → /32 denied, rest of /24 allowed.
    let p = ingress(vec![
        rule(1, RuleKind::Allow, PeerSet::All, None),
        rule(
            2,
            RuleKind::Deny,
            PeerSet::cidrs(vec![CidrRule::new(cidr("192.0.2.3/32"))]),
            None,
        ),
        rule(
            3,
            RuleKind::Allow,
            PeerSet::cidrs(vec![CidrRule::new(cidr("192.0.2.0/24"))]),
            None,
        ),
    ]);
    assert!(!allows(
        &p,
        Direction::Ingress,
        world("192.0.2.3"),
        Protocol::Tcp,
        80
    ));
    let v = verdict(
        &p,
        Direction::Ingress,
        world("192.0.2.4"),
        Protocol::Tcp,
        80,
    );
    assert_eq!(
        v,
        Verdict::Allow {
            basis: AllowBasis::Rules,
            rules: vec![RuleId(1), RuleId(3)]
        }
    );
}

#[test]
fn entity_all_matches_host_world_and_pods() {
    let p = ingress(vec![rule(1, RuleKind::Allow, PeerSet::All, None)]);
    for who in [
        peer(FOO),
        world("203.0.113.1"),
        PeerInfo::new(NumericIdentity::REMOTE_NODE, None),
    ] {
        assert!(allows(&p, Direction::Ingress, who, Protocol::Sctp, 9));
    }
}

#[test]
fn empty_l4_list_matches_nothing() {
    // E.g. a rule whose only named port is undefined on the pod.
    let p = ingress(vec![rule(1, RuleKind::Allow, PeerSet::All, Some(vec![]))]);
    assert!(!allows(
        &p,
        Direction::Ingress,
        peer(FOO),
        Protocol::Tcp,
        80
    ));
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    (
        1u32..5,
        any::<bool>(),
        prop::option::of(prop::collection::vec((0u16..200, 0u16..50), 0..3)),
        any::<bool>(),
    )
        .prop_map(|(id, deny, ports, all)| Rule {
            id: RuleId(id),
            kind: if deny {
                RuleKind::Deny
            } else {
                RuleKind::Allow
            },
            peers: if all {
                PeerSet::All
            } else {
                PeerSet::identities([FOO])
            },
            l4: ports.map(|v| v.into_iter().map(|(lo, len)| tcp(lo, lo + len)).collect()),
        })
}

proptest! {
    /// Deny always wins; otherwise any matching allow allows; otherwise default deny.
    #[test]
    fn verdict_is_deny_first_then_allow_then_default(rules in prop::collection::vec(arb_rule(), 0..6), port in 0u16..260, foo in any::<bool>()) {
        let who = peer(if foo { FOO } else { BAR });
        let p = ingress(rules.clone());
        let matching = |k: RuleKind| rules.iter().any(|r| r.kind == k && ciliumc_ir::evaluator::rule_matches(r, &who, Protocol::Tcp, port));
        let v = verdict(&p, Direction::Ingress, who, Protocol::Tcp, port);
        if matching(RuleKind::Deny) {
            let is_explicit = matches!(v, Verdict::Deny { reason: DropReason::PolicyDenyExplicit, .. });
            prop_assert!(is_explicit);
        } else if matching(RuleKind::Allow) {
            let is_rule_allow = matches!(v, Verdict::Allow { basis: AllowBasis::Rules, .. });
            prop_assert!(is_rule_allow);
        } else {
            prop_assert_eq!(v, Verdict::Deny { reason: DropReason::PolicyDenied, rules: vec![] });
        }
    }
}
