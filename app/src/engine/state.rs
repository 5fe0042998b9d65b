//! The engine's driver state: every decision and every piece of bookkeeping of one rollout run,
//! driven by inputs and read through outputs, in the shape of the core's `Rollout` (and of
//! quinn-proto's `Connection` under quinn's `ConnectionDriver`).
//!
//! [`EngineState`] holds the rollout state machine, the fleet's device index, the commands
//! awaiting their acknowledgement with their resend backoffs, the per-device health windows,
//! the dirty sets and the link counters. Inputs go in through `handle_*` (a device's status,
//! telemetry and acknowledgements, the sender's report of what went out, an operator's command,
//! a DDI event, the passing of time), each with the simulated `now` and, where resends are
//! concerned, the wall time since the run began. What the shell must do comes out of `poll_*`:
//! the cache writes in order ([`EngineState::poll_write`]), among them each decision with its
//! outbox commands to commit in one transaction, the command batches to publish
//! ([`EngineState::poll_transmit`]), the next simulated wake-up
//! ([`EngineState::poll_timeout`]) and the end of the run ([`EngineState::poll_end`]).
//!
//! Nothing reaches a device that the cache does not hold: a decision's commands exist only as
//! [`StoreWrite::Decision`] until the shell has committed it and handed back the command ids
//! ([`EngineState::handle_committed`]); only then are they queued for the wire or given to
//! DDI devices. Until then the state gives no further write, so what a step does after a
//! decision (the next action, the timeline, the resend pass) happens after its commit, as it
//! did when the engine wrote the cache itself.
//!
//! What it deliberately is not: I/O. It never reads a clock, never touches the cache, the MQTT
//! link or tokio; the one outside thing it calls is the DDI hub, an in-memory table of
//! deployments, through the [`super::ddi::DdiPort`] the shell gives it. The same inputs give the
//! same outputs, which is what lets the engine's unit tests drive it on a virtual clock with a
//! simulated fleet and no broker.

use anyhow::{Context, Result};
use convoy_core::fleet::{Device, Fleet};
use convoy_core::gates::GateOutcome;
use convoy_core::rollout::{
    Command, DeviceReport, DeviceState, EventKind, Phase, RollbackScope, Rollout, RolloutAction,
    RolloutEvent, TelemetryReport,
};
use convoy_core::time::Timestamp;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::control::{self, ControlError, OperatorCommand, RollBackScope};
use super::ddi::DdiState;
use super::health::HealthWindow;
use super::{
    ENGINE_ACTOR, EngineReport, FinalState, GateDecision, LinkCounts, Unsettled, WaveReport,
};
use crate::link::mqtt::LinkEvent;
use crate::link::protocol::{
    AckResult, CommandAck, CommandAction, DeviceStatus, Inbound, PROTOCOL_VERSION, RejectionStats,
    Telemetry, Topics, UpdateState,
};
use crate::store::audit::AuditEntry;
use crate::store::events::NewDeviceEvent;
use crate::store::outbox::{OutboxCommand, QueuedCommand};

/// What the state needs to know of the run besides the rollout and the fleet.
#[derive(Clone, Debug)]
pub struct StateConfig {
    pub rollout_id: String,
    pub release_id: String,
    /// The canonical form of the verified manifest, as offers carry it.
    pub manifest_served: Arc<[u8]>,
    pub topics: Topics,
    /// The simulated moment the run started.
    pub start: Timestamp,
    /// Simulated seconds between health samples per device.
    pub sample_period_secs: i64,
    /// The longest gap between two of a device's messages that still counts as exposure.
    pub max_report_gap_secs: i64,
    /// Wall time after which an unacknowledged command is first sent again (same id).
    pub resend_after: Duration,
    /// The canonical manifests of the prerequisite releases chains offer, by release id
    /// (`engine/chain.rs`).
    pub prerequisites: std::collections::BTreeMap<String, Arc<[u8]>>,
}

/// What a command asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CmdKind {
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
pub struct Wire {
    pub command_id: String,
    pub topic: String,
    pub payload: Arc<[u8]>,
}

/// A command of this run not yet acknowledged.
#[derive(Debug)]
pub(super) struct Awaiting {
    wire: Wire,
    device_id: String,
    pub(super) device: usize,
    pub(super) kind: CmdKind,
    /// Wall time since the run began of the last send, `None` before the first.
    last_sent: Option<Duration>,
    /// Wall time since the run began when the command was last queued for the sender. The
    /// sender reports a send a little later; until then the resend pass counts the backoff
    /// from here, so a command committed and queued is not queued a second time before the
    /// sender has even published it.
    queued_at: Option<Duration>,
    /// Wall time to wait before the next resend: doubles after each send, up to a cap, so a
    /// device that is offline for days is not sent its offer every few seconds.
    backoff: Duration,
}

/// The longest wait between two sends of an unacknowledged command.
const MAX_RESEND_BACKOFF: Duration = Duration::from_mins(5);

/// How often, in wall time, unacknowledged commands are looked at for a resend.
const RESEND_CHECK_EVERY: Duration = Duration::from_millis(500);

