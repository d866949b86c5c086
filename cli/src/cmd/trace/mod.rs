//! `ciliumc trace PATH... --from PEER --to PEER --proto P --port N [--engine E]`: the verdict for
//! one flow, obtained by executing the compiled programs — in the kernel (`BPF_PROG_TEST_RUN`) or,
//! where `bpf()` is refused or `--engine interpreter` asks for it, in the userspace eBPF
//! interpreter (`engine`) — and cross-checked with the reference evaluator.
//!
//! A flow between two endpoints passes two programs: the egress policy of the source and the
//! ingress policy of the destination; a flow to or from an address outside the cluster passes one.
//! The output is the same whichever engine ran, except the `engine:` line.

mod engine;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use ciliumc_compiler::compile::{self, MapPinning};
use ciliumc_compiler::lower::{self, maps};
use ciliumc_compiler::resolve::{self, ResolveOptions, ResolvedCluster};
use ciliumc_ir::endpoint::Endpoint;
use ciliumc_ir::evaluator::{PeerInfo, Verdict, verdict};
use ciliumc_ir::policy::{Direction, Protocol, RuleId};
use ciliumc_runtime::packet::Packet;

use self::engine::{EngineChoice, Executor};
use crate::input::{self, DiagFormat};

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Source: `namespace/pod` or an IP address.
    #[arg(long)]
    from: String,
    /// Destination: `namespace/pod` or an IP address.
    #[arg(long)]
    to: String,
    /// tcp, udp, sctp, icmp (IPv4) or icmpv6.
    #[arg(long, default_value = "tcp")]
    proto: String,
    /// Destination port (for ICMP: the ICMP type).
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// Use IPv6 addresses of endpoints.
    #[arg(long)]
    ipv6: bool,
    /// Where the programs run: the kernel when bpf() works (auto), the kernel, or the userspace
    /// eBPF interpreter.
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
    engine: EngineChoice,
}

/// One side of the flow.
struct Side<'a> {
    endpoint: Option<(usize, &'a Endpoint)>,
    ip: IpAddr,
}

fn protocol(name: &str) -> anyhow::Result<Protocol> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        "icmp" => Protocol::Icmp,
        "icmpv6" => Protocol::Icmpv6,
        other => bail!("unknown protocol {other:?}: expected tcp, udp, sctp, icmp or icmpv6"),
    })
}

fn side<'a>(cluster: &'a ResolvedCluster, peer: &str, ipv6: bool) -> anyhow::Result<Side<'a>> {
    if let Ok(ip) = peer.parse::<IpAddr>() {
        let endpoint = cluster.endpoints.iter().enumerate().find(|(_, e)| {
            e.ipv4.map(IpAddr::V4) == Some(ip) || e.ipv6.map(IpAddr::V6) == Some(ip)
        });
        return Ok(Side { endpoint, ip });
    }
    let Some((i, ep)) = cluster
        .endpoints
        .iter()
        .enumerate()
        .find(|(_, e)| e.name == peer)
    else {
        bail!("no endpoint {peer:?} in the inputs (expected namespace/pod or an IP address)");
    };
    let ip = if ipv6 {
        ep.ipv6.map(IpAddr::V6)
    } else {
        ep.ipv4.map(IpAddr::V4).or(ep.ipv6.map(IpAddr::V6))
    };
    let ip = ip.with_context(|| format!("endpoint {peer} has no address of that family"))?;
    Ok(Side {
        endpoint: Some((i, ep)),
        ip,
    })
}

fn packet(src: IpAddr, dst: IpAddr, proto: Protocol, port: u16) -> anyhow::Result<Vec<u8>> {
    let p = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Packet::ipv4(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => Packet::ipv6(s, d),
        _ => bail!("source {src} and destination {dst} are of different address families"),
    };
    let p = match proto {
        Protocol::Tcp => p.tcp(40000, port),
        Protocol::Udp => p.udp(40000, port),
        Protocol::Sctp => p.sctp(40000, port),
        Protocol::Icmp | Protocol::Icmpv6 => {
            let typ = u8::try_from(port).context("an ICMP type is 0..=255")?;
            if proto == Protocol::Icmp {
                p.icmp(typ, 0)
            } else {
                p.icmpv6(typ, 0)
            }
        }
    };
    Ok(p.build())
}

