//! What the agent owns, persisted next to its pins so that a restarted agent (or `--cleanup`)
//! knows it: the state directory layout and `state.json`.
//!
//! In: `--state DIR` (and optionally an explicit pin root). Out: [`StatePaths`], [`AgentState`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ciliumc_ir::manifest::Hook;
use serde::{Deserialize, Serialize};

/// Every path the agent writes. Nothing outside these is created or removed.
#[derive(Debug, Clone)]
pub struct StatePaths {
    pub root: PathBuf,
    /// A bpf filesystem: mounted by the agent at `root/bpffs` unless configured.
    pub pin_root: PathBuf,
    /// Whether `pin_root` is the agent's own mount (unmounted by `--cleanup`).
    pub own_mount: bool,
    pub maps: PathBuf,
    pub links: PathBuf,
    pub state_file: PathBuf,
    /// Copy of the last applied compile output.
    pub current: PathBuf,
    pub socket: PathBuf,
}

impl StatePaths {
    /// `pin_root`: an explicitly configured directory on a bpf filesystem (e.g. under
    /// /sys/fs/bpf); by default the agent mounts its own at `root/bpffs`.
    pub fn new(root: &Path, pin_root: Option<&Path>) -> StatePaths {
        let (pins, own_mount) = match pin_root {
            Some(p) => (p.to_path_buf(), false),
            None => (root.join("bpffs"), true),
        };
        StatePaths {
            root: root.to_path_buf(),
            maps: pins.join("maps"),
            links: pins.join("links"),
            pin_root: pins,
            own_mount,
            state_file: root.join("state.json"),
            current: root.join("current"),
            socket: root.join("agent.sock"),
        }
    }
}

/// How a program is attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Attachment {
    /// A bpf_link (tcx or XDP) pinned at `links/<pin>`.
    Link { pin: String },
    /// A cls_bpf filter on a clsact qdisc (kernels before 6.6, or `--tc-attach clsact`): not
    /// pinnable, found again by hook, priority and handle; `prog_id` is the program it ran when
    /// the agent last wrote it (a filter running another program is not adopted).
    Netlink {
        priority: u16,
        handle: u32,
        #[serde(default)]
        prog_id: u32,
    },
}

impl Attachment {
    /// Whether both name the same hook slot (the same pin, or the same filter whatever program
    /// it runs): swapping a program keeps the slot.
    pub fn same_slot(&self, other: &Attachment) -> bool {
        match (self, other) {
            (Attachment::Link { pin: a }, Attachment::Link { pin: b }) => a == b,
            (
                Attachment::Netlink {
                    priority: pa,
                    handle: ha,
                    ..
                },
                Attachment::Netlink {
                    priority: pb,
                    handle: hb,
                    ..
                },
            ) => pa == pb && ha == hb,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramState {
    pub program: String,
    pub hook: Hook,
    pub attachment: Attachment,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    pub fingerprint: String,
    pub ifname: String,
    pub ifindex: u32,
    pub programs: Vec<ProgramState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub generation: u64,
    pub endpoints: BTreeMap<String, EndpointState>,
    /// Interfaces (name → index) on which the agent created the clsact qdisc: removed again
    /// when the agent's last filter there goes, unless other filters use it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clsact_qdiscs: BTreeMap<String, u32>,
}

impl AgentState {
    pub fn load(path: &Path) -> std::io::Result<AgentState> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AgentState::default()),
            Err(e) => Err(e),
        }
    }

    /// Written to a temporary file and renamed, so a kill leaves the old or the new state.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }

    pub fn program_count(&self) -> usize {
        self.endpoints.values().map(|e| e.programs.len()).sum()
    }
}

/// The pin file name of one endpoint program: `ns_pod_program_hook`, restricted to bpffs-safe
/// characters.
pub fn link_pin_name(endpoint: &str, program: &str, hook: Hook) -> String {
    let hook = match hook {
        Hook::TcIngress => "tci",
        Hook::TcEgress => "tce",
        Hook::Xdp => "xdp",
    };
    format!("{endpoint}_{program}_{hook}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
