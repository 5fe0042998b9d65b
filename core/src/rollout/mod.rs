//! The rollout state machine: waves, per-device states, gate looks, holds, pauses, rollbacks.
//!
//! Shaped like quinn-proto's `Connection`: getters, `handle_*` for inputs, operator mutators,
//! `poll_action` / `poll_timeout` for outputs, and `now` passed into every call. Every change
//! is recorded as a [`RolloutEvent`] (timestamp, cause, kind) and applied by one fold, so
//! [`Rollout::replay`] rebuilds an identical state from the log and a UI can draw the timeline.
//!
//! It deliberately does no I/O and knows no transport: it neither sends offers nor reads a
//! clock. Gate arithmetic is incremental: each report updates running per-stratum aggregates
//! and the running evidence of the rate gates, so a gate look costs O(strata × metrics), and
//! silence is found with a deadline queue rather than a scan of the fleet. It does not pick
//! waves (that is the planner's job).
//!
//! Looks are driven by evidence: a report or a telemetry sample that moves the aggregates of a
//! running wave makes a look due, at most one per [`LOOK_DEBOUNCE_SECS`] of the caller's clock,
//! besides the timed look every `evaluate_every_secs` that finds silence and ends soaks. The
//! gates' tests are e-processes (see [`crate::gates`]), so these extra looks do not raise the
//! false-stop rate. A look that finds nothing to act on leaves no event; one that stops the
//! rollout is recorded like a timed look.

pub mod chain;
pub mod series;
pub mod sim;
pub mod timeline;
mod types;

pub use types::*;

use crate::fleet::Fleet;
use crate::gates::{
    self, CohortAgg, FindingStatus, GateInput, GateOutcome, GateReport, MetricLayout, OutcomeAgg,
    RateEvidence,
};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// How many distinct approvers a standard change needs, none of them the requester.
pub const STANDARD_APPROVALS: usize = 2;

/// The shortest time between two looks that evidence asks for, in the caller's seconds: a burst
/// of reports (a flush of health windows, a wave of boot failures) gives one look, not one per
/// report.
pub const LOOK_DEBOUNCE_SECS: i64 = 1;

/// One device's place in the rollout (compact: a million of these stay small).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSlot {
    pub state: DeviceState,
    pub wave: u16,
    pub stratum: u16,
    /// Last time the device was heard from (or offered, or asked to roll back).
    pub last_heard: Timestamp,
    pub silent: bool,
    /// Waiting for this device to roll back.
    pub rollback_pending: bool,
    /// Taken out of the rest of the rollout by an operator: never offered.
    #[serde(default)]
    pub excluded: bool,
    seen_baseline: bool,
    seen_updated: bool,
}

/// The whole state of a rollout: what the event fold produces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub spec: RolloutSpec,
    pub layout: MetricLayout,
    pub phase: Phase,
    pub strata: Vec<String>,
    /// Every device of the rollout, sorted; indices into this are device numbers.
    pub device_ids: Vec<String>,
    pub devices: Vec<DeviceSlot>,
    /// Device numbers per wave, ascending.
    pub wave_members: Vec<Vec<u32>>,
    /// Telemetry of devices on the old version, per stratum.
    pub baseline: Vec<CohortAgg>,
    /// Telemetry of devices on the new version, per wave, per stratum.
    pub updated: Vec<Vec<CohortAgg>>,
    /// Update outcomes per wave, per stratum.
    pub outcomes: Vec<Vec<OutcomeAgg>>,
    /// Devices offered and not finished nor silent, per wave; with paced offers it also counts
    /// the wave's devices still waiting for their offer (`owed`), so the wave runs until they
    /// are offered and finish.
    pub in_flight: Vec<u32>,
    /// Whether started waves wait for the caller's offers ([`EventKind::OffersPaced`]).
    #[serde(default)]
    pub paced: bool,
    /// Per wave: devices of a started paced wave not yet offered (still `Pending`).
    #[serde(default)]
    pub owed: Vec<u32>,
    pub approvals: Vec<String>,
    pub created_at: Timestamp,
    pub approved_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub holds: u32,
    pub looks: u32,
    pub next_look_at: Option<Timestamp>,
    /// Findings overridden in the current wave.
    pub overridden: Vec<(String, Option<String>)>,
    /// Failing findings of the last gate stop, which `override_gate` overrides.
    pub last_failures: Vec<(String, Option<String>)>,
    pub last_report: Option<GateReport>,
    pub rollback_pending: u32,
    pub rollbacks: u32,
    /// Devices an operator excluded from the rest of the rollout.
    #[serde(default)]
    pub excluded: u32,
    /// Silence deadlines in time order, with lazy deletion (a later report supersedes).
    silence_queue: VecDeque<(Timestamp, u32)>,
    pub last_at: Timestamp,
    /// Devices on the old version and not silent now, per stratum: the baseline's size, whose
    /// share of the exposure the rate evidence needs at each event.
    #[serde(default)]
    pub old_now: Vec<u32>,
    /// Devices on the new version and not silent now, per wave, per stratum.
    #[serde(default)]
    pub new_now: Vec<Vec<u32>>,
    /// The rate gates' running evidence per wave over the whole wave.
    #[serde(default)]
    pub evidence_whole: Vec<RateEvidence>,
    /// The same per wave, per stratum.
    #[serde(default)]
    pub evidence: Vec<Vec<RateEvidence>>,
    /// Prerequisite chains and each chain device's progress ([`chain`]).
    #[serde(default)]
    pub chain: chain::ChainState,
}

/// A rollout: the state, its event log, and the actions waiting for the caller.
#[derive(Clone, Debug)]
pub struct Rollout {
    state: RolloutState,
    /// The log from index `forgotten` on: the whole log unless the owner, having written the
    /// log elsewhere, let the start go ([`Rollout::forget_events_before`]).
    events: Vec<RolloutEvent>,
    forgotten: usize,
    /// What the rollout still needs of forgotten events.
    from_log: FromLog,
    actions: VecDeque<RolloutAction>,
    /// When the look that evidence asked for is due (not part of the fold: a look that finds
    /// nothing leaves no event, and a replayed rollout looks again at its next input).
    look_due: Option<Timestamp>,
    /// When the last look ran, for the debounce.
    last_look_at: Option<Timestamp>,
}

/// What a rollout reads from its own log, kept beside it so that the log may be forgotten.
#[derive(Clone, Debug, Default)]
struct FromLog {
    /// The schedule of the first [`EventKind::OffersPaced`].
    offer_schedule: Option<Box<crate::plan::pacing::OfferSchedule>>,
    /// The wave of the last [`EventKind::WaveStarted`].
    last_wave_started: Option<usize>,
}

impl FromLog {
    fn note(&mut self, e: &RolloutEvent) {
        match &e.kind {
            EventKind::OffersPaced { schedule } if self.offer_schedule.is_none() => {
                self.offer_schedule = Some(schedule.clone());
            }
            EventKind::WaveStarted { wave } => self.last_wave_started = Some(*wave),
            _ => {}
        }
    }
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> RolloutError {
    RolloutError::InvalidSpec {
        field: field.into(),
        why: why.into(),
    }
}

fn phase_name(p: &Phase) -> String {
    match p {
        Phase::Draft => "draft".into(),
        Phase::Approved => "approved".into(),
        Phase::Running { wave } => format!("running wave {wave}"),
        Phase::Soaking { wave, .. } => format!("soaking wave {wave}"),
        Phase::Paused { wave, .. } => format!("paused in wave {wave}"),
        Phase::RollingBack { .. } => "rolling back".into(),
        Phase::Completed => "completed".into(),
        Phase::RolledBack => "rolled back".into(),
        Phase::Aborted { .. } => "aborted".into(),
    }
}

impl Rollout {
    /// Checks `spec` against `fleet` and creates a draft rollout. Strata come from the fleet's
    /// attributes named in `spec.gates.stratify_by` and are recorded in the first event, so the
    /// log alone can rebuild the rollout.
    pub fn new(now: Timestamp, spec: RolloutSpec, fleet: &Fleet) -> Result<Self, RolloutError> {
        if spec.id.is_empty() {
            return Err(invalid("id", "must not be empty"));
        }
        if spec.requested_by.trim().is_empty() {
            return Err(invalid("requested_by", "must name the requesting operator"));
        }
        if spec.waves.is_empty() {
            return Err(invalid("waves", "a rollout needs at least one wave"));
        }
        spec.gates
            .validate()
            .map_err(|e| invalid("gates", e.to_string()))?;
        if let ChangePath::Emergency {
            authoriser,
            evidence,
            rollback_window_secs,
        } = &spec.path
        {
            if authoriser.trim().is_empty() {
                return Err(invalid(
                    "path.authoriser",
                    "an emergency needs a named authoriser",
                ));
            }
            if evidence.trim().is_empty() {
                return Err(invalid(
                    "path.evidence",
                    "an emergency needs recorded evidence",
                ));
            }
            if *rollback_window_secs <= 0 {
                return Err(invalid("path.rollback_window_secs", "must be positive"));
            }
        }
        if spec.waves.len() > usize::from(u16::MAX) {
            return Err(invalid("waves", "too many waves"));
        }
        let mut all: Vec<(&str, usize)> = Vec::new();
        for (w, wave) in spec.waves.iter().enumerate() {
            if wave.device_ids.is_empty() {
                return Err(invalid(
                    format!("waves[{w}].device_ids"),
                    "a wave needs devices",
                ));
            }
            if wave.soak_secs < 0 {
                return Err(invalid(
                    format!("waves[{w}].soak_secs"),
                    "must not be negative",
                ));
            }
            all.extend(wave.device_ids.iter().map(|d| (d.as_str(), w)));
        }
        all.sort_unstable();
        if let Some(pair) = all.windows(2).find(|p| p[0].0 == p[1].0) {
            return Err(invalid(
                "waves",
                format!("device {} is in more than one wave", pair[0].0),
            ));
        }
        let mut keys = Vec::with_capacity(all.len());
        for (id, _) in &all {
            let device = fleet
                .device(id)
                .ok_or_else(|| invalid("waves", format!("device {id} is not in the fleet")))?;
            let key: Vec<String> = spec
                .gates
                .stratify_by
                .iter()
                .map(|a| device.attribute(a).unwrap_or_else(|| "-".to_owned()))
                .collect();
            keys.push(key.join("/"));
        }
        let mut strata = keys.clone();
        strata.sort_unstable();
        strata.dedup();
        if strata.len() > usize::from(u16::MAX) {
            return Err(invalid("gates.stratify_by", "more than 65535 strata"));
        }
        let device_strata = keys
            .iter()
            .map(|k| strata.binary_search(k).unwrap_or(0) as u16)
            .collect();
        let event = RolloutEvent {
            at: now,
            cause: Cause::Operator {
                name: spec.requested_by.clone(),
                reason: "created".into(),
            },
            kind: EventKind::Created {
                spec: Box::new(spec),
                strata,
                device_strata,
            },
        };
        Self::replay(vec![event])
    }

