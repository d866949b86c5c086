//! Properties of the front end: no panic on any input (raw bytes and YAML-shaped text), and
//! parse → serialize → parse is stable for the typed model (generated policies and the whole corpus).
use std::path::{Path, PathBuf};

use ciliumc_compiler::frontend::model::{
    CidrRule, CiliumNetworkPolicy, EgressRule, IngressRule, IntOrString, LabelSelector,
    LabelSelectorRequirement, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec, Object, ObjectMeta, PortProtocol, PortRule, Rule,
    SelectorOperator,
};
use ciliumc_compiler::frontend::{self, LoadOptions, render_text};
use proptest::prelude::*;

fn load(text: &str) -> frontend::LoadResult {
    frontend::load_str(text, "p.yaml", &LoadOptions::default())
}

/// Loading must never panic, and every diagnostic must point inside the text and render.
fn check_total(text: &str) {
    let result = load(text);
    for d in &result.diagnostics {
        assert!(
            d.span.start <= d.span.end && d.span.end <= text.len(),
            "{d:?}"
        );
        assert!(
            text.is_char_boundary(d.span.start) && text.is_char_boundary(d.span.end),
            "{d:?}"
        );
        let _ = render_text(d, text);
    }
}

/// Fragments that exercise the parser, the deserializer and validation together.
fn yamlish_line() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(vec![
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "namespace",
        "spec",
        "specs",
        "endpointSelector",
        "nodeSelector",
        "ingress",
        "egress",
        "ingressDeny",
        "egressDeny",
        "fromEndpoints",
        "toEndpoints",
        "fromCIDR",
        "toCIDRSet",
        "cidr",
        "except",
        "fromEntities",
        "toPorts",
        "ports",
        "port",
        "endPort",
        "protocol",
        "rules",
        "dns",
        "http",
        "icmps",
        "fields",
        "type",
        "family",
        "matchLabels",
        "matchExpressions",
        "key",
        "operator",
        "values",
        "podSelector",
        "ipBlock",
        "items",
        "<<",
        "toServices",
        "toFQDNs",
        "matchName",
        "authentication",
        "mode",
    ]);
    let values = prop::sample::select(vec![
        "",
        "v1",
        "cilium.io/v2",
        "networking.k8s.io/v1",
        "CiliumNetworkPolicy",
        "NetworkPolicy",
        "List",
        "PodList",
        "Pod",
        "Namespace",
        "Deployment",
        "CiliumClusterwideNetworkPolicy",
        "CiliumLocalRedirectPolicy",
        "{}",
        "[]",
        "[{}]",
        "10.0.0.0/8",
        "10.0.0.0/33",
        "::/0",
        "80",
        "\"80\"",
        "65536",
        "-1",
        "http",
        "TCP",
        "ANY",
        "world",
        "all",
        "In",
        "Exists",
        "{{.X}}",
        "&a {x: 1}",
        "*a",
        "*b",
        "|",
        ">",
        "null",
        "~",
        "true",
        "0x1F",
        "1e9",
        "'q''q'",
        "\"\\u00e9\"",
        "[a, {b: c}",
        "{a: [1, 2]}",
        "!!str 5",
        "? complex",
        "- x",
        "--- ",
        "...",
        "#c",
        "é",
        "\t",
        "%YAML 1.2",
    ]);
    (0usize..6, any::<bool>(), keys, values, any::<bool>()).prop_map(
        |(indent, dash, key, value, colon)| {
            let dash = if dash { "- " } else { "" };
            let sep = if colon { ": " } else { " " };
            format!("{}{dash}{key}{sep}{value}", " ".repeat(indent * 2))
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_total(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn yaml_shaped_text_never_panics(lines in prop::collection::vec(yamlish_line(), 0..40)) {
        check_total(&lines.join("\n"));
    }

    #[test]
    fn mutated_corpus_documents_never_panic(index in 0usize..10_000, cut in 0usize..4096, insert in "[\\[\\]{}:,&*!|>'\"#\\- \n]{0,4}") {
        let files = corpus_files();
        let text = std::fs::read_to_string(&files[index % files.len()]).unwrap();
        let mut cut = cut.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        check_total(&format!("{}{insert}{}", &text[..cut], &text[cut..]));
    }

    #[test]
    fn generated_cilium_policies_round_trip(policy in cnp()) {
        round_trip(Object::CiliumNetworkPolicy(policy));
    }

    #[test]
    fn generated_network_policies_round_trip(policy in knp()) {
        round_trip(Object::NetworkPolicy(policy));
    }
}

/// Serializes a typed object to JSON (YAML 1.2 flow syntax, read by the same parser), loads it back, and
/// compares.
fn round_trip(object: Object) {
    let json = serde_json::to_string_pretty(&object).unwrap();
    let back = load(&json);
    assert!(back.objects.len() == 1, "{json}\n{:?}", back.diagnostics);
    assert_eq!(back.objects[0].object, object, "{json}");
    // Serializing the reloaded object again gives the same bytes (fixed point).
    assert_eq!(
        serde_json::to_string_pretty(&back.objects[0].object).unwrap(),
        json
    );
}

fn label_text() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9.-]{0,8}(/[a-z0-9]{1,5})?"
}

