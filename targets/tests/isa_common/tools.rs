//! Finding and running the LLVM 19 tools the golden tests compare against.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `Some(path)` if `tool` runs; otherwise prints why the test is skipped, or panics when `CI=true`
/// (CI must have the tools, so a missing tool there is a failure, not a skip).
pub fn require_tool(tool: &str) -> Option<PathBuf> {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(PathBuf::from(tool));
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{tool} is required when CI=true but does not run");
    }
    eprintln!("SKIP: {tool} not found; install the clang-19/llvm-19 packages to run this test");
    None
}

/// Runs `llvm-objdump-19 -d [extra] file` and returns stdout.
pub fn objdump(objdump: &Path, file: &Path, extra: &[&str]) -> String {
    let out = Command::new(objdump)
        .arg("-d")
        .args(extra)
        .arg(file)
        .output()
        .expect("run llvm-objdump-19");
    assert!(
        out.status.success(),
        "llvm-objdump-19 failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 objdump output")
}

/// A scratch directory unique to this test process and `name`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ciliumc-isa-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Line-by-line diff summary for assertion messages (first differing lines only).
pub fn first_differences(ours: &str, theirs: &str, max: usize) -> String {
    let mut out = String::new();
    let a: Vec<&str> = ours.lines().collect();
    let b: Vec<&str> = theirs.lines().collect();
    let mut shown = 0;
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied(), b.get(i).copied());
        if x != y {
            out.push_str(&format!(
                "line {}:\n  ours:  {:?}\n  llvm:  {:?}\n",
                i + 1,
                x,
                y
            ));
            shown += 1;
            if shown >= max {
                break;
            }
        }
    }
    out
}