    /// Rebuilds a rollout from its event log. The result has the same state as the rollout
    /// that wrote the log, and no pending actions (they were delivered the first time).
    pub fn replay(events: Vec<RolloutEvent>) -> Result<Self, RolloutError> {
        let Some(first) = events.first() else {
            return Err(RolloutError::BadLog {
                index: 0,
                why: "the log is empty".into(),
            });
        };
        let mut state = initial_state(first)?;
        let mut from_log = FromLog::default();
        for (index, e) in events.iter().enumerate().skip(1) {
            state
                .apply(e)
                .map_err(|why| RolloutError::BadLog { index, why })?;
            from_log.note(e);
        }
        Ok(Self {
            state,
            events,
            forgotten: 0,
            from_log,
            actions: VecDeque::new(),
            look_due: None,
            last_look_at: None,
        })
    }

    // ---- getters ----

    pub fn state(&self) -> &RolloutState {
        &self.state
    }

    pub fn phase(&self) -> &Phase {
        &self.state.phase
    }

    pub fn spec(&self) -> &RolloutSpec {
        &self.state.spec
    }

    /// The events kept in memory: the whole log (what [`Rollout::replay`] takes), unless the
    /// owner forgot its start with [`Rollout::forget_events_before`]; then the log from index
    /// [`Rollout::first_kept_event`] on.
    pub fn events(&self) -> &[RolloutEvent] {
        &self.events
    }

    /// The log's length: every event recorded, forgotten ones included.
    pub fn event_count(&self) -> usize {
        self.forgotten + self.events.len()
    }

    /// The log index of the first event kept in memory.
    pub fn first_kept_event(&self) -> usize {
        self.forgotten
    }

    /// The log's events with indices in `range`, or `None` if some of them are forgotten or
    /// not recorded yet.
    pub fn logged(&self, range: std::ops::Range<usize>) -> Option<&[RolloutEvent]> {
        let start = range.start.checked_sub(self.forgotten)?;
        let end = range.end.checked_sub(self.forgotten)?;
        self.events.get(start..end)
    }

    /// Lets the log's events before index `n` go from memory, for an owner that has written
    /// them elsewhere (the engine, to the cache's replayable log): a long rollout records an
    /// event per closed health window, thousands a minute. The state and what the rollout
    /// reads from its log are kept; [`Rollout::replay`] of the whole written log gives the same
    /// state.
    pub fn forget_events_before(&mut self, n: usize) {
        let k = n.saturating_sub(self.forgotten).min(self.events.len());
        if k == 0 {
            return;
        }
        self.events.drain(..k);
        self.forgotten += k;
        if self.events.capacity() > 1024 && self.events.capacity() > 4 * self.events.len() {
            self.events.shrink_to(2 * self.events.len());
        }
    }

    /// The state of a device, or `None` if it is not in this rollout.
    pub fn device_state(&self, device_id: &str) -> Option<DeviceState> {
        self.index(device_id)
            .map(|i| self.state.devices[i as usize].state)
    }

    /// Devices in `state`, sorted by id.
    pub fn devices_in(&self, state: DeviceState) -> Vec<&str> {
        self.state
            .devices
            .iter()
            .zip(&self.state.device_ids)
            .filter(|(d, _)| d.state == state)
            .map(|(_, id)| id.as_str())
            .collect()
    }

    /// Devices currently marked silent, sorted by id.
    pub fn silent_devices(&self) -> Vec<&str> {
        self.state
            .devices
            .iter()
            .zip(&self.state.device_ids)
            .filter(|(d, _)| d.silent)
            .map(|(_, id)| id.as_str())
            .collect()
    }

    /// The last gate report (findings of the most recent look).
    pub fn last_gate_report(&self) -> Option<&GateReport> {
        self.state.last_report.as_ref()
    }

    /// Evaluates the gates for the current wave now, without recording anything: what the
    /// next look would see. Returns `None` outside a running or soaking wave.
    pub fn evaluate_gates(&self) -> Option<GateReport> {
        let (Phase::Running { wave } | Phase::Soaking { wave, .. }) = self.state.phase else {
            return None;
        };
        Some(self.state.evaluate(wave))
    }

    fn index(&self, device_id: &str) -> Option<u32> {
        self.state
            .device_ids
            .binary_search_by(|d| d.as_str().cmp(device_id))
            .ok()
            .map(|i| i as u32)
    }

    // ---- outputs ----

    /// The next thing the caller must do, if any.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<RolloutAction> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` should next be called: the timed look, the end of a soak, or the
    /// look that new evidence asked for, whichever comes first.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let s = &self.state;
        let earliest = |a: Option<Timestamp>, b: Option<Timestamp>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match &s.phase {
            Phase::Approved => s.approved_at,
            Phase::Running { .. } => earliest(s.next_look_at, self.look_due),
            Phase::RollingBack { .. } => s.next_look_at,
            Phase::Soaking { until, .. } => {
                earliest(Some(*until), earliest(s.next_look_at, self.look_due))
            }
            _ => None,
        }
    }

    /// When the look that new evidence asked for is due, if one is.
    pub fn look_due(&self) -> Option<Timestamp> {
        self.look_due
    }

    /// Evidence moved at `now`: a look is due, at once unless one ran within the debounce.
    fn evidence_moved(&mut self, now: Timestamp) {
        if !matches!(
            self.state.phase,
            Phase::Running { .. } | Phase::Soaking { .. }
        ) || self.look_due.is_some()
        {
            return;
        }
        let earliest = self
            .last_look_at
            .map_or(now, |t| t.plus_secs(LOOK_DEBOUNCE_SECS));
        self.look_due = Some(now.max(earliest));
    }

    // ---- inputs ----

    /// A device reports its update state.
    pub fn handle_report(
        &mut self,
        now: Timestamp,
        report: DeviceReport,
    ) -> Result<(), RolloutError> {
        let now = self.clamp(now);
        let i = self
            .index(&report.device_id)
            .ok_or_else(|| RolloutError::UnknownDevice(report.device_id.clone()))?;
        let slot = self.state.devices[i as usize];
        let from = slot.state;
        let to = report.state;
        let allowed = from == to
            || match to {
                DeviceState::Pending => false,
                DeviceState::Failed => from.is_in_flight() || (slot.rollback_pending && from != to),
                DeviceState::Reverted => from != DeviceState::Pending,
                _ => from.is_in_flight() && to > from,
            };
        if !allowed {
            return Err(RolloutError::BadTransition {
                from,
                to,
                device: report.device_id,
            });
        }
        self.record(RolloutEvent {
            at: now,
            cause: Cause::Device(i),
            kind: EventKind::Device {
                device: i,
                state: to,
            },
        });
        if from != to {
            self.evidence_moved(now);
        }
        self.after_progress(now);
        Ok(())
    }

