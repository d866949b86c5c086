//! The system's own loaders, as a user would run them: `bpftool prog loadall` (libbpf),
//! `tc filter add ... bpf da obj` and `ip link set ... xdpgeneric obj` (iproute2).
//!
//! In: an object file path (and a section). Out: `Ok(())` or `Err(stderr)`. Each check runs in a
//! private bpffs mount or a network namespace with a dummy device that it creates under a unique
//! name and always removes, also on failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, short enough for netns and mount paths.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command; `Err` holds its stderr (or why it could not start).
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// A bpffs mounted on a fresh temporary directory; unmounted and removed on drop.
pub struct BpffsMount {
    pub path: PathBuf,
}

impl BpffsMount {
    pub fn new() -> Result<BpffsMount, String> {
        let path = std::env::temp_dir().join(unique_name("ciliumc-bpffs-"));
        std::fs::create_dir(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        let text = path.to_string_lossy().into_owned();
        if let Err(e) = run("mount", &["-t", "bpf", "bpf", &text]) {
            let _ = std::fs::remove_dir(&path);
            return Err(e);
        }
        Ok(BpffsMount { path })
    }
}

impl Drop for BpffsMount {
    fn drop(&mut self) {
        let text = self.path.to_string_lossy().into_owned();
        if let Err(e) = run("umount", &[&text]) {
            eprintln!("cleanup: {e}");
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A network namespace with a veth pair (`dev` and its peer `peer`), both up, and a clsact qdisc on
/// `dev`; deleted on drop (which removes the devices and their filters). veth rather than dummy
/// because not every kernel has the dummy driver.
pub struct TestNetns {
    pub name: String,
    pub dev: String,
    pub peer: String,
}

impl TestNetns {
    pub fn new() -> Result<TestNetns, String> {
        let name = unique_name("ciliumc-t");
        run("ip", &["netns", "add", &name])?;
        // From here on, Drop removes the namespace whatever fails next.
        let ns = TestNetns {
            name,
            dev: "ct0".to_owned(),
            peer: "ct1".to_owned(),
        };
        ns.ip(&[
            "link", "add", &ns.dev, "type", "veth", "peer", "name", &ns.peer,
        ])?;
        ns.ip(&["link", "set", &ns.dev, "up"])?;
        ns.ip(&["link", "set", &ns.peer, "up"])?;
        run(
            "tc",
            &["-n", &ns.name, "qdisc", "add", "dev", &ns.dev, "clsact"],
        )?;
        Ok(ns)
    }

    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    pub fn tc(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("tc", &all)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

fn path_str(path: &Path) -> Result<String, String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("path {} is not UTF-8", path.display()))
}

/// Mounts a fresh bpffs on /sys/fs/bpf, then runs `command` ("$1", "$2", ... are `args`). Meant to
/// run inside a private mount namespace, where the mount (and every pin in it) vanishes when the
/// command exits; libbpf pins `pinning = by name` maps under /sys/fs/bpf (tc: /sys/fs/bpf/tc/globals),
/// so objects with pinned maps load without touching the host's bpffs.
const WITH_PRIVATE_BPFFS: &str = "mount -t bpf bpf /sys/fs/bpf && exec \"$0\" \"$@\"";

/// `bpftool prog loadall FILE /sys/fs/bpf/progs` in a private mount namespace with its own bpffs:
/// libbpf opens, relocates and loads every program of the object (and pins maps marked
/// `pinning = by name`); everything is released when the namespace goes.
pub fn bpftool_loadall(path: &Path) -> Result<(), String> {
    let file = path_str(path)?;
    run(
        "unshare",
        &[
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            WITH_PRIVATE_BPFFS,
            "bpftool",
            "prog",
            "loadall",
            &file,
            "/sys/fs/bpf/progs",
        ],
    )
    .map(drop)
}

/// `tc filter add dev D ingress bpf da obj FILE sec SECTION` on a veth device in a fresh netns
/// (run through `ip netns exec`, whose private mount namespace gets its own bpffs for pinned maps).
pub fn tc_attach_check(path: &Path, section: &str) -> Result<(), String> {
    let ns = TestNetns::new()?;
    let file = path_str(path)?;
    run(
        "ip",
        &[
            "netns",
            "exec",
            &ns.name,
            "sh",
            "-c",
            WITH_PRIVATE_BPFFS,
            "tc",
            "filter",
            "add",
            "dev",
            &ns.dev,
            "ingress",
            "bpf",
            "da",
            "obj",
            &file,
            "sec",
            section,
        ],
    )?;
    let shown = ns.tc(&["filter", "show", "dev", &ns.dev, "ingress"])?;
    if shown.contains("bpf") {
        Ok(())
    } else {
        Err(format!("filter not listed after attach:\n{shown}"))
    }
}

/// `ip link set dev D xdpgeneric obj FILE sec SECTION` on a veth device in a fresh netns (with a
/// private bpffs, as for tc).
pub fn xdp_attach_check(path: &Path, section: &str) -> Result<(), String> {
    let ns = TestNetns::new()?;
    let file = path_str(path)?;
    run(
        "ip",
        &[
            "netns",
            "exec",
            &ns.name,
            "sh",
            "-c",
            WITH_PRIVATE_BPFFS,
            "ip",
            "link",
            "set",
            "dev",
            &ns.dev,
            "xdpgeneric",
            "obj",
            &file,
            "sec",
            section,
        ],
    )?;
    let shown = ns.ip(&["link", "show", "dev", &ns.dev])?;
    if shown.contains("xdp") {
        Ok(())
    } else {
        Err(format!("no XDP program after attach:\n{shown}"))
    }
}

/// A temporary file holding `bytes`, removed on drop.
pub struct TempObject {
    pub path: PathBuf,
}

impl TempObject {
    pub fn new(bytes: &[u8]) -> std::io::Result<TempObject> {
        let path = std::env::temp_dir().join(format!("{}.o", unique_name("ciliumc-obj-")));
        std::fs::write(&path, bytes)?;
        Ok(TempObject { path })
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
