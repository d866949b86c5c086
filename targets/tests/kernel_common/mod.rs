//! A minimal raw `bpf()` loader for codegen tests (no ELF, no libbpf): program load with the
//! verifier log on failure, `BPF_PROG_TEST_RUN` on a tc context, and the check of whether the
//! kernel can be used at all (skip with a printed reason where `bpf()` is refused, fail instead
//! when `CILIUMC_REQUIRE_KERNEL=1`).

#![allow(dead_code)]

use ciliumc_targets::codegen::interp::CtxInput;
use ciliumc_targets::isa::RawInsn;

pub fn bpf(cmd: i32, attr: &mut [u8]) -> Result<i32, i32> {
    // SAFETY: attr is a live, zero-padded buffer of the size passed.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r as i32)
    }
}

pub fn put32(a: &mut [u8], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put64(a: &mut [u8], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// `false` (after printing why) when the kernel refuses bpf() and the kernel is not required.
pub fn kernel_available() -> bool {
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, 2); // BPF_MAP_TYPE_ARRAY
    put32(&mut attr, 4, 4);
    put32(&mut attr, 8, 8);
    put32(&mut attr, 12, 1);
    match bpf(0, &mut attr) {
        Ok(fd) => {
            // SAFETY: fd was just returned by the kernel.
            unsafe { libc::close(fd) };
            true
        }
        Err(e)
            if (e == libc::EPERM || e == libc::ENOSYS)
                && std::env::var("CILIUMC_REQUIRE_KERNEL").as_deref() != Ok("1") =>
        {
            eprintln!("skipping kernel test: bpf() refused (errno {e})");
            false
        }
        Err(e) => panic!("bpf(BPF_MAP_CREATE) failed with errno {e}"),
    }
}

pub struct Fd(pub i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

pub fn prog_load(insns: &[RawInsn], prog_type: u32) -> Result<Fd, String> {
    let bytes: Vec<u8> = insns.iter().flat_map(|i| i.to_bytes()).collect();
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, prog_type);
    put32(&mut attr, 4, insns.len() as u32);
    put64(&mut attr, 8, bytes.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    // Without a log first: a large program's full log does not fit any reasonable buffer.
    if let Ok(fd) = bpf(5, &mut attr.clone()) {
        return Ok(Fd(fd));
    }
    let mut log = vec![0u8; 1 << 24];
    put32(&mut attr, 24, 1);
    put32(&mut attr, 28, log.len() as u32);
    put64(&mut attr, 32, log.as_mut_ptr() as u64);
    match bpf(5, &mut attr) {
        Ok(fd) => Ok(Fd(fd)),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            Err(format!(
                "errno {e}; verifier log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ))
        }
    }
}

pub fn test_run(prog: &Fd, input: &CtxInput) -> u32 {
    let mut ctx = [0u8; 192];
    put32(&mut ctx, 8, input.mark);
    put32(&mut ctx, 32, input.priority);
    for (i, c) in input.cb.iter().enumerate() {
        put32(&mut ctx, 48 + 4 * i, *c);
    }
    let mut attr = [0u8; 80];
    put32(&mut attr, 0, prog.0 as u32);
    put32(&mut attr, 8, input.packet.len() as u32);
    put64(&mut attr, 16, input.packet.as_ptr() as u64);
    put32(&mut attr, 32, 1);
    put32(&mut attr, 40, ctx.len() as u32);
    put64(&mut attr, 48, ctx.as_ptr() as u64);
    bpf(10, &mut attr).unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: errno {e}"));
    u32::from_le_bytes([attr[4], attr[5], attr[6], attr[7]])
}
