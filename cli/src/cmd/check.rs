//! `ciliumc check PATH...`: parse and validate; exit 0 when clean (warnings allowed), 1 on errors.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::input::{self, DiagFormat};

#[derive(clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for .yaml, .yml, .json).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Diagnostics as rustc-like text or as JSON for machines.
    #[arg(long, value_enum, default_value_t)]
    format: DiagFormat,
    /// Unknown kinds are errors instead of warnings.
    #[arg(long)]
    strict: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let result = input::load(&args.paths, args.strict);
    input::report(&result, args.format);
    if args.format == DiagFormat::Text && !result.has_errors() {
        eprintln!("checked {} object(s): ok", result.objects.len());
    }
    Ok(if result.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
