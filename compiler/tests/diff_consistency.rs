//! `diff` agrees with connlist and with itself: for every workload pair and TCP/UDP/SCTP port,
//! "newly allowed" is exactly what NEW's connlist allows and OLD's does not (and vice versa), and
//! swapping OLD and NEW swaps allowed and denied. Over the testdata pairs and the netpol-analyzer
//! semantic-diff corpus cases.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use ciliumc_compiler::connlist::{self, CONN_PROTOCOLS, ConnlistOptions};
use ciliumc_compiler::diff::{self, ChangeKind, DiffOptions, DiffReport};
use ciliumc_compiler::frontend::{self, LoadOptions, LoadResult};
use ciliumc_compiler::resolve::{self, ResolveOptions, ResolvedCluster};
use ciliumc_ir::Protocol;

const CORPUS: &str = "../../shared/corpus/netpol-analyzer/cases";

/// (newly allowed?, source, destination, protocol) → port ranges.
type PortsByChange = BTreeMap<(bool, String, String, Protocol), Vec<(u32, u32)>>;
fn load(path: PathBuf) -> LoadResult {
    let loaded = frontend::load_with(std::slice::from_ref(&path), &LoadOptions::default());
    assert!(
        !loaded.has_errors(),
        "{}: {:#?}",
        path.display(),
        loaded.diagnostics
    );
    loaded
}

fn pairs() -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for case in [
        "port-added",
        "deny-added",
        "namespace-selector-widened",
        "policy-deleted",
        "unrelated-pod-added",
        "cidr-except-added",
    ] {
        let base = PathBuf::from("../testdata/diff").join(case);
        out.push((base.join("old"), base.join("new")));
    }
    let corpus = PathBuf::from(CORPUS);
    for (a, b) in [
        (
            "semanticDiff-same-topologies-old1",
            "semanticDiff-same-topologies-new1",
        ),
        (
            "semanticDiff-same-topologies-old2",
            "semanticDiff-same-topologies-new3",
        ),
        (
            "semanticDiff-orig-topologies-policy-a",
            "semanticDiff-different-topologies-policy-a",
        ),
        (
            "semanticDiff-different-topologies-policy-a",
            "semanticDiff-different-topologies-policy-a-with-ipblock",
        ),
    ] {
        let (a, b) = (corpus.join(a).join("input"), corpus.join(b).join("input"));
        if a.is_dir() && b.is_dir() {
            out.push((a, b));
        } else {
            // The corpus lives outside the repository; the testdata pairs still run.
            eprintln!(
                "skipping corpus pair {} / {}: not present",
                a.display(),
                b.display()
            );
        }
    }
    out
}

/// (src, dst, protocol) → sorted, disjoint, non-adjacent inclusive port intervals.
type PortSets = BTreeMap<(String, String, Protocol), Vec<(u32, u32)>>;

