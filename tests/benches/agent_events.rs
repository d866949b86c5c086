//! Agent event ingestion benchmark: memory, CPU and lost events of a real `ciliumc agent` while
//! flow events arrive at a controlled rate (issue 5: "agent memory idle and while ingesting
//! 100,000 events/s; events lost at that rate (goal 0)").
//!
//! It starts the agent (the release binary, in a node namespace with the demo's veths), applies
//! the compiled `testdata/demo`, loads the deathstar's ingress program again with aya against the
//! agent's pinned maps and runs it with `BPF_PROG_TEST_RUN` (`repeat` = batch size) on a UDP
//! packet it denies: one drop event per run into the agent's `ciliumc_events` ring, paced to the
//! target rate. Out: a markdown table on stdout (generated events, events the agent counted,
//! events lost per `ciliumc_evlost`, agent CPU%, VmRSS/VmHWM idle and under load).
//!
//! Run: `cargo build --release -p ciliumc && cargo bench -p ciliumc-tests --bench agent_events`
//! (env `CILIUMC_BIN` for another binary, `CILIUMC_BENCH_SECS` for the paced phases' length,
//! default 10). Everything it creates (agent, state directory, bpffs mount and pins, namespaces)
//! is removed at the end, also when it fails. Skips with a message where `bpf()` is refused
//! (fails instead with `CILIUMC_REQUIRE_KERNEL=1`).

#[path = "../tests/agent_support/mod.rs"]
mod agent_support;
#[path = "../tests/event_gen/mod.rs"]
mod event_gen;

use std::path::Path;
use std::time::{Duration, Instant};

use agent_support::{Agent, TempDir, Topology, compile, demo_dir};
use event_gen::{EventGen, TC_DROP, cpu_seconds, memory_kib};

/// Time between paced batches: short enough that a batch (rate × tick) stays far below the ring
/// (1 MiB ≈ 14,500 records) at every rate measured.
const TICK: Duration = Duration::from_millis(2);
/// Length of the idle measurement: CPU time is counted in clock ticks (10 ms), so 10 s resolve
/// 0.1%.
const IDLE: Duration = Duration::from_secs(10);
/// Largest single `BPF_PROG_TEST_RUN` of the unpaced phase.
const MAX_BATCH: u32 = 2_000;

/// Agent counters relevant here, from `ciliumc status -o json`.
#[derive(Clone, Copy)]
struct Counters {
    counted: u64,
    lost: u64,
}

fn counters(agent: &Agent) -> Counters {
    let st = agent.status();
    let counted = st["flows_seen"].as_u64().unwrap_or(0);
    let lost = st["events_lost"]
        .as_u64()
        .unwrap_or_else(|| panic!("the agent reports no events_lost: {st}"));
    Counters { counted, lost }
}

/// One measured phase.
struct Phase {
    name: String,
    seconds: f64,
    generated: u64,
    counted: u64,
    lost: u64,
    cpu_percent: f64,
    rss_peak_kib: u64,
    hwm_kib: u64,
}

