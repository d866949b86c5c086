//! `ciliumc observe --state DIR [--last N | --follow] [filters] [-o json]`: flows from the running
//! agent, as a hubble-like table `TIMESTAMP SOURCE DESTINATION TYPE VERDICT SUMMARY` or JSON lines.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use ciliumc_runtime::agent::api::{Reply, Request};
use ciliumc_runtime::agent::client;
use ciliumc_runtime::agent::flows::{FlowFilter, table};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    state: PathBuf,
    /// Number of past flows to show.
    #[arg(long, default_value_t = 20)]
    last: usize,
    /// Keep printing new flows.
    #[arg(short = 'f', long)]
    follow: bool,
    #[arg(long)]
    namespace: Option<String>,
    /// `pod` or `ns/pod`, either side.
    #[arg(long)]
    pod: Option<String>,
    /// Source `ns/pod`, pod or IP.
    #[arg(long)]
    from: Option<String>,
    /// Destination `ns/pod`, pod or IP.
    #[arg(long)]
    to: Option<String>,
    /// FORWARDED (ALLOWED) or DROPPED (DENIED).
    #[arg(long)]
    verdict: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    protocol: Option<String>,
    /// `table` (default) or `json` (one flow per line).
    #[arg(short = 'o', long, default_value = "table")]
    output: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let filter = FlowFilter {
        namespace: args.namespace,
        pod: args.pod,
        from: args.from,
        to: args.to,
        verdict: args.verdict,
        port: args.port,
        protocol: args.protocol,
    };
    let json = args.output == "json";
    let req = Request::Observe {
        last: args.last,
        follow: args.follow,
        filter,
    };
    let mut backlog = Vec::new();
    let mut failed = false;
    let mut printed_header = false;
    let stdout = std::io::stdout();
    client::call(&args.state, &req, |reply| match reply {
        Reply::Flow { flow } => {
            let mut out = stdout.lock();
            if json {
                let _ = writeln!(out, "{}", serde_json::to_string(&flow).unwrap_or_default());
                let _ = out.flush();
            } else if args.follow {
                let text = table(std::slice::from_ref(&flow));
                let mut lines = text.lines();
                let header = lines.next().unwrap_or_default();
                if !printed_header {
                    let _ = writeln!(out, "{header}");
                    printed_header = true;
                }
                for l in lines {
                    let _ = writeln!(out, "{l}");
                }
                let _ = out.flush();
            } else {
                backlog.push(*flow);
            }
            true
        }
        Reply::Error { message } => {
            eprintln!("error: {message}");
            failed = true;
            false
        }
        _ => true,
    })?;
    if !json && !args.follow {
        print!("{}", table(&backlog));
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