/// One write the shell makes to the cache, in the order given.
#[derive(Clone, Debug)]
pub enum StoreWrite {
    /// An audit entry (`Store::append_audit`).
    Audit(AuditEntry),
    /// A rollout timeline event (`Store::append_event`).
    Timeline {
        at: Timestamp,
        kind: String,
        actor: String,
        payload: serde_json::Value,
    },
    /// The rollout's core events in `range` go to its replayable log
    /// (`Store::append_rollout_log`; read them with `rollout().logged(range)`, then tell
    /// [`EngineState::log_written`]).
    Log { range: Range<usize> },
    /// A decision: its audit entry, its outbox commands and the log events in `log` that led
    /// to it, in one transaction (`Store::commit_decision_logged`). The shell hands the command
    /// ids back with [`EngineState::handle_committed`] before polling again.
    Decision {
        audit: AuditEntry,
        commands: Vec<OutboxCommand>,
        log: Range<usize>,
    },
    /// Device history entries, in one transaction (`Store::append_device_events`).
    DeviceEvents(Vec<NewDeviceEvent>),
    /// Commands acknowledged by their devices (`Store::mark_acked_many`).
    Acked { ids: Vec<String>, at: Timestamp },
    /// Commands the sender published (`Store::mark_sent_many`).
    Sent { ids: Vec<String>, at: Timestamp },
    /// Devices whose status changed, written back (`Store::upsert_fleet`).
    Devices(Vec<Device>),
}

/// A decision given to the shell and not yet committed: what to do once its ids are known.
#[derive(Debug)]
struct PendingDecision {
    now: Timestamp,
    kind: CmdKind,
    /// The devices reached over MQTT, in the order of the decision's commands.
    device_ids: Vec<String>,
    action_json: String,
    /// The DDI devices of the decision (fleet indices), carried out through the hub.
    ddi_devices: Vec<usize>,
}

/// What is left of an input's work, done in order as the shell polls: whatever follows a
/// decision waits for its commit.
#[derive(Debug)]
enum Task {
    /// An output that must come after the tasks before it.
    Emit(Output),
    /// Closes the health windows, asks again for owed rollbacks, gives waiting DDI devices
    /// their deployment, when a sample period has passed.
    SamplePeriod(Timestamp),
    /// Hands the rollout its due timeout.
    RolloutTimeout(Timestamp),
    /// Carries out the rollout's next action, and comes back for the one after.
    Actions(Timestamp),
    /// Offers what the schedule allows now (paced offers).
    Pace(Timestamp),
    /// Prerequisite chains: stops the silent, offers the next steps due (`engine/chain.rs`).
    Chain(Timestamp),
    SetActor(String),
    DdiAssignWaiting(Timestamp),
    /// Writes the rollout's new events to the log, the timeline and device histories.
    Persist,
    /// Writes the buffered device events and acknowledgements.
    FlushWrites(Timestamp),
    /// Sends again what waited longer than its backoff.
    Resend(Duration),
    /// Writes back the devices whose status changed.
    FlushDevices,
}

#[derive(Debug)]
enum Output {
    Write(StoreWrite),
    Decision {
        audit: AuditEntry,
        commands: Vec<OutboxCommand>,
        pending: PendingDecision,
    },
}

/// The engine's decisions and bookkeeping for one run. See the module docs.
pub struct EngineState {
    pub(super) config: StateConfig,
    pub(super) rollout: Rollout,
    pub(super) fleet: Fleet,
    /// Whether fleet device `i` is part of the rollout.
    pub(super) in_rollout: Vec<bool>,
    windows: Vec<HealthWindow>,
    /// When this run last heard each fleet device's status (for the report's unsettled devices).
    pub(super) last_status: Vec<Option<Timestamp>>,
    heard: Vec<u32>,
    heard_flag: Vec<bool>,
    next_flush: Timestamp,
    dirty: Vec<bool>,
    dirty_list: Vec<u32>,
    /// Devices the rollout wants back on their previous version; a device that could not act on
    /// its rollback or cancel (still installing, offer not yet received) is asked again once it
    /// runs the new version.
    pub(super) rollback_wanted: Vec<bool>,
    /// Devices with a rollback or cancel command awaiting its ack.
    pub(super) rollback_in_flight: Vec<bool>,
    /// The devices of `rollback_wanted`, in the order they were asked.
    rollback_list: Vec<u32>,
    persisted_events: usize,
    /// Device events and acknowledgements not yet written: written together once per step.
    device_events: Vec<NewDeviceEvent>,
    acked: Vec<String>,
    pub(super) awaiting: HashMap<String, Awaiting>,
    connected: bool,
    /// Since when (wall time of the run) the broker connection has been lost, and whether the
    /// timeline already says so (`link.lost`, an alert for the people on call).
    lost_since: Option<Duration>,
    lost_recorded: Option<String>,
    /// Who the decisions being carried out are by: the engine, or the operator whose command
    /// is being applied.
    actor: String,
    /// Core events already handed to the shell for the replayable log.
    logged_events: usize,
    /// Core events the shell has written to the replayable log ([`EngineState::log_written`]).
    written_events: usize,
    counts: LinkCounts,
    rejections: RejectionStats,
    gate_decisions: Vec<GateDecision>,
    gate_looks_passed: u32,
    pub(super) notes: Vec<String>,
    paused_at: Option<Timestamp>,
    last_resend_check: Duration,
    /// The latest wall time the shell has given (since the run began), for the queue times of
    /// a reconnect's resends.
    last_wall: Duration,
    /// The DDI side's bookkeeping, when the run serves DDI devices.
    pub(super) ddi: Option<DdiState>,
    /// The offer schedule, when the rollout paces its offers (`engine/pacing.rs`).
    pub(super) pacing: Option<super::pacing::Pacing>,
    ready: VecDeque<Output>,
    tasks: VecDeque<Task>,
    committing: Option<PendingDecision>,
    transmit: VecDeque<Vec<Wire>>,
    /// The cache's saved cohorts (name → search), as the shell read them for an exclusion.
    saved_cohorts: std::collections::BTreeMap<String, String>,
}

