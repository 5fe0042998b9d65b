//! The headless rollout engine: one rollout driven over a real MQTT link against the local
//! cache, from the first offer to a final report.
//!
//! It is two parts, as quinn's `ConnectionDriver` drives quinn-proto's `Connection`. The driver
//! state ([`state::EngineState`]) holds every decision and all the bookkeeping around
//! [`convoy_core::rollout::Rollout`]: it takes device status, acknowledgements, telemetry,
//! operator commands and the passing of time with the simulated `now` passed in, and says what
//! to write, what to publish and when to wake up. This module is the thin I/O shell around it:
//! it reads the clock, feeds in what the broker, the control channel and the DDI endpoint
//! deliver, and carries out what the state asks. Every decision that sends commands is written
//! to the cache first, in one transaction with its audit entry ([`Store::commit_decision`]),
//! and only then published; every state change of the rollout goes to its timeline and every
//! device state change to the device's history, so the cache tells the story after the process
//! is gone.
//!
//! Time: simulated seconds are `start + wall elapsed × time_scale`, as in `convoy sim`, so a
//! rollout with hour-long soaks finishes in seconds when both run with the same scale. The shell
//! is the only reader of the clock.
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

pub mod chain;
pub mod control;
pub mod ddi;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod pacing;
pub mod state;
#[cfg(test)]
mod tests;

use anyhow::{Context, Result, bail};
use convoy_core::fleet::Fleet;
use convoy_core::gates::{GateOutcome, GatePolicy};
use convoy_core::manifest::VerifiedManifest;
use convoy_core::rollout::{ChangePath, DeviceState, Phase, Rollout, RolloutSpec, WaveSpec};
use convoy_core::time::Timestamp;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use crate::link::mqtt::{self, LinkConfig, LinkEvent, LinkHandle, Role};
use crate::link::protocol::Topics;
use crate::store::Store;
use crate::store::audit::AuditEntry;
use crate::store::outbox::QueuedCommand;
use state::{EngineState, StateConfig, StoreWrite, Wire, path_name};

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
    /// Where the run keeps a snapshot of its report, refreshed about once a second while it
    /// runs (`convoy rollout run --metrics-listen` serves it as Prometheus metrics).
    pub live: Option<LiveReport>,
    /// Pace a new rollout's offers by this schedule (the planning policy's rate, windows,
    /// blackouts and cap), kept in its log so a resumed run follows it too. `None`: each wave
    /// is offered at once (a resumed run follows whatever its log says).
    pub schedule: Option<convoy_core::plan::pacing::OfferSchedule>,
    /// Prerequisite chains (`chain.rs`): the verified manifests of the prerequisite releases,
    /// and a new rollout's chains per wave. A chain naming a release without a manifest
    /// refuses to start.
    pub prerequisites: chain::Prerequisites,
}

/// The running engine's report, as of its last refresh (`None` before the first).
pub type LiveReport = std::sync::Arc<std::sync::Mutex<Option<EngineReport>>>;

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
    /// How the run ended, in words.
    pub fn words(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Paused => "paused",
            Self::RolledBack => "rolled back",
            Self::Aborted => "aborted",
            Self::TimedOut => "timed out",
            Self::Stopped => "stopped",
        }
    }

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
    /// The offer schedule's state (devices waiting, the next offer time and why they wait),
    /// when the rollout paces its offers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<pacing::ScheduleReport>,
    /// Devices stopped at a prerequisite release (chains), by release in chain order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prerequisite_stops: Vec<convoy_core::rollout::chain::PrerequisiteStop>,
    pub notes: Vec<String>,
}

/// Simulated time from wall time.
#[derive(Clone, Copy, Debug)]
struct ScaledClock {
    start: Timestamp,
    began: Instant,
    scale: f64,
}

impl ScaledClock {
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

/// The rollout's events in `range`, which the state keeps until [`EngineState::log_written`].
fn logged<'a>(
    state: &'a EngineState,
    range: &std::ops::Range<usize>,
) -> Result<&'a [convoy_core::rollout::RolloutEvent]> {
    state.rollout().logged(range.clone()).with_context(|| {
        format!(
            "the rollout's log events {}..{} are no longer in memory (kept from {})",
            range.start,
            range.end,
            state.rollout().first_kept_event()
        )
    })
}