    /// A device reports health telemetry. Devices on the old version feed the baseline,
    /// devices on the new version the updated cohort of their wave.
    pub fn handle_telemetry(
        &mut self,
        now: Timestamp,
        report: TelemetryReport,
    ) -> Result<(), RolloutError> {
        let now = self.clamp(now);
        let i = self
            .index(&report.device_id)
            .ok_or_else(|| RolloutError::UnknownDevice(report.device_id.clone()))?;
        let s = &report.sample;
        let bad = |field: &str| RolloutError::BadTelemetry {
            field: field.into(),
            device: report.device_id.clone(),
        };
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !s.reconnect_secs.is_none_or(ok) {
            return Err(bad("reconnect_secs"));
        }
        if !s.battery_drain_pct_per_hour.is_none_or(ok) {
            return Err(bad("battery_drain_pct_per_hour"));
        }
        if let Some((name, _)) = s.custom.iter().find(|(_, v)| !ok(*v)) {
            return Err(bad(&format!("custom.{name}")));
        }
        self.record(RolloutEvent {
            at: now,
            cause: Cause::Device(i),
            kind: EventKind::Telemetry {
                device: i,
                sample: Box::new(report.sample),
            },
        });
        self.evidence_moved(now);
        Ok(())
    }

    /// Time has reached `now`: start the first wave, mark silent devices, look at the gates,
    /// end or extend soaks, finish rollbacks.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let now = self.clamp(now);
        match self.state.phase.clone() {
            Phase::Approved if self.state.approved_at.is_some_and(|t| now >= t) => {
                self.start_wave_from(now, 0);
            }
            Phase::Running { wave } | Phase::Soaking { wave, .. } => {
                self.mark_silent(now);
                self.after_progress(now);
                if self.state.next_look_at.is_some_and(|t| now >= t) {
                    self.look(now, wave);
                } else if self.look_due.is_some_and(|t| now >= t) {
                    self.evidence_look(now, wave);
                }
                if let Phase::Soaking { wave, until } = self.state.phase.clone()
                    && now >= until
                {
                    self.end_soak(now, wave);
                }
            }
            Phase::RollingBack { .. } => {
                self.mark_silent(now);
                if self.state.next_look_at.is_some_and(|t| now >= t) {
                    self.timer(now, EventKind::SilenceChecked);
                }
                self.after_progress(now);
            }
            _ => {}
        }
    }

    // ---- operator commands ----

    /// Records `operator`'s approval; the rollout is approved once the change path's rule holds
    /// (see [`ChangePath`]) and starts its first wave at the next timeout.
    pub fn approve(&mut self, now: Timestamp, operator: &str) -> Result<(), RolloutError> {
        let now = self.clamp(now);
        self.require_phase(
            "approve",
            matches!(self.state.phase, Phase::Draft),
            "it is no longer a draft",
        )?;
        let operator = operator.trim();
        if operator.is_empty() {
            return Err(RolloutError::Missing {
                command: "approve".into(),
                what: "a named operator".into(),
            });
        }
        if self.state.approvals.iter().any(|a| a == operator) {
            return Err(RolloutError::DuplicateApproval(operator.to_owned()));
        }
        self.operator(
            now,
            operator,
            "approved",
            EventKind::Approval {
                operator: operator.to_owned(),
            },
        );
        if self.approval_complete() {
            self.operator(now, operator, "approval complete", EventKind::Approved);
        }
        Ok(())
    }

    /// Whether the approvals so far satisfy the change path.
    pub fn approval_complete(&self) -> bool {
        let s = &self.state;
        approvals_satisfy(&s.spec.path, &s.spec.requested_by, &s.approvals)
    }

    /// Stops offering; resumable with [`Rollout::resume`].
    pub fn pause(
        &mut self,
        now: Timestamp,
        operator: &str,
        reason: &str,
    ) -> Result<(), RolloutError> {
        let now = self.clamp(now);
        Self::need(operator, reason, "pause")?;
        self.permits(Command::Pause, now)?;
        self.operator(
            now,
            operator,
            reason,
            EventKind::Paused {
                reason: reason.to_owned(),
                by_gate: false,
            },
        );
        Ok(())
    }

    /// Resumes a rollout an operator paused. A gate stop needs [`Rollout::override_gate`].
    pub fn resume(
        &mut self,
        now: Timestamp,
        operator: &str,
        reason: &str,
    ) -> Result<(), RolloutError> {
        let now = self.clamp(now);
        Self::need(operator, reason, "resume")?;
        self.permits(Command::Resume, now)?;
        self.operator(now, operator, reason, EventKind::Resumed);
        Ok(())
    }

    /// Overrides the gate findings that stopped the rollout, with a recorded reason, and
    /// resumes the wave. Those findings stay overridden for the rest of the wave; any other
    /// gate still fires.
    pub fn override_gate(
        &mut self,
        now: Timestamp,
        operator: &str,
        reason: &str,
    ) -> Result<(), RolloutError> {
        let now = self.clamp(now);
        Self::need(operator, reason, "override_gate")?;
        self.permits(Command::OverrideGate, now)?;
        // The override covers each failing metric in every scope for the rest of the wave:
        // one human decision about a metric, not one per stratum as each crosses the line.
        let mut findings: Vec<(String, Option<String>)> = self
            .state
            .last_failures
            .iter()
            .map(|(m, _)| (m.clone(), None))
            .collect();
        findings.sort();
        findings.dedup();
        self.operator(
            now,
            operator,
            reason,
            EventKind::GateOverridden { findings },
        );
        self.operator(now, operator, reason, EventKind::Resumed);
        Ok(())
    }

    /// Rolls back the current wave or the whole rollout. After completion only `All` is
    /// allowed, and only within the rollback window.
    pub fn roll_back(
        &mut self,
        now: Timestamp,
        operator: &str,
        scope: RollbackScope,
        reason: &str,
    ) -> Result<(), RolloutError> {
        let now = self.clamp(now);
        Self::need(operator, reason, "roll_back")?;
        match scope {
            RollbackScope::All => self.permits(Command::RollBackAll, now)?,
            RollbackScope::Wave(w) => {
                self.permits(Command::RollBackWave, now)?;
                let wave = self.current_wave();
                if w != wave {
                    return Err(RolloutError::NotAllowed {
                        command: format!("roll back wave {w}"),
                        phase: phase_name(&self.state.phase),
                        why: format!("only the current wave ({wave}) can be rolled back alone"),
                    });
                }
            }
        }
        let devices = self.rollback_devices(scope);
        self.operator(
            now,
            operator,
            reason,
            EventKind::RollbackStarted { scope, devices },
        );
        self.after_progress(now);
        Ok(())
    }

    /// Stops the rollout for good, leaving devices where they are.
    pub fn abort(
        &mut self,
        now: Timestamp,
        operator: &str,
        reason: &str,
    ) -> Result<(), RolloutError> {
        let now = self.clamp(now);
        Self::need(operator, reason, "abort")?;
        self.permits(Command::Abort, now)?;
        self.operator(
            now,
            operator,
            reason,
            EventKind::Aborted {
                reason: reason.to_owned(),
            },
        );
        Ok(())
    }

    /// Takes `device_ids` out of the rest of the rollout: those not offered yet are never
    /// offered; those already offered stay where they are (a rollback moves them). `what` is
    /// the operator's selector, recorded with the reason. Returns how many devices were newly
    /// excluded. Refused when none of them is still waiting for the release.
    pub fn exclude(
        &mut self,
        now: Timestamp,
        operator: &str,
        reason: &str,
        what: &str,
        device_ids: &[&str],
    ) -> Result<u32, RolloutError> {
        let now = self.clamp(now);
        Self::need(operator, reason, "exclude")?;
        self.permits(Command::Exclude, now)?;
        let mut devices = Vec::with_capacity(device_ids.len());
        for id in device_ids {
            let i = self
                .index(id)
                .ok_or_else(|| RolloutError::UnknownDevice((*id).to_owned()))?;
            let d = &self.state.devices[i as usize];
            if d.state == DeviceState::Pending && !d.excluded {
                devices.push(i);
            }
        }
        devices.sort_unstable();
        devices.dedup();
        if devices.is_empty() {
            return Err(RolloutError::NothingToExclude(format!(
                "none of the {} device(s) selected by {what:?} is still waiting for the release",
                device_ids.len()
            )));
        }
        let n = devices.len() as u32;
        self.operator(
            now,
            operator,
            reason,
            EventKind::Excluded {
                what: what.to_owned(),
                devices,
            },
        );
        // A paced wave may have been waiting only for the devices just excluded.
        self.after_progress(now);
        Ok(n)
    }

    /// Continues past a wave that was rolled back: the next wave with devices left starts now
    /// (waves whose devices were all excluded are skipped), or the rollout completes if none
    /// is left. Exclude what failed first ([`Rollout::exclude`]) so the next waves leave it out.
    pub fn continue_rollout(
        &mut self,
        now: Timestamp,
        operator: &str,
        reason: &str,
    ) -> Result<(), RolloutError> {
        let now = self.clamp(now);
        Self::need(operator, reason, "continue")?;
        self.permits(Command::Continue, now)?;
        let wave = self.current_wave();
        self.operator(now, operator, reason, EventKind::Continued { wave });
        self.start_wave_from(now, wave + 1);
        Ok(())
    }

    /// Whether `command` would be accepted now (given an operator and a reason); if not, why,
    /// in words that name what would work instead. The console enables its buttons with it.
    // One arm per phase and answer reads as the table it is; merging arms across phases would not.
    #[allow(clippy::match_same_arms)]
    pub fn permits(&self, command: Command, now: Timestamp) -> Result<(), RolloutError> {
        use Command as C;
        let now = self.clamp(now);
        let wave_name = |w: usize| {
            self.state
                .spec
                .waves
                .get(w)
                .map_or_else(|| format!("wave {w}"), |x| format!("wave {}", x.name))
        };
        let refuse = |why: String| {
            Err(RolloutError::NotAllowed {
                command: command.words().to_owned(),
                phase: phase_name(&self.state.phase),
                why,
            })
        };
        match (&self.state.phase, command) {
            (Phase::Draft | Phase::Approved, C::Abort | C::Exclude) => Ok(()),
            (Phase::Draft, _) => refuse("it has not been approved yet".into()),
            (Phase::Approved, _) => refuse("no wave has started yet".into()),
            (
                Phase::Running { .. } | Phase::Soaking { .. },
                C::Pause | C::RollBackWave | C::RollBackAll | C::Abort | C::Exclude,
            ) => Ok(()),
            (Phase::Running { .. } | Phase::Soaking { .. }, C::Resume | C::Continue) => {
                refuse("it is running".into())
            }
            (Phase::Running { .. } | Phase::Soaking { .. }, C::OverrideGate) => {
                refuse("no gate has stopped it".into())
            }
            (Phase::Paused { .. }, C::Pause) => refuse("it is paused already".into()),
            (Phase::Paused { .. }, C::Abort | C::Exclude | C::RollBackAll) => Ok(()),
            (
                Phase::Paused {
                    wave,
                    rolled_back: true,
                    ..
                },
                C::RollBackWave,
            ) => {
                // Again, for devices that did not confirm the first rollback (silent then).
                if self.rollback_devices(RollbackScope::Wave(*wave)).is_empty() {
                    refuse(format!(
                        "every device of {} is back on its previous version or never updated",
                        wave_name(*wave)
                    ))
                } else {
                    Ok(())
                }
            }
            (
                Phase::Paused {
                    wave,
                    rolled_back: true,
                    ..
                },
                C::Resume | C::OverrideGate,
            ) => refuse(format!(
                "{} was rolled back: exclude what failed and continue with the next wave, \
                 roll back everything, or abort",
                wave_name(*wave)
            )),
            (
                Phase::Paused {
                    rolled_back: true, ..
                },
                C::Continue,
            ) => Ok(()),
            (
                Phase::Paused {
                    by_gate: true,
                    rolled_back: false,
                    ..
                },
                C::Resume,
            ) => refuse(
                "a gate stopped it: override the gate with a reason, roll back, or abort".into(),
            ),
            (Phase::Paused { by_gate: true, .. }, C::OverrideGate | C::RollBackWave) => Ok(()),
            (Phase::Paused { by_gate: true, .. }, C::Continue) => refuse(
                "the wave was not rolled back: override the gate to go on with it, or roll it \
                 back first"
                    .into(),
            ),
            (Phase::Paused { by_gate: false, .. }, C::Resume | C::RollBackWave) => Ok(()),
            (Phase::Paused { by_gate: false, .. }, C::OverrideGate) => {
                refuse("an operator paused it, not a gate: resume it".into())
            }
            (Phase::Paused { by_gate: false, .. }, C::Continue) => {
                refuse("an operator paused it: resume it".into())
            }
            (Phase::RollingBack { .. }, C::Abort) => Ok(()),
            (Phase::RollingBack { .. }, _) => {
                refuse("a rollback is in progress: wait for the devices to report, or abort".into())
            }
            (Phase::Completed, C::RollBackAll) => {
                let closes = self
                    .state
                    .completed_at
                    .map(|t| t.plus_secs(self.rollback_window_secs()));
                match closes {
                    Some(t) if now <= t => Ok(()),
                    Some(t) => refuse(format!("its rollback window closed at {t}")),
                    None => refuse("it has no completion time".into()),
                }
            }
            (Phase::Completed, _) => refuse("it has completed".into()),
            (Phase::RolledBack, _) => refuse("it was rolled back and has ended".into()),
            (Phase::Aborted { .. }, _) => refuse("it was aborted and has ended".into()),
        }
    }

    /// Paces offers: from now on a started wave's devices stay `Pending` until
    /// [`Rollout::offer`] offers them, and the `Offer` action of a wave start lists the devices
    /// that wait (the caller offers them when its schedule allows). Only before the first wave.
    pub fn pace_offers(
        &mut self,
        now: Timestamp,
        schedule: crate::plan::pacing::OfferSchedule,
    ) -> Result<(), RolloutError> {
        let now = self.clamp(now);
        self.require_phase(
            "pace_offers",
            matches!(self.state.phase, Phase::Draft | Phase::Approved) && !self.state.paced,
            "offers are paced before the first wave, once",
        )?;
        self.record(RolloutEvent {
            at: now,
            cause: Cause::Timer,
            kind: EventKind::OffersPaced {
                schedule: Box::new(schedule),
            },
        });
        Ok(())
    }

    /// Records that the caller offered `device_ids` of the running wave (paced offers): each
    /// must be a member of that wave still waiting for its offer. Their silence clock starts
    /// now.
    pub fn offer(&mut self, now: Timestamp, device_ids: &[String]) -> Result<(), RolloutError> {
        let now = self.clamp(now);
        let Phase::Running { wave } = self.state.phase else {
            return Err(RolloutError::NotAllowed {
                command: "offer".into(),
                phase: phase_name(&self.state.phase),
                why: "devices are offered only while a wave runs".into(),
            });
        };
        if !self.state.paced {
            return Err(RolloutError::NotAllowed {
                command: "offer".into(),
                phase: phase_name(&self.state.phase),
                why: "offers are not paced: a wave's devices are offered when it starts".into(),
            });
        }
        let mut devices = Vec::with_capacity(device_ids.len());
        for id in device_ids {
            let i = self
                .index(id)
                .ok_or_else(|| RolloutError::UnknownDevice(id.clone()))?;
            let d = self.state.devices[i as usize];
            if usize::from(d.wave) != wave || d.state != DeviceState::Pending {
                return Err(RolloutError::BadTransition {
                    from: d.state,
                    to: DeviceState::Offered,
                    device: id.clone(),
                });
            }
            devices.push(i);
        }
        devices.sort_unstable();
        devices.dedup();
        if devices.is_empty() {
            return Ok(());
        }
        self.record(RolloutEvent {
            at: now,
            cause: Cause::Timer,
            kind: EventKind::Offered { devices },
        });
        Ok(())
    }

    /// The schedule the rollout's offers follow, when they are paced.
    pub fn offer_schedule(&self) -> Option<&crate::plan::pacing::OfferSchedule> {
        self.from_log.offer_schedule.as_deref()
    }

    /// The devices of the running (or paused) wave still waiting for their paced offer, by id.
    pub fn awaiting_offer(&self) -> Vec<&str> {
        let s = &self.state;
        let wave = match s.phase {
            Phase::Running { wave } | Phase::Paused { wave, .. } if s.paced => wave,
            _ => return Vec::new(),
        };
        s.wave_members[wave]
            .iter()
            .filter(|&&i| {
                let d = &s.devices[i as usize];
                d.state == DeviceState::Pending && !d.excluded
            })
            .map(|&i| s.device_ids[i as usize].as_str())
            .collect()
    }

    /// The rollback window after completion: the emergency path's own, else the policy's.
    pub fn rollback_window_secs(&self) -> i64 {
        match &self.state.spec.path {
            ChangePath::Emergency {
                rollback_window_secs,
                ..
            } => *rollback_window_secs,
            ChangePath::Standard | ChangePath::SingleOperator => {
                self.state.spec.gates.rollback_window_secs
            }
        }
    }

    // ---- internals ----

    fn need(operator: &str, reason: &str, command: &str) -> Result<(), RolloutError> {
        if operator.trim().is_empty() {
            return Err(RolloutError::Missing {
                command: command.into(),
                what: "a named operator".into(),
            });
        }
        if reason.trim().is_empty() {
            return Err(RolloutError::Missing {
                command: command.into(),
                what: "a recorded reason".into(),
            });
        }
        Ok(())
    }

    fn require_phase(&self, command: &str, ok: bool, why: &str) -> Result<(), RolloutError> {
        if ok {
            Ok(())
        } else {
            Err(RolloutError::NotAllowed {
                command: command.into(),
                phase: phase_name(&self.state.phase),
                why: why.into(),
            })
        }
    }

    /// Starts the first wave from `wave` on that has a device left to offer (waves whose
    /// devices were all excluded are skipped), or completes the rollout if none has.
    fn start_wave_from(&mut self, now: Timestamp, wave: usize) {
        let s = &self.state;
        let next = (wave..s.spec.waves.len()).find(|&w| {
            s.wave_members[w].iter().any(|&i| {
                let d = &s.devices[i as usize];
                d.state == DeviceState::Pending && !d.excluded
            })
        });
        match next {
            Some(w) => self.timer(now, EventKind::WaveStarted { wave: w }),
            None => self.timer(now, EventKind::Completed),
        }
    }

    fn clamp(&self, now: Timestamp) -> Timestamp {
        // Time never runs backwards inside a rollout: a late caller's `now` is taken as the
        // last time seen, so deadlines stay ordered and replay stays exact.
        now.max(self.state.last_at)
    }

    fn current_wave(&self) -> usize {
        match &self.state.phase {
            Phase::Running { wave } | Phase::Soaking { wave, .. } | Phase::Paused { wave, .. } => {
                *wave
            }
            Phase::RollingBack {
                scope: RollbackScope::Wave(w),
            } => *w,
            _ => self.from_log.last_wave_started.unwrap_or(0),
        }
    }

    fn rollback_devices(&self, scope: RollbackScope) -> Vec<u32> {
        let touched = |i: &u32| {
            let d = &self.state.devices[*i as usize];
            d.state.is_in_flight() || d.state == DeviceState::Healthy
        };
        match scope {
            RollbackScope::Wave(w) => self.state.wave_members[w]
                .iter()
                .copied()
                .filter(touched)
                .collect(),
            RollbackScope::All => (0..self.state.devices.len() as u32)
                .filter(touched)
                .collect(),
        }
    }

    fn operator(&mut self, now: Timestamp, operator: &str, reason: &str, kind: EventKind) {
        self.record(RolloutEvent {
            at: now,
            cause: Cause::Operator {
                name: operator.to_owned(),
                reason: reason.to_owned(),
            },
            kind,
        });
    }

    fn timer(&mut self, now: Timestamp, kind: EventKind) {
        self.record(RolloutEvent {
            at: now,
            cause: Cause::Timer,
            kind,
        });
    }

    fn gate(&mut self, now: Timestamp, kind: EventKind) {
        self.record(RolloutEvent {
            at: now,
            cause: Cause::Gate,
            kind,
        });
    }

    /// Applies an event, appends it to the log and queues the actions it implies.
    fn record(&mut self, event: RolloutEvent) {
        // Events built here are valid by construction; an error would be a bug in this file,
        // and the event is still logged so that the log shows what was attempted.
        let applied = self.state.apply(&event);
        debug_assert!(applied.is_ok(), "{applied:?}");
        let ids = &self.state.device_ids;
        match &event.kind {
            EventKind::WaveStarted { wave } => self.actions.push_back(RolloutAction::Offer {
                wave: *wave,
                device_ids: self.state.wave_members[*wave]
                    .iter()
                    .filter(|i| !self.state.devices[**i as usize].excluded)
                    .map(|i| ids[*i as usize].clone())
                    .collect(),
            }),
            EventKind::Excluded { what, devices } => {
                self.actions.push_back(RolloutAction::Notify(format!(
                    "{} device(s) excluded from the rest of the rollout: {what}",
                    devices.len()
                )));
            }
            EventKind::Paused { reason, .. } => {
                self.actions.push_back(RolloutAction::Pause(reason.clone()));
            }
            EventKind::RollbackStarted { scope, devices } => {
                self.actions.push_back(RolloutAction::RollBack {
                    scope: *scope,
                    device_ids: devices.iter().map(|i| ids[*i as usize].clone()).collect(),
                });
            }
            EventKind::WaveCompleted { wave, summary } => {
                self.actions.push_back(RolloutAction::Notify(format!(
                    "wave {wave} completed: {} healthy, {} failed, {} reverted, {} silent",
                    summary.healthy,
                    summary.failed,
                    summary.reverted,
                    summary.silent_device_ids.len()
                )));
            }
            EventKind::GateChecked {
                outcome, report, ..
            } if *outcome > GateOutcome::Hold => {
                let what: Vec<String> = report
                    .iter()
                    .flat_map(|r| r.failures())
                    .map(describe_finding)
                    .collect();
                self.actions.push_back(RolloutAction::Notify(format!(
                    "gate stop ({}): {}",
                    outcome.words(),
                    what.join("; ")
                )));
            }
            EventKind::Completed => self
                .actions
                .push_back(RolloutAction::Notify("rollout completed".into())),
            EventKind::Aborted { reason } => self
                .actions
                .push_back(RolloutAction::Notify(format!("rollout aborted: {reason}"))),
            _ => {}
        }
        self.from_log.note(&event);
        self.events.push(event);
    }

    /// Marks devices silent whose deadline has passed with no word from them.
    fn mark_silent(&mut self, now: Timestamp) {
        let window = self.state.spec.gates.silent_after_secs;
        while let Some(&(deadline, i)) = self.state.silence_queue.front() {
            if deadline > now {
                break;
            }
            self.state.silence_queue.pop_front();
            let d = self.state.devices[i as usize];
            let waiting = d.state.is_in_flight() || d.rollback_pending;
            if waiting && !d.silent && d.last_heard.plus_secs(window) == deadline {
                self.timer(now, EventKind::DeviceSilent { device: i });
            }
        }
    }

    /// After a report or a silence: start the soak when the wave has no device in flight,
    /// finish a rollback when no device is left to roll back.
    fn after_progress(&mut self, now: Timestamp) {
        match self.state.phase.clone() {
            Phase::Running { wave } if self.state.in_flight[wave] == 0 => {
                let until = now.plus_secs(self.state.spec.waves[wave].soak_secs);
                self.timer(now, EventKind::SoakStarted { wave, until });
            }
            Phase::RollingBack { scope } if self.state.rollback_pending == 0 => {
                self.timer(now, EventKind::RollbackFinished { scope });
            }
            _ => {}
        }
    }

    /// A look that evidence asked for: recorded and acted on only when it stops the rollout;
    /// otherwise it leaves no trace (the timed look records the wave's findings).
    fn evidence_look(&mut self, now: Timestamp, wave: usize) {
        self.look_due = None;
        self.last_look_at = Some(now);
        // The phase may have moved since the evidence came (a soak ended, a rollback started).
        if !matches!(
            self.state.phase,
            Phase::Running { .. } | Phase::Soaking { .. }
        ) {
            return;
        }
        if self.state.evaluate(wave).outcome() > GateOutcome::Hold {
            self.look(now, wave);
        }
    }

    /// One gate look: evaluate, record, act on a stop.
    fn look(&mut self, now: Timestamp, wave: usize) {
        self.look_due = None;
        self.last_look_at = Some(now);
        let report = self.state.evaluate(wave);
        let outcome = report.outcome();
        let keep = !report.findings.is_empty();
        self.gate(
            now,
            EventKind::GateChecked {
                wave,
                outcome,
                report: keep.then(|| Box::new(report.clone())),
            },
        );
        let reason = || {
            let what: Vec<String> = report.failures().map(describe_finding).collect();
            what.join("; ")
        };
        match outcome {
            GateOutcome::Continue | GateOutcome::Hold => {}
            GateOutcome::Pause => self.gate(
                now,
                EventKind::Paused {
                    reason: reason(),
                    by_gate: true,
                },
            ),
            GateOutcome::RollBackWave => {
                let devices = self.rollback_devices(RollbackScope::Wave(wave));
                self.gate(
                    now,
                    EventKind::RollbackStarted {
                        scope: RollbackScope::Wave(wave),
                        devices,
                    },
                );
                self.after_progress(now);
            }
            GateOutcome::RollBackAll => {
                let devices = self.rollback_devices(RollbackScope::All);
                self.gate(
                    now,
                    EventKind::RollbackStarted {
                        scope: RollbackScope::All,
                        devices,
                    },
                );
                self.after_progress(now);
            }
        }
    }

    /// The soak of `wave` is over: hold, pause, or complete the wave.
    fn end_soak(&mut self, now: Timestamp, wave: usize) {
        let report = self.state.evaluate(wave);
        let policy = &self.state.spec.gates;
        // A gate whose configured outcome is `hold` holds like a trend does.
        let held = report.trending || report.outcome() == GateOutcome::Hold;
        let unsure = held || report.whole_wave_short_of_sample;
        if unsure && self.state.holds < policy.max_holds {
            let until = now.plus_secs(policy.hold_extension_secs);
            self.gate(
                now,
                EventKind::SoakExtended {
                    wave,
                    until,
                    report: Some(Box::new(report)),
                },
            );
            return;
        }
        // After the last hold only a failing gate configured to hold pauses, for a human. A
        // trend does not: its evidence kept accumulating through the holds, looked at after
        // every report, and a real regression would have crossed its level by now. (The old
        // rule, a trend paused after two holds at a fixed-sample level, stopped good releases
        // on a handful of chance crashes in a small wave.)
        let failing_hold = report.outcome() == GateOutcome::Hold;
        if failing_hold {
            let what: Vec<String> = report.failures().map(describe_finding).collect();
            self.gate(
                now,
                EventKind::Paused {
                    reason: format!(
                        "still failing after {} holds: {}",
                        self.state.holds,
                        what.join("; ")
                    ),
                    by_gate: true,
                },
            );
            return;
        }
        let s = &self.state;
        let mut summary = WaveSummary::default();
        for &i in &s.wave_members[wave] {
            let d = &s.devices[i as usize];
            match d.state {
                DeviceState::Healthy => summary.healthy += 1,
                DeviceState::Failed => summary.failed += 1,
                DeviceState::Reverted => summary.reverted += 1,
                _ => {}
            }
            if d.silent || d.state.is_in_flight() {
                summary
                    .silent_device_ids
                    .push(s.device_ids[i as usize].clone());
            }
        }
        summary.not_judged = report
            .findings
            .iter()
            .filter(|f| f.status == FindingStatus::NotEnoughData)
            .map(|f| f.metric.clone())
            .collect();
        summary.unconfirmed_trends = report
            .findings
            .iter()
            .filter(|f| f.status == FindingStatus::Trending)
            .map(describe_finding)
            .collect();
        self.gate(
            now,
            EventKind::WaveCompleted {
                wave,
                summary: Box::new(summary),
            },
        );
        self.start_wave_from(now, wave + 1);
    }
}

