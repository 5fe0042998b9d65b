//! The console's background work: loading the cache, the MQTT link, the demo's embedded broker
//! and simulated fleet, and polling the outbox. Everything reports to the UI through one
//! bounded channel of [`BackendEvent`]s and wakes egui through a [`Waker`]: at once for an
//! answer the user waits for, at most every [`DATA_REPAINT_EVERY`] for data streaming in. The
//! UI drains the channel once per frame and never blocks on it.
//!
//! Three ways to start: [`Backend::demo`] (embedded broker, synthetic fleet written to a demo
//! cache, simulated devices in-process), [`Backend::attach`] (an existing cache and, if given, a
//! broker), and [`Backend::fixture`] (a fleet in memory, no network: for tests and benchmarks).
//!
//! Each also starts the history worker, a thread that answers [`Backend::request_history`]
//! with a device's `device_events` rows from the cache ([`BackendEvent::DeviceHistory`]) and
//! its hourly telemetry rollups for the device view's plots ([`BackendEvent::DeviceTelemetry`]),
//! so that the UI thread never runs SQL. Requests never block the UI: they go into an unbounded
//! queue of device ids, and the worker answers only the newest one waiting (a user clicking
//! through devices needs the last one, not every one).
//!
//! The same worker reads the rollouts the engine (`convoy rollout run`) recorded in the cache
//! every [`ROLLOUT_POLL`], when no history request is waiting: the newest [`ROLLOUT_LIMIT`]
//! rollout ids, each timeline read into a [`convoy_core::comms::RolloutStory`], sent as
//! [`BackendEvent::Rollouts`] for the war room.
//!
//! Deliberately not here: deciding anything, or writing device state to the cache. When the
//! rollout engine is attached, it will run beside these tasks and report through the same
//! channel; the UI sends it commands, it never reaches into the UI.

use anyhow::{Context, Result};
use convoy_core::devsim::{Faults, SimConfig};
use convoy_core::fleet::Fleet;
use convoy_core::manifest::TrustedKeys;
use convoy_core::synth::{SynthOptions, generate};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

use super::steer::{LocalEngines, NoEngine, Steer, SteerRequest};
use crate::engine::control::OperatorCommand;
use crate::link::broker::EmbeddedBroker;
use crate::link::mqtt::{self, LinkConfig, LinkEvent, Role};
use crate::link::protocol::{Inbound, InboundRejection, Topics};
use crate::store::Store;
use crate::store::events::DeviceEvent;
use crate::store::telemetry::RollupPoint;
use convoy_core::comms::{RecordEntry, RolloutStory};
use convoy_core::rollout::series::HealthSeries;
use convoy_core::time::Timestamp;

/// How many events may wait for the UI; when full, the link stops reading (back-pressure).
pub const CHANNEL_CAPACITY: usize = 20_000;
/// How often the outbox depth is read from the cache.
const OUTBOX_POLL: Duration = Duration::from_secs(2);
/// The most history rows the device view asks for: the newest ones.
pub const HISTORY_LIMIT: usize = 200;
/// The telemetry metrics the device view plots, as the cache names them: battery level, and
/// crashes and reconnects (each sample counts how many happened).
pub const TELEMETRY_METRICS: [&str; 3] = ["battery_pct", "crash_count", "reconnect_count"];
/// How far back the device view's plots go.
pub const TELEMETRY_WINDOW_SECS: i64 = 7 * 24 * 3600;
/// How often the history worker reads the rollouts recorded in the cache.
pub const ROLLOUT_POLL: Duration = Duration::from_secs(3);
/// The most rollouts read for the war room: those with the newest events.
pub const ROLLOUT_LIMIT: usize = 20;

/// The rollouts recorded in the cache, as the history worker last read them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RolloutBoard {
    /// Newest activity first (the war room orders them by trouble).
    pub rollouts: Vec<RolloutStory>,
    /// Timelines that could not be read, one line each naming the rollout.
    pub unreadable: Vec<String>,
    /// Cohort health over time by rollout id, from the engine's replayable log
    /// ([`convoy_core::rollout::series`]); absent for a rollout with no log (recorded before
    /// schema v6, or by hand) or one whose log is larger than [`MAX_HEALTH_LOG_ROWS`].
    pub health: std::collections::BTreeMap<String, Arc<HealthSeries>>,
    /// Each rollout's clock (its first engine run's simulated start, wall start and time
    /// scale), so a screen can say how long ago something happened on the rollout's own clock
    /// (issue 19: a 60x demo showed a 2.5-minute-old rollback as "0 s ago").
    pub clocks: std::collections::BTreeMap<String, crate::store::events::RunClock>,
}

/// The longest rollout log the history worker replays into a health series (a row per health
/// sample: a million-device rollout writes far more); larger ones are not plotted.
pub const MAX_HEALTH_LOG_ROWS: i64 = 2_000_000;

/// Health series already computed, by rollout id, with the log length they were computed at:
/// a log that has not grown is not read again.
#[derive(Default)]
pub(crate) struct HealthCache {
    by_id: std::collections::HashMap<String, (i64, Arc<HealthSeries>)>,
}

