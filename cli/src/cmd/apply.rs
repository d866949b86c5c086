//! `ciliumc apply OUT_DIR --state DIR`: hands a compile output to the running agent, which
//! applies it as a new generation (or refuses it and keeps the running one).

use std::path::PathBuf;
use std::process::ExitCode;

use ciliumc_runtime::agent::api::{Reply, Request};
use ciliumc_runtime::agent::client;

#[derive(clap::Args)]
pub struct Args {
    /// Output directory of `ciliumc compile`.
    dir: PathBuf,
    /// The agent's state directory.
    #[arg(long)]
    state: PathBuf,
    /// Print the apply report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(&args.dir)?;
    let req = Request::Apply {
        dir: dir.display().to_string(),
    };
    let mut code = ExitCode::from(2);
    client::call(&args.state, &req, |reply| {
        match reply {
            Reply::Applied { report } => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    );
                } else {
                    println!(
                        "generation {}: {} endpoint(s) loaded, {} unchanged, {} removed; {} program(s) swapped, {} attached; {} map update(s), {} delete(s); {} µs",
                        report.generation,
                        report.loaded.len(),
                        report.unchanged.len(),
                        report.removed.len(),
                        report.programs_swapped,
                        report.programs_attached,
                        report.map_updates,
                        report.map_deletes,
                        report.latency_us
                    );
                }
                code = ExitCode::SUCCESS;
            }
            Reply::Error { message } => {
                eprintln!("error: refused, the running generation stays: {message}")
            }
            _ => {}
        }
        true
    })?;
    Ok(code)
}
