//! One module per subcommand.
pub mod check;
pub mod connlist;
pub mod disasm;
pub mod schema;
