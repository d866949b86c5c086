//! `ciliumc agent --state DIR [--interfaces FILE] [--watch DIR] [--flows N] [--tc-attach MODE]
//! [--cleanup]`: the node daemon (see `docs/agent.md`). `--cleanup` removes everything the agent
//! owns and exits.

use std::path::PathBuf;
use std::process::ExitCode;

use ciliumc_runtime::agent::daemon::{AgentConfig, run_blocking};
use ciliumc_runtime::agent::{Datapath, StatePaths, TcAttach};

#[derive(clap::Args)]
pub struct Args {
    /// State directory: socket, state file, copy of the running output, and (unless --bpffs)
    /// the agent's own bpf filesystem mount.
    #[arg(long)]
    state: PathBuf,
    /// `namespace/pod: ifname` lines: the host-side interface of each endpoint (takes
    /// precedence over the manifest's `interface`, i.e. the `ciliumc.io/interface` annotation).
    #[arg(long)]
    interfaces: Option<PathBuf>,
    /// Apply this compile output directory whenever its manifest changes.
    #[arg(long)]
    watch: Option<PathBuf>,
    /// Flows kept in memory.
    #[arg(long, default_value_t = 4095)]
    flows: usize,
    /// Pin under this directory of an existing bpf filesystem instead of mounting one in --state.
    #[arg(long)]
    bpffs: Option<PathBuf>,
    /// How tc programs are attached: `tcx` links (Linux >= 6.6), `clsact` qdisc + cls_bpf
    /// filters (netlink), or `auto` (tcx where available). Existing attachments keep their kind.
    #[arg(long, default_value_t = TcAttach::Auto)]
    tc_attach: TcAttach,
    /// Remove all links, filters, pins, the mount and state the agent owns, then exit (run it in
    /// the agent's network namespace).
    #[arg(long)]
    cleanup: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let state = std::path::absolute(&args.state)?;
    let paths = StatePaths::new(&state, args.bpffs.as_deref());
    if args.cleanup {
        let r = Datapath::cleanup(&paths)?;
        println!(
            "removed {} link(s), {} tc filter(s), {} clsact qdisc(s) and {} map pin(s) of {}",
            r.links,
            r.filters,
            r.qdiscs,
            r.maps,
            state.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = AgentConfig {
        paths,
        interfaces: args.interfaces.map(std::path::absolute).transpose()?,
        watch: args.watch.map(std::path::absolute).transpose()?,
        flows: args.flows,
        tc_attach: args.tc_attach,
    };
    run_blocking(cfg)?;
    Ok(ExitCode::SUCCESS)
}