impl HealthCache {
    /// The series of every rollout on `board` that has a log, recomputed only where the log
    /// grew since the last read.
    pub(crate) fn fill(&mut self, store: &Store, board: &mut RolloutBoard) {
        for story in &board.rollouts {
            let id = &story.rollout_id;
            // The log's length from its last key (its seqs run from 0 without gaps): one
            // B-tree seek every poll, not a count of every row.
            let rows = store.rollout_log_len(id).unwrap_or(0);
            if rows == 0 || rows > MAX_HEALTH_LOG_ROWS {
                continue;
            }
            let fresh = match self.by_id.get(id) {
                Some((n, series)) if *n == rows => Some(Arc::clone(series)),
                _ => None,
            };
            let series = match fresh {
                Some(s) => s,
                None => match health_of(store, id) {
                    Ok(series) => {
                        let s = Arc::new(series);
                        self.by_id.insert(id.clone(), (rows, Arc::clone(&s)));
                        s
                    }
                    Err(err) => {
                        board
                            .unreadable
                            .push(format!("the health log of {id}: {err:#}"));
                        continue;
                    }
                },
            };
            board.health.insert(id.clone(), series);
        }
    }
}

/// One metric's hourly rollup for one device, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySeries {
    pub metric: &'static str,
    pub points: Vec<RollupPoint>,
}

/// What the history worker is asked: a device, and the time its plots end at.
#[derive(Debug, Clone)]
struct HistoryRequest {
    device_id: String,
    now: Timestamp,
}

/// What background work reports.
#[derive(Debug)]
pub enum BackendEvent {
    /// A step of starting up, for the progress line.
    Stage(String),
    /// The fleet from the cache (once, at start).
    FleetLoaded {
        fleet: Fleet,
        cache: PathBuf,
    },
    Link(LinkStatus),
    Inbound(Inbound),
    Rejected(InboundRejection),
    OutboxDepth(u64),
    /// A device's update history from the cache, newest first, answering
    /// [`Backend::request_history`]; `Err` says why it could not be read.
    DeviceHistory {
        device_id: String,
        events: Result<Vec<DeviceEvent>, String>,
    },
    /// A device's hourly telemetry rollups over the last [`TELEMETRY_WINDOW_SECS`], one series
    /// per [`TELEMETRY_METRICS`] entry in that order, answering [`Backend::request_history`]
    /// after its [`BackendEvent::DeviceHistory`].
    DeviceTelemetry {
        device_id: String,
        series: Result<Vec<TelemetrySeries>, String>,
    },
    /// The rollouts recorded in the cache, read every [`ROLLOUT_POLL`]; `Err` says why the
    /// cache could not be read.
    Rollouts(Result<RolloutBoard, String>),
    /// What the rollout engine attached to the console is doing, in words (the demo's).
    Engine(String),
    /// The answer to an operator command sent with [`Backend::steer`]: the rollout's phase
    /// afterwards in words, or why it was refused.
    Steered {
        rollout_id: String,
        operator: String,
        command: OperatorCommand,
        result: Result<String, String>,
    },
    /// Something failed for good; the text says what and where.
    Failed(String),
}

/// The link as the status bar shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// No broker configured: the console shows the cache only.
    Offline,
    Connecting,
    Connected,
    /// Lost or refused; retrying. The text says why.
    Reconnecting(String),
}

/// What the console's link talks to: an MQTT broker, or a `convoy serve` (`--server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerKind {
    None,
    /// Started by this process for the demo.
    Embedded(String),
    External(String),
    /// A server's API, by its URL: the console listens to no broker.
    Server(String),
}

impl BrokerKind {
    /// What the link connects to, for the toasts: "the broker" or "the server".
    pub fn peer(&self) -> &'static str {
        match self {
            BrokerKind::Server(_) => "the server",
            _ => "the broker",
        }
    }
}

/// How to start the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub devices: usize,
    pub seed: u64,
    /// Simulated seconds per wall second.
    pub time_scale: f64,
    /// The demo cache file (replaced on every start).
    pub cache: PathBuf,
    /// Roll the demo release out with the engine ([`super::demo`]).
    pub rollout: bool,
}

/// The demo cache: `$XDG_CACHE_HOME/convoy/demo/demo.db`, else `~/.cache/convoy/demo/demo.db`,
/// else under the system's temporary directory.
pub fn default_demo_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("convoy").join("demo").join("demo.db")
}

/// The UI's end of the background work.
pub struct Backend {
    rx: mpsc::Receiver<BackendEvent>,
    pub broker: BrokerKind,
    /// Whether this is the built-in demo.
    pub demo: bool,
    repaint: Arc<Waker>,
    /// Device ids for the history worker; `None` if its thread could not start.
    history: Option<std::sync::mpsc::Sender<HistoryRequest>>,
    /// Where operator commands go ([`super::steer`]), and the thread that sends them (`None`
    /// if it could not start).
    steer_target: Arc<dyn Steer>,
    steer_tx: Option<std::sync::mpsc::Sender<SteerRequest>>,
    /// Engine runs in this process that the console steers (the demo's rollout, rollouts the
    /// console dispatches itself): register a run here to make it steerable. `None` when
    /// commands go elsewhere (a cache only, a server).
    pub engines: Option<LocalEngines>,
    /// Simulated seconds per wall second of the fleet this console drives (the demo's
    /// `--demo-time-scale`); 1 for a real fleet. Engine runs the console starts use it.
    pub time_scale: f64,
    /// Alerts this console delivers and shows (`convoy gui --alerts FILE`).
    pub alerts: Option<super::alerts::ConsoleAlerts>,
    _runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("broker", &self.broker)
            .field("demo", &self.demo)
            .finish_non_exhaustive()
    }
}

