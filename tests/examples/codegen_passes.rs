//! Where one program's compile time goes, pass by pass: the `policy_datapath` bench's ingress
//! program (and an unenforced egress one), lowered and compiled in a loop, with each codegen pass
//! of the entry program (or of function `FN=i` of the module) timed on its own.
//!
//! `cargo run --release -p ciliumc-tests --example codegen_passes -- [RULES]`

#[path = "../benches/policy_bench/setup.rs"]
#[allow(dead_code)]
mod setup;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ciliumc_compiler::lower;
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{Direction, DirectionPolicy};
use ciliumc_targets::codegen::{
    CodegenOptions, LinkOptions, SlotSharing, VReg, check, compile_with, emit, isel, link,
    liveness, regalloc, slots,
};

/// The allocator `ciliumc` uses, so that compile times are the command's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LOOPS: u32 = 2000;
const PASSES: [&str; 8] = [
    "rpo", "liveness", "check", "slots", "isel", "regalloc", "emit", "link",
];

fn main() {
    let rules: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let which: usize = std::env::var("FN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let spec = setup::Spec::new(rules);
    let started = Instant::now();
    for _ in 0..LOOPS {
        std::hint::black_box(lower::flatten::flatten(&spec.policy));
    }
    println!("{rules} rules: flatten {:?}", started.elapsed() / LOOPS);
    let unenforced = DirectionPolicy::unenforced();
    for (policy, direction) in [
        (&spec.policy, Direction::Ingress),
        (&unenforced, Direction::Egress),
    ] {
        if let Err(e) = passes(policy, direction, which) {
            eprintln!("{direction}: {e}");
            std::process::exit(1);
        }
    }
}

fn passes(policy: &DirectionPolicy, direction: Direction, which: usize) -> Result<(), String> {
    let options = lower::LowerOptions::for_tag("bench");
    let lower_once = || {
        lower::lower_direction_with(
            NumericIdentity(setup::LOCAL_IDENTITY),
            policy,
            direction,
            &options,
        )
        .map_err(|e| e.to_string())
    };
    let started = Instant::now();
    for _ in 0..LOOPS {
        lower_once()?;
    }
    let lowering = started.elapsed() / LOOPS;
    let lowered = lower_once()?;
    let started = Instant::now();
    for _ in 0..LOOPS {
        compile_with(&lowered.functions, CodegenOptions::default()).map_err(|e| e.to_string())?;
    }
    let module = started.elapsed() / LOOPS;
    // The checker needs the callees' signatures; none of ours moves packet data.
    let callees: HashMap<String, check::CalleeSig> = lowered
        .functions
        .iter()
        .map(|f| {
            let sig = check::CalleeSig {
                params: f.params.iter().map(|p| p.1).collect(),
                changes_packet: None,
            };
            (f.name.clone(), sig)
        })
        .collect();
    let f = &lowered.functions[which.min(lowered.functions.len() - 1)];
    let mut times = [Duration::ZERO; PASSES.len()];
    for _ in 0..LOOPS {
        let mut t = Instant::now();
        let mut lap = |i: usize| {
            times[i] += t.elapsed();
            t = Instant::now();
        };
        let rpo = liveness::reverse_postorder(f).map_err(|b| format!("block {b}"))?;
        lap(0);
        let live = liveness::liveness(f, &rpo);
        lap(1);
        let info = check::check_function(f, &rpo, &live, &callees).map_err(|e| e.to_string())?;
        lap(2);
        let layout = slots::layout(f, &rpo, SlotSharing::Shared);
        lap(3);
        let m = isel::select_with_layout(f, &rpo, &info, &layout);
        lap(4);
        let params: Vec<VReg> = f.params.iter().map(|(v, _)| *v).collect();
        let alloc = regalloc::allocate(&m, &live, &params);
        lap(5);
        let maps: Vec<String> = f.maps.iter().map(|m| m.name.clone()).collect();
        let blocks = emit::emit(&m, &alloc, &params, &maps);
        lap(6);
        link::link(
            &f.name,
            &f.section,
            blocks,
            f.blocks.len(),
            LinkOptions::default(),
        )
        .map_err(|e| e.to_string())?;
        lap(7);
    }
    let insts: usize = f.blocks.iter().map(|b| b.insts.len()).sum();
    println!(
        "{direction}: lowering {lowering:?}, codegen of the module ({} functions) {module:?}",
        lowered.functions.len()
    );
    print!(
        "  {}: {} blocks, {insts} instructions, {} values:",
        f.name,
        f.blocks.len(),
        f.num_vregs
    );
    for (name, t) in PASSES.iter().zip(times) {
        print!(" {name} {:?}", t / LOOPS);
    }
    println!();
    Ok(())
}
