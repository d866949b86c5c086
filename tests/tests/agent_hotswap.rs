//! Hot swap under load: a sender in the tiefighter's namespace pushes ≥ 10,000 numbered UDP
//! packets per second to the deathstar on a flow that every generation allows, while the agent
//! applies N generations (default 200, `CILIUMC_HOTSWAP_GENERATIONS`) that alternately admit and
//! deny a second flow (x-wing → deathstar:9001/UDP). Checks: no packet of the allowed flow lost
//! or reordered; after each apply that denies the second flow, no new x-wing packet arrives
//! later than 50 ms after the apply returned. Prints p50/p99 apply latency.

mod agent_support;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_support::*;

const POLICY_A: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: rule1
  namespace: default
spec:
  endpointSelector:
    matchLabels:
      org: empire
      class: deathstar
  ingress:
  - fromEndpoints:
    - matchLabels:
        org: empire
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      - port: "9000"
        protocol: UDP
"#;

const POLICY_B_EXTRA: &str = r#"  - fromEndpoints:
    - matchLabels:
        org: alliance
    toPorts:
    - ports:
      - port: "9001"
        protocol: UDP
"#;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn agent_hot_swaps_generations_under_load_without_loss() {
    let Some(_k) = ciliumc_tests::kernel_or_skip!() else {
        return;
    };
    let generations: usize = std::env::var("CILIUMC_HOTSWAP_GENERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = TempDir::new("swap");
    let (out_a, out_b) = (dir.0.join("out-a"), dir.0.join("out-b"));
    for (name, policy, out) in [
        ("src-a", POLICY_A.to_string(), &out_a),
        ("src-b", format!("{POLICY_A}{POLICY_B_EXTRA}"), &out_b),
    ] {
        let src = dir.0.join(name);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::copy(
            demo_dir().join("inventory.yaml"),
            src.join("inventory.yaml"),
        )
        .unwrap();
        std::fs::write(src.join("policy.yaml"), policy).unwrap();
        compile(&src, out);
    }
    let topo = Topology::new("s");
    let ifaces = topo.interfaces_file(&dir.0);
    let agent = Agent::start(&topo.node, &dir.0.join("state"), &ifaces);
    assert!(agent.apply(&out_a).status.success(), "{}", agent.log());
    let (ds, tf, xw) = (topo.pod("ds"), topo.pod("tf"), topo.pod("xw"));

    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let misordered = Arc::new(AtomicU64::new(0));
    // Arrival times of x-wing probes (9001).
    let probes: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = {
        let (stop, received, misordered, probes, ready_tx) = (
            stop.clone(),
            received.clone(),
            misordered.clone(),
            probes.clone(),
            ready_tx.clone(),
        );
        std::thread::spawn(move || {
            in_netns(&ds, move || {
                let main = UdpSocket::bind("0.0.0.0:9000").unwrap();
                let probe = UdpSocket::bind("0.0.0.0:9001").unwrap();
                for s in [&main, &probe] {
                    s.set_nonblocking(true).unwrap();
                    let size: libc::c_int = 8 << 20;
                    // SAFETY: setsockopt with a valid int on a socket we own.
                    unsafe {
                        use std::os::fd::AsRawFd;
                        libc::setsockopt(
                            s.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_RCVBUFFORCE,
                            &size as *const _ as *const libc::c_void,
                            std::mem::size_of::<libc::c_int>() as u32,
                        );
                    }
                }
                ready_tx.send(()).unwrap();
                let mut buf = [0u8; 64];
                let mut next = 0u64;
                let mut idle_since: Option<Instant> = None;
                loop {
                    let mut any = false;
                    while let Ok((n, _)) = main.recv_from(&mut buf) {
                        any = true;
                        if n >= 8 {
                            let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
                            if seq < next {
                                misordered.fetch_add(1, Ordering::Relaxed);
                            }
                            next = seq + 1;
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    while probe.recv_from(&mut buf).is_ok() {
                        any = true;
                        probes.lock().unwrap().push(Instant::now());
                    }
                    if stop.load(Ordering::Relaxed) {
                        // Drain what is still in flight, then stop.
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if !any && since.elapsed() > Duration::from_millis(300) {
                            break;
                        }
                    }
                    if !any {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        })
    };
    ready_rx.recv().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            in_netns(&tf, move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.connect("192.0.2.10:9000").unwrap();
                let start = Instant::now();
                let mut seq = 0u64;
                // 12 packets per millisecond: 12,000/s.
                while !stop.load(Ordering::Relaxed) {
                    let due = start.elapsed().as_micros() as u64 * 12 / 1000;
                    while seq < due {
                        let mut pkt = [0u8; 16];
                        pkt[..8].copy_from_slice(&seq.to_le_bytes());
                        if s.send(&pkt).is_ok() {
                            seq += 1;
                        }
                    }
                    std::thread::sleep(Duration::from_micros(300));
                }
                sent.store(seq, Ordering::SeqCst);
                start.elapsed()
            })
        })
    };
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            in_netns(&xw, move || {
                // A new, never reused source port per probe: each is a new flow judged by
                // policy (a reused port would hit the connection tracked under an earlier
                // generation, which Cilium semantics keep allowing).
                let mut port = 10_000u16;
                while !stop.load(Ordering::Relaxed) {
                    port = if port >= 60_000 { 10_000 } else { port + 1 };
                    if let Ok(s) = UdpSocket::bind(("0.0.0.0", port)) {
                        let _ = s.send_to(b"probe", "192.0.2.10:9001");
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
    };

    let mut latencies_us = Vec::new();
    let mut wall_ms = Vec::new();
    let mut deny_applied: Vec<(Instant, Instant)> = Vec::new();
    for g in 0..generations {
        let out = if g % 2 == 0 { &out_b } else { &out_a };
        let t0 = Instant::now();
        let r = agent.apply(out);
        let done = Instant::now();
        assert!(
            r.status.success(),
            "generation {g}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(report["programs_attached"], 0, "swaps only: {report}");
        latencies_us.push(report["latency_us"].as_u64().unwrap());
        wall_ms.push((done - t0).as_secs_f64() * 1000.0);
        if out == &out_a {
            deny_applied.push((t0, done));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    let elapsed = sender.join().unwrap();
    prober.join().unwrap();
    receiver.join().unwrap();

    let sent = sent.load(Ordering::SeqCst);
    let got = received.load(Ordering::SeqCst);
    let rate = sent as f64 / elapsed.as_secs_f64();
    latencies_us.sort_unstable();
    wall_ms.sort_by(f64::total_cmp);
    let probes = probes.lock().unwrap().clone();
    // For each switch to the denying generation: probes arriving more than 1 ms (in flight)
    // after the apply returned, before the next apply starts (20 ms later), are late; and the
    // last probe arriving after the apply started says when the new program took over.
    let mut late = 0usize;
    let mut enforce_ms = 0.0f64;
    for (t0, done) in &deny_applied {
        let window_end = *done + Duration::from_millis(20);
        late += probes
            .iter()
            .filter(|p| **p > *done + Duration::from_millis(1) && **p < window_end)
            .count();
        if let Some(last) = probes
            .iter()
            .filter(|p| **p > *t0 && **p < window_end)
            .max()
        {
            enforce_ms = enforce_ms.max((*last - *t0).as_secs_f64() * 1000.0);
        }
    }
    println!(
        "hot swap: {generations} generations, {sent} packets sent at {rate:.0}/s, {got} received, {} misordered; \
         apply latency (agent) p50 {} us p99 {} us; apply wall (CLI round trip) p50 {:.1} ms p99 {:.1} ms; \
         probes {}, late probes after a denying apply returned {late}, newly denied flow dropped at most {enforce_ms:.1} ms after the apply request",
        misordered.load(Ordering::SeqCst),
        percentile(&latencies_us, 0.5),
        percentile(&latencies_us, 0.99),
        wall_ms[wall_ms.len() / 2],
        wall_ms[((wall_ms.len() as f64 - 1.0) * 0.99).round() as usize],
        probes.len(),
    );
    assert!(rate >= 10_000.0, "sender managed only {rate:.0} packets/s");
    assert_eq!(got, sent, "packets lost on a flow every generation allows");
    assert_eq!(misordered.load(Ordering::SeqCst), 0);
    assert!(
        !probes.is_empty(),
        "the admitting generations never let a probe through"
    );
    assert_eq!(
        late, 0,
        "a newly denied flow still passed after its apply returned"
    );
}
