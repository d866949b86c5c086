//! Where `trace` executes a compiled program: in the kernel (`BPF_PROG_TEST_RUN` through aya) or
//! in the userspace eBPF interpreter (`ciliumc_targets::vm`), which loads the same object, fills
//! its maps with the manifest's initial entries and decodes the same event records from its copy
//! of the per-CPU rings (the interpreter is CPU 0).
//!
//! In: the engine the user chose, the maps' initial entries, and per run an object, a program
//! name and a packet. Out: the program's return value and flow events, and which engine ran.

use anyhow::{Context, bail};
use ciliumc_runtime::event_ring::{self, LookupRings};
use ciliumc_runtime::events::FlowEvent;
use ciliumc_runtime::testrun::{self, EVENTS, IPCACHE};
use ciliumc_targets::vm::Vm;

/// `--engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum EngineChoice {
    /// The kernel when `bpf()` works, else the interpreter.
    #[default]
    Auto,
    Kernel,
    Interpreter,
}

/// The engine that ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Kernel,
    Interpreter,
}

impl Engine {
    pub fn describe(self) -> &'static str {
        match self {
            Engine::Kernel => "the kernel (BPF_PROG_TEST_RUN)",
            Engine::Interpreter => "the userspace eBPF interpreter (ciliumc_targets::vm)",
        }
    }
}

/// One program run.
pub struct Execution {
    pub retval: u32,
    pub events: Vec<FlowEvent>,
}

/// Map name → initial entries (key, value bytes), as the manifest lists them.
pub type MapEntries = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

pub struct Executor {
    choice: EngineChoice,
    used: Option<Engine>,
    /// Why the kernel was not used under `auto`.
    pub fallback_reason: Option<String>,
    /// Every prefix in the LPM ipcache (what the kernel path loads).
    ipcache_lpm: Vec<(Vec<u8>, Vec<u8>)>,
    /// The manifest's shared-map entries (what the interpreter loads).
    manifest_entries: MapEntries,
}

impl Executor {
    pub fn new(
        choice: EngineChoice,
        ipcache_lpm: Vec<(Vec<u8>, Vec<u8>)>,
        manifest_entries: MapEntries,
    ) -> Executor {
        Executor {
            choice,
            used: None,
            fallback_reason: None,
            ipcache_lpm,
            manifest_entries,
        }
    }

    /// The engine that ran the programs so far (`None` before the first run).
    pub fn used(&self) -> Option<Engine> {
        self.used
    }

    pub fn run(
        &mut self,
        object: &[u8],
        program: &str,
        packet: &[u8],
    ) -> anyhow::Result<Execution> {
        let engine = match (self.choice, self.used) {
            (EngineChoice::Kernel, _) => Engine::Kernel,
            (EngineChoice::Interpreter, _) => Engine::Interpreter,
            (EngineChoice::Auto, Some(e)) => e,
            (EngineChoice::Auto, None) => Engine::Kernel,
        };
        let result = match engine {
            Engine::Kernel => {
                match testrun::run_tc_program(object, program, &self.ipcache_lpm, packet) {
                    Ok(r) => Execution {
                        retval: r.retval,
                        events: r.events,
                    },
                    Err(e) if e.is_bpf_refused() && self.choice == EngineChoice::Auto => {
                        self.fallback_reason = Some(e.to_string());
                        self.used = Some(Engine::Interpreter);
                        return self.run(object, program, packet);
                    }
                    Err(e) if e.is_bpf_refused() => {
                        bail!("bpf() refused ({e}); use --engine interpreter or auto")
                    }
                    Err(e) => return Err(e).context("executing in the kernel"),
                }
            }
            Engine::Interpreter => self.interpret(object, program, packet)?,
        };
        self.used = Some(engine);
        Ok(result)
    }

    fn interpret(&self, object: &[u8], program: &str, packet: &[u8]) -> anyhow::Result<Execution> {
        let mut vm = Vm::from_object(object).context("loading the object into the interpreter")?;
        let missing = vm.unsupported_helpers();
        if !missing.is_empty() {
            bail!(
                "the interpreter does not implement helper(s) {missing:?} that {program}'s object calls"
            );
        }
        let mut filled_ipcache = false;
        for (name, entries) in &self.manifest_entries {
            if vm.map(name).is_some() {
                vm.fill_map(name, entries)
                    .with_context(|| format!("filling map {name}"))?;
                filled_ipcache |= name == IPCACHE;
            }
        }
        if !filled_ipcache {
            bail!("the object has no map {IPCACHE}: not a ciliumc policy object");
        }
        let run = vm
            .run(program, packet)
            .with_context(|| format!("interpreting {program}"))?;
        let retval = u32::try_from(run.ret & 0xffff_ffff).unwrap_or(u32::MAX);
        let Some(ring_map) = vm.map(EVENTS) else {
            bail!("the object has no map {EVENTS}: not a ciliumc policy object");
        };
        let mut rings = LookupRings::new(|index: u32| ring_map.get(&index.to_le_bytes()), vec![0]);
        let mut events = Vec::new();
        event_ring::drain(&mut rings, |record| {
            events.push(FlowEvent::from_record(record))
        });
        Ok(Execution { retval, events })
    }
}
