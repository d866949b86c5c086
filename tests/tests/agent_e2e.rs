//! End-to-end tests of `ciliumc agent` on the star-wars demo: real TCP/UDP traffic between
//! network namespaces the test creates, flows from `ciliumc observe`, refusal of bad generations
//! while the running one keeps working, `kill -9` + restart reconciliation, `--cleanup` leaving
//! no links, programs or pins. Needs `target/debug/ciliumc` (`cargo build -p ciliumc`).

mod agent_support;

use std::time::Duration;

use agent_support::*;

fn flows_between<'a>(
    flows: &'a [serde_json::Value],
    from: &str,
    to: &str,
    port: u64,
) -> Vec<&'a serde_json::Value> {
    flows
        .iter()
        .filter(|f| {
            f["source"]["pod"] == from
                && f["destination"]["pod"] == to
                && f["destination"]["port"] == port
        })
        .collect()
}

#[test]
fn agent_enforces_policy_reports_flows_and_refuses_bad_generations() {
    let Some(_k) = ciliumc_tests::kernel_or_skip!() else {
        return;
    };
    let dir = TempDir::new("e2e");
    let out = dir.0.join("out");
    compile(&demo_dir(), &out);
    let topo = Topology::new("e");
    let ifaces = topo.interfaces_file(&dir.0);
    let agent = Agent::start(&topo.node, &dir.0.join("state"), &ifaces);
    agent.apply_expect_ok(&out);

    let (ds, tf, xw) = (topo.pod("ds"), topo.pod("tf"), topo.pod("xw"));
    assert_demo_enforced(&topo);
    // UDP: the deathstar allows only TCP/80; the x-wing has no policy.
    let u1 = udp_echo(&ds, 80, Duration::from_secs(6));
    let u2 = udp_echo(&xw, 5353, Duration::from_secs(6));
    assert!(
        !udp_ok(&tf, "192.0.2.10", 80),
        "UDP to deathstar:80 must be denied"
    );
    assert!(
        udp_ok(&tf, "192.0.2.30", 5353),
        "tiefighter -> xwing UDP must be allowed"
    );
    u1.join().unwrap();
    u2.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let flows = agent.observe(&[]);
    let allowed = flows_between(&flows, "tiefighter", "deathstar-0", 80);
    assert!(
        allowed.iter().any(|f| f["verdict"] == "FORWARDED"
            && f["traffic_direction"] == "INGRESS"
            && f["protocol"] == "TCP"
            && f["rule"]["name"] == "rule1"
            && f["rule"]["source"]
                .as_str()
                .is_some_and(|s| s.contains("policy.yaml"))),
        "no allowed ingress flow by rule1: {allowed:#?}"
    );
    let denied = flows_between(&flows, "xwing", "deathstar-0", 80);
    assert!(
        denied.iter().any(|f| f["verdict"] == "DROPPED"
            && f["drop_reason"] == 133
            && f["protocol"] == "TCP"),
        "no dropped xwing flow: {denied:#?}"
    );
    assert!(
        denied
            .iter()
            .all(|f| f["traffic_direction"] != "INGRESS" || f["verdict"] == "DROPPED")
    );
    let udp_denied = flows_between(&flows, "tiefighter", "deathstar-0", 80);
    assert!(
        udp_denied
            .iter()
            .any(|f| f["protocol"] == "UDP" && f["verdict"] == "DROPPED")
    );
    let udp_allowed = flows_between(&flows, "tiefighter", "xwing", 5353);
    assert!(
        udp_allowed
            .iter()
            .any(|f| f["protocol"] == "UDP" && f["verdict"] == "FORWARDED")
    );
    // Filters.
    let only_denied = agent.observe(&[
        "--verdict",
        "DENIED",
        "--to",
        "default/deathstar-0",
        "--protocol",
        "tcp",
    ]);
    assert!(!only_denied.is_empty());
    assert!(
        only_denied
            .iter()
            .all(|f| f["verdict"] == "DROPPED" && f["destination"]["pod"] == "deathstar-0")
    );
    let by_port = agent.observe(&["--port", "5353", "--from", "tiefighter"]);
    assert!(!by_port.is_empty() && by_port.iter().all(|f| f["destination"]["port"] == 5353));
    let table = ciliumc(&[
        "observe",
        "--state",
        &agent.state.display().to_string(),
        "--pod",
        "xwing",
    ]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("TIMESTAMP"), "{table}");
    assert!(
        table.contains("default/xwing") && table.contains("DENIED"),
        "{table}"
    );

    let st = agent.status();
    assert_eq!(st["generation"], 1);
    assert_eq!(st["endpoints"], 3);
    assert_eq!(st["programs"], 6);
    assert!(st["flows_seen"].as_u64().unwrap() >= flows.len() as u64);
    assert_eq!(st["flows_max"], 4095);
    let links_before = agent.pinned_links();
    assert_eq!(links_before.len(), 6);

    // A corrupt object is refused.
    let bad = dir.0.join("corrupt");
    copy_dir(&out, &bad);
    let obj = bad.join("bpf/default_xwing.o");
    let bytes = std::fs::read(&obj).unwrap();
    std::fs::write(&obj, &bytes[..bytes.len() / 2]).unwrap();
    let r = agent.apply(&bad);
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("corrupt object"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // A program the verifier refuses: the error carries the verifier log.
    let bad_v = dir.0.join("verifier");
    copy_dir(&out, &bad_v);
    let obj = bad_v.join("bpf/default_xwing.o");
    let mut bytes = std::fs::read(&obj).unwrap();
    let code = {
        use object::{Object, ObjectSection};
        let file = object::File::parse(&*bytes).unwrap();
        let sec = file.section_by_name("classifier").unwrap();
        sec.file_range().unwrap().0 as usize
    };
    // Opcode 0 does not exist.
    bytes[code..code + 8].copy_from_slice(&[0u8; 8]);
    std::fs::write(&obj, &bytes).unwrap();
    let r = agent.apply(&bad_v);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        err.contains("Verifier output") && err.contains("default/xwing"),
        "{err}"
    );
    // An incompatible manifest is refused.
    let bad2 = dir.0.join("incompatible");
    copy_dir(&out, &bad2);
    edit_manifest(&bad2, |m| m["format"] = "ciliumc/v0".into());
    let r = agent.apply(&bad2);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("incompatible manifest"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // A changed layout of a pinned map is refused.
    let bad3 = dir.0.join("layout");
    copy_dir(&out, &bad3);
    edit_manifest(&bad3, |m| {
        for map in m["maps"].as_array_mut().unwrap() {
            if map["name"] == "ciliumc_ct" {
                map["max_entries"] = 1024.into();
            }
        }
    });
    let r = agent.apply(&bad3);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("layout changed"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // A missing interface is refused.
    std::fs::write(
        &ifaces,
        std::fs::read_to_string(&ifaces)
            .unwrap()
            .replace(": xw", ": nosuch0"),
    )
    .unwrap();
    let r = agent.apply(&out);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    topo.interfaces_file(&dir.0);

    // `observe --follow` streams new flows as they come.
    let mut follow = std::process::Command::new(ciliumc_bin())
        .args([
            "observe",
            "--state",
            &agent.state.display().to_string(),
            "--follow",
            "--last",
            "0",
        ])
        .args(["-o", "json", "--from", "xwing", "--verdict", "DROPPED"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .next()
            .map(|l| l.unwrap())
    });
    std::thread::sleep(Duration::from_millis(200));
    let srv = tcp_server(&ds, 80, Duration::from_secs(3));
    assert!(!tcp_ok(&xw, "192.0.2.10", 80));
    srv.join().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let line = reader
        .join()
        .unwrap()
        .expect("observe --follow printed nothing");
    let flow: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(flow["source"]["pod"], "xwing");
    assert_eq!(flow["verdict"], "DROPPED");

    // The running generation is untouched and still enforcing.
    assert_eq!(agent.pinned_links(), links_before);
    let st = agent.status();
    assert_eq!(st["generation"], 1);
    assert_eq!(st["failed_applies"], 5);
    assert_demo_enforced(&topo);
}

#[test]
fn agent_survives_kill_9_under_traffic_reconciles_swaps_in_place_and_cleans_up() {
    let Some(_k) = ciliumc_tests::kernel_or_skip!() else {
        return;
    };
    let dir = TempDir::new("kill");
    let out = dir.0.join("out");
    compile(&demo_dir(), &out);
    // Generation 2: the policy also admits the alliance.
    let src2 = dir.0.join("src2");
    std::fs::create_dir_all(&src2).unwrap();
    std::fs::copy(
        demo_dir().join("inventory.yaml"),
        src2.join("inventory.yaml"),
    )
    .unwrap();
    let policy = std::fs::read_to_string(demo_dir().join("policy.yaml")).unwrap();
    std::fs::write(
        src2.join("policy.yaml"),
        policy.replace(
            "        org: empire\n    toPorts",
            "        {}\n    toPorts",
        ),
    )
    .unwrap();
    let out2 = dir.0.join("out2");
    compile(&src2, &out2);

    let topo = Topology::new("k");
    let ifaces = topo.interfaces_file(&dir.0);
    let state = dir.0.join("state");
    let mut agent = Agent::start(&topo.node, &state, &ifaces);
    assert!(agent.apply(&out).status.success(), "{}", agent.log());
    let links1 = agent.pinned_links();
    assert_eq!(links1.len(), 6);

    // kill -9 and restart during traffic: no packet of an allowed flow is lost.
    let load = UdpLoad::start(&topo.pod("xw"), &topo.pod("tf"), "192.0.2.30", 7000, 5000);
    std::thread::sleep(Duration::from_millis(300));
    agent.kill9();
    std::thread::sleep(Duration::from_millis(300));
    agent.spawn();
    std::thread::sleep(Duration::from_millis(500));
    let (sent, got, misordered) = load.stop();
    assert!(sent > 2000, "sender too slow: {sent}");
    assert_eq!(
        (got, misordered),
        (sent, 0),
        "traffic disturbed by kill -9 and restart"
    );
    agent.kill9();
    // The datapath keeps running without the agent.
    assert_demo_enforced(&topo);
    assert_eq!(agent.pinned_links(), links1);

    agent.spawn();
    let st = agent.status();
    assert_eq!(st["generation"], 1, "{}", agent.log());
    assert_eq!(st["programs"], 6);
    assert!(agent.log().contains("adopted=3"), "{}", agent.log());
    // Adopted, not reloaded: same links, same programs.
    assert_eq!(agent.pinned_links(), links1);
    assert_demo_enforced(&topo);

    // Swap in place: same links, new programs for the changed endpoint only.
    let r = agent.apply(&out2);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(report["programs_attached"], 0, "{report}");
    assert!(
        report["loaded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "default/deathstar-0"),
        "{report}"
    );
    assert!(
        report["unchanged"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "default/xwing"),
        "{report}"
    );
    let links2 = agent.pinned_links();
    for (a, b) in links1.iter().zip(&links2) {
        assert_eq!((&a.0, a.1), (&b.0, b.1), "link replaced instead of updated");
        if a.0.starts_with("default_deathstar") {
            assert_ne!(a.2, b.2, "{} kept its old program", a.0);
        }
    }
    let srv = tcp_server(&topo.pod("ds"), 80, Duration::from_secs(5));
    assert!(
        tcp_ok(&topo.pod("xw"), "192.0.2.10", 80),
        "generation 2 admits the x-wing"
    );
    srv.join().unwrap();

    // --cleanup removes every link, program and pin it owned.
    let link_ids: Vec<u64> = links2.iter().map(|l| l.1).collect();
    let prog_ids: Vec<u64> = links1.iter().chain(&links2).map(|l| l.2).collect();
    agent.kill9();
    let r = ciliumc(&[
        "agent",
        "--cleanup",
        "--state",
        &state.display().to_string(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    std::thread::sleep(Duration::from_millis(200));
    let links_now = kernel_ids("link");
    let progs_now = kernel_ids("prog");
    assert!(
        link_ids.iter().all(|id| !links_now.contains(id)),
        "links leaked: {link_ids:?}"
    );
    assert!(
        prog_ids.iter().all(|id| !progs_now.contains(id)),
        "programs leaked: {prog_ids:?}"
    );
    assert!(!state.join("bpffs/links").exists());
    assert!(!state.join("state.json").exists());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(&state.display().to_string()),
        "bpffs still mounted"
    );
    // Without programs every connection goes through.
    let srv = tcp_server(&topo.pod("ds"), 80, Duration::from_secs(5));
    assert!(tcp_ok(&topo.pod("xw"), "192.0.2.10", 80));
    srv.join().unwrap();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to.join("bpf")).unwrap();
    std::fs::copy(from.join("manifest.json"), to.join("manifest.json")).unwrap();
    for e in std::fs::read_dir(from.join("bpf")).unwrap().flatten() {
        std::fs::copy(e.path(), to.join("bpf").join(e.file_name())).unwrap();
    }
}

fn edit_manifest(dir: &std::path::Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut m);
    std::fs::write(&p, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}
