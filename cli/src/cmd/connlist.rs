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
    /// Execute the compiled programs in the kernel for one packet per (pair, protocol, port
    /// interval) and fail on any disagreement with the reference evaluator.
    #[arg(long)]
    verify_bytecode: bool,
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
    if args.verify_bytecode {
        let report = input::with_progress("executing programs", || {
            super::verify::verify_bytecode(&cluster)
        })?;
        for d in &report.disagreements {
            eprintln!("disagreement: {d}");
        }
        eprintln!(
            "verify-bytecode: {} packet(s) executed in the kernel, {} disagreement(s) with the reference evaluator",
            report.packets,
            report.disagreements.len()
        );
        if !report.disagreements.is_empty() {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}
