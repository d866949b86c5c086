//! Resolve + reference evaluator against the statements of `policy-semantics-and-oracles.md` §3
//! ("Semantic statements that are easy to get wrong" and the bullets above it), one test each,
//! from YAML through the real loader.

use std::net::IpAddr;

use ciliumc_compiler::frontend::load::{LoadOptions, load_str};
use ciliumc_compiler::resolve::{ResolveOptions, ResolvedCluster, resolve};
use ciliumc_ir::evaluator::{AllowBasis, DropReason, PeerInfo, Verdict, verdict};
use ciliumc_ir::{Direction, NumericIdentity, Protocol};

const INVENTORY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: alpha}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: beta}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec:
  containers:
  - name: c
    ports: [{name: http, containerPort: 8080, protocol: TCP}, {name: dns, containerPort: 53, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: a, labels: {app: client}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: b, labels: {app: client}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: b, labels: {app: db}}
spec:
  containers:
  - name: c
    ports: [{name: http, containerPort: 9090, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: db2, namespace: b, labels: {app: db}}
spec:
  containers:
  - name: c
    ports: [{name: http, containerPort: 9091, protocol: TCP}]
"#;

fn text_of(policies: &str) -> String {
    format!("{INVENTORY}\n---\n{policies}")
}

fn cluster(policies: &str) -> ResolvedCluster {
    let text = text_of(policies);
    let loaded = load_str(&text, "test.yaml", &LoadOptions::default());
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{} {}", d.location(), d.message))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    resolve(&loaded.objects, &ResolveOptions::default()).unwrap()
}

/// Resolves the inventory (through the loader) plus policies given as JSON without validation, for
/// inputs the loader rightly rejects but whose Cilium meaning is still defined.
fn cluster_unvalidated(policy: serde_json::Value) -> ResolvedCluster {
    use ciliumc_compiler::frontend::model::Object;
    use ciliumc_compiler::resolve::PlainObject;
    let loaded = load_str(INVENTORY, "inventory.yaml", &LoadOptions::default());
    let mut objects: Vec<PlainObject> = loaded
        .objects
        .iter()
        .map(|o| PlainObject::new(o.object.clone()))
        .collect();
    let object = match policy["kind"].as_str() {
        Some("NetworkPolicy") => Object::NetworkPolicy(serde_json::from_value(policy).unwrap()),
        _ => Object::CiliumNetworkPolicy(serde_json::from_value(policy).unwrap()),
    };
    objects.push(PlainObject::new(object));
    resolve(&objects, &ResolveOptions::default()).unwrap()
}

/// A peer by name: `ns/pod`, `host`, or an IP address (world).
fn peer(c: &ResolvedCluster, who: &str) -> PeerInfo {
    if who == "host" {
        return PeerInfo::new(NumericIdentity::HOST, None);
    }
    if let Ok(ip) = who.parse::<IpAddr>() {
        return PeerInfo::new(
            if ip.is_ipv4() {
                NumericIdentity::WORLD_IPV4
            } else {
                NumericIdentity::WORLD_IPV6
            },
            Some(ip),
        );
    }
    let (ep, _) = c
        .endpoint(who)
        .unwrap_or_else(|| panic!("no endpoint {who}"));
    PeerInfo::new(ep.identity, ep.ipv4.map(IpAddr::V4))
}

/// src egress AND dst ingress allow the flow.
fn can(c: &ResolvedCluster, src: &str, dst: &str, proto: Protocol, port: u16) -> bool {
    let out = c
        .endpoint(src)
        .is_none_or(|(_, p)| verdict(p, Direction::Egress, peer(c, dst), proto, port).is_allow());
    let inn = c
        .endpoint(dst)
        .is_none_or(|(_, p)| verdict(p, Direction::Ingress, peer(c, src), proto, port).is_allow());
    out && inn
}

const TCP: Protocol = Protocol::Tcp;

#[test]
fn cnp_empty_ingress_rule_is_default_deny_without_allow() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{}]\n",
    );
    assert!(!can(&c, "a/client", "a/web", TCP, 8080));
    assert!(!can(&c, "192.0.2.1", "a/web", Protocol::Icmp, 8));
    assert!(can(&c, "a/web", "a/client", TCP, 80), "egress untouched");
}