impl EngineState {
    /// The state of a run of `rollout` (new, or rebuilt from its log) over `fleet`, at `now`.
    pub fn new(
        config: StateConfig,
        rollout: Rollout,
        fleet: Fleet,
        ddi: Option<DdiState>,
        now: Timestamp,
    ) -> Self {
        let in_rollout: Vec<bool> = fleet
            .devices
            .iter()
            .map(|d| rollout.device_state(&d.id).is_some())
            .collect();
        let n = fleet.devices.len();
        Self {
            windows: vec![HealthWindow::new(config.max_report_gap_secs); n],
            last_status: vec![None; n],
            heard: Vec::new(),
            heard_flag: vec![false; n],
            next_flush: now.plus_secs(config.sample_period_secs.max(1)),
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
            lost_since: None,
            lost_recorded: None,
            actor: ENGINE_ACTOR.to_owned(),
            logged_events: 0,
            written_events: 0,
            counts: LinkCounts::default(),
            rejections: RejectionStats::new(64),
            gate_decisions: Vec::new(),
            gate_looks_passed: 0,
            notes: Vec::new(),
            paused_at: None,
            last_resend_check: Duration::ZERO,
            last_wall: Duration::ZERO,
            ddi,
            pacing: None,
            ready: VecDeque::new(),
            tasks: VecDeque::new(),
            committing: None,
            transmit: VecDeque::new(),
            saved_cohorts: std::collections::BTreeMap::new(),
            in_rollout,
            rollout,
            fleet,
            config,
        }
    }

