//! The agent's datapath: applies compile outputs as generations, reconciles after a restart and
//! removes everything it owns on `--cleanup`.
//!
//! In: [`CompileOutput`]s, the interface table and the tc attach mode. Out: programs attached
//! through pinned links (tcx, XDP) or clsact filters, shared maps pinned once under the pin root
//! and kept up to date by diffs, `state.json`, and an [`ApplyReport`] per generation.
//!
//! Order of an apply, so that the running generation is never harmed by a bad one:
//! 1. check everything that can be checked without the kernel (manifest, objects, interfaces,
//!    layout of already pinned maps);
//! 2. load every changed endpoint's object (the verifier runs here; a failure stops the apply
//!    with nothing attached or written);
//! 3. write map diffs (pinned maps) and per-object maps and prog-array slots;
//! 4. swap programs into existing links (`BPF_LINK_UPDATE`) or filters (replace in place), or
//!    attach new ones; remove those of endpoints that are gone; save the copy of the output, then
//!    the state.
//!
//! An apply costs what the changed endpoints cost: unchanged endpoints (same fingerprint, same
//! interface index) are neither reloaded nor probed in the kernel (their attachments are checked
//! at start, by [`Datapath::reconcile`]), and the copy of the output writes only new objects.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use ciliumc_ir::manifest::{Manifest, ManifestEndpoint};
use serde::{Deserialize, Serialize};

