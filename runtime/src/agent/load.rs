//! The kernel side of one endpoint: load its object against the pinned shared maps, fill its own
//! maps and prog-array slots, then attach each entry program (new tcx/XDP link, pinned, or a
//! cls_bpf filter on a clsact qdisc) or swap it into the existing link (`BPF_LINK_UPDATE`) or
//! filter (replace at the same priority and handle), atomic per packet either way.
//!
//! In: object bytes, the manifest, pin paths. Out: a loaded `aya::Ebpf`, [`Attachment`]s, or
//! [`LoadError`] (with the verifier log when the kernel refused a program).

use std::path::Path;

use aya::maps::{Map, MapData, ProgramArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{self, SchedClassifierLink, TcAttachOptions};
use aya::programs::xdp::XdpLink;
use aya::programs::{LinkOrder, Program, SchedClassifier, TcAttachType, Xdp, XdpMode};
use ciliumc_ir::manifest::{Hook, Manifest, ManifestMap, ManifestProgram};

use super::config::TcAttach;
use super::netlink;
use super::output::is_pinned;
use super::state::Attachment;
use super::sys;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("endpoint {endpoint}: loading the object: {detail}")]
    Object { endpoint: String, detail: String },
    #[error("endpoint {endpoint}: program {program}: {detail}")]
    Program {
        endpoint: String,
        program: String,
        detail: String,
    },
    #[error("endpoint {endpoint}: map {map}: {detail}")]
    Map {
        endpoint: String,
        map: String,
        detail: String,
    },
    #[error("endpoint {endpoint}: attaching {program} to {ifname}: {detail}")]
    Attach {
        endpoint: String,
        program: String,
        ifname: String,
        detail: String,
    },
}

/// Full text of an aya error chain: the verifier log sits in the innermost source.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = inner.source();
    }
    s
}

/// A loader for the agent's objects: maps pinned by name under `maps_dir`, no kernel BTF (the
/// objects carry no CO-RE relocations). `EbpfLoader::new` parses vmlinux's BTF, which costs more
/// than the rest of a load, so loaders are made once and reused.
pub fn new_loader(maps_dir: &Path) -> aya::EbpfLoader<'static> {
    let mut loader = aya::EbpfLoader::new();
    loader.btf(None).default_map_pin_directory(maps_dir);
    loader
}

/// Entries for the event rings' array (`ciliumc_events`): the declared count, or one ring per
/// CPU this machine can bring up (`possible_cpus`) when that is more, so that no CPU's events
/// go without a ring. `None` when the declaration is not whole rings (not ciliumc's layout).
pub fn event_ring_entries(declared: &ManifestMap, possible_cpus: usize) -> Option<u32> {
    let stride = crate::event_ring::RING_STRIDE;
    let whole_rings = declared.map_type == "array"
        && declared.value_size as usize == crate::event_ring::SLOT_BYTES
        && declared.max_entries > 0
        && u64::from(declared.max_entries) % stride == 0;
    if !whole_rings {
        return None;
    }
    let wanted = u32::try_from(possible_cpus as u64 * stride).unwrap_or(u32::MAX);
    Some(declared.max_entries.max(wanted - wanted % stride as u32))
}

/// The manifest's maps as the agent creates them: the event rings sized for this machine's
/// CPUs ([`event_ring_entries`]); every other map as declared.
pub fn effective_maps(maps: &[ManifestMap]) -> Vec<ManifestMap> {
    let cpus = aya::util::nr_cpus().unwrap_or(1);
    maps.iter()
        .map(|m| {
            let mut m = m.clone();
            if m.name == crate::event_ring::EVENTS
                && let Some(n) = event_ring_entries(&m, cpus)
            {
                m.max_entries = n;
            }
            m
        })
        .collect()
}

