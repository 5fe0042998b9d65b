//! The headless rollout engine: one rollout driven over a real MQTT link against the local
//! cache, from the first offer to a final report.
//!
//! It is the I/O shell around [`convoy_core::rollout::Rollout`]: it feeds the state machine the
//! device status, acknowledgements and telemetry that arrive from the broker, calls
//! `handle_timeout` when the state machine asks, and carries out the actions it emits. Every
//! decision that sends commands is written to the cache first, in one transaction with its audit
//! entry ([`Store::commit_decision`]), and only then published; every state change of the
//! rollout goes to its timeline and every device state change to the device's history, so the
//! cache tells the story after the process is gone.
//!
//! Time: simulated seconds are `start + wall elapsed × time_scale`, as in `convoy sim`, so a
//! rollout with hour-long soaks finishes in seconds when both run with the same scale.
//!
//! Operators steer a running engine through an optional bounded channel
//! ([`control::ControlHandle`]): pause, resume, roll back, override a gate, abort, each with the
//! operator's name and a reason, applied through the core's mutators and recorded like the
//! automatic decisions. With [`WhenPaused::Hold`] a paused rollout keeps the engine running,
//! waiting for a resume or a rollback, for as long as someone holds the channel.
//!
//! Every core event is also written to the rollout's replayable log (`rollout_log`; the log
//! events that led to a decision are written in the decision's own transaction), so a later run
//! with [`StartMode::Resume`] rebuilds the rollout with [`Rollout::replay`], adopts the
//! rollout's unacknowledged commands from the outbox (resent with the same ids) and continues
//! the same simulated clock.
//!
//! What it deliberately is not: a server. It runs one rollout and exits; `convoy serve` hosts
//! runs. Commands left unacknowledged by other rollouts stay in the outbox and are reported,
//! never sent by this run, so an old offer is never replayed into a new rollout.

pub mod control;
pub mod ddi;
pub mod health;
pub mod lease;

use anyhow::{Context, Result, bail};
use convoy_core::fleet::Fleet;
use convoy_core::gates::{GateOutcome, GatePolicy};
use convoy_core::manifest::VerifiedManifest;
use convoy_core::rollout::{
    Cause, ChangePath, DeviceReport, DeviceState, EventKind, Phase, RollbackScope, Rollout,
    RolloutAction, RolloutEvent, RolloutSpec, TelemetryReport, WaveSpec,
};
use convoy_core::time::Timestamp;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use crate::link::mqtt::{self, LinkConfig, LinkEvent, LinkHandle, Role};
use crate::link::protocol::{
    AckResult, CommandAck, CommandAction, DeviceStatus, Inbound, PROTOCOL_VERSION, RejectionStats,
    Telemetry, Topics, UpdateState,
};
use crate::store::Store;
use crate::store::audit::AuditEntry;
use crate::store::events::NewDeviceEvent;
use crate::store::outbox::{OutboxCommand, QueuedCommand};
use health::HealthWindow;

/// The actor name the engine's automatic decisions carry in the audit trail.
pub const ENGINE_ACTOR: &str = "convoy-engine";

/// Everything one run needs.
#[derive(Debug)]
pub struct EngineOptions {
    pub db: PathBuf,
    pub link: LinkConfig,
    pub topics: Topics,
    pub manifest: VerifiedManifest,
    pub rollout_id: String,
    pub waves: Vec<WaveSpec>,
    pub gates: GatePolicy,
    pub path: ChangePath,
    pub requested_by: String,
    /// Approvals recorded before the first wave, in order.
    pub approvers: Vec<String>,
    /// Simulated seconds per wall second.
    pub time_scale: f64,
    /// The simulated moment the run starts.
    pub start: Timestamp,
    /// Simulated seconds between health samples per device (the gates' exposure unit).
    pub sample_period_secs: i64,
    /// The longest gap between two of a device's messages (by its own clock) that still counts
    /// as exposure; a longer one is time it may not have been able to report.
    pub max_report_gap_secs: i64,
    /// Give up after this much wall time (the report says so).
    pub max_wall: Option<Duration>,
    /// Wall time after which an unacknowledged command is sent again (same id).
    pub resend_after: Duration,
}

/// What a run does when the rollout is paused (by a gate or an operator).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenPaused {
    /// Wait for devices already installing to settle, then end the run (`convoy rollout run`).
    #[default]
    EndRun,
    /// Keep running, waiting for an operator's resume, override or rollback, for as long as
    /// the control channel is open; with no channel, or once it closes, as `EndRun`.
    Hold,
}

/// Whether the run starts a rollout or continues one an earlier run recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartMode {
    /// Create the rollout from the options (a rollout of that id must not exist yet).
    #[default]
    New,
    /// Rebuild the rollout of `rollout_id` from the cache's log and outbox and continue it;
    /// the waves, gates, change path and approvals come from the log, not the options.
    Resume,
}

/// How a run is steered, beyond [`EngineOptions`].
#[derive(Debug, Default)]
pub struct EngineControl {
    /// Operator commands (see [`control::control_channel`]).
    pub commands: Option<mpsc::Receiver<control::ControlRequest>>,
    pub when_paused: WhenPaused,
    pub start: StartMode,
    /// Who starts or resumes the run, for the audit trail (default: the requester).
    pub started_by: Option<String>,
    /// Serve DDI devices too (the hawkBit-compatible endpoint, docs/DDI.md): they are offered
    /// the release as their wave opens and their feedback counts in the gates.
    pub ddi: Option<ddi::DdiLinkOptions>,
}

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalState {
    /// Every wave went through its gates.
    Completed,
    /// Stopped by a gate or an operator; the affected wave may have been rolled back.
    Paused,
    /// The whole rollout was rolled back.
    RolledBack,
    Aborted,
    /// `max_wall` ran out with the rollout still going.
    TimedOut,
    /// Stopped from outside (a signal or the caller).
    Stopped,
}

impl FinalState {
    /// The process exit code `convoy rollout run` uses: 0 completed, 3 stopped by gates or an
    /// operator (paused, rolled back, aborted), 4 timed out or interrupted.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Completed => 0,
            Self::Paused | Self::RolledBack | Self::Aborted => 3,
            Self::TimedOut | Self::Stopped => 4,
        }
    }
}

/// One wave at the end of the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WaveReport {
    pub name: String,
    pub devices: u32,
    pub offered: u32,
    pub confirmed: u32,
    pub failed: u32,
    pub reverted: u32,
    /// Offered and not finished when the run ended.
    pub in_flight: u32,
    /// Never heard from within the silence limit.
    pub silent: u32,
}

/// A device the run could not account for: offered, and not confirmed, failed nor reverted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unsettled {
    pub device_id: String,
    pub wave: String,
    /// The last state the device reported (or `offered` if it never answered).
    pub last_state: DeviceState,
    pub silent: bool,
    /// When this run last heard the device's status (simulated time), `None` if it heard none:
    /// a device that is not silent (its telemetry arrives) but whose status stopped long ago
    /// lost a status on the way and did not repeat it.
    pub last_status_at: Option<Timestamp>,
}

/// One gate decision that was not "continue".
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateDecision {
    pub at: Timestamp,
    pub wave: String,
    pub outcome: GateOutcome,
    /// The failing or holding findings with their evidence (JSON of the gate report).
    pub evidence: serde_json::Value,
}

/// Counts of what the link carried.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkCounts {
    pub status_messages: u64,
    pub telemetry_messages: u64,
    pub acks: u64,
    pub commands_sent: u64,
    pub commands_resent: u64,
    pub commands_acked: u64,
    pub commands_rejected_by_devices: u64,
    pub disconnects: u64,
    /// Inbound messages refused by validation, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Device reports the state machine refused (stale or impossible transitions), by kind.
    pub reports_refused: BTreeMap<String, u64>,
    /// The last rejected message, described (topic, device, reason).
    pub last_rejection: Option<String>,
    /// Devices with the most rejected messages, with their counts.
    pub rejected_by_device: BTreeMap<String, u64>,
}

/// What `convoy rollout run` prints at the end.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EngineReport {
    pub rollout_id: String,
    pub release_id: String,
    pub final_state: FinalState,
    /// The state machine's phase, with the pause reason if any.
    pub phase: Phase,
    pub change_path: ChangePath,
    pub requested_by: String,
    pub approvals: Vec<String>,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    pub wall_secs: f64,
    pub waves: Vec<WaveReport>,
    pub gate_decisions: Vec<GateDecision>,
    /// Gate looks whose outcome was "continue".
    pub gate_looks_passed: u32,
    pub unsettled: Vec<Unsettled>,
    pub link: LinkCounts,
    /// Unacknowledged commands in the outbox that are not this rollout's (never sent by this
    /// run; a resumed run adopts and resends its own).
    pub stale_outbox_commands: usize,
    /// What the DDI link did, when the run served DDI devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ddi: Option<ddi::DdiReport>,
    pub notes: Vec<String>,
}

