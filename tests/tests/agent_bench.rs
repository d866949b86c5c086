//! Agent benchmarks (ignored by default; run with `--ignored --nocapture`, numbers go to
//! `docs/performance.md`, section "Agent (issue 5)"):
//! - apply latency of a generation that changes 100 endpoints and one that changes 1, on 100
//!   endpoints attached to veth interfaces in a namespace the test creates;
//!
//! Agent memory and event loss at 100,000 events/s: `cargo bench -p ciliumc-tests --bench
//! agent_events` (events generated with `BPF_PROG_TEST_RUN` into the agent's pinned ring).

mod agent_support;

use std::process::Command;

use agent_support::*;

fn inventory(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\nstatus:\n  addresses:\n  - type: InternalIP\n    address: 198.51.100.1\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i:03}\n  namespace: default\n  labels:\n    app: p{i:03}\n    tier: t{}\nspec:\n  nodeName: node-1\n  containers:\n  - name: c\n    image: x\nstatus:\n  podIP: 192.0.2.{}\n",
            i % 2,
            i + 1
        ));
    }
    s
}

fn policies(all_port: u16, one_port: u16) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: all\n  namespace: default\nspec:\n  endpointSelector: {{}}\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        tier: t1\n    toPorts:\n    - ports:\n      - port: \"{all_port}\"\n        protocol: TCP\n---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: one\n  namespace: default\nspec:\n  endpointSelector:\n    matchLabels:\n      app: p000\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        tier: t0\n    toPorts:\n    - ports:\n      - port: \"{one_port}\"\n        protocol: TCP\n"
    )
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The node namespace holding the benchmark's interfaces, removed on drop.
struct DummyNode(String);

impl Drop for DummyNode {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_apply_latency_1_and_100_endpoints() {
    let Some(_k) = ciliumc_tests::kernel_or_skip!() else {
        return;
    };
    const N: usize = 100;
    let dir = TempDir::new("bench");
    let states = [(80, 8080), (81, 8080), (81, 8081), (80, 8081)];
    let mut outs = Vec::new();
    for (i, (a, b)) in states.iter().enumerate() {
        // One source directory for all states: objects carry source locations, so a
        // different path would change every object.
        let src = dir.0.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("inventory.yaml"), inventory(N)).unwrap();
        std::fs::write(src.join("policy.yaml"), policies(*a, *b)).unwrap();
        let out = dir.0.join(format!("out{i}"));
        compile(&src, &out);
        outs.push(out);
    }
    let node = DummyNode(format!("ccb{}n", std::process::id() % 100_000));
    assert!(
        run(Command::new("ip").args(["netns", "add", &node.0]))
            .status
            .success()
    );
    let mut ifaces = String::new();
    for i in 0..N {
        // veth pairs (this kernel has no dummy driver); the `e` ends stay down.
        let d = format!("d{i}");
        let e = format!("e{i}");
        let ok = |args: &[&str]| {
            assert!(
                run(Command::new("ip").args(args)).status.success(),
                "ip {args:?}"
            )
        };
        ok(&[
            "-n", &node.0, "link", "add", &d, "type", "veth", "peer", "name", &e,
        ]);
        ok(&["-n", &node.0, "link", "set", &d, "up"]);
        ifaces.push_str(&format!("default/p{i:03}: {d}\n"));
    }
    let ifile = dir.0.join("interfaces");
    std::fs::write(&ifile, ifaces).unwrap();
    let agent = Agent::start(&node.0, &dir.0.join("state"), &ifile);
    let pid = agent.child.as_ref().unwrap().id();
    let apply = |out: &std::path::Path| -> serde_json::Value {
        let r = agent.apply(out);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        serde_json::from_slice(&r.stdout).unwrap()
    };
    let first = apply(&outs[0]);
    assert_eq!(first["programs_attached"], 2 * N as u64);
    let rss_idle = vm_rss_kib(pid);
    let (mut hundred, mut one) = (Vec::new(), Vec::new());
    for round in 0..5 {
        for (i, out) in outs
            .iter()
            .enumerate()
            .skip(1)
            .chain(std::iter::once((0, &outs[0])))
        {
            let r = apply(out);
            let loaded = r["loaded"].as_array().unwrap().len();
            let us = r["latency_us"].as_u64().unwrap();
            match loaded {
                N => hundred.push(us),
                1 => one.push(us),
                other => panic!("round {round} state {i}: {other} endpoints changed"),
            }
        }
    }
    println!(
        "apply latency over {N} endpoints: 100 changed p50 {:.1} ms p99 {:.1} ms ({} runs); 1 changed p50 {:.1} ms p99 {:.1} ms ({} runs); first attach {:.1} ms; agent RSS after apply {} KiB",
        percentile(&mut hundred, 0.5) as f64 / 1000.0,
        percentile(&mut hundred, 0.99) as f64 / 1000.0,
        hundred.len(),
        percentile(&mut one, 0.5) as f64 / 1000.0,
        percentile(&mut one, 0.99) as f64 / 1000.0,
        one.len(),
        first["latency_us"].as_u64().unwrap() as f64 / 1000.0,
        rss_idle
    );
}