/// Loads `bytes` and every program in it (entry points and tail-called sub-programs). Nothing
/// is attached yet.
pub fn load_object(
    loader: &mut aya::EbpfLoader<'static>,
    endpoint: &str,
    bytes: &[u8],
) -> Result<aya::Ebpf, LoadError> {
    let mut ebpf = loader.load(bytes).map_err(|e| LoadError::Object {
        endpoint: endpoint.into(),
        detail: error_chain(&e),
    })?;
    for (name, prog) in ebpf.programs_mut() {
        let r = match prog {
            Program::SchedClassifier(p) => p.load(),
            Program::Xdp(p) => p.load(),
            _ => {
                return Err(LoadError::Program {
                    endpoint: endpoint.into(),
                    program: name.into(),
                    detail: "unsupported program type (tc classifier and XDP only)".into(),
                });
            }
        };
        r.map_err(|e| LoadError::Program {
            endpoint: endpoint.into(),
            program: name.into(),
            detail: error_chain(&e),
        })?;
    }
    Ok(ebpf)
}

fn map_data(map: &Map) -> Option<&MapData> {
    Some(match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::LpmTrie(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::ProgramArray(d)
        | Map::RingBuf(d)
        | Map::BloomFilter(d)
        | Map::Queue(d)
        | Map::Stack(d)
        | Map::Unsupported(d) => d,
        _ => return None,
    })
}

/// Fills the object's own (not pinned) maps with their manifest entries, then the prog-array
/// slots, so that sub-programs are in place before any entry point is attached.
pub fn fill_object_maps(
    endpoint: &str,
    ebpf: &mut aya::Ebpf,
    manifest: &Manifest,
) -> Result<usize, LoadError> {
    let err = |map: &str, detail: String| LoadError::Map {
        endpoint: endpoint.into(),
        map: map.into(),
        detail,
    };
    let mut written = 0;
    for m in manifest
        .maps
        .iter()
        .filter(|m| !is_pinned(m) && !m.entries.is_empty())
    {
        let Some(map) = ebpf.map(&m.name) else {
            continue;
        };
        let data = map_data(map).ok_or_else(|| err(&m.name, "unsupported map type".into()))?;
        for e in &m.entries {
            let (Ok(k), Ok(v)) = (hex::decode(&e.key), hex::decode(&e.value)) else {
                return Err(err(&m.name, "entry is not hex".into()));
            };
            sys::map_update(std::os::fd::AsFd::as_fd(data.fd()), &k, &v)
                .map_err(|e| err(&m.name, e.to_string()))?;
            written += 1;
        }
    }
    for t in &manifest.tail_calls {
        if ebpf.map(&t.map).is_none() {
            continue;
        }
        let fd = ebpf
            .program(&t.program)
            .ok_or_else(|| {
                err(
                    &t.map,
                    format!("tail-call program {} not in the object", t.program),
                )
            })?
            .fd()
            .and_then(|f| f.try_clone().map_err(Into::into))
            .map_err(|e| err(&t.map, error_chain(&e)))?;
        let map = ebpf
            .map_mut(&t.map)
            .ok_or_else(|| err(&t.map, "missing".into()))?;
        let mut slots: ProgramArray<&mut MapData> =
            ProgramArray::try_from(map).map_err(|e| err(&t.map, error_chain(&e)))?;
        slots
            .set(t.index, &fd, 0)
            .map_err(|e| err(&t.map, error_chain(&e)))?;
        written += 1;
    }
    Ok(written)
}

/// What happened to one entry program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachOutcome {
    /// A new link (or filter) was created on the hook.
    Attached,
    /// The program replaced the previous one in its link (or filter).
    Swapped,
}

/// How a new tc attachment is made (the resolved `--tc-attach`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcKind {
    Tcx,
    Clsact,
}

impl TcKind {
    pub fn resolve(mode: TcAttach) -> TcKind {
        match mode {
            TcAttach::Tcx => TcKind::Tcx,
            TcAttach::Clsact => TcKind::Clsact,
            TcAttach::Auto if tcx_supported() => TcKind::Tcx,
            TcAttach::Auto => TcKind::Clsact,
        }
    }
}

/// Priority and handle of the agent's cls_bpf filters (one per clsact hook and interface).
/// Priority 1 runs before filters added with tc's defaults; the handle is distinctive so that a
/// filter found there after a crash can be told apart from others by name.
pub const CLSACT_PRIORITY: u16 = 1;
pub const CLSACT_HANDLE: u32 = 0xc111;

/// Where one endpoint program goes.
pub struct Target<'a> {
    pub ifname: &'a str,
    pub ifindex: u32,
    /// Directory of the link pins and the pin name of this program's link.
    pub pin_dir: &'a Path,
    pub pin_name: &'a str,
    pub tc: TcKind,
}

