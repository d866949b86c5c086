//! The agent's local API: one JSON request line per connection on `STATE/agent.sock`, answered
//! by JSON lines (one reply, or a stream of flows for `observe --follow`).
//!
//! In/out: [`Request`], [`Reply`], [`Status`].

use serde::{Deserialize, Serialize};

use super::datapath::ApplyReport;
use super::flows::{Flow, FlowFilter};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Apply the compile output in `dir` (absolute path, read by the agent).
    Apply {
        dir: String,
    },
    /// The last `last` matching flows, then (with `follow`) every new one.
    Observe {
        last: usize,
        follow: bool,
        filter: FlowFilter,
    },
    Status,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Applied {
        report: ApplyReport,
    },
    Flow {
        flow: Box<Flow>,
    },
    Status {
        status: Status,
    },
    /// End of a finite answer.
    Done,
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub generation: u64,
    pub endpoints: usize,
    pub programs: usize,
    pub flows_seen: u64,
    pub flows_current: usize,
    pub flows_max: usize,
    pub flows_per_second: f64,
    /// Events the agent never read: those written on a CPU without a ring (the sum over CPUs of
    /// the pinned `ciliumc_evlost` counter, since the map was created) plus records overwritten
    /// in a full ring before the agent read them; `None` when the running generation has no
    /// such counter.
    #[serde(default)]
    pub events_lost: Option<u64>,
    pub applies: u64,
    pub failed_applies: u64,
    pub last_apply_latency_us: Option<u64>,
    pub last_error: Option<String>,
    pub uptime_seconds: f64,
    /// Whether the event rings are being read.
    pub reading_events: bool,
}