fn describe_rules(cluster: &ResolvedCluster, rules: &[RuleId]) -> Vec<String> {
    rules
        .iter()
        .map(|id| match cluster.rule_origins.get(id) {
            Some(o) => match &o.source {
                Some(src) => format!("rule {id}: {} at {src}", o.describe()),
                None => format!("rule {id}: {}", o.describe()),
            },
            None => format!("rule {id}"),
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let proto = protocol(&args.proto)?;
    let loaded = input::load(&args.paths, false);
    input::report(&loaded, DiagFormat::Text);
    if loaded.has_errors() {
        return Ok(ExitCode::from(1));
    }
    let cluster = resolve::resolve(&loaded.objects, &ResolveOptions::default())?;
    let from = side(&cluster, &args.from, args.ipv6)?;
    let to = side(&cluster, &args.to, args.ipv6)?;
    let pkt = packet(from.ip, to.ip, proto, args.port)?;
    let prefixes = compile::ipcache_prefixes(&cluster);
    let manifest_entries = maps::ipcache_map_entries(&prefixes);
    let mut executor = Executor::new(
        args.engine,
        compile::ipcache_entries(&cluster),
        manifest_entries,
    );
    println!("trace {} -> {} {proto}/{}", args.from, args.to, args.port);

    let mut allowed = true;
    let mut disagreements = 0;
    let checks = [
        (from.endpoint, Direction::Egress, to.ip),
        (to.endpoint, Direction::Ingress, from.ip),
    ];
    for (endpoint, direction, peer_ip) in checks {
        let Some((index, ep)) = endpoint else {
            continue;
        };
        let policy = &cluster.policies[index];
        let peer = PeerInfo::new(compile::ipcache_identity(&cluster, peer_ip), Some(peer_ip));
        let expected = verdict(policy, direction, peer, proto, args.port);
        let (program, _) = lower::program_for(direction);
        let (object, _) = compile::endpoint_object(ep, policy, MapPinning::Private)?;
        let run = executor
            .run(&object, program, &pkt)
            .with_context(|| format!("executing {program} of {}", ep.name))?;
        let ok = run.retval == 0;
        let rule = run.events.first().map(|e| (e.rule_id, e.reason));
        let line = match (ok, rule) {
            (true, Some((id, _))) if id != 0 => format!("ALLOWED by rule {id}"),
            (true, _) => "ALLOWED".to_string(),
            (false, Some((id, reason))) if id != 0 => {
                format!("DROPPED by rule {id} (reason {reason})")
            }
            (false, Some((_, reason))) => format!("DROPPED (reason {reason})"),
            (false, None) => "DROPPED".to_string(),
        };
        // The program's deciding rule (when its event names one) must be one the evaluator gives.
        let rule_disagrees = rule.is_some_and(|(id, _)| {
            id != 0 && !expected.rules().is_empty() && !expected.rules().contains(&RuleId(id))
        });
        if ok != expected.is_allow() || rule_disagrees {
            disagreements += 1;
        }
        let why = match &expected {
            Verdict::Allow { basis, .. } => format!("allow ({basis:?})"),
            Verdict::Deny { reason, .. } => format!("drop: {reason:?} ({})", reason.code()),
        };
        println!(
            "  {direction} policy of {} ({program}): {line}; evaluator: {why}",
            ep.name
        );
        for r in describe_rules(&cluster, expected.rules()) {
            println!("    {r}");
        }
        allowed &= ok;
    }
    println!("verdict: {}", if allowed { "ALLOWED" } else { "DROPPED" });
    match executor.used() {
        Some(engine) => {
            if let Some(why) = &executor.fallback_reason {
                eprintln!("note: bpf() refused ({why}); running the programs in the interpreter");
            }
            println!("engine: {}", engine.describe());
            println!(
                "obtained by: executing the compiled programs; reference evaluator {}",
                if disagreements == 0 {
                    "agrees"
                } else {
                    "DISAGREES"
                }
            );
        }
        None => println!("obtained by: the reference evaluator (no endpoint program on this path)"),
    }
    Ok(if disagreements == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