/// Waits until the agent accounts for `generated` events since `base` (read or lost), at most
/// 5 s, and returns the counters then.
fn settle(agent: &Agent, base: Counters, generated: u64) -> Counters {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = counters(agent);
        if c.counted - base.counted + c.lost - base.lost >= generated || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Generates events at `rate` per second (`None`: as fast as one thread can) for `secs`.
fn phase(
    name: &str,
    agent: &Agent,
    pid: u32,
    generator: &EventGen,
    rate: Option<u64>,
    secs: f64,
) -> Phase {
    let base = counters(agent);
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let mut generated = 0u64;
    let mut rss_peak = 0u64;
    let mut next_sample = start;
    while start.elapsed().as_secs_f64() < secs {
        let batch = match rate {
            Some(r) => {
                let due = (start.elapsed().as_secs_f64() * r as f64) as u64;
                due.saturating_sub(generated).min(u64::from(u32::MAX)) as u32
            }
            None => MAX_BATCH,
        };
        if batch > 0 {
            let verdict = generator.run(batch).unwrap();
            assert_eq!(verdict, TC_DROP, "the generator's packet must be denied");
            generated += u64::from(batch);
        }
        if Instant::now() >= next_sample {
            rss_peak = rss_peak.max(memory_kib(pid).0);
            next_sample += Duration::from_millis(100);
        }
        if rate.is_some() {
            std::thread::sleep(TICK);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let (rss, hwm) = memory_kib(pid);
    let end = settle(agent, base, generated);
    Phase {
        name: name.into(),
        seconds,
        generated,
        counted: end.counted - base.counted,
        lost: end.lost - base.lost,
        cpu_percent: 100.0 * cpu / seconds,
        rss_peak_kib: rss_peak.max(rss),
        hwm_kib: hwm,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn main() {
    if ciliumc_tests::kernel_or_skip!().is_none() {
        return;
    }
    if std::env::var_os("CILIUMC_BIN").is_none() {
        let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/ciliumc");
        if !release.exists() {
            eprintln!(
                "{} is missing: run `cargo build --release -p ciliumc` first (or set CILIUMC_BIN)",
                release.display()
            );
            std::process::exit(2);
        }
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("CILIUMC_BIN", &release) };
    }
    let secs: f64 = std::env::var("CILIUMC_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);

    // Guards: dropped in reverse order (generator, agent + `--cleanup`, namespaces, directory),
    // also when a step panics.
    let dir = TempDir::new("evbench");
    let out = dir.0.join("out");
    compile(&demo_dir(), &out);
    let topo = Topology::new("v");
    let ifaces = topo.interfaces_file(&dir.0);
    let agent = Agent::start(&topo.node, &dir.0.join("state"), &ifaces);
    let applied = agent.apply(&out);
    assert!(
        applied.status.success(),
        "apply: {} {}",
        String::from_utf8_lossy(&applied.stderr),
        agent.log()
    );
    let pid = agent.child.as_ref().map(|c| c.id()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent.status()["reading_events"] != true {
        assert!(Instant::now() < deadline, "agent never opened the ring");
        std::thread::sleep(Duration::from_millis(20));
    }
    let generator = EventGen::new(&out, &agent.state.join("bpffs/maps"), 40_000).unwrap();

    // Idle: nothing arrives; the reader still polls on its timer.
    std::thread::sleep(Duration::from_secs(2));
    let idle_cpu0 = cpu_seconds(pid);
    let idle_start = Instant::now();
    std::thread::sleep(IDLE);
    let idle_cpu = 100.0 * (cpu_seconds(pid) - idle_cpu0) / idle_start.elapsed().as_secs_f64();
    let (idle_rss, idle_hwm) = memory_kib(pid);

    // One event per run, or every count below is off.
    let base = counters(&agent);
    assert_eq!(generator.run(100).unwrap(), TC_DROP);
    let after = settle(&agent, base, 100);
    assert_eq!(
        (after.counted - base.counted) + (after.lost - base.lost),
        100,
        "expected exactly one event per run"
    );

    let phases = [
        phase("10,000/s", &agent, pid, &generator, Some(10_000), secs),
        phase("100,000/s", &agent, pid, &generator, Some(100_000), secs),
        phase(
            "unpaced (max)",
            &agent,
            pid,
            &generator,
            None,
            secs.min(5.0),
        ),
    ];
    let version = std::process::Command::new(agent_support::ciliumc_bin())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "agent: {} ({version}), pid {pid}",
        agent_support::ciliumc_bin().display()
    );
    println!();
    println!(
        "| phase | seconds | generated | events/s | agent counted | lost (ciliumc_evlost) | agent CPU | VmRSS peak | VmHWM |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| idle (demo applied) | {:.1} | 0 | 0 | - | - | {idle_cpu:.1}% | {} | {} |",
        IDLE.as_secs_f64(),
        mib(idle_rss),
        mib(idle_hwm)
    );
    for p in &phases {
        println!(
            "| {} | {:.1} | {} | {:.0} | {} | {} | {:.1}% | {} | {} |",
            p.name,
            p.seconds,
            p.generated,
            p.generated as f64 / p.seconds,
            p.counted,
            p.lost,
            p.cpu_percent,
            mib(p.rss_peak_kib),
            mib(p.hwm_kib)
        );
    }
    for p in &phases {
        if p.counted + p.lost != p.generated {
            println!(
                "WARNING: {}: generated {} != counted {} + lost {}",
                p.name, p.generated, p.counted, p.lost
            );
        }
    }
    drop(generator);
}
