//! Golden tests of `ciliumc diff` over `testdata/diff/<case>/{old,new}` pairs, plus assertions on
//! the facts each case is about (so a wrong snapshot accepted by mistake still fails).

use std::path::PathBuf;

use ciliumc_compiler::diff::{
    self, ChangeKind, DiffOptions, DiffReport, Format, ObjectChangeKind, ProgramChangeKind,
};
use ciliumc_compiler::frontend::{self, LoadOptions};

fn load(case: &str, side: &str) -> frontend::LoadResult {
    // Relative to the package root (cargo's working directory for tests), so snapshots carry
    // stable file names.
    let path = PathBuf::from(format!("../testdata/diff/{case}/{side}"));
    let loaded = frontend::load_with(&[path], &LoadOptions::default());
    assert!(
        !loaded.has_errors(),
        "{case}/{side}: {:#?}",
        loaded.diagnostics
    );
    loaded
}

fn report(case: &str) -> DiffReport {
    let old = load(case, "old");
    let new = load(case, "new");
    diff::diff_inputs(&old.objects, &new.objects, &DiffOptions::default()).unwrap()
}

fn snapshot(case: &str, r: &DiffReport) {
    insta::assert_snapshot!(format!("{case}.text"), diff::render(r, Format::Text));
    insta::assert_snapshot!(format!("{case}.md"), diff::render(r, Format::Markdown));
}

fn allowed<'a>(r: &'a DiffReport, src: &str, dst: &str) -> Vec<&'a diff::ConnectionChange> {
    r.connections
        .iter()
        .filter(|c| c.change == ChangeKind::Allowed && c.src == src && c.dst == dst)
        .collect()
}

#[test]
fn port_added_to_allow_rule() {
    let r = report("port-added");
    snapshot("port-added", &r);
    assert!(r.has_changes());
    assert_eq!(r.connections.len(), 1, "{:#?}", r.connections);
    let c = &r.connections[0];
    assert_eq!(
        (c.change, c.src.as_str(), c.dst.as_str(), c.conns.as_str()),
        (
            ChangeKind::Allowed,
            "shop/frontend[Pod]",
            "shop/backend[Pod]",
            "TCP 9090"
        )
    );
    let cause = &c.causes[0];
    assert_eq!(cause.endpoint, "shop/backend");
    assert_eq!(cause.rules_added.len(), 1);
    let rule = &cause.rules_added[0];
    assert_eq!(
        rule.describe(),
        "CiliumNetworkPolicy shop/backend-ingress ingress[0]"
    );
    assert_eq!(rule.policy_change, Some(ObjectChangeKind::Modified));
    assert!(
        rule.source
            .as_deref()
            .is_some_and(|s| s.starts_with("../testdata/diff/port-added/new/policy.yaml:"))
    );
    assert_eq!(r.summary.policies_modified, 1);
    let programs = r.programs.as_ref().unwrap();
    assert_eq!(programs.endpoints.len(), 1, "{:#?}", programs.endpoints);
    assert_eq!(programs.endpoints[0].endpoint, "shop/backend");
    assert_eq!(programs.endpoints[0].change, ProgramChangeKind::Modified);
}

#[test]
fn deny_rule_added() {
    let r = report("deny-added");
    snapshot("deny-added", &r);
    assert!(r.has_changes());
    assert!(
        r.connections
            .iter()
            .all(|c| c.change == ChangeKind::Denied && c.src == "ops/monitor[Pod]")
    );
    let c = r
        .connections
        .iter()
        .find(|c| c.dst == "shop/backend[Pod]")
        .unwrap();
    assert_eq!(c.conns, "TCP 8080");
    let cause = &c.causes[0];
    assert_eq!(cause.rules_added[0].effect, ciliumc_ir::RuleKind::Deny);
    assert_eq!(
        cause.rules_added[0].describe(),
        "CiliumNetworkPolicy shop/backend-deny-ops ingressDeny[0]"
    );
    assert_eq!(
        cause.rules_added[0].policy_change,
        Some(ObjectChangeKind::Added)
    );
    assert_eq!(
        cause.rules_removed[0].describe(),
        "CiliumNetworkPolicy shop/backend-from-cluster ingress[0]"
    );
    assert_eq!(r.summary.policies_added, 1);
}

#[test]
fn namespace_selector_widened() {
    let r = report("namespace-selector-widened");
    snapshot("namespace-selector-widened", &r);
    let c = allowed(&r, "ops/monitor[Pod]", "shop/backend[Pod]");
    assert_eq!(c.len(), 1, "{:#?}", r.connections);
    assert_eq!(c[0].conns, "TCP 8080");
    assert_eq!(r.connections.len(), 1);
    assert_eq!(
        c[0].causes[0].rules_added[0].describe(),
        "NetworkPolicy shop/backend-from-team ingress[0]"
    );
}