/// Simulated time from wall time.
#[derive(Clone, Copy, Debug)]
struct Clock {
    start: Timestamp,
    began: Instant,
    scale: f64,
}

impl Clock {
    fn now(&self) -> Timestamp {
        let secs = self.began.elapsed().as_secs_f64() * self.scale;
        Timestamp(self.start.0.saturating_add(secs as i64))
    }

    /// Wall time until simulated time `t` (zero if past).
    fn wall_until(&self, t: Timestamp) -> Duration {
        let sim = t.0.saturating_sub(self.now().0).max(0) as f64;
        Duration::from_secs_f64((sim / self.scale).min(3600.0))
    }
}

/// What a command asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CmdKind {
    Offer,
    RollBack,
    Cancel,
}

impl CmdKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Offer => "offer",
            Self::RollBack => "rollback",
            Self::Cancel => "cancel",
        }
    }
}

/// A command ready for the wire: its id, topic and JSON bytes, built once and shared by every
/// resend (an offer carries the whole signed manifest; cloning it per resend would dominate).
#[derive(Clone, Debug)]
struct Wire {
    command_id: String,
    topic: String,
    payload: Arc<[u8]>,
}

/// A command of this run not yet acknowledged.
#[derive(Debug)]
struct Awaiting {
    wire: Wire,
    device_id: String,
    device: usize,
    kind: CmdKind,
    last_sent: Option<Instant>,
    /// Wall time to wait before the next resend: doubles after each send, up to a cap, so a
    /// device that is offline for days is not sent its offer every few seconds.
    backoff: Duration,
}

/// The longest wait between two sends of an unacknowledged command.
const MAX_RESEND_BACKOFF: Duration = Duration::from_mins(5);

/// The JSON of `Command { v, command_id, device_id, issued_at, action }` with the action's JSON
/// already encoded once for the whole decision.
fn command_bytes(
    command_id: &str,
    device_id: &str,
    issued_at: Timestamp,
    action_json: &str,
) -> Arc<[u8]> {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        "{{\"v\":{PROTOCOL_VERSION},\"command_id\":{},\"device_id\":{},\"issued_at\":{},\"action\":{action_json}}}",
        quote(command_id),
        quote(device_id),
        issued_at.secs()
    )
    .into_bytes()
    .into()
}

struct Engine {
    opts: EngineOptions,
    clock: Clock,
    store: Store,
    rollout: Rollout,
    fleet: Fleet,
    /// Whether fleet device `i` is part of the rollout.
    in_rollout: Vec<bool>,
    windows: Vec<HealthWindow>,
    /// When this run last heard each fleet device's status (for the report's unsettled devices).
    last_status: Vec<Option<Timestamp>>,
    heard: Vec<u32>,
    heard_flag: Vec<bool>,
    next_flush: Timestamp,
    dirty: Vec<bool>,
    dirty_list: Vec<u32>,
    /// Devices the rollout wants back on their previous version; a device that could not act on
    /// its rollback or cancel (still installing, offer not yet received) is asked again once it
    /// runs the new version.
    rollback_wanted: Vec<bool>,
    /// Devices with a rollback or cancel command awaiting its ack.
    rollback_in_flight: Vec<bool>,
    /// The devices of `rollback_wanted`, in the order they were asked.
    rollback_list: Vec<u32>,
    persisted_events: usize,
    /// Device events and acknowledgements not yet written: written together once per step.
    device_events: Vec<NewDeviceEvent>,
    acked: Vec<String>,
    awaiting: HashMap<String, Awaiting>,
    connected: bool,
    /// Who the decisions being carried out are by: the engine, or the operator whose command
    /// is being applied.
    actor: String,
    /// Core events already written to the replayable log.
    logged_events: usize,
    send_tx: mpsc::Sender<Vec<Wire>>,
    counts: LinkCounts,
    rejections: RejectionStats,
    gate_decisions: Vec<GateDecision>,
    gate_looks_passed: u32,
    notes: Vec<String>,
    paused_at: Option<Timestamp>,
    last_resend_check: Instant,
    /// The DDI endpoint and its devices, when the run serves DDI devices.
    ddi: Option<ddi::DdiLink>,
}

/// Runs one rollout to its end and returns the report. `stop` ends the run early (the report
/// says `stopped`). No operator control: see [`run_with`].
pub async fn run(opts: EngineOptions, stop: Option<oneshot::Receiver<()>>) -> Result<EngineReport> {
    run_with(opts, EngineControl::default(), stop).await
}