fn describe_finding(f: &gates::Finding) -> String {
    format!(
        "{} {} {:.4} vs baseline {:.4} (p={:.2e}, n={})",
        f.metric,
        f.stratum.as_deref().unwrap_or("all"),
        f.observed,
        f.baseline,
        f.p_value,
        f.sample
    )
}

fn initial_state(first: &RolloutEvent) -> Result<RolloutState, RolloutError> {
    let bad = |why: &str| RolloutError::BadLog {
        index: 0,
        why: why.into(),
    };
    let EventKind::Created {
        spec,
        strata,
        device_strata,
    } = &first.kind
    else {
        return Err(bad("the first event must be `created`"));
    };
    let mut ids: Vec<(String, u16)> = Vec::new();
    for (w, wave) in spec.waves.iter().enumerate() {
        ids.extend(wave.device_ids.iter().map(|d| (d.clone(), w as u16)));
    }
    ids.sort_unstable();
    if ids.len() != device_strata.len() {
        return Err(bad("device strata do not match the waves"));
    }
    if device_strata
        .iter()
        .any(|s| usize::from(*s) >= strata.len())
    {
        return Err(bad("a device stratum is out of range"));
    }
    if ids.windows(2).any(|p| p[0].0 == p[1].0) {
        return Err(bad("a device is in more than one wave"));
    }
    spec.gates
        .validate()
        .map_err(|e| bad(&format!("the spec's gate policy is invalid: {e}")))?;
    let layout = MetricLayout::new(&spec.gates);
    let mut wave_members = vec![Vec::new(); spec.waves.len()];
    let devices = ids
        .iter()
        .zip(device_strata)
        .enumerate()
        .map(|(i, ((_, w), s))| {
            wave_members[usize::from(*w)].push(i as u32);
            DeviceSlot {
                state: DeviceState::Pending,
                wave: *w,
                stratum: *s,
                last_heard: first.at,
                silent: false,
                rollback_pending: false,
                excluded: false,
                seen_baseline: false,
                seen_updated: false,
            }
        })
        .collect();
    let n_waves = spec.waves.len();
    let per_stratum = || vec![layout.empty_cohort(); strata.len()];
    // Every device starts pending: on the old version, in its stratum's baseline.
    let mut old_now = vec![0u32; strata.len()];
    for s in device_strata {
        old_now[usize::from(*s)] += 1;
    }
    let evidence = RateEvidence::new(&layout);
    Ok(RolloutState {
        old_now,
        new_now: vec![vec![0; strata.len()]; n_waves],
        evidence_whole: vec![evidence.clone(); n_waves],
        evidence: vec![vec![evidence; strata.len()]; n_waves],
        baseline: per_stratum(),
        updated: (0..n_waves).map(|_| per_stratum()).collect(),
        outcomes: vec![vec![OutcomeAgg::default(); strata.len()]; n_waves],
        in_flight: vec![0; n_waves],
        paced: false,
        owed: vec![0; n_waves],
        layout,
        phase: Phase::Draft,
        strata: strata.clone(),
        device_ids: ids.into_iter().map(|(id, _)| id).collect(),
        devices,
        wave_members,
        approvals: Vec::new(),
        created_at: first.at,
        approved_at: None,
        completed_at: None,
        holds: 0,
        looks: 0,
        next_look_at: None,
        overridden: Vec::new(),
        last_failures: Vec::new(),
        last_report: None,
        rollback_pending: 0,
        rollbacks: 0,
        excluded: 0,
        silence_queue: VecDeque::new(),
        chain: chain::ChainState::default(),
        last_at: first.at,
        spec: (**spec).clone(),
    })
}

