//! `convoy serve`: the cache behind an authenticated HTTP JSON API (issue 9, first slice), so
//! that consoles, war-room walls and scripts read one fleet and its rollouts over the network.
//!
//! - [`auth`]: operators, roles, API tokens stored as SHA-256 hashes, the per-token rate limit.
//! - [`query`]: the read queries on the cache (fleet, devices, rollouts, findings).
//! - [`api`]: routing, authentication, role checks, body limits and JSON errors, the handlers.
//! - [`stream`]: the live event stream (server-sent events), one poller shared by all clients.
//! - [`tls`]: TLS from PEM files.
//!
//! It is built the way the artifact server (`link::http::server`) is: hyper 1 connections with
//! an axum router, accepted by `link::http::accept` (connections bounded in all and per client
//! address, TLS handshake and request head timeouts), and a shutdown that lets responses in
//! flight finish. Event streams are bounded per token and in all ([`stream::StreamSlots`]). Blocking SQLite work runs on tokio's blocking pool, on a
//! small pool of connections to the cache (WAL mode lets readers run beside one writer).
//!
//! - [`host`]: engine runs hosted by the server process, which the rollout control endpoints
//!   (pause, resume, roll back, override, abort) reach through their control channels.
//!
//! - [`requests`]: rollout requests and their approvals; an approved request is dispatched by
//!   the server (an engine run it hosts) when it was given dispatch settings.
//!
//! The remote console (`convoy gui --server URL`, `crate::remote`) is a client of [`api`]: it
//! copies the fleet (`GET /fleet/export`), the timelines and the engine logs
//! (`GET /rollouts/{id}/log`) and steers through the control endpoints.
//!
//! What it is not yet: there is no hawkBit DDI device endpoint inside it; docs/SERVE.md lists
//! what of issue 9 is not built.

mod admin;
pub mod api;
// Tokens, requests and hosted runs are use cases every front end shares (`ops/`); these
// names keep the paths the server's handlers and tests have always used.
pub use crate::ops::hosting as host;
pub use crate::ops::tokens as auth;
mod metrics;
mod releases;
pub use crate::ops::requests;
pub mod stream;

use anyhow::{Context, Result, bail};
use axum::Router;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::store::Store;

// The connection plumbing (slots, accept, HTTP/1.1 with graceful shutdown) is shared by every
// server; event streams end at once on shutdown.
pub(crate) use crate::link::http::accept::stopped;
use crate::link::http::accept::{self, Accept, AcceptCounters, Limits};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub cache: PathBuf,
    /// `127.0.0.1:0` picks a free port; [`Server::addr`] tells which.
    pub listen: SocketAddr,
    /// PEM certificate chain and private key; both or neither.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Request bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// Requests per second per token, sustained.
    pub rate_per_sec: f64,
    /// Requests per token allowed at once before the rate applies.
    pub rate_burst: u32,
    /// Connections served at once; further clients wait to be accepted.
    pub max_connections: usize,
    /// Connections served at once from one client address; more are refused (`None`:
    /// [`Limits::default_per_client`], a quarter of `max_connections`).
    pub max_connections_per_client: Option<usize>,
    /// Connections to the cache for request handlers.
    pub db_connections: usize,
    /// How often the event stream polls the cache.
    pub poll_interval: Duration,
    /// A connection that has not sent a whole request head within this time is closed.
    pub header_read_timeout: Duration,
    /// A TLS handshake that has not ended within this time is cut off.
    pub tls_handshake_timeout: Duration,
    /// Event streams open at once on one token; more get 429.
    pub max_streams_per_token: usize,
    /// Event streams open at once in all; more get 503. Below `max_connections`, so that
    /// streams never hold every connection.
    pub max_streams: usize,
    /// Time between keep-alive comments on an idle event stream.
    pub keepalive_interval: Duration,
    /// Engine runs hosted by this process that `POST /rollouts/{id}/{command}` reaches (see
    /// [`host::host_rollout`]).
    pub controls: Vec<crate::engine::control::ControlHandle>,
    /// The trusted keys that requested releases must verify against (default: `trust/`
    /// beside the cache, as for `convoy rollout run`).
    pub trust: Option<PathBuf>,
    /// The arguments of `convoy rollout run` that every approved request is dispatched with
    /// (broker, TLS, time scale, ...); the server adds the cache, release, plan, rollout id,
    /// requester and approvers. `None`: approved requests wait for a server that has them.
    pub dispatch: Option<crate::ops::runs::RunArgs>,
}

impl ServeConfig {
    pub fn new(cache: PathBuf, listen: SocketAddr) -> Self {
        Self {
            cache,
            listen,
            tls: None,
            max_body_bytes: 64 * 1024,
            rate_per_sec: 50.0,
            rate_burst: 100,
            max_connections: 256,
            max_connections_per_client: None,
            db_connections: 4,
            poll_interval: Duration::from_millis(200),
            header_read_timeout: accept::DEFAULT_HEADER_TIMEOUT,
            tls_handshake_timeout: accept::DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            max_streams_per_token: 4,
            max_streams: 64,
            keepalive_interval: Duration::from_secs(15),
            controls: Vec::new(),
            trust: None,
            dispatch: None,
        }
    }