/// Wall time in Unix milliseconds (the run clock's anchor across restarts).
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// [`run`] with operator control, a pause policy, and resume.
#[allow(clippy::too_many_lines)] // One linear setup; split, it would only pass its locals around.
pub async fn run_with(
    mut opts: EngineOptions,
    control: EngineControl,
    stop: Option<oneshot::Receiver<()>>,
) -> Result<EngineReport> {
    if !(opts.time_scale.is_finite() && opts.time_scale > 0.0) {
        bail!(
            "the time scale must be a positive number, got {}",
            opts.time_scale
        );
    }
    // One engine per rollout: refused here, naming the running one, if another holds it;
    // renewed while this run lasts and released when it ends (dropped).
    let _lease = lease::EngineLease::take(&opts.db, &opts.rollout_id)?;
    let mut store = Store::open(&opts.db)?;
    let fleet = store
        .load_fleet()
        .with_context(|| format!("loading the fleet from {}", opts.db.display()))?;
    if fleet.devices.is_empty() {
        bail!(
            "the cache {} holds no devices: import a fleet first (convoy fleet import)",
            opts.db.display()
        );
    }
    // Before anything is recorded: a DDI endpoint that cannot start (its address taken, no
    // token, an artifact missing) leaves no rollout behind.
    let (ddi_link, mut ddi_rx) = match &control.ddi {
        Some(o) => {
            let (link, rx) = ddi::DdiLink::start(o, &fleet, &opts.manifest)
                .await
                .context("starting the DDI endpoint")?;
            (Some(link), Some(rx))
        }
        None => (None, None),
    };
    let started_by = control
        .started_by
        .clone()
        .unwrap_or_else(|| opts.requested_by.clone());
    let (rollout, clock, resumed) = match control.start {
        StartMode::New => {
            let clock = Clock {
                start: opts.start,
                began: Instant::now(),
                scale: opts.time_scale,
            };
            let rollout = create_rollout(&mut store, &opts, &fleet, clock.now())?;
            store.record_run_clock(&crate::store::events::RunClock {
                rollout_id: opts.rollout_id.clone(),
                release_id: opts.manifest.release_id().to_owned(),
                clock_start: opts.start,
                wall_began_ms: wall_ms(),
                time_scale: opts.time_scale,
            })?;
            (rollout, clock, None)
        }
        StartMode::Resume => {
            let (rollout, clock, adopted) = resume_rollout(&store, &mut opts)?;
            (rollout, clock, Some(adopted))
        }
    };
    let all_pending = store.pending(usize::MAX)?.len();
    let stale_outbox_commands = all_pending - resumed.as_ref().map_or(0, Vec::len).min(all_pending);
    let now = clock.now();

    let in_rollout: Vec<bool> = fleet
        .devices
        .iter()
        .map(|d| rollout.device_state(&d.id).is_some())
        .collect();
    let n = fleet.devices.len();

    // The link, and a sender task so that publishing (which waits when the client's queue is
    // full) never stops the loop from draining inbound messages.
    let (handle, mut inbound) = mqtt::spawn(&opts.link, opts.topics.clone(), &Role::Console)?;
    let (send_tx, send_rx) = mpsc::channel::<Vec<Wire>>(1024);
    let (sent_tx, mut sent_rx) = mpsc::channel::<Vec<String>>(64);
    tokio::spawn(sender(handle.clone(), send_rx, sent_tx));
    publish_manifest(&handle, &opts).await?;

    let next_flush = now.plus_secs(opts.sample_period_secs.max(1));
    let mut engine = Engine {
        clock,
        store,
        rollout,
        in_rollout,
        windows: vec![HealthWindow::new(opts.max_report_gap_secs); n],
        last_status: vec![None; n],
        heard: Vec::new(),
        heard_flag: vec![false; n],
        next_flush,
        dirty: vec![false; n],
        dirty_list: Vec::new(),
        rollback_wanted: vec![false; n],
        rollback_in_flight: vec![false; n],
        rollback_list: Vec::new(),
        persisted_events: 0,
        device_events: Vec::new(),
        acked: Vec::new(),
        awaiting: HashMap::new(),
        connected: false,
        actor: ENGINE_ACTOR.to_owned(),
        logged_events: 0,
        send_tx,
        counts: LinkCounts::default(),
        rejections: RejectionStats::new(64),
        gate_decisions: Vec::new(),
        gate_looks_passed: 0,
        notes: Vec::new(),
        paused_at: None,
        last_resend_check: Instant::now(),
        ddi: ddi_link,
        fleet,
        opts,
    };
    if let Some(adopted) = resumed {
        engine.adopt(now, adopted, &started_by)?;
    }
    let wall_started = Instant::now();
    let mut stop = stop;
    let mut control_rx = control.commands;
    let when_paused = control.when_paused;
    let mut last_cache_flush = Instant::now();
    let final_state = loop {
        let now = engine.clock.now();
        engine.step(now)?;
        if last_cache_flush.elapsed() >= Duration::from_millis(500) {
            engine.flush_cache()?;
            last_cache_flush = Instant::now();
        }
        let hold = when_paused == WhenPaused::Hold
            && control_rx.as_ref().is_some_and(|rx| !rx.is_closed());
        if let Some(state) = engine.finished(now, hold) {
            break state;
        }
        if engine
            .opts
            .max_wall
            .is_some_and(|m| wall_started.elapsed() >= m)
        {
            break FinalState::TimedOut;
        }
        let wait = engine.next_wake();
        tokio::select! {
            event = inbound.recv() => match event {
                Some(event) => {
                    engine.on_link_event(event)?;
                    // Drain what is already queued before the next step.
                    while let Ok(event) = inbound.try_recv() {
                        engine.on_link_event(event)?;
                    }
                }
                None => bail!("the MQTT link task stopped"),
            },
            ids = sent_rx.recv() => {
                if let Some(ids) = ids {
                    engine.on_sent(&ids)?;
                }
            }
            event = recv_ddi(&mut ddi_rx) => match event {
                Some(event) => {
                    engine.on_ddi_event(event);
                    // Drain what is already queued (bounded, so a busy endpoint cannot starve
                    // the steps).
                    for _ in 0..1024 {
                        match ddi_rx.as_mut().map(mpsc::Receiver::try_recv) {
                            Some(Ok(event)) => engine.on_ddi_event(event),
                            _ => break,
                        }
                    }
                }
                None => ddi_rx = None,
            },
            request = recv_control(&mut control_rx) => match request {
                Some(request) => engine.on_control(request)?,
                // Nobody can send a command any more.
                None => control_rx = None,
            },
            () = tokio::time::sleep(wait) => {}
            () = wait_stop(&mut stop) => break FinalState::Stopped,
        }
    };
    // Commands that came too late are refused, not left hanging.
    if let Some(rx) = control_rx.as_mut() {
        rx.close();
        while let Ok(request) = rx.try_recv() {
            let _ = request.reply.send(Err(control::ControlError::NotRunning(
                engine.opts.rollout_id.clone(),
            )));
        }
    }
    let now = engine.clock.now();
    engine.persist_events()?;
    if matches!(
        final_state,
        FinalState::Stopped | FinalState::TimedOut | FinalState::Paused
    ) {
        // The rollout is not over: the timeline says the engine let go of it, and how.
        engine.store.append_event(
            &engine.opts.rollout_id,
            now,
            "engine.stopped",
            ENGINE_ACTOR,
            &serde_json::json!({"final_state": final_state, "phase": engine.rollout.phase()}),
        )?;
    }
    engine.flush_writes(now)?;
    engine.flush_cache()?;
    engine.store.append_audit(&AuditEntry {
        time: now,
        actor: ENGINE_ACTOR.into(),
        action: "rollout.run_ended".into(),
        payload: serde_json::json!({
            "rollout": engine.opts.rollout_id,
            "final_state": final_state,
        }),
    })?;
    let report = engine.final_report(
        final_state,
        now,
        wall_started.elapsed(),
        stale_outbox_commands,
    );
    if let Some(link) = engine.ddi.take() {
        link.shutdown().await;
    }
    // The broker session (client id stable per rollout, docs/ENGINE.md): kept when the rollout
    // can be resumed, so `--resume` takes it back with the acks queued meanwhile; discarded when
    // the rollout is over, so finished runs leave no session and no queued messages behind.
    drop(inbound);
    let discard = matches!(
        final_state,
        FinalState::Completed | FinalState::RolledBack | FinalState::Aborted
    );
    let mut report = report;
    if let Err(err) = handle.close(discard).await {
        report
            .notes
            .push(format!("could not discard the broker session: {err:#}"));
    }
    Ok(report)
}

/// Creates, approves and audits a new rollout from the options.
fn create_rollout(
    store: &mut Store,
    opts: &EngineOptions,
    fleet: &Fleet,
    now: Timestamp,
) -> Result<Rollout> {
    if store.run_clock(&opts.rollout_id)?.is_some() {
        bail!(
            "rollout {} already exists in {}: continue it with --resume, or pick another --rollout-id",
            opts.rollout_id,
            opts.db.display()
        );
    }
    let spec = RolloutSpec {
        id: opts.rollout_id.clone(),
        release_id: opts.manifest.release_id().to_owned(),
        requested_by: opts.requested_by.clone(),
        waves: opts.waves.clone(),
        gates: opts.gates.clone(),
        path: opts.path.clone(),
    };
    let mut rollout = Rollout::new(now, spec, fleet)
        .with_context(|| format!("creating rollout {}", opts.rollout_id))?;
    for operator in &opts.approvers {
        rollout
            .approve(now, operator)
            .with_context(|| format!("recording the approval of {operator}"))?;
    }
    if !rollout.approval_complete() {
        bail!(
            "rollout {} is not approved: {} needs {}",
            opts.rollout_id,
            path_name(&opts.path),
            match &opts.path {
                ChangePath::Standard =>
                    "two approvers other than the requester (--approve NAME, twice)".to_owned(),
                ChangePath::Emergency { authoriser, .. } =>
                    format!("the authoriser {authoriser} and one other approver"),
                ChangePath::SingleOperator => "the requester's own approval".to_owned(),
            }
        );
    }
    store.append_audit(&AuditEntry {
        time: now,
        actor: opts.requested_by.clone(),
        action: "rollout.created".into(),
        payload: serde_json::json!({
            "rollout": opts.rollout_id,
            "release": opts.manifest.release_id(),
            "key": opts.manifest.key_id().as_str(),
            "path": path_name(&opts.path),
            "approvals": opts.approvers,
            "waves": opts.waves.iter().map(|w| serde_json::json!({
                "name": w.name, "devices": w.device_ids.len(), "soak_secs": w.soak_secs,
            })).collect::<Vec<_>>(),
        }),
    })?;
    Ok(rollout)
}

/// Rebuilds the rollout of `opts.rollout_id` from the cache's log, takes its waves, gates, path
/// and approvals into `opts`, continues its clock, and returns its unacknowledged commands.
fn resume_rollout(
    store: &Store,
    opts: &mut EngineOptions,
) -> Result<(Rollout, Clock, Vec<QueuedCommand>)> {
    let id = opts.rollout_id.clone();
    let events = store.rollout_log(&id)?;
    if events.is_empty() {
        bail!(
            "no recorded log of rollout {id} in {}: nothing to resume (start it without --resume)",
            opts.db.display()
        );
    }
    let rollout =
        Rollout::replay(events).with_context(|| format!("replaying the log of rollout {id}"))?;
    let spec = rollout.spec().clone();
    if spec.release_id != opts.manifest.release_id() {
        bail!(
            "rollout {id} rolls out release {}, not {}: pass its manifest with --release",
            spec.release_id,
            opts.manifest.release_id()
        );
    }
    if matches!(
        rollout.phase(),
        Phase::Completed | Phase::RolledBack | Phase::Aborted { .. }
    ) {
        bail!(
            "rollout {id} has ended ({:?}): nothing to resume",
            rollout.phase()
        );
    }
    opts.waves = spec.waves;
    opts.gates = spec.gates;
    opts.path = spec.path;
    opts.requested_by = spec.requested_by;
    opts.approvers.clone_from(&rollout.state().approvals);
    let clock = match store.run_clock(&id)? {
        Some(first) => {
            // The same simulated clock as the first run, as if the engine had never stopped
            // (with a time scale of 1, simply the wall clock).
            let wall_secs = (wall_ms() - first.wall_began_ms).max(0) as f64 / 1000.0;
            opts.time_scale = first.time_scale;
            opts.link.time_scale = first.time_scale;
            Clock {
                start: first
                    .clock_start
                    .plus_secs((wall_secs * first.time_scale) as i64),
                began: Instant::now(),
                scale: first.time_scale,
            }
        }
        None => Clock {
            start: opts.start,
            began: Instant::now(),
            scale: opts.time_scale,
        },
    };
    // Never before the last recorded event: the rollout's time does not run backwards.
    let start = clock.start.max(rollout.state().last_at);
    let clock = Clock { start, ..clock };
    opts.start = start;
    opts.link.clock_start = Some(start);
    let adopted = store.pending_for_rollout(&id)?;
    Ok((rollout, clock, adopted))
}

