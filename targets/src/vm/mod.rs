//! # A userspace eBPF interpreter with maps
//!
//! Runs the programs of a BPF ELF object (as `ciliumc compile` writes them) on a packet without
//! the kernel: what `ciliumc trace` uses where `bpf()` is refused, and what the differential tests
//! hold against `BPF_PROG_TEST_RUN`.
//!
//! In: object bytes ([`Vm::from_object`]), initial map entries ([`Vm::fill_map`]), a program name,
//! a packet and optionally an [`SkbContext`]. Out: a [`RunResult`] (r0, the ring-buffer records the
//! run committed, the instructions executed), or a [`VmError`] — an access outside every region,
//! an unknown helper, the step limit and any malformed input are errors, never panics.
//!
//! - `object`: ELF → decoded operations, map and bpf-to-bpf call relocations resolved.
//! - `maps`, `ringbuf`: hash, LRU hash, LPM trie, array, per-CPU array (one CPU), prog array and
//!   ring buffer with the kernel's flags and return codes.
//! - `memory`: tagged regions (context, packet, stack frames, map values, ring records); every
//!   access is bounds-checked against its region.
//! - `exec`, `helpers`: the cpu v4 instruction set and the helpers the policy programs call.
//!
//! Maps persist across runs, as in the kernel (connection tracking carries over); the ring buffer
//! is drained into each run's [`RunResult::events`].

mod exec;
mod helpers;
pub mod maps;
mod memory;
mod object;
pub mod ringbuf;

use std::collections::HashMap;

pub use helpers::SUPPORTED_HELPERS;
pub use maps::UserMap;

/// Instructions one run may execute before it is stopped (the verifier bounds our programs far
/// below this; a loop that never ends must not hang `trace`).
pub const DEFAULT_STEP_LIMIT: u64 = 10_000_000;

/// Why an object could not be loaded or a run failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VmError {
    #[error("reading the object: {0}")]
    Object(String),
    #[error("section {section}: {source}")]
    Decode {
        section: String,
        #[source]
        source: crate::isa::DecodeError,
    },
    #[error("map {map}: {reason}")]
    BadMap { map: String, reason: String },
    #[error("no map {0} in the object")]
    NoMap(String),
    #[error("no program {0} in the object")]
    NoProgram(String),
    #[error("{at}: access of {size} bytes at {addr:#x} is outside {region}")]
    OutOfBounds {
        at: Location,
        addr: u64,
        size: u64,
        region: String,
    },
    #[error("{at}: {what}")]
    Fault { at: Location, what: String },
    #[error("{at}: unknown helper {id}")]
    UnknownHelper { at: Location, id: i32 },
    #[error("step limit of {0} instructions reached")]
    StepLimit(u64),
}

/// Where a fault happened: the section and slot of the instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub section: String,
    pub slot: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} slot {}", self.section, self.slot)
    }
}

/// The `__sk_buff` fields a tc program may read besides `data`/`data_end` (which the VM derives
/// from the packet). Defaults are what `BPF_PROG_TEST_RUN` gives an Ethernet frame on loopback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkbContext {
    pub mark: u32,
    pub priority: u32,
    pub ifindex: u32,
    pub ingress_ifindex: u32,
    pub tc_index: u32,
    pub cb: [u32; 5],
    pub hash: u32,
    pub tc_classid: u32,
    pub queue_mapping: u32,
}

impl Default for SkbContext {
    fn default() -> Self {
        SkbContext {
            mark: 0,
            priority: 0,
            ifindex: 1,
            ingress_ifindex: 0,
            tc_index: 0,
            cb: [0; 5],
            hash: 0,
            tc_classid: 0,
            queue_mapping: 0,
        }
    }
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// r0 at the final `exit`.
    pub ret: u64,
    /// Ring-buffer records committed during the run, per ring in map order, oldest first.
    pub events: Vec<Vec<u8>>,
    /// Instructions executed (tail-called programs included).
    pub steps: u64,
    /// The context after the run (a program may set `mark`, `priority`, `cb`, ...).
    pub ctx: SkbContext,
}

/// An object loaded into the interpreter.
pub struct Vm {
    code: object::Code,
    maps: Vec<UserMap>,
    map_index: HashMap<String, usize>,
    /// The clock `ktime_get_*ns` read; advances 1 µs per call so that time moves forward.
    clock_ns: u64,
    step_limit: u64,
}

impl Vm {
    /// Loads `bytes`: decodes every code section, resolves relocations and creates the maps the
    /// object declares (empty).
    pub fn from_object(bytes: &[u8]) -> Result<Vm, VmError> {
        let (code, specs) = object::read(bytes)?;
        let mut maps = Vec::with_capacity(specs.len());
        let mut map_index = HashMap::new();
        for s in specs {
            map_index.insert(s.name.clone(), maps.len());
            maps.push(UserMap::new(
                &s.name,
                s.kind,
                s.key_size,
                s.value_size,
                s.max_entries,
            )?);
        }
        Ok(Vm {
            code,
            maps,
            map_index,
            clock_ns: 1_000_000_000,
            step_limit: DEFAULT_STEP_LIMIT,
        })
    }