/// The result of [`attach_program`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub attachment: Attachment,
    pub outcome: AttachOutcome,
    /// The clsact qdisc was created by this attach (the agent owns it).
    pub created_clsact: bool,
}

fn tc_attach_type(hook: Hook) -> TcAttachType {
    if hook == Hook::TcIngress {
        TcAttachType::Ingress
    } else {
        TcAttachType::Egress
    }
}

/// The clsact filter parent of a tc hook.
pub fn clsact_parent(hook: Hook) -> u32 {
    if hook == Hook::TcIngress {
        netlink::PARENT_INGRESS
    } else {
        netlink::PARENT_EGRESS
    }
}

/// Attaches `prog` of `ebpf` to the target interface. With `existing`, the program is swapped
/// into that link or filter (the hook is never empty); otherwise a new tcx or XDP link is made
/// and pinned, or a cls_bpf filter is added (clsact).
///
/// Atomicity of a swap: a link gets `BPF_LINK_UPDATE`, which exchanges the program pointer of
/// the attached link. A clsact filter is replaced by `RTM_NEWTFILTER` without `NLM_F_CREATE`
/// for the same parent, priority and handle: cls_bpf's change operation builds the new filter
/// and puts it in place of the old one in the RCU-protected filter list (`list_replace_rcu`),
/// so a packet runs either the old or the new program, never none.
pub fn attach_program(
    endpoint: &str,
    ebpf: &mut aya::Ebpf,
    prog: &ManifestProgram,
    target: &Target<'_>,
    existing: Option<&Attachment>,
) -> Result<Attached, LoadError> {
    let ifname = target.ifname;
    let fail = |detail: String| LoadError::Attach {
        endpoint: endpoint.into(),
        program: prog.name.clone(),
        ifname: ifname.into(),
        detail,
    };
    let p = ebpf
        .program_mut(&prog.name)
        .ok_or_else(|| fail("program not in the object".into()))?;
    let done = |attachment, outcome| Attached {
        attachment,
        outcome,
        created_clsact: false,
    };
    match prog.hook {
        Hook::TcIngress | Hook::TcEgress => {
            let attach_type = tc_attach_type(prog.hook);
            let p: &mut SchedClassifier = p.try_into().map_err(|e| fail(error_chain(&e)))?;
            match existing {
                Some(Attachment::Link { pin }) => {
                    let pinned = PinnedLink::from_pin(target.pin_dir.join(pin))
                        .map_err(|e| fail(error_chain(&e)))?;
                    let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                        .map_err(|e| fail(error_chain(&e)))?;
                    let id = p.attach_to_link(link).map_err(|e| fail(error_chain(&e)))?;
                    // The pin keeps the link; our fd may go.
                    drop(p.take_link(id));
                    Ok(done(
                        Attachment::Link { pin: pin.clone() },
                        AttachOutcome::Swapped,
                    ))
                }
                Some(Attachment::Netlink {
                    priority, handle, ..
                }) => {
                    let prog_id =
                        replace_filter(p, ifname, attach_type, *priority, *handle).map_err(fail)?;
                    Ok(done(
                        Attachment::Netlink {
                            priority: *priority,
                            handle: *handle,
                            prog_id,
                        },
                        AttachOutcome::Swapped,
                    ))
                }
                None if target.tc == TcKind::Tcx => {
                    let opts = TcAttachOptions::TcxOrder(LinkOrder::default());
                    let id = p
                        .attach_with_options(ifname, attach_type, opts)
                        .map_err(|e| {
                            let hint = if tcx_supported() {
                                ""
                            } else {
                                " (tcx needs Linux >= 6.6: use --tc-attach clsact or auto)"
                            };
                            fail(format!("{}{hint}", error_chain(&e)))
                        })?;
                    let link = p.take_link(id).map_err(|e| fail(error_chain(&e)))?;
                    let fd = FdLink::try_from(link).map_err(|e| fail(error_chain(&e)))?;
                    fd.pin(target.pin_dir.join(target.pin_name))
                        .map_err(|e| fail(error_chain(&e)))?;
                    Ok(done(
                        Attachment::Link {
                            pin: target.pin_name.into(),
                        },
                        AttachOutcome::Attached,
                    ))
                }
                None => attach_clsact(p, prog, target).map_err(fail),
            }
        }
        Hook::Xdp => {
            let p: &mut Xdp = p.try_into().map_err(|e| fail(error_chain(&e)))?;
            match existing {
                Some(Attachment::Link { pin }) => {
                    let pinned = PinnedLink::from_pin(target.pin_dir.join(pin))
                        .map_err(|e| fail(error_chain(&e)))?;
                    let link = XdpLink::try_from(FdLink::from(pinned))
                        .map_err(|e| fail(error_chain(&e)))?;
                    let id = p.attach_to_link(link).map_err(|e| fail(error_chain(&e)))?;
                    drop(p.take_link(id));
                    Ok(done(
                        Attachment::Link { pin: pin.clone() },
                        AttachOutcome::Swapped,
                    ))
                }
                Some(Attachment::Netlink { .. }) => Err(fail("XDP attachments are links".into())),
                None => {
                    let id = p
                        .attach_to_if_index(target.ifindex, XdpMode::default())
                        .map_err(|e| fail(error_chain(&e)))?;
                    let link = p.take_link(id).map_err(|e| fail(error_chain(&e)))?;
                    let fd = FdLink::try_from(link).map_err(|e| {
                        fail(format!(
                            "the kernel gave no XDP link (netlink attachment), which cannot be \
                             pinned: {}",
                            error_chain(&e)
                        ))
                    })?;
                    fd.pin(target.pin_dir.join(target.pin_name))
                        .map_err(|e| fail(error_chain(&e)))?;
                    Ok(done(
                        Attachment::Link {
                            pin: target.pin_name.into(),
                        },
                        AttachOutcome::Attached,
                    ))
                }
            }
        }
    }
}

