//! Every file of ../shared/corpus goes through the front end: the valid ones load without errors, and the
//! set of files with errors is exactly the one listed (with reasons) in testdata/frontend/invalid-corpus.md.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ciliumc_compiler::frontend::{self, LoadResult, render_text};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus");
const INVALID_LIST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/frontend/invalid-corpus.md"
);

fn corpus_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            corpus_files(&p, out);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
}

fn rendered_errors(result: &LoadResult) -> String {
    result
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| render_text(d, result.source(&d.file).unwrap_or("")))
        .collect()
}

/// Paths (relative to the corpus) listed as invalid: lines of the form "| `path` | reason |".
fn listed_invalid() -> BTreeSet<String> {
    let text = std::fs::read_to_string(INVALID_LIST).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(p, _)| p.to_string()))
        .collect()
}

#[test]
fn corpus_files_load_except_the_listed_invalid_ones() {
    let root = PathBuf::from(CORPUS);
    if !root.is_dir() {
        panic!("corpus not found at {CORPUS}");
    }
    let mut files = Vec::new();
    corpus_files(&root, &mut files);
    assert!(files.len() > 400, "only {} corpus files found", files.len());
    let mut failing = BTreeSet::new();
    let mut report = String::new();
    let mut objects = 0;
    for f in &files {
        // netpol-analyzer inputs are checked per case below (a case is one cluster).
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        let result = frontend::load(std::slice::from_ref(f));
        objects += result.objects.len();
        if result.has_errors() {
            failing.insert(rel.clone());
            report.push_str(&format!("== {rel}\n{}", rendered_errors(&result)));
        }
    }
    let listed = listed_invalid();
    let unexpected: Vec<_> = failing.difference(&listed).collect();
    let missing: Vec<_> = listed.difference(&failing).collect();
    assert!(
        unexpected.is_empty() && missing.is_empty(),
        "failing but not listed: {unexpected:#?}\nlisted but loading fine: {missing:#?}\n{report}"
    );
    assert!(objects > 500, "only {objects} objects loaded");
}

#[test]
fn each_netpol_analyzer_case_loads_as_one_cluster() {
    let cases = PathBuf::from(CORPUS).join("netpol-analyzer/cases");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&cases)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 25);
    for case in dirs {
        let result = frontend::load(&[case.join("input")]);
        assert!(
            !result.has_errors(),
            "{}:\n{}",
            case.display(),
            rendered_errors(&result)
        );
        assert!(!result.objects.is_empty(), "{}", case.display());
    }
}

/// Prints every warning of the corpus (run with `--ignored --nocapture` to review them).
#[test]
#[ignore]
fn print_corpus_warnings() {
    let mut files = Vec::new();
    corpus_files(Path::new(CORPUS), &mut files);
    for f in &files {
        let result = frontend::load(std::slice::from_ref(f));
        for d in result.diagnostics.iter().filter(|d| !d.is_error()) {
            println!("{}", render_text(d, result.source(&d.file).unwrap_or("")));
        }
    }
}
