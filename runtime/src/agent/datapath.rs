//! The agent's datapath: applies compile outputs as generations, reconciles after a restart and
//! removes everything it owns on `--cleanup`.
//!
//! In: [`CompileOutput`]s and the interface table. Out: programs attached through pinned links,
//! shared maps pinned once under the pin root and kept up to date by diffs, `state.json`, and an
//! [`ApplyReport`] per generation.
//!
//! Order of an apply, so that the running generation is never harmed by a bad one:
//! 1. check everything that can be checked without the kernel (manifest, objects, interfaces,
//!    layout of already pinned maps);
//! 2. load every changed endpoint's object (the verifier runs here; a failure stops the apply
//!    with nothing attached or written);
//! 3. write map diffs (pinned maps) and per-object maps and prog-array slots;
//! 4. swap programs into existing links (`BPF_LINK_UPDATE`) or attach new links; remove links of
//!    endpoints that are gone; save the state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use aya::maps::MapData;
use ciliumc_ir::manifest::{Manifest, ManifestEndpoint, ManifestMap};
use serde::{Deserialize, Serialize};

use super::config::Interfaces;
use super::load::{self, AttachOutcome, LoadError};
use super::output::{CompileOutput, OutputError, is_pinned};
use super::state::{
    AgentState, Attachment, EndpointState, ProgramState, StatePaths, link_pin_name,
};
use super::sys;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Load(Box<LoadError>),
    #[error(
        "endpoint {endpoint}: no interface configured (add `{endpoint}: IFNAME` to the interfaces file)"
    )]
    NoInterface { endpoint: String },
    #[error("endpoint {endpoint}: interface {ifname} does not exist")]
    MissingInterface { endpoint: String, ifname: String },
    #[error(
        "map {name}: pinned with {pinned}, the new generation wants {wanted}; the layout changed \
         and cannot be migrated in place: stop the agent and run `ciliumc agent --cleanup`"
    )]
    LayoutChanged {
        name: String,
        pinned: String,
        wanted: String,
    },
    #[error("map {name}: {detail}")]
    Map { name: String, detail: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<LoadError> for AgentError {
    fn from(e: LoadError) -> Self {
        AgentError::Load(Box::new(e))
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AgentError {
    let path = path.display().to_string();
    move |source| AgentError::Io { what, path, source }
}

/// What one apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub generation: u64,
    /// Endpoints whose programs were loaded (new or changed).
    pub loaded: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
    pub programs_attached: usize,
    pub programs_swapped: usize,
    pub map_updates: usize,
    pub map_deletes: usize,
    /// Pins found that the state did not know (removed during reconcile).
    pub stray_pins_removed: usize,
    /// Total, and its parts: checks + object loads (verifier), map writes, attach/swap + state.
    pub latency_us: u64,
    pub load_us: u64,
    pub maps_us: u64,
    pub attach_us: u64,
}

/// The running datapath.
pub struct Datapath {
    paths: StatePaths,
    state: AgentState,
    current: Option<CompileOutput>,
    /// One per load worker; see [`load::new_loader`].
    loaders: Vec<aya::EbpfLoader<'static>>,
}

type Todo<'m> = (&'m ManifestEndpoint, &'m [u8], String, u32);
type Loaded<'m> = (&'m ManifestEndpoint, aya::Ebpf, String, u32);

/// Loads every object of `todo`: the first alone (it may create and pin the shared maps, which
/// concurrent loads would race on), the rest spread over the loaders' threads (parsing and the
/// verifier dominate an apply).
fn load_all<'m>(
    loaders: &mut [aya::EbpfLoader<'static>],
    todo: &[Todo<'m>],
) -> Result<Vec<Loaded<'m>>, LoadError> {
    let mut loaded = Vec::with_capacity(todo.len());
    let Some((first, rest)) = todo.split_first() else {
        return Ok(loaded);
    };
    let Some(main_loader) = loaders.first_mut() else {
        return Ok(loaded);
    };
    let ebpf = load::load_object(main_loader, &first.0.name, first.1)?;
    loaded.push((first.0, ebpf, first.2.clone(), first.3));
    if rest.is_empty() {
        return Ok(loaded);
    }
    let per_worker = rest.len().div_ceil(loaders.len());
    let results: Vec<Result<aya::Ebpf, LoadError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .chunks(per_worker)
            .zip(loaders.iter_mut())
            .map(|(part, loader)| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(ep, bytes, _, _)| load::load_object(loader, &ep.name, bytes))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![Err(LoadError::Program {
                        endpoint: "?".into(),
                        program: "?".into(),
                        detail: "loader thread panicked".into(),
                    })]
                })
            })
            .collect()
    });
    for ((ep, _, ifname, ifindex), r) in rest.iter().zip(results) {
        loaded.push((*ep, r?, ifname.clone(), *ifindex));
    }
    Ok(loaded)
}

