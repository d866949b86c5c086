//! `ciliumc status --state DIR [-o json]`: generation, endpoints and programs loaded, flow counters
//! (seen, current/max, rate, events lost to full rings) and the last apply's latency, from
//! the running agent.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use ciliumc_runtime::agent::api::{Reply, Request};
use ciliumc_runtime::agent::client;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    state: PathBuf,
    /// `table` (default) or `json`.
    #[arg(short = 'o', long, default_value = "table")]
    output: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut code = ExitCode::from(2);
    client::call(&args.state, &Request::Status, |reply| {
        match reply {
            Reply::Status { status: s } => {
                if args.output == "json" {
                    println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                } else {
                    let mut t = String::new();
                    let _ = writeln!(t, "Generation:     {}", s.generation);
                    let _ = writeln!(
                        t,
                        "Endpoints:      {} ({} programs loaded)",
                        s.endpoints, s.programs
                    );
                    let _ = writeln!(t, "Current/Max Flows: {}/{}", s.flows_current, s.flows_max);
                    let _ = writeln!(
                        t,
                        "Flows seen:     {} ({:.2} flows/s)",
                        s.flows_seen, s.flows_per_second
                    );
                    match s.events_lost {
                        Some(n) => {
                            let _ = writeln!(
                                t,
                                "Events lost:    {n} (ring full or no ring for the CPU)"
                            );
                        }
                        None => {
                            let _ = writeln!(t, "Events lost:    - (no ciliumc_evlost counter)");
                        }
                    }
                    let _ = writeln!(
                        t,
                        "Events read:    {}",
                        if s.reading_events {
                            "yes"
                        } else {
                            "no (no generation yet)"
                        }
                    );
                    let _ = writeln!(
                        t,
                        "Applies:        {} ok, {} refused",
                        s.applies, s.failed_applies
                    );
                    match s.last_apply_latency_us {
                        Some(us) => {
                            let _ = writeln!(t, "Last apply:     {:.3} ms", us as f64 / 1000.0);
                        }
                        None => {
                            let _ = writeln!(t, "Last apply:     -");
                        }
                    }
                    if let Some(e) = &s.last_error {
                        let _ = writeln!(t, "Last error:     {e}");
                    }
                    let _ = writeln!(t, "Uptime:         {:.0} s", s.uptime_seconds);
                    let _ = std::io::stdout().write_all(t.as_bytes());
                }
                code = ExitCode::SUCCESS;
            }
            Reply::Error { message } => eprintln!("error: {message}"),
            _ => {}
        }
        true
    })?;
    Ok(code)
}
