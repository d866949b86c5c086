//! Endpoint → interface from the `ciliumc.io/interface` pod annotation: `ciliumc compile` carries
//! it into `manifest.json` as the endpoint's `interface`, and the agent attaches with it when its
//! `--interfaces` file has no entry (an entry there wins). An endpoint with neither is refused
//! with a message naming both ways, while the running generation keeps enforcing. Real TCP
//! between namespaces the test creates (192.0.2.0/24). Needs `target/debug/ciliumc`.

mod agent_attach_support;
mod agent_support;

use agent_attach_support::*;
use agent_support::*;

fn manifest(out: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

fn endpoint_interface(m: &serde_json::Value, name: &str) -> serde_json::Value {
    m["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no endpoint {name}"))
        .get("interface")
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn annotation_alone_wires_endpoints_and_the_interfaces_file_takes_precedence() {
    let Some(_k) = ciliumc_tests::kernel_or_skip!() else {
        return;
    };
    let dir = TempDir::new("annot");
    // deathstar and xwing are wired by annotation only; tiefighter's annotation names an
    // interface that does not exist, so the apply only succeeds if the file's entry wins.
    let src = dir.0.join("src");
    demo_with_annotations(
        &src,
        &[
            ("deathstar-0", "ds"),
            ("tiefighter", "nosuch0"),
            ("xwing", "xw"),
        ],
    );
    let out = dir.0.join("out");
    compile(&src, &out);
    let m = manifest(&out);
    assert_eq!(endpoint_interface(&m, "default/deathstar-0"), "ds");
    assert_eq!(endpoint_interface(&m, "default/tiefighter"), "nosuch0");
    // Without annotations the field is absent (manifests stay as they were).
    let plain = dir.0.join("plain");
    compile(&demo_dir(), &plain);
    assert!(
        !std::fs::read_to_string(plain.join("manifest.json"))
            .unwrap()
            .contains("\"interface\""),
        "an unannotated endpoint must not carry `interface`"
    );

    let topo = Topology::new("an");
    let ifile = dir.0.join("interfaces");
    std::fs::write(&ifile, "default/tiefighter: tf\n").unwrap();
    let agent = NodeAgent::start(
        &topo.node,
        &dir.0.join("state"),
        &["--interfaces", &ifile.display().to_string()],
    );
    let r = agent.apply_ok(&out);
    assert_eq!(r["programs_attached"], 6, "{r}");
    let st = agent.state_json();
    for (ep, ifname) in [
        ("default/deathstar-0", "ds"),
        ("default/tiefighter", "tf"),
        ("default/xwing", "xw"),
    ] {
        assert_eq!(st["endpoints"][ep]["ifname"], ifname, "{st:#}");
    }
    assert_demo_enforced(&topo);

    // A generation with an endpoint that has neither an entry nor an annotation is refused,
    // naming both ways to wire it; the running generation stays.
    let src2 = dir.0.join("src2");
    demo_with_annotations(&src2, &[("deathstar-0", "ds"), ("tiefighter", "tf")]);
    let out2 = dir.0.join("out2");
    compile(&src2, &out2);
    let pins_before = agent.link_pins();
    let r = agent.apply(&out2);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "apply without interface succeeded");
    assert!(
        err.contains("default/xwing")
            && err.contains("no interface configured")
            && err.contains("--interfaces")
            && err.contains("ciliumc.io/interface"),
        "{err}"
    );
    assert_eq!(agent.link_pins(), pins_before);
    assert_demo_enforced(&topo);

    // An annotation naming a missing interface is refused and says where the name came from.
    let src3 = dir.0.join("src3");
    demo_with_annotations(
        &src3,
        &[
            ("deathstar-0", "ds"),
            ("tiefighter", "tf"),
            ("xwing", "nosuch1"),
        ],
    );
    let out3 = dir.0.join("out3");
    compile(&src3, &out3);
    let r = agent.apply(&out3);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("nosuch1") && err.contains("annotation") && err.contains("does not exist"),
        "{err}"
    );
    assert_demo_enforced(&topo);
}
