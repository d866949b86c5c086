//! ciliumc-tests: the kernel test harness every crate's kernel tests use.
//!
//! In: ELF objects (bytes or files), packets described with [`packet::Packet`].
//! Out: loaded programs and maps ([`loader::load_object_raw`] over raw `bpf()` in [`sys`],
//! [`loader::load_object_aya`] over aya 0.14), `BPF_PROG_TEST_RUN` results, verifier logs (verbatim,
//! in errors) and processed-instruction counts, and the verdict of the system's loaders
//! ([`tools::bpftool_loadall`], [`tools::tc_attach_check`], [`tools::xdp_attach_check`]).
//!
//! Kernel tests start with `let Some(_k) = kernel_or_skip!() else { return };`: they skip with a
//! printed reason where `bpf()` is refused, and fail instead when `CILIUMC_REQUIRE_KERNEL=1`.
//! [`jit::JitHardenGuard`] sets `net.core.bpf_jit_harden` under a lock and restores it.

pub mod insn;
pub mod jit;
pub mod kernel;
pub mod link;
pub mod loader;
/// The packet builder lives in the runtime (it builds the packets `ciliumc trace` executes).
pub use ciliumc_runtime::packet;
pub mod sys;
pub mod tools;

pub use jit::JitHardenGuard;
pub use kernel::Kernel;
pub use loader::{
    LoadError, LoadOptions, LoadedObject, load_object_aya, load_object_raw, load_object_raw_with,
};
pub use packet::Packet;
pub use tools::{bpftool_loadall, tc_attach_check, xdp_attach_check};
