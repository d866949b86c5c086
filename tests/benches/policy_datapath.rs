//! Side-by-side benchmark of the compiled policy datapath against the Cilium-style anchor
//! (`../shared/anchors/cilium_style_policy.c`, built with clang-19 -O2 at bench time).
//!
//! In: nothing (policies are generated: N allow rules, rule i = one peer identity and one TCP
//! port). Out: a table on stdout (markdown), with, per rule count, ns/packet of both programs on
//! the same packets and equivalent map contents (`BPF_PROG_TEST_RUN`, repeat >= 100,000), the
//! ratio ours/anchor, codegen+emit time, kernel load time and verifier processed instructions.
//!
//! Run: `cargo bench -p ciliumc-tests --bench policy_datapath` (env `CILIUMC_BENCH_RULES=10,50`
//! to choose rule counts, `CILIUMC_BENCH_REPEAT` to change the repeat count). Skips with a
//! message where clang-19 is missing or `bpf()` is refused.

#[path = "policy_bench/setup.rs"]
mod setup;

use std::time::Instant;

use setup::{Anchor, Ours, PacketClass};

/// Program loads timed per rule count (median and minimum reported).
const LOAD_RUNS: usize = 11;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// Runs alternate between programs in the caller; the median of five damps a noisy neighbour.
fn median_of_runs(
    mut run: impl FnMut() -> Result<ciliumc_tests::sys::TestRunOutput, String>,
) -> Result<ciliumc_tests::sys::TestRunOutput, String> {
    let mut outs = Vec::new();
    for _ in 0..5 {
        outs.push(run()?);
    }
    outs.sort_by_key(|o| o.duration_ns);
    Ok(outs.swap_remove(2))
}

fn main() {
    if let Err(e) = ciliumc_tests::kernel::probe() {
        println!("SKIPPED: {e}");
        return;
    }
    let anchor_obj = match setup::build_anchor() {
        Ok(o) => o,
        Err(e) => {
            println!("SKIPPED: cannot build the anchor: {e}");
            return;
        }
    };
    let repeat: u32 = std::env::var("CILIUMC_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rule_counts = env_list("CILIUMC_BENCH_RULES", &[10, 50, 100, 1_000, 10_000]);
    println!("repeat {repeat}; kernel {}", setup::kernel_release());
    println!();
    println!(
        "| rules | packet | anchor ns | ours ns | ours/anchor | lowering | codegen+emit | prog load (median / min of {LOAD_RUNS}) | object load | verifier insns | insns |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &rule_counts {
        let spec = setup::Spec::new(n);
        let anchor = match Anchor::load(&anchor_obj, &spec) {
            Ok(a) => a,
            Err(e) => {
                println!("| {n} | anchor failed: {e} |");
                continue;
            }
        };
        let codegen_started = Instant::now();
        let object = match setup::compile_ours(&spec) {
            Ok(o) => o,
            Err(e) => {
                println!("| {n} | ours failed to compile: {e} |");
                continue;
            }
        };
        let once = codegen_started.elapsed();
        let (lowering, codegen) = setup::codegen_time(&spec).unwrap_or((once, once));
        let load_times = match setup::program_load_times(&object.bytes, LOAD_RUNS) {
            Ok(t) => t,
            Err(e) => {
                println!("| {n} | ours failed to load: {e} |");
                continue;
            }
        };
        let load_median = load_times[load_times.len() / 2];
        let load_min = load_times[0];
        let ours = match Ours::load(&object, &spec) {
            Ok(o) => o,
            Err(e) => {
                println!("| {n} | ours failed to load: {e} |");
                continue;
            }
        };
        for class in PacketClass::ALL {
            let packet = spec.packet(class);
            let a = median_of_runs(|| anchor.run(&packet, repeat));
            let o = median_of_runs(|| ours.run(&packet, repeat));
            match (a, o) {
                (Ok(a), Ok(o)) => {
                    assert_eq!(
                        a.retval, o.retval,
                        "{n} rules, {class:?}: anchor and ours disagree on the verdict"
                    );
                    println!(
                        "| {n} | {} | {} | {} | {:.2} | {:.3} ms | {:.3} ms | {:.2} / {:.2} ms | {:.2} ms | {} | {} |",
                        class.describe(),
                        a.duration_ns,
                        o.duration_ns,
                        f64::from(o.duration_ns) / f64::from(a.duration_ns.max(1)),
                        lowering.as_secs_f64() * 1e3,
                        codegen.as_secs_f64() * 1e3,
                        load_median.as_secs_f64() * 1e3,
                        load_min.as_secs_f64() * 1e3,
                        ours.object_time.as_secs_f64() * 1e3,
                        ours.verified_insns,
                        ours.insns,
                    );
                }
                (a, o) => println!("| {n} | {} | run failed: {a:?} {o:?} |", class.describe()),
            }
        }
        let lost = ours.stop_events();
        if lost.1 > 0 {
            println!("| {n} | events: {} read, ring full at times |", lost.0);
        }
    }
}
