//! decode(encode(p)) == p over every valid instruction, slot counts, and precise decode errors.

mod isa_common;

use ciliumc_targets::isa::{
    DecodeError, DecodeReason, Insn, RawInsn, Reg, decode, decode_one, encode, opcode::*,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn decode_inverts_encode(p in isa_common::strategy::program()) {
        let raw = encode(&p);
        prop_assert_eq!(raw.len(), p.iter().map(Insn::slots).sum::<usize>());
        prop_assert_eq!(decode(&raw), Ok(p));
    }

    #[test]
    fn raw_bytes_round_trip(p in isa_common::strategy::program()) {
        let raw = encode(&p);
        let back: Vec<RawInsn> = raw.iter().map(|r| RawInsn::from_bytes(r.to_bytes())).collect();
        prop_assert_eq!(&back, &raw);
        let bytes = RawInsn::bytes_of(&raw);
        prop_assert_eq!(bytes.len(), 8 * raw.len());
        prop_assert_eq!(RawInsn::slots_from_bytes(&bytes), Some(raw));
        prop_assert_eq!(RawInsn::slots_from_bytes(&bytes[1..]), None);
    }

    /// Any slot sequence either decodes to something that re-encodes to the same slots, or fails
    /// with an error naming a slot inside the input.
    #[test]
    fn decode_is_exact_on_arbitrary_slots(words in prop::collection::vec(any::<[u8; 8]>(), 1..6)) {
        let raw: Vec<RawInsn> = words.into_iter().map(RawInsn::from_bytes).collect();
        match decode(&raw) {
            Ok(p) => prop_assert_eq!(encode(&p), raw),
            Err(e) => prop_assert!(e.index < raw.len()),
        }
    }
}

