//! Codegen throughput: check + instruction selection + register allocation + emit + link of a
//! policy-shaped program of about 20,000 eBPF instructions (goal: ≥ 5 M instructions/s, ≤ 4 ms).
//!
//! Run: `cargo bench -p ciliumc-targets --bench codegen`.

use std::time::{Duration, Instant};

use ciliumc_targets::codegen::testgen::{GenConfig, generate};
use ciliumc_targets::codegen::{
    AluOp, Cond, Function, FunctionBuilder, MapDecl, MapKind, Size, compile,
};
use ciliumc_targets::hooks::{Hook, TC_ACT_OK, TC_ACT_SHOT};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A policy-shaped program: parse Ethernet/IPv4/L4, one map lookup, then `rules` compare chains
/// over (peer identity, port) that each jump to allow or fall through.
fn policy_program(rules: usize) -> Vec<Function> {
    let mut f = FunctionBuilder::new("policy", Hook::TcIngress);
    let drop = f.block();
    let allow = f.block();
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    f.check_packet_bounds(data, end, 54, drop);
    let proto = f.load(data, 23, Size::B);
    let saddr = f.load(data, 26, Size::W);
    let dport_be = f.load(data, 36, Size::H);
    let dport = f.bswap(16, dport_be);
    let ipcache = f.map(MapDecl {
        name: "ipcache".into(),
        kind: MapKind::Hash,
        key_size: 4,
        value_size: 8,
    });
    let key = f.stack_slot(8);
    f.stack_store(key, 0, saddr, Size::W);
    let key_ptr = f.stack_addr(key);
    let hit = f.block();
    let miss = f.block();
    let found = f.map_lookup(ipcache, key_ptr);
    f.branch_null(found, miss, hit);
    let identity = f.vreg();
    f.switch_to(miss);
    f.assign_const(identity, 2);
    let rules_start = f.block();
    f.jump(rules_start);
    f.switch_to(hit);
    let id = f.load(found, 0, Size::W);
    f.assign(identity, id);
    f.jump(rules_start);
    f.switch_to(rules_start);
    for r in 0..rules {
        let next = f.block();
        let port_ok = f.block();
        let id_ok = f.block();
        f.branch(Cond::Ne, proto, [6, 17, 132][r % 3], next, port_ok);
        f.switch_to(port_ok);
        let lo = (r * 7 % 60000) as i64;
        let in_range = f.block();
        f.branch(Cond::Lt, dport, lo, next, in_range);
        f.switch_to(in_range);
        f.branch(Cond::Gt, dport, lo + 10, next, id_ok);
        f.switch_to(id_ok);
        let masked = f.alu(AluOp::And, identity, 0xffff);
        f.branch(Cond::Eq, masked, 256 + r as i64, allow, next);
        f.switch_to(next);
    }
    f.jump(drop);
    f.switch_to(allow);
    f.ret(TC_ACT_OK);
    f.switch_to(drop);
    f.ret(TC_ACT_SHOT);
    vec![f.finish().expect("bench program builds")]
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Time per pass for one function, to see where the time goes.
fn phase_breakdown(name: &str, module: &[Function]) {
    use ciliumc_targets::codegen::{
        LinkOptions, VReg, check, emit, isel, link, liveness, regalloc,
    };
    use std::collections::HashMap;
    let f = &module[0];
    let runs = 20;
    let mut t = [Duration::ZERO; 7];
    for _ in 0..runs {
        let mut lap = Instant::now();
        let mut mark = |i: usize, t: &mut [Duration; 7]| {
            t[i] += lap.elapsed();
            lap = Instant::now();
        };
        let rpo = liveness::reverse_postorder(f).expect("terminated");
        mark(0, &mut t);
        let live = liveness::liveness(f, &rpo);
        mark(1, &mut t);
        let info = check::check_function(f, &rpo, &live, &HashMap::new()).expect("checks");
        mark(2, &mut t);
        let m = isel::select(f, &rpo, &info);
        mark(3, &mut t);
        let params: Vec<VReg> = f.params.iter().map(|(v, _)| *v).collect();
        let alloc = regalloc::allocate(&m, &live, &params);
        mark(4, &mut t);
        let maps: Vec<String> = f.maps.iter().map(|m| m.name.clone()).collect();
        let blocks = emit::emit(&m, &alloc, &params, &maps);
        mark(5, &mut t);
        std::hint::black_box(
            link::link(
                &f.name,
                &f.section,
                blocks,
                f.blocks.len(),
                LinkOptions::default(),
            )
            .expect("links"),
        );
        mark(6, &mut t);
    }
    let names = [
        "order", "liveness", "check", "isel", "regalloc", "emit", "link",
    ];
    let parts: Vec<String> = names
        .iter()
        .zip(&t)
        .map(|(n, d)| format!("{n} {:?}", *d / runs))
        .collect();
    println!("codegen {name} phases: {}", parts.join(", "));
}

fn bench(c: &mut Criterion) {
    let policy = policy_program(3_330);
    let policy_insns: usize = compile(&policy)
        .expect("compiles")
        .iter()
        .map(|c| c.insns.len())
        .sum();
    let random = generate(
        7,
        &GenConfig {
            ops: 9_000,
            fold_width: 30,
            subprograms: false,
            ..GenConfig::default()
        },
    );
    let random_insns: usize = compile(&random)
        .expect("compiles")
        .iter()
        .map(|c| c.insns.len())
        .sum();

    phase_breakdown("policy", &policy);
    phase_breakdown("random", &random);
    // A plain timing summary first, so the numbers land in the log in instructions per second.
    // CPU time of this thread is reported too: on a shared, loaded machine wall time also counts
    // the time spent waiting for a core.
    for (name, module, insns) in [
        ("policy", &policy, policy_insns),
        ("random", &random, random_insns),
    ] {
        let runs = 50;
        let start = Instant::now();
        let cpu0 = thread_cpu_time();
        for _ in 0..runs {
            std::hint::black_box(compile(module).expect("compiles"));
        }
        let per = start.elapsed() / runs;
        let cpu = (thread_cpu_time() - cpu0) / runs;
        let rate = insns as f64 / per.as_secs_f64() / 1e6;
        let cpu_rate = insns as f64 / cpu.as_secs_f64() / 1e6;
        println!(
            "codegen {name}: {insns} insns, wall {per:?} per compile = {rate:.1} M insn/s; cpu {cpu:?} = {cpu_rate:.1} M insn/s"
        );
    }

    let mut g = c.benchmark_group("codegen");
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(policy_insns as u64));
    g.bench_function(format!("policy_{policy_insns}_insns"), |b| {
        b.iter(|| compile(&policy).expect("compiles"))
    });
    g.throughput(Throughput::Elements(random_insns as u64));
    g.bench_function(format!("random_{random_insns}_insns"), |b| {
        b.iter(|| compile(&random).expect("compiles"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