/// Data-driven repaints (messages from the fleet, the outbox depth, the rollouts read from the
/// cache) are coalesced to at most one per this period: the demo's fleet sends hundreds of
/// messages a second, and a repaint for each kept a software-rendered console drawing as fast
/// as it could (56% of a core with no input, issue 19).
pub const DATA_REPAINT_EVERY: Duration = Duration::from_millis(250);

/// Where the current repaint period ends: `(now, end)` in milliseconds on a clock shared by
/// the whole process. Every data-driven wake (the backend's [`Waker`], the derive worker's
/// results, the status bar's tick) asks for its repaint at a period's end on this one clock, so
/// that wakes from different sources in the same period land on the same frame.
pub fn repaint_period_end() -> (u64, u64) {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    let now = EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64;
    let period = DATA_REPAINT_EVERY.as_millis().max(1) as u64;
    (now, (now / period + 1) * period)
}

/// Asks egui for one repaint at the end of the current repaint period
/// ([`repaint_period_end`]): data has changed and may show, but need not show sooner.
pub fn request_data_repaint(ctx: &egui::Context) {
    let (now, end) = repaint_period_end();
    ctx.request_repaint_after(Duration::from_millis(end - now));
}

/// Wakes the UI for background events: an answer the user waits for at once, data at most
/// once per [`DATA_REPAINT_EVERY`].
///
/// Data wakes are grouped into the periods of [`repaint_period_end`]: the first event of a
/// period asks egui for one repaint at the period's end, the others ask nothing (not even
/// egui's lock). That frame drains every event that arrived before it, and an event after it
/// falls in a later period, so none waits longer than one period to show. eframe keeps the
/// earliest repaint asked for, so a frame drawn for another reason in between loses nothing.
#[derive(Debug)]
pub(crate) struct Waker {
    ctx: OnceLock<egui::Context>,
    /// The end of the latest period a data repaint was asked for ([`repaint_period_end`]).
    asked_until: std::sync::atomic::AtomicU64,
}

