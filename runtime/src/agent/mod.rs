//! `ciliumc agent`: runs compile outputs on a node.
//!
//! [`datapath`] loads, attaches and swaps generations (pinned maps and links under the agent's
//! own bpffs); [`flows`] turns ring-buffer events into named flows; [`daemon`] serves `apply`,
//! `observe` and `status` on a unix socket ([`api`] is the wire format, [`client`] the caller).

pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod demo;
pub mod flows;
pub mod load;
pub mod netlink;
pub mod output;
pub mod pinned_maps;
pub mod state;
pub mod sys;

pub use config::{Interfaces, TcAttach};
pub use datapath::{AgentError, ApplyReport, CleanupReport, Datapath};
pub use output::CompileOutput;
pub use state::StatePaths;
