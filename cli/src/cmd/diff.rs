//! `ciliumc diff OLD NEW`: what changes for whom between two versions of the inputs (or of two
//! compile outputs). Exit 0: no semantic change; 1: changes; 2: error (input diagnostics are
//! printed as `ciliumc check` prints them).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use ciliumc_compiler::diff::{self, DiffOptions, Format, Side};
use ciliumc_compiler::frontend::LoadResult;
use ciliumc_compiler::resolve::ResolveOptions;

use crate::input::{self, DiagFormat};

#[derive(clap::Args)]
pub struct Args {
    /// OLD and NEW: input files or directories, or two `ciliumc compile` output directories
    /// (directories holding manifest.json).
    #[arg(value_name = "OLD NEW", num_args = 0..=2)]
    paths: Vec<PathBuf>,
    /// More OLD input paths (repeatable; with or instead of the positional OLD).
    #[arg(long = "old", value_name = "PATH")]
    old: Vec<PathBuf>,
    /// More NEW input paths (repeatable; with or instead of the positional NEW).
    #[arg(long = "new", value_name = "PATH")]
    new: Vec<PathBuf>,
    /// text, json or markdown (for a pull-request comment).
    #[arg(long, default_value = "text")]
    format: Format,
    /// The node compiled for (as `ciliumc compile --node`).
    #[arg(long)]
    node: Option<String>,
    /// Unknown kinds are errors.
    #[arg(long)]
    strict: bool,
    /// Do not compile the inputs to list endpoints whose programs change.
    #[arg(long)]
    no_programs: bool,
}

fn sides(args: &Args) -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut old, mut new) = (Vec::new(), Vec::new());
    match args.paths.as_slice() {
        [] => {}
        [o, n] => {
            old.push(o.clone());
            new.push(n.clone());
        }
        _ => bail!("give both OLD and NEW (or --old PATH... --new PATH...)"),
    }
    old.extend(args.old.iter().cloned());
    new.extend(args.new.iter().cloned());
    if old.is_empty() || new.is_empty() {
        bail!("give both OLD and NEW (or --old PATH... --new PATH...)");
    }
    Ok((old, new))
}

fn load_side(side: Side, paths: &[PathBuf], strict: bool) -> Option<LoadResult> {
    let loaded = input::load(paths, strict);
    if !loaded.diagnostics.is_empty() {
        eprintln!("{side} ({}):", describe(paths));
    }
    input::report(&loaded, DiagFormat::Text);
    (!loaded.has_errors()).then_some(loaded)
}

fn describe(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (old, new) = sides(&args)?;
    let is_out = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|p| diff::is_output_dir(p.as_path()))
            .collect::<Vec<_>>()
    };
    let (old_out, new_out) = (is_out(&old), is_out(&new));
    let all = |v: &[bool]| v.iter().all(|b| *b);
    let none = |v: &[bool]| v.iter().all(|b| !*b);
    let report = if all(&old_out) && all(&new_out) {
        if old.len() != 1 || new.len() != 1 {
            bail!("compare one compile output directory with one other");
        }
        diff::diff_outputs(&old[0], &new[0])?
    } else if none(&old_out) && none(&new_out) {
        let loaded_old = load_side(Side::Old, &old, args.strict);
        let loaded_new = load_side(Side::New, &new, args.strict);
        let (Some(loaded_old), Some(loaded_new)) = (loaded_old, loaded_new) else {
            return Ok(ExitCode::from(2));
        };
        let opts = DiffOptions {
            resolve: ResolveOptions {
                local_node: args.node.clone(),
                ..ResolveOptions::default()
            },
            compare_programs: !args.no_programs,
        };
        input::with_progress("comparing", || {
            diff::diff_inputs(&loaded_old.objects, &loaded_new.objects, &opts)
        })?
    } else {
        bail!(
            "cannot compare input files with a compile output directory: OLD ({}) and NEW ({}) \
             must both be inputs or both be output directories (holding manifest.json)",
            describe(&old),
            describe(&new)
        );
    };
    print!("{}", diff::render(&report, args.format));
    Ok(if report.has_changes() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