fn normalize(mut v: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    v.sort();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// `a` minus `b`, both normalized.
fn subtract(a: &[(u32, u32)], b: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for &(lo, hi) in a {
        let mut cur = lo;
        for &(blo, bhi) in b {
            if bhi < cur || blo > hi {
                continue;
            }
            if blo > cur {
                out.push((cur, blo - 1));
            }
            cur = bhi + 1;
        }
        if cur <= hi {
            out.push((cur, hi));
        }
    }
    out
}

fn is_external(label: &str) -> bool {
    label.ends_with("[External]")
}

/// Workload-to-workload allowed ports per protocol, from connlist.
fn connlist_ports(cluster: &ResolvedCluster) -> PortSets {
    let mut out = PortSets::new();
    for c in connlist::connections(cluster, &ConnlistOptions { ipv6: true }) {
        if is_external(&c.src) || is_external(&c.dst) {
            continue;
        }
        for p in CONN_PROTOCOLS {
            let v: Vec<(u32, u32)> = c
                .conns
                .ranges(p)
                .iter()
                .map(|r| (r.lo as u32, r.hi as u32))
                .collect();
            if !v.is_empty() {
                out.insert((c.src.clone(), c.dst.clone(), p), normalize(v));
            }
        }
    }
    out
}

/// Ports of one kind of change between workloads (entities and external ranges left out).
fn diff_ports(report: &DiffReport, kind: ChangeKind) -> PortSets {
    let mut out = PortSets::new();
    let is_workload = |l: &str| l.contains('/') && !is_external(l);
    for c in report.connections.iter().filter(|c| c.change == kind) {
        if !is_workload(&c.src) || !is_workload(&c.dst) {
            continue;
        }
        for r in c
            .ranges
            .iter()
            .filter(|r| CONN_PROTOCOLS.contains(&r.protocol))
        {
            out.entry((c.src.clone(), c.dst.clone(), r.protocol))
                .or_default()
                .push((r.lo as u32, r.hi as u32));
        }
    }
    out.into_iter().map(|(k, v)| (k, normalize(v))).collect()
}

fn minus(a: &PortSets, b: &PortSets, keep: &BTreeSet<String>) -> PortSets {
    let mut out = PortSets::new();
    for (k, v) in a {
        if !keep.contains(&k.0) || !keep.contains(&k.1) {
            continue;
        }
        let d = subtract(v, b.get(k).map(Vec::as_slice).unwrap_or(&[]));
        if !d.is_empty() {
            out.insert(k.clone(), d);
        }
    }
    out
}

/// np-guard's model (hostNetwork pods as ordinary endpoints), as its expected outputs assume.
fn resolve_options() -> ResolveOptions {
    ResolveOptions {
        host_network_pods_as_endpoints: true,
        ..ResolveOptions::default()
    }
}

fn diff_options() -> DiffOptions {
    DiffOptions {
        resolve: resolve_options(),
        compare_programs: false,
    }
}

fn workloads(cluster: &ResolvedCluster) -> BTreeSet<String> {
    cluster
        .endpoints
        .iter()
        .map(|e| format!("{}/{}[{}]", e.namespace, e.workload.name, e.workload.kind))
        .collect()
}

#[test]
fn newly_allowed_and_denied_match_connlist_on_workload_pairs() {
    let opts = diff_options();
    for (old_path, new_path) in pairs() {
        let (old, new) = (load(old_path.clone()), load(new_path.clone()));
        let oc = resolve::resolve(&old.objects, &resolve_options()).unwrap();
        let nc = resolve::resolve(&new.objects, &resolve_options()).unwrap();
        let both: BTreeSet<String> = workloads(&oc)
            .intersection(&workloads(&nc))
            .cloned()
            .collect();
        let (op, np) = (connlist_ports(&oc), connlist_ports(&nc));
        let report = diff::diff_inputs(&old.objects, &new.objects, &opts).unwrap();
        let name = format!("{} -> {}", old_path.display(), new_path.display());
        assert_eq!(
            diff_ports(&report, ChangeKind::Allowed),
            minus(&np, &op, &both),
            "newly allowed, {name}"
        );
        assert_eq!(
            diff_ports(&report, ChangeKind::Denied),
            minus(&op, &np, &both),
            "newly denied, {name}"
        );
    }
}

#[test]
fn swapping_old_and_new_swaps_allowed_and_denied() {
    let opts = diff_options();
    for (old_path, new_path) in pairs() {
        let (old, new) = (load(old_path), load(new_path));
        let fwd = diff::diff_inputs(&old.objects, &new.objects, &opts).unwrap();
        let back = diff::diff_inputs(&new.objects, &old.objects, &opts).unwrap();
        // Ranges may be grouped differently (causes differ by side): compare normalized sets.
        let ports = |r: &DiffReport, flip: bool| -> PortsByChange {
            let mut m: BTreeMap<_, Vec<(u32, u32)>> = BTreeMap::new();
            for c in &r.connections {
                let allowed = (c.change == ChangeKind::Allowed) != flip;
                for x in &c.ranges {
                    m.entry((allowed, c.src.clone(), c.dst.clone(), x.protocol))
                        .or_default()
                        .push((x.lo as u32, x.hi as u32));
                }
            }
            m.into_iter().map(|(k, v)| (k, normalize(v))).collect()
        };
        assert!(!fwd.connections.is_empty() || back.connections.is_empty());
        assert_eq!(ports(&fwd, false), ports(&back, true));
        assert_eq!(fwd.workloads.added, back.workloads.removed);
        assert_eq!(fwd.summary.policies_added, back.summary.policies_removed);
    }
}

/// np-guard's `src => dst : conns` lines as port sets (workload pairs only).
fn expected_ports(text: &str) -> PortSets {
    let mut out = PortSets::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (pair, conns) = line.split_once(" : ").expect("src => dst : conns");
        let (src, dst) = pair.split_once(" => ").expect("src => dst");
        if is_external(src) || is_external(dst) {
            continue;
        }
        let mut add = |p: Protocol, lo: u32, hi: u32| {
            out.entry((src.to_string(), dst.to_string(), p))
                .or_default()
                .push((lo, hi));
        };
        if conns == "All Connections" {
            for p in CONN_PROTOCOLS {
                add(p, 1, 65535);
            }
            continue;
        }
        let mut current = None;
        for token in conns.split(',') {
            let ports = match token.split_once(' ') {
                Some((name, ports)) => {
                    current = CONN_PROTOCOLS.into_iter().find(|p| p.name() == name);
                    ports
                }
                None => token,
            };
            let p = current.expect("protocol before ports");
            let (lo, hi) = match ports.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => (ports.parse().unwrap(), ports.parse().unwrap()),
            };
            add(p, lo, hi);
        }
    }
    out.into_iter().map(|(k, v)| (k, normalize(v))).collect()
}

