//! Identities, endpoints and determinism of resolve.

use std::collections::BTreeMap;

use ciliumc_compiler::frontend::load::{LoadOptions, load_str};
use ciliumc_compiler::resolve::{PlainObject, ResolveOptions, ResolvedCluster, resolve};
use ciliumc_ir::{EndpointKind, IdentityKind, NumericIdentity};

fn resolve_text(text: &str, opts: &ResolveOptions) -> ResolvedCluster {
    let loaded = load_str(text, "t.yaml", &LoadOptions::default());
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.message.clone())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    resolve(&loaded.objects, opts).unwrap()
}

fn pod(ns: &str, name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\nspec: {{containers: [{{name: c}}]}}\n---\n"
    )
}

const BASE: &str =
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {env: prod}}\n---\n";

fn identities_by_labels(c: &ResolvedCluster) -> BTreeMap<String, u32> {
    c.identities
        .iter()
        .filter(|i| i.kind == IdentityKind::Cluster)
        .map(|i| (i.labels.to_string(), i.id.0))
        .collect()
}

#[test]
fn adding_an_unrelated_pod_or_policy_does_not_renumber_identities() {
    let mut text = BASE.to_string();
    for (i, app) in [
        "web", "db", "cache", "queue", "auth", "search", "mail", "ui",
    ]
    .iter()
    .enumerate()
    {
        text.push_str(&pod("shop", &format!("p{i}"), app));
    }
    let before = resolve_text(&text, &ResolveOptions::default());
    let ids_before = identities_by_labels(&before);
    assert_eq!(ids_before.len(), 8);
    let mut grown = text.clone();
    grown.push_str(&pod("shop", "extra", "newapp"));
    grown.push_str(&pod("other", "x", "web"));
    grown.push_str("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  endpointSelector: {}\n  egress: [{toCIDR: [192.0.2.0/24]}]\n");
    let after = resolve_text(&grown, &ResolveOptions::default());
    let ids_after = identities_by_labels(&after);
    assert_eq!(ids_after.len(), 10);
    for (labels, id) in &ids_before {
        assert_eq!(ids_after.get(labels), Some(id), "{labels} renumbered");
    }
    for (name, ep) in before.endpoints.iter().map(|e| (&e.name, e)) {
        let (again, _) = after.endpoint(name).unwrap();
        assert_eq!(again.identity, ep.identity);
        assert_eq!(again.ipv4, ep.ipv4, "addresses are stable too");
    }
}

#[test]
fn previous_identities_are_kept_exactly() {
    let text = format!("{BASE}{}", pod("shop", "a", "web"));
    let first = resolve_text(&text, &ResolveOptions::default());
    let key = identities_by_labels(&first).into_keys().next().unwrap();
    let opts = ResolveOptions {
        previous_identities: BTreeMap::from([(key.clone(), 4242)]),
        ..Default::default()
    };
    let second = resolve_text(&text, &opts);
    assert_eq!(identities_by_labels(&second)[&key], 4242);
}

#[test]
fn resolve_is_deterministic_whatever_the_input_order() {
    let docs = [
        pod("shop", "a", "web"),
        pod("shop", "b", "db"),
        pod("x", "c", "web"),
        BASE.to_string(),
    ];
    let forward = resolve_text(&docs.concat(), &ResolveOptions::default());
    let mut rev = docs.to_vec();
    rev.reverse();
    let backward = resolve_text(&rev.concat(), &ResolveOptions::default());
    assert_eq!(forward.endpoints, backward.endpoints);
    assert_eq!(forward.identities, backward.identities);
    assert_eq!(forward.policies, backward.policies);
}

#[test]
fn reserved_identities_are_numbered_as_in_cilium_and_cluster_ids_start_at_256() {
    let c = resolve_text(
        &format!("{BASE}{}", pod("shop", "a", "web")),
        &ResolveOptions::default(),
    );
    let reserved: Vec<(u32, String)> = c
        .identities
        .iter()
        .filter(|i| i.kind == IdentityKind::Reserved)
        .map(|i| (i.id.0, i.labels.to_string()))
        .collect();
    assert_eq!(reserved[0], (1, "reserved:host".to_string()));
    assert_eq!(reserved[1], (2, "reserved:world".to_string()));
    assert_eq!(reserved[5], (6, "reserved:remote-node".to_string()));
    assert_eq!(
        reserved[6],
        (
            7,
            "reserved:kube-apiserver,reserved:remote-node".to_string()
        )
    );
    assert_eq!(reserved.len(), 10);
    let (ep, _) = c.endpoint("shop/a").unwrap();
    assert!((256..=0xFFFF).contains(&ep.identity.0));
}

#[test]
fn endpoint_labels_carry_namespace_namespace_labels_service_account_and_cluster() {
    let c = resolve_text(
        &format!(
            "{BASE}apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: shop, labels: {{app: web, pod-template-hash: abc}}}}\nspec: {{serviceAccountName: sa1, containers: [{{name: c}}]}}\n"
        ),
        &ResolveOptions::default(),
    );
    let (ep, _) = c.endpoint("shop/a").unwrap();
    let labels = ep.labels.to_strings();
    for want in [
        "k8s:app=web",
        "k8s:io.kubernetes.pod.namespace=shop",
        "k8s:io.cilium.k8s.namespace.labels.env=prod",
        "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop",
        "k8s:io.cilium.k8s.policy.serviceaccount=sa1",
        "k8s:io.cilium.k8s.policy.cluster=default",
    ] {
        assert!(
            labels.contains(&want.to_string()),
            "{want} missing from {labels:?}"
        );
    }
    assert!(!labels.iter().any(|l| l.contains("pod-template-hash")));
}

