//! Raw `bpf(2)` wrappers over libc, independent of aya: maps, program load with the verifier log,
//! program info (verified instructions) and `BPF_PROG_TEST_RUN`.
//!
//! In: plain Rust values (byte slices for keys, values and packets; fds as `BorrowedFd`).
//! Out: `OwnedFd`s (closed on drop), bytes, and [`SysError`]s that carry the errno and, for
//! program loads, the verifier log verbatim.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_MAP_GET_NEXT_KEY: u32 = 4;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_BTF_LOAD: u32 = 18;

/// `enum bpf_prog_type` values the harness loads.
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_PROG_TYPE_XDP: u32 = 6;

/// Update flags.
pub const BPF_ANY: u64 = 0;
pub const BPF_NOEXIST: u64 = 1;
pub const BPF_EXIST: u64 = 2;

const LOG_SIZE: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("bpf({cmd}) failed: {source}")]
    Syscall {
        cmd: &'static str,
        source: std::io::Error,
    },
    #[error("program `{name}` refused by the verifier ({source}):\n{log}")]
    Verifier {
        name: String,
        source: std::io::Error,
        log: String,
    },
    #[error("BTF refused by the kernel ({source}):\n{log}")]
    Btf { source: std::io::Error, log: String },
    #[error("{0}")]
    Invalid(String),
}

impl SysError {
    /// The errno of a failed syscall, if this error is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            SysError::Syscall { source, .. }
            | SysError::Verifier { source, .. }
            | SysError::Btf { source, .. } => source.raw_os_error(),
            SysError::Invalid(_) => None,
        }
    }
}

fn bpf<T>(cmd: u32, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a live, properly sized repr(C) bpf_attr prefix; the kernel reads and
    // writes at most size_of::<T>() bytes of it, and every pointer inside refers to buffers that
    // outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn bpf_fd<T>(cmd: u32, name: &'static str, attr: &mut T) -> Result<OwnedFd, SysError> {
    let fd = bpf(cmd, attr).map_err(|source| SysError::Syscall { cmd: name, source })?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn name16(name: &str) -> [u8; 16] {
    // The kernel accepts only [A-Za-z0-9_.] in object names; anything else is dropped.
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().take(15).zip(
        name.bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.'),
    ) {
        *o = b;
    }
    out
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    map_ifindex: u32,
    btf_fd: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
    btf_vmlinux_value_type_id: u32,
    map_extra: u64,
}

/// Parameters of `BPF_MAP_CREATE`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapSpec {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
}

/// A kernel map, closed on drop.
#[derive(Debug)]
pub struct MapFd {
    pub fd: OwnedFd,
    pub spec: MapSpec,
}

pub fn map_create(spec: &MapSpec) -> Result<MapFd, SysError> {
    let mut attr = MapCreateAttr {
        map_type: spec.map_type,
        key_size: spec.key_size,
        value_size: spec.value_size,
        max_entries: spec.max_entries,
        map_flags: spec.map_flags,
        map_name: name16(&spec.name),
        ..Default::default()
    };
    let fd = bpf_fd(BPF_MAP_CREATE, "BPF_MAP_CREATE", &mut attr)?;
    Ok(MapFd {
        fd,
        spec: spec.clone(),
    })
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Bytes per value as user space sees it: per-CPU maps hold one 8-byte-aligned slot per
/// possible CPU.
pub fn user_value_size(spec: &MapSpec) -> usize {
    let percpu = matches!(spec.map_type, 5 | 6 | 10);
    if percpu {
        (spec.value_size as usize).div_ceil(8) * 8 * possible_cpus()
    } else {
        spec.value_size as usize
    }
}

/// Number of possible CPUs, from /sys/devices/system/cpu/possible (e.g. "0-3").
pub fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let mut n = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let mut ends = part.split('-').filter_map(|x| x.parse::<usize>().ok());
        match (ends.next(), ends.next()) {
            (Some(a), Some(b)) => n += b.saturating_sub(a) + 1,
            (Some(_), None) => n += 1,
            _ => {}
        }
    }
    n.max(1)
}

impl MapFd {
    /// A borrowed handle with the map operations.
    pub fn view(&self) -> MapView<'_> {
        MapView {
            fd: self.fd.as_fd(),
            spec: self.spec.clone(),
        }
    }

    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), SysError> {
        self.view().update(key, value, flags)
    }

    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, SysError> {
        self.view().lookup(key)
    }

    pub fn delete(&self, key: &[u8]) -> Result<bool, SysError> {
        self.view().delete(key)
    }

    pub fn next_key(&self, key: Option<&[u8]>) -> Result<Option<Vec<u8>>, SysError> {
        self.view().next_key(key)
    }

    pub fn keys(&self) -> Result<Vec<Vec<u8>>, SysError> {
        self.view().keys()
    }
}

/// Map operations on a borrowed map fd (ours, or one that aya or another loader created).
#[derive(Debug)]
pub struct MapView<'a> {
    pub fd: BorrowedFd<'a>,
    pub spec: MapSpec,
}

