//! The console application: state, the once-per-frame logic, and the shell (top bar, navigation,
//! status bar, toasts, shortcuts) around the views.
//!
//! Data flows one way. Background work reports [`BackendEvent`]s; [`ConsoleApp::logic`] drains
//! them into the [`FleetModel`] (forwarding each to the derive worker), applies the
//! [`UiCommand`]s the views queued in the previous frame (starting the work they ask for through
//! the views' state or the backend), sends the worker a changed query, swaps in the worker's
//! newest [`Derived`] (classes, filter, sort), and prepares the view about to draw (its first
//! listing, its workers' answers, the derive worker's grid or summaries). No fleet-sized work
//! happens here on a data or query change. [`ConsoleApp::ui`] only draws: each view gets its own
//! state, a [`ViewContext`] and the [`Commands`] queue. UI preferences persist through eframe's
//! storage; fleet data lives in the cache.

use convoy_core::time::Timestamp;
use egui::{Align2, Color32, Key, KeyboardShortcut, Modifiers, RichText};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::gui::backend::{Backend, BackendEvent, BrokerKind, LinkStatus};
pub use crate::gui::derive::Derived;
use crate::gui::derive::{DeriveRequest, DeriveWorker, Query};
use crate::gui::map::MapState;
use crate::gui::model::{ColorMode, FleetModel};
use crate::gui::query::{Column, Filter};
use crate::gui::tokens;
use crate::gui::view::{Commands, ViewContext};

/// The key under which UI state is persisted.
pub const STATE_KEY: &str = "convoy-console-v1";
/// Events drained per frame at most, so that a burst never stalls a frame.
const EVENTS_PER_FRAME: usize = 20_000;
/// While data streams in, the derive worker answers at most this often.
const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// How long until the status bar's next tick: the next whole second of the repaint period
/// clock, which is also the end of a data repaint period.
fn status_tick() -> Duration {
    const {
        assert!(1000 % crate::gui::backend::DATA_REPAINT_EVERY.as_millis() == 0);
    }
    let (now, _) = crate::gui::backend::repaint_period_end();
    Duration::from_millis(1000 - now % 1000)
}

/// Where the console's time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    System,
    /// Tests and benchmarks: a fixed instant.
    Fixed(Timestamp),
}

impl Clock {
    pub fn now(self) -> Timestamp {
        match self {
            Clock::System => crate::now(),
            Clock::Fixed(t) => t,
        }
    }
}

/// The views of the left navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum View {
    #[default]
    Map,
    Table,
    Device,
    Cohorts,
    WarRoom,
    Findings,
    Releases,
    Planner,
    Approvals,
    Monitor,
    Reports,
}

impl View {
    pub const ALL: [View; 11] = [
        View::Map,
        View::Table,
        View::Device,
        View::Cohorts,
        View::WarRoom,
        View::Findings,
        View::Releases,
        View::Planner,
        View::Approvals,
        View::Monitor,
        View::Reports,
    ];

    pub fn label(self) -> &'static str {
        match self {
            View::Map => "Map",
            View::Table => "Fleet table",
            View::Device => "Device",
            View::Cohorts => "Cohorts",
            View::WarRoom => "War room",
            View::Findings => "Findings",
            View::Releases => "Releases",
            View::Planner => "Planner",
            View::Approvals => "Approvals",
            View::Monitor => "Rollout monitor",
            View::Reports => "Reports",
        }
    }
}

/// How many answers to operator commands the console keeps.
pub const STEER_ANSWERS_KEPT: usize = 50;

/// An operator command this console sent and what became of it.
#[derive(Debug, Clone)]
pub struct SteerAnswer {
    pub rollout_id: String,
    pub operator: String,
    pub command: crate::engine::control::OperatorCommand,
    /// The rollout's phase afterwards in words, or why it was refused.
    pub result: Result<String, String>,
}

/// Theme choice, persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Theme {
    #[default]
    Dark,
    Light,
}

/// Everything about the UI that persists between runs. New fields need `#[serde(default)]`
/// (the struct has it), so that an older save still loads.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct UiState {
    pub view: View,
    /// Where the war room returns to.
    pub previous_view: View,
    pub theme: Theme,
    pub ui_scale: f32,
    pub color_mode: ColorMode,
    pub filter: Filter,
    pub sort: Column,
    pub sort_descending: bool,
    /// Map centre (lat, lon) and zoom.
    pub map_center: Option<(f64, f64)>,
    pub map_zoom: f64,
    /// The cache the console last showed.
    pub last_cache: Option<String>,
    pub show_nav: bool,
    /// Fleet table columns the user hid (never [`Column::Id`]). Absent in older saves.
    #[serde(default)]
    pub hidden_columns: Vec<Column>,
}

impl Default for UiState {
    fn default() -> Self {
        Self {
            view: View::Map,
            previous_view: View::Map,
            theme: Theme::Dark,
            ui_scale: 1.0,
            color_mode: ColorMode::UpdateState,
            filter: Filter::default(),
            sort: Column::Id,
            sort_descending: false,
            map_center: None,
            map_zoom: 3.0,
            last_cache: None,
            show_nav: true,
            hidden_columns: Vec::new(),
        }
    }
}

/// What the views ask the app to do; applied once per frame in [`ConsoleApp::logic`].
#[derive(Debug, Clone, PartialEq)]
pub enum UiCommand {
    Show(View),
    /// Select a device (index) and show its detail.
    OpenDevice(usize),
    /// Make a named cohort of these devices (indices, ascending).
    CreateCohort {
        name: String,
        devices: Vec<u32>,
    },
    DeleteCohort(usize),
    /// Something the saved cohorts ask for: save, delete, or search for one.
    SavedCohorts(crate::gui::cohorts::SavedCohortsCommand),
    /// The name typed for saving the current search as a cohort.
    SavedCohortName(String),
    ToggleWarRoom,
    SetTheme(Theme),
    SetColorMode(ColorMode),
    /// Multiply the UI scale.
    ScaleUi(f32),
    ResetUiScale,
    /// Centre the map on (lat, lon) at zoom.
    FocusMap {
        lat: f64,
        lon: f64,
        zoom: f64,
    },
    ClearFilter,
    /// Show or hide the left navigation.
    ToggleNav,
    /// Ask the backend again for the selected device's update history.
    ReloadHistory,
    /// Show or hide a fleet table column (the device column always shows).
    SetColumnVisible(Column, bool),
    /// Show only devices of this colour class (`None`: every class).
    SetClassFilter(Option<u8>),
    /// Sort the fleet table by `column`.
    SetSort {
        column: Column,
        descending: bool,
    },
    /// Send an operator command to the engine that runs `rollout_id`, as `operator`.
    Steer {
        rollout_id: String,
        operator: String,
        command: crate::engine::control::OperatorCommand,
    },
    /// Something the approvals view asks for: listing, requesting, deciding, dispatching.
    Approvals(crate::gui::approvals::ApprovalsCommand),
    /// Something the findings view asks for: listing, opening or saving findings.
    Findings(crate::gui::findings::FindingsCommand),
    /// Something the releases view asks for: checking manifests, a file dialog, signing.
    Releases(crate::gui::releases::ReleasesCommand),
    /// Something the map asks for: a file dialog, an MBTiles file.
    Map(crate::gui::map::MapCommand),
    /// Something the planner asks for: checking releases, loading files, saving, exporting.
    Planner(crate::gui::planner::PlannerCommand),
    /// Something the reports view asks for: reading a report, exporting it, a save dialog.
    Report(crate::gui::report::ReportCommand),
}

