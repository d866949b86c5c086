//! Every valid policy of the corpus compiles against a generated inventory, and every emitted
//! object passes the kernel verifier and loads with the system's libbpf (`bpftool prog loadall`)
//! and iproute2 (`tc filter add ... bpf da obj F sec classifier`).
//!
//! The inventory is generated per file: for every label selector in a policy (subjects and peers),
//! one pod in the policy's namespace whose labels satisfy the selector, so that the programs carry
//! real rules rather than being unenforced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ciliumc_compiler::compile;
use ciliumc_compiler::frontend::{self, LoadOptions, LoadedObject};
use ciliumc_compiler::resolve::{self, ResolveOptions};
use ciliumc_tests::kernel_or_skip;
use ciliumc_tests::loader::load_object_raw;
use ciliumc_tests::tools::{TempObject, bpftool_loadall, tc_attach_check};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus");

fn corpus_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for sub in ["cilium", "kubernetes-network-policy-recipes", "cyclonus"] {
        walk(&Path::new(CORPUS).join(sub), &mut out);
    }
    out.sort();
    out
}

fn is_policy(kind: &str) -> bool {
    matches!(
        kind,
        "NetworkPolicy" | "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy"
    )
}

/// Labels that satisfy a selector (as JSON), or None when the selector cannot be satisfied by
/// plain pod labels (reserved or namespace keys are left to resolve).
fn labels_for(selector: &serde_json::Value) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let usable = |k: &str| -> Option<String> {
        let k = k
            .strip_prefix("k8s:")
            .or_else(|| k.strip_prefix("any:"))
            .unwrap_or(k);
        if k.contains(':')
            || k.starts_with("io.kubernetes.pod.namespace")
            || k.starts_with("io.cilium.")
        {
            return None;
        }
        Some(k.to_string())
    };
    if let Some(m) = selector.get("matchLabels").and_then(|m| m.as_object()) {
        for (k, v) in m {
            if let (Some(k), Some(v)) = (usable(k), v.as_str()) {
                labels.insert(k, v.to_string());
            }
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(|m| m.as_array()) {
        for e in exprs {
            let (Some(k), Some(op)) = (
                e.get("key").and_then(|k| k.as_str()),
                e.get("operator").and_then(|o| o.as_str()),
            ) else {
                continue;
            };
            let Some(k) = usable(k) else { continue };
            match op {
                "In" => {
                    if let Some(v) = e
                        .get("values")
                        .and_then(|v| v.as_array())
                        .and_then(|v| v.first())
                        .and_then(|v| v.as_str())
                    {
                        labels.insert(k, v.to_string());
                    }
                }
                "Exists" => {
                    labels.insert(k, "x".to_string());
                }
                _ => {}
            }
        }
    }
    labels
}

fn selectors(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            if m.contains_key("matchLabels") || m.contains_key("matchExpressions") {
                out.push(v.clone());
            }
            m.values().for_each(|c| selectors(c, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|c| selectors(c, out)),
        _ => {}
    }
}

/// A YAML document with one namespace per policy namespace and one pod per selector.
fn generated_inventory(policies: &[&LoadedObject]) -> String {
    let mut namespaces = BTreeSet::from(["default".to_string()]);
    let mut pods = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        let ns = p.namespace.clone().unwrap_or_else(|| "default".to_string());
        namespaces.insert(ns.clone());
        let json = serde_json::to_value(&p.object).expect("model serializes");
        let mut sels = Vec::new();
        selectors(&json, &mut sels);
        sels.push(serde_json::json!({})); // a pod no selector asked for
        for (j, s) in sels.iter().enumerate() {
            let labels: serde_json::Map<String, serde_json::Value> = labels_for(s)
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            pods.push(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("gen-{i}-{j}"), "namespace": ns, "labels": labels},
                "spec": {"containers": [{"name": "c", "image": "i", "ports": [
                    {"name": "http", "containerPort": 80}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]}
            }));
        }
    }
    let mut docs: Vec<serde_json::Value> = namespaces
        .into_iter()
        .map(|n| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}))
        .collect();
    docs.extend(pods);
    serde_json::to_string(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": docs}))
        .expect("json")
}

#[test]
fn every_valid_corpus_policy_compiles_and_loads_everywhere() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    let mut unique: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    let mut compiled_files = 0;
    let mut programs_with_rules = 0;
    for file in corpus_files() {
        let loaded = frontend::load_with(std::slice::from_ref(&file), &LoadOptions::default());
        if loaded.has_errors() {
            continue; // the invalid ones are asserted by compiler/tests/frontend_corpus.rs
        }
        let policies: Vec<&LoadedObject> = loaded
            .objects
            .iter()
            .filter(|o| is_policy(o.kind.as_str()))
            .collect();
        if policies.is_empty() {
            continue;
        }
        let inventory = frontend::load_str(
            &generated_inventory(&policies),
            "generated.json",
            &LoadOptions::default(),
        );
        assert!(
            !inventory.has_errors(),
            "{}: generated inventory does not load: {:?}",
            file.display(),
            inventory.diagnostics
        );
        let mut objects: Vec<LoadedObject> = loaded.objects.clone();
        objects.extend(inventory.objects);
        let cluster = resolve::resolve(&objects, &ResolveOptions::default())
            .unwrap_or_else(|e| panic!("{}: resolve: {e}", file.display()));
        let out = compile::compile(&cluster, "test")
            .unwrap_or_else(|e| panic!("{}: compile: {e}", file.display()));
        compiled_files += 1;
        programs_with_rules += cluster
            .policies
            .iter()
            .filter(|p| p.ingress.enforced || p.egress.enforced)
            .count();
        for obj in out.objects {
            unique
                .entry(obj.bytes)
                .or_insert_with(|| format!("{} {}", file.display(), obj.path));
        }
    }
    assert!(
        compiled_files >= 150,
        "only {compiled_files} corpus files compiled"
    );
    assert!(
        programs_with_rules >= 150,
        "only {programs_with_rules} endpoints carry enforced policy"
    );
    eprintln!("{compiled_files} files, {} distinct objects", unique.len());
    for (bytes, origin) in &unique {
        if let Err(e) = load_object_raw(bytes) {
            panic!("{origin}: the verifier refused the object:\n{e}");
        }
        let tmp = TempObject::new(bytes).expect("temp object");
        bpftool_loadall(&tmp.path)
            .unwrap_or_else(|e| panic!("{origin}: bpftool prog loadall: {e}"));
        tc_attach_check(&tmp.path, "classifier")
            .unwrap_or_else(|e| panic!("{origin}: tc filter add: {e}"));
    }
}
