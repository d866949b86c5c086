//! One module per subcommand.
pub mod agent;
pub mod apply;
pub mod check;
pub mod compile;
pub mod connlist;
pub mod demo;
pub mod diff;
pub mod disasm;
pub mod observe;
pub mod schema;
pub mod status;
pub mod trace;
pub mod verify;
