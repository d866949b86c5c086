//! `net.core.bpf_jit_harden` for the duration of a test.
//!
//! In: the wanted value (0, 1, 2). Out: a guard that holds a process-wide lock and an `flock` on
//! a file in /tmp (so tests that change the sysctl never overlap, within a test binary or across
//! binaries run in parallel) and restores the previous value when dropped.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};

const JIT_HARDEN: &str = "/proc/sys/net/core/bpf_jit_harden";
const LOCK_FILE: &str = "/tmp/ciliumc-tests-sysctl.lock";

static SYSCTL_LOCK: Mutex<()> = Mutex::new(());

/// Sets `bpf_jit_harden` and restores the old value on drop.
pub struct JitHardenGuard {
    previous: String,
    _lock: SysctlLock,
}

/// Exclusive use of the sysctls among ciliumc test processes; released on drop.
pub struct SysctlLock {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

/// Takes the sysctl lock (blocking) without changing anything, for tests that need the sysctls
/// to keep their values while they run.
pub fn lock_sysctl() -> std::io::Result<SysctlLock> {
    // A test that panicked while holding the lock still restored the value in its drop.
    let guard = SYSCTL_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let file = File::options().create(true).append(true).open(LOCK_FILE)?;
    // SAFETY: flock on an fd we own; the lock is released when `file` is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(SysctlLock {
        _file: file,
        _guard: guard,
    })
}

impl JitHardenGuard {
    pub fn set(value: u8) -> std::io::Result<JitHardenGuard> {
        let lock = lock_sysctl()?;
        let previous = std::fs::read_to_string(JIT_HARDEN)?.trim().to_owned();
        std::fs::write(JIT_HARDEN, format!("{value}\n"))?;
        Ok(JitHardenGuard {
            previous,
            _lock: lock,
        })
    }

    /// The current value of the sysctl.
    pub fn current() -> std::io::Result<u8> {
        let text = std::fs::read_to_string(JIT_HARDEN)?;
        text.trim()
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

impl Drop for JitHardenGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(JIT_HARDEN, format!("{}\n", self.previous)) {
            eprintln!("could not restore {JIT_HARDEN} to {}: {e}", self.previous);
        }
    }
}