#[test]
fn knp_empty_ingress_rule_allows_all() {
    let c = cluster(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{}]\n",
    );
    assert!(can(&c, "b/client", "a/web", TCP, 1));
    assert!(can(&c, "192.0.2.1", "a/web", Protocol::Udp, 65535));
}

#[test]
fn cnp_empty_to_endpoints_list_selects_nothing_but_absent_selects_everything_with_to_ports() {
    let c = cluster(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: []
    toPorts: [{ports: [{port: "80"}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: q, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toPorts: [{ports: [{port: "80"}]}]
"#,
    );
    assert!(!can(&c, "a/client", "a/web", TCP, 80));
    assert!(can(&c, "a/web", "b/db", TCP, 80));
    assert!(can(&c, "a/web", "198.51.100.7", TCP, 80));
    assert!(!can(&c, "a/web", "198.51.100.7", TCP, 81));
}

#[test]
fn cnp_empty_peer_selector_is_own_namespace_only() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {}\n  ingress: [{fromEndpoints: [{}]}]\n",
    );
    assert!(can(&c, "a/client", "a/web", TCP, 80));
    assert!(!can(&c, "b/client", "a/web", TCP, 80));
    assert!(!can(&c, "192.0.2.1", "a/web", TCP, 80));
    assert!(
        can(&c, "b/client", "b/db", TCP, 80),
        "subject limited to namespace a"
    );
}

#[test]
fn ccnp_empty_peer_selector_is_all_pods_not_host_or_world() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: p}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEndpoints: [{}]}]\n",
    );
    assert!(can(&c, "b/client", "a/web", TCP, 80));
    assert!(!can(&c, "192.0.2.1", "a/web", TCP, 80));
    let (_, p) = c.endpoint("a/web").unwrap();
    let remote_node = PeerInfo::new(NumericIdentity::REMOTE_NODE, None);
    assert!(!verdict(p, Direction::Ingress, remote_node, TCP, 80).is_allow());
}

#[test]
fn from_entities_all_is_literally_everything() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEntities: [all]}]\n",
    );
    let (_, p) = c.endpoint("a/web").unwrap();
    for who in [
        PeerInfo::new(NumericIdentity::REMOTE_NODE, None),
        peer(&c, "203.0.113.5"),
        peer(&c, "b/db"),
    ] {
        assert!(verdict(p, Direction::Ingress, who, Protocol::Icmp, 8).is_allow());
    }
}

#[test]
fn knp_empty_namespace_selector_is_all_pods_not_external() {
    let c = cluster(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{namespaceSelector: {}}]}]\n",
    );
    assert!(can(&c, "b/client", "a/web", TCP, 80));
    assert!(!can(&c, "192.0.2.1", "a/web", TCP, 80));
}

#[test]
fn knp_namespace_selector_uses_namespace_labels() {
    let c = cluster(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: beta}}, podSelector: {matchLabels: {app: client}}}]}]\n",
    );
    assert!(can(&c, "b/client", "a/web", TCP, 80));
    assert!(!can(&c, "a/client", "a/web", TCP, 80));
    assert!(!can(&c, "b/db", "a/web", TCP, 80));
}

#[test]
fn cidr_and_ip_block_rules_never_match_pods() {
    let c = cluster(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0}}]}]\n",
    );
    let (client, _) = c.endpoint("a/client").unwrap();
    assert!(client.ipv4.is_some());
    assert!(
        !can(&c, "a/client", "a/web", TCP, 80),
        "pod address inside the block is not selected"
    );
    assert!(can(&c, "192.0.2.1", "a/web", TCP, 80));
}

#[test]
fn deny_beats_allow_regardless_of_prefix_length() {
    let c = cluster(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress: [{toCIDR: [192.0.2.1/32]}]
  egressDeny: [{toCIDRSet: [{cidr: 192.0.2.0/24}]}]
"#,
    );
    let (_, p) = c.endpoint("a/web").unwrap();
    let v = verdict(p, Direction::Egress, peer(&c, "192.0.2.1"), TCP, 443);
    assert!(
        matches!(v, Verdict::Deny { reason: DropReason::PolicyDenyExplicit, ref rules } if rules.len() == 1)
    );
}

#[test]
fn deny_only_policy_flips_endpoint_to_default_deny() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingressDeny: [{toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]}]\n",
    );
    assert!(!can(&c, "a/client", "a/web", TCP, 80));
    assert!(!can(&c, "a/client", "a/web", TCP, 81));
    assert!(!can(&c, "a/client", "a/web", Protocol::Icmp, 8));
}

