//! Oracle test: the 25 netpol-analyzer cases through load → resolve → connlist.
//!
//! For every case, two runs:
//! 1. np-guard's model (`host_network_pods_as_endpoints`): the output must equal
//!    `expected_connlist.txt` (without `{ingress-controller}` lines) exactly.
//! 2. Cilium's model (the default): cases without hostNetwork pods must equal the expected file
//!    exactly; in cases with hostNetwork pods every differing line must name a hostNetwork workload,
//!    and the difference must equal the golden diff in `testdata/resolve/netpol-analyzer-cilium/`
//!    (documented in docs/semantics.md; regenerate with `CILIUMC_BLESS=1`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ciliumc_compiler::connlist::{self, Format};
use ciliumc_compiler::frontend::load::load;
use ciliumc_compiler::resolve::{ResolveOptions, resolve};
use ciliumc_ir::EndpointKind;

const CASES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/corpus/netpol-analyzer/cases"
);
const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/resolve/netpol-analyzer-cilium"
);

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(CASES)
        .expect("corpus present")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected_connlist.txt").exists())
        .collect();
    v.sort();
    v
}

fn expected(case: &Path) -> Vec<String> {
    std::fs::read_to_string(case.join("expected_connlist.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("{ingress-controller}") && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

struct Run {
    lines: Vec<String>,
    host_network_workloads: BTreeSet<String>,
}

fn run(case: &Path, np_guard_model: bool) -> Run {
    let loaded = load(&[case.join("input")]);
    let opts = ResolveOptions {
        host_network_pods_as_endpoints: np_guard_model,
        ..Default::default()
    };
    let cluster = resolve(&loaded.objects, &opts).unwrap();
    let text = connlist::connlist(&cluster, Format::NetpolAnalyzer);
    let host_network_workloads = cluster
        .endpoints
        .iter()
        .filter(|e| e.kind == EndpointKind::HostNetwork)
        .map(|e| format!("{}/{}[{}]", e.namespace, e.workload.name, e.workload.kind))
        .collect();
    Run {
        lines: text.lines().map(str::to_string).collect(),
        host_network_workloads,
    }
}

fn diff(expected: &[String], actual: &[String]) -> Vec<String> {
    let e: BTreeSet<&String> = expected.iter().collect();
    let a: BTreeSet<&String> = actual.iter().collect();
    let mut out: Vec<String> = e.difference(&a).map(|l| format!("- {l}")).collect();
    out.extend(a.difference(&e).map(|l| format!("+ {l}")));
    out.sort_by(|x, y| x[2..].cmp(&y[2..]).then(x.cmp(y)));
    out
}

#[test]
fn there_are_25_cases() {
    assert_eq!(cases().len(), 25);
}

#[test]
fn np_guard_model_reproduces_every_expected_connlist() {
    let mut failures = Vec::new();
    for case in cases() {
        let want = expected(&case);
        let got = run(&case, true).lines;
        if got != want {
            let d = diff(&want, &got);
            failures.push(format!(
                "{}: {} differing lines, first: {:?}",
                case.display(),
                d.len(),
                d.iter().take(6).collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn cilium_model_differs_only_on_host_network_workloads_as_documented() {
    let bless = std::env::var("CILIUMC_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut cases_with_differences = 0;
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let want = expected(&case);
        let run = run(&case, false);
        let d = diff(&want, &run.lines);
        let golden_path = Path::new(GOLDEN).join(format!("{name}.diff"));
        if run.host_network_workloads.is_empty() {
            if run.lines != want {
                failures.push(format!(
                    "{name}: differs without hostNetwork pods: {:?}",
                    &d[..d.len().min(6)]
                ));
            }
            if golden_path.exists() {
                failures.push(format!(
                    "{name}: stale golden diff {}",
                    golden_path.display()
                ));
            }
            continue;
        }
        for line in &d {
            let (src, rest) = line[2..].split_once(" => ").unwrap_or(("", ""));
            let dst = rest.split(" : ").next().unwrap_or("");
            if !run.host_network_workloads.contains(src)
                && !run.host_network_workloads.contains(dst)
            {
                failures.push(format!(
                    "{name}: difference not explained by hostNetwork: {line}"
                ));
            }
        }
        if d.is_empty() {
            if golden_path.exists() {
                failures.push(format!(
                    "{name}: stale golden diff {}",
                    golden_path.display()
                ));
            }
            continue;
        }
        cases_with_differences += 1;
        let text = d.join("\n") + "\n";
        if bless {
            std::fs::create_dir_all(GOLDEN).unwrap();
            std::fs::write(&golden_path, &text).unwrap();
        } else {
            match std::fs::read_to_string(&golden_path) {
                Ok(g) if g == text => {}
                Ok(_) => failures.push(format!(
                    "{name}: difference changed from {}",
                    golden_path.display()
                )),
                Err(_) => failures.push(format!(
                    "{name}: no golden diff at {}",
                    golden_path.display()
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Cilium differs from np-guard on these inputs: the test must see it.
    assert!(cases_with_differences > 0);
}
