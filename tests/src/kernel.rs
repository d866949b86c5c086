//! Whether this process may use `bpf()`, and the skip-or-fail policy for kernel tests.
//!
//! In: the environment (`CILIUMC_REQUIRE_KERNEL`). Out: `Some(Kernel)` when a probe map could be
//! created; `None` (with a printed reason) when `bpf()` is refused with EPERM/ENOSYS; a panic when
//! it is refused but `CILIUMC_REQUIRE_KERNEL=1`, or when it fails for any other reason.

use crate::sys::{self, MapSpec};

/// Proof that `bpf()` works here; kernel tests take one.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    _private: (),
}

/// Why kernel tests cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("bpf() is refused here ({0}); kernel tests need root or CAP_BPF + CAP_NET_ADMIN")]
    Refused(std::io::Error),
    #[error("bpf() probe failed unexpectedly: {0}")]
    Broken(String),
}

/// Probes `bpf()` by creating (and closing) a one-entry array map.
pub fn probe() -> Result<Kernel, Unavailable> {
    let spec = MapSpec {
        name: "ciliumc_probe".into(),
        map_type: 2,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
    };
    match sys::map_create(&spec) {
        Ok(_map) => Ok(Kernel { _private: () }),
        Err(e) => match e.errno() {
            Some(libc::EPERM) | Some(libc::ENOSYS) | Some(libc::EACCES) => {
                Err(Unavailable::Refused(std::io::Error::from_raw_os_error(
                    e.errno().unwrap_or(libc::EPERM),
                )))
            }
            _ => Err(Unavailable::Broken(e.to_string())),
        },
    }
}

/// True when the environment demands kernel tests run (CI).
pub fn kernel_required() -> bool {
    std::env::var("CILIUMC_REQUIRE_KERNEL").is_ok_and(|v| v == "1")
}

/// The kernel, or `None` after printing why the calling test is skipped.
///
/// # Panics
/// When `bpf()` is unavailable and `CILIUMC_REQUIRE_KERNEL=1`, or when the probe fails for a
/// reason other than missing permission (a broken kernel must fail tests, not skip them).
pub fn require() -> Option<Kernel> {
    match probe() {
        Ok(k) => Some(k),
        Err(Unavailable::Refused(e)) if !kernel_required() => {
            eprintln!("SKIPPED: {}", Unavailable::Refused(e));
            None
        }
        Err(e) => panic!("kernel required (CILIUMC_REQUIRE_KERNEL=1 or unexpected failure): {e}"),
    }
}

/// `let Some(k) = kernel_or_skip!() else { return };` — skips the test (with a printed reason)
/// where `bpf()` is refused, unless `CILIUMC_REQUIRE_KERNEL=1`.
#[macro_export]
macro_rules! kernel_or_skip {
    () => {
        $crate::kernel::require()
    };
}