/// Manifest type name → the kernel's, as aya's `MapType` prints it without underscores.
fn normalized_type(t: &str) -> String {
    let t = t.to_ascii_lowercase().replace('_', "");
    match t.as_str() {
        "progarray" => "programarray".into(),
        "lruhashmap" => "lruhash".into(),
        "hashmap" => "hash".into(),
        _ => t,
    }
}

fn layout(t: &str, k: u32, v: u32, n: u32) -> String {
    format!("type {t}, key {k} B, value {v} B, max_entries {n}")
}

impl Datapath {
    /// Prepares the state directory and the pin root (mounting a bpf filesystem there if the
    /// agent owns it and none is mounted) and reads the persisted state.
    pub fn open(paths: StatePaths) -> Result<Datapath, AgentError> {
        std::fs::create_dir_all(&paths.root).map_err(io("creating", &paths.root))?;
        std::fs::create_dir_all(&paths.pin_root).map_err(io("creating", &paths.pin_root))?;
        if paths.own_mount {
            sys::ensure_bpffs(&paths.pin_root).map_err(io("mounting bpffs at", &paths.pin_root))?;
        } else if !sys::is_bpffs(&paths.pin_root).map_err(io("checking", &paths.pin_root))? {
            return Err(AgentError::Io {
                what: "pin root is not on a bpf filesystem:",
                path: paths.pin_root.display().to_string(),
                source: std::io::Error::other("mount bpffs there first"),
            });
        }
        std::fs::create_dir_all(&paths.maps).map_err(io("creating", &paths.maps))?;
        std::fs::create_dir_all(&paths.links).map_err(io("creating", &paths.links))?;
        let state =
            AgentState::load(&paths.state_file).map_err(io("reading", &paths.state_file))?;
        let current = if paths.current.join("manifest.json").exists() {
            CompileOutput::read(&paths.current).ok()
        } else {
            None
        };
        Ok(Datapath {
            paths,
            state,
            current,
            loaders: Vec::new(),
        })
    }

    pub fn paths(&self) -> &StatePaths {
        &self.paths
    }

    pub fn state(&self) -> &AgentState {
        &self.state
    }