/// The selected device's update history from the cache, as far as the backend has answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryState {
    /// Asked for; the history worker has not answered yet.
    Loading,
    /// Newest first.
    Loaded(Vec<crate::store::events::DeviceEvent>),
    /// Could not be read; the text says why.
    Failed(String),
}

/// The update history of one device, as the device view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHistory {
    pub device_id: String,
    pub state: HistoryState,
}

/// The selected device's telemetry rollups from the cache, as far as the backend has answered.
#[derive(Debug, Clone, PartialEq)]
pub enum TelemetryState {
    Loading,
    /// One series per [`crate::gui::backend::TELEMETRY_METRICS`] entry, in that order.
    Loaded(Vec<crate::gui::backend::TelemetrySeries>),
    Failed(String),
}

/// The telemetry of one device, as the device view plots it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceTelemetry {
    pub device_id: String,
    pub state: TelemetryState,
}

/// A named set of devices, made on the map or from a filter. Lives for the session.
#[derive(Debug, Clone, PartialEq)]
pub struct Cohort {
    pub name: String,
    /// Device indices, ascending.
    pub devices: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ToastKind {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone)]
struct Toast {
    text: String,
    kind: ToastKind,
    until: Instant,
}

/// How the console waits for the derive worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeriveMode {
    /// The UI keeps the previous result and swaps in the worker's answer on a later frame.
    Background,
    /// Every frame that sent the worker something waits for its answer: deterministic frames
    /// for a fixed clock (tests).
    Wait,
}

/// The [`ViewContext`] of `$app` (a `ConsoleApp`) for this frame: a macro rather than a method,
/// so that it borrows only the fields it names and a view can hold its own state mutably beside
/// it.
macro_rules! view_context {
    ($app:expr) => {
        ViewContext {
            state: &$app.state,
            model: $app.model.as_ref(),
            derived: &$app.derived,
            cohorts: &$app.cohorts,
            selected: $app.selected,
            history: $app.history.as_ref(),
            telemetry: $app.telemetry.as_ref(),
            rollouts: $app.rollouts.as_ref(),
            rollout_target: crate::gui::monitor::target_of(&$app.monitor, $app.rollouts.as_ref()),
            now: $app.clock.now(),
            clock_runs: $app.clock == Clock::System,
            warroom_since: $app.warroom_since,
            link: &$app.link,
            broker: &$app.backend.broker,
            can_steer: &|id: &str| $app.backend.can_steer(id),
            steered: &$app.steered,
            steered_total: $app.steered_total,
            cache: $app.cache.as_deref(),
        }
    };
}

/// The console.
pub struct ConsoleApp {
    pub state: UiState,
    /// The background work; views steer rollouts through it (`can_steer`, `steer`).
    pub(crate) backend: Backend,
    clock: Clock,
    pub model: Option<FleetModel>,
    pub derived: Derived,
    derive: Option<DeriveWorker>,
    /// Why there is no derive worker, if its thread could not start.
    derive_error: Option<String>,
    pub derive_mode: DeriveMode,
    /// The query the worker was last sent.
    sent_query: Option<Query>,
    /// The map level the worker was last sent.
    sent_level: Option<u8>,
    /// Whether the worker was last told the cohort view shows.
    sent_summaries: bool,
    /// Requests sent up to and including the latest fleet load: older results are dropped.
    load_seq: u64,
    /// Requests the result shown now reflects.
    derived_seen: u64,
    /// How long the worker took for the result shown now.
    pub derive_compute: Duration,
    stage: String,
    cache: Option<PathBuf>,
    link: LinkStatus,
    outbox_depth: Option<u64>,
    failures: Vec<String>,
    /// What the views asked for this frame; applied in the next [`Self::logic`].
    commands: Commands,
    selected: Option<usize>,
    pub cohorts: Vec<Cohort>,
    /// The selected device's update history (requested when the device is opened).
    history: Option<DeviceHistory>,
    /// The selected device's telemetry rollups (requested with the history).
    pub telemetry: Option<DeviceTelemetry>,
    toasts: Vec<Toast>,
    pub map: MapState,
    cohort_cache: crate::gui::cohorts::CohortCache,
    applied_style: Option<(Theme, bool)>,
    palette: crate::gui::palette::PaletteState,
    /// The rollouts recorded in the cache, as the history worker last read them; `None` until
    /// it first answers.
    pub rollouts: Option<Result<crate::gui::backend::RolloutBoard, String>>,
    /// What the engine attached to this console is doing (the demo's rollout), in words.
    pub engine_note: Option<String>,
    /// The answers to the operator commands this console sent, oldest first (the newest
    /// [`STEER_ANSWERS_KEPT`]).
    pub steered: Vec<SteerAnswer>,
    /// How many answers to operator commands have arrived in all (`steered` keeps the newest).
    steered_total: u64,
    /// When the war room was last entered: its rollout cycle counts from here.
    warroom_since: Timestamp,
    /// The findings view: the form, its scorecard and the stored findings.
    pub findings: crate::gui::findings::FindingsState,
    /// The releases view: the manifests with their signature state, and the create form.
    pub releases: crate::gui::releases::ReleasesState,
    /// The planner view: a verified release planned against the fleet, with editable waves.
    pub planner: crate::gui::planner::PlannerState,
    /// The approvals view: rollout requests, their approvals and dispatch.
    pub approvals: crate::gui::approvals::ApprovalsState,
    /// The rollout monitor: one rollout's waves, adoption, health and controls.
    pub monitor: crate::gui::monitor::MonitorState,
    /// The reports view: a rollout's timeline export, fleet metrics and communication drafts.
    reports: crate::gui::report::ReportState,
    /// One copy of the fleet for the scoring and planning workers, made the first time either
    /// needs it after a load (the model's own fleet changes in place with live status).
    shared_fleet: Option<std::sync::Arc<convoy_core::fleet::Fleet>>,
}

impl std::fmt::Debug for ConsoleApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleApp")
            .field("view", &self.state.view)
            .field("devices", &self.model.as_ref().map(FleetModel::len))
            .finish_non_exhaustive()
    }
}