fn raw(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> RawInsn {
    RawInsn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

fn err_at(slots: &[RawInsn]) -> DecodeError {
    decode(slots).expect_err("must not decode")
}

#[test]
fn ld_imm64_takes_two_slots() {
    let p = [Insn::ld_imm64(Reg::R1, 0x1122_3344_5566_7788), Insn::exit()];
    let slots = encode(&p);
    assert_eq!(slots.len(), 3);
    assert_eq!(slots[0], raw(0x18, 1, 0, 0, 0x5566_7788));
    assert_eq!(slots[1], raw(0, 0, 0, 0, 0x1122_3344));
    assert_eq!(p[0].slots(), 2);
    assert_eq!(decode_one(&slots, 2).unwrap(), (Insn::Exit, 1));
}

#[test]
fn unknown_opcodes_are_reported_with_their_slot() {
    let exit = raw(0x95, 0, 0, 0, 0);
    for code in [
        0x00u8, 0x8c, 0x8f, 0xe4, 0xf7, 0xdf, 0x86, 0x96, 0x0d, 0x99, 0xd3, 0x38, 0x60,
    ] {
        let e = err_at(&[exit, raw(code, 0, 0, 0, 0)]);
        assert_eq!(e.index, 1, "opcode {code:#x}");
        assert_eq!(
            e.reason,
            DecodeReason::UnknownOpcode(code),
            "opcode {code:#x}"
        );
    }
}

#[test]
fn registers_above_r10_are_rejected() {
    let e = err_at(&[raw(0xbf, 11, 1, 0, 0)]);
    assert_eq!(
        e,
        DecodeError {
            index: 0,
            reason: DecodeReason::BadRegister {
                field: "dst",
                value: 11
            }
        }
    );
    let e = err_at(&[raw(0x0f, 1, 15, 0, 0)]);
    assert_eq!(
        e.reason,
        DecodeReason::BadRegister {
            field: "src",
            value: 15
        }
    );
    let e = err_at(&[raw(0x61, 1, 12, 0, 0)]);
    assert_eq!(
        e.reason,
        DecodeReason::BadRegister {
            field: "src",
            value: 12
        }
    );
}

#[test]
fn reserved_fields_must_be_zero() {
    let cases = [
        (raw(BPF_ALU64 | BPF_ADD | BPF_K, 1, 2, 0, 4), "src"),
        (raw(BPF_ALU64 | BPF_ADD | BPF_X, 1, 2, 0, 4), "imm"),
        (raw(BPF_ALU64 | BPF_ADD | BPF_K, 1, 0, 3, 4), "off"),
        (raw(BPF_JMP | BPF_EXIT, 0, 0, 0, 1), "imm"),
        (raw(BPF_JMP | BPF_JA, 1, 0, 0, 0), "dst"),
        (raw(BPF_JMP32 | BPF_JA, 0, 0, 1, 0), "off"),
        (raw(BPF_LDX | BPF_MEM | BPF_W, 1, 2, 0, 9), "imm"),
        (raw(BPF_ST | BPF_MEM | BPF_W, 1, 2, 0, 9), "src"),
        (raw(BPF_STX | BPF_MEM | BPF_W, 1, 2, 0, 9), "imm"),
        (raw(BPF_LD | BPF_ABS | BPF_W, 1, 0, 0, 9), "dst"),
        (raw(BPF_ALU64 | BPF_NEG, 1, 0, 0, 9), "imm"),
        (raw(BPF_JMP | BPF_CALL, 0, 0, 4, 1), "off"),
    ];
    for (slot, field) in cases {
        let e = err_at(&[slot]);
        assert!(
            matches!(e.reason, DecodeReason::Reserved { field: f, .. } if f == field),
            "{slot:?}: expected reserved {field}, got {e}"
        );
    }
}

#[test]
fn bad_field_values_are_explained() {
    let e = err_at(&[raw(BPF_STX | BPF_ATOMIC | BPF_DW, 1, 2, 0, 0x10)]);
    assert!(
        matches!(
            e.reason,
            DecodeReason::BadField {
                field: "imm",
                value: 0x10,
                ..
            }
        ),
        "{e}"
    );
    let e = err_at(&[raw(BPF_ALU | BPF_END, 1, 0, 0, 8)]);
    assert!(
        matches!(
            e.reason,
            DecodeReason::BadField {
                field: "imm",
                value: 8,
                ..
            }
        ),
        "{e}"
    );
    let e = err_at(&[raw(BPF_ALU64 | BPF_DIV | BPF_X, 1, 2, 2, 0)]);
    assert!(
        matches!(
            e.reason,
            DecodeReason::BadField {
                field: "off",
                value: 2,
                ..
            }
        ),
        "{e}"
    );
    let e = err_at(&[raw(BPF_ALU | BPF_MOV | BPF_X, 1, 2, 32, 0)]);
    assert!(
        matches!(
            e.reason,
            DecodeReason::BadField {
                field: "off",
                value: 32,
                ..
            }
        ),
        "{e}"
    );
    let e = err_at(&[raw(BPF_JMP | BPF_CALL, 0, 3, 0, 1)]);
    assert!(
        matches!(
            e.reason,
            DecodeReason::BadField {
                field: "src",
                value: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = err_at(&[raw(0x18, 1, 7, 0, 1), raw(0, 0, 0, 0, 0)]);
    assert!(
        matches!(
            e.reason,
            DecodeReason::BadField {
                field: "src",
                value: 7,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().starts_with("slot 0: "), "{e}");
}

#[test]
fn ld_imm64_tail_problems() {
    let exit = raw(0x95, 0, 0, 0, 0);
    let e = err_at(&[exit, raw(0x18, 1, 0, 0, 1)]);
    assert_eq!(
        e,
        DecodeError {
            index: 1,
            reason: DecodeReason::TruncatedLdImm64
        }
    );
    let e = err_at(&[raw(0x18, 1, 0, 0, 1), exit]);
    assert_eq!(
        e,
        DecodeError {
            index: 0,
            reason: DecodeReason::BadLdImm64Tail { code: 0x95 }
        }
    );
    let e = err_at(&[raw(0x18, 1, 0, 0, 1), raw(0, 1, 0, 0, 0)]);
    assert_eq!(e.reason, DecodeReason::BadLdImm64Tail { code: 0 });
}

#[test]
fn cpu_v4_encodings_match_the_kernel_documentation() {
    // Values from Documentation/bpf/standardization/instruction-set.rst.
    let p = [
        Insn::Alu {
            width: ciliumc_targets::isa::Width::Bits64,
            op: ciliumc_targets::isa::AluOp::SDiv,
            dst: Reg::R1,
            src: ciliumc_targets::isa::Operand::Reg(Reg::R2),
        },
        Insn::MovSx {
            width: ciliumc_targets::isa::Width::Bits64,
            dst: Reg::R1,
            src: Reg::R2,
            from: ciliumc_targets::isa::ExtFrom::B32,
        },
        Insn::Bswap {
            bits: ciliumc_targets::isa::SwapBits::B16,
            dst: Reg::R3,
        },
        Insn::LdxSx {
            size: ciliumc_targets::isa::SxSize::H,
            dst: Reg::R1,
            src: Reg::R2,
            off: -4,
        },
        Insn::Gotol { imm: 100_000 },
        Insn::CallKfunc { btf_id: 77, off: 0 },
    ];
    assert_eq!(
        encode(&p),
        vec![
            raw(0x3f, 1, 2, 1, 0),
            raw(0xbf, 1, 2, 32, 0),
            raw(0xd7, 3, 0, 0, 16),
            raw(0x89, 1, 2, -4, 0),
            raw(0x06, 0, 0, 0, 100_000),
            raw(0x85, 0, 2, 0, 77),
        ]
    );
}