impl RolloutState {
    fn evaluate(&self, wave: usize) -> GateReport {
        gates::evaluate(&GateInput {
            policy: &self.spec.gates,
            layout: &self.layout,
            strata: &self.strata,
            baseline: &self.baseline,
            updated: &self.updated[wave],
            outcomes: &self.outcomes[wave],
            evidence_whole: &self.evidence_whole[wave],
            evidence: &self.evidence[wave],
            overridden: &self.overridden,
        })
    }

    /// Moves device `i` between the cohort counts after its slot changed from cohort `before`.
    fn recount(&mut self, i: u32, before: Option<bool>) {
        let d = self.devices[i as usize];
        let after = cohort_now(&d);
        if before == after {
            return;
        }
        let (w, s) = (usize::from(d.wave), usize::from(d.stratum));
        match before {
            Some(true) => self.new_now[w][s] = self.new_now[w][s].saturating_sub(1),
            Some(false) => self.old_now[s] = self.old_now[s].saturating_sub(1),
            None => {}
        }
        match after {
            Some(true) => self.new_now[w][s] += 1,
            Some(false) => self.old_now[s] += 1,
            None => {}
        }
    }

    /// Folds the rate events of device `i`'s sample into the running evidence of the wave
    /// being judged: over the whole wave, in the device's stratum, and (for a baseline event)
    /// in every stratum that is compared with the whole baseline.
    ///
    /// The updated cohort's share of the exposure accruing now is taken as its share of the
    /// devices reporting now (not silent), as every device reports at the same pace; events of
    /// a wave's updated devices count only while that wave is the one being judged.
    fn record_evidence(&mut self, i: u32, sample: &HealthSample) {
        let (Phase::Running { wave: current }
        | Phase::Soaking { wave: current, .. }
        | Phase::Paused { wave: current, .. }) = self.phase
        else {
            return;
        };
        let d = self.devices[i as usize];
        let (w, st) = (usize::from(d.wave), usize::from(d.stratum));
        let updated = if d.state.runs_new_version() {
            if w != current {
                return;
            }
            true
        } else if d.state.runs_old_version() {
            false
        } else {
            return;
        };
        let counts = rate_counts(&self.layout, sample);
        // A sample with no events moves only the plug-in test (its exposure), and only for the
        // updated cohort.
        if !updated && counts.iter().all(|(_, k)| *k == 0) {
            return;
        }
        let gates = self.spec.gates.metric_gates();
        let max_ratio = |slot: usize| {
            let name = &self.layout.rate_names[slot];
            gates
                .iter()
                .find(|(n, _, _)| n == name)
                .map_or(1.0, |(_, _, g)| g.max_ratio)
        };
        let ratios: Vec<f64> = (0..self.layout.rate_names.len()).map(max_ratio).collect();
        let share = |n1: u32, n0: u32| {
            let total = f64::from(n1) + f64::from(n0);
            if total > 0.0 {
                f64::from(n1) / total
            } else {
                0.0
            }
        };
        let n1_all: u32 = self.new_now[current].iter().sum();
        let n0_all: u32 = self.old_now.iter().sum();
        let min_own = self.spec.gates.min_stratum_devices;
        let whole_share = share(n1_all, n0_all);
        for &(slot, k) in &counts {
            self.evidence_whole[current].record(slot, updated, k, whole_share, ratios[slot]);
        }
        if updated {
            // The plug-in test: this sample against the tolerated multiple of the baseline's
            // rate as known before it (an upper bound), over the whole wave and the stratum.
            let hours = f64::from(sample.period_secs) / 3600.0;
            let mut all = self.layout.empty_cohort();
            for b in &self.baseline {
                all.add(b);
            }
            let own = &self.baseline[st];
            let base_st = if own.devices >= min_own { own } else { &all };
            for &(slot, k) in &counts {
                let null = |b: &CohortAgg| {
                    gates::stats::rate_upper_bound(b.counts[slot], b.exposure_secs / 3600.0)
                        .map(|u| u * ratios[slot])
                };
                if let Some(n) = null(&all) {
                    self.evidence_whole[current].record_plugin(slot, k, hours, n);
                }
                if let Some(n) = null(base_st) {
                    self.evidence[current][st].record_plugin(slot, k, hours, n);
                }
            }
        }
        for s in 0..self.strata.len() {
            let own = self.old_now[s] >= min_own;
            let counts_here = if updated { s == st } else { s == st || !own };
            let n1 = self.new_now[current][s];
            if !counts_here || n1 == 0 {
                continue;
            }
            let n0 = if own { self.old_now[s] } else { n0_all };
            let stratum_share = share(n1, n0);
            for &(slot, k) in &counts {
                self.evidence[current][s].record(slot, updated, k, stratum_share, ratios[slot]);
            }
        }
    }