impl ConsoleApp {
    /// Builds the app around `backend`. `storage` restores the UI state of the last run.
    pub fn new(
        ctx: &egui::Context,
        storage: Option<&dyn eframe::Storage>,
        backend: Backend,
        clock: Clock,
    ) -> Self {
        let state: UiState = storage
            .and_then(|s| eframe::get_value(s, STATE_KEY))
            .unwrap_or_default();
        backend.set_repaint(ctx);
        // Requests approved here are dispatched to an engine in this process when the console
        // has its own (the demo's embedded broker); otherwise a server dispatches them.
        let local_dispatch = crate::gui::approvals::LocalDispatch::for_backend(
            backend.engines.as_ref(),
            &backend.broker,
            backend.time_scale,
        );
        let mut app = Self {
            state,
            backend,
            clock,
            model: None,
            derived: Derived::default(),
            derive: None,
            derive_error: None,
            derive_mode: DeriveMode::Wait,
            sent_query: None,
            sent_level: None,
            sent_summaries: false,
            load_seq: 0,
            derived_seen: 0,
            derive_compute: Duration::ZERO,
            stage: "starting".into(),
            cache: None,
            link: LinkStatus::Offline,
            outbox_depth: None,
            failures: Vec::new(),
            commands: Commands::default(),
            selected: None,
            cohorts: Vec::new(),
            history: None,
            telemetry: None,
            toasts: Vec::new(),
            map: MapState::default(),
            cohort_cache: crate::gui::cohorts::CohortCache::default(),
            applied_style: None,
            palette: crate::gui::palette::PaletteState::default(),
            rollouts: None,
            engine_note: None,
            steered: Vec::new(),
            steered_total: 0,
            warroom_since: clock.now(),
            findings: crate::gui::findings::FindingsState::default(),
            releases: crate::gui::releases::ReleasesState::default(),
            planner: crate::gui::planner::PlannerState::default(),
            approvals: crate::gui::approvals::ApprovalsState::default(),
            monitor: crate::gui::monitor::MonitorState::default(),
            reports: crate::gui::report::ReportState::default(),
            shared_fleet: None,
        };
        let throttle = match clock {
            Clock::System => REFRESH_EVERY,
            Clock::Fixed(_) => Duration::ZERO,
        };
        app.derive_mode = match clock {
            Clock::System => DeriveMode::Background,
            Clock::Fixed(_) => DeriveMode::Wait,
        };
        match DeriveWorker::spawn(Some(ctx.clone()), throttle) {
            Ok(w) => app.derive = Some(w),
            Err(e) => app.without_derive_worker(&e.to_string()),
        }
        if app.state.view == View::WarRoom {
            app.state.view = app.state.previous_view;
        }
        app.map.restore(app.state.map_center, app.state.map_zoom);
        app.approvals.local = local_dispatch;
        if (0.5..=3.0).contains(&app.state.ui_scale) {
            ctx.set_zoom_factor(app.state.ui_scale);
        }
        app
    }

    /// Runs without the derive worker, as when its thread cannot start (`why`): nothing is
    /// derived, and the views say so instead of showing an empty fleet. Tests use it to see
    /// that fallback.
    pub fn without_derive_worker(&mut self, why: &str) {
        self.derive = None;
        let text = format!("could not start the derive worker thread: {why}");
        self.failures.push(text.clone());
        self.derive_error = Some(text);
    }

    /// Dismisses every toast now (snapshot tests, whose frames must not depend on how long a
    /// toast has been up).
    pub fn dismiss_toasts(&mut self) {
        self.toasts.clear();
    }

