//! `ciliumc disasm FILE.o`: the object's code in llvm-objdump syntax, with `; rule ...` lines
//! (the object's `.BTF.ext` line_info) before the code each policy rule compiled to. `--raw`
//! prints exactly what `llvm-objdump-19 -d FILE.o` prints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    file: PathBuf,
    /// Plain llvm-objdump-19 -d text, without the rule annotations.
    #[arg(long)]
    raw: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let path = args.file.display().to_string();
    let text = if args.raw {
        ciliumc_targets::disasm::disassemble_object(&bytes, &path)
    } else {
        ciliumc_targets::disasm::disassemble_object_with_line_info(&bytes, &path)
    }
    .with_context(|| format!("disassembling {}", args.file.display()))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
