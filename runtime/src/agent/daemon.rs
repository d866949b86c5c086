//! The agent process: reconciles at start, serves the unix socket, applies generations (from
//! `apply` requests or a watched directory), reads the per-CPU event rings into the flow store.
//!
//! In: [`AgentConfig`]. Out: runs until SIGINT/SIGTERM; the datapath stays in the kernel after
//! it exits (links and maps are pinned), so the next start adopts it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;

use super::api::{Reply, Request, Status};
use super::config::{ConfigError, Interfaces};
use super::datapath::{AgentError, Datapath};
use super::flows::ring::{self, RingReader};
use super::flows::{Flow, FlowStore, Names, StoredEvent};
use super::output::{CompileOutput, is_pinned};
use super::state::StatePaths;
use super::sys;
use crate::events::FlowEvent;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub paths: StatePaths,
    /// `ns/pod: ifname` file, re-read at each apply.
    pub interfaces: Option<PathBuf>,
    /// A compile output directory applied whenever its manifest changes.
    pub watch: Option<PathBuf>,
    /// Flows kept in memory.
    pub flows: usize,
    /// How new tc attachments are made (`--tc-attach`).
    pub tc_attach: super::config::TcAttach,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("socket {path}: {source}")]
    Socket {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

struct FlowState {
    store: FlowStore,
    names: Arc<Names>,
    /// Records overwritten in their ring before the reader got to them.
    overwritten: u64,
    reading: bool,
}

struct Counters {
    applies: u64,
    failed: u64,
    last_latency_us: Option<u64>,
    last_error: Option<String>,
}

struct Shared {
    cfg: AgentConfig,
    datapath: Mutex<Datapath>,
    flows: Mutex<FlowState>,
    counters: Mutex<Counters>,
    follow: broadcast::Sender<Flow>,
    started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn interfaces(&self) -> Result<Interfaces, ConfigError> {
        match &self.cfg.interfaces {
            Some(p) => Interfaces::load(p),
            None => Ok(Interfaces::default()),
        }
    }

    /// Applies `dir`; blocking (bpf() and netlink), so callers run it off the async threads.
    fn apply(&self, dir: &std::path::Path) -> Result<super::ApplyReport, String> {
        let result: Result<super::ApplyReport, String> = (|| {
            let ifaces = self.interfaces().map_err(|e| e.to_string())?;
            let out = CompileOutput::read(dir).map_err(|e| e.to_string())?;
            let mut dp = lock(&self.datapath);
            let report = dp.apply(out, &ifaces).map_err(|e| e.to_string())?;
            if let Some(m) = dp.manifest() {
                lock(&self.flows).names = Arc::new(Names::new(m));
            }
            Ok(report)
        })();
        let mut c = lock(&self.counters);
        match &result {
            Ok(r) => {
                c.applies += 1;
                c.last_latency_us = Some(r.latency_us);
                c.last_error = None;
            }
            Err(e) => {
                c.failed += 1;
                c.last_error = Some(e.clone());
                tracing::error!(
                    "apply of {} refused; the running generation stays: {e}",
                    dir.display()
                );
            }
        }
        result
    }

    fn status(&self) -> Status {
        let (generation, endpoints, programs, lost_pin) = {
            let dp = lock(&self.datapath);
            let lost_pin = dp.manifest().and_then(|m| {
                m.maps
                    .iter()
                    .find(|x| is_pinned(x) && x.name == ring::EVENTS_LOST)
                    .map(|x| dp.paths().maps.join(&x.name))
            });
            (
                dp.state().generation,
                dp.state().endpoints.len(),
                dp.state().program_count(),
                lost_pin,
            )
        };
        // Read per request (one open and one lookup): the counter comes and goes with the
        // generation that declares it.
        let events_lost = lost_pin.and_then(|p| match ring::read_lost(&p) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        });
        let now = self.started.elapsed().as_secs_f64();
        let f = lock(&self.flows);
        let c = lock(&self.counters);
        Status {
            generation,
            endpoints,
            programs,
            flows_seen: f.store.seen,
            flows_current: f.store.len(),
            flows_max: f.store.capacity(),
            flows_per_second: f.store.rate(now),
            events_lost: events_lost.map(|n| n + f.overwritten),
            applies: c.applies,
            failed_applies: c.failed,
            last_apply_latency_us: c.last_latency_us,
            last_error: c.last_error.clone(),
            uptime_seconds: now,
            reading_events: f.reading,
        }
    }

    /// Stores a batch of decoded events under one lock; names them only for followers.
    fn ingest(&self, events: &mut Vec<FlowEvent>, overwritten: u64, clock_offset_ns: i128) {
        let now = self.started.elapsed().as_secs_f64();
        let followers = self.follow.receiver_count() > 0;
        let mut f = lock(&self.flows);
        f.overwritten += overwritten;
        let names = f.names.clone();
        for event in events.drain(..) {
            let time_ns = (event.timestamp_ns as i128 + clock_offset_ns).max(0) as u64;
            let stored = StoredEvent {
                event,
                time_ns,
                names: names.clone(),
            };
            if followers {
                let _ = self.follow.send(stored.flow());
            }
            f.store.push(stored, now);
        }
    }
}

