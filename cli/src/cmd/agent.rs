//! `ciliumc agent --state DIR [--interfaces FILE] [--watch DIR] [--flows N] [--cleanup]`: the
//! node daemon (see `docs/agent.md`). `--cleanup` removes everything the agent owns and exits.

use std::path::PathBuf;
use std::process::ExitCode;

use ciliumc_runtime::agent::daemon::{AgentConfig, run_blocking};
use ciliumc_runtime::agent::{Datapath, StatePaths};

#[derive(clap::Args)]
pub struct Args {
    /// State directory: socket, state file, copy of the running output, and (unless --bpffs)
    /// the agent's own bpf filesystem mount.
    #[arg(long)]
    state: PathBuf,
    /// `namespace/pod: ifname` lines: the host-side interface of each endpoint.
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
    /// Remove all links, pins, the mount and state the agent owns, then exit.
    #[arg(long)]
    cleanup: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let state = std::path::absolute(&args.state)?;
    let paths = StatePaths::new(&state, args.bpffs.as_deref());
    if args.cleanup {
        let r = Datapath::cleanup(&paths)?;
        println!(
            "removed {} link(s) and {} map pin(s) under {}",
            r.links,
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
    };
    run_blocking(cfg)?;
    Ok(ExitCode::SUCCESS)
}