/// A view of any map fd, its sizes read from the kernel (`BPF_OBJ_GET_INFO_BY_FD`).
pub fn map_view(fd: BorrowedFd<'_>) -> Result<MapView<'_>, SysError> {
    let mut buf = [0u8; 88];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: buf.len() as u32,
        info: buf.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map_err(|source| SysError::Syscall {
        cmd: "BPF_OBJ_GET_INFO_BY_FD",
        source,
    })?;
    let u32_at = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
    let name_end = buf[24..40].iter().position(|&b| b == 0).unwrap_or(16);
    let spec = MapSpec {
        name: String::from_utf8_lossy(&buf[24..24 + name_end]).into_owned(),
        map_type: u32_at(0),
        key_size: u32_at(8),
        value_size: u32_at(12),
        max_entries: u32_at(16),
        map_flags: u32_at(20),
    };
    Ok(MapView { fd, spec })
}

impl MapView<'_> {
    fn check(&self, what: &str, got: usize, want: usize) -> Result<(), SysError> {
        if got == want {
            Ok(())
        } else {
            Err(SysError::Invalid(format!(
                "map `{}`: {what} is {got} bytes, expected {want}",
                self.spec.name
            )))
        }
    }

    fn elem(
        &self,
        cmd: u32,
        name: &'static str,
        key: &[u8],
        value: u64,
        flags: u64,
    ) -> Result<(), SysError> {
        self.check("key", key.len(), self.spec.key_size as usize)?;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value,
            flags,
            ..Default::default()
        };
        bpf(cmd, &mut attr)
            .map(drop)
            .map_err(|source| SysError::Syscall { cmd: name, source })
    }

    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), SysError> {
        self.check("value", value.len(), user_value_size(&self.spec))?;
        self.elem(
            BPF_MAP_UPDATE_ELEM,
            "BPF_MAP_UPDATE_ELEM",
            key,
            value.as_ptr() as u64,
            flags,
        )
    }

    /// The value under `key`, or `None` when absent (ENOENT).
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, SysError> {
        let mut value = vec![0u8; user_value_size(&self.spec)];
        match self.elem(
            BPF_MAP_LOOKUP_ELEM,
            "BPF_MAP_LOOKUP_ELEM",
            key,
            value.as_mut_ptr() as u64,
            0,
        ) {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes `key`; `false` when it was absent.
    pub fn delete(&self, key: &[u8]) -> Result<bool, SysError> {
        match self.elem(BPF_MAP_DELETE_ELEM, "BPF_MAP_DELETE_ELEM", key, 0, 0) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The key after `key` (the first key for `None`), or `None` at the end.
    pub fn next_key(&self, key: Option<&[u8]>) -> Result<Option<Vec<u8>>, SysError> {
        let mut next = vec![0u8; self.spec.key_size as usize];
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.map_or(0, |k| k.as_ptr() as u64),
            value: next.as_mut_ptr() as u64,
            ..Default::default()
        };
        if let Some(k) = key {
            self.check("key", k.len(), self.spec.key_size as usize)?;
        }
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => Ok(Some(next)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(source) => Err(SysError::Syscall {
                cmd: "BPF_MAP_GET_NEXT_KEY",
                source,
            }),
        }
    }

    /// All keys, in the kernel's iteration order.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>, SysError> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        while let Some(k) = self.next_key(keys.last().map(Vec::as_slice))? {
            keys.push(k);
        }
        Ok(keys)
    }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
}

/// BTF-related parts of a program load (all optional).
#[derive(Debug, Default)]
pub struct ProgBtf<'a> {
    pub btf_fd: Option<BorrowedFd<'a>>,
    pub func_info: &'a [u8],
    pub func_info_rec_size: u32,
    pub line_info: &'a [u8],
    pub line_info_rec_size: u32,
}

/// A loaded program, closed on drop.
#[derive(Debug)]
pub struct ProgFd {
    pub fd: OwnedFd,
    pub name: String,
    pub prog_type: u32,
}

/// Loads `insns` (8 bytes per slot). A refused load is repeated with log level 1 so that the
/// error carries the verifier log verbatim.
pub fn prog_load(
    name: &str,
    prog_type: u32,
    insns: &[u8],
    license: &str,
    btf: &ProgBtf<'_>,
) -> Result<ProgFd, SysError> {
    prog_load_logged(name, prog_type, insns, license, btf, 0).map(|(fd, _)| fd)
}

