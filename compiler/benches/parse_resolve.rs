//! Benchmark (issue 2): parse + resolve of a generated cluster — N pods spread over N/10
//! namespaces, with N/5 policies (a mix of CiliumNetworkPolicy and NetworkPolicy, L3 and L4 rules,
//! namespace selectors and CIDRs) — at 1k, 10k and 50k pods, to show that growth is about linear.
//!
//! Run: `cargo bench -p ciliumc-compiler --bench parse_resolve`. Prints wall time per phase (best
//! of 3) and the process's peak resident memory after each size.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ciliumc_compiler::frontend::{LoadOptions, load_str};
use ciliumc_compiler::resolve::{ResolveOptions, resolve};

fn generate(pods: usize) -> String {
    let namespaces = (pods / 10).max(1);
    let policies = pods / 5;
    let mut s = String::with_capacity(pods * 400);
    for n in 0..namespaces {
        let _ = writeln!(
            s,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{n}\n  labels:\n    team: t{}\n",
            n % 20
        );
    }
    for p in 0..pods {
        let ns = p % namespaces;
        let _ = writeln!(
            s,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{p}\n  namespace: ns-{ns}\n  labels:\n    app: app-{}\n    tier: {}\nspec:\n  containers:\n  - name: c\n    image: i\n    ports:\n    - name: http\n      containerPort: 8080\n",
            p % 50,
            ["web", "api", "db"][p % 3]
        );
    }
    for i in 0..policies {
        let ns = i % namespaces;
        if i % 2 == 0 {
            let _ = writeln!(
                s,
                "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: cnp-{i}\n  namespace: ns-{ns}\nspec:\n  endpointSelector:\n    matchLabels:\n      app: app-{}\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        tier: web\n    toPorts:\n    - ports:\n      - port: \"{}\"\n        protocol: TCP\n  egress:\n  - toCIDRSet:\n    - cidr: 203.0.113.0/24\n      except:\n      - 203.0.113.{}/32\n",
                i % 50,
                8000 + i % 100,
                i % 250
            );
        } else {
            let _ = writeln!(
                s,
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np-{i}\n  namespace: ns-{ns}\nspec:\n  podSelector:\n    matchLabels:\n      tier: {}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels:\n          team: t{}\n      podSelector:\n        matchLabels:\n          app: app-{}\n    ports:\n    - port: http\n",
                ["web", "api", "db"][i % 3],
                i % 20,
                i % 50
            );
        }
    }
    s
}

fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        out = Some(v);
    }
    (best, out.expect("at least one run"))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects sizes (e.g. `10000`).
    let filter: Option<usize> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    println!(
        "{:>7} {:>7} {:>8} {:>10} {:>10} {:>10} {:>12}",
        "pods", "ns", "policies", "parse", "resolve", "total", "peak RSS"
    );
    for pods in [1_000usize, 10_000, 50_000] {
        if filter.is_some_and(|f| f != pods) {
            continue;
        }
        let text = generate(pods);
        let (parse, loaded) = best_of(3, || {
            load_str(&text, "generated.yaml", &LoadOptions::default())
        });
        assert!(
            !loaded.has_errors(),
            "generated input has errors: {:?}",
            loaded.diagnostics.first()
        );
        let (res, cluster) = best_of(3, || {
            resolve(&loaded.objects, &ResolveOptions::default()).expect("resolve")
        });
        assert_eq!(cluster.endpoints.len(), pods);
        println!(
            "{:>7} {:>7} {:>8} {:>9.1}ms {:>9.1}ms {:>9.1}ms {:>9.0} MiB",
            pods,
            (pods / 10).max(1),
            pods / 5,
            parse.as_secs_f64() * 1e3,
            res.as_secs_f64() * 1e3,
            (parse + res).as_secs_f64() * 1e3,
            peak_rss_mib()
        );
    }
}