/// The I/O side of a run: the cache, the clock and the sender, around the driver state.
struct Shell {
    store: Store,
    state: EngineState,
    clock: ScaledClock,
    /// When the run began, in wall time (the state's resend backoffs count from here).
    began: Instant,
    send_tx: mpsc::Sender<Vec<Wire>>,
}

impl Shell {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn wall(&self) -> Duration {
        self.began.elapsed()
    }

    /// Carries out what the state asks, in order: its cache writes (each decision committed in
    /// one transaction with its commands and log events, before any of its commands exists for
    /// the wire), then the commands to publish.
    fn drain(&mut self) -> Result<()> {
        let rollout_id = self.state.rollout_id().to_owned();
        while let Some(write) = self.state.poll_write()? {
            match write {
                StoreWrite::Audit(entry) => {
                    self.store.append_audit(&entry)?;
                }
                StoreWrite::Timeline {
                    at,
                    kind,
                    actor,
                    payload,
                } => {
                    self.store
                        .append_event(&rollout_id, at, &kind, &actor, &payload)?;
                }
                StoreWrite::Log { range } => {
                    let events = logged(&self.state, &range)?;
                    self.store
                        .append_rollout_log(&rollout_id, range.start, events)?;
                    self.state.log_written(range.end);
                }
                StoreWrite::Decision {
                    audit,
                    commands,
                    log,
                } => {
                    let decision = self.store.commit_decision_logged(
                        &audit,
                        &commands,
                        Some(crate::store::outbox::RolloutLogAppend {
                            rollout_id: &rollout_id,
                            first_seq: log.start,
                            events: logged(&self.state, &log)?,
                        }),
                    )?;
                    self.state.log_written(log.end);
                    let wall = self.wall();
                    self.state.handle_committed(decision.command_ids, wall);
                }
                StoreWrite::DeviceEvents(events) => {
                    self.store.append_device_events(&events)?;
                }
                StoreWrite::Acked { ids, at } => {
                    self.store.mark_acked_many(&ids, at)?;
                }
                StoreWrite::Sent { ids, at } => {
                    self.store.mark_sent_many(&ids, at)?;
                }
                StoreWrite::Devices(devices) => {
                    self.store.upsert_fleet(&[], &devices, None)?;
                }
            }
        }
        while let Some(batch) = self.state.poll_transmit() {
            for chunk in batch.chunks(256) {
                if self.send_tx.try_send(chunk.to_vec()).is_err() {
                    // The sender is behind; these go with the next resend pass.
                    break;
                }
            }
        }
        Ok(())
    }

    /// Writes the devices whose status changed back to the cache.
    fn flush_cache(&mut self) -> Result<()> {
        let devices = self.state.poll_dirty_devices();
        if !devices.is_empty() {
            self.store.upsert_fleet(&[], &devices, None)?;
        }
        Ok(())
    }

    fn on_link_event(&mut self, event: LinkEvent) -> Result<()> {
        let now = self.now();
        self.state.handle_link_event(now, event);
        self.drain()
    }