    /// Queues a command for the next [`Self::logic`].
    pub fn send(&mut self, command: UiCommand) {
        self.commands.send(command);
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Whether time runs (the system clock): the war room cycles through rollouts only then.
    pub fn clock_runs(&self) -> bool {
        self.clock == Clock::System
    }

    pub fn link(&self) -> &LinkStatus {
        &self.link
    }

    /// The background work this console runs on (tests and harnesses ask it what can be
    /// steered; views use the field).
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The fleet the planner's and findings' workers read: the fleet as loaded, the very one the
    /// model and the derive worker share (no copy), unless statuses changed devices since the
    /// load; then a copy with the changes, made once per load (the one fleet-sized step of the
    /// findings and planner views on the UI thread), then shared.
    pub fn shared_fleet(&mut self) -> Option<std::sync::Arc<convoy_core::fleet::Fleet>> {
        if self.shared_fleet.is_none() {
            self.shared_fleet = self.model.as_ref().map(|m| m.fleet.devices.current());
        }
        self.shared_fleet.clone()
    }

    /// The fleet cache the console shows, once the fleet has loaded from it.
    pub fn cache_path(&self) -> Option<&std::path::Path> {
        self.cache.as_deref()
    }

    /// The desktop channel's alerts as toasts (the alerts thread also asks the desktop to
    /// show them).
    fn show_alerts(&mut self) {
        let Some(alerts) = &self.backend.alerts else {
            return;
        };
        for alert in alerts.take() {
            let kind = match alert.severity {
                convoy_core::alerts::Severity::Critical => ToastKind::Error,
                convoy_core::alerts::Severity::Warning => ToastKind::Warning,
                convoy_core::alerts::Severity::Info => ToastKind::Info,
            };
            self.toast(kind, format!("{}: {}", alert.title, alert.summary));
        }
    }

    fn toast(&mut self, kind: ToastKind, text: impl Into<String>) {
        self.toasts.push(Toast {
            text: text.into(),
            kind,
            until: Instant::now() + Duration::from_secs(5),
        });
        if self.toasts.len() > 5 {
            self.toasts.remove(0);
        }
    }

    /// Drains background events, applies queued commands, syncs with the derive worker.
    pub fn logic(&mut self, ctx: &egui::Context) {
        for _ in 0..EVENTS_PER_FRAME {
            let Some(event) = self.backend.try_next() else {
                break;
            };
            self.handle_event(event);
        }
        for command in self.commands.take() {
            self.apply(ctx, command);
        }
        self.show_alerts();
        self.findings.poll();
        self.releases.poll();
        self.planner.poll();
        self.reports.poll();
        self.sync_saved_cohorts(ctx);
        self.sync_derived();
        self.prepare_view(ctx);
        self.state.ui_scale = ctx.zoom_factor();
        let now = Instant::now();
        self.toasts.retain(|t| t.until > now);
        // A toast goes when it expires: one repaint then, not four a second while it shows.
        if let Some(until) = self.toasts.iter().map(|t| t.until).min() {
            ctx.request_repaint_after(until.saturating_duration_since(now));
        }
        // Ages in the status bar tick once a second, on the period clock the data repaints use
        // (`backend::repaint_period_end`), so the tick and streaming data share their frames.
        ctx.request_repaint_after(status_tick());
    }

    /// Lists the saved cohorts once the fleet is loaded, and gives each new listing to the
    /// filter, so the search box reads `cohort:NAME` in every view.
    fn sync_saved_cohorts(&mut self, ctx: &egui::Context) {
        if self.model.is_some() {
            let fleet = self.shared_fleet();
            self.cohort_cache
                .saved
                .ensure_loaded(ctx, self.cache.clone(), fleet);
        }
        if let Some(table) = self.cohort_cache.saved.poll() {
            self.state.filter.cohorts = table;
        }
    }

    /// The work the view about to be drawn needs before it draws, done here so that views only
    /// read: the map takes the derive worker's grid (and, coloured by rollout state, keeps the
    /// monitor's reading fresh), the cohorts view takes its summaries, and a form is filled in
    /// with the defaults the other views and the cache give the first time it shows.
    fn prepare_view(&mut self, ctx: &egui::Context) {
        if self.model.is_none() {
            return;
        }
        match self.state.view {
            View::Map => {
                self.map
                    .update_grid(self.derived.generation, &mut self.derived.grid);
                self.map.prepare(ctx, self.state.theme == Theme::Dark);
                if self.state.color_mode == ColorMode::RolloutState {
                    self.sync_monitor(ctx);
                }
            }
            View::Cohorts => self.cohort_cache.take(&mut self.derived),
            View::Monitor => self.sync_monitor(ctx),
            View::Findings => {
                let fleet = self.shared_fleet();
                let now = self.clock.now();
                self.findings.prepare(ctx, self.cache.clone(), fleet, now);
            }
            View::Releases => {
                let now = self.clock.now();
                self.releases.prepare(ctx, self.cache.clone(), now);
            }
            View::Planner => {
                self.planner.prefill(
                    self.cache.as_deref(),
                    &self.releases.trust_dir,
                    &self.releases.manifest_dir,
                );
                let fleet = if self.planner.wants_fleet() {
                    self.shared_fleet()
                } else {
                    None
                };
                let (now, runs) = (self.clock.now(), self.clock == Clock::System);
                self.planner
                    .prepare(ctx, self.cache.clone(), fleet, now, runs);
            }
            // A console on a server makes no requests (the view says why).
            View::Approvals if !matches!(self.backend.broker, BrokerKind::Server(_)) => {
                if let Some(cache) = self.cache.as_deref()
                    && self.approvals.prefill(
                        cache,
                        &self.planner.trust_dir,
                        &self.releases.trust_dir,
                    )
                {
                    self.approvals.refresh(ctx, Some(cache));
                }
                self.approvals.poll(ctx, self.cache.as_deref());
            }
            _ => {}
        }
    }

    /// Keeps the monitor's reading of the rollout it shows fresh ([`crate::gui::monitor::sync`]);
    /// the fleet's shared copy is made only when there is a rollout and a cache to read.
    fn sync_monitor(&mut self, ctx: &egui::Context) {
        let Some(id) = crate::gui::monitor::target_of(&self.monitor, self.rollouts.as_ref()) else {
            return;
        };
        let Some(cache) = self.cache.clone() else {
            return;
        };
        let fleet = self.shared_fleet();
        crate::gui::monitor::sync(&mut self.monitor, ctx, id, cache, fleet);
    }

    /// Sends the worker a changed query and swaps in its newest answer. Never fleet-sized: the
    /// derivation runs on the worker; in [`DeriveMode::Wait`] this frame waits for it.
    fn sync_derived(&mut self) {
        let Some(w) = &mut self.derive else {
            return;
        };
        if self.model.is_some() {
            let level = (self.state.view == View::Map).then(|| self.map.level());
            if level != self.sent_level {
                w.send(DeriveRequest::MapLevel(level));
                self.sent_level = level;
            }
            let summaries = self.state.view == View::Cohorts;
            if summaries != self.sent_summaries {
                w.send(DeriveRequest::Summaries(summaries));
                self.sent_summaries = summaries;
            }
            let query = Query {
                color_mode: self.state.color_mode,
                filter: self.state.filter.clone(),
                sort: self.state.sort,
                sort_descending: self.state.sort_descending,
                now: self.clock.now(),
            };
            if self.sent_query.as_ref().is_none_or(|q| !q.same_as(&query)) {
                w.send(DeriveRequest::Query(query.clone()));
                self.sent_query = Some(query);
            }
        }
        let result = match self.derive_mode {
            DeriveMode::Wait if self.model.is_some() && self.derived_seen < w.sent => {
                w.wait_result()
            }
            _ => w.try_result(),
        };
        if let Some(r) = result.filter(|r| r.seen >= self.load_seq) {
            self.derived_seen = r.seen;
            self.derive_compute = r.compute;
            // The old result is dropped here: freeing, not computing.
            self.derived = r.derived;
        }
    }

    fn handle_event(&mut self, event: BackendEvent) {
        match event {
            BackendEvent::Stage(s) => self.stage = s,
            BackendEvent::FleetLoaded { fleet, cache } => {
                let n = fleet.devices.len();
                // One fleet, shared by the model and the worker's replica (issue 22): neither
                // copies it; each keeps only the devices that change beside it.
                let fleet = std::sync::Arc::new(fleet);
                if let Some(w) = &mut self.derive {
                    w.send(DeriveRequest::Load(std::sync::Arc::clone(&fleet)));
                    self.load_seq = w.sent;
                }
                self.sent_query = None;
                self.model = Some(FleetModel::shared(fleet));
                self.state.last_cache = Some(cache.display().to_string());
                self.cache = Some(cache);
                // Indices into the old fleet mean nothing now: nothing shows until the worker
                // answers for the new one. Its generation keeps counting, so the map grid cannot
                // mistake the new fleet's data for the old.
                self.derived = Derived {
                    generation: self.derived.generation,
                    ..Derived::default()
                };
                self.selected = None;
                self.history = None;
                self.telemetry = None;
                self.map.clear_grid();
                self.cohort_cache = crate::gui::cohorts::CohortCache::default();
                self.cohorts.clear();
                self.findings.fleet_reloaded();
                self.planner.fleet_reloaded();
                self.shared_fleet = None;
                self.toast(
                    ToastKind::Info,
                    format!("Loaded {n} devices from the cache"),
                );
            }
            BackendEvent::Link(status) => {
                match &status {
                    LinkStatus::Connected if self.link != LinkStatus::Connected => {
                        let peer = self.backend.broker.peer();
                        self.toast(ToastKind::Info, format!("Link connected to {peer}"));
                    }
                    LinkStatus::Reconnecting(why) if self.link == LinkStatus::Connected => {
                        self.toast(ToastKind::Warning, format!("Link lost: {why}"));
                    }
                    _ => {}
                }
                self.link = status;
            }
            BackendEvent::Inbound(inbound) => {
                if let Some(m) = &mut self.model {
                    m.apply(&inbound);
                    // The replica follows: one message's worth of work here.
                    if let Some(w) = &mut self.derive {
                        w.send(DeriveRequest::Inbound(Box::new(inbound)));
                    }
                }
            }
            BackendEvent::Rejected(r) => {
                if let Some(m) = &mut self.model {
                    m.rejected += 1;
                    let device = r.device_id.clone().unwrap_or_default();
                    m.log(
                        self.clock.now(),
                        &device,
                        format!("rejected message: {}", r.reason),
                        crate::gui::model::Severity::Warning,
                    );
                }
            }
            BackendEvent::OutboxDepth(n) => self.outbox_depth = Some(n),
            BackendEvent::DeviceHistory { device_id, events } => {
                // An answer for a device no longer shown is dropped: the newer request's
                // answer follows.
                if let Some(h) = self.history.as_mut().filter(|h| h.device_id == device_id) {
                    h.state = match events {
                        Ok(rows) => HistoryState::Loaded(rows),
                        Err(why) => HistoryState::Failed(why),
                    };
                }
            }
            BackendEvent::DeviceTelemetry { device_id, series } => {
                if let Some(t) = self.telemetry.as_mut().filter(|t| t.device_id == device_id) {
                    t.state = match series {
                        Ok(s) => TelemetryState::Loaded(s),
                        Err(why) => TelemetryState::Failed(why),
                    };
                }
            }
            BackendEvent::Rollouts(board) => self.rollouts = Some(board),
            BackendEvent::Engine(note) => self.engine_note = Some(note),
            BackendEvent::Steered {
                rollout_id,
                operator,
                command,
                result,
            } => {
                match &result {
                    Ok(phase) => self.toast(
                        ToastKind::Info,
                        format!("{} by {operator}: {phase}", command.name()),
                    ),
                    Err(why) => self.toast(
                        ToastKind::Error,
                        format!("{} of {rollout_id} refused: {why}", command.name()),
                    ),
                }
                self.steered_total += 1;
                self.steered.push(SteerAnswer {
                    rollout_id,
                    operator,
                    command,
                    result,
                });
                if self.steered.len() > STEER_ANSWERS_KEPT {
                    self.steered.remove(0);
                }
            }
            BackendEvent::Failed(text) => {
                self.toast(ToastKind::Error, text.clone());
                self.failures.push(text);
            }
        }
    }

    fn apply(&mut self, ctx: &egui::Context, command: UiCommand) {
        match command {
            UiCommand::Show(View::WarRoom) | UiCommand::ToggleWarRoom
                if self.state.view != View::WarRoom =>
            {
                self.state.previous_view = self.state.view;
                self.state.view = View::WarRoom;
                // The wall starts on the rollout in trouble, then cycles from there.
                self.warroom_since = self.clock.now();
            }
            UiCommand::ToggleWarRoom => self.state.view = self.state.previous_view,
            UiCommand::Show(v) => self.state.view = v,
            UiCommand::OpenDevice(i) => {
                self.selected = Some(i);
                self.state.view = View::Device;
                self.request_history();
            }
            UiCommand::ReloadHistory => self.request_history(),
            UiCommand::SetColumnVisible(column, visible) => {
                self.state.hidden_columns.retain(|&c| c != column);
                if !visible && column != Column::Id {
                    self.state.hidden_columns.push(column);
                }
            }
            UiCommand::CreateCohort { name, devices } => {
                let n = devices.len();
                self.cohorts.push(Cohort {
                    name: name.clone(),
                    devices,
                });
                self.toast(ToastKind::Info, format!("Cohort \"{name}\": {n} devices"));
            }
            UiCommand::DeleteCohort(i) => {
                if i < self.cohorts.len() {
                    self.cohorts.remove(i);
                }
            }
            UiCommand::SetTheme(t) => self.state.theme = t,
            UiCommand::SetColorMode(m) => {
                if m != self.state.color_mode {
                    // Class numbers mean different things in the other mode.
                    self.state.filter.class = None;
                    self.state.color_mode = m;
                }
            }
            UiCommand::ScaleUi(f) => ctx.set_zoom_factor((ctx.zoom_factor() * f).clamp(0.5, 3.0)),
            UiCommand::ResetUiScale => ctx.set_zoom_factor(1.0),
            UiCommand::FocusMap { lat, lon, zoom } => {
                self.map.focus(lat, lon, zoom);
                self.state.view = View::Map;
            }
            UiCommand::SavedCohortName(name) => self.cohort_cache.saved.name = name,
            UiCommand::SavedCohorts(crate::gui::cohorts::SavedCohortsCommand::Apply(name)) => {
                self.state.filter.text = format!("cohort:\"{name}\"");
            }
            UiCommand::SavedCohorts(op) => {
                let fleet = self.shared_fleet();
                match (self.cache.clone(), fleet) {
                    (Some(cache), Some(fleet)) => {
                        self.cohort_cache.saved.start(ctx, cache, fleet, Some(op));
                    }
                    _ => self.toast(
                        ToastKind::Warning,
                        "No cache is open yet: cohorts are saved in the cache".to_owned(),
                    ),
                }
            }
            UiCommand::ClearFilter => {
                self.state.filter = Filter {
                    cohorts: std::mem::take(&mut self.state.filter.cohorts),
                    ..Filter::default()
                };
            }
            UiCommand::SetClassFilter(class) => self.state.filter.class = class,
            UiCommand::SetSort { column, descending } => {
                (self.state.sort, self.state.sort_descending) = (column, descending);
            }
            UiCommand::Map(command) => self.map.apply(ctx, command),
            UiCommand::Steer {
                rollout_id,
                operator,
                command,
            } => {
                if self.backend.steer(&rollout_id, &operator, command.clone()) {
                    self.monitor.sent(rollout_id, command, self.steered_total);
                } else {
                    self.toast(
                        ToastKind::Error,
                        "The console's steering thread is not running.",
                    );
                }
            }
            UiCommand::Approvals(command) => {
                let now = self.clock.now();
                self.approvals.apply(ctx, command, self.cache.clone(), now);
            }
            UiCommand::Findings(command) => {
                let now = self.clock.now();
                self.findings.apply(ctx, command, self.cache.clone(), now);
            }
            UiCommand::Releases(command) => {
                let now = self.clock.now();
                self.releases.apply(ctx, command, self.cache.clone(), now);
            }
            UiCommand::Planner(command) => {
                let now = self.clock.now();
                self.planner.apply(ctx, command, self.cache.clone(), now);
            }
            UiCommand::Report(command) => {
                let fleet = match &command {
                    crate::gui::report::ReportCommand::Open(_) => self.shared_fleet(),
                    _ => None,
                };
                self.reports.apply(ctx, command, self.cache.clone(), fleet);
            }
            UiCommand::ToggleNav => self.state.show_nav = !self.state.show_nav,
        }
    }

    /// Asks the backend for the selected device's history; the UI shows "loading" until the
    /// answer arrives through the channel. No SQL runs here.
    fn request_history(&mut self) {
        let Some(id) = self
            .selected
            .and_then(|i| self.model.as_ref()?.fleet.devices.get(i))
            .map(|d| d.id.clone())
        else {
            self.history = None;
            self.telemetry = None;
            return;
        };
        let (state, telemetry) = if self.backend.request_history(&id, self.clock.now()) {
            (HistoryState::Loading, TelemetryState::Loading)
        } else {
            let why = "the history worker is not running";
            (
                HistoryState::Failed(why.into()),
                TelemetryState::Failed(why.into()),
            )
        };
        self.telemetry = Some(DeviceTelemetry {
            device_id: id.clone(),
            state: telemetry,
        });
        self.history = Some(DeviceHistory {
            device_id: id,
            state,
        });
    }

    fn apply_style(&mut self, ctx: &egui::Context) {
        let wall = self.state.view == View::WarRoom;
        if self.applied_style == Some((self.state.theme, wall)) {
            return;
        }
        // The wall is full screen, and leaving it leaves full screen (issue 19).
        if self.applied_style.map_or(wall, |(_, was)| was != wall) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Fullscreen(wall));
        }
        let mut visuals = match self.state.theme {
            Theme::Dark => egui::Visuals::dark(),
            Theme::Light => egui::Visuals::light(),
        };
        if wall {
            // High contrast for a wall display: pure background, full-strength text.
            if self.state.theme == Theme::Dark {
                visuals.panel_fill = Color32::BLACK;
                visuals.override_text_color = Some(Color32::WHITE);
            } else {
                visuals.panel_fill = Color32::WHITE;
                visuals.override_text_color = Some(Color32::BLACK);
            }
        }
        ctx.set_visuals(visuals);
        self.applied_style = Some((self.state.theme, wall));
    }

    fn shortcuts(&mut self, ctx: &egui::Context) {
        let typing = ctx.egui_wants_keyboard_input();
        let (f11, w, esc, plus, minus, zero) = ctx.input_mut(|i| {
            (
                i.consume_key(Modifiers::NONE, Key::F11),
                !typing && i.consume_key(Modifiers::NONE, Key::W),
                !self.palette.open && i.consume_key(Modifiers::NONE, Key::Escape),
                i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::Equals))
                    || i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::Plus)),
                i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::Minus)),
                i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::Num0)),
            )
        });
        if f11 || w {
            self.send(UiCommand::ToggleWarRoom);
        }
        if esc && self.state.view == View::WarRoom {
            self.send(UiCommand::ToggleWarRoom);
        }
        if plus {
            self.send(UiCommand::ScaleUi(1.1));
        }
        if minus {
            self.send(UiCommand::ScaleUi(1.0 / 1.1));
        }
        if zero {
            self.send(UiCommand::ResetUiScale);
        }
        let views = [
            Key::Num1,
            Key::Num2,
            Key::Num3,
            Key::Num4,
            Key::Num5,
            Key::Num6,
            Key::Num7,
            Key::Num8,
            Key::Num9,
        ];
        for (key, view) in views.into_iter().zip(View::ALL) {
            if ctx.input_mut(|i| i.consume_key(Modifiers::COMMAND, key)) {
                self.send(UiCommand::Show(view));
            }
        }
        if ctx.input_mut(|i| i.consume_key(Modifiers::COMMAND, Key::B)) {
            self.send(UiCommand::ToggleNav);
        }
        if ctx.input_mut(|i| i.consume_key(Modifiers::COMMAND, Key::K)) {
            self.palette.open = !self.palette.open;
        }
        if self.palette.open && ctx.input_mut(|i| i.consume_key(Modifiers::NONE, Key::Escape)) {
            self.palette = crate::gui::palette::PaletteState::default();
        }
        if ctx.input_mut(|i| i.consume_key(Modifiers::COMMAND, Key::F)) {
            ctx.memory_mut(|m| m.request_focus(egui::Id::unique(SEARCH_ID)));
            if self.state.view == View::WarRoom
                || self.state.view == View::Device
                || self.state.view == View::Cohorts
            {
                self.send(UiCommand::Show(View::Table));
            }
        }
    }

    /// Draws the whole console.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.apply_style(&ctx);
        self.shortcuts(&ctx);
        if self.state.view == View::WarRoom {
            egui::CentralPanel::default().show(ui, |ui| {
                crate::gui::warroom::warroom_ui(&view_context!(self), ui);
            });
            self.toasts_ui(&ctx);
            return;
        }
        egui::Panel::top("top_bar").show(ui, |ui| self.top_bar_ui(ui));
        egui::Panel::bottom("status_bar").show(ui, |ui| self.status_bar_ui(ui));
        if self.state.show_nav {
            egui::Panel::left("nav")
                .resizable(true)
                .default_size(150.0)
                .show(ui, |ui| self.nav_ui(ui));
        }
        crate::gui::palette::palette_ui(&mut self.palette, &mut self.commands, &ctx);
        egui::CentralPanel::default().show(ui, |ui| {
            if self.model.is_none() {
                self.loading_ui(ui);
                return;
            }
            if let Some(why) = &self.derive_error {
                ui.colored_label(tokens::BAD, format!("The console {why}."));
                ui.label(
                    "The map, the table, the counts and the cohorts are computed on that thread, \
                     so they stay empty; the device view and the status bar still work. \
                     Restart the console; if this persists, the machine is out of threads or memory.",
                );
                ui.separator();
            }
            match self.state.view {
                View::Map => crate::gui::map::map_ui(
                    &mut self.map,
                    &view_context!(self),
                    &mut self.commands,
                    ui,
                ),
                View::Table => {
                    crate::gui::table::table_ui(&view_context!(self), &mut self.commands, ui);
                }
                View::Device => {
                    crate::gui::device::device_ui(&view_context!(self), &mut self.commands, ui);
                }
                View::Cohorts => crate::gui::cohorts::cohorts_ui(
                    &self.cohort_cache,
                    &view_context!(self),
                    &mut self.commands,
                    ui,
                ),
                View::Findings => crate::gui::findings::findings_ui(
                    &mut self.findings,
                    &view_context!(self),
                    &mut self.commands,
                    ui,
                ),
                View::Releases => {
                    crate::gui::releases::releases_ui(&mut self.releases, &mut self.commands, ui);
                }
                View::Planner => crate::gui::planner::planner_ui(
                    &mut self.planner,
                    &view_context!(self),
                    &mut self.commands,
                    ui,
                ),
                View::Approvals => crate::gui::approvals::approvals_ui(
                    &mut self.approvals,
                    &view_context!(self),
                    &mut self.commands,
                    ui,
                ),
                View::Monitor => {
                    // The context first: it reads which rollout the monitor shows.
                    let cx = view_context!(self);
                    crate::gui::monitor::monitor_ui(&mut self.monitor, &cx, &mut self.commands, ui);
                }
                View::Reports => crate::gui::report::report_ui(
                    &mut self.reports,
                    &view_context!(self),
                    &mut self.commands,
                    ui,
                ),
                View::WarRoom => {}
            }
        });
        self.toasts_ui(&ctx);
    }

    fn loading_ui(&self, ui: &mut egui::Ui) {
        ui.vertical_centered(|ui| {
            ui.add_space(80.0);
            if let Some(err) = self.failures.last() {
                ui.colored_label(tokens::BAD, format!("Could not load the fleet: {err}"));
            } else {
                ui.add(egui::Spinner::new().size(32.0));
                ui.label(format!("Starting: {}", self.stage));
            }
        });
    }

    fn top_bar_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading(RichText::new("Convoy").strong());
            if self.backend.demo {
                ui.label(RichText::new("DEMO").color(tokens::WARN).strong())
                    .on_hover_text(
                        "A synthetic fleet on the embedded broker, simulated in this process",
                    );
            }
            ui.separator();
            let search = egui::TextEdit::singleline(&mut self.state.filter.text)
                .id(egui::Id::unique(SEARCH_ID))
                .hint_text("Search: words, or model:T300 hw_rev:C firmware:<2.5 region:eu-*")
                .desired_width(340.0);
            ui.add(search).on_hover_text(
                "Ctrl+F. Every term must match; shared by the map and the table.\n\
                 A word is found in the id, model, revision, region, depot, link, tier, class, \
                 firmware or update state (under 3 characters: whole values only).\n\
                 field:value matches a field exactly (model:T300, state:failed); * is any text \
                 (region:eu-*); <, <=, >, >=, =, != compare versions and numbers \
                 (firmware:<2.5, battery:<20); -term excludes (-depot:x); \"quotes\" hold spaces.",
            );
            if let Some(error) = self.state.filter.error() {
                ui.label(RichText::new(format!("Search: {error}")).color(tokens::BAD))
                    .on_hover_text("No device is shown until the search reads.");
            }
            if let Some(class) = self.state.filter.class {
                let name = self
                    .state
                    .color_mode
                    .class_names()
                    .get(usize::from(class))
                    .copied()
                    .unwrap_or("?");
                if ui
                    .button(format!("Only: {name} (clear)"))
                    .on_hover_text("Clear the class filter")
                    .clicked()
                {
                    self.state.filter.class = None;
                }
            }
            if !self.state.filter.is_empty() && ui.button("Clear filter").clicked() {
                self.send(UiCommand::ClearFilter);
            }
            ui.separator();
            let before = self.state.color_mode;
            egui::ComboBox::from_label("Colour by")
                .selected_text(self.state.color_mode.label())
                .show_ui(ui, |ui| {
                    for mode in ColorMode::ALL {
                        ui.selectable_value(&mut self.state.color_mode, mode, mode.label());
                    }
                });
            if before != self.state.color_mode {
                // Class numbers mean different things in the other mode.
                self.state.filter.class = None;
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.button("War room (F11)").clicked() {
                    self.send(UiCommand::ToggleWarRoom);
                }
                if ui.button("Commands (Ctrl+K)").clicked() {
                    self.palette.open = true;
                }
                let (label, next) = match self.state.theme {
                    Theme::Dark => ("Light theme", Theme::Light),
                    Theme::Light => ("Dark theme", Theme::Dark),
                };
                if ui.button(label).clicked() {
                    self.send(UiCommand::SetTheme(next));
                }
                ui.label(format!("{:.0} %", ui.ctx().zoom_factor() * 100.0))
                    .on_hover_text("UI scale: Ctrl + and Ctrl - to change, Ctrl 0 to reset");
            });
        });
    }

    fn nav_ui(&mut self, ui: &mut egui::Ui) {
        ui.add_space(6.0);
        for (n, view) in View::ALL.into_iter().enumerate() {
            let selected = self.state.view == view;
            let r = ui
                .add_sized(
                    [ui.available_width(), 28.0],
                    egui::Button::selectable(selected, view.label()),
                )
                .on_hover_text(if n < 9 {
                    format!("Ctrl+{}", n + 1)
                } else {
                    "Ctrl+K, then its name".to_owned()
                });
            if r.clicked() {
                self.send(UiCommand::Show(view));
            }
        }
        ui.separator();
        if let Some(model) = &self.model {
            ui.label(RichText::new("Fleet").strong());
            ui.label(format!("{} devices", model.len()));
            ui.label(format!("{} shown", self.derived.filtered.len()));
            ui.label(format!("{} cohorts", self.cohorts.len()));
        }
        ui.separator();
        ui.label(RichText::new("Rollouts").strong());
        let note = self.engine_note.as_deref().unwrap_or(
            "No engine in this console: it shows the rollouts the engine records in the cache (convoy rollout run, convoy serve).",
        );
        ui.label(RichText::new(note).small().color(tokens::MUTED));
    }

    fn status_bar_ui(&mut self, ui: &mut egui::Ui) {
        let now = self.clock.now();
        ui.horizontal(|ui| {
            let (text, color) = match &self.link {
                LinkStatus::Offline => ("Link: offline (no broker)".to_owned(), tokens::MUTED),
                LinkStatus::Connecting => ("Link: connecting".to_owned(), tokens::WARN),
                LinkStatus::Connected => ("Link: connected".to_owned(), tokens::OK),
                LinkStatus::Reconnecting(why) => {
                    (format!("Link: reconnecting ({why})"), tokens::BAD)
                }
            };
            crate::gui::tokens::swatch(ui, color);
            ui.label(text);
            ui.separator();
            let broker = match &self.backend.broker {
                BrokerKind::None => "Broker: none".to_owned(),
                BrokerKind::Embedded(url) => format!("Broker: embedded {url}"),
                BrokerKind::External(url) => format!("Broker: external {url}"),
                BrokerKind::Server(url) => format!("Server: {url}"),
            };
            ui.label(broker);
            ui.separator();
            match self.outbox_depth {
                Some(n) => ui.label(format!("Outbox: {n}")),
                None => ui.label("Outbox: -"),
            }
            .on_hover_text("Commands in the cache's outbox not yet acknowledged by their device");
            ui.separator();
            if let Some(model) = &self.model {
                let ages = StatusAges::new(
                    now,
                    self.clock == Clock::System,
                    self.derived.newest_last_seen,
                    model.last_message,
                    self.rollouts.as_ref().and_then(|b| b.as_ref().ok()),
                    crate::alerts::deliver::wall_ms(),
                );
                let cache = self
                    .cache
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string());
                ui.label(ages.text())
                    .on_hover_text(format!("{}\n{cache}", ages.clock_words));
                ui.separator();
                ui.label(format!(
                    "{} messages · {} rejected",
                    model.messages, model.rejected
                ));
            }
            if let Some(alerts) = &self.backend.alerts {
                let status = alerts.status();
                let (words, bad) = crate::gui::alerts::status_words(&status);
                ui.separator();
                crate::gui::tokens::swatch(ui, if bad { tokens::BAD } else { tokens::OK });
                let hover: Vec<String> = status
                    .channels
                    .iter()
                    .map(|c| {
                        format!(
                            "{}: {} sent, {} waiting{}",
                            c.channel,
                            c.sent,
                            c.pending,
                            c.last_error
                                .as_ref()
                                .map(|e| format!("; last error: {e}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                ui.label(words).on_hover_text(if hover.is_empty() {
                    "No alert has been enqueued yet".to_owned()
                } else {
                    hover.join("\n")
                });
            }
            if !self.stage.is_empty() && self.model.is_some() {
                ui.separator();
                ui.add(egui::Spinner::new());
                ui.label(&self.stage);
            }
        });
    }

    fn toasts_ui(&self, ctx: &egui::Context) {
        if self.toasts.is_empty() {
            return;
        }
        egui::Area::new(egui::Id::unique("toasts"))
            .anchor(Align2::RIGHT_BOTTOM, [-12.0, -36.0])
            .interactable(false)
            .show(ctx, |ui| {
                for t in &self.toasts {
                    let color = match t.kind {
                        ToastKind::Info => tokens::OK,
                        ToastKind::Warning => tokens::WARN,
                        ToastKind::Error => tokens::BAD,
                    };
                    egui::Frame::popup(ui.style())
                        .stroke(egui::Stroke::new(1.5, color))
                        .show(ui, |ui| {
                            ui.set_max_width(420.0);
                            ui.label(&t.text);
                        });
                }
            });
    }

    /// The text of the latest failures (shown by the war room and tests).
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    pub fn broker(&self) -> &BrokerKind {
        &self.backend.broker
    }

    pub fn outbox_depth(&self) -> Option<u64> {
        self.outbox_depth
    }
}

/// The status bar's ages of the cache, on one clock: the devices' own when it runs ahead of the
/// screen's (the demo's 60x simulated fleet), as the device view and the war room age them
/// (issue 19: the status bar aged simulated reports on the screen's clock, "0 s ago").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusAges {
    /// The newest device report's age.
    pub newest_report: String,
    /// The last message's age.
    pub last_message: String,
    /// Which clock, in words (the status bar's hover).
    pub clock_words: String,
    /// Which clock, in a few words after the ages, when it is not the screen's.
    pub clock_tag: Option<&'static str>,
}