    /// The connection limits this configuration asks for.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_per_client: self
                .max_connections_per_client
                .unwrap_or_else(|| Limits::default_per_client(self.max_connections)),
            header_timeout: self.header_read_timeout,
            tls_handshake_timeout: self.tls_handshake_timeout,
        }
    }
}

/// Counts of what the server answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeStats {
    pub requests: u64,
    pub unauthorized: u64,
    pub forbidden: u64,
    pub rate_limited: u64,
    pub too_large: u64,
    pub bad_request: u64,
    pub streams: u64,
    /// Event streams refused by `max_streams_per_token` or `max_streams`.
    pub streams_refused: u64,
    /// Connections refused because their client address had its share open already.
    pub refused_connections: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub unauthorized: AtomicU64,
    pub forbidden: AtomicU64,
    pub rate_limited: AtomicU64,
    pub too_large: AtomicU64,
    pub bad_request: AtomicU64,
    pub streams: AtomicU64,
    pub streams_refused: AtomicU64,
    pub accept: Arc<AcceptCounters>,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ServeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServeStats {
            requests: get(&self.requests),
            unauthorized: get(&self.unauthorized),
            forbidden: get(&self.forbidden),
            rate_limited: get(&self.rate_limited),
            too_large: get(&self.too_large),
            bad_request: get(&self.bad_request),
            streams: get(&self.streams),
            streams_refused: get(&self.streams_refused),
            refused_connections: self.accept.refused_per_client(),
        }
    }
}

type Job = Box<dyn FnOnce(&Store) + Send>;

/// A fixed set of worker threads, each with its own connection to the cache (a `Store` stays on
/// the thread that opened it), taking jobs from one queue.
pub(crate) struct Pool {
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Pool {
    fn open(cache: &std::path::Path, n: usize) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for i in 0..n.max(1) {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
            let rx = Arc::clone(&rx);
            let cache = cache.to_owned();
            let worker = std::thread::Builder::new()
                .name(format!("serve-db-{i}"))
                .spawn(move || {
                    let store = match Store::open_existing(&cache) {
                        Ok(s) => {
                            let _ = ready_tx.send(Ok(()));
                            s
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        match job {
                            Ok(job) => job(&store),
                            Err(_) => break,
                        }
                    }
                })
                .context("starting a cache worker")?;
            ready_rx
                .recv()
                .context("a cache worker stopped while opening the cache")??;
            workers.push(worker);
        }
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
        })
    }

    /// Runs `job` on a worker's connection and waits for its answer.
    pub(crate) async fn run<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = tx.send(job(store));
        });
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .context("the server is stopping")?
            .send(job)
            .map_err(|_| anyhow::anyhow!("every cache worker has stopped"))?;
        rx.await.context("a cache job panicked")?
    }

    /// Stops the workers once the queued jobs are done.
    fn close(&self) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        for w in workers {
            let _ = w.join();
        }
    }
}

/// What every request handler shares.
pub(crate) struct AppState {
    pub config: ServeConfig,
    pub pool: Arc<Pool>,
    pub limiter: auth::RateLimiter,
    pub counters: Counters,
    pub events: broadcast::Sender<stream::Frame>,
    /// The event streams open, per token and in all.
    pub streams: Arc<stream::StreamSlots>,
    pub stop: watch::Receiver<bool>,
    /// Engine runs this server started for approved requests.
    pub runs: Mutex<Vec<host::HostedRun>>,
    /// Decisions on one request at a time, so that two approvals arriving together cannot both
    /// see the request unapproved and dispatch it twice.
    pub decide: tokio::sync::Mutex<()>,
    /// Request counts and latencies for `GET /metrics`.
    pub metrics: crate::prom::Registry,
}

impl AppState {
    /// The control handle of a run this process hosts: one it was started with or one it
    /// dispatched.
    pub(crate) fn control(
        &self,
        rollout_id: &str,
    ) -> Option<crate::engine::control::ControlHandle> {
        self.config
            .controls
            .iter()
            .find(|h| h.rollout_id() == rollout_id)
            .cloned()
            .or_else(|| {
                self.runs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .find(|r| r.rollout_id() == rollout_id)
                    .map(|r| r.control.clone())
            })
    }

    /// Whether this process hosts a run of `rollout_id`.
    pub(crate) fn hosts(&self, rollout_id: &str) -> bool {
        self.control(rollout_id).is_some()
    }
}

