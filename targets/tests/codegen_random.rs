//! Random IR programs: lowering accepts them, emitted code reads only defined registers and stack on
//! every path, and the emitted eBPF computes what the IR computes (two interpreters).

use ciliumc_targets::codegen::interp::{CtxInput, run_bpf, run_ir};
use ciliumc_targets::codegen::testgen::{GenConfig, PACKET_MIN, generate};
use ciliumc_targets::codegen::{CodegenOptions, compile, compile_with, regcheck};
use proptest::prelude::*;

fn input(seed: u64, len: usize) -> CtxInput {
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    CtxInput {
        packet: (0..len).map(|_| next() as u8).collect(),
        mark: next() as u32,
        priority: next() as u32,
        cb: [next() as u32, next() as u32, 0, 0, 0],
    }
}

fn run_case(seed: u64, cfg: &GenConfig) {
    let module = generate(seed, cfg);
    let code = compile(&module).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    for (f, c) in module.iter().zip(&code) {
        regcheck::check_defined(&c.insns, f.params.len() as u8)
            .unwrap_or_else(|e| panic!("seed {seed}, {}: {e}", c.name));
    }
    for (k, len) in [(1u64, PACKET_MIN as usize + 20), (2, 64), (3, 20)] {
        let inp = input(seed.wrapping_mul(31).wrapping_add(k), len);
        let want =
            run_ir(&module, "gen_main", &inp).unwrap_or_else(|e| panic!("seed {seed}: ir: {e}"));
        let got =
            run_bpf(&code, "gen_main", &inp).unwrap_or_else(|e| panic!("seed {seed}: bpf: {e}"));
        assert_eq!(got, want, "seed {seed}, input {k}");
    }
}

#[test]
fn first_seeds_agree() {
    for seed in 0..200 {
        run_case(seed, &GenConfig::default());
    }
}

#[test]
fn nondeterministic_helpers_agree_between_interpreters() {
    let cfg = GenConfig {
        deterministic: false,
        ..GenConfig::default()
    };
    for seed in 0..100 {
        run_case(seed, &cfg);
    }
}

#[test]
fn register_pressure_spills_and_still_agrees() {
    let cfg = GenConfig {
        ops: 200,
        fold_width: 40,
        ..GenConfig::default()
    };
    let mut spilled = 0;
    for seed in 0..60 {
        run_case(seed, &cfg);
        let (_, stats) = compile_with(&generate(seed, &cfg), CodegenOptions::default()).unwrap();
        spilled += stats[0].spills;
    }
    assert!(spilled > 0, "the pressure test never spilled");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_programs_agree(seed in any::<u64>(), ops in 5usize..150, fold in 1usize..40,
                             packet in any::<bool>(), sub in any::<bool>(), helpers in any::<bool>()) {
        let cfg = GenConfig { ops, fold_width: fold, packet, subprograms: sub, helpers, deterministic: true };
        run_case(seed, &cfg);
    }
}