#[test]
fn workloads_without_pods_become_one_endpoint_each_with_deterministic_addresses() {
    let text = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: shop}
spec:
  schedule: "0 0 * * *"
  jobTemplate: {spec: {template: {metadata: {labels: {app: batch}}, spec: {containers: [{name: c}]}}}}
"#;
    let a = resolve_text(text, &ResolveOptions::default());
    let b = resolve_text(text, &ResolveOptions::default());
    assert_eq!(a.endpoints.len(), 2);
    let (web, _) = a.endpoint("shop/web").unwrap();
    assert_eq!(web.kind, EndpointKind::Workload);
    assert_eq!(
        (web.workload.kind.as_str(), web.workload.name.as_str()),
        ("Deployment", "web")
    );
    assert_eq!(
        web.named_port("http", ciliumc_ir::Protocol::Tcp),
        Some(8080)
    );
    let v4 = web.ipv4.unwrap();
    assert!(
        ResolveOptions::default()
            .pod_cidr_v4
            .contains_ip(&v4.into())
    );
    assert!(
        ResolveOptions::default()
            .pod_cidr_v6
            .contains_ip(&web.ipv6.unwrap().into())
    );
    assert_eq!(a.endpoints, b.endpoints);
    assert_ne!(a.endpoint("shop/nightly").unwrap().0.ipv4, web.ipv4);
    let custom = ResolveOptions {
        pod_cidr_v4: "172.16.0.0/24".parse().unwrap(),
        ..Default::default()
    };
    let c = resolve_text(text, &custom);
    assert!(
        custom
            .pod_cidr_v4
            .contains_ip(&c.endpoint("shop/web").unwrap().0.ipv4.unwrap().into())
    );
}

#[test]
fn pods_owned_by_a_workload_replace_its_stand_in_endpoint() {
    let text = r#"apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-1234, namespace: shop, ownerReferences: [{kind: Deployment, name: web, controller: true}]}
spec: {template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec: {template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c}]}}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1234-abcde, namespace: shop, labels: {app: web}, ownerReferences: [{kind: ReplicaSet, name: web-1234, controller: true}]}
spec: {containers: [{name: c}]}
status: {podIP: 10.9.8.7}
"#;
    let c = resolve_text(text, &ResolveOptions::default());
    let names: Vec<&str> = c.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["shop/web-1234-abcde"]);
    let (ep, _) = c.endpoint("shop/web-1234-abcde").unwrap();
    assert_eq!(ep.ipv4, Some("10.9.8.7".parse().unwrap()));
    assert_eq!(
        (ep.workload.kind.as_str(), ep.workload.name.as_str()),
        ("Deployment", "web")
    );
}

#[test]
fn external_workloads_become_endpoints_and_nodes_get_host_or_remote_node() {
    let text = r#"apiVersion: cilium.io/v2
kind: CiliumExternalWorkload
metadata: {name: vm1, labels: {app: legacy}}
status: {ip: 192.0.2.10}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 198.51.100.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 198.51.100.2}]}
"#;
    let opts = ResolveOptions {
        local_node: Some("n1".into()),
        ..Default::default()
    };
    let c = resolve_text(text, &opts);
    let (vm, _) = c.endpoint("vm1").unwrap();
    assert_eq!(vm.kind, EndpointKind::ExternalWorkload);
    assert_eq!(vm.ipv4, Some("192.0.2.10".parse().unwrap()));
    assert!(
        vm.labels
            .to_strings()
            .contains(&"k8s:app=legacy".to_string())
    );
    assert!(vm.identity.0 >= 256);
    let ids: Vec<(String, NumericIdentity)> = c
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.identity))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("n1".into(), NumericIdentity::HOST),
            ("n2".into(), NumericIdentity::REMOTE_NODE)
        ]
    );
}

#[test]
fn host_network_pods_take_their_node_identity_and_get_no_endpoint_policy() {
    let text = format!(
        "{BASE}apiVersion: v1\nkind: Pod\nmetadata: {{name: agent, namespace: shop, labels: {{app: agent}}}}\nspec: {{hostNetwork: true, nodeName: n1, containers: [{{name: c}}]}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny, namespace: shop}}\nspec: {{podSelector: {{}}}}\n"
    );
    let c = resolve_text(
        &text,
        &ResolveOptions {
            local_node: Some("n1".into()),
            ..Default::default()
        },
    );
    let (ep, policy) = c.endpoint("shop/agent").unwrap();
    assert_eq!(ep.kind, EndpointKind::HostNetwork);
    assert_eq!(ep.identity, NumericIdentity::HOST);
    assert!(!policy.ingress.enforced);
    let np = resolve_text(
        &text,
        &ResolveOptions {
            host_network_pods_as_endpoints: true,
            ..Default::default()
        },
    );
    let (ep, policy) = np.endpoint("shop/agent").unwrap();
    assert_eq!(ep.kind, EndpointKind::Pod);
    assert!(policy.ingress.enforced);
}

#[test]
fn plain_objects_resolve_without_locations() {
    let loaded = load_str(
        &format!("{BASE}{}", pod("shop", "a", "web")),
        "t.yaml",
        &LoadOptions::default(),
    );
    let plain: Vec<PlainObject> = loaded
        .objects
        .iter()
        .map(|o| PlainObject::new(o.object.clone()))
        .collect();
    let c = resolve(&plain, &ResolveOptions::default()).unwrap();
    assert_eq!(c.endpoints.len(), 1);
}