impl StatusAges {
    pub fn new(
        screen_now: Timestamp,
        clock_runs: bool,
        newest_report: Option<Timestamp>,
        last_message: Option<Timestamp>,
        board: Option<&crate::gui::backend::RolloutBoard>,
        wall_ms: i64,
    ) -> Self {
        let (now, clock_words) = crate::gui::warroom::fleet_now(
            screen_now,
            clock_runs,
            last_message.max(newest_report),
            board,
            wall_ms,
        );
        let clock_tag = (now != screen_now).then(|| {
            if clock_words.contains("simulated clock") {
                "on the simulated clock"
            } else {
                "on the devices' clock"
            }
        });
        Self {
            newest_report: newest_report.map_or("never".to_owned(), |t| age(now.secs_since(t))),
            last_message: last_message.map_or("none yet".to_owned(), |t| age(now.secs_since(t))),
            clock_words,
            clock_tag,
        }
    }

    /// "Cache: newest report 2 min ago · last message 0 s ago (on the simulated clock)".
    pub fn text(&self) -> String {
        let mut text = format!(
            "Cache: newest report {} · last message {}",
            self.newest_report, self.last_message
        );
        if let Some(tag) = self.clock_tag {
            text.push_str(" (");
            text.push_str(tag);
            text.push(')');
        }
        text
    }
}

