//! Lowering + codegen + ELF emit of the `policy_datapath` bench's ingress program in a loop, for
//! `perf record` (where the compile time goes).
//!
//! `cargo run --release -p ciliumc-tests --example codegen_profile -- RULES LOOPS`

#[path = "../benches/policy_bench/setup.rs"]
#[allow(dead_code)]
mod setup;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let rules = args.next().unwrap_or(100);
    let loops = args.next().unwrap_or(500);
    let spec = setup::Spec::new(rules);
    let started = std::time::Instant::now();
    for _ in 0..loops {
        if let Err(e) = setup::compile_ours(&spec) {
            eprintln!("{rules} rules: {e}");
            std::process::exit(1);
        }
    }
    let each = started.elapsed() / loops as u32;
    println!("{rules} rules: {each:?} per compile (lowering, codegen, ELF), {loops} loops");
}
