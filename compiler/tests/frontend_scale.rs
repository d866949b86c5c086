//! Scale check of loading (not a timed test: it prints throughput; `cargo bench` owns timing claims).
//! A generated cluster of 10,000 pods, 1,000 namespaces and 2,000 policies must load completely.
use ciliumc_compiler::frontend::{self, LoadOptions};

fn cluster(pods: usize, namespaces: usize, policies: usize) -> String {
    let mut out = String::new();
    for n in 0..namespaces {
        out.push_str(&format!("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{n}\n  labels: {{team: t{}}}\n", n % 7));
    }
    for p in 0..pods {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{p}\n  namespace: ns-{}\n  labels:\n    app: app-{}\n    tier: {}\nspec:\n  containers:\n  - name: c\n    image: example/app:1\n    ports:\n    - name: http\n      containerPort: 8080\n      protocol: TCP\n",
            p % namespaces,
            p % 50,
            if p % 2 == 0 { "web" } else { "db" }
        ));
    }
    for i in 0..policies {
        out.push_str(&format!(
            "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: pol-{i}\n  namespace: ns-{}\nspec:\n  endpointSelector:\n    matchLabels: {{app: app-{}}}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{tier: web}}\n    toPorts:\n    - ports:\n      - port: \"8080\"\n        protocol: TCP\n  egress:\n  - toCIDRSet:\n    - cidr: 192.0.2.0/24\n      except: [192.0.2.128/25]\n",
            i % namespaces,
            i % 50
        ));
    }
    out
}

#[test]
fn ten_thousand_pods_load_completely() {
    let text = cluster(10_000, 1_000, 2_000);
    let start = std::time::Instant::now();
    let result = frontend::load_str(&text, "cluster.yaml", &LoadOptions::default());
    let elapsed = start.elapsed();
    assert!(
        !result.has_errors(),
        "{:?}",
        &result.diagnostics[..result.diagnostics.len().min(3)]
    );
    assert_eq!(result.objects.len(), 13_000);
    println!(
        "loaded {} objects ({} bytes) in {elapsed:?}",
        result.objects.len(),
        text.len()
    );
}