impl Waker {
    fn new() -> Self {
        Self {
            ctx: OnceLock::new(),
            asked_until: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A repaint now: an answer to something the user did.
    fn now(&self) {
        if let Some(ctx) = self.ctx.get() {
            ctx.request_repaint();
        }
    }

    /// A repaint at the end of the current period, unless one was already asked for.
    fn data(&self) {
        let Some(ctx) = self.ctx.get() else {
            return;
        };
        let (now, end) = repaint_period_end();
        let before = self
            .asked_until
            .fetch_max(end, std::sync::atomic::Ordering::AcqRel);
        if before < end {
            ctx.request_repaint_after(Duration::from_millis(end - now));
        }
    }
}

/// The sending side, shared by the background threads and tasks.
#[derive(Clone)]
pub(crate) struct Reporter {
    tx: mpsc::Sender<BackendEvent>,
    repaint: Arc<Waker>,
}

impl Reporter {
    /// From a plain thread. False when the UI has gone.
    pub(crate) fn blocking(&self, event: BackendEvent) -> bool {
        let urgent = event.is_answer();
        let ok = self.tx.blocking_send(event).is_ok();
        self.wake(urgent);
        ok
    }

    /// From a task.
    pub(crate) async fn send(&self, event: BackendEvent) -> bool {
        let urgent = event.is_answer();
        let ok = self.tx.send(event).await.is_ok();
        self.wake(urgent);
        ok
    }

    fn wake(&self, urgent: bool) {
        if urgent {
            self.repaint.now();
        } else {
            self.repaint.data();
        }
    }
}

impl BackendEvent {
    /// Whether the event answers something the user did or must see at once (a device they
    /// opened, a command they sent, a failure, the start-up steps), rather than data that
    /// streams in: answers repaint at once, data at most every [`DATA_REPAINT_EVERY`].
    fn is_answer(&self) -> bool {
        !matches!(
            self,
            BackendEvent::Inbound(_)
                | BackendEvent::Rejected(_)
                | BackendEvent::OutboxDepth(_)
                | BackendEvent::Rollouts(_)
                | BackendEvent::Link(_)
        )
    }
}

/// The steering thread for `target`, reporting to `reporter`.
fn steer_worker(
    target: &Arc<dyn Steer>,
    reporter: &Reporter,
) -> Option<std::sync::mpsc::Sender<SteerRequest>> {
    let reporter = reporter.clone();
    super::steer::spawn_worker(Arc::clone(target), move |request, result| {
        reporter.blocking(BackendEvent::Steered {
            rollout_id: request.rollout_id,
            operator: request.operator,
            command: request.command,
            result,
        })
    })
    .ok()
}

impl Backend {
    /// The common parts: the channel to the UI, the async runtime, the history worker, and the
    /// steering thread for `steer`. Each way to start (and `gui/remote.rs`) builds on this and
    /// then starts its own source of events with the returned reporter and runtime handle.
    pub(crate) fn parts(
        broker: BrokerKind,
        demo: bool,
        cache: &Path,
        steer: Arc<dyn Steer>,
    ) -> Result<(Self, Reporter, tokio::runtime::Handle)> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let repaint = Arc::new(Waker::new());
        // Two workers: the link and the simulated fleet; the UI thread is not one of them.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("convoy-console-io")
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let handle = runtime.handle().clone();
        let reporter = Reporter {
            tx,
            repaint: Arc::clone(&repaint),
        };
        let history = Some(spawn_history_worker(cache.to_owned(), reporter.clone())?);
        let steer_tx = steer_worker(&steer, &reporter);
        Ok((
            Self {
                rx,
                broker,
                demo,
                repaint,
                history,
                steer_target: steer,
                steer_tx,
                engines: None,
                time_scale: 1.0,
                alerts: None,
                _runtime: Some(runtime),
            },
            reporter,
            handle,
        ))
    }

    /// The live demo: a synthetic fleet in the demo cache, the embedded broker, the simulated
    /// devices and the console's link, all started on background threads.
    pub fn demo(options: DemoOptions) -> Result<Self> {
        let engines = LocalEngines::default();
        let (mut backend, reporter, handle) = Self::parts(
            BrokerKind::None,
            true,
            &options.cache,
            Arc::new(engines.clone()),
        )?;
        backend.engines = Some(engines.clone());
        backend.time_scale = options.time_scale;
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let port = crate::link::broker::pick_free_port(ip)?;
        let addr = std::net::SocketAddr::new(ip, port);
        backend.broker = BrokerKind::Embedded(format!("mqtt://{addr}"));
        std::thread::Builder::new()
            .name("convoy-demo".into())
            .spawn(move || {
                if let Err(err) = run_demo(&options, addr, &reporter, &handle, &engines) {
                    reporter.blocking(BackendEvent::Failed(format!("{err:#}")));
                }
            })
            .context("starting the demo thread")?;
        Ok(backend)
    }

    /// An existing cache, and a broker if `broker_url` is given.
    pub fn attach(
        cache: PathBuf,
        broker_url: Option<String>,
        prefix: &str,
        auth: mqtt::MqttAuth,
    ) -> Result<Self> {
        let topics =
            Topics::new(prefix).map_err(|e| anyhow::anyhow!("invalid topic prefix {:?}", e.0))?;
        let kind = broker_url
            .clone()
            .map_or(BrokerKind::None, BrokerKind::External);
        let (backend, reporter, handle) = Self::parts(kind, false, &cache, Arc::new(NoEngine))?;
        std::thread::Builder::new()
            .name("convoy-cache".into())
            .spawn(move || {
                if let Err(err) = run_attach(
                    &cache,
                    broker_url.as_deref(),
                    auth,
                    topics,
                    &reporter,
                    &handle,
                ) {
                    reporter.blocking(BackendEvent::Failed(format!("{err:#}")));
                }
            })
            .context("starting the cache thread")?;
        Ok(backend)
    }

    /// A fleet in memory, no broker, no runtime: tests and benchmarks. The returned sender
    /// feeds further events, as the link would. The history worker reads `cache` when asked
    /// (a path with no file answers with an error naming it). Rollouts are steerable once a
    /// test registers an engine run's handle with [`Backend::engines`].
    pub fn fixture(fleet: Fleet, cache: PathBuf) -> (Self, FixtureFeed) {
        let engines = LocalEngines::default();
        let (mut backend, feed) = Self::fixture_with(fleet, cache, Arc::new(engines.clone()));
        backend.engines = Some(engines);
        (backend, feed)
    }

    /// [`Backend::fixture`] steering through `steer` (a test's [`LocalEngines`], or a server).
    pub fn fixture_with(
        fleet: Fleet,
        cache: PathBuf,
        steer: Arc<dyn Steer>,
    ) -> (Self, FixtureFeed) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let repaint = Arc::new(Waker::new());
        let reporter = Reporter {
            tx: tx.clone(),
            repaint: Arc::clone(&repaint),
        };
        // Without the thread, history requests are answered with an error (see
        // `request_history`); the fixture still works for everything else.
        let history = spawn_history_worker(cache.clone(), reporter.clone()).ok();
        let steer_tx = steer_worker(&steer, &reporter);
        let _ = tx.try_send(BackendEvent::FleetLoaded { fleet, cache });
        let _ = tx.try_send(BackendEvent::Link(LinkStatus::Offline));
        // Started: no progress line (and no spinner) once the fleet is in.
        let _ = tx.try_send(BackendEvent::Stage(String::new()));
        (
            Self {
                rx,
                broker: BrokerKind::None,
                demo: false,
                repaint,
                history,
                steer_target: steer,
                steer_tx,
                engines: None,
                time_scale: 1.0,
                alerts: None,
                _runtime: None,
            },
            FixtureFeed { tx },
        )
    }

    /// Lets the background work wake the UI.
    pub fn set_repaint(&self, ctx: &egui::Context) {
        let _ = self.repaint.ctx.set(ctx.clone());
    }