/// The id of the search field (Ctrl+F focuses it).
pub const SEARCH_ID: &str = "fleet-search";

/// "12 s ago", "3 min ago", "2 h ago", "5 d ago".
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    if s < 120 {
        format!("{s} s ago")
    } else if s < 7200 {
        format!("{} min ago", s / 60)
    } else if s < 172_800 {
        format!("{} h ago", s / 3600)
    } else {
        format!("{} d ago", s / 86_400)
    }
}

impl eframe::App for ConsoleApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        ConsoleApp::logic(self, ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        ConsoleApp::ui(self, ui);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        // Rollouts dispatched from this console end as Ctrl-C ends `convoy rollout run`
        // (`engine.stopped` in the timeline, continued with `--resume`), not as a crash.
        for (id, outcome) in self.approvals.stop_runs() {
            match outcome {
                Ok(state) => eprintln!("convoy: stopped the engine run of {id}: {state}"),
                Err(e) => eprintln!("convoy: the engine run of {id} ended with an error: {e}"),
            }
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        (self.state.map_center, self.state.map_zoom) = self.map.view();
        eframe::set_value(storage, STATE_KEY, &self.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19: the demo's reports are on its 60x simulated clock, far ahead of the screen's;
    /// the status bar ages them on that clock and says so, as the device view does.
    #[test]
    fn the_status_bar_ages_a_simulated_fleet_on_its_own_clock_and_says_so() {
        let wall_ms = 1_800_000_000_000;
        let screen = Timestamp::from_secs(wall_ms / 1000);
        // The demo's simulated clock began at the wall time of its start, 10 minutes ago.
        let start = screen.plus_secs(-600);
        let mut board = crate::gui::backend::RolloutBoard::default();
        board.clocks.insert(
            "demo".into(),
            crate::store::events::RunClock {
                rollout_id: "demo".into(),
                release_id: "t300-fw-2.5.0".into(),
                clock_start: start,
                // 10 wall minutes ago at 60x: the simulated clock reads start + 10 h.
                wall_began_ms: wall_ms - 600_000,
                time_scale: 60.0,
            },
        );
        let sim_now = start.plus_secs(36_000);
        let ages = StatusAges::new(
            screen,
            true,
            Some(sim_now.plus_secs(-150)),
            Some(sim_now.plus_secs(-5)),
            Some(&board),
            wall_ms,
        );
        assert_eq!(ages.newest_report, "2 min ago");
        assert_eq!(ages.last_message, "5 s ago");
        assert_eq!(ages.clock_tag, Some("on the simulated clock"));
        assert!(
            ages.text().ends_with("(on the simulated clock)"),
            "{ages:?}"
        );
        assert!(ages.clock_words.contains("60x"), "{ages:?}");
        // A fleet on the screen's clock: ages on it, nothing more said after them.
        let ages = StatusAges::new(
            screen,
            true,
            Some(screen.plus_secs(-600)),
            Some(screen.plus_secs(-12)),
            Some(&board),
            wall_ms,
        );
        assert_eq!(
            ages.text(),
            "Cache: newest report 10 min ago · last message 12 s ago"
        );
        assert!(ages.clock_words.contains("this screen's clock"), "{ages:?}");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(5), "5 s ago");
        assert_eq!(age(-3), "0 s ago");
        assert_eq!(age(600), "10 min ago");
        assert_eq!(age(3 * 3600), "3 h ago");
        assert_eq!(age(9 * 86_400), "9 d ago");
    }

    #[test]
    fn old_saves_still_load() {
        let state: UiState =
            serde_json::from_str(r#"{"theme":"Light","unknown_field":1}"#).expect("loads");
        assert_eq!(state.theme, Theme::Light);
        assert_eq!(state.view, View::Map);
        assert_eq!(state.ui_scale, 1.0);
        assert!(state.hidden_columns.is_empty());
    }

    #[test]
    fn hidden_columns_round_trip() {
        let state = UiState {
            hidden_columns: vec![Column::Battery, Column::Depot],
            ..UiState::default()
        };
        let back: UiState =
            serde_json::from_str(&serde_json::to_string(&state).expect("saves")).expect("loads");
        assert_eq!(back.hidden_columns, [Column::Battery, Column::Depot]);
    }
}