use super::config::{InterfaceSource, Interfaces, TcAttach, interface_for};
use super::load::{self, AttachOutcome, LoadError, Target, TcKind};
use super::output::{CompileOutput, OutputError, is_pinned};
use super::pinned_maps;
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
        "endpoint {endpoint}: no interface configured (add `{endpoint}: IFNAME` to the agent's \
         --interfaces file, or annotate the pod with `ciliumc.io/interface: IFNAME` and compile again)"
    )]
    NoInterface { endpoint: String },
    #[error("endpoint {endpoint}: interface {ifname} ({source_name}) does not exist")]
    MissingInterface {
        endpoint: String,
        ifname: String,
        source_name: &'static str,
    },
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
    #[error(
        "{detail}: run `ciliumc agent --cleanup` in the agent's network namespace (nothing was removed)"
    )]
    WrongNamespace { detail: String },
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
    tc_attach: TcAttach,
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
            tc_attach: TcAttach::Auto,
        })
    }

    /// How new tc attachments are made (`--tc-attach`); existing ones keep their kind.
    pub fn set_tc_attach(&mut self, mode: TcAttach) {
        self.tc_attach = mode;
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
            let (ifname, source) =
                interface_for(ifaces, ep).ok_or_else(|| AgentError::NoInterface {
                    endpoint: ep.name.clone(),
                })?;
            let ifindex = sys::ifindex(ifname).ok_or_else(|| AgentError::MissingInterface {
                endpoint: ep.name.clone(),
                ifname: ifname.into(),
                source_name: match source {
                    InterfaceSource::File => "from the interfaces file",
                    InterfaceSource::Annotation => "from the ciliumc.io/interface annotation",
                },
            })?;
            wiring.insert(ep.name.clone(), (ifname.to_string(), ifindex));
        }
        // The event rings get one ring per CPU of this machine: the pinned layout is checked
        // against, and new maps are created with, the effective sizes.
        let effective = load::effective_maps(&manifest.maps);
        let preexisting = pinned_maps::check_pinned_layouts(&self.paths.maps, &effective)?;

        // 2. Load what changed. Within a running agent the state is the truth about the
        // attachments it made; after a restart (`reconcile`) each one is probed in the kernel.
        let mut report = ApplyReport::default();
        let mut todo = Vec::new();
        for ep in &manifest.endpoints {
            let obj = &output.objects[&ep.name];
            let (ifname, ifindex) = &wiring[&ep.name];
            let unchanged = self.state.endpoints.get(&ep.name).is_some_and(|old| {
                old.fingerprint == obj.fingerprint
                    && old.ifindex == *ifindex
                    && old.programs.len() == ep.programs.len()
                    && (new_generation
                        || old
                            .programs
                            .iter()
                            .all(|p| self.attachment_alive(old.ifindex, p)))
            });
            if unchanged {
                report.unchanged.push(ep.name.clone());
                continue;
            }
            todo.push((ep, obj.bytes.as_slice(), ifname.clone(), *ifindex));
        }
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8)
            .min(todo.len().max(1));
        while self.loaders.len() < workers {
            self.loaders.push(load::new_loader(&self.paths.maps));
        }
        let rings = crate::event_ring::EVENTS;
        if let Some(m) = effective.iter().find(|m| m.name == rings) {
            for loader in &mut self.loaders {
                loader.map_max_entries(rings, m.max_entries);
            }
        }
        let mut loaders = std::mem::take(&mut self.loaders);
        let loaded = load_all(&mut loaders[..workers], &todo);
        self.loaders = loaders;
        let mut loaded = loaded?;

        report.load_us = start.elapsed().as_micros() as u64;
        let maps_start = Instant::now();
        // 3. Maps first.
        let previous = self.current.as_ref().map(|c| &c.manifest);
        let (updates, deletes) =
            pinned_maps::sync_pinned_maps(&self.paths.maps, manifest, previous, &preexisting)?;
        report.map_updates = updates;
        report.map_deletes = deletes;
        for (ep, ebpf, _, _) in &mut loaded {
            report.map_updates += load::fill_object_maps(&ep.name, ebpf, manifest)?;
        }

        report.maps_us = maps_start.elapsed().as_micros() as u64;
        let attach_start = Instant::now();
        // 4. Programs.
        let tc = TcKind::resolve(self.tc_attach);
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
                    .filter(|p| self.attachment_alive(ifindex, p))
                    .map(|p| &p.attachment);
                let pin = link_pin_name(&ep.name, &prog.name, prog.hook);
                // A dead pin (interface gone and back) is replaced by a fresh link.
                if existing.is_none() {
                    let _ = std::fs::remove_file(self.paths.links.join(&pin));
                }
                let target = Target {
                    ifname: &ifname,
                    ifindex,
                    pin_dir: &self.paths.links,
                    pin_name: &pin,
                    tc,
                };
                let attached = load::attach_program(&ep.name, &mut ebpf, prog, &target, existing)?;
                if attached.created_clsact {
                    self.state.clsact_qdiscs.insert(ifname.clone(), ifindex);
                }
                match attached.outcome {
                    AttachOutcome::Attached => report.programs_attached += 1,
                    AttachOutcome::Swapped => report.programs_swapped += 1,
                }
                programs.push(ProgramState {
                    program: prog.name.clone(),
                    hook: prog.hook,
                    attachment: attached.attachment,
                });
            }
            if let Some(old) = &old {
                for p in &old.programs {
                    let kept = old.ifindex == ifindex
                        && programs
                            .iter()
                            .any(|n| n.hook == p.hook && n.attachment.same_slot(&p.attachment));
                    if !kept {
                        let _ = load::detach(&p.attachment, old.ifindex, p.hook, &self.paths.links);
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
            // Dropping `ebpf` closes our fds; the links (pinned) and filters hold the programs.
        }
        let wanted: BTreeSet<&str> = manifest.endpoints.iter().map(|e| e.name.as_str()).collect();
        let gone: Vec<String> = self
            .state
            .endpoints
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(old) = self.state.endpoints.remove(&name) {
                for p in &old.programs {
                    let _ = load::detach(&p.attachment, old.ifindex, p.hook, &self.paths.links);
                }
            }
            report.removed.push(name);
        }
        self.release_unused_qdiscs();
        if new_generation {
            self.state.generation += 1;
        }
        report.generation = self.state.generation;
        // The copy first: killed between the two, the next start finds the new output and the
        // old fingerprints, and converges forward by swapping in the (already running) new
        // programs again rather than back to the old ones.
        if new_generation {
            output
                .save_copy(&self.paths.current)
                .map_err(io("writing", &self.paths.current))?;
        }
        self.state
            .save(&self.paths.state_file)
            .map_err(io("writing", &self.paths.state_file))?;
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

    fn attachment_alive(&self, ifindex: u32, p: &ProgramState) -> bool {
        load::attachment_alive(&p.attachment, ifindex, p.hook, &self.paths.links)
    }

    /// Deletes the clsact qdiscs the agent created where none of its filters is left, unless
    /// other filters use them; forgets those whose interface is gone.
    fn release_unused_qdiscs(&mut self) {
        let in_use: BTreeSet<u32> = self
            .state
            .endpoints
            .values()
            .filter(|e| {
                e.programs
                    .iter()
                    .any(|p| matches!(p.attachment, Attachment::Netlink { .. }))
            })
            .map(|e| e.ifindex)
            .collect();
        self.state.clsact_qdiscs.retain(|ifname, ifindex| {
            if in_use.contains(ifindex) {
                return true;
            }
            if sys::ifindex(ifname) != Some(*ifindex) {
                return false;
            }
            !release_qdisc(*ifindex)
        });
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

    /// Removes everything the agent owns: links (detaching the programs), its clsact filters and
    /// the clsact qdiscs it created (if no other filter uses them), map pins, its bpffs mount,
    /// the state file, the copy of the last output and the socket. Nothing else. Filters are
    /// found by interface index, so this must run in the agent's network namespace: if an
    /// index names another interface here, nothing is removed and the error says so.
    pub fn cleanup(paths: &StatePaths) -> Result<CleanupReport, AgentError> {
        let state =
            AgentState::load(&paths.state_file).map_err(io("reading", &paths.state_file))?;
        let mut report = CleanupReport::default();
        let pins_available =
            paths.pin_root.exists() && sys::is_bpffs(&paths.pin_root).unwrap_or(false);
        // Every interface the state names by index must be that interface here, or gone.
        let mut present = BTreeSet::new();
        let netlink_ifaces = state
            .endpoints
            .values()
            .filter(|e| {
                e.programs
                    .iter()
                    .any(|p| matches!(p.attachment, Attachment::Netlink { .. }))
            })
            .map(|e| (e.ifname.as_str(), e.ifindex))
            .chain(state.clsact_qdiscs.iter().map(|(n, i)| (n.as_str(), *i)));
        for (ifname, ifindex) in netlink_ifaces {
            match sys::ifname(ifindex) {
                Some(here) if here == ifname => {
                    present.insert(ifindex);
                }
                Some(here) => {
                    return Err(AgentError::WrongNamespace {
                        detail: format!(
                            "interface index {ifindex} is {here} here, the agent attached to \
                             {ifname}"
                        ),
                    });
                }
                // Gone: its qdisc and filters went with it.
                None => {}
            }
        }
        for ep in state.endpoints.values() {
            for p in &ep.programs {
                if let Attachment::Netlink { .. } = p.attachment
                    && present.contains(&ep.ifindex)
                {
                    load::detach(&p.attachment, ep.ifindex, p.hook, &paths.links)
                        .map_err(io("deleting a tc filter on", Path::new(&ep.ifname)))?;
                    report.filters += 1;
                }
            }
        }
        for ifindex in state.clsact_qdiscs.values() {
            if present.contains(ifindex) && release_qdisc(*ifindex) {
                report.qdiscs += 1;
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

/// Deletes the clsact qdisc of `ifindex` if no filter is left on either hook (other owners'
/// filters keep it). Returns whether it was deleted.
fn release_qdisc(ifindex: u32) -> bool {
    use super::netlink;
    let empty = |parent| netlink::filters(ifindex, parent).is_ok_and(|f| f.is_empty());
    if !(empty(netlink::PARENT_INGRESS) && empty(netlink::PARENT_EGRESS)) {
        return false;
    }
    match netlink::delete_clsact(ifindex) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("deleting the clsact qdisc of interface {ifindex}: {e}");
            false
        }
    }
}

/// What `--cleanup` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    /// Pinned links (tcx, XDP).
    pub links: usize,
    pub maps: usize,
    /// cls_bpf filters and the clsact qdiscs the agent had created.
    pub filters: usize,
    pub qdiscs: usize,
}

#[cfg(test)]
mod tests {
    use super::AgentError;

    #[test]
    fn a_missing_interface_names_both_ways_to_configure_one() {
        let e = AgentError::NoInterface {
            endpoint: "default/a".into(),
        }
        .to_string();
        assert!(
            e.contains("default/a: IFNAME")
                && e.contains("--interfaces")
                && e.contains("ciliumc.io/interface: IFNAME"),
            "{e}"
        );
    }
}