#[test]
fn default_deny_is_per_direction_and_host_ingress_stays_allowed() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  egress: [{toEndpoints: [{matchLabels: {app: client}}]}]\n",
    );
    assert!(can(&c, "b/db", "a/web", TCP, 80), "ingress not enforced");
    assert!(can(&c, "a/web", "a/client", TCP, 80));
    assert!(!can(&c, "a/web", "b/db", TCP, 80));
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{}]\n",
    );
    let (_, p) = c.endpoint("a/web").unwrap();
    assert_eq!(
        verdict(p, Direction::Ingress, peer(&c, "host"), TCP, 8080),
        Verdict::Allow {
            basis: AllowBasis::Localhost,
            rules: vec![]
        }
    );
}

#[test]
fn enable_default_deny_false_keeps_default_allow_but_applies_denies() {
    let c = cluster(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: web}}
  enableDefaultDeny: {ingress: false}
  ingressDeny: [{fromEndpoints: [{matchLabels: {app: client}}]}]
"#,
    );
    assert!(!can(&c, "a/client", "a/web", TCP, 80));
    let (_, p) = c.endpoint("a/web").unwrap();
    assert!(p.ingress.enforced && !p.ingress.default_deny);
    assert!(can(&c, "192.0.2.1", "a/web", TCP, 80));
}

#[test]
fn protocol_any_is_tcp_udp_sctp_not_icmp_and_l4_rule_blocks_icmp() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{toPorts: [{ports: [{port: \"53\", protocol: ANY}]}]}]\n",
    );
    for proto in [TCP, Protocol::Udp, Protocol::Sctp] {
        assert!(can(&c, "a/client", "a/web", proto, 53));
        assert!(!can(&c, "a/client", "a/web", proto, 54));
    }
    assert!(!can(&c, "a/client", "a/web", Protocol::Icmp, 8));
}

#[test]
fn l3_only_allow_allows_icmp() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}, {toPorts: [{ports: [{port: \"80\"}]}]}]\n",
    );
    assert!(can(&c, "a/client", "a/web", Protocol::Icmp, 8));
    assert!(!can(&c, "192.0.2.1", "a/web", Protocol::Icmp, 8));
    assert!(can(&c, "192.0.2.1", "a/web", TCP, 80));
}

#[test]
fn icmps_rule_allows_only_its_type() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{icmps: [{fields: [{type: EchoRequest, family: IPv4}, {type: 128, family: IPv6}]}]}]\n",
    );
    assert!(can(&c, "a/client", "a/web", Protocol::Icmp, 8));
    assert!(!can(&c, "a/client", "a/web", Protocol::Icmp, 0));
    assert!(can(&c, "a/client", "a/web", Protocol::Icmpv6, 128));
    assert!(!can(&c, "a/client", "a/web", TCP, 8));
}

#[test]
fn end_port_is_effective_only_when_greater_and_port_zero_is_all() {
    // The loader rejects endPort < port; Cilium's meaning (the single port) is still checked here.
    let c = cluster_unvalidated(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "a"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                 "ingress": [{"ports": [{"port": 80, "endPort": 444},
                                        {"port": 1000, "endPort": 999, "protocol": "UDP"},
                                        {"protocol": "SCTP"}]}]}
    }));
    for (port, ok) in [(79, false), (80, true), (444, true), (445, false)] {
        assert_eq!(can(&c, "a/client", "a/web", TCP, port), ok, "{port}");
    }
    assert!(can(&c, "a/client", "a/web", Protocol::Udp, 1000));
    assert!(!can(&c, "a/client", "a/web", Protocol::Udp, 999));
    assert!(
        can(&c, "a/client", "a/web", Protocol::Sctp, 1)
            && can(&c, "a/client", "a/web", Protocol::Sctp, 65535)
    );
}

#[test]
fn end_port_is_ignored_for_named_ports() {
    // The loader rejects endPort with a named port; Cilium ignores the endPort.
    let c = cluster_unvalidated(serde_json::json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "p", "namespace": "a"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "web"}},
                 "ingress": [{"toPorts": [{"ports": [{"port": "http", "endPort": 9000, "protocol": "TCP"}]}]}]}
    }));
    assert!(can(&c, "a/client", "a/web", TCP, 8080));
    assert!(!can(&c, "a/client", "a/web", TCP, 8081));
}

