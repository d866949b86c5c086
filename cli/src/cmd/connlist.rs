//! `ciliumc connlist PATH...`: every allowed connection, from the policy IR.

use std::path::PathBuf;
use std::process::ExitCode;

use ciliumc_compiler::connlist::{self, ConnlistOptions, Format};
use ciliumc_compiler::resolve::{self, ResolveOptions};

use crate::input::{self, DiagFormat};

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// txt, json or netpol-analyzer (np-guard's `src => dst : conns` lines).
    #[arg(long, default_value = "txt")]
    format: Format,
    /// Also list IPv6 external ranges.
    #[arg(long)]
    ipv6: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = input::load(&args.paths, false);
    input::report(&loaded, DiagFormat::Text);
    if loaded.has_errors() {
        return Ok(ExitCode::from(1));
    }
    let cluster = input::with_progress("resolving", || {
        resolve::resolve(&loaded.objects, &ResolveOptions::default())
    })?;
    for w in &cluster.warnings {
        eprintln!("warning: {}: {}", w.object, w.message);
    }
    let conns = connlist::connections(&cluster, &ConnlistOptions { ipv6: args.ipv6 });
    print!("{}", connlist::render(&conns, args.format));
    Ok(ExitCode::SUCCESS)
}