    /// Asks the history worker for `device_id`'s update history and its telemetry up to
    /// `now`; the answers arrive as [`BackendEvent::DeviceHistory`] then
    /// [`BackendEvent::DeviceTelemetry`]. Never blocks. False if the worker is not running (its
    /// thread could not start or has stopped): no answer will come.
    pub fn request_history(&self, device_id: &str, now: Timestamp) -> bool {
        self.history.as_ref().is_some_and(|tx| {
            tx.send(HistoryRequest {
                device_id: device_id.to_owned(),
                now,
            })
            .is_ok()
        })
    }

    /// Whether `rollout_id` can be steered from this console; `Err` says why not (for the
    /// monitor's disabled buttons). Cheap enough for every frame.
    pub fn can_steer(&self, rollout_id: &str) -> Result<(), String> {
        if self.steer_tx.is_none() {
            return Err("the console's steering thread could not start".to_owned());
        }
        self.steer_target.can_steer(rollout_id)
    }

    /// Sends `command` for `rollout_id` as `operator` (see [`super::steer::operator_name`]);
    /// the answer arrives as [`BackendEvent::Steered`]. Never blocks. False if the steering
    /// thread is not running: no answer will come.
    pub fn steer(&self, rollout_id: &str, operator: &str, command: OperatorCommand) -> bool {
        self.steer_tx.as_ref().is_some_and(|tx| {
            tx.send(SteerRequest {
                rollout_id: rollout_id.to_owned(),
                operator: operator.to_owned(),
                command,
            })
            .is_ok()
        })
    }

    /// The next waiting event, if any (never blocks).
    pub fn try_next(&mut self) -> Option<BackendEvent> {
        self.rx.try_recv().ok()
    }
}

/// Feeds events into a fixture backend.
#[derive(Debug, Clone)]
pub struct FixtureFeed {
    tx: mpsc::Sender<BackendEvent>,
}

impl FixtureFeed {
    /// Queues `event`; false when the channel is full or the app has gone.
    pub fn send(&self, event: BackendEvent) -> bool {
        self.tx.try_send(event).is_ok()
    }
}

fn run_demo(
    options: &DemoOptions,
    addr: std::net::SocketAddr,
    reporter: &Reporter,
    handle: &tokio::runtime::Handle,
    engines: &LocalEngines,
) -> Result<()> {
    let now = crate::now();
    reporter.blocking(BackendEvent::Stage(format!(
        "generating a demo fleet of {} devices",
        options.devices
    )));
    let fleet = generate(&SynthOptions {
        devices: options.devices,
        seed: options.seed,
        now,
    });
    reporter.blocking(BackendEvent::Stage(format!(
        "writing the demo cache {}",
        options.cache.display()
    )));
    // The demo starts from a fresh cache every time: a rollout of the last run's would stop
    // the demo rollout from starting under the same id.
    remove_cache_files(&options.cache)?;
    let mut store = Store::open(&options.cache)?;
    store
        .replace_fleet(&fleet, None)
        .with_context(|| format!("writing the demo fleet to {}", options.cache.display()))?;
    reporter.blocking(BackendEvent::FleetLoaded {
        fleet: fleet.clone(),
        cache: options.cache.clone(),
    });
    reporter.blocking(BackendEvent::Stage(format!(
        "starting the embedded broker on {addr}"
    )));
    let broker = EmbeddedBroker::start_for_demo(addr)?;
    let url = broker.url();
    let topics = Topics::default_prefix();
    reporter.blocking(BackendEvent::Link(LinkStatus::Connecting));
    spawn_console_link(
        handle,
        &url,
        mqtt::MqttAuth::default(),
        topics.clone(),
        reporter.clone(),
    )?;
    let rollout = if options.rollout {
        super::demo::prepare(
            &fleet,
            &options.cache,
            &url,
            now,
            options.time_scale,
            options.seed,
        )?
    } else {
        None
    };
    let (faults, trust) = rollout.as_ref().map_or_else(
        || (Faults::default(), TrustedKeys::from_keys([])),
        |r| (r.faults.clone(), r.trust.clone()),
    );
    let sim_options = crate::sim::SimOptions {
        broker_url: url,
        client_id: format!("convoy-demo-sim-{}", std::process::id()),
        topics,
        fleet,
        faults,
        trust,
        seed: options.seed,
        time_scale: options.time_scale,
        tick: Duration::from_millis(200),
        config: SimConfig::default(),
        start: now,
    };
    let sim_reporter = reporter.clone();
    handle.spawn(async move {
        if let Err(err) = crate::sim::run(sim_options, None).await {
            sim_reporter
                .send(BackendEvent::Failed(format!(
                    "the simulated fleet stopped: {err:#}"
                )))
                .await;
        }
    });
    reporter.blocking(BackendEvent::Stage(String::new()));
    if let Some(rollout) = rollout {
        // The devices subscribe first: an offer sent before would wait for their next
        // connection (retained status and resends cover it, a second is simply quicker).
        std::thread::sleep(Duration::from_secs(1));
        reporter.blocking(BackendEvent::Engine(format!(
            "Demo rollout {} of release {} to {} devices, run by this console's engine: its state is in the rollout monitor and the war room (F11)",
            super::demo::ROLLOUT_ID,
            super::demo::RELEASE_ID,
            rollout.devices
        )));
        let done = reporter.clone();
        rollout.start(engines, move |outcome| {
            done.blocking(BackendEvent::Engine(outcome));
        })?;
    }
    poll_outbox(&store, reporter);
    Ok(())
}

