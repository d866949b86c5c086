//! `ciliumc disasm FILE.o`: the object's code in llvm-objdump syntax.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let text = ciliumc_targets::disasm::disassemble_object(&bytes, &args.file.display().to_string())
        .with_context(|| format!("disassembling {}", args.file.display()))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
