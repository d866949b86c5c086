//! `ciliumc compile PATH... -o DIR [--node NODE]`: manifest.json + bpf/*.o, written atomically.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ciliumc_compiler::compile;
use ciliumc_compiler::resolve::{self, ResolveOptions};

use crate::input::{self, DiagFormat};

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output directory (replaced as a whole).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// The node compiled for: its Node object gets the host identity, the others remote-node.
    #[arg(long)]
    node: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    format: DiagFormat,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = input::load(&args.paths, false);
    input::report(&loaded, args.format);
    if loaded.has_errors() {
        return Ok(ExitCode::from(1));
    }
    let opts = ResolveOptions {
        local_node: args.node.clone(),
        ..ResolveOptions::default()
    };
    let cluster = input::with_progress("resolving", || resolve::resolve(&loaded.objects, &opts))?;
    for w in &cluster.warnings {
        eprintln!("warning: {}: {}", w.object, w.message);
    }
    let digest = input::inputs_digest(&loaded)?;
    let out = input::with_progress("compiling", || compile::compile(&cluster, &digest))?;
    compile::write_output_dir(&out, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let insns: usize = out
        .objects
        .iter()
        .flat_map(|o| &o.stats)
        .map(|s| s.insns)
        .sum();
    eprintln!(
        "compiled {} endpoint(s), {} program(s), {} instructions into {}",
        out.objects.len(),
        out.objects.len() * 2,
        insns,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