    /// Entry programs (symbols in program sections), sorted by name.
    pub fn programs(&self) -> Vec<&str> {
        self.code.entries.keys().map(String::as_str).collect()
    }

    /// Helper ids the object's code calls that the interpreter does not implement (sorted): a run
    /// reaching one fails with [`VmError::UnknownHelper`].
    pub fn unsupported_helpers(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .code
            .sections
            .iter()
            .flat_map(|s| &s.ops)
            .filter_map(|op| match op {
                object::Op::Insn(crate::isa::Insn::CallHelper { id })
                    if !SUPPORTED_HELPERS.contains(id) =>
                {
                    Some(*id)
                }
                _ => None,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Map names in the object's order.
    pub fn map_names(&self) -> Vec<&str> {
        self.maps.iter().map(|m| m.name.as_str()).collect()
    }

    pub fn map(&self, name: &str) -> Option<&UserMap> {
        self.map_index.get(name).map(|&i| &self.maps[i])
    }

    pub fn map_mut(&mut self, name: &str) -> Option<&mut UserMap> {
        self.map_index.get(name).map(|&i| &mut self.maps[i])
    }

    /// Writes initial entries into map `name` (as a loader writes a manifest's `maps[].entries`).
    pub fn fill_map(&mut self, name: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), VmError> {
        let map = self
            .map_mut(name)
            .ok_or_else(|| VmError::NoMap(name.to_string()))?;
        for (k, v) in entries {
            map.insert_initial(k, v)?;
        }
        Ok(())
    }

    /// Puts `program` into slot `index` of prog-array `map` (a manifest's `tail_calls` entry).
    pub fn set_tail_call(&mut self, map: &str, index: u32, program: &str) -> Result<(), VmError> {
        if !self.code.entries.contains_key(program) {
            return Err(VmError::NoProgram(program.to_string()));
        }
        self.map_mut(map)
            .ok_or_else(|| VmError::NoMap(map.to_string()))?
            .set_program(index, program)
    }

    /// Re-creates empty map `name` with `max_entries` (as a loader's `set_max_entries` before
    /// loading); refused once the map holds entries.
    pub fn set_max_entries(&mut self, name: &str, max_entries: u32) -> Result<(), VmError> {
        let map = self
            .map_mut(name)
            .ok_or_else(|| VmError::NoMap(name.to_string()))?;
        if !map.is_empty()
            || map
                .ring()
                .is_some_and(|r| r.query(ringbuf::BPF_RB_PROD_POS) != 0)
        {
            return Err(VmError::BadMap {
                map: name.to_string(),
                reason: "max_entries can only change before the map is used".into(),
            });
        }
        *map = UserMap::new(name, map.kind, map.key_size, map.value_size, max_entries)?;
        Ok(())
    }

    /// Changes the per-run instruction limit.
    pub fn set_step_limit(&mut self, limit: u64) {
        self.step_limit = limit;
    }

    /// Runs `program` on `packet` with a default context.
    pub fn run(&mut self, program: &str, packet: &[u8]) -> Result<RunResult, VmError> {
        self.run_with(program, packet, &SkbContext::default())
    }

    /// Runs `program` on `packet` with `ctx`. Map changes persist; ring records are drained into
    /// the result (also when the run fails, they are discarded with it).
    pub fn run_with(
        &mut self,
        program: &str,
        packet: &[u8],
        ctx: &SkbContext,
    ) -> Result<RunResult, VmError> {
        let &(section, slot) = self
            .code
            .entries
            .get(program)
            .ok_or_else(|| VmError::NoProgram(program.to_string()))?;
        let mut machine = exec::Machine::new(
            &self.code,
            &mut self.maps,
            &mut self.clock_ns,
            self.step_limit,
            packet,
            ctx,
        );
        let outcome = machine.run(section, slot);
        let ctx_after = machine.context_after();
        let steps = machine.steps();
        let mut events = Vec::new();
        let mut unreleased = false;
        for m in &mut self.maps {
            if let Some(ring) = m.ring_mut() {
                unreleased |= ring.has_reserved();
                events.extend(ring.drain());
                // A failed run must not leave a reservation that blocks later runs' records.
                if ring.has_reserved() {
                    *ring = ringbuf::RingBuf::new(ring.query(ringbuf::BPF_RB_RING_SIZE));
                }
            }
        }
        let ret = outcome?;
        if unreleased {
            return Err(VmError::Fault {
                at: Location {
                    section: self.code.sections[section].name.clone(),
                    slot,
                },
                what: "the program exited holding an unreleased ring-buffer record".into(),
            });
        }
        Ok(RunResult {
            ret,
            events,
            steps,
            ctx: ctx_after,
        })
    }
}
