//! XDP through the agent: a manifest the test writes (no policy compiler) whose one endpoint has
//! an XDP program built with the backend's codegen (`FunctionBuilder` with `Hook::Xdp`, ELF from
//! `ObjectWriter`) that drops UDP to one port. The agent attaches it to the endpoint's interface
//! (named by the manifest's `interface`, no interfaces file) through a pinned XDP link; real UDP
//! between namespaces the test creates shows the drop; new generations swap the program into
//! the same link (`BPF_LINK_UPDATE`) under a stream that every generation passes; `kill -9` +
//! restart adopts the link; `--cleanup` detaches it. Needs `target/debug/ciliumc`.

mod agent_attach_support;
mod agent_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agent_attach_support::*;
use agent_support::*;
use ciliumc_ir::manifest::{
    Hook as ManifestHook, MANIFEST_FORMAT, Manifest, ManifestEndpoint, ManifestProgram,
};
use ciliumc_ir::policy::Direction;
use ciliumc_targets::codegen::{AluOp, Cond, FunctionBuilder, Size, compile as codegen};
use ciliumc_targets::elf::ObjectWriter;
use ciliumc_targets::hooks::{Hook, XDP_DROP, XDP_PASS};

const PROGRAM: &str = "xdp_udp_port_drop";

/// XDP: drop IPv4/UDP datagrams to `port`, pass everything else.
fn xdp_object(port: u16) -> Vec<u8> {
    let mut f = FunctionBuilder::new(PROGRAM, Hook::Xdp);
    let pass = f.block();
    let drop = f.block();
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    f.check_packet_bounds(data, end, 34, pass);
    // EtherType 0x0800 read as a little-endian u16.
    let ethertype = f.load(data, 12, Size::H);
    let ipv4 = f.block();
    f.branch(Cond::Ne, ethertype, 0x0008, pass, ipv4);
    f.switch_to(ipv4);
    let proto = f.load(data, 23, Size::B);
    let udp = f.block();
    f.branch(Cond::Ne, proto, 17, pass, udp);
    f.switch_to(udp);
    let vihl = f.load(data, 14, Size::B);
    let ihl = f.alu(AluOp::And, vihl, 0x0f);
    let hlen = f.alu(AluOp::Lsh, ihl, 2);
    let l3 = f.ptr_add(data, 14);
    let l4 = f.ptr_add(l3, hlen);
    f.check_packet_bounds(l4, end, 4, pass);
    let port_be = f.load(l4, 2, Size::H);
    let dport = f.bswap(16, port_be);
    f.branch(Cond::Eq, dport, i64::from(port), drop, pass);
    f.switch_to(drop);
    f.ret(XDP_DROP);
    f.switch_to(pass);
    f.ret(XDP_PASS);
    let code = codegen(&[f.finish().unwrap()]).unwrap();
    ObjectWriter::new()
        .functions(code)
        .license("GPL")
        .write()
        .unwrap()
}

/// A compile output directory with one endpoint (the x-wing, on interface `xw`) running the
/// XDP program that drops UDP to `port`.
fn output(dir: &Path, port: u16) -> PathBuf {
    let out = dir.join(format!("xdp{port}"));
    std::fs::create_dir_all(out.join("bpf")).unwrap();
    std::fs::write(out.join("bpf/xwing.o"), xdp_object(port)).unwrap();
    let m = Manifest {
        format: MANIFEST_FORMAT.into(),
        inputs_digest: format!("{port:064x}"),
        compiler_version: "agent_attach_xdp".into(),
        identities: Vec::new(),
        endpoints: vec![ManifestEndpoint {
            name: "default/xwing".into(),
            namespace: "default".into(),
            pod: "xwing".into(),
            node: None,
            identity: 256,
            ipv4: Some("192.0.2.30".into()),
            ipv6: None,
            object: "bpf/xwing.o".into(),
            interface: Some("xw".into()),
            programs: vec![ManifestProgram {
                name: PROGRAM.into(),
                section: "xdp".into(),
                hook: ManifestHook::Xdp,
                direction: Direction::Egress,
            }],
        }],
        maps: Vec::new(),
        tail_calls: Vec::new(),
        rules: Vec::new(),
    };
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    out
}

/// `(link id, program id, link type)` of a pinned link.
fn pinned_link(pin: &Path) -> (u64, u64, String) {
    let out = run(Command::new("bpftool")
        .args(["-j", "link", "show", "pinned"])
        .arg(pin));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (
        j["id"].as_u64().unwrap_or(0),
        j["prog_id"].as_u64().unwrap_or(0),
        j["type"].as_str().unwrap_or_default().to_string(),
    )
}

/// The XDP program id `ip link` reports on `dev` in `ns` (0: none).
fn xdp_prog_on(ns: &str, dev: &str) -> u64 {
    let out = run(Command::new("ip").args(["-n", ns, "-j", "link", "show", "dev", dev]));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    j[0]["xdp"]["prog"]["id"].as_u64().unwrap_or(0)
}