fn free_text() -> impl Strategy<Value = String> {
    // Quotes, backslashes, colons, `#` and non-ASCII must all survive JSON → YAML parsing.
    "[a-zA-Z0-9 ._:/#*\"'\\\\é-]{0,16}"
}

fn selector() -> impl Strategy<Value = LabelSelector> {
    let labels = prop::option::of(prop::collection::btree_map(
        label_text(),
        label_text(),
        0..3,
    ));
    let expr = (
        label_text(),
        0usize..4,
        prop::collection::vec(label_text(), 1..3),
    )
        .prop_map(|(key, op, values)| {
            let operator = [
                SelectorOperator::In,
                SelectorOperator::NotIn,
                SelectorOperator::Exists,
                SelectorOperator::DoesNotExist,
            ][op];
            let values = matches!(operator, SelectorOperator::In | SelectorOperator::NotIn)
                .then_some(values);
            LabelSelectorRequirement {
                key,
                operator,
                values,
            }
        });
    (labels, prop::option::of(prop::collection::vec(expr, 0..3))).prop_map(
        |(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        },
    )
}

fn port_rule() -> impl Strategy<Value = PortRule> {
    let port = (
        0u16..=65535,
        prop::option::of(0i64..=65535),
        prop::sample::select(vec!["TCP", "UDP", "SCTP", "ANY"]),
    )
        .prop_map(|(p, end, proto)| {
            let end_port = end.filter(|e| *e >= i64::from(p) || *e == 0);
            PortProtocol {
                port: Some(p.to_string()),
                end_port,
                protocol: Some(proto.to_string()),
            }
        });
    prop::collection::vec(port, 0..3).prop_map(|ports| PortRule {
        ports: Some(ports),
        ..PortRule::default()
    })
}

fn cidr() -> impl Strategy<Value = String> {
    (any::<[u8; 4]>(), 0u8..=32)
        .prop_map(|(a, len)| format!("{}.{}.{}.{}/{len}", a[0], a[1], a[2], a[3]))
}

fn ingress_rule() -> impl Strategy<Value = IngressRule> {
    let peers = prop_oneof![
        prop::collection::vec(selector(), 0..3).prop_map(|s| IngressRule {
            from_endpoints: Some(s),
            ..IngressRule::default()
        }),
        prop::collection::vec(cidr(), 0..3).prop_map(|c| IngressRule {
            from_cidr: Some(c),
            ..IngressRule::default()
        }),
        cidr().prop_map(|c| IngressRule {
            from_cidr_set: Some(vec![CidrRule {
                cidr: Some(c),
                ..CidrRule::default()
            }]),
            ..IngressRule::default()
        }),
        prop::sample::subsequence(vec!["world", "cluster", "host", "remote-node", "all"], 0..3)
            .prop_map(|e| IngressRule {
                from_entities: Some(e.into_iter().map(str::to_string).collect()),
                ..IngressRule::default()
            }),
        Just(IngressRule::default()),
    ];
    (
        peers,
        prop::option::of(prop::collection::vec(port_rule(), 0..2)),
    )
        .prop_map(|(mut rule, to_ports)| {
            rule.to_ports = to_ports;
            rule
        })
}

