//! `ciliumc schema KIND|manifest`: JSON Schema of an input kind or of `manifest.json`.

use std::process::ExitCode;

use anyhow::bail;

#[derive(clap::Args)]
pub struct Args {
    /// An input kind (NetworkPolicy, CiliumNetworkPolicy, ...) or `manifest`.
    kind: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let schema = if args.kind == "manifest" {
        serde_json::to_value(schemars::schema_for!(ciliumc_ir::manifest::Manifest))?
    } else {
        match ciliumc_compiler::frontend::schema(&args.kind) {
            Some(s) => s,
            None => bail!(
                "unknown kind {:?}: expected manifest or one of the input kinds (NetworkPolicy, CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, CiliumLocalRedirectPolicy, Service, EndpointSlice, Namespace, Pod, Node, CiliumExternalWorkload, Deployment, ...)",
                args.kind
            ),
        }
    };
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::SUCCESS)
}
