//! The clsact fallback (`ciliumc agent --tc-attach clsact`), on a kernel that also has tcx:
//! cls_bpf filters (direct action) at the agent's priority and handle on a clsact qdisc it
//! creates where none exists; real TCP/UDP allowed and denied; hot swaps of a generation replace
//! each filter in place (same priority and handle, new program) without losing a packet of a
//! stream that every generation allows; `kill -9` leaves the filters enforcing and a restart
//! adopts them without reloading (and takes over, in place, filters of its own that its state
//! forgot, as after a kill between attach and save); `--cleanup` removes the agent's filters
//! and the qdiscs it created, and leaves a qdisc that was there before, with its foreign filter,
//! alone.
//! Namespaces, veths and addresses (192.0.2.0/24) are the test's own. Needs `target/debug/ciliumc`.

mod agent_attach_support;
mod agent_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_attach_support::*;
use agent_support::*;

/// The demo's rule1 on `tcp_port`, plus UDP 5000 that every generation allows.
fn policy(tcp_port: u16) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: rule1\n  namespace: default\nspec:\n  endpointSelector:\n    matchLabels:\n      org: empire\n      class: deathstar\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        org: empire\n    toPorts:\n    - ports:\n      - port: \"{tcp_port}\"\n        protocol: TCP\n      - port: \"5000\"\n        protocol: UDP\n"
    )
}

/// Compiles one generation per TCP port from the same source directory (objects carry source
/// paths, so unchanged endpoints keep identical bytes).
fn generations(dir: &Path, ports: &[u16]) -> Vec<PathBuf> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(
        demo_dir().join("inventory.yaml"),
        src.join("inventory.yaml"),
    )
    .unwrap();
    ports
        .iter()
        .map(|p| {
            std::fs::write(src.join("policy.yaml"), policy(*p)).unwrap();
            let out = dir.join(format!("out{p}"));
            compile(&src, &out);
            out
        })
        .collect()
}

/// The agent's filters (priority 1, handle 0xc111) on every demo interface and hook.
fn agent_filters(node: &str) -> Vec<(String, String, Filter)> {
    let mut v = Vec::new();
    for (_, dev, _) in PODS {
        for dir in ["ingress", "egress"] {
            for f in tc_filters(node, dev, dir) {
                if f.pref == 1 {
                    v.push((dev.to_string(), dir.to_string(), f));
                }
            }
        }
    }
    v
}

fn tcp_verdicts(topo: &Topology, port: u16) -> (bool, bool) {
    let (ds, tf, xw) = (topo.pod("ds"), topo.pod("tf"), topo.pod("xw"));
    let srv = tcp_server(&ds, port, Duration::from_secs(8));
    let r = (
        tcp_ok(&tf, "192.0.2.10", port),
        tcp_ok(&xw, "192.0.2.10", port),
    );
    srv.join().unwrap();
    r
}