    fn device(&self, i: u32) -> Result<DeviceSlot, String> {
        self.devices
            .get(i as usize)
            .copied()
            .ok_or_else(|| format!("device number {i} is out of range"))
    }

    fn wave_index(&self, wave: usize) -> Result<usize, String> {
        if wave < self.spec.waves.len() {
            Ok(wave)
        } else {
            Err(format!("wave {wave} is out of range"))
        }
    }

    /// Notes that device `i` was heard from at `at`, and arms its silence deadline if the
    /// rollout is waiting on it.
    fn heard(&mut self, i: u32, at: Timestamp) {
        let d = &mut self.devices[i as usize];
        d.last_heard = at;
        if d.silent {
            d.silent = false;
            let (w, s) = (usize::from(d.wave), usize::from(d.stratum));
            self.outcomes[w][s].silent = self.outcomes[w][s].silent.saturating_sub(1);
            if d.state.is_in_flight() {
                self.in_flight[w] += 1;
            }
        }
        if d.state.is_in_flight() || d.rollback_pending {
            self.silence_queue
                .push_back((at.plus_secs(self.spec.gates.silent_after_secs), i));
        }
    }

    /// The fold: every state change of a rollout happens here and only here.
    fn apply(&mut self, e: &RolloutEvent) -> Result<(), String> {
        let at = e.at;
        if at < self.last_at {
            return Err("event time runs backwards".into());
        }
        self.last_at = at;
        let every = self.spec.gates.evaluate_every_secs;
        match &e.kind {
            EventKind::Created { .. } => return Err("a second `created` event".into()),
            EventKind::ChainsSet { .. }
            | EventKind::PrerequisiteOffered { .. }
            | EventKind::PrerequisiteConfirmed { .. }
            | EventKind::PrerequisiteFailed { .. }
            | EventKind::ChainCompleted { .. } => self.apply_chain(at, &e.kind)?,
            EventKind::Approval { operator } => self.approvals.push(operator.clone()),
            EventKind::Approved => {
                self.phase = Phase::Approved;
                self.approved_at = Some(at);
            }
            EventKind::WaveStarted { wave } => {
                let w = self.wave_index(*wave)?;
                self.phase = Phase::Running { wave: w };
                self.holds = 0;
                self.looks = 0;
                self.overridden.clear();
                self.next_look_at = Some(at.plus_secs(every));
                let members = self.wave_members[w].clone();
                if self.paced {
                    // Owed, not offered: they wait for `Offered`, and no silence clock runs.
                    let owed = members
                        .iter()
                        .filter(|&&i| {
                            let d = &self.devices[i as usize];
                            d.state == DeviceState::Pending && !d.excluded
                        })
                        .count() as u32;
                    self.owed[w] += owed;
                    self.in_flight[w] += owed;
                    return Ok(());
                }
                for i in members {
                    let d = &self.devices[i as usize];
                    if d.state == DeviceState::Pending && !d.excluded {
                        self.devices[i as usize].state = DeviceState::Offered;
                        let s = usize::from(self.devices[i as usize].stratum);
                        self.outcomes[w][s].offered += 1;
                        self.in_flight[w] += 1;
                        self.heard(i, at);
                    }
                }
            }
            EventKind::OffersPaced { .. } => {
                if self.phase != Phase::Draft && self.phase != Phase::Approved {
                    return Err("offers paced after a wave started".into());
                }
                self.paced = true;
                if self.owed.len() != self.wave_members.len() {
                    self.owed = vec![0; self.wave_members.len()];
                }
            }
            EventKind::Offered { devices } => {
                let Phase::Running { wave } = self.phase else {
                    return Err("offers outside a running wave".into());
                };
                if !self.paced {
                    return Err("offers of a rollout whose offers are not paced".into());
                }
                for &i in devices {
                    let d = self.device(i)?;
                    if usize::from(d.wave) != wave || d.state != DeviceState::Pending || d.excluded
                    {
                        return Err(format!(
                            "device number {i} is not waiting for its offer in wave {wave}"
                        ));
                    }
                    let s = usize::from(d.stratum);
                    self.devices[i as usize].state = DeviceState::Offered;
                    self.outcomes[wave][s].offered += 1;
                    self.owed[wave] = self.owed[wave].saturating_sub(1);
                    self.heard(i, at);
                }
            }
            EventKind::Device { device, state } => {
                let d = self.device(*device)?;
                let before = cohort_now(&d);
                let (w, s) = (usize::from(d.wave), usize::from(d.stratum));
                let from = d.state;
                let to = *state;
                if from != to {
                    count_outcome(&mut self.outcomes[w][s], from, to, d.rollback_pending);
                    if from.is_in_flight() && !to.is_in_flight() && !d.silent {
                        self.in_flight[w] = self.in_flight[w].saturating_sub(1);
                    }
                    let slot = &mut self.devices[*device as usize];
                    slot.state = to;
                    if slot.rollback_pending
                        && matches!(to, DeviceState::Reverted | DeviceState::Failed)
                    {
                        slot.rollback_pending = false;
                        self.rollback_pending = self.rollback_pending.saturating_sub(1);
                    }
                }
                self.heard(*device, at);
                self.recount(*device, before);
            }
            EventKind::Telemetry { device, sample } => {
                let d = self.device(*device)?;
                let before = cohort_now(&d);
                let (w, s) = (usize::from(d.wave), usize::from(d.stratum));
                let slot = &mut self.devices[*device as usize];
                let agg = if d.state.runs_old_version() {
                    if !slot.seen_baseline {
                        slot.seen_baseline = true;
                        self.baseline[s].devices += 1;
                    }
                    Some(&mut self.baseline[s])
                } else if d.state.runs_new_version() {
                    if !slot.seen_updated {
                        slot.seen_updated = true;
                        self.updated[w][s].devices += 1;
                    }
                    Some(&mut self.updated[w][s])
                } else {
                    // Failed and reverted devices belong to neither cohort.
                    None
                };
                if let Some(agg) = agg {
                    add_sample(agg, &self.layout, sample);
                }
                if d.state.is_in_flight() || d.rollback_pending || d.silent {
                    self.heard(*device, at);
                } else {
                    self.devices[*device as usize].last_heard = at;
                }
                self.recount(*device, before);
                self.record_evidence(*device, sample);
            }
            EventKind::DeviceSilent { device } => {
                let d = self.device(*device)?;
                if d.silent {
                    return Err(format!("device number {device} is already silent"));
                }
                let before = cohort_now(&d);
                let (w, s) = (usize::from(d.wave), usize::from(d.stratum));
                self.devices[*device as usize].silent = true;
                self.chain.note_silent(*device);
                self.recount(*device, before);
                self.outcomes[w][s].silent += 1;
                if d.state.is_in_flight() {
                    self.in_flight[w] = self.in_flight[w].saturating_sub(1);
                }
                if d.rollback_pending {
                    self.devices[*device as usize].rollback_pending = false;
                    self.rollback_pending = self.rollback_pending.saturating_sub(1);
                }
            }
            EventKind::SoakStarted { wave, until } => {
                let w = self.wave_index(*wave)?;
                self.phase = Phase::Soaking {
                    wave: w,
                    until: *until,
                };
            }
            EventKind::GateChecked { report, .. } => {
                self.looks += 1;
                self.next_look_at = Some(at.plus_secs(every));
                self.last_failures = report
                    .iter()
                    .flat_map(|r| r.failures())
                    .map(|f| (f.metric.clone(), f.stratum.clone()))
                    .collect();
                self.last_report = report.as_deref().cloned();
            }
            EventKind::SilenceChecked => {
                self.next_look_at = Some(at.plus_secs(every));
            }
            EventKind::SoakExtended { wave, until, .. } => {
                let w = self.wave_index(*wave)?;
                self.holds += 1;
                self.phase = Phase::Soaking {
                    wave: w,
                    until: *until,
                };
            }
            EventKind::WaveCompleted { .. } => {}
            EventKind::Paused { reason, by_gate } => {
                let (wave, soak_until) = match self.phase {
                    Phase::Running { wave } => (wave, None),
                    Phase::Soaking { wave, until } => (wave, Some(until)),
                    _ => return Err("pause outside a running wave".into()),
                };
                self.phase = Phase::Paused {
                    wave,
                    reason: reason.clone(),
                    by_gate: *by_gate,
                    rolled_back: false,
                    soak_until,
                };
            }
            EventKind::Resumed => {
                let Phase::Paused {
                    wave, soak_until, ..
                } = self.phase
                else {
                    return Err("resume outside a pause".into());
                };
                self.phase = match soak_until {
                    Some(until) => Phase::Soaking { wave, until },
                    None => Phase::Running { wave },
                };
                self.next_look_at = Some(at.plus_secs(every));
            }
            EventKind::GateOverridden { findings } => {
                self.overridden.extend(findings.iter().cloned());
            }
            EventKind::RollbackStarted { scope, devices } => {
                self.phase = Phase::RollingBack { scope: *scope };
                self.rollbacks += 1;
                self.next_look_at = Some(at.plus_secs(every));
                for &i in devices {
                    let d = self.device(i)?;
                    if !d.rollback_pending {
                        self.devices[i as usize].rollback_pending = true;
                        self.rollback_pending += 1;
                        if d.silent {
                            // Already silent: nothing to wait for.
                            self.devices[i as usize].rollback_pending = false;
                            self.rollback_pending = self.rollback_pending.saturating_sub(1);
                        } else {
                            self.heard(i, at);
                        }
                    }
                }
            }
            EventKind::RollbackFinished { scope } => {
                self.phase = match scope {
                    RollbackScope::Wave(w) => Phase::Paused {
                        wave: *w,
                        reason: format!(
                            "wave {} rolled back",
                            self.spec.waves.get(*w).map_or("?", |x| x.name.as_str())
                        ),
                        by_gate: true,
                        rolled_back: true,
                        soak_until: None,
                    },
                    RollbackScope::All => Phase::RolledBack,
                };
                self.next_look_at = None;
            }
            EventKind::Completed => {
                self.phase = Phase::Completed;
                self.completed_at = Some(at);
                self.next_look_at = None;
                // Nothing is waited on any more (a replay would keep deadlines a live run
                // had already passed).
                self.silence_queue.clear();
            }
            EventKind::Aborted { reason } => {
                self.phase = Phase::Aborted {
                    reason: reason.clone(),
                };
                self.next_look_at = None;
                self.silence_queue.clear();
            }
            EventKind::Excluded { devices, .. } => {
                for &i in devices {
                    let d = self.device(i)?;
                    if d.state != DeviceState::Pending {
                        return Err(format!("device number {i} was offered already"));
                    }
                    if !d.excluded {
                        self.devices[i as usize].excluded = true;
                        self.excluded += 1;
                        // A paced wave that started owes this device an offer: not any more.
                        let w = usize::from(d.wave);
                        let started = matches!(
                            self.phase,
                            Phase::Running { wave } | Phase::Paused { wave, .. } if wave == w
                        );
                        if self.paced && started && self.owed[w] > 0 {
                            self.owed[w] -= 1;
                            self.in_flight[w] = self.in_flight[w].saturating_sub(1);
                        }
                    }
                }
            }
            EventKind::Continued { .. } => {
                if !matches!(
                    self.phase,
                    Phase::Paused {
                        rolled_back: true,
                        ..
                    }
                ) {
                    return Err("continue outside a rolled-back wave".into());
                }
            }
        }
        Ok(())
    }
}

