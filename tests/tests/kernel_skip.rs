//! The skip-or-fail policy: a test process without the capabilities for `bpf()` skips with a
//! printed reason, and fails instead when `CILIUMC_REQUIRE_KERNEL=1`. The unprivileged process is
//! this test binary re-run as user `nobody` (setpriv), running only `child_probe`.

use std::process::Command;

use ciliumc_tests::kernel_or_skip;

const CHILD: &str = "CILIUMC_TEST_SKIP_CHILD";

/// Runs in the unprivileged child only: reaching the end means bpf() was refused and skipped.
#[test]
fn child_probe() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let Some(_k) = kernel_or_skip!() else {
        println!("CHILD-SKIPPED");
        return;
    };
    panic!("bpf() worked without privileges; this check cannot run here");
}

/// A world-readable copy of this test binary, removed on drop: `nobody` may not reach the
/// checkout (a clone in a 0700 `mktemp -d` directory).
struct StagedExe(std::path::PathBuf);

impl StagedExe {
    fn new() -> std::io::Result<StagedExe> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ciliumc-kernel-skip-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let staged = StagedExe(dir);
        std::fs::set_permissions(&staged.0, std::fs::Permissions::from_mode(0o755))?;
        std::fs::copy(std::env::current_exe()?, staged.exe())?;
        Ok(staged)
    }

    fn exe(&self) -> std::path::PathBuf {
        self.0.join("kernel_skip")
    }
}

impl Drop for StagedExe {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_child(require: bool) -> std::process::Output {
    let staged = StagedExe::new().expect("stage the test binary for nobody");
    let exe = staged.exe();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(exe)
    .current_dir(&staged.0)
    .args(["child_probe", "--exact", "--nocapture", "--test-threads=1"])
    .env(CHILD, "1")
    .env_remove("CILIUMC_REQUIRE_KERNEL");
    if require {
        cmd.env("CILIUMC_REQUIRE_KERNEL", "1");
    }
    cmd.output().unwrap()
}

#[test]
fn unprivileged_process_skips_or_fails_as_required() {
    // Needs root to drop to `nobody`, and a kernel that refuses unprivileged bpf() maps.
    let Some(_k) = kernel_or_skip!() else { return };
    let disabled =
        std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").unwrap_or_default();
    if disabled.trim() == "0" {
        eprintln!("SKIPPED: unprivileged bpf() is allowed here, so no process is refused");
        return;
    }
    let skipped = run_child(false);
    let out = String::from_utf8_lossy(&skipped.stdout).into_owned()
        + &String::from_utf8_lossy(&skipped.stderr);
    assert!(
        skipped.status.success(),
        "child without CILIUMC_REQUIRE_KERNEL:\n{out}"
    );
    assert!(
        out.contains("CHILD-SKIPPED") && out.contains("SKIPPED: bpf() is refused"),
        "{out}"
    );

    let failed = run_child(true);
    let out = String::from_utf8_lossy(&failed.stdout).into_owned()
        + &String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success(),
        "child with CILIUMC_REQUIRE_KERNEL=1 must fail:\n{out}"
    );
    assert!(out.contains("kernel required"), "{out}");
}