fn cnp() -> impl Strategy<Value = CiliumNetworkPolicy> {
    (
        label_text(),
        label_text(),
        selector(),
        prop::collection::vec(ingress_rule(), 0..3),
        prop::option::of(free_text()),
        any::<bool>(),
    )
        .prop_map(|(name, ns, subject, ingress, description, egress_all)| {
            CiliumNetworkPolicy {
                api_version: "cilium.io/v2".into(),
                kind: "CiliumNetworkPolicy".into(),
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(ns),
                    ..ObjectMeta::default()
                },
                spec: Some(Rule {
                    endpoint_selector: Some(subject),
                    ingress: Some(ingress),
                    egress: egress_all.then(|| {
                        vec![EgressRule {
                            to_entities: Some(vec!["all".into()]),
                            ..EgressRule::default()
                        }]
                    }),
                    description,
                    ..Rule::default()
                }),
                ..CiliumNetworkPolicy::default()
            }
        })
}

fn knp() -> impl Strategy<Value = NetworkPolicy> {
    let port = (
        prop::option::of(prop::sample::select(vec!["TCP", "UDP", "SCTP"])),
        prop_oneof![
            (1i64..=65535).prop_map(IntOrString::Int),
            "[a-z]{1,10}".prop_map(IntOrString::String),
        ],
    )
        .prop_map(|(protocol, port)| NetworkPolicyPort {
            protocol: protocol.map(str::to_string),
            port: Some(port),
            end_port: None,
        });
    let peer = (prop::option::of(selector()), prop::option::of(selector())).prop_map(
        |(pod_selector, namespace_selector)| {
            let pod_selector = if pod_selector.is_none() && namespace_selector.is_none() {
                Some(LabelSelector::default())
            } else {
                pod_selector
            };
            NetworkPolicyPeer {
                pod_selector,
                namespace_selector,
                ip_block: None,
            }
        },
    );
    let rule = (
        prop::option::of(prop::collection::vec(peer, 0..3)),
        prop::option::of(prop::collection::vec(port, 0..3)),
    )
        .prop_map(|(from, ports)| NetworkPolicyIngressRule { from, ports });
    (
        label_text(),
        selector(),
        prop::option::of(prop::collection::vec(rule, 0..3)),
    )
        .prop_map(|(name, pod_selector, ingress)| NetworkPolicy {
            api_version: "networking.k8s.io/v1".into(),
            kind: "NetworkPolicy".into(),
            metadata: ObjectMeta {
                name: Some(name),
                ..ObjectMeta::default()
            },
            spec: NetworkPolicySpec {
                pod_selector,
                policy_types: Some(vec!["Ingress".into()]),
                ingress,
                egress: None,
            },
            status: None,
        })
}

fn corpus_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus")),
        &mut out,
    );
    out
}

#[test]
fn every_corpus_object_round_trips_through_json() {
    let mut count = 0;
    for f in corpus_files() {
        let result = frontend::load(std::slice::from_ref(&f));
        for o in &result.objects {
            let json = serde_json::to_string(&o.object).unwrap();
            let back = load(&json);
            assert_eq!(
                back.objects.len(),
                1,
                "{}: {json}\n{:?}",
                f.display(),
                back.diagnostics
            );
            assert_eq!(back.objects[0].object, o.object, "{}", f.display());
            count += 1;
        }
    }
    assert!(count > 500, "{count}");
}

/// Inputs the fuzzer found (testdata/frontend/fuzz-regressions): the fuzz target's checks, as a test.
#[test]
fn fuzz_regressions_stay_fixed() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/frontend/fuzz-regressions"
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        check_total(&text);
        for o in load(&text).objects {
            let json = serde_json::to_string(&o.object).unwrap();
            let back = load(&json);
            assert_eq!(
                back.objects.len(),
                1,
                "{}: {json}\n{:?}",
                f.display(),
                back.diagnostics
            );
            assert_eq!(back.objects[0].object, o.object, "{}", f.display());
        }
    }
}