/// Replaces the program of the filter at `priority`/`handle` (see [`attach_program`] for why
/// this is atomic). Returns the new program's id.
fn replace_filter(
    p: &mut SchedClassifier,
    ifname: &str,
    attach_type: TcAttachType,
    priority: u16,
    handle: u32,
) -> Result<u32, String> {
    let link = SchedClassifierLink::attached(
        ifname,
        attach_type,
        priority,
        tc::TcHandle::from(handle),
        None,
    )
    .map_err(|e| e.to_string())?;
    let id = p.attach_to_link(link).map_err(|e| error_chain(&e))?;
    // Dropping the wrapper would delete the filter: it belongs to the agent's state now.
    std::mem::forget(p.take_link(id));
    p.info().map(|i| i.id()).map_err(|e| error_chain(&e))
}

/// A new cls_bpf filter (direct action) on the clsact qdisc of the target, creating the qdisc
/// when there is none. A filter already at the agent's priority and handle is taken over when
/// it carries this program's name (left by an agent killed before it saved its state) and
/// refused otherwise.
fn attach_clsact(
    p: &mut SchedClassifier,
    prog: &ManifestProgram,
    target: &Target<'_>,
) -> Result<Attached, String> {
    let attach_type = tc_attach_type(prog.hook);
    let created_clsact =
        netlink::add_clsact(target.ifindex).map_err(|e| format!("adding a clsact qdisc: {e}"))?;
    let occupant = netlink::filters(target.ifindex, clsact_parent(prog.hook))
        .map_err(|e| format!("listing tc filters: {e}"))?
        .into_iter()
        .find(|f| f.priority == CLSACT_PRIORITY && f.handle == CLSACT_HANDLE);
    let (prog_id, outcome) = match occupant {
        Some(f) if f.kind == "bpf" && f.bpf_name.as_deref() == Some(prog.name.as_str()) => (
            replace_filter(
                p,
                target.ifname,
                attach_type,
                CLSACT_PRIORITY,
                CLSACT_HANDLE,
            )?,
            AttachOutcome::Swapped,
        ),
        Some(f) => {
            return Err(format!(
                "a {} filter {:?} of another owner occupies priority {CLSACT_PRIORITY} handle \
                 {CLSACT_HANDLE:#x}",
                f.kind,
                f.bpf_name.unwrap_or_default()
            ));
        }
        None => {
            let opts = TcAttachOptions::Netlink(tc::NlOptions {
                priority: CLSACT_PRIORITY,
                handle: tc::TcHandle::from(CLSACT_HANDLE),
                ..Default::default()
            });
            let id = p
                .attach_with_options(target.ifname, attach_type, opts)
                .map_err(|e| error_chain(&e))?;
            let link = p.take_link(id).map_err(|e| error_chain(&e))?;
            // Dropping the wrapper would delete the filter.
            std::mem::forget(link);
            (
                p.info().map(|i| i.id()).map_err(|e| error_chain(&e))?,
                AttachOutcome::Attached,
            )
        }
    };
    Ok(Attached {
        attachment: Attachment::Netlink {
            priority: CLSACT_PRIORITY,
            handle: CLSACT_HANDLE,
            prog_id,
        },
        outcome,
        created_clsact,
    })
}

