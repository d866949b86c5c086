//! Blocking client of the agent's socket, for `ciliumc apply|observe|status`.
//!
//! In: the state directory and a [`Request`]. Out: [`Reply`] lines as they arrive.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::api::{Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "connecting to the agent at {path} (is `ciliumc agent --state DIR` running?): {source}"
    )]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("unreadable reply from the agent: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Sends `req` and calls `each` for every reply until `Done`, an error reply, or the end of the
/// stream. `each` returns false to stop early.
pub fn call(
    state_dir: &Path,
    req: &Request,
    mut each: impl FnMut(Reply) -> bool,
) -> Result<(), ClientError> {
    let path = state_dir.join("agent.sock");
    let mut stream = UnixStream::connect(&path).map_err(|source| ClientError::Connect {
        path: path.display().to_string(),
        source,
    })?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    for l in BufReader::new(stream).lines() {
        let reply: Reply = serde_json::from_str(&l?)?;
        let last = matches!(
            reply,
            Reply::Done | Reply::Error { .. } | Reply::Applied { .. } | Reply::Status { .. }
        );
        if !each(reply) || last {
            break;
        }
    }
    Ok(())
}