fn clock_offset_ns() -> i128 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    wall - sys::monotonic_ns() as i128
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(cfg: AgentConfig) -> Result<(), DaemonError> {
    let mut datapath = Datapath::open(cfg.paths.clone())?;
    datapath.set_tc_attach(cfg.tc_attach);
    let ifaces = match &cfg.interfaces {
        Some(p) => Interfaces::load(p)?,
        None => Interfaces::default(),
    };
    match datapath.reconcile(&ifaces) {
        Ok(r) => tracing::info!(
            generation = r.generation,
            adopted = r.unchanged.len(),
            reloaded = r.loaded.len(),
            stray = r.stray_pins_removed,
            "reconciled"
        ),
        Err(e) => tracing::error!("reconcile failed, the pinned datapath is left as it is: {e}"),
    }
    let names = Arc::new(datapath.manifest().map(Names::new).unwrap_or_default());
    let (follow, _) = broadcast::channel(4096);
    let shared = Arc::new(Shared {
        flows: Mutex::new(FlowState {
            store: FlowStore::new(cfg.flows),
            names,
            overwritten: 0,
            reading: false,
        }),
        counters: Mutex::new(Counters {
            applies: 0,
            failed: 0,
            last_latency_us: None,
            last_error: None,
        }),
        datapath: Mutex::new(datapath),
        follow,
        started: Instant::now(),
        cfg: cfg.clone(),
    });
    let sock = &cfg.paths.socket;
    let _ = std::fs::remove_file(sock);
    let listener = UnixListener::bind(sock).map_err(|source| DaemonError::Socket {
        path: sock.display().to_string(),
        source,
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o600));
    }
    tokio::spawn(events_task(shared.clone()));
    if let Some(dir) = cfg.watch.clone() {
        tokio::spawn(watch_task(shared.clone(), dir));
    }
    eprintln!("ciliumc agent: serving {}", sock.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| DaemonError::Socket {
            path: "SIGTERM".into(),
            source,
        })?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(serve(shared.clone(), stream)); }
                Err(e) => tracing::warn!("accept: {e}"),
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    let _ = std::fs::remove_file(sock);
    eprintln!("ciliumc agent: stopped; the datapath stays pinned (use --cleanup to remove it)");
    Ok(())
}

async fn send(stream: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

async fn serve(shared: Arc<Shared>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Ok(Some(line)) = lines.next_line().await else {
        return;
    };
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = send(
                &mut write,
                &Reply::Error {
                    message: format!("bad request: {e}"),
                },
            )
            .await;
            return;
        }
    };
    let _ = match req {
        Request::Apply { dir } => {
            let s = shared.clone();
            let r = tokio::task::spawn_blocking(move || s.apply(std::path::Path::new(&dir))).await;
            let reply = match r {
                Ok(Ok(report)) => Reply::Applied { report },
                Ok(Err(message)) => Reply::Error { message },
                Err(e) => Reply::Error {
                    message: e.to_string(),
                },
            };
            send(&mut write, &reply).await
        }
        Request::Status => {
            send(
                &mut write,
                &Reply::Status {
                    status: shared.status(),
                },
            )
            .await
        }
        Request::Observe {
            last,
            follow,
            filter,
        } => {
            // Subscribe before reading the backlog so that nothing falls between the two.
            let mut rx = shared.follow.subscribe();
            let backlog = lock(&shared.flows).store.last(last, &filter);
            for f in backlog {
                if send(&mut write, &Reply::Flow { flow: Box::new(f) })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if follow {
                loop {
                    match rx.recv().await {
                        Ok(f) if filter.matches(&f) => {
                            if send(&mut write, &Reply::Flow { flow: Box::new(f) })
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!("observe --follow client lagged by {n} flows");
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
            send(&mut write, &Reply::Done).await
        }
    };
}

/// Maps the pinned event rings once a generation has created them, then drains them.
async fn events_task(shared: Arc<Shared>) {
    loop {
        let ring_path = {
            let dp = lock(&shared.datapath);
            dp.manifest().and_then(|m| {
                m.maps
                    .iter()
                    .find(|x| is_pinned(x) && x.name == crate::event_ring::EVENTS)
                    .map(|x| dp.paths().maps.join(&x.name))
            })
        };
        if let Some(path) = ring_path.filter(|p| p.exists()) {
            match read_ring(&shared, &path).await {
                Ok(()) => {}
                Err(e) => tracing::warn!("events rings {}: {e}", path.display()),
            }
            lock(&shared.flows).reading = false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Drains the rings whenever the poll timer fires ([`ring::POLL_INTERVAL`] while events flow, up
/// to [`ring::IDLE_POLL_INTERVAL`] when idle), so a lone event is seen within that interval.
async fn read_ring(
    shared: &Arc<Shared>,
    path: &std::path::Path,
) -> Result<(), crate::event_ring::RingError> {
    let mut reader = RingReader::open(path)?;
    lock(&shared.flows).reading = true;
    let mut offset = clock_offset_ns();
    let mut last_sync = Instant::now();
    loop {
        reader.wait().await;
        if last_sync.elapsed() > Duration::from_secs(10) {
            offset = clock_offset_ns();
            last_sync = Instant::now();
        }
        reader.drain(|events, overwritten| shared.ingest(events, overwritten, offset));
    }
}

/// Applies the watched directory whenever its manifest changes.
async fn watch_task(shared: Arc<Shared>, dir: PathBuf) {
    let mut last: Option<Vec<u8>> = None;
    loop {
        if let Ok(bytes) = tokio::fs::read(dir.join("manifest.json")).await
            && last.as_ref() != Some(&bytes)
        {
            last = Some(bytes);
            let s = shared.clone();
            let d = dir.clone();
            // Refusals are logged and counted by `apply`.
            if let Ok(Ok(r)) = tokio::task::spawn_blocking(move || s.apply(&d)).await {
                tracing::info!(
                    generation = r.generation,
                    "applied watched {}",
                    dir.display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// [`run`] on a tokio runtime of its own, for callers without one (the CLI).
pub fn run_blocking(cfg: AgentConfig) -> Result<(), DaemonError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| DaemonError::Socket {
            path: "tokio runtime".into(),
            source,
        })?;
    rt.block_on(run(cfg))
}