#[test]
fn knp_port_without_protocol_is_tcp_cnp_port_without_protocol_is_any() {
    let knp = cluster(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{ports: [{port: 80}]}]\n",
    );
    assert!(can(&knp, "a/client", "a/web", TCP, 80));
    assert!(!can(&knp, "a/client", "a/web", Protocol::Udp, 80));
    let cnp = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{toPorts: [{ports: [{port: \"80\"}]}]}]\n",
    );
    assert!(can(&cnp, "a/client", "a/web", Protocol::Udp, 80));
    assert!(can(&cnp, "a/client", "a/web", Protocol::Sctp, 80));
}

#[test]
fn ingress_named_port_resolves_on_local_pod_and_undefined_allows_nothing() {
    let c = cluster(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: http}, {port: nope}, {port: dns, protocol: TCP}]}]
"#,
    );
    assert!(can(&c, "a/client", "a/web", TCP, 8080));
    assert!(
        !can(&c, "a/client", "a/web", TCP, 53),
        "dns is UDP on the pod"
    );
    assert!(!can(&c, "a/client", "a/web", TCP, 9090));
}

#[test]
fn egress_named_port_resolves_per_destination_identity_as_union() {
    // b/db and b/db2 share an identity (same labels) but name different numbers: union.
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: client}}\n  egress: [{toPorts: [{ports: [{port: http, protocol: TCP}]}]}]\n",
    );
    assert_eq!(
        c.endpoint("b/db").unwrap().0.identity,
        c.endpoint("b/db2").unwrap().0.identity
    );
    for port in [9090, 9091] {
        assert!(can(&c, "a/client", "b/db", TCP, port));
        assert!(can(&c, "a/client", "b/db2", TCP, port));
    }
    assert!(can(&c, "a/client", "a/web", TCP, 8080));
    assert!(!can(&c, "a/client", "a/web", TCP, 9090));
    assert!(
        !can(&c, "a/client", "192.0.2.1", TCP, 8080),
        "world defines no named port"
    );
}

#[test]
fn to_services_with_selector_allows_backend_pods_on_all_ports() {
    let c = cluster(
        r#"apiVersion: v1
kind: Service
metadata: {name: db, namespace: b}
spec: {selector: {app: db}, ports: [{port: 5432}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress: [{toServices: [{k8sService: {serviceName: db, namespace: b}}]}]
"#,
    );
    assert!(can(&c, "a/client", "b/db", TCP, 1));
    assert!(can(&c, "a/client", "b/db2", Protocol::Udp, 65535));
    assert!(!can(&c, "a/client", "b/client", TCP, 5432));
}

#[test]
fn knp_egress_rules_apply_whatever_policy_types_says_as_cilium_does() {
    // Cilium ParseNetworkPolicy builds egress from spec.egress even when policyTypes omits Egress
    // (docs/semantics.md); Kubernetes would ignore it.
    let c = cluster(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  egress: [{to: [{podSelector: {matchLabels: {app: client}}}]}]
"#,
    );
    let (_, p) = c.endpoint("a/web").unwrap();
    assert!(p.ingress.enforced && p.egress.enforced);
    assert!(!can(&c, "a/web", "b/db", TCP, 80));
    assert!(can(&c, "a/web", "a/client", TCP, 80));
}

#[test]
fn cnp_endpoint_selector_cannot_select_another_namespace() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {k8s:io.kubernetes.pod.namespace: b}}\n  ingress: [{}]\n",
    );
    assert!(c.endpoint("b/db").unwrap().1.ingress == ciliumc_ir::DirectionPolicy::unenforced());
    assert!(c.endpoint("a/web").unwrap().1.ingress.enforced);
}

#[test]
fn entity_cluster_covers_pods_host_and_remote_node_but_not_world() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEntities: [cluster]}]\n",
    );
    let (_, p) = c.endpoint("a/web").unwrap();
    for who in [
        peer(&c, "b/db"),
        PeerInfo::new(NumericIdentity::REMOTE_NODE, None),
        PeerInfo::new(NumericIdentity::HOST, None),
    ] {
        assert!(verdict(p, Direction::Ingress, who, TCP, 1).is_allow());
    }
    assert!(!verdict(p, Direction::Ingress, peer(&c, "192.0.2.1"), TCP, 1).is_allow());
}

