//! The agent's reader of the per-CPU event rings: programs never wake the reader, so events are
//! found by its timed poll (a handful must reach `ciliumc observe` within 500 ms); and records
//! overwritten in a full ring before the reader got to them are reported as lost by
//! `ciliumc status`, so that generated = read + lost. Events come from the demo's deathstar ingress program, loaded
//! against the agent's pinned maps and run with `BPF_PROG_TEST_RUN` on a denied UDP packet.
//! Needs `target/debug/ciliumc` (`cargo build -p ciliumc`).

mod agent_support;
mod event_gen;

use std::time::{Duration, Instant};

use agent_support::*;
use event_gen::{EventGen, TC_DROP};

/// Records the rings hold: one ring per CPU the burst may run on.
fn ring_capacity_records() -> u64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    ciliumc_runtime::event_ring::RING_RECORDS * cpus
}

fn counted(status: &serde_json::Value) -> u64 {
    status["flows_seen"].as_u64().unwrap()
}

fn lost(status: &serde_json::Value) -> u64 {
    status["events_lost"]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no events_lost counter: {status}"))
}

#[test]
fn few_events_reach_observe_by_the_timed_poll_and_ring_overflow_is_counted_as_lost() {
    let Some(_k) = ciliumc_tests::kernel_or_skip!() else {
        return;
    };
    let dir = TempDir::new("evpoll");
    let out = dir.0.join("out");
    compile(&demo_dir(), &out);
    let topo = Topology::new("q");
    let ifaces = topo.interfaces_file(&dir.0);
    let agent = Agent::start(&topo.node, &dir.0.join("state"), &ifaces);
    agent.apply_expect_ok(&out);
    let pid = agent.child.as_ref().unwrap().id();
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent.status()["reading_events"] != true {
        assert!(
            Instant::now() < deadline,
            "agent never opened the ring: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let generator = EventGen::new(&out, &agent.state.join("bpffs/maps"), port).unwrap();

    // A handful of events: the timed poll finds them.
    let before = agent.status();
    let start = Instant::now();
    for _ in 0..5 {
        assert_eq!(
            generator.run(1).unwrap(),
            TC_DROP,
            "the probe must be denied"
        );
    }
    let filter = ["--port", &port.to_string(), "--verdict", "DENIED"];
    let flows = loop {
        let flows = agent.observe(&filter);
        let waited = start.elapsed();
        if flows.len() >= 5 {
            break flows;
        }
        assert!(
            waited < Duration::from_millis(500),
            "only {} of 5 events reached observe after {waited:?}",
            flows.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_millis(500),
        "5 events took {waited:?} to reach observe"
    );
    eprintln!("5 events reached observe after {waited:?}");
    assert_eq!(flows.len(), 5, "{flows:#?}");
    for f in &flows {
        assert_eq!(f["source"]["pod"], "tiefighter", "{f}");
        assert_eq!(f["destination"]["pod"], "deathstar-0", "{f}");
        assert_eq!(f["source"]["port"], port as u64, "{f}");
        assert_eq!(f["protocol"], "UDP", "{f}");
    }
    let after = agent.status();
    assert_eq!(counted(&after) - counted(&before), 5);
    assert_eq!(
        lost(&after),
        lost(&before),
        "nothing may be lost at 5 events"
    );

    // A burst into a ring nobody reads: what does not fit is lost, and counted.
    const BURST: u64 = 40_000;
    event_gen::signal(pid, libc::SIGSTOP);
    let burst = (|| -> Result<(), String> {
        for _ in 0..BURST / 1000 {
            let verdict = generator.run(1000)?;
            if verdict != TC_DROP {
                return Err(format!("verdict {verdict}"));
            }
        }
        Ok(())
    })();
    event_gen::signal(pid, libc::SIGCONT);
    burst.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = agent.status();
        let accounted = counted(&st) - counted(&after) + lost(&st) - lost(&after);
        if accounted >= BURST || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (read, dropped) = (counted(&st) - counted(&after), lost(&st) - lost(&after));
    eprintln!("burst of {BURST} into a stopped reader: read {read}, lost {dropped}");
    assert!(
        dropped > 0,
        "a {BURST}-event burst into a stopped reader lost nothing: {st}"
    );
    let capacity = ring_capacity_records();
    assert!(
        read <= capacity,
        "read {read} events, more than the rings hold ({capacity})"
    );
    assert_eq!(
        read + dropped,
        BURST,
        "generated {BURST} = read {read} + lost {dropped}"
    );
    let table = ciliumc(&["status", "--state", &agent.state.display().to_string()]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&format!("Events lost:    {}", lost(&st))),
        "{table}"
    );
}