    pub fn rollout(&self) -> &Rollout {
        &self.rollout
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    pub fn rollout_id(&self) -> &str {
        &self.config.rollout_id
    }

    /// Whether fleet device `i` takes part in the rollout.
    pub fn in_rollout(&self) -> &[bool] {
        &self.in_rollout
    }

    pub(super) fn index(&self, device_id: &str) -> Option<usize> {
        self.fleet
            .devices
            .binary_search_by(|d| d.id.as_str().cmp(device_id))
            .ok()
    }

    // --- Outputs -------------------------------------------------------------------------------

    /// The next cache write, in order; `None` when there is nothing left to write, or while a
    /// decision waits for [`EngineState::handle_committed`]. An error is one of the engine's
    /// own (a command that cannot be encoded) and ends the run.
    pub fn poll_write(&mut self) -> Result<Option<StoreWrite>> {
        loop {
            if self.committing.is_some() {
                return Ok(None);
            }
            if let Some(output) = self.ready.pop_front() {
                return Ok(Some(match output {
                    Output::Write(w) => w,
                    Output::Decision {
                        audit,
                        commands,
                        pending,
                    } => {
                        // The log events up to this decision travel in its transaction.
                        let log = self.logged_events..self.rollout.event_count();
                        self.logged_events = log.end;
                        self.committing = Some(pending);
                        StoreWrite::Decision {
                            audit,
                            commands,
                            log,
                        }
                    }
                }));
            }
            let Some(task) = self.tasks.pop_front() else {
                return Ok(None);
            };
            self.run_task(task)?;
        }
    }

    /// The next batch of commands to publish (QoS 1, not retained), ordered by command id on
    /// resends. The shell reports what it published with [`EngineState::handle_sent`]; what it
    /// could not hand to its sender goes with the next resend pass.
    pub fn poll_transmit(&mut self) -> Option<Vec<Wire>> {
        self.transmit.pop_front()
    }

    /// The next simulated moment something is due: a health sample, the rollout's timeout or
    /// the next paced offer.
    pub fn poll_timeout(&self) -> Timestamp {
        let mut t = self.next_flush;
        if let Some(timeout) = self.rollout.poll_timeout() {
            t = t.min(timeout);
        }
        if matches!(self.rollout.phase(), Phase::Running { .. })
            && let Some(offer) = self.next_offer_at()
        {
            t = t.min(offer);
        }
        t
    }

    /// The devices whose status changed since the last call, to write back to the cache.
    pub fn poll_dirty_devices(&mut self) -> Vec<Device> {
        let list = std::mem::take(&mut self.dirty_list);
        list.iter()
            .map(|&i| {
                self.dirty[i as usize] = false;
                self.fleet.devices[i as usize].clone()
            })
            .collect()
    }

    /// Whether the run is over at `now`, and how; `hold` keeps a paused rollout's run going
    /// (someone may still resume it).
    pub fn poll_end(&mut self, now: Timestamp, hold: bool) -> Option<FinalState> {
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
                    .saturating_sub(self.ddi_waiting_in_flight())
                    // Devices whose paced offer has not gone out will not move while paused.
                    .saturating_sub(self.rollout.state().owed.iter().sum::<u32>())
                    // Nor chain devices waiting for their next step (`engine/chain.rs`).
                    .saturating_sub(self.rollout.state().chain.due.len() as u32);
                let settled = in_flight == 0 && self.rollout.state().rollback_pending == 0;
                let waited = now.secs_since(since) >= self.rollout.spec().gates.silent_after_secs;
                (settled || waited).then_some(FinalState::Paused)
            }
            _ => {
                self.paused_at = None;
                None
            }
        }
    }

    // --- Inputs --------------------------------------------------------------------------------

    /// Everything that is due at `now` (`wall` since the run began): health samples, timeouts,
    /// actions, the timeline, resends.
    pub fn handle_timeout(&mut self, now: Timestamp, wall: Duration) {
        self.last_wall = self.last_wall.max(wall);
        self.watch_link(now, wall);
        self.tasks.extend([
            Task::SamplePeriod(now),
            Task::RolloutTimeout(now),
            Task::Actions(now),
            Task::Pace(now),
            Task::Chain(now),
            Task::Persist,
            Task::FlushWrites(now),
            Task::Resend(wall),
        ]);
    }

    /// One event of the MQTT link.
    pub fn handle_link_event(&mut self, now: Timestamp, event: LinkEvent) {
        match event {
            LinkEvent::Inbound(Inbound::Status(s)) => self.handle_status(now, &s),
            LinkEvent::Inbound(Inbound::Telemetry(t)) => self.handle_telemetry(now, &t),
            LinkEvent::Inbound(Inbound::Ack(a)) => self.handle_ack(now, &a),
            LinkEvent::Rejected(r) => {
                self.rejections.record(&r);
                let reason = serde_json::to_value(r.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("{:?}", r.reason));
                *self.counts.rejected.entry(reason).or_default() += 1;
            }
            LinkEvent::Raw { .. } => {}
            LinkEvent::Connected => self.handle_connected(now),
            LinkEvent::Disconnected(why) => self.handle_disconnected(now, &why),
        }
    }

    /// (Re)connected to the broker: everything unacknowledged goes again.
    /// A broker connection lost for longer than [`LINK_LOST_ALERT`] of wall time goes on the
    /// timeline as `link.lost` (an alert: nothing reaches the devices, and nothing of theirs
    /// reaches the gates); its return as `link.restored`.
    fn watch_link(&mut self, now: Timestamp, wall: Duration) {
        if self.connected || self.counts.disconnects == 0 {
            return;
        }
        let since = *self.lost_since.get_or_insert(wall);
        if self.lost_recorded.is_none() && wall.saturating_sub(since) >= LINK_LOST_ALERT {
            let why = self
                .notes
                .iter()
                .rev()
                .find_map(|n| {
                    n.split_once("lost the broker connection: ")
                        .map(|(_, w)| w.to_owned())
                })
                .unwrap_or_default();
            self.ready.push_back(Output::Write(StoreWrite::Timeline {
                at: now,
                kind: "link.lost".into(),
                actor: ENGINE_ACTOR.into(),
                payload: serde_json::json!({
                    "for_secs": wall.saturating_sub(since).as_secs(),
                    "why": why,
                }),
            }));
            self.lost_recorded = Some(why);
        }
    }

    pub fn handle_connected(&mut self, now: Timestamp) {
        let reconnect = !self.connected && self.counts.disconnects > 0;
        self.connected = true;
        self.lost_since = None;
        if self.lost_recorded.take().is_some() {
            self.ready.push_back(Output::Write(StoreWrite::Timeline {
                at: now,
                kind: "link.restored".into(),
                actor: ENGINE_ACTOR.into(),
                payload: serde_json::json!({}),
            }));
        }
        if reconnect {
            self.notes.push(format!(
                "{now}: reconnected to the broker; resubscribed and resending unacknowledged commands"
            ));
        }
        // Anything not acknowledged goes again (same ids: devices apply it once).
        self.resend_all();
    }

    pub fn handle_disconnected(&mut self, now: Timestamp, why: &str) {
        if self.connected {
            self.counts.disconnects += 1;
            self.notes
                .push(format!("{now}: lost the broker connection: {why}"));
        }
        self.connected = false;
    }

    /// A device's status message.
    pub fn handle_status(&mut self, now: Timestamp, s: &DeviceStatus) {
        self.counts.status_messages += 1;
        let Some(i) = self.index(&s.device_id) else {
            return;
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
            return;
        }
        self.mark_heard(i, s.ts, None);
        if s.update.release_id.as_deref() != Some(self.config.release_id.as_str()) {
            // A prerequisite's progress, when the device is installing one.
            self.chain_status(now, s);
            return;
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
            let news = self.rollout.device_state(&s.device_id) != Some(state);
            if news && matches!(state, DeviceState::Failed | DeviceState::Reverted) {
                // A failed install or boot, or a revert, is an alarm: whatever the device's
                // window holds goes to the gates now, with the outcome.
                self.close_window(now, i);
            }
            if let Some(reason) = &s.update.reason
                && matches!(state, DeviceState::Failed | DeviceState::Reverted)
                && news
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
                self.send_rollback(now, &[id], "rollout.rollback_retry");
            }
        }
    }

    /// A device's telemetry message. An alarm (a crash, a failed boot) closes the device's
    /// health window at once, so the gates see it now rather than at the next sample period,
    /// and the rollout looks within its debounce.
    pub fn handle_telemetry(&mut self, now: Timestamp, t: &Telemetry) {
        self.counts.telemetry_messages += 1;
        let Some(i) = self.index(&t.device_id) else {
            return;
        };
        if self.in_rollout[i] {
            self.mark_heard(i, t.ts, Some(&t.event));
            if is_alarm(&t.event) {
                self.close_window(now, i);
            }
        }
    }

    /// A device's acknowledgement of a command.
    pub fn handle_ack(&mut self, now: Timestamp, a: &CommandAck) {
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
            if entry.kind == CmdKind::Offer && !self.chain_refused(now, &a.device_id, &reason) {
                // The device refused the offer (failed verification, busy, ...): it will not
                // install, and the reason is in its history.
                self.report(now, entry.device, DeviceState::Failed);
            }
        }
    }

    /// The sender published the commands `ids` (at `wall` since the run began).
    pub fn handle_sent(&mut self, now: Timestamp, wall: Duration, ids: Vec<String>) {
        self.last_wall = self.last_wall.max(wall);
        for id in &ids {
            match self.awaiting.get_mut(id) {
                Some(a) if a.last_sent.is_some() => {
                    self.counts.commands_resent += 1;
                    a.last_sent = Some(wall);
                }
                Some(a) => {
                    self.counts.commands_sent += 1;
                    a.last_sent = Some(wall);
                }
                // Acknowledged before the sender reported it sent: it was sent.
                None => self.counts.commands_sent += 1,
            }
        }
        // Records the attempts; an acknowledged command stays acknowledged.
        self.ready
            .push_back(Output::Write(StoreWrite::Sent { ids, at: now }));
    }

    /// The decision last given by [`EngineState::poll_write`] is committed, its commands
    /// numbered `command_ids` in order: they may now go to their devices. `wall` is the time
    /// since the run began, when they are queued for the sender.
    /// The shell has written the rollout's log up to index `end` (a [`StoreWrite::Log`] or a
    /// [`StoreWrite::Decision`]): the events both written and processed here leave memory, so
    /// the in-memory log stays as short as the writes behind it, however long the rollout runs.
    pub fn log_written(&mut self, end: usize) {
        self.written_events = self.written_events.max(end);
        self.rollout
            .forget_events_before(self.written_events.min(self.persisted_events));
    }

    pub fn handle_committed(&mut self, command_ids: Vec<String>, wall: Duration) {
        self.last_wall = self.last_wall.max(wall);
        let Some(PendingDecision {
            now,
            kind,
            device_ids,
            action_json,
            ddi_devices,
        }) = self.committing.take()
        else {
            return;
        };
        let mut batch = Vec::with_capacity(device_ids.len());
        for (device_id, command_id) in device_ids.iter().zip(command_ids) {
            let Some(device) = self.index(device_id) else {
                continue;
            };
            let wire = Wire {
                topic: self.config.topics.commands(device_id),
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
                    queued_at: self.connected.then_some(wall),
                    backoff: self.config.resend_after,
                },
            );
        }
        if self.connected {
            self.send(batch);
        }
        self.ddi_dispatch(now, &ddi_devices, kind);
    }

    /// A support ticket or customer report about `device_id` (`signals`): counted in its health
    /// window for the support-contacts gate. Returns whether the device is in the rollout.
    pub fn handle_signal(&mut self, device_id: &str) -> bool {
        match self.index(device_id) {
            Some(i) if self.in_rollout[i] => {
                self.windows[i].support_contact();
                true
            }
            _ => false,
        }
    }

    /// The cache's saved cohorts, which an exclusion's selector may name (`cohort:NAME`).
    pub fn set_saved_cohorts(&mut self, saved: std::collections::BTreeMap<String, String>) {
        self.saved_cohorts = saved;
    }

    /// The rollout's devices an exclusion's selector names, sorted: a list of the rollout's
    /// device ids (separated by spaces or commas), or else a fleet search
    /// ([`convoy_core::search`]) that also knows `stratum` (the gates' stratum, `T300/C`).
    pub fn select(&self, selector: &str) -> Result<Vec<String>, ControlError> {
        let state = self.rollout.state();
        let tokens: Vec<&str> = selector
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .collect();
        let in_rollout = |id: &str| state.device_ids.binary_search_by(|d| d.as_str().cmp(id));
        if !tokens.is_empty() && tokens.iter().all(|t| in_rollout(t).is_ok()) {
            let mut ids: Vec<String> = tokens.iter().map(|t| (*t).to_owned()).collect();
            ids.sort_unstable();
            ids.dedup();
            return Ok(ids);
        }
        let saved = &self.saved_cohorts;
        let query = convoy_core::search::Query::parse_with(selector, &|n| saved.get(n).cloned())
            .map_err(|e| ControlError::BadSelector(e.to_string()))?;
        if query.is_empty() {
            return Err(ControlError::MissingField {
                command: "exclude",
                field: "selector",
            });
        }
        let mut ids = Vec::new();
        for (d, _) in self
            .fleet
            .devices
            .iter()
            .zip(&self.in_rollout)
            .filter(|(_, inside)| **inside)
        {
            let stratum = |field: &str| {
                (field == "stratum")
                    .then(|| in_rollout(&d.id).ok())
                    .flatten()
                    .and_then(|i| state.devices.get(i))
                    .and_then(|slot| state.strata.get(usize::from(slot.stratum)))
                    .map(|s| std::borrow::Cow::Owned(s.clone()))
            };
            if query.matches(d, &stratum) {
                ids.push(d.id.clone());
            }
        }
        Ok(ids)
    }

    /// Applies an operator's command between two steps. A refusal is the answer at once; an
    /// accepted command is answered, once the shell has drained the writes it implies, with
    /// the rollout's phase then.
    pub fn handle_operator(
        &mut self,
        now: Timestamp,
        operator: &str,
        command: &OperatorCommand,
    ) -> Result<(), ControlError> {
        control::check_fields(operator, command)?;
        let reason = command.reason();
        let applied = match command {
            OperatorCommand::Pause { .. } => self.rollout.pause(now, operator, reason),
            OperatorCommand::Resume { .. } => self.rollout.resume(now, operator, reason),
            OperatorCommand::Override { .. } => self.rollout.override_gate(now, operator, reason),
            OperatorCommand::Abort { .. } => self.rollout.abort(now, operator, reason),
            OperatorCommand::Continue { .. } => {
                self.rollout.continue_rollout(now, operator, reason)
            }
            OperatorCommand::Exclude { selector, .. } => {
                let ids = self.select(selector)?;
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                self.rollout
                    .exclude(now, operator, reason, selector.trim(), &ids)
                    .map(|_| ())
            }
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
                    None => self.rollout.permits(Command::RollBackWave, now),
                }
            }
        };
        if let Err(source) = applied {
            return Err(ControlError::Refused {
                rollout: self.config.rollout_id.clone(),
                source,
            });
        }
        if matches!(command, OperatorCommand::Exclude { .. }) {
            self.prune_waiting();
        }
        self.ready
            .push_back(Output::Write(StoreWrite::Audit(AuditEntry {
                time: now,
                actor: operator.to_owned(),
                action: format!("operator.{}", command.name()),
                payload: serde_json::json!({
                    "rollout": self.config.rollout_id,
                    "reason": reason,
                    "command": command,
                    "phase": self.rollout.phase(),
                }),
            })));
        // What the command implies (rollback commands) is the operator's decision.
        self.tasks.extend([
            Task::SetActor(operator.to_owned()),
            Task::Actions(now),
            Task::SetActor(ENGINE_ACTOR.to_owned()),
            // A resume lets DDI devices that wait for their deployment have it.
            Task::DdiAssignWaiting(now),
            Task::Persist,
            Task::FlushWrites(now),
        ]);
        Ok(())
    }

    /// After a resume: takes over the rollout's unacknowledged commands (sent again with their
    /// ids once connected), the devices that still owe a rollback, and the gate tallies of the
    /// log, and records the resume in the timeline and the audit trail.
    pub fn handle_adopted(
        &mut self,
        now: Timestamp,
        wall: Duration,
        commands: Vec<QueuedCommand>,
        by: &str,
    ) -> Result<()> {
        self.persisted_events = self.rollout.event_count();
        self.logged_events = self.rollout.event_count();
        self.written_events = self.rollout.event_count();
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
        // The replayed log is the cache's already.
        self.rollout.forget_events_before(self.written_events);
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
                topic: self.config.topics.commands(&c.device_id),
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
                        .then_some(wall),
                    // Queued with everything else once connected.
                    queued_at: None,
                    backoff: self.config.resend_after,
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
            self.rollout.event_count()
        ));
        let payload = serde_json::json!({
            "rollout": self.config.rollout_id,
            "phase": self.rollout.phase(),
            "events_replayed": self.rollout.event_count(),
            "commands_resent": adopted,
        });
        self.ready.push_back(Output::Write(StoreWrite::Timeline {
            at: now,
            kind: "engine.resumed".into(),
            actor: by.to_owned(),
            payload: payload.clone(),
        }));
        self.ready
            .push_back(Output::Write(StoreWrite::Audit(AuditEntry {
                time: now,
                actor: by.to_owned(),
                action: "rollout.run_resumed".into(),
                payload,
            })));
        Ok(())
    }

    /// The run ends at `now` as `final_state`: the rest of the rollout's events, the
    /// timeline's `engine.stopped` when the rollout is not over, the buffered writes and the
    /// audit entry of the run's end follow as writes.
    pub fn handle_end(&mut self, now: Timestamp, final_state: FinalState) {
        self.tasks.push_back(Task::Persist);
        if matches!(
            final_state,
            FinalState::Stopped | FinalState::TimedOut | FinalState::Paused
        ) {
            // The rollout is not over: the timeline says the engine let go of it, and how.
            self.tasks
                .push_back(Task::Emit(Output::Write(StoreWrite::Timeline {
                    at: now,
                    kind: "engine.stopped".into(),
                    actor: ENGINE_ACTOR.into(),
                    payload: serde_json::json!({"final_state": final_state, "phase": self.rollout.phase()}),
                })));
        }
        self.tasks.push_back(Task::FlushWrites(now));
        self.tasks.push_back(Task::FlushDevices);
        self.tasks
            .push_back(Task::Emit(Output::Write(StoreWrite::Audit(AuditEntry {
                time: now,
                actor: ENGINE_ACTOR.into(),
                action: "rollout.run_ended".into(),
                payload: serde_json::json!({
                    "rollout": self.config.rollout_id,
                    "final_state": final_state,
                }),
            }))));
    }

    // --- The work behind the inputs ------------------------------------------------------------

    fn run_task(&mut self, task: Task) -> Result<()> {
        match task {
            Task::Emit(output) => self.ready.push_back(output),
            Task::SamplePeriod(now) => {
                if now >= self.next_flush {
                    self.flush_health(now);
                    self.retry_rollbacks(now);
                    // After the retries' decisions are committed, as their DDI side is done.
                    self.tasks.push_front(Task::DdiAssignWaiting(now));
                    self.next_flush = now.plus_secs(self.config.sample_period_secs.max(1));
                }
            }
            Task::RolloutTimeout(now) => {
                if self.rollout.poll_timeout().is_some_and(|t| t <= now) {
                    self.rollout.handle_timeout(now);
                }
            }
            Task::Actions(now) => {
                if let Some(action) = self.rollout.poll_action() {
                    // The next action only after this one's decisions are committed.
                    self.tasks.push_front(Task::Actions(now));
                    self.act(now, action)?;
                }
            }
            Task::Pace(now) => self.pace(now)?,
            Task::Chain(now) => self.chain_tick(now)?,
            Task::SetActor(actor) => self.actor = actor,
            Task::DdiAssignWaiting(now) => self.ddi_assign_waiting(now),
            Task::Persist => self.persist_events(),
            Task::FlushWrites(now) => self.flush_writes(now),
            Task::FlushDevices => {
                let devices = self.poll_dirty_devices();
                if !devices.is_empty() {
                    self.ready
                        .push_back(Output::Write(StoreWrite::Devices(devices)));
                }
            }
            Task::Resend(wall) => {
                if self.connected
                    && wall.saturating_sub(self.last_resend_check) >= RESEND_CHECK_EVERY
                {
                    self.last_resend_check = wall;
                    self.resend_overdue(wall);
                }
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

    pub(super) fn mark_dirty(&mut self, i: usize) {
        if !self.dirty[i] {
            self.dirty[i] = true;
            self.dirty_list.push(i as u32);
        }
    }

    /// Feeds a device's state to the rollout, closing its health window first when it moves
    /// between the old and the new version so each event counts for the right cohort.
    pub(super) fn report(&mut self, now: Timestamp, i: usize, state: DeviceState) {
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
        match action {
            RolloutAction::Offer { wave, device_ids } => {
                // Paced: the devices wait for the schedule (`engine/pacing.rs`).
                if self.pace_wave(wave, &device_ids) {
                    self.tasks.push_front(Task::Pace(now));
                    return Ok(());
                }
                // The target, or a chain wave's first prerequisite (`engine/chain.rs`).
                self.offer_devices(now, wave, &device_ids, false)?;
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
                self.send_rollback(now, &back, "rollout.rollback");
                // By release: a chain device installing a prerequisite has that one cancelled.
                self.cancel_offers(now, "rollout.cancel", &cancel);
            }
            RolloutAction::Pause(reason) => {
                self.ready.push_back(Output::Write(StoreWrite::Audit(AuditEntry {
                    time: now,
                    actor: self.actor.clone(),
                    action: "rollout.paused".into(),
                    payload: serde_json::json!({"rollout": self.config.rollout_id, "reason": reason}),
                })));
            }
            RolloutAction::Notify(text) => {
                self.ready.push_back(Output::Write(StoreWrite::Timeline {
                    at: now,
                    kind: "notify".into(),
                    actor: ENGINE_ACTOR.into(),
                    payload: serde_json::json!({ "text": text }),
                }));
            }
        }
        Ok(())
    }

    /// Asks again every device that still owes its rollback and has no command outstanding: one
    /// that refused (still installing, offer not yet received, low battery) may act on it now.
    fn retry_rollbacks(&mut self, now: Timestamp) {
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
        self.send_rollback(now, &back, "rollout.rollback_retry");
        self.cancel_offers(now, "rollout.cancel_retry", &cancel);
    }

    /// Asks `device_ids` to go back to their previous slot.
    fn send_rollback(&mut self, now: Timestamp, device_ids: &[String], audit: &str) {
        if device_ids.is_empty() {
            return;
        }
        let release_id = self.config.release_id.clone();
        let reason = match self.rollout.phase() {
            Phase::Paused { reason, .. } => reason.clone(),
            _ => self.rollout.state().last_report.as_ref().map_or_else(
                || "rollback".to_owned(),
                |r| format!("gate: {}", r.outcome().words()),
            ),
        };
        let action = CommandAction::RollBack {
            release_id: release_id.clone(),
            reason: format!("rollout {}: {reason}", self.config.rollout_id),
        };
        self.dispatch(
            now,
            audit,
            serde_json::json!({"rollout": self.config.rollout_id, "release": release_id, "devices": device_ids.len()}),
            device_ids,
            &action,
            CmdKind::RollBack,
        );
    }

    pub(super) fn wave_name(&self, wave: usize) -> String {
        self.rollout
            .spec()
            .waves
            .get(wave)
            .map_or_else(|| format!("wave {wave}"), |w| w.name.clone())
    }

    /// A rollout timeline entry by the engine.
    pub(super) fn timeline(&mut self, now: Timestamp, kind: &str, payload: serde_json::Value) {
        self.ready.push_back(Output::Write(StoreWrite::Timeline {
            at: now,
            kind: kind.into(),
            actor: ENGINE_ACTOR.into(),
            payload,
        }));
    }

    /// Gives the decision and its commands to the shell to commit in one transaction; they are
    /// sent once it has ([`EngineState::handle_committed`]).
    pub(super) fn dispatch(
        &mut self,
        now: Timestamp,
        audit_action: &str,
        audit_payload: serde_json::Value,
        device_ids: &[String],
        action: &CommandAction,
        kind: CmdKind,
    ) {
        // DDI devices get no MQTT command: the decision is carried out through the DDI hub.
        let (mqtt_ids, ddi_devices) = self.split_ddi(device_ids);
        let mut audit_payload = audit_payload;
        if !ddi_devices.is_empty()
            && let Some(p) = audit_payload.as_object_mut()
        {
            p.insert("ddi_devices".into(), ddi_devices.len().into());
        }
        let body = serde_json::json!({"issued_at": now, "action": action});
        let commands: Vec<OutboxCommand> = mqtt_ids
            .iter()
            .map(|d| OutboxCommand {
                device_id: d.clone(),
                kind: kind.as_str().into(),
                payload: body.clone(),
            })
            .collect();
        // A `CommandAction` is plain strings and JSON values: encoding it cannot fail.
        let action_json = serde_json::to_string(action).unwrap_or_default();
        self.ready.push_back(Output::Decision {
            audit: AuditEntry {
                time: now,
                actor: self.actor.clone(),
                action: audit_action.into(),
                payload: audit_payload,
            },
            commands,
            pending: PendingDecision {
                now,
                kind,
                device_ids: mqtt_ids,
                action_json,
                ddi_devices,
            },
        });
    }

    /// Queues a batch of commands for the wire.
    fn send(&mut self, batch: Vec<Wire>) {
        if !batch.is_empty() {
            self.transmit.push_back(batch);
        }
    }

    /// After a reconnect: everything unacknowledged goes again, and the backoffs start over.
    fn resend_all(&mut self) {
        let first = self.config.resend_after;
        let wall = self.last_wall;
        let mut batch: Vec<Wire> = self
            .awaiting
            .values_mut()
            .map(|a| {
                a.backoff = first;
                a.queued_at = Some(wall);
                a.wire.clone()
            })
            .collect();
        batch.sort_by(|a, b| a.command_id.cmp(&b.command_id));
        self.send(batch);
    }

    /// Commands unacknowledged for longer than their backoff go again; the backoff doubles.
    /// The backoff counts from the last send or, before the sender has reported one, from
    /// when the command was queued.
    fn resend_overdue(&mut self, wall: Duration) {
        let mut batch: Vec<Wire> = Vec::new();
        for a in self.awaiting.values_mut() {
            if a.last_sent
                .max(a.queued_at)
                .is_none_or(|t| wall.saturating_sub(t) >= a.backoff)
            {
                a.queued_at = Some(wall);
                a.backoff = (a.backoff * 2).min(MAX_RESEND_BACKOFF);
                batch.push(a.wire.clone());
            }
        }
        batch.sort_by(|a, b| a.command_id.cmp(&b.command_id));
        self.send(batch);
    }

    /// Writes the rollout's new events: all to the replayable log, state changes to the
    /// timeline, device state changes to each device's history. Raw telemetry stays out of the
    /// timeline.
    fn persist_events(&mut self) {
        let log = self.logged_events..self.rollout.event_count();
        self.logged_events = log.end;
        self.ready
            .push_back(Output::Write(StoreWrite::Log { range: log }));
        let events: Vec<RolloutEvent> = self
            .rollout
            .logged(self.persisted_events..self.rollout.event_count())
            .map(<[RolloutEvent]>::to_vec)
            .unwrap_or_default();
        self.persisted_events += events.len();
        for e in events {
            // The engine's own bookkeeping: device histories and the gate decisions of its
            // report.
            match &e.kind {
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
                        self.gate_decisions.push(GateDecision {
                            at: e.at,
                            wave: self.wave_name(*wave),
                            outcome: *outcome,
                            evidence: serde_json::to_value(report).unwrap_or_default(),
                        });
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
                }
                _ => {}
            }
            // The timeline entry, by the core's one mapping (what the drafts and alerts read).
            let entry = convoy_core::rollout::timeline::entry(&e.kind, |w| self.wave_name(w));
            if let Some((kind, payload)) = entry {
                let actor = convoy_core::rollout::timeline::cause_text(
                    &e.cause,
                    &self.rollout.state().device_ids,
                );
                self.ready.push_back(Output::Write(StoreWrite::Timeline {
                    at: e.at,
                    kind: kind.to_owned(),
                    actor,
                    payload,
                }));
            }
        }
    }

    pub(super) fn device_event(
        &mut self,
        device_id: &str,
        time: Timestamp,
        kind: &str,
        payload: serde_json::Value,
    ) {
        self.device_events.push(NewDeviceEvent {
            device_id: device_id.to_owned(),
            rollout_id: Some(self.config.rollout_id.clone()),
            time,
            kind: kind.to_owned(),
            payload,
        });
    }

    /// Writes buffered device events and acknowledgements, each batch in one transaction.
    fn flush_writes(&mut self, now: Timestamp) {
        let events = std::mem::take(&mut self.device_events);
        self.ready
            .push_back(Output::Write(StoreWrite::DeviceEvents(events)));
        let acked = std::mem::take(&mut self.acked);
        if !acked.is_empty() {
            self.ready.push_back(Output::Write(StoreWrite::Acked {
                ids: acked,
                at: now,
            }));
        }
    }

    /// The report of the run, ended at `now` as `final_state` after `wall` of wall time;
    /// `stale` unacknowledged commands of other rollouts were left in the outbox, and `ddi` is
    /// what the DDI link did, when there is one.
    pub fn final_report(
        &self,
        final_state: FinalState,
        now: Timestamp,
        wall: Duration,
        stale: usize,
        ddi: Option<super::ddi::DdiReport>,
    ) -> EngineReport {
        let s = self.rollout.state();
        let spec = self.rollout.spec();
        let mut waves: Vec<WaveReport> = spec
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
        let limit = spec.gates.silent_after_secs;
        let quiet = unsettled
            .iter()
            .filter(|u| {
                !u.silent
                    && u.last_state.is_in_flight()
                    && now.secs_since(u.last_status_at.unwrap_or(self.config.start)) > limit
            })
            .count();
        if quiet > 0 {
            notes.push(format!(
                "{quiet} device(s) in flight were heard from but sent no status for over {limit} s of simulated time: a status was lost on the way and not repeated (see docs/ENGINE.md, \"Lost status\")"
            ));
        }
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
            rollout_id: self.config.rollout_id.clone(),
            release_id: self.config.release_id.clone(),
            final_state,
            phase: s.phase.clone(),
            change_path: spec.path.clone(),
            requested_by: spec.requested_by.clone(),
            approvals: s.approvals.clone(),
            started_at: self.config.start,
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
            schedule: self.schedule_report(),
            prerequisite_stops: self.rollout.prerequisite_stops(),
            notes,
        }
    }
}

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

/// Whether a telemetry event is an alarm, which the gates should see at once.
fn is_alarm(event: &crate::link::protocol::TelemetryEvent) -> bool {
    use crate::link::protocol::TelemetryEvent;
    matches!(
        event,
        TelemetryEvent::Crash { .. } | TelemetryEvent::Boot { ok: false, .. }
    )
}

/// How long (wall time) the engine may be without its broker before the timeline records
/// `link.lost` and the people on call are told.
pub const LINK_LOST_ALERT: Duration = Duration::from_mins(1);

pub(super) use convoy_core::rollout::timeline::path_name;

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

/// The name a device state has in a device's history.
pub(super) fn state_name(state: DeviceState) -> &'static str {
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
