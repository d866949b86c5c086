//! Where the verifier spends its work on the bench's policy program.
//!
//! `cargo run --release -p ciliumc-tests --example verifier_profile -- 10 100`
//!
//! For each rule count: compiles the `policy_datapath` bench's ingress program, loads it with a
//! level-1 verifier log through the raw loader and prints the kernel's summary line, then how
//! many times each instruction was processed, grouped into stretches of consecutive slots that
//! were processed the same number of times (the stretches processed most often first). A
//! stretch processed N times is walked on N verifier paths: the candidates for merging paths.
//! Also times 21 program loads as the bench does (median, min).
//!
//! Environment: `VERIFIER_PROFILE_INSNS=1` prints the instructions of the top stretches,
//! `VERIFIER_PROFILE_LOADS_ONLY=1` only times loads (for `perf`), `VERIFIER_PROFILE_ORDER=1` all stretches in slot order, `VERIFIER_PROFILE_LISTING=FILE` writes
//! every processed instruction with its count, `VERIFIER_PROFILE_LOG=FILE` the level-2 log.

#[path = "../benches/policy_bench/setup.rs"]
#[allow(dead_code)]
mod setup;

use std::collections::BTreeMap;

/// The allocator `ciliumc` uses, so that compile times are the command's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![10, 100]
    } else {
        counts
    };
    for n in counts {
        let spec = setup::Spec::new(n);
        let object = match setup::compile_ours(&spec) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("{n} rules: {e}");
                std::process::exit(1);
            }
        };
        match setup::program_load_times(&object.bytes, 21) {
            Ok(times) => {
                println!(
                    "== {n} rules: program load (aya, verifier + JIT) min {:.2} ms, median {:.2} ms over {} loads",
                    times[0].as_secs_f64() * 1e3,
                    times[times.len() / 2].as_secs_f64() * 1e3,
                    times.len()
                );
            }
            Err(e) => {
                eprintln!("{n} rules: {e}");
                std::process::exit(1);
            }
        }
        if std::env::var_os("VERIFIER_PROFILE_LOADS_ONLY").is_some() {
            continue;
        }
        let stats = ciliumc_tests::loader::LoadOptions {
            verifier_log_level: 4,
        };
        if let Ok(l) = ciliumc_tests::loader::load_object_raw_with(&object.bytes, stats) {
            for p in l.programs.values() {
                for line in p.log.lines().filter(|l| l.contains("verification time")) {
                    println!("== {n} rules: {line}");
                }
            }
        }
        let options = ciliumc_tests::loader::LoadOptions {
            verifier_log_level: 2,
        };
        let loaded = match ciliumc_tests::loader::load_object_raw_with(&object.bytes, options) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{n} rules: {e}");
                std::process::exit(1);
            }
        };
        for (name, prog) in &loaded.programs {
            let log = &prog.log;
            let summary: Vec<&str> = log
                .lines()
                .filter(|l| l.starts_with("processed") || l.contains("stack depth"))
                .collect();
            println!("== {n} rules, {name}: {}", summary.join(" | "));
            let mut per_insn: BTreeMap<usize, usize> = BTreeMap::new();
            let mut text: BTreeMap<usize, String> = BTreeMap::new();
            for line in log.lines() {
                // Instruction lines look like `123: (bf) r1 = r6 ...`.
                let Some((idx, rest)) = line.split_once(": (") else {
                    continue;
                };
                if rest.len() < 3 {
                    continue;
                }
                if let Ok(i) = idx.trim().parse::<usize>() {
                    *per_insn.entry(i).or_default() += 1;
                    text.entry(i).or_insert_with(|| {
                        let insn = rest.split(" ; ").next().unwrap_or(rest);
                        format!("({insn}")
                    });
                }
            }
            let mut stretches: Vec<(usize, usize, usize)> = Vec::new();
            for (&i, &c) in &per_insn {
                match stretches.last_mut() {
                    Some((_, end, count)) if *count == c && *end + 3 >= i => *end = i,
                    _ => stretches.push((i, i, c)),
                }
            }
            let total: usize = per_insn.values().sum();
            println!("   instruction lines in the log: {total}");
            if let Some(path) = std::env::var_os("VERIFIER_PROFILE_LOG")
                && let Err(e) = std::fs::write(&path, log)
            {
                eprintln!("{}: {e}", std::path::Path::new(&path).display());
            }
            if let Some(path) = std::env::var_os("VERIFIER_PROFILE_LISTING") {
                let listing: String = text
                    .iter()
                    .map(|(i, t)| format!("{:>4}x {i:>5}: {t}\n", per_insn[i]))
                    .collect();
                if let Err(e) = std::fs::write(&path, listing) {
                    eprintln!("{}: {e}", std::path::Path::new(&path).display());
                }
            }
            if std::env::var_os("VERIFIER_PROFILE_ORDER").is_some() {
                let line: Vec<String> = stretches
                    .iter()
                    .map(|(s, e, c)| format!("{s}-{e}x{c}"))
                    .collect();
                println!("   in slot order: {}", line.join(" "));
            }
            stretches.sort_by_key(|&(s, e, c)| std::cmp::Reverse((c * (e - s + 1), s)));
            let mut buckets: BTreeMap<usize, usize> = BTreeMap::new();
            for (&i, &c) in &per_insn {
                *buckets.entry(i / 100 * 100).or_default() += c;
            }
            let line: Vec<String> = buckets.iter().map(|(b, c)| format!("{b}:{c}")).collect();
            println!("   per 100 slots: {}", line.join(" "));
            let verbose = std::env::var_os("VERIFIER_PROFILE_INSNS").is_some();
            for (s, e, c) in stretches.iter().take(25) {
                println!("   {s:>5}..{e:<5} x{c}");
                if verbose {
                    for (i, t) in text.range(s..=e) {
                        println!("          {i:>5}: {t}");
                    }
                }
            }
        }
    }
}