/// Removes a cache file and its write-ahead log and shared-memory files, if present.
fn remove_cache_files(cache: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = cache.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "removing the last demo cache {}",
                        Path::new(&name).display()
                    )
                });
            }
        }
    }
    Ok(())
}

fn run_attach(
    cache: &Path,
    broker_url: Option<&str>,
    auth: mqtt::MqttAuth,
    topics: Topics,
    reporter: &Reporter,
    handle: &tokio::runtime::Handle,
) -> Result<()> {
    reporter.blocking(BackendEvent::Stage(format!(
        "loading the cache {}",
        cache.display()
    )));
    let store = Store::open_existing(cache)?;
    let fleet = store
        .load_fleet()
        .with_context(|| format!("loading the fleet from {}", cache.display()))?;
    reporter.blocking(BackendEvent::FleetLoaded {
        fleet,
        cache: cache.to_owned(),
    });
    match broker_url {
        Some(url) => {
            reporter.blocking(BackendEvent::Link(LinkStatus::Connecting));
            spawn_console_link(handle, url, auth, topics, reporter.clone())?;
        }
        None => {
            reporter.blocking(BackendEvent::Link(LinkStatus::Offline));
        }
    }
    reporter.blocking(BackendEvent::Stage(String::new()));
    poll_outbox(&store, reporter);
    Ok(())
}

/// Starts the thread that reads device histories from `cache` on request.
fn spawn_history_worker(
    cache: PathBuf,
    reporter: Reporter,
) -> Result<std::sync::mpsc::Sender<HistoryRequest>> {
    let (tx, rx) = std::sync::mpsc::channel::<HistoryRequest>();
    std::thread::Builder::new()
        .name("convoy-history".into())
        .spawn(move || run_history(&cache, &rx, &reporter))
        .context("starting the device history thread")?;
    Ok(tx)
}

/// The health series of a rollout, folded from its log as it is read: the log is never held
/// whole (reading it into a list at every refresh grew the console's memory with the log, issue
/// 19), and the series is exactly `health_series` of the log.
fn health_of(store: &Store, id: &str) -> Result<convoy_core::rollout::series::HealthSeries> {
    let Some(last) = store.last_rollout_event(id)? else {
        return Ok(convoy_core::rollout::series::HealthSeries::default());
    };
    let mut builder = convoy_core::rollout::series::SeriesBuilder::new(last.at);
    store.for_each_rollout_event(id, |e| builder.push(e))?;
    Ok(builder.finish())
}

/// Answers history requests until the UI (the sender) goes away, and between them reads the
/// recorded rollouts every [`ROLLOUT_POLL`]. The cache is opened when first needed and opened
/// again after a failure: the demo writes it after start.
fn run_history(cache: &Path, rx: &std::sync::mpsc::Receiver<HistoryRequest>, reporter: &Reporter) {
    let mut store: Option<OpenCache> = None;
    let mut health = HealthCache::default();
    let mut next_rollouts = std::time::Instant::now();
    loop {
        let wait = next_rollouts.saturating_duration_since(std::time::Instant::now());
        let request = match rx.recv_timeout(wait) {
            Ok(r) => Some(r),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let Some(mut request) = request else {
            next_rollouts = std::time::Instant::now() + ROLLOUT_POLL;
            let board = match open_store(cache, &mut store) {
                Ok(s) => read_rollouts(s)
                    .map(|mut board| {
                        health.fill(s, &mut board);
                        board
                    })
                    .map_err(|err| format!("{err:#}")),
                Err(err) => Err(err),
            };
            if !reporter.blocking(BackendEvent::Rollouts(board)) {
                return;
            }
            continue;
        };
        // Only the newest request matters; the UI shows one device.
        while let Ok(newer) = rx.try_recv() {
            request = newer;
        }
        let HistoryRequest { device_id, now } = request;
        let (events, series) = match open_store(cache, &mut store) {
            Ok(s) => (
                s.device_history_newest_first(&device_id, HISTORY_LIMIT)
                    .map_err(|err| format!("{err:#}")),
                device_telemetry(s, &device_id, now),
            ),
            Err(err) => (Err(err.clone()), Err(err)),
        };
        if !reporter.blocking(BackendEvent::DeviceHistory {
            device_id: device_id.clone(),
            events,
        }) {
            return;
        }
        if !reporter.blocking(BackendEvent::DeviceTelemetry { device_id, series }) {
            return;
        }
    }
}

/// The worker's open cache, opening it if it is not open yet.
/// The cache as the history worker holds it open, with the identity of the file it opened.
struct OpenCache {
    store: Store,
    file: Option<(u64, u64)>,
}

/// The (device, inode) of the file at `path` now, if there is one.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).ok().map(|_| (0, 0))
    }
}

/// The cache at `cache`, opened when first needed and opened again when the file at that path
/// is no longer the one held open: the demo replaces its cache after the console starts, and
/// a connection to the deleted file would show the previous run's rollouts (issue 19).
fn open_store<'a>(cache: &Path, store: &'a mut Option<OpenCache>) -> Result<&'a Store, String> {
    let now = file_identity(cache);
    if store.as_ref().is_some_and(|open| open.file != now) {
        *store = None;
    }
    if store.is_none() {
        // The identity is read before opening: if the file is replaced while it opens (the
        // demo replaces its cache as the console starts), the next call sees the new file
        // differ and opens it, rather than keep the old one under the new file's identity.
        let file = now;
        let opened = Store::open_existing(cache).map_err(|err| format!("{err:#}"))?;
        *store = Some(OpenCache {
            store: opened,
            file,
        });
    }
    store
        .as_ref()
        .map(|open| &open.store)
        .ok_or_else(|| format!("the cache {} is not open", cache.display()))
}

