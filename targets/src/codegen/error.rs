//! Errors of code generation. Every error that stems from the IR names the function, the block and
//! the IR value, so that the policy compiler can point back at what it lowered.

use super::ir::{BlockId, SlotId, VReg};

/// What is wrong with one IR value or instruction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error(
        "{value}: packet {access} of {size} bytes at offset {off} not covered by a bounds check (proven {proven} bytes)"
    )]
    PacketOutOfRange {
        value: VReg,
        access: &'static str,
        size: u32,
        off: i64,
        proven: u32,
    },
    #[error(
        "{value}: dereference of a map value that may be null (from map '{map}') without a null check"
    )]
    NullDeref { value: VReg, map: String },
    #[error("{value}: {access} of {size} bytes at offset {off} is outside the {limit}-byte {what}")]
    OutOfBounds {
        value: VReg,
        access: &'static str,
        size: u32,
        off: i64,
        limit: u32,
        what: &'static str,
    },
    #[error("{value}: used before it is defined on every path")]
    Undefined { value: VReg },
    #[error("{value}: expected {expected}, found {found}")]
    WrongType {
        value: String,
        expected: &'static str,
        found: String,
    },
    #[error("{value}: argument {index} of helper {helper}: expected {expected}, found {found}")]
    HelperArg {
        value: String,
        helper: &'static str,
        index: usize,
        expected: String,
        found: String,
    },
    #[error("helper {helper} takes {expected} arguments, got {found}")]
    HelperArity {
        helper: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("helper {helper} is not available to {hook} programs")]
    HelperNotAllowed { helper: &'static str, hook: String },
    #[error("{slot}: read of {size} bytes at offset {off} includes bytes never written")]
    StackUninit { slot: SlotId, off: u32, size: u32 },
    #[error("{value}: packet pointer used after a helper that may move packet data ({helper})")]
    PacketInvalidated { value: VReg, helper: &'static str },
    #[error(
        "{value}: variable packet offset needs a known bit width of at most 16 bits (has {bits})"
    )]
    UnboundedOffset { value: VReg, bits: u8 },
    #[error("ring-buffer record {value} is not submitted or discarded on every path to the return")]
    RecordLeak { value: VReg },
    #[error("{0}")]
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodegenError {
    #[error("function {func}, block {block}: {error}")]
    Check {
        func: String,
        block: BlockId,
        /// Boxed: errors travel through every pass's `Result`, which should stay small.
        error: Box<CheckError>,
    },
    #[error("function {func}: {msg}")]
    Build { func: String, msg: String },
    #[error("function {func}: stack frame needs {needed} bytes (limit {limit})")]
    StackOverflow {
        func: String,
        needed: u32,
        limit: u32,
    },
    #[error("function {func}: call chain {chain} needs {needed} bytes of stack (limit 512)")]
    CallChainStack {
        func: String,
        chain: String,
        needed: u32,
    },
    #[error("function {func} calls unknown function {callee}")]
    UnknownFunction { func: String, callee: String },
    #[error("recursive call chain {chain} (the verifier refuses recursion)")]
    Recursion { chain: String },
    #[error("function {func}: jump from slot {from} to {to} does not fit ({why})")]
    JumpOutOfRange {
        func: String,
        from: usize,
        to: usize,
        why: &'static str,
    },
    #[error("function {func}: {msg}")]
    Internal { func: String, msg: String },
}