/// Which cohort a device is in now: `Some(true)` the updated one (new version), `Some(false)`
/// the baseline (old version), `None` neither (failed, reverted, or silent).
fn cohort_now(d: &DeviceSlot) -> Option<bool> {
    if d.silent {
        None
    } else if d.state.runs_new_version() {
        Some(true)
    } else if d.state.runs_old_version() {
        Some(false)
    } else {
        None
    }
}

/// The sample's events per rate slot, as [`add_sample`] counts them.
fn rate_counts(layout: &MetricLayout, s: &HealthSample) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    for (name, count) in [
        ("crash", s.crashes),
        ("reconnect_failure", s.reconnect_failures),
        ("support_contacts", s.support_contacts),
    ] {
        if let Some(slot) = layout.rate_slot(name) {
            out.push((slot, u64::from(count)));
        }
    }
    for (name, v) in &s.custom {
        if let Some(slot) = layout.rate_slot(name) {
            out.push((slot, v.round() as u64));
        }
    }
    out
}

fn add_sample(agg: &mut CohortAgg, layout: &MetricLayout, s: &HealthSample) {
    agg.exposure_secs += f64::from(s.period_secs);
    let fixed = [
        ("crash", s.crashes),
        ("reconnect_failure", s.reconnect_failures),
        ("support_contacts", s.support_contacts),
    ];
    for (name, count) in fixed {
        if let Some(slot) = layout.rate_slot(name) {
            agg.counts[slot] += u64::from(count);
        }
    }
    if let (Some(v), Some(slot)) = (s.reconnect_secs, layout.mean_slot("reconnect_time")) {
        agg.means[slot].add(v);
    }
    if let (Some(v), Some(slot)) = (
        s.battery_drain_pct_per_hour,
        layout.mean_slot("battery_drain"),
    ) {
        agg.means[slot].add(v);
    }
    for (name, v) in &s.custom {
        if let Some(slot) = layout.rate_slot(name) {
            agg.counts[slot] += v.round() as u64;
        } else if let Some(slot) = layout.mean_slot(name) {
            agg.means[slot].add(*v);
        }
    }
}