/// The newest [`ROLLOUT_LIMIT`] rollouts of the cache's `rollout_events`, each read into its
/// story; newest activity first, ties by id.
pub fn read_rollouts(store: &Store) -> Result<RolloutBoard> {
    let ids = store.recent_rollouts(ROLLOUT_LIMIT)?;
    let mut board = RolloutBoard::default();
    for id in ids {
        let entries: Vec<RecordEntry> = store
            .timeline(&id)?
            .into_iter()
            .map(|e| RecordEntry {
                at: e.time,
                // A payload that is not JSON is kept as its text.
                payload: serde_json::from_str(&e.payload)
                    .unwrap_or(serde_json::Value::String(e.payload)),
                kind: e.kind,
                cause: e.cause,
            })
            .collect();
        match convoy_core::comms::story(&id, &entries) {
            Ok(story) => board.rollouts.push(story),
            Err(err) => board.unreadable.push(err.to_string()),
        }
        if let Some(clock) = store.run_clock(&id)? {
            board.clocks.insert(id, clock);
        }
    }
    Ok(board)
}

/// The hourly rollups of [`TELEMETRY_METRICS`] for `device_id`, buckets starting in the
/// [`TELEMETRY_WINDOW_SECS`] before `now` (and the bucket holding `now`).
fn device_telemetry(
    store: &Store,
    device_id: &str,
    now: Timestamp,
) -> Result<Vec<TelemetrySeries>, String> {
    let from = Timestamp::from_secs(now.secs() - TELEMETRY_WINDOW_SECS);
    let to = Timestamp::from_secs(now.secs() + 1);
    TELEMETRY_METRICS
        .iter()
        .map(|&metric| {
            store
                .device_series(device_id, metric, from, to)
                .map(|points| TelemetrySeries { metric, points })
                .map_err(|err| format!("{err:#}"))
        })
        .collect()
}

/// Reads the outbox depth every few seconds until the UI goes away.
fn poll_outbox(store: &Store, reporter: &Reporter) {
    loop {
        let event = match store.outbox_depth() {
            Ok(n) => BackendEvent::OutboxDepth(n),
            Err(err) => BackendEvent::Failed(format!("{err:#}")),
        };
        if !reporter.blocking(event) {
            return;
        }
        std::thread::sleep(OUTBOX_POLL);
    }
}

