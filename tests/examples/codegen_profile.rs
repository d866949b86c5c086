//! Lowering + codegen + ELF emit of the `policy_datapath` bench's ingress program in a loop, for
//! `perf record` (where the compile time goes). With `endpoint`, also the endpoint's other
//! program (egress, unenforced in the bench), as `ciliumc compile` builds both.
//!
//! `cargo run --release -p ciliumc-tests --example codegen_profile -- RULES LOOPS [endpoint]`

#[path = "../benches/policy_bench/setup.rs"]
#[allow(dead_code)]
mod setup;

use ciliumc_compiler::compile::{self, MapPinning};
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{Direction, DirectionPolicy};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut numbers = args.iter().filter_map(|a| a.parse::<usize>().ok());
    let rules = numbers.next().unwrap_or(100);
    let loops = numbers.next().unwrap_or(500);
    let endpoint = args.iter().any(|a| a == "endpoint");
    let spec = setup::Spec::new(rules);
    let egress = DirectionPolicy::unenforced();
    let started = std::time::Instant::now();
    for _ in 0..loops {
        if let Err(e) = setup::compile_ours(&spec) {
            eprintln!("{rules} rules: {e}");
            std::process::exit(1);
        }
        if endpoint {
            let other = compile::direction_object(
                NumericIdentity(setup::LOCAL_IDENTITY),
                &egress,
                Direction::Egress,
                "bench",
                MapPinning::Private,
            );
            if let Err(e) = other {
                eprintln!("egress: {e}");
                std::process::exit(1);
            }
        }
    }
    let each = started.elapsed() / loops as u32;
    let what = if endpoint {
        "both programs of the endpoint"
    } else {
        "the ingress program"
    };
    println!(
        "{rules} rules: {each:?} per compile of {what} (lowering, codegen, ELF), {loops} loops"
    );
}
