//! The endpoint's identity is a link-time constant (`lower::LOCAL_IDENTITY`): programs are
//! compiled without it and it is written into the code when the object is assembled. An
//! unenforced direction's program is therefore compiled once per process and shared; these tests
//! check that every object still carries its own identity and nothing else changes.

use ciliumc_compiler::compile::{self, MapPinning};
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{
    Direction, DirectionPolicy, L4Match, PeerSet, PortRange, Protocol, Rule, RuleId, RuleKind,
};

fn object(identity: u32, policy: &DirectionPolicy, direction: Direction) -> Vec<u8> {
    compile::direction_object(
        NumericIdentity(identity),
        policy,
        direction,
        "link-constants",
        MapPinning::Private,
    )
    .expect("compiles")
    .bytes
}

/// Offsets where `a` and `b` differ.
fn differences(a: &[u8], b: &[u8]) -> Vec<usize> {
    assert_eq!(a.len(), b.len(), "objects of different sizes");
    (0..a.len()).filter(|&i| a[i] != b[i]).collect()
}

/// Asserts that `a` and `b` differ only in 32-bit immediates holding `id_a` in `a` and `id_b`
/// in `b`, and returns how many such immediates there are.
fn only_the_identity_differs(a: &[u8], b: &[u8], id_a: u32, id_b: u32) -> usize {
    let diffs = differences(a, b);
    assert!(!diffs.is_empty(), "the identity must appear in the code");
    let mut starts: Vec<usize> = Vec::new();
    for d in diffs {
        // Each difference lies in a 4-byte window at an instruction's immediate (offset 4 of an
        // 8-byte slot) that holds the identity.
        let start = d - d % 8 + 4;
        assert!(d >= start, "byte {d} differs outside an immediate");
        if starts.last() != Some(&start) {
            starts.push(start);
        }
    }
    for &s in &starts {
        let imm = |bytes: &[u8]| u32::from_le_bytes(bytes[s..s + 4].try_into().expect("4 bytes"));
        assert_eq!((imm(a), imm(b)), (id_a, id_b), "immediate at byte {s}");
    }
    starts.len()
}

#[test]
fn unenforced_programs_differ_between_endpoints_only_in_the_identity() {
    for direction in [Direction::Ingress, Direction::Egress] {
        let policy = DirectionPolicy::unenforced();
        let first = object(1000, &policy, direction);
        let second = object(70_000, &policy, direction);
        // One event block, one identity.
        assert_eq!(
            only_the_identity_differs(&first, &second, 1000, 70_000),
            1,
            "{direction}"
        );
        // The shared code kept no endpoint's value: the first object again, byte for byte.
        assert_eq!(object(1000, &policy, direction), first, "{direction}");
    }
}

#[test]
fn enforced_programs_carry_their_identity_too() {
    let rule = Rule {
        id: RuleId(7),
        kind: RuleKind::Allow,
        peers: PeerSet::identities([NumericIdentity(2000)]),
        l4: Some(vec![L4Match::new(Protocol::Tcp, PortRange::single(80))]),
    };
    let policy = DirectionPolicy::enforced(Direction::Ingress, vec![rule]);
    let a = object(1000, &policy, Direction::Ingress);
    let b = object(0x00ff_ff01, &policy, Direction::Ingress);
    assert_eq!(only_the_identity_differs(&a, &b, 1000, 0x00ff_ff01), 1);
}