/// np-guard's expected connection lists of two corpus cases are an independent oracle: what
/// one allows and the other does not is what `diff` must call newly allowed (or denied).
#[test]
fn matches_the_difference_of_netpol_analyzer_expected_connlists() {
    let corpus = PathBuf::from(CORPUS);
    let mut checked = 0;
    for (a, b) in [
        (
            "semanticDiff-same-topologies-old1",
            "semanticDiff-same-topologies-new1",
        ),
        (
            "semanticDiff-same-topologies-old2",
            "semanticDiff-same-topologies-new3",
        ),
        (
            "semanticDiff-same-topologies-new1",
            "semanticDiff-same-topologies-old2",
        ),
    ] {
        let (a, b) = (corpus.join(a), corpus.join(b));
        let (Ok(ea), Ok(eb)) = (
            std::fs::read_to_string(a.join("expected_connlist.txt")),
            std::fs::read_to_string(b.join("expected_connlist.txt")),
        ) else {
            eprintln!("skipping {}: corpus not present", a.display());
            continue;
        };
        let (old, new) = (load(a.join("input")), load(b.join("input")));
        let oc = resolve::resolve(&old.objects, &resolve_options()).unwrap();
        let nc = resolve::resolve(&new.objects, &resolve_options()).unwrap();
        let both: BTreeSet<String> = workloads(&oc)
            .intersection(&workloads(&nc))
            .cloned()
            .collect();
        let (op, np) = (expected_ports(&ea), expected_ports(&eb));
        let report = diff::diff_inputs(&old.objects, &new.objects, &diff_options()).unwrap();
        let want_allowed = minus(&np, &op, &both);
        assert!(!want_allowed.is_empty() || !minus(&op, &np, &both).is_empty());
        assert_eq!(
            diff_ports(&report, ChangeKind::Allowed),
            want_allowed,
            "{}",
            b.display()
        );
        assert_eq!(
            diff_ports(&report, ChangeKind::Denied),
            minus(&op, &np, &both),
            "{}",
            b.display()
        );
        checked += 1;
    }
    eprintln!("{checked} corpus pair(s) checked against np-guard's expected lists");
}
