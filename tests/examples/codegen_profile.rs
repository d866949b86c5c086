//! Lowering + codegen + ELF emit of the `policy_datapath` bench's ingress program in a loop, for
//! `perf record` (where the compile time goes). With `endpoint`, the endpoint's object as
//! `ciliumc compile` writes it: both programs (egress unenforced), maps named per endpoint.
//!
//! `cargo run --release -p ciliumc-tests --example codegen_profile -- RULES LOOPS [endpoint]`

#[path = "../benches/policy_bench/setup.rs"]
#[allow(dead_code)]
mod setup;

use ciliumc_compiler::compile::{self, MapPinning};

/// The allocator `ciliumc` uses, so that compile times are the command's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut numbers = args.iter().filter_map(|a| a.parse::<usize>().ok());
    let rules = numbers.next().unwrap_or(100);
    let loops = numbers.next().unwrap_or(500);
    let endpoint = args.iter().any(|a| a == "endpoint");
    let spec = setup::Spec::new(rules);
    let (ep, policy) = setup::endpoint(&spec);
    let started = std::time::Instant::now();
    for _ in 0..loops {
        let compiled = if endpoint {
            compile::endpoint_object_with_maps(&ep, &policy, MapPinning::ByName, None)
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            setup::compile_ours(&spec).map(|_| ())
        };
        if let Err(e) = compiled {
            eprintln!("{rules} rules: {e}");
            std::process::exit(1);
        }
    }
    let each = started.elapsed() / loops as u32;
    let what = if endpoint {
        "the endpoint's object (both programs)"
    } else {
        "the ingress program's object"
    };
    println!(
        "{rules} rules: {each:?} per compile of {what} (lowering, codegen, ELF), {loops} loops"
    );
}
