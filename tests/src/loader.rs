//! Loading whole objects into the kernel, two ways.
//!
//! In: ELF bytes (as the ELF writer produces them). Out:
//! - [`load_object_raw`]: our own linker ([`crate::link`], independent of libbpf and aya-obj)
//!   reads the ELF and links it (map loads get `src = BPF_PSEUDO_MAP_FD, imm = fd`, `.text`
//!   subprograms are appended and calls fixed); maps are created and programs loaded with our own
//!   `bpf()` wrappers (SCHED_CLS for `classifier*`, XDP for `xdp*`), with the object's `.BTF` and
//!   its func/line info. Returns programs and maps by name.
//! - [`load_object_aya`]: aya 0.14 `EbpfLoader`, every program loaded (SchedClassifier, Xdp).
//!
//! Failures carry the verifier log verbatim.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use ciliumc_targets::isa::opcode::BPF_PSEUDO_MAP_FD;

use crate::link;
use crate::sys::{self, MapFd, MapSpec, ProgBtf, ProgFd, ProgInfo, SysError, TestRunOutput};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot parse object: {0}")]
    Parse(String),
    #[error("cannot link object: {0}")]
    Link(String),
    #[error("map `{name}`: {source}")]
    Map { name: String, source: SysError },
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("program `{name}` in section `{section}` has a type the harness does not load")]
    UnsupportedSection { name: String, section: String },
    #[error("program `{name}` refused by the verifier ({error}):\n{log}")]
    Verifier {
        name: String,
        error: String,
        log: String,
    },
    #[error("aya: {0}")]
    Aya(String),
}

impl LoadError {
    /// The verifier log, when the kernel refused a program.
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            LoadError::Verifier { log, .. } | LoadError::Sys(SysError::Verifier { log, .. }) => {
                Some(log)
            }
            _ => None,
        }
    }
}

/// One program loaded by [`load_object_raw`].
#[derive(Debug)]
pub struct LoadedProgram {
    pub prog: ProgFd,
    pub section: String,
    pub info: ProgInfo,
    /// The verifier log of a successful load, when asked for ([`LoadOptions::verifier_log_level`]).
    pub log: String,
}

impl LoadedProgram {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.prog.fd.as_fd()
    }

    /// `BPF_PROG_TEST_RUN` on `packet`, once.
    pub fn run(&self, packet: &[u8]) -> Result<TestRunOutput, SysError> {
        sys::test_run(self.fd(), packet, 1)
    }

    /// Instructions the verifier processed for this program.
    pub fn verified_insns(&self) -> u32 {
        self.info.verified_insns
    }
}

/// Programs and maps of one object, all closed on drop.
#[derive(Debug)]
pub struct LoadedObject {
    pub programs: BTreeMap<String, LoadedProgram>,
    pub maps: BTreeMap<String, MapFd>,
    /// Keeps the object's BTF alive as long as the programs.
    pub btf: Option<OwnedFd>,
}

impl LoadedObject {
    pub fn program(&self, name: &str) -> Option<&LoadedProgram> {
        self.programs.get(name)
    }

    pub fn map(&self, name: &str) -> Option<&MapFd> {
        self.maps.get(name)
    }

    /// Processed instructions per program, by name.
    pub fn verifier_stats(&self) -> BTreeMap<String, u32> {
        self.programs
            .iter()
            .map(|(n, p)| (n.clone(), p.verified_insns()))
            .collect()
    }
}

/// The kernel program type for a program section.
fn prog_type_of(section: &str) -> Option<u32> {
    if section.starts_with("classifier") || section.starts_with("tc") {
        Some(sys::BPF_PROG_TYPE_SCHED_CLS)
    } else if section.starts_with("xdp") {
        Some(sys::BPF_PROG_TYPE_XDP)
    } else {
        None
    }
}

/// Options of [`load_object_raw_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Above 0, keep the verifier log of successful loads in [`LoadedProgram::log`], at this
    /// level: 1 the usual log, 2 every processed instruction traced, 4 statistics only (with the
    /// kernel's verification time).
    pub verifier_log_level: u32,
}

/// Links `elf` with our own linker ([`crate::link`]) and loads every program with raw `bpf()`.
pub fn load_object_raw(elf: &[u8]) -> Result<LoadedObject, LoadError> {
    load_object_raw_with(elf, LoadOptions::default())
}

fn words(records: impl IntoIterator<Item = u32>) -> Vec<u8> {
    records.into_iter().flat_map(u32::to_le_bytes).collect()
}

