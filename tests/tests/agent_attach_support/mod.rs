//! Pieces shared by the `agent_attach_*` tests on top of `agent_support`: an agent started with
//! any options (e.g. `--tc-attach clsact`, no interfaces file) whose guard runs `--cleanup` in
//! the node's network namespace (tc filters are found by interface index there), and `tc`/`ip`
//! queries of the node namespace.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::agent_support::{agent_log, ciliumc, ciliumc_bin, kill_child, run, wait_for_socket};

/// A running `ciliumc agent` in `node`'s network namespace. Drop kills it and runs `--cleanup`
/// in the same namespace.
pub struct NodeAgent {
    pub child: Option<Child>,
    pub state: PathBuf,
    pub node: String,
    pub args: Vec<String>,
}

impl NodeAgent {
    pub fn start(node: &str, state: &Path, args: &[&str]) -> NodeAgent {
        let mut a = NodeAgent {
            child: None,
            state: state.into(),
            node: node.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        a.spawn();
        a
    }

    fn in_node(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.node))
            .arg(ciliumc_bin());
        c
    }

    pub fn spawn(&mut self) {
        let sock = self.state.join("agent.sock");
        let _ = std::fs::remove_file(&sock);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.state.with_extension("log"))
            .unwrap();
        let child = self
            .in_node()
            .args(["agent", "--state"])
            .arg(&self.state)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .env("CILIUMC_LOG", "info")
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_socket(&sock, Duration::from_secs(15), || self.log());
    }

    /// The agent's stderr (all runs), without terminal colour codes.
    pub fn log(&self) -> String {
        agent_log(&self.state)
    }

    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    /// `ciliumc apply OUT --json`, parsed; panics with the agent's log when refused.
    pub fn apply_ok(&self, out: &Path) -> serde_json::Value {
        let r = self.apply(out);
        assert!(
            r.status.success(),
            "apply {}: {}\n{}",
            out.display(),
            String::from_utf8_lossy(&r.stderr),
            self.log()
        );
        serde_json::from_slice(&r.stdout).unwrap()
    }

    pub fn apply(&self, out: &Path) -> Output {
        ciliumc(&[
            "apply",
            &out.display().to_string(),
            "--state",
            &self.state.display().to_string(),
            "--json",
        ])
    }

    /// `ciliumc agent --cleanup` in the node namespace (the agent must be stopped).
    pub fn cleanup(&mut self) -> Output {
        self.kill9();
        run(self
            .in_node()
            .args(["agent", "--cleanup", "--state"])
            .arg(&self.state))
    }

    pub fn state_json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.state.join("state.json")).unwrap()).unwrap()
    }

    /// Pin names under the agent's `links/` directory.
    pub fn link_pins(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.state.join("bpffs/links"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.cleanup();
    }
}

/// A filter as `tc -j filter show` prints it (chain headers left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub pref: u64,
    pub kind: String,
    pub handle: String,
    pub name: String,
    pub prog_id: u64,
}

/// Filters on `dev`'s clsact hook `dir` (`ingress`/`egress`) in namespace `ns`.
pub fn tc_filters(ns: &str, dev: &str, dir: &str) -> Vec<Filter> {
    let out = run(Command::new("tc").args(["-n", ns, "-j", "filter", "show", "dev", dev, dir]));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    j.as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["options"].is_object())
        .map(|f| Filter {
            pref: f["pref"].as_u64().unwrap_or(0),
            kind: f["kind"].as_str().unwrap_or_default().to_string(),
            handle: f["options"]["handle"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            name: f["options"]["bpf_name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            prog_id: f["options"]["prog"]["id"].as_u64().unwrap_or(0),
        })
        .collect()
}

/// Whether `dev` in `ns` has a clsact qdisc.
pub fn has_clsact(ns: &str, dev: &str) -> bool {
    let out = run(Command::new("tc").args(["-n", ns, "-j", "qdisc", "show", "dev", dev]));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    j.as_array()
        .into_iter()
        .flatten()
        .any(|q| q["kind"] == "clsact")
}

/// Runs `tc` in `ns`, asserting success.
pub fn tc(ns: &str, args: &[&str]) {
    let out = run(Command::new("tc").arg("-n").arg(ns).args(args));
    assert!(
        out.status.success(),
        "tc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Ids of the programs the kernel has loaded.
pub fn prog_ids() -> Vec<u64> {
    crate::agent_support::kernel_ids("prog")
}

/// Copies `testdata/demo` to `dest`, adding `ciliumc.io/interface` annotations to the pods
/// named in `annotate` (`pod` → interface).
pub fn demo_with_annotations(dest: &Path, annotate: &[(&str, &str)]) {
    let src = crate::agent_support::demo_dir();
    std::fs::create_dir_all(dest).unwrap();
    let mut inv = std::fs::read_to_string(src.join("inventory.yaml")).unwrap();
    for (pod, ifname) in annotate {
        let at = format!("  name: {pod}\n  namespace: default\n");
        assert!(inv.contains(&at), "pod {pod} not in the demo inventory");
        inv = inv.replace(
            &at,
            &format!("{at}  annotations:\n    ciliumc.io/interface: {ifname}\n"),
        );
    }
    std::fs::write(dest.join("inventory.yaml"), inv).unwrap();
    std::fs::copy(src.join("policy.yaml"), dest.join("policy.yaml")).unwrap();
}

/// `Udp: RcvbufErrors` of namespace `ns`: datagrams the kernel dropped because a socket's
/// receive buffer was full (a slow receiver on a loaded machine, not the datapath).
pub fn udp_rcvbuf_errors(ns: &str) -> u64 {
    let out = run(Command::new("ip").args(["netns", "exec", ns, "cat", "/proc/net/snmp"]));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Packets `dev` in `ns` dropped on receive or transmit (backlog or queue full).
pub fn link_drops(ns: &str, dev: &str) -> u64 {
    let out = run(Command::new("ip").args(["-n", ns, "-j", "-s", "link", "show", "dev", dev]));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let s = &j[0]["stats64"];
    s["rx"]["dropped"].as_u64().unwrap_or(0) + s["tx"]["dropped"].as_u64().unwrap_or(0)
}

/// Kernel drop counters along a stream `client pod → node → server pod`, for telling a loaded
/// machine's socket-buffer and backlog drops from drops by the programs under test.
pub struct PathDrops {
    pub points: Vec<(String, String)>,
    pub server_ns: String,
}

impl PathDrops {
    pub fn total(&self) -> u64 {
        udp_rcvbuf_errors(&self.server_ns)
            + self
                .points
                .iter()
                .map(|(ns, dev)| link_drops(ns, dev))
                .sum::<u64>()
    }
}

/// Flows in `observe -o json` (all kept) matching `filter` args.
pub fn observe(state: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let state = state.display().to_string();
    let mut args = vec!["observe", "--state", &state, "-o", "json", "--last", "4095"];
    args.extend_from_slice(extra);
    let out = ciliumc(&args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
