//! One module per subcommand.
pub mod check;
pub mod compile;
pub mod connlist;
pub mod diff;
pub mod disasm;
pub mod schema;
pub mod trace;
pub mod verify;
