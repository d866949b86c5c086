//! `ciliumc diff` exit codes and modes, through the built binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ciliumc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ciliumc"))
        .args(args)
        .output()
        .expect("run ciliumc")
}

fn case(name: &str, side: &str) -> String {
    format!("../testdata/diff/{name}/{side}")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("ciliumc-diff-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn compile(input: &str, out: &Path) {
    let o = ciliumc(&["compile", input, "-o", out.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "compile {input}: {}", text(&o.stderr));
}

#[test]
fn semantic_change_exits_1_and_names_the_connection() {
    let o = ciliumc(&[
        "diff",
        &case("port-added", "old"),
        &case("port-added", "new"),
    ]);
    assert_eq!(code(&o), 1, "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("shop/frontend[Pod] => shop/backend[Pod] : TCP 9090"),
        "{out}"
    );
    assert!(out.contains("backend-ingress ingress[0]"), "{out}");
}

#[test]
fn no_semantic_change_exits_0() {
    let o = ciliumc(&[
        "diff",
        &case("unrelated-pod-added", "old"),
        &case("unrelated-pod-added", "new"),
    ]);
    assert_eq!(code(&o), 0, "{}{}", text(&o.stdout), text(&o.stderr));
    let same = ciliumc(&[
        "diff",
        &case("port-added", "old"),
        &case("port-added", "old"),
    ]);
    assert_eq!(code(&same), 0);
    assert!(text(&same.stdout).contains("no connection changes"));
}

#[test]
fn repeated_old_and_new_flags_are_one_side_each() {
    let old = case("deny-added", "old");
    let new_dir = case("deny-added", "new");
    let o = ciliumc(&[
        "diff",
        "--old",
        &format!("{old}/inventory.yaml"),
        "--old",
        &format!("{old}/policy.yaml"),
        "--new",
        &format!("{new_dir}/inventory.yaml"),
        "--new",
        &format!("{new_dir}/policy.yaml"),
        "--new",
        &format!("{new_dir}/deny.yaml"),
    ]);
    assert_eq!(code(&o), 1, "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("newly denied"));
}

#[test]
fn formats_json_and_markdown() {
    let args = |f: &'static str| {
        ciliumc(&[
            "diff",
            &case("cidr-except-added", "old"),
            &case("cidr-except-added", "new"),
            "--format",
            f,
        ])
    };
    let j = args("json");
    assert_eq!(code(&j), 1);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(
        v["connections"][0]["dst"],
        "192.0.2.128-192.0.2.255[External]"
    );
    let m = args("markdown");
    assert_eq!(code(&m), 1);
    let md = text(&m.stdout);
    assert!(md.starts_with("### ciliumc diff"), "{md}");
    assert!(
        md.contains("| newly denied | `shop/frontend[Pod]` |"),
        "{md}"
    );
    let bad = args("xml");
    assert_eq!(code(&bad), 2);
}

#[test]
fn input_errors_exit_2_with_diagnostics() {
    let s = Scratch::new("bad-input");
    std::fs::write(
        s.path("broken.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec:\n  podSelector: [\n",
    )
    .unwrap();
    let o = ciliumc(&[
        "diff",
        &case("port-added", "old"),
        s.path("broken.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2);
    let err = text(&o.stderr);
    assert!(err.contains("broken.yaml:"), "{err}");
    assert!(text(&o.stdout).is_empty());
    let missing = ciliumc(&[
        "diff",
        &case("port-added", "old"),
        "/nonexistent/ciliumc-diff",
    ]);
    assert_eq!(code(&missing), 2);
    let one = ciliumc(&["diff", &case("port-added", "old")]);
    assert_eq!(code(&one), 2);
}

#[test]
fn output_dirs_compare_programs_and_mixed_sides_are_refused() {
    let s = Scratch::new("outputs");
    let (a, b, c) = (s.path("a"), s.path("b"), s.path("c"));
    compile(&case("port-added", "old"), &a);
    compile(&case("port-added", "new"), &b);
    compile(&case("port-added", "old"), &c);
    let (a, b, c) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        c.to_str().unwrap(),
    );

    let changed = ciliumc(&["diff", a, b]);
    assert_eq!(code(&changed), 1, "{}", text(&changed.stderr));
    let out = text(&changed.stdout);
    assert!(out.contains("shop/backend"), "{out}");
    assert!(
        out.contains("only program and manifest differences"),
        "{out}"
    );

    let same = ciliumc(&["diff", a, c]);
    assert_eq!(code(&same), 0, "{}", text(&same.stdout));

    let mixed = ciliumc(&["diff", &case("port-added", "old"), b]);
    assert_eq!(code(&mixed), 2);
    assert!(text(&mixed.stderr).contains("cannot compare input files with a compile output"));
}