#[test]
fn clsact_fallback_enforces_swaps_in_place_survives_kill_9_and_cleans_up_only_its_own() {
    let Some(_k) = ciliumc_tests::kernel_or_skip!() else {
        return;
    };
    let dir = TempDir::new("clsact");
    let outs = generations(&dir.0, &[80, 81]);
    let topo = Topology::new("cl");
    let node = topo.node.clone();
    // A clsact qdisc that is not the agent's, with a (classic BPF, never matching) filter.
    tc(&node, &["qdisc", "add", "dev", "xw", "clsact"]);
    for hook in ["ingress", "egress"] {
        tc(
            &node,
            &[
                "filter",
                "add",
                "dev",
                "xw",
                hook,
                "pref",
                "101",
                "bpf",
                "bytecode",
                "1,6 0 0 0,",
            ],
        );
    }
    let ifile = topo.interfaces_file(&dir.0);
    let state = dir.0.join("state");
    let ifarg = ifile.display().to_string();
    let args = ["--interfaces", ifarg.as_str(), "--tc-attach", "clsact"];
    let mut agent = NodeAgent::start(&node, &state, &args);

    let r = agent.apply_ok(&outs[0]);
    assert_eq!(r["programs_attached"], 6, "{r}");
    assert!(agent.link_pins().is_empty(), "clsact mode pinned links");
    let filters = agent_filters(&node);
    assert_eq!(filters.len(), 6, "{filters:#?}");
    for (dev, hook, f) in &filters {
        assert_eq!(f.kind, "bpf", "{dev} {hook}");
        assert_eq!(f.handle, "0xc111", "{dev} {hook}");
        let want = if hook == "ingress" {
            "cil_from_container"
        } else {
            "cil_to_container"
        };
        assert_eq!(f.name, want, "{dev} {hook}: {f:?}");
    }
    let st = agent.state_json();
    let owned: Vec<&String> = st["clsact_qdiscs"].as_object().unwrap().keys().collect();
    assert_eq!(owned, ["ds", "tf"], "qdiscs the agent created: {st:#}");
    assert_eq!(tcp_verdicts(&topo, 80), (true, false));
    // UDP to the deathstar: 5000 allowed for the empire, 80 not.
    let (ds, tf) = (topo.pod("ds"), topo.pod("tf"));
    let echo = udp_echo(&ds, 5000, Duration::from_secs(4));
    assert!(udp_ok(&tf, "192.0.2.10", 5000));
    echo.join().unwrap();
    let echo = udp_echo(&ds, 80, Duration::from_secs(3));
    assert!(!udp_ok(&tf, "192.0.2.10", 80));
    echo.join().unwrap();

    // Hot swaps under a stream that every generation allows: only the deathstar changes, its
    // two filters are replaced in place (same priority/handle, new program ids).
    let path = PathDrops {
        points: vec![
            (topo.pod("tf"), "eth0".into()),
            (node.clone(), "tf".into()),
            (node.clone(), "ds".into()),
            (ds.clone(), "eth0".into()),
        ],
        server_ns: ds.clone(),
    };
    let drops_before = path.total();
    let load = UdpLoad::start(&ds, &tf, "192.0.2.10", 5000, 5_000);
    std::thread::sleep(Duration::from_millis(300));
    let mut ids = agent_filters(&node);
    for i in 0..10 {
        let out = &outs[(i + 1) % 2];
        let r = agent.apply_ok(out);
        assert_eq!(
            r["loaded"],
            serde_json::json!(["default/deathstar-0"]),
            "{r}"
        );
        assert_eq!(r["programs_swapped"], 2, "{r}");
        assert_eq!(r["programs_attached"], 0, "{r}");
        let now = agent_filters(&node);
        assert_eq!(now.len(), 6);
        for ((dev, hook, before), (dev2, hook2, after)) in ids.iter().zip(&now) {
            assert_eq!((dev, hook, &before.handle), (dev2, hook2, &after.handle));
            if dev == "ds" {
                assert_ne!(before.prog_id, after.prog_id, "{dev} {hook} not swapped");
            } else {
                assert_eq!(before.prog_id, after.prog_id, "{dev} {hook} touched");
            }
        }
        ids = now;
        std::thread::sleep(Duration::from_millis(100));
    }
    // Generation for port 80 is running again (10 swaps).
    assert_eq!(tcp_verdicts(&topo, 80), (true, false));
    assert_eq!(tcp_verdicts(&topo, 81), (false, false));

    // kill -9 during the stream: the filters keep enforcing; a restart adopts them.
    agent.kill9();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tcp_verdicts(&topo, 80), (true, false));
    agent.spawn();
    std::thread::sleep(Duration::from_millis(300));
    let (sent, got, misordered) = load.stop();
    let machine_drops = path.total() - drops_before;
    println!(
        "clsact: {sent} sent, {got} received, {misordered} misordered across 10 swaps and a \
         kill -9; {machine_drops} dropped by full socket buffers/backlogs (not the datapath)"
    );
    assert!(sent > 5_000, "sender too slow: {sent}");
    assert!(
        sent.saturating_sub(got) <= machine_drops,
        "{} packets lost beyond the {machine_drops} socket-buffer/backlog drops",
        sent.saturating_sub(got)
    );
    assert!(
        machine_drops * 100 <= sent,
        "machine too loaded to judge: {machine_drops} of {sent} dropped by buffers"
    );
    assert_eq!(misordered, 0);
    // Flow events of the datapath's drops: none on the stream's port.
    std::thread::sleep(Duration::from_millis(200));
    let dropped = observe(&state, &["--port", "5000", "--verdict", "DROPPED"]);
    assert!(
        dropped.is_empty(),
        "datapath dropped stream packets: {dropped:#?}"
    );
    assert_eq!(
        agent_filters(&node),
        ids,
        "restart did not adopt the filters"
    );
    assert!(
        agent.log().contains("adopted=3"),
        "reconcile log: {}",
        agent.log()
    );
    let st = agent.state_json();
    assert_eq!(st["generation"], 11);

    // Killed between attaching and saving its state (simulated: the state forgets the
    // deathstar): the restart finds filters with its programs' names at its priority/handle and
    // takes them over in place instead of failing or adding a second filter.
    agent.kill9();
    let mut st = agent.state_json();
    st["endpoints"]
        .as_object_mut()
        .unwrap()
        .remove("default/deathstar-0");
    std::fs::write(
        state.join("state.json"),
        serde_json::to_vec_pretty(&st).unwrap(),
    )
    .unwrap();
    agent.spawn();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        agent.log().contains("adopted=2 reloaded=1"),
        "reconcile log: {}",
        agent.log()
    );
    let after = agent_filters(&node);
    assert_eq!(after.len(), 6, "{after:#?}");
    for ((dev, hook, before), (_, _, now)) in ids.iter().zip(&after) {
        assert_eq!(before.handle, now.handle);
        assert_eq!(dev == "ds", before.prog_id != now.prog_id, "{dev} {hook}");
    }
    assert_eq!(tcp_verdicts(&topo, 80), (true, false));

    // A swap after the restart still replaces in place.
    let r = agent.apply_ok(&outs[1]);
    assert_eq!(r["programs_swapped"], 2, "{r}");
    assert_eq!(tcp_verdicts(&topo, 81), (true, false));
    let ours: Vec<u64> = agent_filters(&node).iter().map(|f| f.2.prog_id).collect();

    // Cleanup: our filters and the qdiscs we created go; the foreign qdisc and filters stay.
    let c = agent.cleanup();
    assert!(
        c.status.success(),
        "cleanup: {}",
        String::from_utf8_lossy(&c.stderr)
    );
    let text = String::from_utf8_lossy(&c.stdout);
    assert!(
        text.contains("6 tc filter(s)") && text.contains("2 clsact qdisc(s)"),
        "{text}"
    );
    assert!(agent_filters(&node).is_empty());
    assert!(!has_clsact(&node, "ds") && !has_clsact(&node, "tf"));
    assert!(
        has_clsact(&node, "xw"),
        "the foreign clsact qdisc was removed"
    );
    for hook in ["ingress", "egress"] {
        let left = tc_filters(&node, "xw", hook);
        assert!(
            left.iter().any(|f| f.pref == 101 && f.kind == "bpf"),
            "foreign {hook} filter removed: {left:?}"
        );
    }
    let loaded = prog_ids();
    assert!(
        ours.iter().all(|id| !loaded.contains(id)),
        "programs of removed filters still loaded"
    );
    assert!(!state.join("state.json").exists());
    assert!(!state.join("bpffs").exists());
    // Traffic flows without policy now.
    assert_eq!(tcp_verdicts(&topo, 80), (true, true));
}
