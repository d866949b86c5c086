//! ciliumc-runtime: loads and runs what `ciliumc compile` produces.
//!
//! In: ELF objects and the manifest's map entries. Out: programs loaded into the kernel through aya.
//! `testrun` executes one program on one packet with `BPF_PROG_TEST_RUN` (used by `ciliumc trace`
//! and `connlist --verify-bytecode`); `events` decodes flow event records; `agent` is the node
//! daemon (`ciliumc agent`): pinned maps and links, atomic generation swaps, flows.

pub mod agent;
pub mod event_ring;
pub mod events;
pub mod packet;
pub mod testrun;
