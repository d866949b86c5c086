//! The agent's reader of the per-CPU event rings: polls the mapped `ciliumc_events` array on a
//! timer, decodes records into reusable batches, and reads the per-CPU count of events that had
//! no ring (`ciliumc_evlost`).
//!
//! In: the pin paths of `ciliumc_events` and `ciliumc_evlost`. Out: batches of [`FlowEvent`]s
//! handed to a sink with the number of records overwritten before they were read, and the
//! no-ring total.

use std::path::Path;
use std::time::Duration;

use aya::maps::{Map, MapData, MapError, PerCpuArray};

use crate::event_ring::{self, MappedRings, RingError};
use crate::events::FlowEvent;

/// The pinned per-CPU counter of events that had no ring (index 0, u64; the compiler's
/// `lower::maps::EVENTS_LOST`).
pub const EVENTS_LOST: &str = "ciliumc_evlost";

/// Longest time a record waits in its ring before the reader looks, while events arrive. The
/// programs never wake the reader (a wakeup costs microseconds per event), so this timer is how
/// records are found: 10 ms keeps the latency of events to `observe` well under human
/// perception, and a CPU's 4,096-record ring lasts 40 ms at 100,000 events/s on that CPU.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The shortest timed interval: while a ring fills by more than a quarter between polls, the
/// interval halves down to this; past half a ring the reader drains again without sleeping.
pub const BUSY_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// The interval doubles from [`POLL_INTERVAL`] up to this while polls find nothing, and drops
/// back at the first record: an idle agent wakes ~10 times a second instead of ~100 (each wakeup
/// of the runtime costs tens of microseconds), and the first event after a quiet spell waits at
/// most this long.
pub const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Records decoded per call of the sink, i.e. per lock of the flow store: large enough that the
/// lock is cheap per record, small enough to keep `status` and `observe` from waiting on it.
pub const INGEST_BATCH: usize = 4096;

/// The mapped rings and the reused batch.
pub struct RingReader {
    rings: MappedRings,
    batch: Vec<FlowEvent>,
    interval: Duration,
}

impl RingReader {
    /// Maps the rings pinned at `path`.
    pub fn open(path: &Path) -> Result<RingReader, RingError> {
        Ok(RingReader {
            rings: MappedRings::open_pinned(path)?,
            batch: Vec::with_capacity(INGEST_BATCH),
            interval: POLL_INTERVAL,
        })
    }

    /// Returns after the poll interval ([`POLL_INTERVAL`]; down to [`BUSY_POLL_INTERVAL`], or
    /// at once, while rings fill fast; up to [`IDLE_POLL_INTERVAL`] when idle). Callers drain
    /// after each return.
    pub async fn wait(&mut self) {
        if self.interval.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(self.interval).await;
        }
    }

    /// Consumes every record in the rings; `sink` gets batches of at most [`INGEST_BATCH`]
    /// decoded events (it may leave them in the vector: it is cleared afterwards) and the records
    /// overwritten before they could be read (all reported with the last batch). Returns the records
    /// consumed.
    pub fn drain(&mut self, mut sink: impl FnMut(&mut Vec<FlowEvent>, u64)) -> u64 {
        let batch = &mut self.batch;
        let drained = event_ring::drain(&mut self.rings, |bytes| {
            batch.push(FlowEvent::from_record(bytes));
            if batch.len() == INGEST_BATCH {
                sink(batch, 0);
                batch.clear();
            }
        });
        let overwritten = drained.overwritten;
        if !batch.is_empty() || overwritten > 0 {
            sink(batch, overwritten);
            batch.clear();
        }
        self.interval = next_interval(self.interval, &drained);
        drained.records
    }
}

/// The poll interval after a drain that found `drained`: shorter while a ring fills fast, back to
/// [`POLL_INTERVAL`] at a steady trickle, longer while idle.
fn next_interval(current: Duration, drained: &event_ring::Drained) -> Duration {
    if drained.busiest > event_ring::RING_RECORDS / 2 {
        // More than half a ring (or lapped) since the last look: drain again at once.
        Duration::ZERO
    } else if drained.busiest >= event_ring::RING_RECORDS / 4 {
        (current / 2).max(BUSY_POLL_INTERVAL)
    } else if drained.records > 0 {
        (current * 2).clamp(BUSY_POLL_INTERVAL, POLL_INTERVAL)
    } else {
        (current * 2).clamp(BUSY_POLL_INTERVAL, IDLE_POLL_INTERVAL)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("lost-events counter {path}: {source}")]
pub struct LostCounterError {
    path: String,
    #[source]
    source: MapError,
}

/// The sum over CPUs of the no-ring counter pinned at `path`.
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
    use crate::event_ring::Drained;

    #[test]
    fn poll_interval_backs_off_when_idle_and_resets_on_a_record() {
        let idle = Drained::default();
        let mut i = POLL_INTERVAL;
        let mut seen = vec![i];
        for _ in 0..6 {
            i = next_interval(i, &idle);
            seen.push(i);
        }
        assert_eq!(
            seen.iter().map(Duration::as_millis).collect::<Vec<_>>(),
            [10, 20, 40, 80, 100, 100, 100]
        );
        let trickle = Drained {
            records: 1,
            ..Drained::default()
        };
        assert_eq!(next_interval(IDLE_POLL_INTERVAL, &trickle), POLL_INTERVAL);
    }

    #[test]
    fn poll_interval_shortens_while_a_ring_fills_fast_and_recovers() {
        let fast = Drained {
            records: 400,
            busiest: event_ring::RING_RECORDS / 2,
            ..Drained::default()
        };
        let mut i = POLL_INTERVAL;
        let mut seen = vec![];
        for _ in 0..5 {
            i = next_interval(i, &fast);
            seen.push(i.as_micros());
        }
        assert_eq!(seen, [5_000, 2_500, 1_250, 1_000, 1_000]);
        let slow = Drained {
            records: 10,
            busiest: 10,
            ..Drained::default()
        };
        let mut back = vec![];
        for _ in 0..5 {
            i = next_interval(i, &slow);
            back.push(i.as_millis());
        }
        assert_eq!(back, [2, 4, 8, 10, 10]);
        let lapped = Drained {
            records: event_ring::RING_RECORDS,
            overwritten: 7,
            busiest: event_ring::RING_RECORDS + 7,
        };
        assert_eq!(next_interval(POLL_INTERVAL, &lapped), Duration::ZERO);
        assert_eq!(next_interval(Duration::ZERO, &slow), BUSY_POLL_INTERVAL);
    }
}