/// Whether UDP from the x-wing to the deathstar's `port` is echoed.
fn udp_passes(topo: &Topology, port: u16) -> bool {
    let echo = udp_echo(&topo.pod("ds"), port, Duration::from_secs(3));
    let ok = udp_ok(&topo.pod("xw"), "192.0.2.10", port);
    echo.join().unwrap();
    ok
}

#[test]
fn xdp_program_attaches_by_link_swaps_atomically_survives_restart_and_cleans_up() {
    let Some(_k) = ciliumc_tests::kernel_or_skip!() else {
        return;
    };
    let dir = TempDir::new("xdp");
    let gen_a = output(&dir.0, 7001);
    let gen_b = output(&dir.0, 7002);
    let topo = Topology::new("xd");
    let node = topo.node.clone();
    let state = dir.0.join("state");
    let mut agent = NodeAgent::start(&node, &state, &[]);

    let r = agent.apply_ok(&gen_a);
    assert_eq!(r["programs_attached"], 1, "{r}");
    let pins = agent.link_pins();
    assert_eq!(pins.len(), 1, "{pins:?}");
    assert!(pins[0].ends_with("_xdp"), "{pins:?}");
    let pin = state.join("bpffs/links").join(&pins[0]);
    let (link_id, prog_a, kind) = pinned_link(&pin);
    assert_eq!(kind, "xdp", "pinned link is not an XDP link");
    assert_eq!(xdp_prog_on(&node, "xw"), prog_a);
    assert!(
        !udp_passes(&topo, 7001),
        "UDP to 7001 must be dropped by XDP"
    );
    assert!(udp_passes(&topo, 7002), "UDP to 7002 must pass");

    // Swaps under a stream to a port every generation passes: the same link, a new program.
    let (ds, xw) = (topo.pod("ds"), topo.pod("xw"));
    let path = PathDrops {
        points: vec![
            (xw.clone(), "eth0".into()),
            (node.clone(), "xw".into()),
            (node.clone(), "ds".into()),
            (ds.clone(), "eth0".into()),
        ],
        server_ns: ds.clone(),
    };
    let drops_before = path.total();
    let load = UdpLoad::start(&ds, &xw, "192.0.2.10", 7100, 5_000);
    std::thread::sleep(Duration::from_millis(300));
    let mut prog = prog_a;
    for i in 0..10 {
        let out = if i % 2 == 0 { &gen_b } else { &gen_a };
        let r = agent.apply_ok(out);
        assert_eq!(r["programs_swapped"], 1, "{r}");
        assert_eq!(r["programs_attached"], 0, "{r}");
        let (id, now, _) = pinned_link(&pin);
        assert_eq!(id, link_id, "swap made a new link");
        assert_ne!(now, prog, "swap kept the old program");
        assert_eq!(xdp_prog_on(&node, "xw"), now);
        prog = now;
        std::thread::sleep(Duration::from_millis(100));
    }
    // The last generation applied is A (drops 7001).
    assert!(!udp_passes(&topo, 7001) && udp_passes(&topo, 7002));
    let r = agent.apply_ok(&gen_b);
    assert_eq!(r["programs_swapped"], 1, "{r}");
    let (_, prog_b, _) = pinned_link(&pin);
    assert!(udp_passes(&topo, 7001) && !udp_passes(&topo, 7002));

    // kill -9: the link stays and keeps dropping; the restart adopts it without reloading.
    agent.kill9();
    assert!(!udp_passes(&topo, 7002), "XDP gone after kill -9");
    agent.spawn();
    std::thread::sleep(Duration::from_millis(300));
    let (sent, got, misordered) = load.stop();
    let machine_drops = path.total() - drops_before;
    println!(
        "xdp: {sent} sent, {got} received, {misordered} misordered across 11 swaps and a kill -9; \
         {machine_drops} dropped by full socket buffers/backlogs"
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
    assert_eq!(pinned_link(&pin), (link_id, prog_b, "xdp".into()));
    assert!(
        agent.log().contains("adopted=1"),
        "reconcile log: {}",
        agent.log()
    );
    assert!(udp_passes(&topo, 7001) && !udp_passes(&topo, 7002));

    // Cleanup detaches: no link, no program, nothing on the interface.
    let c = agent.cleanup();
    assert!(
        c.status.success(),
        "cleanup: {}",
        String::from_utf8_lossy(&c.stderr)
    );
    // The kernel frees a detached program after an RCU grace period: give it a moment.
    assert!(
        gone_within(Duration::from_secs(3), || !kernel_ids("link")
            .contains(&link_id)),
        "link leaked"
    );
    assert!(
        gone_within(Duration::from_secs(3), || !kernel_ids("prog")
            .contains(&prog_b)),
        "program leaked"
    );
    assert_eq!(xdp_prog_on(&node, "xw"), 0, "XDP still on xw");
    assert!(!state.join("bpffs").exists());
    assert!(udp_passes(&topo, 7002));
}
