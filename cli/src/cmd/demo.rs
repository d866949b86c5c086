//! `ciliumc demo [DIR]`: the star-wars demo end to end on this machine. Compiles DIR (default
//! `testdata/demo`), builds one network namespace per pod plus a node namespace (documentation
//! addresses only; nothing leaves them), starts the agent there, sends one bounded TCP connection
//! and one UDP datagram between every pair of pods, shows the flows, and removes everything.

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use ciliumc_runtime::agent::api::{Reply, Request};
use ciliumc_runtime::agent::demo::{DemoNetwork, serve, tcp_probe, udp_probe};
use ciliumc_runtime::agent::flows::{FlowFilter, table};
use ciliumc_runtime::agent::{CompileOutput, Datapath, StatePaths, client};

#[derive(clap::Args)]
pub struct Args {
    /// Policy and inventory to run.
    #[arg(default_value = "testdata/demo")]
    dir: PathBuf,
    /// Port every pod serves (TCP and UDP).
    #[arg(long, default_value_t = 80)]
    port: u16,
}

/// Removes the scratch directory, stopping the agent and cleaning its datapath first.
struct Scratch {
    dir: PathBuf,
    agent: Option<Child>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Datapath::cleanup(&StatePaths::new(&self.dir.join("state"), None));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let pid = std::process::id();
    let mut scratch = Scratch {
        dir: std::env::temp_dir().join(format!("ciliumc-demo-{pid}")),
        agent: None,
    };
    std::fs::create_dir_all(&scratch.dir)?;
    let out = scratch.dir.join("out");
    let st = Command::new(&exe)
        .arg("compile")
        .arg(&args.dir)
        .arg("-o")
        .arg(&out)
        .status()?;
    anyhow::ensure!(st.success(), "compiling {} failed", args.dir.display());
    let compiled = CompileOutput::read(&out)?;
    let net = DemoNetwork::create(&compiled.manifest, &format!("ccd{}", pid % 100_000))?;
    println!(
        "network: node namespace {} and {} pod namespaces",
        net.node,
        net.pods.len()
    );
    let ifaces = scratch.dir.join("interfaces");
    std::fs::write(&ifaces, net.interfaces())?;
    let state = scratch.dir.join("state");
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.node))
        .arg(&exe)
        .arg("agent")
        .arg("--state")
        .arg(&state)
        .arg("--interfaces")
        .arg(&ifaces)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the agent with nsenter")?;
    scratch.agent = Some(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !state.join("agent.sock").exists() {
        anyhow::ensure!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut applied = Err(anyhow::anyhow!("no reply from the agent"));
    client::call(
        &state,
        &Request::Apply {
            dir: out.display().to_string(),
        },
        |r| {
            applied = match r {
                Reply::Applied { report } => Ok(report),
                Reply::Error { message } => Err(anyhow::anyhow!(message)),
                _ => Err(anyhow::anyhow!("unexpected reply")),
            };
            false
        },
    )?;
    let report = applied?;
    println!(
        "agent: generation {} applied, {} programs attached in {:.1} ms",
        report.generation,
        report.programs_attached,
        report.latency_us as f64 / 1000.0
    );
    let servers: Vec<_> = net
        .pods
        .iter()
        .map(|p| serve(&p.netns, args.port, Duration::from_secs(20)))
        .collect::<Result<_, _>>()?;
    println!(
        "\ntraffic (one TCP connection and one UDP datagram per pair, port {}):",
        args.port
    );
    let timeout = Duration::from_millis(700);
    for src in &net.pods {
        for dst in net.pods.iter().filter(|d| d.endpoint != src.endpoint) {
            let tcp = tcp_probe(&src.netns, &dst.ipv4, args.port, timeout);
            let udp = udp_probe(&src.netns, &dst.ipv4, args.port, timeout);
            let word = |ok: bool| if ok { "allowed" } else { "denied " };
            println!(
                "  {:<22} -> {:<22} TCP {}  UDP {}",
                src.endpoint,
                dst.endpoint,
                word(tcp),
                word(udp)
            );
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut flows = Vec::new();
    let req = Request::Observe {
        last: 200,
        follow: false,
        filter: FlowFilter::default(),
    };
    client::call(&state, &req, |r| {
        if let Reply::Flow { flow } = r {
            flows.push(*flow);
        }
        true
    })?;
    println!("\nflows (ciliumc observe):\n{}", table(&flows));
    drop(servers);
    drop(scratch);
    drop(net);
    println!("removed the agent, its pins and mount, and all demo namespaces");
    Ok(ExitCode::SUCCESS)
}