async fn recv_control(
    rx: &mut Option<mpsc::Receiver<control::ControlRequest>>,
) -> Option<control::ControlRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_ddi(
    rx: &mut Option<mpsc::Receiver<crate::link::ddi::DdiEvent>>,
) -> Option<crate::link::ddi::DdiEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn wait_stop(stop: &mut Option<oneshot::Receiver<()>>) {
    match stop {
        Some(rx) => {
            // A dropped sender means "no stop will come", not "stop".
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

async fn sender(
    handle: LinkHandle,
    mut rx: mpsc::Receiver<Vec<Wire>>,
    done: mpsc::Sender<Vec<String>>,
) {
    while let Some(batch) = rx.recv().await {
        let mut ids = Vec::with_capacity(batch.len());
        for w in batch {
            if handle
                .publish(w.topic, w.payload.to_vec(), false)
                .await
                .is_ok()
            {
                ids.push(w.command_id);
            }
        }
        if done.send(ids).await.is_err() {
            return;
        }
    }
}

async fn publish_manifest(handle: &LinkHandle, opts: &EngineOptions) -> Result<()> {
    let bytes = opts.manifest.served_bytes();
    handle
        .publish(
            opts.topics.manifest(opts.manifest.release_id()),
            bytes,
            true,
        )
        .await
        .context("publishing the release manifest")
}

fn path_name(path: &ChangePath) -> &'static str {
    match path {
        ChangePath::Standard => "standard",
        ChangePath::Emergency { .. } => "emergency",
        ChangePath::SingleOperator => "single operator",
    }
}

fn device_state(state: UpdateState) -> Option<DeviceState> {
    Some(match state {
        UpdateState::Idle => return None,
        UpdateState::Offered => DeviceState::Offered,
        UpdateState::Downloading => DeviceState::Downloading,
        UpdateState::Verified => DeviceState::Verified,
        UpdateState::Installing => DeviceState::Installing,
        UpdateState::Rebooting => DeviceState::Rebooting,
        UpdateState::Confirmed => DeviceState::Healthy,
        UpdateState::Failed => DeviceState::Failed,
        UpdateState::Reverted => DeviceState::Reverted,
    })
}

fn state_name(state: DeviceState) -> &'static str {
    match state {
        DeviceState::Pending => "pending",
        DeviceState::Offered => "offered",
        DeviceState::Downloading => "downloading",
        DeviceState::Verified => "verified",
        DeviceState::Installing => "installing",
        DeviceState::Rebooting => "rebooting",
        DeviceState::Healthy => "confirmed",
        DeviceState::Failed => "failed",
        DeviceState::Reverted => "reverted",
    }
}

impl Engine {
    fn index(&self, device_id: &str) -> Option<usize> {
        self.fleet
            .devices
            .binary_search_by(|d| d.id.as_str().cmp(device_id))
            .ok()
    }

    /// After a resume: takes over the rollout's unacknowledged commands (sent again with their
    /// ids once connected), the devices that still owe a rollback, and the gate tallies of the
    /// log, and records the resume in the timeline and the audit trail.
    fn adopt(&mut self, now: Timestamp, commands: Vec<QueuedCommand>, by: &str) -> Result<()> {
        self.persisted_events = self.rollout.events().len();
        self.logged_events = self.rollout.events().len();
        for e in self.rollout.events() {
            match &e.kind {
                EventKind::GateChecked { outcome, .. } if *outcome == GateOutcome::Continue => {
                    self.gate_looks_passed += 1;
                }
                EventKind::GateChecked {
                    wave,
                    outcome,
                    report,
                } => self.gate_decisions.push(GateDecision {
                    at: e.at,
                    wave: self.wave_name(*wave),
                    outcome: *outcome,
                    evidence: serde_json::to_value(report).unwrap_or_default(),
                }),
                EventKind::SoakExtended { wave, report, .. } => {
                    self.gate_decisions.push(GateDecision {
                        at: e.at,
                        wave: self.wave_name(*wave),
                        outcome: GateOutcome::Hold,
                        evidence: serde_json::to_value(report).unwrap_or_default(),
                    });
                }
                _ => {}
            }
        }
        let mut adopted = 0usize;
        let mut unreadable = 0usize;
        for c in commands {
            let Some(device) = self.index(&c.device_id) else {
                unreadable += 1;
                continue;
            };
            let kind = match c.kind.as_str() {
                "offer" => CmdKind::Offer,
                "rollback" => CmdKind::RollBack,
                "cancel" => CmdKind::Cancel,
                _ => {
                    unreadable += 1;
                    continue;
                }
            };
            // The outbox holds `{"issued_at", "action"}`; the wire form adds the id and device.
            let body: serde_json::Value = serde_json::from_str(&c.payload)
                .with_context(|| format!("reading outbox command {}", c.id))?;
            let (Some(issued_at), Some(action)) = (
                body.get("issued_at").and_then(serde_json::Value::as_i64),
                body.get("action"),
            ) else {
                unreadable += 1;
                continue;
            };
            let action_json = serde_json::to_string(action).context("encoding a command")?;
            let wire = Wire {
                topic: self.opts.topics.commands(&c.device_id),
                payload: command_bytes(
                    &c.id,
                    &c.device_id,
                    Timestamp::from_secs(issued_at),
                    &action_json,
                ),
                command_id: c.id.clone(),
            };
            if kind != CmdKind::Offer {
                self.rollback_in_flight[device] = true;
            }
            self.awaiting.insert(
                c.id,
                Awaiting {
                    wire,
                    device_id: c.device_id,
                    device,
                    kind,
                    // Sent by the earlier run: a resend, not a first send.
                    last_sent: (c.state == crate::store::outbox::CommandState::Sent)
                        .then(Instant::now),
                    backoff: self.opts.resend_after,
                },
            );
            adopted += 1;
        }
        for (i, d) in self.fleet.devices.iter().enumerate() {
            if !self.in_rollout[i] {
                continue;
            }
            let owes = self
                .rollout
                .state()
                .device_ids
                .binary_search(&d.id)
                .ok()
                .and_then(|r| self.rollout.state().devices.get(r))
                .is_some_and(|slot| slot.rollback_pending);
            if owes {
                self.rollback_wanted[i] = true;
                self.rollback_list.push(i as u32);
            }
        }
        if unreadable > 0 {
            self.notes.push(format!(
                "{unreadable} unacknowledged command(s) of this rollout could not be read back from the outbox and were not resent"
            ));
        }
        self.notes.push(format!(
            "{now}: resumed from the cache: {} logged event(s) replayed, {adopted} unacknowledged command(s) to resend",
            self.rollout.events().len()
        ));
        let payload = serde_json::json!({
            "rollout": self.opts.rollout_id,
            "phase": self.rollout.phase(),
            "events_replayed": self.rollout.events().len(),
            "commands_resent": adopted,
        });
        self.store
            .append_event(&self.opts.rollout_id, now, "engine.resumed", by, &payload)?;
        self.store.append_audit(&AuditEntry {
            time: now,
            actor: by.to_owned(),
            action: "rollout.run_resumed".into(),
            payload,
        })?;
        Ok(())
    }

    /// Applies an operator's command between two steps and answers it. A refusal is an answer,
    /// not an error of the run; only a failure to write the cache ends the run.
    fn on_control(&mut self, request: control::ControlRequest) -> Result<()> {
        let now = self.clock.now();
        let control::ControlRequest {
            operator,
            command,
            reply,
        } = request;
        let answer = self.apply_operator(now, &operator, &command)?;
        // The requester may have gone away; the command stands either way.
        let _ = reply.send(answer);
        Ok(())
    }

    fn apply_operator(
        &mut self,
        now: Timestamp,
        operator: &str,
        command: &control::OperatorCommand,
    ) -> Result<Result<Phase, control::ControlError>> {
        use control::{ControlError, OperatorCommand, RollBackScope};
        if let Err(e) = control::check_fields(operator, command) {
            return Ok(Err(e));
        }
        let reason = command.reason();
        let applied = match command {
            OperatorCommand::Pause { .. } => self.rollout.pause(now, operator, reason),
            OperatorCommand::Resume { .. } => self.rollout.resume(now, operator, reason),
            OperatorCommand::Override { .. } => self.rollout.override_gate(now, operator, reason),
            OperatorCommand::Abort { .. } => self.rollout.abort(now, operator, reason),
            OperatorCommand::RollBack { scope, .. } => {
                let scope = match (scope, self.rollout.phase()) {
                    (RollBackScope::All, _) => Some(RollbackScope::All),
                    (
                        RollBackScope::CurrentWave,
                        Phase::Running { wave }
                        | Phase::Soaking { wave, .. }
                        | Phase::Paused { wave, .. },
                    ) => Some(RollbackScope::Wave(*wave)),
                    (RollBackScope::CurrentWave, _) => None,
                };
                match scope {
                    Some(scope) => self.rollout.roll_back(now, operator, scope, reason),
                    None => Err(convoy_core::rollout::RolloutError::NotAllowed {
                        command: "roll back the current wave".into(),
                        phase: format!("{:?} (no wave is running)", self.rollout.phase()),
                    }),
                }
            }
        };
        if let Err(source) = applied {
            return Ok(Err(ControlError::Refused {
                rollout: self.opts.rollout_id.clone(),
                source,
            }));
        }
        self.store.append_audit(&AuditEntry {
            time: now,
            actor: operator.to_owned(),
            action: format!("operator.{}", command.name()),
            payload: serde_json::json!({
                "rollout": self.opts.rollout_id,
                "reason": reason,
                "phase": self.rollout.phase(),
            }),
        })?;
        // What the command implies (rollback commands) is the operator's decision.
        operator.clone_into(&mut self.actor);
        let mut acted = Ok(());
        while let Some(action) = self.rollout.poll_action() {
            acted = self.act(now, action);
            if acted.is_err() {
                break;
            }
        }
        ENGINE_ACTOR.clone_into(&mut self.actor);
        acted?;
        // A resume lets DDI devices that wait for their deployment have it.
        self.ddi_assign_waiting(now);
        self.persist_events()?;
        self.flush_writes(now)?;
        Ok(Ok(self.rollout.phase().clone()))
    }

    /// Everything that is due at `now`: health samples, timeouts, actions, the timeline, resends.
    fn step(&mut self, now: Timestamp) -> Result<()> {
        if now >= self.next_flush {
            self.flush_health(now);
            self.retry_rollbacks(now)?;
            self.ddi_assign_waiting(now);
            self.next_flush = now.plus_secs(self.opts.sample_period_secs.max(1));
        }
        if self.rollout.poll_timeout().is_some_and(|t| t <= now) {
            self.rollout.handle_timeout(now);
        }
        while let Some(action) = self.rollout.poll_action() {
            self.act(now, action)?;
        }
        self.persist_events()?;
        self.flush_writes(now)?;
        if self.connected && self.last_resend_check.elapsed() >= Duration::from_millis(500) {
            self.last_resend_check = Instant::now();
            self.resend_overdue();
        }
        Ok(())
    }

    fn next_wake(&self) -> Duration {
        let mut t = self.next_flush;
        if let Some(timeout) = self.rollout.poll_timeout() {
            t = t.min(timeout);
        }
        self.clock
            .wall_until(t)
            .clamp(Duration::from_millis(5), Duration::from_millis(250))
    }

    /// Whether the run is over, and how.
    fn finished(&mut self, now: Timestamp, hold: bool) -> Option<FinalState> {
        match self.rollout.phase() {
            Phase::Completed => Some(FinalState::Completed),
            Phase::RolledBack => Some(FinalState::RolledBack),
            Phase::Aborted { .. } => Some(FinalState::Aborted),
            // Someone may still resume it: keep the link and the gates' view alive.
            Phase::Paused { .. } if hold => None,
            Phase::Paused { .. } => {
                // Wait for devices already installing to settle (or go silent) so the report
                // says where each one ended; nobody is here to resume it.
                let since = *self.paused_at.get_or_insert(now);
                // DDI devices that never got their deployment will not move while paused.
                let in_flight: u32 = self
                    .rollout
                    .state()
                    .in_flight
                    .iter()
                    .sum::<u32>()
                    .saturating_sub(self.ddi_waiting_in_flight());
                let settled = in_flight == 0 && self.rollout.state().rollback_pending == 0;
                let waited = now.secs_since(since) >= self.opts.gates.silent_after_secs;
                (settled || waited).then_some(FinalState::Paused)
            }
            _ => {
                self.paused_at = None;
                None
            }
        }
    }

    fn on_link_event(&mut self, event: LinkEvent) -> Result<()> {
        let now = self.clock.now();
        match event {
            LinkEvent::Inbound(Inbound::Status(s)) => self.on_status(now, &s)?,
            LinkEvent::Inbound(Inbound::Telemetry(t)) => self.on_telemetry(&t),
            LinkEvent::Inbound(Inbound::Ack(a)) => self.on_ack(now, &a),
            LinkEvent::Rejected(r) => {
                self.rejections.record(&r);
                let reason = serde_json::to_value(r.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("{:?}", r.reason));
                *self.counts.rejected.entry(reason).or_default() += 1;
            }
            LinkEvent::Raw { .. } => {}
            LinkEvent::Connected => {
                let reconnect = !self.connected && self.counts.disconnects > 0;
                self.connected = true;
                if reconnect {
                    self.notes.push(format!(
                        "{now}: reconnected to the broker; resubscribed and resending unacknowledged commands"
                    ));
                }
                // Anything not acknowledged goes again (same ids: devices apply it once).
                self.resend_all();
            }
            LinkEvent::Disconnected(why) => {
                if self.connected {
                    self.counts.disconnects += 1;
                    self.notes
                        .push(format!("{now}: lost the broker connection: {why}"));
                }
                self.connected = false;
            }
        }
        Ok(())
    }

    fn on_status(&mut self, now: Timestamp, s: &DeviceStatus) -> Result<()> {
        self.counts.status_messages += 1;
        let Some(i) = self.index(&s.device_id) else {
            return Ok(());
        };
        let change = {
            let d = &mut self.fleet.devices[i];
            let change = s.software_change(d);
            s.apply_to(d);
            d.last_seen = now;
            change
        };
        if let Some(change) = change {
            // Who said what: the report's own claim, on the device's status topic, old and new.
            self.device_event(&s.device_id, now, "status.changed", change);
        }
        self.last_status[i] = Some(now);
        self.mark_dirty(i);
        if !self.in_rollout[i] {
            return Ok(());
        }
        self.mark_heard(i, s.ts, None);
        if s.update.release_id.as_deref() != Some(self.opts.manifest.release_id()) {
            return Ok(());
        }
        if let Some(state) = device_state(s.update.state) {
            // Devices repeat their status (on reconnect, and as a status heartbeat): count a
            // failure once, when the rollout first hears of it.
            if state == DeviceState::Failed
                && self.rollout.device_state(&s.device_id) != Some(DeviceState::Failed)
            {
                let d = &mut self.fleet.devices[i];
                d.failed_update_attempts = d.failed_update_attempts.saturating_add(1);
            }
            if let Some(reason) = &s.update.reason
                && matches!(state, DeviceState::Failed | DeviceState::Reverted)
                && self.rollout.device_state(&s.device_id) != Some(state)
            {
                self.device_event(
                    &s.device_id,
                    now,
                    "update.reason",
                    serde_json::json!({ "state": state_name(state), "reason": reason }),
                );
            }
            self.report(now, i, state);
            if self.rollback_wanted[i]
                && !self.rollback_in_flight[i]
                && state.runs_new_version()
                && self
                    .rollout
                    .state()
                    .devices
                    .get(self.rollout_index(i))
                    .is_some_and(|slot| slot.rollback_pending)
            {
                let id = self.fleet.devices[i].id.clone();
                self.send_rollback(now, &[id], "rollout.rollback_retry")?;
            }
        }
        Ok(())
    }

    /// The rollout's device number of fleet device `i` (it must be in the rollout).
    fn rollout_index(&self, i: usize) -> usize {
        let id = self.fleet.devices[i].id.as_str();
        self.rollout
            .state()
            .device_ids
            .binary_search_by(|d| d.as_str().cmp(id))
            .unwrap_or(usize::MAX)
    }

    fn on_telemetry(&mut self, t: &Telemetry) {
        self.counts.telemetry_messages += 1;
        let Some(i) = self.index(&t.device_id) else {
            return;
        };
        if self.in_rollout[i] {
            self.mark_heard(i, t.ts, Some(&t.event));
        }
    }

    fn on_ack(&mut self, now: Timestamp, a: &CommandAck) {
        self.counts.acks += 1;
        let Some(entry) = self.awaiting.remove(&a.command_id) else {
            // An ack for a command of another run, or a second ack: nothing to do.
            return;
        };
        if entry.device_id != a.device_id {
            // Not from the device the command went to: keep waiting for the right one.
            self.awaiting.insert(a.command_id.clone(), entry);
            return;
        }
        self.acked.push(a.command_id.clone());
        self.counts.commands_acked += 1;
        if entry.kind != CmdKind::Offer {
            self.rollback_in_flight[entry.device] = false;
        }
        if entry.kind == CmdKind::Cancel && a.result != AckResult::Rejected {
            // The device dropped the offer before installing: it runs its previous version.
            self.device_event(
                &a.device_id,
                now,
                "cancelled",
                serde_json::json!({"command_id": a.command_id}),
            );
            self.report(now, entry.device, DeviceState::Reverted);
        }
        if a.result == AckResult::Rejected {
            self.counts.commands_rejected_by_devices += 1;
            let reason = a.reason.clone().unwrap_or_else(|| "no reason given".into());
            self.device_event(
                &a.device_id,
                now,
                "command.rejected",
                serde_json::json!({"command_id": a.command_id, "reason": reason}),
            );
            if entry.kind == CmdKind::Offer {
                // The device refused the offer (failed verification, busy, ...): it will not
                // install, and the reason is in its history.
                self.report(now, entry.device, DeviceState::Failed);
            }
        }
    }

    fn on_sent(&mut self, ids: &[String]) -> Result<()> {
        let now = self.clock.now();
        for id in ids {
            match self.awaiting.get_mut(id) {
                Some(a) if a.last_sent.is_some() => {
                    self.counts.commands_resent += 1;
                    a.last_sent = Some(Instant::now());
                }
                Some(a) => {
                    self.counts.commands_sent += 1;
                    a.last_sent = Some(Instant::now());
                }
                // Acknowledged before the sender reported it sent: it was sent.
                None => self.counts.commands_sent += 1,
            }
        }
        // Records the attempts; an acknowledged command stays acknowledged.
        self.store.mark_sent_many(ids, now)?;
        Ok(())
    }

    /// Notes a message from fleet device `i`, stamped `device_ts` by the device.
    fn mark_heard(
        &mut self,
        i: usize,
        device_ts: Timestamp,
        event: Option<&crate::link::protocol::TelemetryEvent>,
    ) {
        match event {
            Some(e) => self.windows[i].record(device_ts, e),
            None => self.windows[i].touch(device_ts),
        }
        if !self.heard_flag[i] {
            self.heard_flag[i] = true;
            self.heard.push(i as u32);
        }
    }

    fn mark_dirty(&mut self, i: usize) {
        if !self.dirty[i] {
            self.dirty[i] = true;
            self.dirty_list.push(i as u32);
        }
    }

    /// Feeds a device's state to the rollout, closing its health window first when it moves
    /// between the old and the new version so each event counts for the right cohort.
    fn report(&mut self, now: Timestamp, i: usize, state: DeviceState) {
        let id = self.fleet.devices[i].id.clone();
        let Some(current) = self.rollout.device_state(&id) else {
            return;
        };
        if current == state {
            return;
        }
        if current.runs_new_version() != state.runs_new_version() {
            self.close_window(now, i);
        }
        match self.rollout.handle_report(
            now,
            DeviceReport {
                device_id: id.clone(),
                state,
            },
        ) {
            Ok(()) => {}
            Err(e) => {
                let kind = match e {
                    convoy_core::rollout::RolloutError::BadTransition { .. } => "bad_transition",
                    convoy_core::rollout::RolloutError::UnknownDevice(_) => "unknown_device",
                    _ => "other",
                };
                *self.counts.reports_refused.entry(kind.into()).or_default() += 1;
            }
        }
    }

    fn close_window(&mut self, now: Timestamp, i: usize) {
        if let Some(sample) = self.windows[i].close() {
            let report = TelemetryReport {
                device_id: self.fleet.devices[i].id.clone(),
                sample,
            };
            if self.rollout.handle_telemetry(now, report).is_err() {
                *self
                    .counts
                    .reports_refused
                    .entry("bad_telemetry".into())
                    .or_default() += 1;
            }
        }
    }

    /// Closes the window of every device heard since the last flush.
    fn flush_health(&mut self, now: Timestamp) {
        let heard = std::mem::take(&mut self.heard);
        for &i in &heard {
            self.heard_flag[i as usize] = false;
            self.close_window(now, i as usize);
        }
    }

    fn act(&mut self, now: Timestamp, action: RolloutAction) -> Result<()> {
        let release_id = self.opts.manifest.release_id().to_owned();
        match action {
            RolloutAction::Offer { wave, device_ids } => {
                // The canonical form of what was verified, never the file as it came in;
                // serde_json writes this value back byte for byte (sorted keys, no whitespace).
                let manifest =
                    serde_json::from_slice::<serde_json::Value>(&self.opts.manifest.served_bytes())
                        .context("encoding the manifest for the offer")?;
                let action = CommandAction::Offer {
                    release_id: release_id.clone(),
                    manifest,
                };
                let name = self.wave_name(wave);
                self.dispatch(
                    now,
                    "rollout.offer",
                    serde_json::json!({"rollout": self.opts.rollout_id, "release": release_id, "wave": name, "devices": device_ids.len()}),
                    &device_ids,
                    &action,
                    CmdKind::Offer,
                )?;
            }
            RolloutAction::RollBack { scope, device_ids } => {
                // Devices running the new version roll back; devices still before their reboot
                // have their offer cancelled (they never left the previous version).
                let mut back = Vec::new();
                let mut cancel = Vec::new();
                for id in device_ids {
                    if let Some(i) = self.index(&id)
                        && !self.rollback_wanted[i]
                    {
                        self.rollback_wanted[i] = true;
                        self.rollback_list.push(i as u32);
                    }
                    match self.rollout.device_state(&id) {
                        Some(s) if s.runs_new_version() => back.push(id),
                        Some(s) if s.is_in_flight() => cancel.push(id),
                        _ => back.push(id),
                    }
                }
                let _ = scope;
                self.send_rollback(now, &back, "rollout.rollback")?;
                if !cancel.is_empty() {
                    let action = CommandAction::Cancel {
                        release_id: release_id.clone(),
                    };
                    self.dispatch(
                        now,
                        "rollout.cancel",
                        serde_json::json!({"rollout": self.opts.rollout_id, "release": release_id, "devices": cancel.len()}),
                        &cancel,
                        &action,
                        CmdKind::Cancel,
                    )?;
                }
            }
            RolloutAction::Pause(reason) => {
                self.store.append_audit(&AuditEntry {
                    time: now,
                    actor: self.actor.clone(),
                    action: "rollout.paused".into(),
                    payload: serde_json::json!({"rollout": self.opts.rollout_id, "reason": reason}),
                })?;
            }
            RolloutAction::Notify(text) => {
                self.store.append_event(
                    &self.opts.rollout_id,
                    now,
                    "notify",
                    ENGINE_ACTOR,
                    &serde_json::json!({ "text": text }),
                )?;
            }
        }
        Ok(())
    }

    /// Asks again every device that still owes its rollback and has no command outstanding: one
    /// that refused (still installing, offer not yet received, low battery) may act on it now.
    fn retry_rollbacks(&mut self, now: Timestamp) -> Result<()> {
        let mut back = Vec::new();
        let mut cancel = Vec::new();
        for &i in &self.rollback_list {
            let i = i as usize;
            if self.rollback_in_flight[i] {
                continue;
            }
            let Some(slot) = self.rollout.state().devices.get(self.rollout_index(i)) else {
                continue;
            };
            if !slot.rollback_pending {
                continue;
            }
            let id = self.fleet.devices[i].id.clone();
            if slot.state.runs_new_version() {
                back.push(id);
            } else if slot.state.is_in_flight() {
                cancel.push(id);
            }
        }
        self.send_rollback(now, &back, "rollout.rollback_retry")?;
        if !cancel.is_empty() {
            let action = CommandAction::Cancel {
                release_id: self.opts.manifest.release_id().to_owned(),
            };
            self.dispatch(
                now,
                "rollout.cancel_retry",
                serde_json::json!({"rollout": self.opts.rollout_id, "devices": cancel.len()}),
                &cancel,
                &action,
                CmdKind::Cancel,
            )?;
        }
        Ok(())
    }

    /// Asks `device_ids` to go back to their previous slot.
    fn send_rollback(&mut self, now: Timestamp, device_ids: &[String], audit: &str) -> Result<()> {
        if device_ids.is_empty() {
            return Ok(());
        }
        let release_id = self.opts.manifest.release_id().to_owned();
        let reason = match self.rollout.phase() {
            Phase::Paused { reason, .. } => reason.clone(),
            _ => self
                .rollout
                .state()
                .last_report
                .as_ref()
                .map_or_else(|| "rollback".to_owned(), |r| format!("{:?}", r.outcome)),
        };
        let action = CommandAction::RollBack {
            release_id: release_id.clone(),
            reason: format!("rollout {}: {reason}", self.opts.rollout_id),
        };
        self.dispatch(
            now,
            audit,
            serde_json::json!({"rollout": self.opts.rollout_id, "release": release_id, "devices": device_ids.len()}),
            device_ids,
            &action,
            CmdKind::RollBack,
        )
    }

    fn wave_name(&self, wave: usize) -> String {
        self.opts
            .waves
            .get(wave)
            .map_or_else(|| format!("wave {wave}"), |w| w.name.clone())
    }

    /// Writes the decision and its commands to the cache in one transaction, then sends them.
    fn dispatch(
        &mut self,
        now: Timestamp,
        audit_action: &str,
        audit_payload: serde_json::Value,
        device_ids: &[String],
        action: &CommandAction,
        kind: CmdKind,
    ) -> Result<()> {
        // DDI devices get no MQTT command: the decision is carried out through the DDI hub.
        let (mqtt_ids, ddi_devices) = self.split_ddi(device_ids);
        let device_ids = mqtt_ids.as_slice();
        let mut audit_payload = audit_payload;
        if !ddi_devices.is_empty()
            && let Some(p) = audit_payload.as_object_mut()
        {
            p.insert("ddi_devices".into(), ddi_devices.len().into());
        }
        let body = serde_json::json!({"issued_at": now, "action": action});
        let commands: Vec<OutboxCommand> = device_ids
            .iter()
            .map(|d| OutboxCommand {
                device_id: d.clone(),
                kind: kind.as_str().into(),
                payload: body.clone(),
            })
            .collect();
        let log = &self.rollout.events()[self.logged_events..];
        let decision = self.store.commit_decision_logged(
            &AuditEntry {
                time: now,
                actor: self.actor.clone(),
                action: audit_action.into(),
                payload: audit_payload,
            },
            &commands,
            Some(crate::store::outbox::RolloutLogAppend {
                rollout_id: &self.opts.rollout_id,
                first_seq: self.logged_events,
                events: log,
            }),
        )?;
        self.logged_events = self.rollout.events().len();
        let action_json = serde_json::to_string(action).context("encoding a command")?;
        let mut batch = Vec::with_capacity(device_ids.len());
        for (device_id, command_id) in device_ids.iter().zip(decision.command_ids) {
            let Some(device) = self.index(device_id) else {
                continue;
            };
            let wire = Wire {
                topic: self.opts.topics.commands(device_id),
                payload: command_bytes(&command_id, device_id, now, &action_json),
                command_id: command_id.clone(),
            };
            self.device_event(
                device_id,
                now,
                kind.as_str(),
                serde_json::json!({"command_id": command_id}),
            );
            if kind != CmdKind::Offer {
                self.rollback_in_flight[device] = true;
            }
            batch.push(wire.clone());
            self.awaiting.insert(
                command_id,
                Awaiting {
                    wire,
                    device_id: device_id.clone(),
                    device,
                    kind,
                    last_sent: None,
                    backoff: self.opts.resend_after,
                },
            );
        }
        if self.connected {
            self.send(&batch);
        }
        self.ddi_dispatch(now, &ddi_devices, kind);
        Ok(())
    }

    fn send(&mut self, batch: &[Wire]) {
        for chunk in batch.chunks(256) {
            if self.send_tx.try_send(chunk.to_vec()).is_err() {
                // The sender is behind; these go with the next resend pass.
                break;
            }
        }
    }

    /// After a reconnect: everything unacknowledged goes again, and the backoffs start over.
    fn resend_all(&mut self) {
        let first = self.opts.resend_after;
        let mut batch: Vec<Wire> = self
            .awaiting
            .values_mut()
            .map(|a| {
                a.backoff = first;
                a.wire.clone()
            })
            .collect();
        batch.sort_by(|a, b| a.command_id.cmp(&b.command_id));
        self.send(&batch);
    }

    /// Commands unacknowledged for longer than their backoff go again; the backoff doubles.
    fn resend_overdue(&mut self) {
        let mut batch: Vec<Wire> = Vec::new();
        for a in self.awaiting.values_mut() {
            if a.last_sent.is_none_or(|t| t.elapsed() >= a.backoff) {
                a.backoff = (a.backoff * 2).min(MAX_RESEND_BACKOFF);
                batch.push(a.wire.clone());
            }
        }
        batch.sort_by(|a, b| a.command_id.cmp(&b.command_id));
        self.send(&batch);
    }

    /// Appends the rollout's new events to the cache: state changes to the timeline, device
    /// state changes to each device's history. Raw telemetry stays out of the timeline.
    fn persist_events(&mut self) -> Result<()> {
        let log = &self.rollout.events()[self.logged_events..];
        self.store
            .append_rollout_log(&self.opts.rollout_id, self.logged_events, log)?;
        self.logged_events = self.rollout.events().len();
        let events: Vec<RolloutEvent> = self.rollout.events()[self.persisted_events..].to_vec();
        self.persisted_events += events.len();
        for e in events {
            let cause = match &e.cause {
                Cause::Operator { name, reason } if reason.is_empty() => name.clone(),
                Cause::Operator { name, reason } => format!("{name}: {reason}"),
                Cause::Device(i) => self
                    .rollout
                    .state()
                    .device_ids
                    .get(*i as usize)
                    .cloned()
                    .unwrap_or_default(),
                Cause::Gate => "gate".into(),
                Cause::Timer => "timer".into(),
            };
            match &e.kind {
                // Raw telemetry and routine silence checks would drown the story.
                EventKind::Telemetry { .. } | EventKind::SilenceChecked => {}
                EventKind::Device { device, state } => {
                    if let Some(id) = self.rollout.state().device_ids.get(*device as usize) {
                        let id = id.clone();
                        self.device_event(&id, e.at, state_name(*state), serde_json::json!({}));
                    }
                }
                EventKind::GateChecked {
                    wave,
                    outcome,
                    report,
                } => {
                    if *outcome == GateOutcome::Continue {
                        self.gate_looks_passed += 1;
                    } else {
                        let evidence = serde_json::to_value(report).unwrap_or_default();
                        self.gate_decisions.push(GateDecision {
                            at: e.at,
                            wave: self.wave_name(*wave),
                            outcome: *outcome,
                            evidence: evidence.clone(),
                        });
                        self.store.append_event(
                            &self.opts.rollout_id,
                            e.at,
                            "gate.decision",
                            &cause,
                            &serde_json::json!({"wave": self.wave_name(*wave), "outcome": outcome, "report": evidence}),
                        )?;
                    }
                }
                EventKind::SoakExtended { wave, report, .. } => {
                    // A hold is a decision too: the report says what trended or lacked a sample.
                    self.gate_decisions.push(GateDecision {
                        at: e.at,
                        wave: self.wave_name(*wave),
                        outcome: GateOutcome::Hold,
                        evidence: serde_json::to_value(report).unwrap_or_default(),
                    });
                    self.store.append_event(
                        &self.opts.rollout_id,
                        e.at,
                        event_name(&e.kind),
                        &cause,
                        &serde_json::to_value(&e.kind).unwrap_or_default(),
                    )?;
                }
                EventKind::Created { spec, strata, .. } => {
                    // The spec's device lists are in the cache already; the timeline gets the shape.
                    let payload = serde_json::json!({
                        "release": spec.release_id,
                        "requested_by": spec.requested_by,
                        "path": path_name(&spec.path),
                        "waves": spec.waves.iter().map(|w| serde_json::json!({
                            "name": w.name, "devices": w.device_ids.len(), "soak_secs": w.soak_secs,
                        })).collect::<Vec<_>>(),
                        "strata": strata,
                    });
                    self.store.append_event(
                        &self.opts.rollout_id,
                        e.at,
                        "rollout.created",
                        &cause,
                        &payload,
                    )?;
                }
                kind => {
                    let name = event_name(kind);
                    let payload = serde_json::to_value(kind).unwrap_or_default();
                    self.store
                        .append_event(&self.opts.rollout_id, e.at, name, &cause, &payload)?;
                }
            }
        }
        Ok(())
    }

    fn device_event(
        &mut self,
        device_id: &str,
        time: Timestamp,
        kind: &str,
        payload: serde_json::Value,
    ) {
        self.device_events.push(NewDeviceEvent {
            device_id: device_id.to_owned(),
            rollout_id: Some(self.opts.rollout_id.clone()),
            time,
            kind: kind.to_owned(),
            payload,
        });
    }

    /// Writes buffered device events and acknowledgements, each batch in one transaction.
    fn flush_writes(&mut self, now: Timestamp) -> Result<()> {
        let events = std::mem::take(&mut self.device_events);
        self.store.append_device_events(&events)?;
        let acked = std::mem::take(&mut self.acked);
        if !acked.is_empty() {
            self.store.mark_acked_many(&acked, now)?;
        }
        Ok(())
    }

    /// Writes the devices whose status changed back to the cache.
    fn flush_cache(&mut self) -> Result<()> {
        if self.dirty_list.is_empty() {
            return Ok(());
        }
        let list = std::mem::take(&mut self.dirty_list);
        let devices: Vec<_> = list
            .iter()
            .map(|&i| {
                self.dirty[i as usize] = false;
                self.fleet.devices[i as usize].clone()
            })
            .collect();
        self.store.upsert_fleet(&[], &devices, None)?;
        Ok(())
    }

    fn final_report(
        &self,
        final_state: FinalState,
        now: Timestamp,
        wall: Duration,
        stale: usize,
    ) -> EngineReport {
        let s = self.rollout.state();
        let mut waves: Vec<WaveReport> = self
            .opts
            .waves
            .iter()
            .map(|w| WaveReport {
                name: w.name.clone(),
                ..WaveReport::default()
            })
            .collect();
        let mut unsettled = Vec::new();
        for (w, members) in s.wave_members.iter().enumerate() {
            let Some(r) = waves.get_mut(w) else { continue };
            for &i in members {
                let slot = &s.devices[i as usize];
                r.devices += 1;
                if slot.state != DeviceState::Pending {
                    r.offered += 1;
                }
                match slot.state {
                    DeviceState::Healthy => r.confirmed += 1,
                    DeviceState::Failed => r.failed += 1,
                    DeviceState::Reverted => r.reverted += 1,
                    DeviceState::Pending => {}
                    _ => r.in_flight += 1,
                }
                if slot.silent {
                    r.silent += 1;
                }
                let unsettled_now =
                    (slot.state.is_in_flight() || slot.silent || slot.rollback_pending)
                        && slot.state != DeviceState::Pending;
                if unsettled_now {
                    let device_id = s.device_ids[i as usize].clone();
                    let last_status_at = self.index(&device_id).and_then(|f| self.last_status[f]);
                    unsettled.push(Unsettled {
                        device_id,
                        wave: r.name.clone(),
                        last_state: slot.state,
                        silent: slot.silent,
                        last_status_at,
                    });
                }
            }
        }
        unsettled.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        let mut notes = self.notes.clone();
        // The stall of docs/ENGINE.md, named when it happens: devices the rollout waits for,
        // heard from (so not silent), but with no status for longer than the silence limit.
        let limit = self.opts.gates.silent_after_secs;
        let quiet = unsettled
            .iter()
            .filter(|u| {
                !u.silent
                    && u.last_state.is_in_flight()
                    && now.secs_since(u.last_status_at.unwrap_or(self.opts.start)) > limit
            })
            .count();
        if quiet > 0 {
            notes.push(format!(
                "{quiet} device(s) in flight were heard from but sent no status for over {limit} s of simulated time: a status was lost on the way and not repeated (see docs/ENGINE.md, \"Lost status\")"
            ));
        }
        let ddi = self.ddi.as_ref().map(|l| l.report(&self.in_rollout));
        let held_back = self.ddi_waiting_in_flight();
        if held_back > 0 {
            notes.push(format!(
                "{held_back} DDI device(s) were offered the release by their wave but had not been given the deployment when the rollout stopped (they are listed as unsettled, last state offered)"
            ));
        }
        if let Some(d) = &ddi {
            if d.rollbacks_unsupported > 0 {
                notes.push(format!(
                    "{} DDI device(s) that installed the release were to roll back, which DDI cannot do here (docs/DDI.md); they run the new release",
                    d.rollbacks_unsupported
                ));
            }
            if !d.unknown_controllers.is_empty() {
                notes.push(format!(
                    "{} DDI controller(s) polled that are not devices of the cache and were offered nothing: {}",
                    d.unknown_controllers.len(),
                    d.unknown_controllers.join(", ")
                ));
            }
        }
        if !self.awaiting.is_empty() {
            notes.push(format!(
                "{} command(s) were never acknowledged; they stay in the outbox",
                self.awaiting.len()
            ));
        }
        EngineReport {
            rollout_id: self.opts.rollout_id.clone(),
            release_id: self.opts.manifest.release_id().to_owned(),
            final_state,
            phase: s.phase.clone(),
            change_path: self.opts.path.clone(),
            requested_by: self.opts.requested_by.clone(),
            approvals: s.approvals.clone(),
            started_at: self.opts.start,
            ended_at: now,
            wall_secs: wall.as_secs_f64(),
            waves,
            gate_decisions: self.gate_decisions.clone(),
            gate_looks_passed: self.gate_looks_passed,
            unsettled,
            link: LinkCounts {
                last_rejection: self.rejections.last.clone(),
                rejected_by_device: self.rejections.by_device.clone(),
                ..self.counts.clone()
            },
            stale_outbox_commands: stale,
            ddi,
            notes,
        }
    }
}

fn event_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Created { .. } => "rollout.created",
        EventKind::Approval { .. } => "approval",
        EventKind::Approved => "rollout.approved",
        EventKind::WaveStarted { .. } => "wave.started",
        EventKind::Device { .. } => "device",
        EventKind::Telemetry { .. } => "telemetry",
        EventKind::DeviceSilent { .. } => "device.silent",
        EventKind::SoakStarted { .. } => "soak.started",
        EventKind::GateChecked { .. } => "gate.checked",
        EventKind::SilenceChecked => "silence.checked",
        EventKind::SoakExtended { .. } => "soak.extended",
        EventKind::WaveCompleted { .. } => "wave.completed",
        EventKind::Paused { .. } => "rollout.paused",
        EventKind::Resumed => "rollout.resumed",
        EventKind::GateOverridden { .. } => "gate.overridden",
        EventKind::RollbackStarted { .. } => "rollback.started",
        EventKind::RollbackFinished { .. } => "rollback.finished",
        EventKind::Completed => "rollout.completed",
        EventKind::Aborted { .. } => "rollout.aborted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::protocol::Command;

    #[test]
    fn hand_built_command_bytes_decode_to_the_same_command() {
        let action = CommandAction::RollBack {
            release_id: "t300-2.5.0".into(),
            reason: "gate: \"crash\" T300/C".into(),
        };
        let json = serde_json::to_string(&action).expect("encode");
        let bytes = command_bytes("c-1", "CV0000042", Timestamp(1_795_392_000), &json);
        let decoded: Command = serde_json::from_slice(&bytes).expect("valid command JSON");
        assert_eq!(
            decoded,
            Command {
                v: PROTOCOL_VERSION,
                command_id: "c-1".into(),
                device_id: "CV0000042".into(),
                issued_at: Timestamp(1_795_392_000),
                action,
            }
        );
    }
}