#[test]
fn entity_world_and_cidr_except() {
    let c = cluster(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDRSet: [{cidr: 198.51.100.0/24, except: [198.51.100.128/25]}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - toEntities: [world]
    toPorts: [{ports: [{port: "53", protocol: UDP}]}]
"#,
    );
    assert!(can(&c, "a/web", "198.51.100.127", TCP, 443));
    assert!(!can(&c, "a/web", "198.51.100.128", TCP, 443));
    assert!(can(&c, "a/web", "203.0.113.9", Protocol::Udp, 53));
    assert!(
        !can(&c, "a/web", "b/db", Protocol::Udp, 53),
        "world is not a pod"
    );
    let id_of = |s: &str| c.cidr_identities[&s.parse::<ciliumc_ir::Cidr>().unwrap()];
    assert!(id_of("198.51.100.0/24").is_cidr() && id_of("198.51.100.128/25").is_cidr());
    assert_eq!(id_of("0.0.0.0/0"), NumericIdentity::WORLD_IPV4);
    assert_eq!(id_of("::/0"), NumericIdentity::WORLD_IPV6);
    assert_eq!(c.cidr_identities.len(), 4);
}

#[test]
fn rule_origins_name_policy_section_and_source_location() {
    let policy = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]\n";
    let c = cluster(policy);
    let text = text_of(policy);
    let rule_line = text
        .lines()
        .position(|l| l.starts_with("  ingress: [{fromEndpoints"))
        .unwrap() as u32
        + 1;
    let (_, p) = c.endpoint("a/web").unwrap();
    let v = verdict(p, Direction::Ingress, peer(&c, "a/client"), TCP, 80);
    let id = v.rules()[0];
    let origin = &c.rule_origins[&id];
    assert_eq!(origin.describe(), "CiliumNetworkPolicy a/p ingress[0]");
    let loc = origin.source.as_ref().unwrap();
    assert_eq!(loc.file, "test.yaml");
    assert_eq!(loc.line, rule_line, "{loc}");
    assert_eq!(
        loc.column, 13,
        "the rule mapping inside `ingress: [`: {loc}"
    );
}

#[test]
fn to_services_without_selector_becomes_endpoint_slice_cidrs_that_never_match_pods() {
    let c = cluster(
        r#"apiVersion: v1
kind: Service
metadata: {name: ext, namespace: a}
spec: {ports: [{port: 443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1, namespace: a, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
endpoints: [{addresses: [203.0.113.10]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress: [{toServices: [{k8sService: {serviceName: ext, namespace: a}}]}]
"#,
    );
    assert!(can(&c, "a/client", "203.0.113.10", TCP, 443));
    assert!(!can(&c, "a/client", "203.0.113.11", TCP, 443));
    assert!(!can(&c, "a/client", "a/web", TCP, 443));
}

#[test]
fn reserved_selector_in_from_endpoints_selects_the_reserved_identity_without_namespace() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  egress: [{toEndpoints: [{matchLabels: {\"reserved:host\": \"\"}}]}]\n",
    );
    let (_, p) = c.endpoint("a/web").unwrap();
    assert!(verdict(p, Direction::Egress, peer(&c, "host"), TCP, 10250).is_allow());
    assert!(
        !verdict(
            p,
            Direction::Egress,
            PeerInfo::new(NumericIdentity::REMOTE_NODE, None),
            TCP,
            10250
        )
        .is_allow()
    );
    assert!(!can(&c, "a/web", "a/client", TCP, 80));
}

#[test]
fn knp_pod_selector_only_peer_is_same_namespace() {
    let c = cluster(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]\n",
    );
    assert!(can(&c, "a/client", "a/web", TCP, 80));
    assert!(!can(&c, "b/client", "a/web", TCP, 80));
}

#[test]
fn ccnp_empty_endpoint_selector_selects_every_namespace() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: p}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n",
    );
    assert!(
        c.policies
            .iter()
            .all(|p| p.ingress.enforced && !p.egress.enforced)
    );
}

#[test]
fn cnp_cross_namespace_peer_needs_namespace_exists() {
    let c = cluster(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEndpoints: [{matchLabels: {app: client}, matchExpressions: [{key: io.kubernetes.pod.namespace, operator: Exists}]}]}]\n",
    );
    assert!(can(&c, "a/client", "a/web", TCP, 80));
    assert!(can(&c, "b/client", "a/web", TCP, 80));
    assert!(!can(&c, "b/db", "a/web", TCP, 80));
}