/// [`load_object_raw`] with options.
pub fn load_object_raw_with(elf: &[u8], options: LoadOptions) -> Result<LoadedObject, LoadError> {
    let linked = link::link(elf).map_err(|e| LoadError::Link(e.to_string()))?;
    let mut maps = BTreeMap::new();
    for m in &linked.maps {
        let spec = MapSpec {
            name: m.name.clone(),
            map_type: m.map_type,
            key_size: m.key_size,
            value_size: m.value_size,
            max_entries: m.max_entries,
            map_flags: m.map_flags,
        };
        let fd = sys::map_create(&spec).map_err(|source| LoadError::Map {
            name: m.name.clone(),
            source,
        })?;
        maps.insert(m.name.clone(), fd);
    }
    let btf = match &linked.btf {
        Some(b) => Some(sys::btf_load(b)?),
        None => None,
    };
    let mut programs = BTreeMap::new();
    for p in &linked.programs {
        let prog_type = prog_type_of(&p.section).ok_or_else(|| LoadError::UnsupportedSection {
            name: p.name.clone(),
            section: p.section.clone(),
        })?;
        let mut insns = p.insns.clone();
        for (slot, map) in &p.map_loads {
            let fd = maps.get(map).ok_or_else(|| {
                LoadError::Link(format!("program `{}` loads unknown map `{map}`", p.name))
            })?;
            insns[*slot].src = BPF_PSEUDO_MAP_FD;
            insns[*slot].imm = fd.fd.as_raw_fd();
            if let Some(next) = insns.get_mut(slot + 1) {
                next.imm = 0;
            }
        }
        let bytes: Vec<u8> = insns.iter().flat_map(|i| i.to_bytes()).collect();
        let func_info = words(p.func_info.iter().flat_map(|(slot, ty)| [*slot, *ty]));
        let line_info = words(p.line_info.iter().flatten().copied());
        let prog_btf = ProgBtf {
            btf_fd: btf.as_ref().map(|b| b.as_fd()),
            func_info: &func_info,
            func_info_rec_size: 8,
            line_info: &line_info,
            line_info_rec_size: 16,
        };
        let (prog, log) = sys::prog_load_logged(
            &p.name,
            prog_type,
            &bytes,
            &linked.license,
            &prog_btf,
            options.verifier_log_level,
        )?;
        let info = sys::prog_info(prog.fd.as_fd())?;
        programs.insert(
            p.name.clone(),
            LoadedProgram {
                prog,
                section: p.section.clone(),
                info,
                log,
            },
        );
    }
    Ok(LoadedObject {
        programs,
        maps,
        btf,
    })
}

/// Loads `elf` with aya's `EbpfLoader` and loads every tc and XDP program in it. Maps with
/// `pinning = by name` would be pinned under /sys/fs/bpf: use [`load_object_aya_pinned`] for those.
pub fn load_object_aya(elf: &[u8]) -> Result<aya::Ebpf, LoadError> {
    load_programs_aya(
        aya::EbpfLoader::new()
            .load(elf)
            .map_err(|e| LoadError::Aya(format!("{e:#}")))?,
    )
}

/// [`load_object_aya`] with maps pinned by name under `pin_dir` (which must be on a bpffs).
pub fn load_object_aya_pinned(
    elf: &[u8],
    pin_dir: &std::path::Path,
) -> Result<aya::Ebpf, LoadError> {
    let ebpf = aya::EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(elf)
        .map_err(|e| LoadError::Aya(format!("{e:#}")))?;
    load_programs_aya(ebpf)
}

fn load_programs_aya(mut ebpf: aya::Ebpf) -> Result<aya::Ebpf, LoadError> {
    for (name, program) in ebpf.programs_mut() {
        let result = match program {
            aya::programs::Program::SchedClassifier(p) => p.load(),
            aya::programs::Program::Xdp(p) => p.load(),
            _ => {
                return Err(LoadError::UnsupportedSection {
                    name: name.to_owned(),
                    section: format!("{:?}", program.prog_type()),
                });
            }
        };
        match result {
            Ok(()) => {}
            Err(aya::programs::ProgramError::LoadError {
                io_error,
                verifier_log,
            }) => {
                return Err(LoadError::Verifier {
                    name: name.to_owned(),
                    error: io_error.to_string(),
                    log: verifier_log.to_string(),
                });
            }
            Err(e) => return Err(LoadError::Aya(format!("program `{name}`: {e}"))),
        }
    }
    Ok(ebpf)
}

/// The fd of a program loaded through [`load_object_aya`], for test runs and prog-array slots.
pub fn aya_program_fd<'a>(ebpf: &'a aya::Ebpf, name: &str) -> Result<BorrowedFd<'a>, LoadError> {
    let program = ebpf
        .program(name)
        .ok_or_else(|| LoadError::Aya(format!("no program `{name}`")))?;
    let fd = program
        .fd()
        .map_err(|e| LoadError::Aya(format!("program `{name}`: {e}")))?;
    Ok(fd.as_fd())
}

/// The fd of a map created by [`load_object_aya`], as a [`sys::MapView`] for raw map operations.
pub fn aya_map_view<'a>(ebpf: &'a aya::Ebpf, name: &str) -> Result<sys::MapView<'a>, LoadError> {
    use aya::maps::Map;
    let map = ebpf
        .map(name)
        .ok_or_else(|| LoadError::Aya(format!("no map `{name}`")))?;
    let data = match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::ProgramArray(d)
        | Map::RingBuf(d)
        | Map::Unsupported(d) => d,
        _ => {
            return Err(LoadError::Aya(format!(
                "map `{name}` has a type the harness does not handle"
            )));
        }
    };
    Ok(sys::map_view(data.fd().as_fd())?)
}