fn spawn_console_link(
    handle: &tokio::runtime::Handle,
    url: &str,
    auth: mqtt::MqttAuth,
    topics: Topics,
    reporter: Reporter,
) -> Result<()> {
    // Unguessable: a client that knows it could knock the console off the broker.
    let client_id = format!(
        "convoy-console-{}",
        crate::link::acl::random_client_suffix()?
    );
    let mut config = LinkConfig::new(url, &client_id);
    config.auth = auth;
    // The console only watches: nothing queued for it is worth keeping while it is closed.
    config.persistent_session = false;
    let _guard = handle.enter();
    let (link, mut rx) = mqtt::spawn(&config, topics, &Role::Console)?;
    handle.spawn(async move {
        // Holding the handle keeps the connection task alive.
        let _link = link;
        while let Some(event) = rx.recv().await {
            let out = match event {
                LinkEvent::Inbound(i) => BackendEvent::Inbound(i),
                LinkEvent::Rejected(r) => BackendEvent::Rejected(r),
                LinkEvent::Connected => BackendEvent::Link(LinkStatus::Connected),
                LinkEvent::Disconnected(why) => BackendEvent::Link(LinkStatus::Reconnecting(why)),
                LinkEvent::Raw { .. } => continue,
            };
            if !reporter.send(out).await {
                return;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19: every message from the fleet asked egui for an immediate repaint, so with
    /// the UI drawing a frame after each (as eframe does) the console drew as fast as it could
    /// with no input. Data now wakes it at most once per period; answers still wake it at once.
    #[test]
    fn streaming_data_wakes_the_ui_once_per_period_and_answers_wake_it_at_once() {
        let ctx = egui::Context::default();
        let asked = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
        let log = Arc::clone(&asked);
        ctx.set_request_repaint_callback(move |info| {
            if let Ok(mut l) = log.lock() {
                l.push(info.delay);
            }
        });
        let (tx, mut rx) = mpsc::channel(CHANNEL_CAPACITY);
        let waker = Arc::new(Waker::new());
        let _ = waker.ctx.set(ctx.clone());
        let reporter = Reporter { tx, repaint: waker };
        // A frame with nothing to draw; its font texture is not uploaded anywhere.
        let frame = |ctx: &egui::Context| {
            ctx.run_ui(egui::RawInput::default(), |_| {})
                .textures_delta
                .clear();
        };
        let taken = |asked: &std::sync::Mutex<Vec<Duration>>| {
            asked
                .lock()
                .map(|mut l| std::mem::take(&mut *l))
                .unwrap_or_default()
        };
        // egui's first frames ask for repaints of their own (layout settling): not counted.
        for _ in 0..3 {
            frame(&ctx);
        }
        let _ = taken(&asked);
        let started = std::time::Instant::now();
        let (_, first_end) = repaint_period_end();
        let events = 2000;
        for k in 0..events {
            assert!(reporter.blocking(BackendEvent::OutboxDepth(k)));
            // The UI drains the channel and draws a frame (which is when egui forgets the
            // repaints asked for before it).
            while rx.try_recv().is_ok() {}
            frame(&ctx);
        }
        let (_, last_end) = repaint_period_end();
        let elapsed = started.elapsed();
        let data = taken(&asked);
        // One request per period the burst spanned (the frames' own requests aside: they ask
        // for nothing here), each for that period's end, none for an immediate repaint.
        let periods = (last_end - first_end) / DATA_REPAINT_EVERY.as_millis() as u64 + 1;
        assert!(
            !data.is_empty() && data.len() as u64 <= periods,
            "{} repaints asked for {events} events over {elapsed:?} ({periods} periods)",
            data.len()
        );
        assert!(
            data.iter()
                .all(|d| !d.is_zero() && *d <= DATA_REPAINT_EVERY),
            "{data:?}"
        );
        // An answer to the user (a device's history) repaints at once.
        assert!(reporter.blocking(BackendEvent::DeviceHistory {
            device_id: "d".into(),
            events: Ok(Vec::new()),
        }));
        assert_eq!(taken(&asked), [Duration::ZERO]);
    }

    #[test]
    fn the_last_demo_cache_is_removed_with_its_wal_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("demo.db");
        // Nothing there yet: not an error.
        remove_cache_files(&cache).expect("nothing to remove");
        let mut store = Store::open(&cache).expect("cache");
        store
            .append_event(
                "demo-r",
                Timestamp::from_secs(1),
                "rollout.created",
                "demo",
                &serde_json::json!({}),
            )
            .expect("an event");
        drop(store);
        std::fs::write(dir.path().join("demo.db-wal"), b"x").expect("wal");
        std::fs::write(dir.path().join("keep.txt"), b"x").expect("other");
        remove_cache_files(&cache).expect("removed");
        assert!(!cache.exists());
        assert!(!dir.path().join("demo.db-wal").exists());
        assert!(
            dir.path().join("keep.txt").exists(),
            "only the cache's files go"
        );
        let store = Store::open(&cache).expect("a fresh cache");
        assert!(store.timeline("demo-r").expect("timeline").is_empty());
    }

    /// Issue 19: the history worker opened the demo cache before the demo replaced it and
    /// showed the previous run's rollouts from the deleted file.
    #[test]
    fn a_replaced_cache_is_read_as_it_is_now_not_through_the_deleted_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("demo.db");
        let created =
            serde_json::json!({"release": "r1", "waves": [{"name": "all", "devices": 3}]});
        let mut old = Store::open(&cache).expect("the last run's cache");
        old.append_event(
            "last-run",
            Timestamp::from_secs(1),
            "rollout.created",
            "demo",
            &created,
        )
        .expect("an event");
        drop(old);
        let mut held = None;
        let ids = |s: &Store| s.recent_rollouts(10).expect("rollouts");
        assert_eq!(
            ids(open_store(&cache, &mut held).expect("open")),
            ["last-run"]
        );
        // The demo starts: a fresh cache at the same path.
        remove_cache_files(&cache).expect("removed");
        let mut new = Store::open(&cache).expect("this run's cache");
        new.append_event(
            "this-run",
            Timestamp::from_secs(2),
            "rollout.created",
            "demo",
            &created,
        )
        .expect("an event");
        assert_eq!(
            ids(open_store(&cache, &mut held).expect("reopened")),
            ["this-run"]
        );
    }

    #[test]
    fn rollouts_are_read_newest_first_and_a_bad_timeline_is_named() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut store = Store::open(&dir.path().join("c.db")).expect("a new cache");
        let t = |s: i64| Timestamp::from_secs(1_800_000_000 + s);
        let created =
            serde_json::json!({"release": "r1", "waves": [{"name": "all", "devices": 3}]});
        store
            .append_event("old", t(0), "rollout.created", "a", &created)
            .expect("append");
        store
            .append_event("new", t(50), "rollout.created", "a", &created)
            .expect("append");
        store
            .append_event(
                "old",
                t(10),
                "wave.started",
                "timer",
                &serde_json::json!({"wave_started": {"wave": 0}}),
            )
            .expect("append");
        // A timeline whose creation is missing cannot be told.
        store
            .append_event(
                "headless",
                t(20),
                "wave.started",
                "timer",
                &serde_json::json!({}),
            )
            .expect("append");
        let board = read_rollouts(&store).expect("the cache reads");
        let ids: Vec<&str> = board
            .rollouts
            .iter()
            .map(|s| s.rollout_id.as_str())
            .collect();
        assert_eq!(ids, vec!["new", "old"]);
        assert_eq!(board.rollouts[1].waves[0].started_at, Some(t(10)));
        assert_eq!(
            board.unreadable,
            vec![
                "rollout headless: the first recorded event is `wave.started`, not `rollout.created`"
            ]
        );
    }
}
