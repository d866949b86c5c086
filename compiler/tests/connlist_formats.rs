//! connlist output formats on a small input.

use ciliumc_compiler::connlist::{self, Format};
use ciliumc_compiler::frontend::load::{LoadOptions, load_str};
use ciliumc_compiler::resolve::{ResolveOptions, resolve};

const INPUT: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: a, namespace: ns, labels: {app: a}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: ns, labels: {app: b}}
spec: {containers: [{name: c}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: ns}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: 80}, {port: 8000, endPort: 8080, protocol: UDP}]}]
  egress: [{to: [{ipBlock: {cidr: 192.0.2.0/24}}]}]
"#;

fn cluster() -> ciliumc_compiler::resolve::ResolvedCluster {
    let loaded = load_str(INPUT, "t.yaml", &LoadOptions::default());
    assert!(!loaded.has_errors());
    resolve(&loaded.objects, &ResolveOptions::default()).unwrap()
}

#[test]
fn netpol_analyzer_format_lists_ipv4_segments_and_sorted_lines() {
    let text = connlist::connlist(&cluster(), Format::NetpolAnalyzer);
    let want = "\
0.0.0.0-255.255.255.255[External] => ns/a[Pod] : All Connections
ns/a[Pod] => 0.0.0.0-192.0.1.255[External] : All Connections
ns/a[Pod] => 192.0.2.0-192.0.2.255[External] : All Connections
ns/a[Pod] => 192.0.3.0-255.255.255.255[External] : All Connections
ns/a[Pod] => ns/b[Pod] : TCP 80,UDP 8000-8080
ns/b[Pod] => 192.0.2.0-192.0.2.255[External] : All Connections
";
    assert_eq!(text, want);
}

#[test]
fn txt_format_adds_ipv6_ranges() {
    let text = connlist::connlist(&cluster(), Format::Txt);
    assert!(text.contains(
        "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff[External] => ns/a[Pod] : All Connections"
    ));
    assert!(!text.contains("[External] => ns/b[Pod]"));
}

#[test]
fn json_format_is_an_array_of_src_dst_conn() {
    let text = connlist::connlist(&cluster(), Format::Json);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let items = v.as_array().unwrap();
    assert!(items.iter().any(|i| i["src"] == "ns/a[Pod]"
        && i["dst"] == "ns/b[Pod]"
        && i["conn"] == "TCP 80,UDP 8000-8080"));
    assert_eq!(
        "netpol-analyzer".parse::<Format>().unwrap(),
        Format::NetpolAnalyzer
    );
    assert!("xml".parse::<Format>().is_err());
}
