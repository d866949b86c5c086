//! Executes one compiled program on one packet in the kernel (`BPF_PROG_TEST_RUN` through aya),
//! with the ipcache filled from the manifest, and collects the flow events it wrote.
//!
//! The object must declare its maps without pinning (so nothing global is touched): the compiler
//! offers such a variant for this purpose.

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};

use crate::event_ring::{self, MappedRings, RingError};
use crate::events::FlowEvent;

/// Map names the policy programs use (mirrors the compiler's `lower::maps`).
pub const IPCACHE: &str = "ciliumc_ipcache";
pub use crate::event_ring::EVENTS;
pub const CT: &str = "ciliumc_ct";
/// `{u32 v4_prefixes; u32 v6_prefixes; u32 buckets; u32 pad}` at index 0: programs skip the
/// trie for a family it has no prefixes of, and use the bucket arrays only while `buckets` is 1.
pub const IPCACHE_INFO: &str = "ciliumc_ipcinfo";
/// The bucket arrays of host routes (IPv4, IPv6), read before the exact-match maps.
pub const IPCACHE_BUCKETS: [&str; 2] = ["ciliumc_ipc4bkt", "ciliumc_ipc6bkt"];

#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    #[error("loading the object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {0} not found in the object")]
    NoProgram(String),
    #[error("program {name}: {source}")]
    Program {
        name: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(transparent)]
    Rings(#[from] RingError),
    #[error("map {0} not found in the object, or not an array")]
    NoMap(&'static str),
    #[error("ipcache entry with a key of {0} bytes (expected 24) or a value of other than 8 bytes")]
    BadIpcacheEntry(usize),
}

impl TestRunError {
    /// Whether the kernel refused `bpf()` itself (no privileges, or no BPF): callers fall back to
    /// evaluating without the kernel.
    pub fn is_bpf_refused(&self) -> bool {
        let text = format!("{self:?}");
        text.contains("EPERM")
            || text.contains("Operation not permitted")
            || text.contains("ENOSYS")
    }
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The program's return value (tc: 0 OK, 2 SHOT).
    pub retval: u32,
    pub events: Vec<FlowEvent>,
}

/// An object loaded for test runs: its programs loaded, its ipcache filled.
pub struct LoadedPolicyObject {
    ebpf: aya::Ebpf,
    rings: MappedRings,
}

impl LoadedPolicyObject {
    /// Loads `elf` and every tc program in it, and fills the ipcache with `ipcache` (24-byte keys,
    /// 8-byte values, as in the manifest).
    pub fn load(elf: &[u8], ipcache: &[(Vec<u8>, Vec<u8>)]) -> Result<Self, TestRunError> {
        let mut ebpf = aya::EbpfLoader::new().load(elf)?;
        {
            let map = ebpf.map_mut(IPCACHE).ok_or(TestRunError::NoMap(IPCACHE))?;
            let mut trie: LpmTrie<&mut MapData, [u8; 20], [u8; 8]> = LpmTrie::try_from(map)
                .map_err(|source| TestRunError::Map {
                    name: IPCACHE.into(),
                    source,
                })?;
            for (k, v) in ipcache {
                if k.len() != 24 || v.len() != 8 {
                    return Err(TestRunError::BadIpcacheEntry(k.len()));
                }
                let prefix = u32::from_le_bytes([k[0], k[1], k[2], k[3]]);
                let mut data = [0u8; 20];
                data.copy_from_slice(&k[4..24]);
                let mut value = [0u8; 8];
                value.copy_from_slice(v);
                trie.insert(&Key::new(prefix, data), value, 0)
                    .map_err(|source| TestRunError::Map {
                        name: IPCACHE.into(),
                        source,
                    })?;
            }
        }
        // Every entry went to the trie: the programs must ask it for both families, and skip
        // the bucket arrays (`buckets` = 0), which stay empty. (Objects of older compilers have
        // no such map.)
        if let Some(map) = ebpf.map_mut(IPCACHE_INFO) {
            let mut info: Array<&mut MapData, [u8; 16]> =
                Array::try_from(map).map_err(|source| TestRunError::Map {
                    name: IPCACHE_INFO.into(),
                    source,
                })?;
            let count = |family: u32| {
                ipcache
                    .iter()
                    .filter(|(k, _)| k.get(4..8) == Some(&family.to_le_bytes()[..]))
                    .count() as u32
            };
            let mut value = [0u8; 16];
            value[..4].copy_from_slice(&count(4).to_le_bytes());
            value[4..8].copy_from_slice(&count(6).to_le_bytes());
            info.set(0, value, 0).map_err(|source| TestRunError::Map {
                name: IPCACHE_INFO.into(),
                source,
            })?;
        }
        let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
        for name in names {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(&name)
                .ok_or_else(|| TestRunError::NoProgram(name.clone()))?
                .try_into()
                .map_err(|source| TestRunError::Program {
                    name: name.clone(),
                    source,
                })?;
            prog.load().map_err(|source| TestRunError::Program {
                name: name.clone(),
                source,
            })?;
        }
        let rings = match ebpf.map(EVENTS) {
            Some(Map::Array(data)) => MappedRings::map(data)?,
            _ => return Err(TestRunError::NoMap(EVENTS)),
        };
        Ok(LoadedPolicyObject { ebpf, rings })
    }

    /// Runs `program` once on `packet`, returns its verdict and the events it wrote, then forgets
    /// the connection it may have recorded, so that every run judges a new flow.
    pub fn run(&mut self, program: &str, packet: &[u8]) -> Result<RunResult, TestRunError> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| TestRunError::NoProgram(program.to_string()))?
            .try_into()
            .map_err(|source| TestRunError::Program {
                name: program.into(),
                source,
            })?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(packet);
        let result = prog
            .test_run(opts)
            .map_err(|source| TestRunError::Program {
                name: program.into(),
                source,
            })?;
        let mut events = Vec::new();
        event_ring::drain(&mut self.rings, |record| {
            events.push(FlowEvent::from_record(record));
        });
        if result.return_value != 0 {
            // A dropped packet records no connection.
            return Ok(RunResult {
                retval: result.return_value,
                events,
            });
        }
        let map = self.ebpf.map_mut(CT).ok_or(TestRunError::NoMap(CT))?;
        let mut ct: HashMap<&mut MapData, [u8; 40], [u8; 8]> =
            HashMap::try_from(map).map_err(|source| TestRunError::Map {
                name: CT.into(),
                source,
            })?;
        let keys: Vec<[u8; 40]> = ct.keys().filter_map(Result::ok).collect();
        for k in keys {
            ct.remove(&k).map_err(|source| TestRunError::Map {
                name: CT.into(),
                source,
            })?;
        }
        Ok(RunResult {
            retval: result.return_value,
            events,
        })
    }
}

/// Loads `elf`, runs `program` on `packet` once and drains the event ring.
pub fn run_tc_program(
    elf: &[u8],
    program: &str,
    ipcache: &[(Vec<u8>, Vec<u8>)],
    packet: &[u8],
) -> Result<RunResult, TestRunError> {
    LoadedPolicyObject::load(elf, ipcache)?.run(program, packet)
}
