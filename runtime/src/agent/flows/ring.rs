//! The reader side of the events ring buffer: waits for a wakeup or a timer, decodes records
//! straight out of the ring (no copy per record) into reusable batches, and reads the per-CPU
//! count of events the programs could not write (`ciliumc_evlost`).
//!
//! In: the pin paths of `ciliumc_events` and `ciliumc_evlost`. Out: batches of [`FlowEvent`]s (and
//! the number of undecodable records) handed to a sink, and the lost-events total.

use std::path::Path;
use std::time::Duration;

use aya::maps::{Map, MapData, MapError, PerCpuArray, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::events::FlowEvent;

/// The pinned per-CPU counter of events the ring had no room for (index 0, u64; the compiler's
/// `lower::maps::EVENTS_LOST`).
pub const EVENTS_LOST: &str = "ciliumc_evlost";

/// Longest time a record waits in the ring before the reader looks, while events arrive.
/// Programs wake the reader only once 32 KiB (~455 records) are waiting, because a wakeup per
/// record costs microseconds per event; below that backlog only this timer finds the records.
/// 10 ms keeps the latency of events to `observe` well under human perception and far below the
/// ~145 ms in which 100,000 events/s would fill the 1 MiB ring.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The interval doubles from [`POLL_INTERVAL`] up to this while polls find nothing, and drops
/// back at the first record: an idle agent wakes ~10 times a second instead of ~100 (each wakeup
/// of the runtime costs tens of microseconds), and the first event after a quiet spell waits at
/// most this long; a backlog wakes the reader at once anyway.
pub const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Records decoded per call of the sink, i.e. per lock of the flow store: large enough that the
/// lock is cheap per record, small enough to keep `status` and `observe` from waiting on it.
pub const INGEST_BATCH: usize = 4096;

/// The open ring buffer, registered with tokio, and the reused batch.
pub struct RingReader {
    ring: AsyncFd<RingBuf<MapData>>,
    batch: Vec<FlowEvent>,
    interval: Duration,
}

impl RingReader {
    /// Opens the ring buffer pinned at `path`.
    pub fn open(path: &Path) -> std::io::Result<RingReader> {
        let data = MapData::from_pin(path).map_err(std::io::Error::other)?;
        let ring = RingBuf::try_from(Map::RingBuf(data)).map_err(std::io::Error::other)?;
        // SAFETY: the ring's fd stays open for as long as the AsyncFd owns the ring.
        let ring = unsafe { AsyncFd::register(ring) }?;
        Ok(RingReader {
            ring,
            batch: Vec::with_capacity(INGEST_BATCH),
            interval: POLL_INTERVAL,
        })
    }

    /// Returns when the kernel signalled a backlog or the poll interval ([`POLL_INTERVAL`], up to
    /// [`IDLE_POLL_INTERVAL`] when idle) passed, whichever is first. Callers drain after each
    /// return.
    pub async fn wait(&mut self) -> std::io::Result<()> {
        tokio::select! {
            ready = self.ring.readable_mut() => {
                // Cleared before draining, so a record written during the drain re-arms it.
                ready?.clear_ready();
            }
            _ = tokio::time::sleep(self.interval) => {}
        }
        Ok(())
    }

    /// Consumes every record in the ring; `sink` gets batches of at most [`INGEST_BATCH`]
    /// decoded events (it may leave them in the vector: it is cleared afterwards) and the number
    /// of records in that batch too short to decode. Returns the records consumed.
    pub fn drain(&mut self, sink: impl FnMut(&mut Vec<FlowEvent>, u64)) -> u64 {
        let consumed = self.drain_batches(sink);
        self.interval = next_interval(self.interval, consumed);
        consumed
    }

    fn drain_batches(&mut self, mut sink: impl FnMut(&mut Vec<FlowEvent>, u64)) -> u64 {
        let ring = self.ring.get_mut();
        let mut consumed = 0u64;
        loop {
            let mut undecodable = 0u64;
            let mut taken = 0usize;
            while taken < INGEST_BATCH {
                let Some(item) = ring.next() else { break };
                taken += 1;
                match FlowEvent::decode(&item) {
                    Ok(event) => self.batch.push(event),
                    Err(_) => undecodable += 1,
                }
            }
            if taken == 0 {
                return consumed;
            }
            consumed += taken as u64;
            sink(&mut self.batch, undecodable);
            self.batch.clear();
            if taken < INGEST_BATCH {
                return consumed;
            }
        }
    }
}

/// The poll interval after a drain that consumed `consumed` records.
fn next_interval(current: Duration, consumed: u64) -> Duration {
    if consumed > 0 {
        POLL_INTERVAL
    } else {
        (current * 2).min(IDLE_POLL_INTERVAL)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("lost-events counter {path}: {source}")]
pub struct LostCounterError {
    path: String,
    #[source]
    source: MapError,
}

/// The sum over CPUs of the lost-events counter pinned at `path`.
pub fn read_lost(path: &Path) -> Result<u64, LostCounterError> {
    let err = |source| LostCounterError {
        path: path.display().to_string(),
        source,
    };
    let data = MapData::from_pin(path).map_err(err)?;
    let counter: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(err)?;
    let per_cpu = counter.get(&0, 0).map_err(err)?;
    Ok(per_cpu.iter().copied().fold(0u64, u64::wrapping_add))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_interval_backs_off_when_idle_and_resets_on_a_record() {
        let mut i = POLL_INTERVAL;
        let mut seen = vec![i];
        for _ in 0..6 {
            i = next_interval(i, 0);
            seen.push(i);
        }
        assert_eq!(
            seen.iter().map(Duration::as_millis).collect::<Vec<_>>(),
            [10, 20, 40, 80, 100, 100, 100]
        );
        assert_eq!(next_interval(IDLE_POLL_INTERVAL, 1), POLL_INTERVAL);
    }
}