    /// The manifest of the running generation.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.current.as_ref().map(|c| &c.manifest)
    }

    /// Applies `output` as a new generation.
    pub fn apply(
        &mut self,
        output: CompileOutput,
        ifaces: &Interfaces,
    ) -> Result<ApplyReport, AgentError> {
        self.apply_inner(output, ifaces, true)
    }

    /// After a restart: brings the kernel in line with the last applied generation, adopting
    /// links whose program is unchanged, re-attaching what is missing and removing stray pins.
    pub fn reconcile(&mut self, ifaces: &Interfaces) -> Result<ApplyReport, AgentError> {
        let mut report = match self.current.clone() {
            Some(out) => self.apply_inner(out, ifaces, false)?,
            None => ApplyReport {
                generation: self.state.generation,
                ..Default::default()
            },
        };
        report.stray_pins_removed = self.remove_stray_pins()?;
        Ok(report)
    }

    fn apply_inner(
        &mut self,
        output: CompileOutput,
        ifaces: &Interfaces,
        new_generation: bool,
    ) -> Result<ApplyReport, AgentError> {
        let start = Instant::now();
        let manifest = &output.manifest;
        // 1. Checks without side effects.
        let mut wiring = BTreeMap::new();
        for ep in &manifest.endpoints {
            let ifname = ifaces
                .get(&ep.name)
                .ok_or_else(|| AgentError::NoInterface {
                    endpoint: ep.name.clone(),
                })?;
            let ifindex = sys::ifindex(ifname).ok_or_else(|| AgentError::MissingInterface {
                endpoint: ep.name.clone(),
                ifname: ifname.into(),
            })?;
            wiring.insert(ep.name.clone(), (ifname.to_string(), ifindex));
        }
        let preexisting = self.check_pinned_layouts(&manifest.maps)?;

        // 2. Load what changed.
        let mut report = ApplyReport::default();
        let mut todo = Vec::new();
        for ep in &manifest.endpoints {
            let obj = &output.objects[&ep.name];
            let (ifname, ifindex) = &wiring[&ep.name];
            let unchanged = self.state.endpoints.get(&ep.name).is_some_and(|old| {
                old.fingerprint == obj.fingerprint
                    && old.ifindex == *ifindex
                    && old.programs.len() == ep.programs.len()
                    && old
                        .programs
                        .iter()
                        .all(|p| self.attachment_alive(&p.attachment))
            });
            if unchanged {
                report.unchanged.push(ep.name.clone());
                continue;
            }
            todo.push((ep, obj.bytes.as_slice(), ifname.clone(), *ifindex));
        }
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        while self.loaders.len() < workers {
            self.loaders.push(load::new_loader(&self.paths.maps));
        }
        let mut loaders = std::mem::take(&mut self.loaders);
        let loaded = load_all(&mut loaders, &todo);
        self.loaders = loaders;
        let mut loaded = loaded?;

        report.load_us = start.elapsed().as_micros() as u64;
        let maps_start = Instant::now();
        // 3. Maps first.
        let previous = self.current.as_ref().map(|c| &c.manifest);
        let (updates, deletes) = self.sync_pinned_maps(manifest, previous, &preexisting)?;
        report.map_updates = updates;
        report.map_deletes = deletes;
        for (ep, ebpf, _, _) in &mut loaded {
            report.map_updates += load::fill_object_maps(&ep.name, ebpf, manifest)?;
        }

        report.maps_us = maps_start.elapsed().as_micros() as u64;
        let attach_start = Instant::now();
        // 4. Programs.
        for (ep, mut ebpf, ifname, ifindex) in loaded {
            let old = self.state.endpoints.get(&ep.name).cloned();
            // A link on another interface (the pod was re-wired) cannot be swapped.
            let reusable = old
                .as_ref()
                .filter(|o| o.ifindex == ifindex && o.ifname == ifname);
            let mut programs = Vec::new();
            for prog in &ep.programs {
                let existing = reusable
                    .and_then(|o| {
                        o.programs
                            .iter()
                            .find(|p| p.program == prog.name && p.hook == prog.hook)
                    })
                    .map(|p| &p.attachment)
                    .filter(|a| self.attachment_alive(a));
                let pin = link_pin_name(&ep.name, &prog.name, prog.hook);
                // A dead pin (interface gone and back) is replaced by a fresh link.
                if existing.is_none() {
                    let _ = std::fs::remove_file(self.paths.links.join(&pin));
                }
                let (attachment, outcome) = load::attach_program(
                    &ep.name,
                    &mut ebpf,
                    prog,
                    &ifname,
                    existing,
                    &self.paths.links,
                    &pin,
                )?;
                match outcome {
                    AttachOutcome::Attached => report.programs_attached += 1,
                    AttachOutcome::Swapped => report.programs_swapped += 1,
                }
                programs.push(ProgramState {
                    program: prog.name.clone(),
                    hook: prog.hook,
                    attachment,
                });
            }
            if let Some(old) = &old {
                for p in &old.programs {
                    if !programs.iter().any(|n| n.attachment == p.attachment) {
                        let _ = load::detach(&p.attachment, &old.ifname, p.hook, &self.paths.links);
                    }
                }
            }
            self.state.endpoints.insert(
                ep.name.clone(),
                EndpointState {
                    fingerprint: output.objects[&ep.name].fingerprint.clone(),
                    ifname,
                    ifindex,
                    programs,
                },
            );
            report.loaded.push(ep.name.clone());
            // Dropping `ebpf` closes our fds; the links (pinned) hold the programs.
        }
        let gone: Vec<String> = self
            .state
            .endpoints
            .keys()
            .filter(|n| !manifest.endpoints.iter().any(|e| &&e.name == n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(old) = self.state.endpoints.remove(&name) {
                for p in &old.programs {
                    let _ = load::detach(&p.attachment, &old.ifname, p.hook, &self.paths.links);
                }
            }
            report.removed.push(name);
        }
        if new_generation {
            self.state.generation += 1;
        }
        report.generation = self.state.generation;
        self.state
            .save(&self.paths.state_file)
            .map_err(io("writing", &self.paths.state_file))?;
        if new_generation {
            output
                .save_copy(&self.paths.current)
                .map_err(io("writing", &self.paths.current))?;
        }
        self.current = Some(output);
        report.attach_us = attach_start.elapsed().as_micros() as u64;
        report.latency_us = start.elapsed().as_micros() as u64;
        tracing::info!(
            generation = report.generation,
            loaded = report.loaded.len(),
            "applied"
        );
        Ok(report)
    }

    fn attachment_alive(&self, a: &Attachment) -> bool {
        match a {
            Attachment::Link { pin } => {
                aya::programs::links::PinnedLink::from_pin(self.paths.links.join(pin))
                    .ok()
                    .and_then(|p| aya::programs::links::FdLink::from(p).info().ok())
                    .is_some()
            }
            Attachment::Netlink { .. } => true,
        }
    }

    /// Refuses a generation whose pinned maps differ in layout from the pinned ones. Returns the
    /// names of the maps that were pinned before this apply.
    fn check_pinned_layouts(&self, maps: &[ManifestMap]) -> Result<BTreeSet<String>, AgentError> {
        let mut existing = BTreeSet::new();
        for m in maps.iter().filter(|m| is_pinned(m)) {
            let path = self.paths.maps.join(&m.name);
            if !path.exists() {
                continue;
            }
            let data = MapData::from_pin(&path).map_err(|e| AgentError::Map {
                name: m.name.clone(),
                detail: load::error_chain(&e),
            })?;
            let info = data.info().map_err(|e| AgentError::Map {
                name: m.name.clone(),
                detail: load::error_chain(&e),
            })?;
            let ptype = info
                .map_type()
                .map(|t| format!("{t:?}"))
                .unwrap_or_else(|_| "unknown".into());
            let same = normalized_type(&ptype) == normalized_type(&m.map_type)
                && info.key_size() == m.key_size
                && info.value_size() == m.value_size
                && info.max_entries() == m.max_entries;
            if !same {
                return Err(AgentError::LayoutChanged {
                    name: m.name.clone(),
                    pinned: layout(
                        &ptype,
                        info.key_size(),
                        info.value_size(),
                        info.max_entries(),
                    ),
                    wanted: layout(&m.map_type, m.key_size, m.value_size, m.max_entries),
                });
            }
            existing.insert(m.name.clone());
        }
        Ok(existing)
    }

    /// Writes the difference between the previous and the new entries of every pinned map (all
    /// entries for a map that was created by this apply).
    fn sync_pinned_maps(
        &self,
        manifest: &Manifest,
        previous: Option<&Manifest>,
        preexisting: &BTreeSet<String>,
    ) -> Result<(usize, usize), AgentError> {
        let (mut updates, mut deletes) = (0, 0);
        for m in manifest.maps.iter().filter(|m| is_pinned(m)) {
            let path = self.paths.maps.join(&m.name);
            if !path.exists() {
                if m.entries.is_empty() {
                    continue;
                }
                return Err(AgentError::Map {
                    name: m.name.clone(),
                    detail: "has entries but no object declares it".into(),
                });
            }
            let old: BTreeMap<&str, &str> = if preexisting.contains(&m.name) {
                previous
                    .and_then(|p| p.maps.iter().find(|x| x.name == m.name))
                    .map(|x| {
                        x.entries
                            .iter()
                            .map(|e| (e.key.as_str(), e.value.as_str()))
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                BTreeMap::new()
            };
            let new: BTreeMap<&str, &str> = m
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str()))
                .collect();
            if old == new {
                continue;
            }
            let data = MapData::from_pin(&path).map_err(|e| AgentError::Map {
                name: m.name.clone(),
                detail: load::error_chain(&e),
            })?;
            let fd = std::os::fd::AsFd::as_fd(data.fd());
            let bad = |detail: String| AgentError::Map {
                name: m.name.clone(),
                detail,
            };
            // Additions and changes before removals: a lookup never misses an address that stays.
            for (k, v) in &new {
                if old.get(k) != Some(v) {
                    let (kb, vb) = (hex::decode(k), hex::decode(v));
                    let (Ok(kb), Ok(vb)) = (kb, vb) else {
                        return Err(bad("entry is not hex".into()));
                    };
                    sys::map_update(fd, &kb, &vb).map_err(|e| bad(e.to_string()))?;
                    updates += 1;
                }
            }
            for k in old.keys().filter(|k| !new.contains_key(*k)) {
                let kb = hex::decode(k).map_err(|e| bad(e.to_string()))?;
                sys::map_delete(fd, &kb).map_err(|e| bad(e.to_string()))?;
                deletes += 1;
            }
        }
        Ok((updates, deletes))
    }

    /// Link pins the state does not reference, and map pins no map of the running generation
    /// uses: left by an agent killed between attaching and saving.
    fn remove_stray_pins(&self) -> Result<usize, AgentError> {
        let known: BTreeSet<String> = self
            .state
            .endpoints
            .values()
            .flat_map(|e| e.programs.iter())
            .filter_map(|p| match &p.attachment {
                Attachment::Link { pin } => Some(pin.clone()),
                Attachment::Netlink { .. } => None,
            })
            .collect();
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.paths.links)
            .map_err(io("listing", &self.paths.links))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            if !known.contains(&name) {
                std::fs::remove_file(entry.path()).map_err(io("removing", &entry.path()))?;
                removed += 1;
            }
        }
        let maps: BTreeSet<&str> = self
            .manifest()
            .map(|m| {
                m.maps
                    .iter()
                    .filter(|m| is_pinned(m))
                    .map(|m| m.name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        for entry in std::fs::read_dir(&self.paths.maps)
            .map_err(io("listing", &self.paths.maps))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            if self.current.is_some() && !maps.contains(name.as_str()) {
                std::fs::remove_file(entry.path()).map_err(io("removing", &entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes everything the agent owns: links (detaching the programs), map pins, its bpffs
    /// mount, the state file, the copy of the last output and the socket. Nothing else.
    pub fn cleanup(paths: &StatePaths) -> Result<CleanupReport, AgentError> {
        let state =
            AgentState::load(&paths.state_file).map_err(io("reading", &paths.state_file))?;
        let mut report = CleanupReport::default();
        let pins_available =
            paths.pin_root.exists() && sys::is_bpffs(&paths.pin_root).unwrap_or(false);
        for ep in state.endpoints.values() {
            for p in &ep.programs {
                if let Attachment::Netlink { .. } = p.attachment {
                    let _ = load::detach(&p.attachment, &ep.ifname, p.hook, &paths.links);
                    report.links += 1;
                }
            }
        }
        if pins_available {
            for (dir, count) in [
                (&paths.links, &mut report.links),
                (&paths.maps, &mut report.maps),
            ] {
                if let Ok(rd) = std::fs::read_dir(dir) {
                    for entry in rd.flatten() {
                        std::fs::remove_file(entry.path())
                            .map_err(io("removing", &entry.path()))?;
                        *count += 1;
                    }
                }
                let _ = std::fs::remove_dir(dir);
            }
            if paths.own_mount {
                sys::unmount_bpffs(&paths.pin_root).map_err(io("unmounting", &paths.pin_root))?;
            }
        }
        if paths.own_mount && paths.pin_root.exists() {
            let _ = std::fs::remove_dir(&paths.pin_root);
        }
        for f in [&paths.state_file, &paths.socket] {
            let _ = std::fs::remove_file(f);
        }
        if paths.current.exists() {
            std::fs::remove_dir_all(&paths.current).map_err(io("removing", &paths.current))?;
        }
        Ok(report)
    }
}

/// What `--cleanup` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    pub links: usize,
    pub maps: usize,
}