/// Like [`prog_load`]; with `log_level` above 0 the first attempt already asks for a log at that
/// level, which is returned on success too (slower for big programs: the verifier formats every
/// state). Level 2 traces every processed instruction.
pub fn prog_load_logged(
    name: &str,
    prog_type: u32,
    insns: &[u8],
    license: &str,
    btf: &ProgBtf<'_>,
    log_level: u32,
) -> Result<(ProgFd, String), SysError> {
    let log = log_level > 0;
    if insns.is_empty() || !insns.len().is_multiple_of(8) {
        return Err(SysError::Invalid(format!(
            "program `{name}`: {} bytes is not a whole number of slots",
            insns.len()
        )));
    }
    let license =
        CString::new(license).map_err(|_| SysError::Invalid("license contains NUL".into()))?;
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: (insns.len() / 8) as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name16(name),
            ..Default::default()
        };
        if let Some(fd) = btf.btf_fd {
            attr.prog_btf_fd = fd.as_raw_fd() as u32;
            if !btf.func_info.is_empty() && btf.func_info_rec_size > 0 {
                attr.func_info_rec_size = btf.func_info_rec_size;
                attr.func_info = btf.func_info.as_ptr() as u64;
                attr.func_info_cnt = (btf.func_info.len() as u32) / btf.func_info_rec_size;
            }
            if !btf.line_info.is_empty() && btf.line_info_rec_size > 0 {
                attr.line_info_rec_size = btf.line_info_rec_size;
                attr.line_info = btf.line_info.as_ptr() as u64;
                attr.line_info_cnt = (btf.line_info.len() as u32) / btf.line_info_rec_size;
            }
        }
        if let Some(buf) = log {
            attr.log_level = log_level.max(1);
            attr.log_size = buf.len() as u32;
            attr.log_buf = buf.as_mut_ptr() as u64;
        }
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let text = |buf: &[u8]| {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    };
    let owned = |fd: i64| {
        // SAFETY: a fresh fd from the kernel, owned by nobody else.
        ProgFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            name: name.to_owned(),
            prog_type,
        }
    };
    let mut buf = Vec::new();
    // Without `log`, load without one first: a level-1 log makes large programs slower to verify.
    let first = if log {
        buf = vec![0u8; LOG_SIZE];
        attempt(Some(&mut buf))
    } else {
        attempt(None)
    };
    match first {
        Ok(fd) => Ok((owned(fd), text(&buf))),
        Err(first) => {
            let source = if log {
                first
            } else {
                buf = vec![0u8; LOG_SIZE];
                match attempt(Some(&mut buf)) {
                    Ok(fd) => {
                        drop(owned(fd));
                        first
                    }
                    Err(e) => e,
                }
            };
            Err(SysError::Verifier {
                name: name.to_owned(),
                source,
                log: text(&buf),
            })
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    _pad: u32,
}

/// Loads a `.BTF` blob into the kernel; the error carries the kernel's BTF log.
pub fn btf_load(data: &[u8]) -> Result<OwnedFd, SysError> {
    let mut log = vec![0u8; 1 << 20];
    let mut attr = BtfLoadAttr {
        btf: data.as_ptr() as u64,
        btf_size: data.len() as u32,
        btf_log_buf: log.as_mut_ptr() as u64,
        btf_log_size: log.len() as u32,
        btf_log_level: 1,
        _pad: 0,
    };
    match bpf(BPF_BTF_LOAD, &mut attr) {
        // SAFETY: a fresh fd from the kernel, owned by nobody else.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(source) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(SysError::Btf {
                source,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The parts of `struct bpf_prog_info` the tests use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    pub prog_type: u32,
    pub tag: [u8; 8],
    pub xlated_prog_len: u32,
    pub jited_prog_len: u32,
    /// Instructions the verifier processed (`verified_insns`, kernel >= 5.16).
    pub verified_insns: u32,
    pub name: String,
}

/// Size of `struct bpf_prog_info` through `attach_btf_id`, rounded to 8.
const PROG_INFO_LEN: usize = 232;

pub fn prog_info(fd: BorrowedFd<'_>) -> Result<ProgInfo, SysError> {
    let mut buf = [0u8; PROG_INFO_LEN];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: buf.len() as u32,
        info: buf.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map_err(|source| SysError::Syscall {
        cmd: "BPF_OBJ_GET_INFO_BY_FD",
        source,
    })?;
    let u32_at = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
    let name_end = buf[64..80].iter().position(|&b| b == 0).unwrap_or(16);
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&buf[8..16]);
    Ok(ProgInfo {
        prog_type: u32_at(0),
        id: u32_at(4),
        tag,
        jited_prog_len: u32_at(16),
        xlated_prog_len: u32_at(20),
        verified_insns: u32_at(216),
        name: String::from_utf8_lossy(&buf[64..64 + name_end]).into_owned(),
    })
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    // Explicit so that the kernel's check that unused attr bytes are zero sees zeros, not
    // uninitialized padding.
    _pad: u32,
}

/// Result of one `BPF_PROG_TEST_RUN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    pub retval: u32,
    /// The packet after the program ran (it may have rewritten or resized it).
    pub data_out: Vec<u8>,
    /// Average nanoseconds per run.
    pub duration_ns: u32,
}

/// Runs `prog` on `packet` `repeat` times (0 counts as 1).
pub fn test_run(
    prog: BorrowedFd<'_>,
    packet: &[u8],
    repeat: u32,
) -> Result<TestRunOutput, SysError> {
    // Room for programs that grow the packet (e.g. encapsulation).
    let mut out = vec![0u8; packet.len() + 512];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: packet.len() as u32,
        data_size_out: out.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).map_err(|source| SysError::Syscall {
        cmd: "BPF_PROG_TEST_RUN",
        source,
    })?;
    out.truncate((attr.data_size_out as usize).min(out.len()));
    Ok(TestRunOutput {
        retval: attr.retval,
        data_out: out,
        duration_ns: attr.duration,
    })
}