#[test]
fn policy_deleted_makes_endpoint_unenforced() {
    let r = report("policy-deleted");
    snapshot("policy-deleted", &r);
    assert_eq!(r.summary.policies_removed, 1);
    assert_eq!(r.summary.newly_denied, 0);
    // frontend keeps TCP 8080 and gains everything else.
    let c = allowed(&r, "shop/frontend[Pod]", "shop/backend[Pod]");
    assert_eq!(c.len(), 1);
    assert!(
        c[0].conns.contains("TCP 1-8079,8081-65535"),
        "{}",
        c[0].conns
    );
    // monitor had nothing and now has everything.
    let m = allowed(&r, "ops/monitor[Pod]", "shop/backend[Pod]");
    assert_eq!(m[0].conns, "All Connections");
    let cause = &m[0].causes[0];
    assert_eq!(cause.new, vec![diff::Decision::NotEnforced]);
    assert_eq!(cause.policies.len(), 1);
    assert_eq!(
        cause.policies[0].policy,
        "NetworkPolicy shop/backend-lockdown"
    );
    assert_eq!(cause.policies[0].change, ObjectChangeKind::Removed);
    // Every change is towards the backend.
    assert!(r.connections.iter().all(|c| c.dst == "shop/backend[Pod]"));
}

#[test]
fn unrelated_pod_added_is_no_semantic_change() {
    let r = report("unrelated-pod-added");
    snapshot("unrelated-pod-added", &r);
    assert!(!r.has_changes(), "{:#?}", r.connections);
    assert!(r.connections.is_empty());
    assert_eq!(r.workloads.added, vec!["ops/batch[Pod]".to_string()]);
    assert!(r.identities.removed.is_empty());
    assert!(r.identities.renumbered.is_empty());
    let programs = r.programs.as_ref().unwrap();
    let changed: Vec<_> = programs
        .endpoints
        .iter()
        .map(|e| (e.endpoint.as_str(), e.change))
        .collect();
    assert_eq!(changed, vec![("ops/batch", ProgramChangeKind::Added)]);
}

#[test]
fn cidr_except_added() {
    let r = report("cidr-except-added");
    snapshot("cidr-except-added", &r);
    assert_eq!(r.connections.len(), 1, "{:#?}", r.connections);
    let c = &r.connections[0];
    assert_eq!(c.change, ChangeKind::Denied);
    assert_eq!(c.src, "shop/frontend[Pod]");
    assert_eq!(c.dst, "192.0.2.128-192.0.2.255[External]");
    assert_eq!(c.conns, "TCP 443");
    assert_eq!(
        c.causes[0].rules_removed[0].describe(),
        "CiliumNetworkPolicy shop/frontend-egress egress[0]"
    );
    assert!(
        r.identities
            .added
            .iter()
            .any(|i| i.labels.iter().any(|l| l.contains("192.0.2.128/25")))
    );
}

#[test]
fn identical_inputs_have_no_changes_at_all() {
    let old = load("port-added", "old");
    let r = diff::diff_inputs(&old.objects, &old.objects, &DiffOptions::default()).unwrap();
    assert!(!r.has_changes());
    assert!(r.policies.is_empty() && r.objects.is_empty());
    assert!(r.programs.as_ref().unwrap().endpoints.is_empty());
    assert!(!r.programs.as_ref().unwrap().has_changes());
}

#[test]
fn json_format_round_trips_and_is_deterministic() {
    let a = diff::render(&report("deny-added"), Format::Json);
    let b = diff::render(&report("deny-added"), Format::Json);
    assert_eq!(a, b);
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert_eq!(v["mode"], "inputs");
    assert_eq!(v["connections"][0]["change"], "denied");
    assert!(v["connections"][0]["causes"][0]["rules_added"][0]["source"].is_string());
}

fn compile_to(loaded: &frontend::LoadResult, dir: &std::path::Path) {
    let cluster = ciliumc_compiler::resolve::resolve(
        &loaded.objects,
        &ciliumc_compiler::resolve::ResolveOptions::default(),
    )
    .unwrap();
    let out = ciliumc_compiler::compile::compile(&cluster, "digest").unwrap();
    ciliumc_compiler::compile::write_output_dir(&out, dir).unwrap();
}

#[test]
fn output_dirs_show_program_and_manifest_changes_only() {
    let scratch = std::env::temp_dir().join(format!("ciliumc-diff-golden-{}", std::process::id()));
    let (a, b) = (scratch.join("a"), scratch.join("b"));
    compile_to(&load("cidr-except-added", "old"), &a);
    compile_to(&load("cidr-except-added", "new"), &b);
    assert!(diff::is_output_dir(&a) && !diff::is_output_dir(&scratch));
    let r = diff::diff_outputs(&a, &b).unwrap();
    let same = diff::diff_outputs(&a, &a).unwrap();
    let _ = std::fs::remove_dir_all(&scratch);
    insta::assert_snapshot!("outputs.text", diff::render(&r, Format::Text));
    assert!(r.has_changes());
    assert!(r.connections.is_empty());
    let p = r.programs.as_ref().unwrap();
    assert_eq!(p.endpoints.len(), 1);
    assert_eq!(p.endpoints[0].endpoint, "shop/frontend");
    assert_eq!(p.identities.added.len(), 1);
    assert!(p.maps.iter().any(|m| m.entries_added == 1));
    assert!(!same.has_changes());
}