/// Whether an attachment is still in place: the pinned link exists, or the filter is on the
/// hook and runs the program the agent put there.
pub fn attachment_alive(a: &Attachment, ifindex: u32, hook: Hook, pin_dir: &Path) -> bool {
    match a {
        Attachment::Link { pin } => PinnedLink::from_pin(pin_dir.join(pin))
            .ok()
            .and_then(|p| FdLink::from(p).info().ok())
            .is_some(),
        Attachment::Netlink {
            priority,
            handle,
            prog_id,
        } => netlink::filters(ifindex, clsact_parent(hook))
            .map(|fs| {
                fs.iter().any(|f| {
                    f.priority == *priority
                        && f.handle == *handle
                        && f.kind == "bpf"
                        && f.prog_id == Some(*prog_id)
                })
            })
            .unwrap_or(false),
    }
}

/// Removes one attachment: the pin goes, and with it (no fd left) the link and its hook entry;
/// a filter is deleted by interface index (the interface's name is not needed).
pub fn detach(
    attachment: &Attachment,
    ifindex: u32,
    hook: Hook,
    pin_dir: &Path,
) -> std::io::Result<()> {
    match attachment {
        Attachment::Link { pin } => match PinnedLink::from_pin(pin_dir.join(pin)) {
            Ok(p) => p.unpin().map(drop),
            Err(_) => match std::fs::remove_file(pin_dir.join(pin)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            },
        },
        Attachment::Netlink {
            priority, handle, ..
        } => netlink::delete_filter(ifindex, clsact_parent(hook), *priority, *handle),
    }
}

/// tcx links exist from Linux 6.6 (aya makes the same decision).
pub fn tcx_supported() -> bool {
    aya::util::KernelVersion::current()
        .map(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_ring::{RING_STRIDE, SLOT_BYTES};

    fn rings(max_entries: u32) -> ManifestMap {
        ManifestMap {
            name: "ciliumc_events".into(),
            map_type: "array".into(),
            key_size: 4,
            value_size: SLOT_BYTES as u32,
            max_entries,
            flags: 1024,
            pinning: "by_name".into(),
            entries: vec![],
        }
    }

    #[test]
    fn event_rings_grow_to_the_machines_cpus_and_never_shrink() {
        let stride = RING_STRIDE as u32;
        let declared = rings(64 * stride);
        assert_eq!(event_ring_entries(&declared, 2), Some(64 * stride));
        assert_eq!(event_ring_entries(&declared, 64), Some(64 * stride));
        assert_eq!(event_ring_entries(&declared, 96), Some(96 * stride));
        // Not whole rings of ciliumc's slots: left as declared.
        assert_eq!(event_ring_entries(&rings(64 * stride + 1), 96), None);
        let mut other = rings(64 * stride);
        other.value_size = 64;
        assert_eq!(event_ring_entries(&other, 96), None);
    }

    #[test]
    fn only_the_event_rings_change_size() {
        let mut ct = rings(65_536);
        ct.name = "ciliumc_ct".into();
        ct.map_type = "lru_hash".into();
        let maps = vec![rings(64 * RING_STRIDE as u32), ct.clone()];
        let effective = effective_maps(&maps);
        assert_eq!(effective[1], ct);
        let cpus = aya::util::nr_cpus().unwrap_or(1) as u32;
        assert_eq!(
            effective[0].max_entries,
            (64.max(cpus)) * RING_STRIDE as u32
        );
    }
}
