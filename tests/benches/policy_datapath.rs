//! Side-by-side benchmark of the compiled policy datapath against the Cilium-style anchor
//! (`../shared/anchors/cilium_style_policy.c`, built with clang-19 -O2 at bench time).
//!
//! In: nothing (policies are generated: N allow rules, rule i = one peer identity and one TCP
//! port). Out: a table on stdout (markdown), with, per rule count, ns/packet of both programs on
//! the same packets and equivalent map contents (`BPF_PROG_TEST_RUN`, repeat >= 100,000; median
//! and minimum of 7 runs alternating between the programs), the ratios ours/anchor of both,
//! codegen+emit time of the ingress program's object and of the endpoint's object (both
//! programs, as `ciliumc compile` writes it), kernel load time and verifier processed
//! instructions.
//!
//! Run: `cargo bench -p ciliumc-tests --bench policy_datapath` (env `CILIUMC_BENCH_RULES=10,50`
//! to choose rule counts, `CILIUMC_BENCH_REPEAT` to change the repeat count, `CILIUMC_BENCH_PORTS=3`
//! for rules over 3 distinct ports). Skips with a
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

/// Runs of each program per packet class, alternating anchor and ours so that both see the same
/// neighbours.
const RUNS: usize = 7;

/// Median and minimum duration of both programs over [`RUNS`] alternating runs: the median damps
/// a noisy neighbour, the minimum is the run least disturbed by one.
struct Timing {
    anchor: (u32, u32),
    ours: (u32, u32),
    anchor_retval: u32,
    ours_retval: u32,
}

fn alternating_runs(
    mut anchor: impl FnMut() -> Result<ciliumc_tests::sys::TestRunOutput, String>,
    mut ours: impl FnMut() -> Result<ciliumc_tests::sys::TestRunOutput, String>,
) -> Result<Timing, String> {
    let (mut a, mut o) = (Vec::new(), Vec::new());
    let (mut anchor_retval, mut ours_retval) = (0, 0);
    for _ in 0..RUNS {
        let run = anchor()?;
        anchor_retval = run.retval;
        a.push(run.duration_ns);
        let run = ours()?;
        ours_retval = run.retval;
        o.push(run.duration_ns);
    }
    a.sort_unstable();
    o.sort_unstable();
    Ok(Timing {
        anchor: (a[RUNS / 2], a[0]),
        ours: (o[RUNS / 2], o[0]),
        anchor_retval,
        ours_retval,
    })
}

/// The allocator `ciliumc` uses, so that compile times are the command's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        "| rules | packet | anchor ns (median / min of {RUNS}) | ours ns | ours/anchor (median / min) | lowering | codegen+emit | endpoint object | prog load (median / min of {LOAD_RUNS}) | object load | verifier insns | insns |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
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
        let endpoint = match setup::endpoint_compile_time(&spec) {
            Ok(t) => t,
            Err(e) => {
                println!("| {n} | the endpoint's object failed to compile: {e} |");
                continue;
            }
        };
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
            match alternating_runs(|| anchor.run(&packet, repeat), || ours.run(&packet, repeat)) {
                Ok(t) => {
                    assert_eq!(
                        t.anchor_retval, t.ours_retval,
                        "{n} rules, {class:?}: anchor and ours disagree on the verdict"
                    );
                    let ratio = |ours: u32, anchor: u32| f64::from(ours) / f64::from(anchor.max(1));
                    println!(
                        "| {n} | {} | {} / {} | {} / {} | {:.2} / {:.2} | {:.3} ms | {:.3} ms | {:.3} ms | {:.2} / {:.2} ms | {:.2} ms | {} | {} |",
                        class.describe(),
                        t.anchor.0,
                        t.anchor.1,
                        t.ours.0,
                        t.ours.1,
                        ratio(t.ours.0, t.anchor.0),
                        ratio(t.ours.1, t.anchor.1),
                        lowering.as_secs_f64() * 1e3,
                        codegen.as_secs_f64() * 1e3,
                        endpoint.as_secs_f64() * 1e3,
                        load_median.as_secs_f64() * 1e3,
                        load_min.as_secs_f64() * 1e3,
                        ours.object_time.as_secs_f64() * 1e3,
                        ours.verified_insns,
                        ours.insns,
                    );
                }
                Err(e) => println!("| {n} | {} | run failed: {e} |", class.describe()),
            }
        }
        let lost = ours.stop_events();
        if lost.1 > 0 {
            println!("| {n} | events: {} read, ring full at times |", lost.0);
        }
    }
}
