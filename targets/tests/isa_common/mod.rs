//! Shared helpers for the isa/disasm/asm integration tests.
#![allow(dead_code)]

pub mod strategy;
pub mod tools;
