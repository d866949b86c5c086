//! ciliumc-targets: the eBPF target.
//!
//! In: instruction streams (from `codegen`, or text through `asm`). Out: ELF objects with BTF
//! (`elf`, `btf`), disassembly text (`disasm`). Knows nothing of policy.
pub mod asm;
pub mod btf;
pub mod codegen;
pub mod disasm;
pub mod elf;
pub mod hooks;
pub mod isa;
pub mod program;
pub mod vm;