    /// Applies an operator's command between two steps and answers it. A refusal is an answer,
    /// not an error of the run; only a failure to write the cache ends the run.
    fn on_control(&mut self, request: control::ControlRequest) -> Result<()> {
        let now = self.now();
        let control::ControlRequest {
            operator,
            command,
            reply,
        } = request;
        if matches!(command, control::OperatorCommand::Exclude { .. }) {
            // Saved cohorts are read at the moment of use: a dynamic group is what matches now.
            match self.store.cohorts() {
                Ok(saved) => self
                    .state
                    .set_saved_cohorts(saved.into_iter().map(|c| (c.name, c.query)).collect()),
                Err(e) => {
                    let _ = reply.send(Err(control::ControlError::BadSelector(format!(
                        "the saved cohorts could not be read: {e:#}"
                    ))));
                    return Ok(());
                }
            }
        }
        let answer = match self.state.handle_operator(now, &operator, &command) {
            Ok(()) => {
                self.drain()?;
                Ok(self.state.rollout().phase().clone())
            }
            Err(refused) => Err(refused),
        };
        // The requester may have gone away; the command stands either way.
        let _ = reply.send(answer);
        Ok(())
    }
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
    let lease = lease::EngineLease::take(&opts.db, &opts.rollout_id)?;
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
    let (mut ddi_link, ddi_state, mut ddi_rx) = match &control.ddi {
        Some(o) => {
            let (link, state, rx) = ddi::DdiLink::start(o, &fleet, &opts.manifest)
                .await
                .context("starting the DDI endpoint")?;
            (Some(link), Some(state), Some(rx))
        }
        None => (None, None, None),
    };
    let started_by = control
        .started_by
        .clone()
        .unwrap_or_else(|| opts.requested_by.clone());
    // Every release a chain names needs its verified manifest, before anything is recorded.
    control
        .prerequisites
        .check(control.prerequisites.chain_releases())?;
    let (rollout, clock, resumed) = match control.start {
        StartMode::New => {
            let clock = ScaledClock {
                start: opts.start,
                began: Instant::now(),
                scale: opts.time_scale,
            };
            let rollout = create_rollout(
                &mut store,
                &opts,
                &fleet,
                (
                    control.schedule.clone(),
                    control.prerequisites.chains.clone(),
                ),
                clock.now(),
            )?;
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
    // A resumed rollout's chains are in its log.
    control.prerequisites.check(rollout.chain_releases())?;
    let all_pending = store.pending(usize::MAX)?.len();
    let stale_outbox_commands = all_pending - resumed.as_ref().map_or(0, Vec::len).min(all_pending);
    let now = clock.now();
    if let Some(link) = &ddi_link {
        // DDI telemetry's timestamps are checked against the run's clock, as MQTT's are.
        link.set_clock(now, clock.scale);
    }

    // The link, and a sender task so that publishing (which waits when the client's queue is
    // full) never stops the loop from draining inbound messages.
    let (handle, mut inbound) = mqtt::spawn(&opts.link, opts.topics.clone(), &Role::Console)?;
    let (send_tx, send_rx) = mpsc::channel::<Vec<Wire>>(1024);
    let (sent_tx, mut sent_rx) = mpsc::channel::<Vec<String>>(64);
    tokio::spawn(sender(handle.clone(), send_rx, sent_tx));
    publish_manifest(&handle, &opts).await?;

    let config = StateConfig {
        rollout_id: opts.rollout_id.clone(),
        release_id: opts.manifest.release_id().to_owned(),
        manifest_served: opts.manifest.served_bytes().into(),
        topics: opts.topics.clone(),
        start: opts.start,
        sample_period_secs: opts.sample_period_secs,
        max_report_gap_secs: opts.max_report_gap_secs,
        resend_after: opts.resend_after,
        prerequisites: control.prerequisites.served(),
    };
    let mut shell = Shell {
        store,
        state: EngineState::new(config, rollout, fleet, ddi_state, now),
        clock,
        began: Instant::now(),
        send_tx,
    };
    shell.state.start_pacing(now);
    if let Some(adopted) = resumed {
        let wall = shell.wall();
        shell
            .state
            .handle_adopted(now, wall, adopted, &started_by)?;
        shell.drain()?;
    }
    let wall_started = Instant::now();
    let mut stop = stop;
    let mut control_rx = control.commands;
    let when_paused = control.when_paused;
    let live = control.live;
    let mut last_cache_flush = Instant::now();
    let mut last_live: Option<Instant> = None;
    // Support tickets and customer reports (`signals`, issue 20) stored from now on are counted
    // in the devices' health windows; earlier ones are before this run, as earlier telemetry is.
    let mut signals_seen = shell.store.signals_head()?;
    let mut last_signals = Instant::now();
    let final_state = loop {
        let now = shell.now();
        let wall = shell.wall();
        shell.state.handle_timeout(now, wall);
        shell.drain()?;
        if last_cache_flush.elapsed() >= Duration::from_millis(500) {
            shell.flush_cache()?;
            last_cache_flush = Instant::now();
        }
        if last_signals.elapsed() >= Duration::from_secs(1) {
            last_signals = Instant::now();
            for (id, device_id, _kind) in shell.store.signals_after(signals_seen, 10_000)? {
                signals_seen = id;
                shell.state.handle_signal(&device_id);
            }
        }
        if let Some(live) = &live
            && last_live.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            // The report as it would read if the run stopped now; O(devices), once a second.
            let snapshot = shell.state.final_report(
                FinalState::Stopped,
                now,
                wall_started.elapsed(),
                stale_outbox_commands,
                None,
            );
            *live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(snapshot);
            last_live = Some(Instant::now());
        }
        let hold = when_paused == WhenPaused::Hold
            && control_rx.as_ref().is_some_and(|rx| !rx.is_closed());
        if let Some(state) = shell.state.poll_end(now, hold) {
            break state;
        }
        if opts.max_wall.is_some_and(|m| wall_started.elapsed() >= m) {
            break FinalState::TimedOut;
        }
        // Another engine took the rollout over (this one stalled past the lease's lifetime):
        // stop at once and write nothing more, so that one engine drives the rollout.
        if lease.lost() {
            bail!(
                "rollout {}: another engine took over this engine's lease; this run stops without writing more",
                opts.rollout_id
            );
        }
        let wait = shell
            .clock
            .wall_until(shell.state.poll_timeout())
            .clamp(Duration::from_millis(5), Duration::from_millis(250));
        tokio::select! {
            event = inbound.recv() => match event {
                Some(event) => {
                    shell.on_link_event(event)?;
                    // Drain what is already queued before the next step.
                    while let Ok(event) = inbound.try_recv() {
                        shell.on_link_event(event)?;
                    }
                }
                None => bail!("the MQTT link task stopped"),
            },
            ids = sent_rx.recv() => {
                if let Some(ids) = ids {
                    let (now, wall) = (shell.now(), shell.wall());
                    shell.state.handle_sent(now, wall, ids);
                    shell.drain()?;
                }
            }
            event = recv_ddi(&mut ddi_rx) => match event {
                Some(event) => {
                    shell.state.handle_ddi_event(shell.now(), event);
                    // Drain what is already queued (bounded, so a busy endpoint cannot starve
                    // the steps).
                    for _ in 0..1024 {
                        match ddi_rx.as_mut().map(mpsc::Receiver::try_recv) {
                            Some(Ok(event)) => shell.state.handle_ddi_event(shell.now(), event),
                            _ => break,
                        }
                    }
                    shell.drain()?;
                }
                None => ddi_rx = None,
            },
            request = recv_control(&mut control_rx) => match request {
                Some(request) => shell.on_control(request)?,
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
                opts.rollout_id.clone(),
            )));
        }
    }
    let now = shell.now();
    shell.state.handle_end(now, final_state);
    shell.drain()?;
    let ddi_report = match (&ddi_link, shell.state.ddi_counters()) {
        (Some(link), Some(counters)) => Some(link.report(counters)),
        _ => None,
    };
    let mut report = shell.state.final_report(
        final_state,
        now,
        wall_started.elapsed(),
        stale_outbox_commands,
        ddi_report,
    );
    if let Some(link) = ddi_link.take() {
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
    (schedule, chains): (
        Option<convoy_core::plan::pacing::OfferSchedule>,
        Vec<convoy_core::rollout::WaveChain>,
    ),
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
    if let Some(schedule) = schedule {
        rollout
            .pace_offers(now, schedule)
            .with_context(|| format!("pacing the offers of rollout {}", opts.rollout_id))?;
    }
    rollout
        .set_chains(now, chains)
        .with_context(|| format!("setting the prerequisite chains of {}", opts.rollout_id))?;
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
) -> Result<(Rollout, ScaledClock, Vec<QueuedCommand>)> {
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
            ScaledClock {
                start: first
                    .clock_start
                    .plus_secs((wall_secs * first.time_scale) as i64),
                began: Instant::now(),
                scale: first.time_scale,
            }
        }
        None => ScaledClock {
            start: opts.start,
            began: Instant::now(),
            scale: opts.time_scale,
        },
    };
    // Never before the last recorded event: the rollout's time does not run backwards.
    let start = clock.start.max(rollout.state().last_at);
    let clock = ScaledClock { start, ..clock };
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
