//! ciliumc-compiler: the passes from input files to eBPF objects.
//!
//! `frontend` (files → typed, validated objects with source spans) → `resolve` (objects → identities,
//! endpoints and per-endpoint policy IR) → `connlist` (IR → allowed connections).
pub mod compile;
pub mod connlist;
pub mod diff;
pub mod frontend;
pub mod lower;
pub mod resolve;