/// Continues every approved rollout of the cache that started and did not end (the server
/// stopped or crashed under it), as `convoy rollout run --resume` would, with the dispatch
/// settings `base`; skips the ones in `hosted`. A rollout that cannot be resumed is reported
/// on standard error and left for an operator; it does not stop the server.
fn resume_unfinished(
    cache: &std::path::Path,
    trust: &std::path::Path,
    base: &crate::ops::runs::RunArgs,
    hosted: &[String],
) -> Result<Vec<host::HostedRun>> {
    let store = Store::open_existing(cache)?;
    let mut runs = Vec::new();
    for request in requests::unfinished(&store)? {
        let id = request.record.rollout_id.clone();
        if hosted.contains(&id) {
            continue;
        }
        match requests::host(&store, &request, cache, trust, base, true) {
            Ok(run) => {
                eprintln!("resuming rollout {id}: it had started and not ended");
                runs.push(run);
            }
            Err(e) => eprintln!("rollout {id} is unfinished and could not be resumed: {e:#}"),
        }
    }
    Ok(runs)
}

/// A running server. Dropping it stops accepting; [`Self::shutdown`] also waits.
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    state: Arc<AppState>,
    _poller: stream::Poller,
}

impl Server {
    /// Opens the cache (upgrading its schema), binds, and starts serving on the current tokio
    /// runtime.
    pub async fn start(config: ServeConfig) -> Result<Self> {
        let limits = config.limits();
        limits.check()?;
        if config.max_streams_per_token == 0 || config.max_streams == 0 {
            bail!("--max-streams-per-token and --max-streams must be at least 1");
        }
        if config.max_streams_per_token > config.max_streams {
            bail!(
                "--max-streams-per-token ({}) must not exceed --max-streams ({})",
                config.max_streams_per_token,
                config.max_streams
            );
        }
        if config.max_streams >= config.max_connections {
            bail!(
                "--max-streams ({}) must be below --max-connections ({}), so that event streams never hold every connection",
                config.max_streams,
                config.max_connections
            );
        }
        if !(config.rate_per_sec.is_finite() && config.rate_per_sec > 0.0) {
            bail!(
                "the rate limit must be a positive number of requests per second, not {}",
                config.rate_per_sec
            );
        }
        if !config.cache.is_file() {
            bail!("no fleet cache at {}", config.cache.display());
        }
        let acceptor = match &config.tls {
            Some((cert, key)) => Some(crate::link::http::tls::acceptor(cert, key)?),
            None => None,
        };
        let cache = config.cache.clone();
        let db_connections = config.db_connections;
        let pool = tokio::task::spawn_blocking(move || Pool::open(&cache, db_connections))
            .await
            .context("opening the cache")??;
        let resumed = match &config.dispatch {
            Some(base) => {
                let (cache, trust, base) = (
                    config.cache.clone(),
                    crate::ops::settings::trust_dir(config.trust.as_deref(), &config.cache),
                    base.clone(),
                );
                let hosted: Vec<String> = config
                    .controls
                    .iter()
                    .map(|c| c.rollout_id().to_owned())
                    .collect();
                tokio::task::spawn_blocking(move || {
                    resume_unfinished(&cache, &trust, &base, &hosted)
                })
                .await
                .context("resuming unfinished rollouts")??
            }
            None => Vec::new(),
        };
        let cache = config.cache.clone();
        let poll_interval = config.poll_interval;
        let (events, _) = broadcast::channel(4096);
        let poller = {
            let events = events.clone();
            tokio::task::spawn_blocking(move || {
                stream::Poller::start(&cache, poll_interval, events)
            })
            .await
            .context("starting the event poller")??
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let (stop, stop_rx) = watch::channel(false);
        let state = Arc::new(AppState {
            limiter: auth::RateLimiter::new(config.rate_per_sec, config.rate_burst),
            config: config.clone(),
            pool: Arc::new(pool),
            counters: Counters::default(),
            events,
            streams: Arc::new(stream::StreamSlots::new(
                config.max_streams_per_token,
                config.max_streams,
            )),
            stop: stop_rx.clone(),
            runs: Mutex::new(resumed),
            decide: tokio::sync::Mutex::new(()),
            metrics: crate::prom::Registry::default(),
        });
        let router = Router::new()
            .fallback(api::handle)
            .with_state(Arc::clone(&state));
        let tls = acceptor.is_some();
        let accept = Accept {
            tls: acceptor,
            limits,
            counters: Arc::clone(&state.counters.accept),
            server: "convoy serve",
        };
        let task = tokio::spawn(accept::serve(
            listener,
            router,
            accept,
            stop_rx,
            std::convert::identity,
        ));
        Ok(Self {
            addr,
            tls,
            stop,
            task: Some(task),
            state,
            _poller: poller,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn stats(&self) -> ServeStats {
        self.state.counters.snapshot()
    }

    /// Takes the engine runs this server dispatched for approved requests, so that the caller
    /// can stop them (resumable, as Ctrl-C leaves `convoy rollout run`) or wait for them.
    pub fn take_runs(&self) -> Vec<host::HostedRun> {
        std::mem::take(
            &mut *self
                .state
                .runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Stops accepting, ends event streams, lets other responses finish (a few seconds at
    /// most), and returns once every connection is closed.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            // A panic in the accept loop has nothing left to clean up.
            let _ = task.await;
        }
        let pool = Arc::clone(&self.state.pool);
        let _ = tokio::task::spawn_blocking(move || pool.close()).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
