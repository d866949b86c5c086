//! `ciliumc trace --engine`: the userspace interpreter prints the same verdicts, deciding rules and
//! evaluator cross-check as the kernel for flows of the demo (TCP/UDP/ICMP, IPv4/IPv6, allowed and
//! denied, to a pod and to an outside address), apart from the `engine:` line; `auto` falls back to
//! the interpreter for a user that `bpf()` refuses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn trace(dir: &Path, path: &str, flow: &[&str], engine: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ciliumc"))
        .current_dir(dir)
        .arg("trace")
        .arg(path)
        .args(flow)
        .args(["--engine", engine])
        .output()
        .expect("run ciliumc")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The output without the line that names the engine.
fn without_engine_line(text: &str) -> (String, Vec<String>) {
    let mut engine = Vec::new();
    let mut rest = String::new();
    for line in text.lines() {
        if line.starts_with("engine: ") {
            engine.push(line.to_string());
        } else {
            rest.push_str(line);
            rest.push('\n');
        }
    }
    (rest, engine)
}

fn kernel_refused(o: &Output) -> bool {
    !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("bpf() refused")
}

fn skip_or_fail() {
    assert!(
        std::env::var("CILIUMC_REQUIRE_KERNEL").as_deref() != Ok("1"),
        "kernel required (CILIUMC_REQUIRE_KERNEL=1) but bpf() was refused"
    );
    eprintln!("SKIPPED: bpf() refused, the kernel side of the comparison cannot run here");
}

const FLOWS: &[(&[&str], &str)] = &[
    (
        &[
            "--from",
            "default/tiefighter",
            "--to",
            "default/deathstar-0",
            "--port",
            "80",
        ],
        "verdict: ALLOWED",
    ),
    (
        &[
            "--from",
            "default/xwing",
            "--to",
            "default/deathstar-0",
            "--port",
            "80",
        ],
        "verdict: DROPPED",
    ),
    (
        &[
            "--from",
            "default/tiefighter",
            "--to",
            "default/deathstar-0",
            "--port",
            "443",
        ],
        "verdict: DROPPED",
    ),
    (
        &[
            "--from",
            "default/tiefighter",
            "--to",
            "default/deathstar-0",
            "--proto",
            "udp",
            "--port",
            "80",
        ],
        "verdict: DROPPED",
    ),
    (
        &[
            "--from",
            "default/tiefighter",
            "--to",
            "default/deathstar-0",
            "--proto",
            "icmp",
            "--port",
            "8",
        ],
        "verdict: DROPPED",
    ),
    (
        &[
            "--from",
            "default/tiefighter",
            "--to",
            "default/deathstar-0",
            "--ipv6",
            "--port",
            "80",
        ],
        "verdict: ALLOWED",
    ),
    (
        &[
            "--from",
            "203.0.113.9",
            "--to",
            "default/deathstar-0",
            "--port",
            "80",
        ],
        "verdict: DROPPED",
    ),
    (
        &[
            "--from",
            "default/xwing",
            "--to",
            "198.51.100.7",
            "--proto",
            "udp",
            "--port",
            "53",
        ],
        "verdict: ALLOWED",
    ),
];

#[test]
fn interpreter_output_equals_kernel_output_apart_from_the_engine_line() {
    let dir = workspace();
    for (flow, verdict) in FLOWS {
        let vm = trace(&dir, "testdata/demo", flow, "interpreter");
        assert!(
            vm.status.success(),
            "{flow:?}: {}",
            String::from_utf8_lossy(&vm.stderr)
        );
        let vm_text = stdout(&vm);
        let (vm_rest, vm_engine) = without_engine_line(&vm_text);
        assert_eq!(
            vm_engine,
            vec!["engine: the userspace eBPF interpreter (ciliumc_targets::vm)".to_string()],
            "{flow:?}:\n{vm_text}"
        );
        assert!(
            vm_rest.contains(verdict),
            "{flow:?}: expected {verdict}:\n{vm_text}"
        );
        assert!(
            vm_rest.contains("reference evaluator agrees"),
            "{flow:?}:\n{vm_text}"
        );

        let kernel = trace(&dir, "testdata/demo", flow, "kernel");
        if kernel_refused(&kernel) {
            skip_or_fail();
            return;
        }
        assert!(
            kernel.status.success(),
            "{flow:?}: {}",
            String::from_utf8_lossy(&kernel.stderr)
        );
        let kernel_text = stdout(&kernel);
        let (kernel_rest, kernel_engine) = without_engine_line(&kernel_text);
        assert_eq!(
            kernel_engine,
            vec!["engine: the kernel (BPF_PROG_TEST_RUN)".to_string()],
            "{flow:?}"
        );
        assert_eq!(
            kernel_rest, vm_rest,
            "{flow:?}: kernel (left) and interpreter (right) differ"
        );
    }
}

#[test]
fn the_demo_trace_names_the_deciding_rule_with_its_source() {
    let out = trace(&workspace(), "testdata/demo", FLOWS[0].0, "interpreter");
    let text = stdout(&out);
    assert!(
        text.contains("ALLOWED by rule ")
            && text.contains(
                "CiliumNetworkPolicy default/rule1 ingress[0] at testdata/demo/policy.yaml:"
            ),
        "{text}"
    );
}

/// A world-readable copy of the `ciliumc` binary and `testdata/demo`, removed on drop.
struct Stage(PathBuf);

impl Stage {
    fn new() -> std::io::Result<Stage> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ciliumc-nobody-{}", std::process::id()));
        let stage = Stage(dir);
        let demo = stage.0.join("testdata/demo");
        std::fs::create_dir_all(&demo)?;
        for d in [&stage.0, &stage.0.join("testdata"), &demo] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::copy(env!("CARGO_BIN_EXE_ciliumc"), stage.0.join("ciliumc"))?;
        for entry in std::fs::read_dir(workspace().join("testdata/demo"))? {
            let entry = entry?;
            let to = demo.join(entry.file_name());
            std::fs::copy(entry.path(), &to)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))?;
        }
        Ok(stage)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `auto` as `nobody` (bpf() refused: unprivileged BPF is off or the capability missing):
/// the interpreter runs and prints what the kernel prints for root.
#[test]
fn auto_falls_back_to_the_interpreter_when_bpf_is_refused() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let have_setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !is_root || !have_setpriv {
        eprintln!("SKIPPED: needs root and setpriv to run as an unprivileged user");
        return;
    }
    let flow = FLOWS[1].0;
    // `nobody` may not reach the checkout (a clone in a 0700 `mktemp -d` directory): the binary
    // and the demo go to a directory of their own it can read, with the same relative paths.
    let stage = Stage::new().expect("stage the binary and the demo for nobody");
    let nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(stage.0.join("ciliumc"))
        .current_dir(&stage.0)
        .args(["trace", "testdata/demo"])
        .args(flow)
        .output()
        .expect("run setpriv");
    let text = stdout(&nobody);
    assert!(
        nobody.status.success(),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
    let (rest, engine) = without_engine_line(&text);
    if engine == vec!["engine: the kernel (BPF_PROG_TEST_RUN)".to_string()] {
        eprintln!("SKIPPED: this kernel lets unprivileged users run BPF programs");
        return;
    }
    assert_eq!(
        engine,
        vec!["engine: the userspace eBPF interpreter (ciliumc_targets::vm)".to_string()],
        "{text}"
    );
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("bpf() refused"));
    let root = trace(&workspace(), "testdata/demo", flow, "kernel");
    if kernel_refused(&root) {
        skip_or_fail();
        return;
    }
    assert_eq!(without_engine_line(&stdout(&root)).0, rest);
}
