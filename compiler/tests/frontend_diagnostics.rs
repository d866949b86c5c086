//! One negative case per diagnostic code: every file in testdata/frontend/negative declares the exact
//! diagnostics it must produce (`# expect: CODE LINE:COLUMN` lines), and the rendered text is pinned by
//! an insta snapshot. Cases that need no file (I/O, encoding, strict mode) are below.
use std::path::{Path, PathBuf};

use ciliumc_compiler::frontend::{self, LoadOptions, Severity, diagnostic::codes, render_text};

const NEGATIVE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/frontend/negative");

fn expectations(text: &str) -> Vec<(String, u32, u32)> {
    let mut v: Vec<(String, u32, u32)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|l| {
            let (code, pos) = l.split_once(' ').unwrap();
            let (line, col) = pos.split_once(':').unwrap();
            (
                code.to_string(),
                line.parse().unwrap(),
                col.parse().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_negative_case_reports_exactly_its_diagnostics() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(NEGATIVE)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{} negative cases", files.len());
    let mut codes_seen = std::collections::BTreeSet::new();
    for path in files {
        let name = format!("negative/{}", path.file_name().unwrap().to_str().unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = expectations(&text);
        assert!(!expected.is_empty(), "{name} has no `# expect:` line");
        let result = frontend::load_str(&text, &name, &LoadOptions::default());
        let mut actual: Vec<(String, u32, u32)> = result
            .diagnostics
            .iter()
            .map(|d| (d.code.to_string(), d.line, d.column))
            .collect();
        actual.sort();
        let rendered: String = result
            .diagnostics
            .iter()
            .map(|d| render_text(d, &text))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(actual, expected, "{name}:\n{rendered}");
        for d in &result.diagnostics {
            codes_seen.insert(d.code);
            // Every diagnostic of an object names it; the expected/found texts are never empty.
            let tree_level = [
                codes::YAML_SYNTAX,
                codes::GO_TEMPLATE,
                codes::NOT_AN_OBJECT,
                codes::BAD_ALIAS,
                codes::TOO_DEEP,
            ];
            if !tree_level.contains(&d.code) {
                assert!(d.object.is_some(), "{name}: {} has no object", d.code);
            }
            assert_eq!(
                d.is_error(),
                d.code.starts_with('E'),
                "{name}: {} severity",
                d.code
            );
        }
        let snapshot_name = path.file_stem().unwrap().to_str().unwrap().to_string();
        insta::assert_snapshot!(snapshot_name, rendered);
    }
    assert!(
        codes_seen.len() >= 30,
        "only {} distinct codes covered: {codes_seen:?}",
        codes_seen.len()
    );
}

#[test]
fn missing_paths_and_non_utf8_files_are_errors_without_position() {
    let result = frontend::load(&[PathBuf::from("/nonexistent/ciliumc/input.yaml")]);
    assert_eq!(result.diagnostics.len(), 1);
    assert_eq!(result.diagnostics[0].code, codes::IO);
    assert_eq!(
        (result.diagnostics[0].line, result.diagnostics[0].column),
        (0, 0)
    );

    let dir = std::env::temp_dir().join(format!("ciliumc-frontend-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(&file, b"kind: \xff\xfe\n").unwrap();
    let result = frontend::load(std::slice::from_ref(&file));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(result.diagnostics.len(), 1);
    assert_eq!(result.diagnostics[0].code, codes::NOT_UTF8);
    assert!(result.has_errors());
}

#[test]
fn strict_mode_turns_unknown_kinds_into_errors() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
    let lenient = frontend::load_str(text, "c.yaml", &LoadOptions::default());
    assert!(!lenient.has_errors());
    assert_eq!(lenient.warning_count(), 1);
    let strict = frontend::load_str(
        text,
        "c.yaml",
        &LoadOptions {
            strict: true,
            ..LoadOptions::default()
        },
    );
    assert!(strict.has_errors());
    assert_eq!(strict.diagnostics[0].severity, Severity::Error);
    assert_eq!(strict.diagnostics[0].code, codes::UNKNOWN_KIND);
}

#[test]
fn too_deep_nesting_is_an_error() {
    let mut text =
        String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n  annotations:\n");
    for depth in 0..200 {
        text.push_str(&format!("{}k:\n", " ".repeat(4 + depth * 2)));
    }
    let result = frontend::load_str(&text, "deep.yaml", &LoadOptions::default());
    assert!(
        result.diagnostics.iter().any(|d| d.code == codes::TOO_DEEP),
        "{:?}",
        result.diagnostics
    );
    assert!(result.objects.is_empty());
}

#[test]
fn json_input_reports_positions_like_yaml() {
    let text = "{\n  \"apiVersion\": \"cilium.io/v2\",\n  \"kind\": \"CiliumNetworkPolicy\",\n  \"metadata\": {\"name\": \"j\"},\n  \"spec\": {\n    \"endpointSelector\": {},\n    \"egress\": [{\"toCIDR\": [\"10.0.0.0/40\"]}]\n  }\n}\n";
    let result = frontend::load_str(text, "p.json", &LoadOptions::default());
    let d = &result.diagnostics[0];
    assert_eq!((d.code, d.line, d.column), (codes::BAD_CIDR, 7, 28));
    assert_eq!(&text[d.span.clone()], "\"10.0.0.0/40\"");
}

#[test]
fn duplicate_objects_across_files_name_the_first_location() {
    let dir = std::env::temp_dir().join(format!("ciliumc-frontend-dup-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n";
    std::fs::write(dir.join("a.yaml"), ns).unwrap();
    std::fs::write(dir.join("sub/b.yml"), ns).unwrap();
    std::fs::write(dir.join("ignored.txt"), ns).unwrap();
    let result = frontend::load(std::slice::from_ref(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(result.objects.len(), 1);
    assert!(result.objects[0].location.file.ends_with("a.yaml"));
    let d = &result.diagnostics[0];
    assert_eq!(d.code, codes::DUPLICATE_OBJECT);
    assert!(d.file.ends_with("sub/b.yml"));
    assert_eq!((d.line, d.column), (4, 9));
    assert!(
        d.notes.iter().any(|n| n.contains("a.yaml:4:9")),
        "{:?}",
        d.notes
    );
}

#[test]
fn negative_dir_exists() {
    assert!(Path::new(NEGATIVE).is_dir());
}

/// Prints every negative case's diagnostics (review aid: `--ignored --nocapture`).
#[test]
#[ignore]
fn print_negative_cases() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(NEGATIVE)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let name = format!("negative/{}", path.file_name().unwrap().to_str().unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        let result = frontend::load_str(&text, &name, &LoadOptions::default());
        let actual: Vec<String> = result
            .diagnostics
            .iter()
            .map(|d| format!("{} {}:{}", d.code, d.line, d.column))
            .collect();
        println!(
            "== {name} expected {:?} actual {actual:?}",
            expectations(&text)
        );
        for d in &result.diagnostics {
            println!("{}", render_text(d, &text));
        }
    }
}