/// Whether `approvals` (operator names) satisfy the change path of a rollout requested by
/// `requested_by`: on the standard path [`STANDARD_APPROVALS`] distinct approvers other than the
/// requester; on the emergency path the named authoriser and at least one approver other than
/// the requester; on the single-operator path the requester. Names are compared trimmed and
/// without regard to case: `Alice` and `alice` are one person. The one rule, shared by the
/// rollout state machine and by whoever collects approvals before a rollout exists (the
/// server's approval endpoints).
pub fn approvals_satisfy(path: &ChangePath, requested_by: &str, approvals: &[String]) -> bool {
    // Names that differ only by case (or surrounding spaces) are one person: `Alice` does not
    // approve what `alice` requested, nor count twice beside her (issue 16).
    let person = |name: &str| name.trim().to_lowercase();
    let requester = person(requested_by);
    let approvals: Vec<String> = approvals.iter().map(|a| person(a)).collect();
    let mut others: Vec<&str> = approvals
        .iter()
        .map(String::as_str)
        .filter(|a| *a != requester)
        .collect();
    others.sort_unstable();
    others.dedup();
    match path {
        ChangePath::Standard => others.len() >= STANDARD_APPROVALS,
        ChangePath::Emergency { authoriser, .. } => {
            let authoriser = person(authoriser);
            approvals.contains(&authoriser) && !others.is_empty()
        }
        ChangePath::SingleOperator => approvals.contains(&requester),
    }
}

/// Counts a device's move from `from` to `to` in `out` as the proportion gates count it: an
/// install that reached the new version (installed), a confirmed boot (healthy), a failure
/// before or after the reboot (install or boot failure), and a revert after the reboot that no
/// rollback asked for (a boot failure: the device went back by itself). `rollback_pending` is
/// whether a rollback had asked the device back before this move. The state machine's fold and
/// the console's outcome plots both count with this.
pub fn count_outcome(
    out: &mut OutcomeAgg,
    from: DeviceState,
    to: DeviceState,
    rollback_pending: bool,
) {
    if from < DeviceState::Rebooting && matches!(to, DeviceState::Rebooting | DeviceState::Healthy)
    {
        out.installed += 1;
    }
    match to {
        DeviceState::Healthy => out.healthy += 1,
        DeviceState::Failed if from == DeviceState::Rebooting => out.boot_failed += 1,
        DeviceState::Failed if from.is_in_flight() => out.install_failed += 1,
        DeviceState::Reverted if from == DeviceState::Rebooting && !rollback_pending => {
            out.boot_failed += 1;
        }
        _ => {}
    }
}

#[cfg(test)]
mod approval_rule_tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_requester_never_counts_and_approvers_must_be_distinct() {
        let p = ChangePath::Standard;
        assert!(!approvals_satisfy(&p, "dana", &names(&["dana", "alex"])));
        assert!(!approvals_satisfy(&p, "dana", &names(&["alex", "alex"])));
        assert!(approvals_satisfy(&p, "dana", &names(&["alex", "sam"])));
        // Issue 16: names that differ only by case are one person.
        assert!(!approvals_satisfy(&p, "dana", &names(&["Dana", "alex"])));
        assert!(!approvals_satisfy(&p, "dana", &names(&["Alex", "alex "])));
        let e = ChangePath::Emergency {
            authoriser: "erin".into(),
            evidence: "CVE".into(),
            rollback_window_secs: 0,
        };
        assert!(!approvals_satisfy(&e, "dana", &names(&["sam"])));
        assert!(approvals_satisfy(&e, "dana", &names(&["erin"])));
        // An authoriser who requested it still needs someone else.
        assert!(!approvals_satisfy(&e, "erin", &names(&["erin"])));
        assert!(approvals_satisfy(&e, "erin", &names(&["erin", "sam"])));
        assert!(approvals_satisfy(
            &ChangePath::SingleOperator,
            "dana",
            &names(&["dana"])
        ));
    }
}
