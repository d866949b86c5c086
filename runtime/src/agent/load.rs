//! The kernel side of one endpoint: load its object against the pinned shared maps, fill its own
//! maps and prog-array slots, then attach each entry program (new tcx/XDP link, pinned) or swap
//! it into the existing link (`BPF_LINK_UPDATE`, atomic per packet).
//!
//! In: object bytes, the manifest, pin paths. Out: a loaded `aya::Ebpf`, [`Attachment`]s, or
//! [`LoadError`] (with the verifier log when the kernel refused a program).

use std::path::Path;

use aya::maps::{Map, MapData, ProgramArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{self, SchedClassifierLink, TcAttachOptions};
use aya::programs::xdp::XdpLink;
use aya::programs::{LinkOrder, Program, SchedClassifier, TcAttachType, Xdp, XdpMode};
use ciliumc_ir::manifest::{Hook, Manifest, ManifestProgram};

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
    /// A new link was created on the hook.
    Attached,
    /// The program replaced the previous one in its link.
    Swapped,
}

/// Attaches `prog` of `ebpf` to `ifname`. With `existing`, the program is swapped into that link
/// (the hook is never empty); otherwise a new link is made and pinned at `pin_dir/pin_name`.
pub fn attach_program(
    endpoint: &str,
    ebpf: &mut aya::Ebpf,
    prog: &ManifestProgram,
    ifname: &str,
    existing: Option<&Attachment>,
    pin_dir: &Path,
    pin_name: &str,
) -> Result<(Attachment, AttachOutcome), LoadError> {
    let fail = |detail: String| LoadError::Attach {
        endpoint: endpoint.into(),
        program: prog.name.clone(),
        ifname: ifname.into(),
        detail,
    };
    let p = ebpf
        .program_mut(&prog.name)
        .ok_or_else(|| fail("program not in the object".into()))?;
    match prog.hook {
        Hook::TcIngress | Hook::TcEgress => {
            let attach_type = if prog.hook == Hook::TcIngress {
                TcAttachType::Ingress
            } else {
                TcAttachType::Egress
            };
            let p: &mut SchedClassifier = p.try_into().map_err(|e| fail(error_chain(&e)))?;
            match existing {
                Some(Attachment::Link { pin }) => {
                    let pinned = PinnedLink::from_pin(pin_dir.join(pin))
                        .map_err(|e| fail(error_chain(&e)))?;
                    let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                        .map_err(|e| fail(error_chain(&e)))?;
                    let id = p.attach_to_link(link).map_err(|e| fail(error_chain(&e)))?;
                    // The pin keeps the link; our fd may go.
                    drop(p.take_link(id));
                    Ok((
                        Attachment::Link { pin: pin.clone() },
                        AttachOutcome::Swapped,
                    ))
                }
                Some(Attachment::Netlink { priority, handle }) => {
                    let link = SchedClassifierLink::attached(
                        ifname,
                        attach_type,
                        *priority,
                        tc::TcHandle::from(*handle),
                        None,
                    )
                    .map_err(|e| fail(e.to_string()))?;
                    let id = p.attach_to_link(link).map_err(|e| fail(error_chain(&e)))?;
                    std::mem::forget(p.take_link(id));
                    Ok((
                        Attachment::Netlink {
                            priority: *priority,
                            handle: *handle,
                        },
                        AttachOutcome::Swapped,
                    ))
                }
                None => {
                    let tcx = tcx_supported();
                    if !tcx {
                        // EEXIST when the qdisc is there already is fine.
                        let _ = tc::qdisc_add_clsact(ifname);
                    }
                    let opts = if tcx {
                        TcAttachOptions::TcxOrder(LinkOrder::default())
                    } else {
                        TcAttachOptions::Netlink(tc::NlOptions::default())
                    };
                    let id = p
                        .attach_with_options(ifname, attach_type, opts)
                        .map_err(|e| fail(error_chain(&e)))?;
                    let link = p.take_link(id).map_err(|e| fail(error_chain(&e)))?;
                    if tcx {
                        let fd = FdLink::try_from(link).map_err(|e| fail(error_chain(&e)))?;
                        fd.pin(pin_dir.join(pin_name))
                            .map_err(|e| fail(error_chain(&e)))?;
                        Ok((
                            Attachment::Link {
                                pin: pin_name.into(),
                            },
                            AttachOutcome::Attached,
                        ))
                    } else {
                        let priority = link.priority().map_err(|e| fail(error_chain(&e)))?;
                        let handle: u32 = link.handle().map_err(|e| fail(error_chain(&e)))?.into();
                        // Dropping the wrapper would remove the filter.
                        std::mem::forget(link);
                        Ok((
                            Attachment::Netlink { priority, handle },
                            AttachOutcome::Attached,
                        ))
                    }
                }
            }
        }
        Hook::Xdp => {
            let p: &mut Xdp = p.try_into().map_err(|e| fail(error_chain(&e)))?;
            match existing {
                Some(Attachment::Link { pin }) => {
                    let pinned = PinnedLink::from_pin(pin_dir.join(pin))
                        .map_err(|e| fail(error_chain(&e)))?;
                    let link = XdpLink::try_from(FdLink::from(pinned))
                        .map_err(|e| fail(error_chain(&e)))?;
                    let id = p.attach_to_link(link).map_err(|e| fail(error_chain(&e)))?;
                    drop(p.take_link(id));
                    Ok((
                        Attachment::Link { pin: pin.clone() },
                        AttachOutcome::Swapped,
                    ))
                }
                Some(Attachment::Netlink { .. }) => Err(fail("XDP attachments are links".into())),
                None => {
                    let id = p
                        .attach(ifname, XdpMode::default())
                        .map_err(|e| fail(error_chain(&e)))?;
                    let link = p.take_link(id).map_err(|e| fail(error_chain(&e)))?;
                    let fd = FdLink::try_from(link).map_err(|e| fail(error_chain(&e)))?;
                    fd.pin(pin_dir.join(pin_name))
                        .map_err(|e| fail(error_chain(&e)))?;
                    Ok((
                        Attachment::Link {
                            pin: pin_name.into(),
                        },
                        AttachOutcome::Attached,
                    ))
                }
            }
        }
    }
}

/// Removes one attachment: the pin goes, and with it (no fd left) the link and its hook entry.
pub fn detach(
    attachment: &Attachment,
    ifname: &str,
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
        Attachment::Netlink { priority, handle } => {
            let attach_type = if hook == Hook::TcIngress {
                TcAttachType::Ingress
            } else {
                TcAttachType::Egress
            };
            // The wrapper detaches the filter when dropped.
            SchedClassifierLink::attached(ifname, attach_type, *priority, (*handle).into(), None)
                .map(drop)
                .map_err(std::io::Error::other)
        }
    }
}

/// tcx links exist from Linux 6.6 (aya makes the same decision).
pub fn tcx_supported() -> bool {
    aya::util::KernelVersion::current()
        .map(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
        .unwrap_or(false)
}
