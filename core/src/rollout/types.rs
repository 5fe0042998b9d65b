//! The data of a rollout: its spec, inputs from devices, events, phases and actions.
//!
//! Plain serde types only; the behaviour is in [`super::Rollout`].

use crate::gates::{GateOutcome, GatePolicy, GateReport};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// One wave of a rollout: who gets the update, and how long to watch them afterwards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveSpec {
    pub name: String,
    pub device_ids: Vec<String>,
    /// How long the wave is watched after its last device finished (or went silent).
    pub soak_secs: i64,
}

/// The prerequisite chain of one wave: the releases each of its devices installs, in order,
/// before the rollout's target (the planner's `after-prerequisites-N` waves).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveChain {
    pub wave: usize,
    pub releases: Vec<String>,
}

/// The change-control path a rollout was requested on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangePath {
    /// Two distinct named approvers other than the requester.
    Standard,
    /// Break-glass: the named authoriser must approve, and someone other than the requester
    /// must be among the approvers. Gates still apply.
    Emergency {
        authoriser: String,
        /// Why this cannot wait (incident id, CVE, measurements).
        evidence: String,
        /// How long after completion the whole rollout can still be rolled back.
        rollback_window_secs: i64,
    },
    /// One named operator requests and approves alone: what `convoy rollout run` does when no
    /// separate approvers are given. Recorded as such in the event log and every report, so a
    /// reviewer sees that no second person approved. Gates still apply.
    SingleOperator,
}

/// What a rollout is: fixed before it starts and signed with the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub id: String,
    pub release_id: String,
    /// The operator who requested the change.
    pub requested_by: String,
    pub waves: Vec<WaveSpec>,
    #[serde(default)]
    pub gates: GatePolicy,
    pub path: ChangePath,
}

/// Where one device is in its update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Pending,
    Offered,
    Downloading,
    Verified,
    Installing,
    Rebooting,
    /// Confirmed healthy on the new version.
    Healthy,
    Failed,
    /// Back on the previous slot (automatic revert or a rollback).
    Reverted,
}

impl DeviceState {
    /// Finished with the update one way or another.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Healthy | Self::Failed | Self::Reverted)
    }

    /// Offered and not finished: the rollout is waiting to hear from it.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            Self::Offered | Self::Downloading | Self::Verified | Self::Installing | Self::Rebooting
        )
    }

    /// Runs the old software: its telemetry is baseline.
    pub fn runs_old_version(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Offered | Self::Downloading | Self::Verified | Self::Installing
        )
    }

    /// Runs the new software: its telemetry is the updated cohort.
    pub fn runs_new_version(self) -> bool {
        matches!(self, Self::Rebooting | Self::Healthy)
    }
}

/// A device's report of its update state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceReport {
    pub device_id: String,
    pub state: DeviceState,
}

/// Health numbers a device reports for a period; what the gates judge.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSample {
    /// The length of the period these numbers cover.
    pub period_secs: u32,
    pub crashes: u32,
    pub reconnect_failures: u32,
    pub support_contacts: u32,
    /// Mean time to reconnect in the period, if it reconnected.
    pub reconnect_secs: Option<f64>,
    pub battery_drain_pct_per_hour: Option<f64>,
    /// User-defined metrics by name: a count for rate metrics, a value for mean metrics.
    /// Names the policy does not gate are ignored (devices may report more than is gated).
    pub custom: Vec<(String, f64)>,
}

/// A device's health telemetry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TelemetryReport {
    pub device_id: String,
    pub sample: HealthSample,
}

/// What a rollback covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackScope {
    /// The devices of one wave (by index).
    Wave(usize),
    /// Every device the rollout touched.
    All,
}

/// Where the rollout as a whole is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Created; collecting approvals.
    Draft,
    /// Approved; the first wave starts at the next timeout.
    Approved,
    /// Devices of `wave` are being offered and installing.
    Running {
        wave: usize,
    },
    /// Every device of `wave` finished or went silent; watching until `until`.
    Soaking {
        wave: usize,
        until: Timestamp,
    },
    /// Stopped by a gate or an operator.
    Paused {
        wave: usize,
        reason: String,
        /// Stopped by a gate: only `override_gate` with a reason resumes it.
        by_gate: bool,
        /// The wave was rolled back: it cannot be resumed, only rolled back further or aborted.
        rolled_back: bool,
        /// The soak end to resume to, if it was soaking.
        soak_until: Option<Timestamp>,
    },
    RollingBack {
        scope: RollbackScope,
    },
    Completed,
    /// The whole rollout was rolled back.
    RolledBack,
    Aborted {
        reason: String,
    },
}

/// Who or what caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Operator {
        name: String,
        reason: String,
    },
    /// A device's own report (by index into the rollout's sorted device ids).
    Device(u32),
    /// A gate evaluation.
    Gate,
    /// Time passing: a soak ending, a device going silent.
    Timer,
}

/// How a wave ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveSummary {
    pub healthy: u32,
    pub failed: u32,
    pub reverted: u32,
    /// Devices never heard from to the end of the soak, sorted by id: reported, not waited on.
    pub silent_device_ids: Vec<String>,
    /// Whole-wave gates that never reached their minimum sample.
    pub not_judged: Vec<String>,
    /// Whole-wave gates still trending worse after the last hold but short of their level: a
    /// trend never pauses by itself, so the wave completed, and these are on the record for
    /// whoever reads the timeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unconfirmed_trends: Vec<String>,
}

/// Everything that happened to a rollout; the state is a fold over these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created {
        spec: Box<RolloutSpec>,
        /// Stratum names, sorted.
        strata: Vec<String>,
        /// The stratum index of each device, in sorted device-id order.
        device_strata: Vec<u16>,
    },
    Approval {
        operator: String,
    },
    Approved,
    WaveStarted {
        wave: usize,
    },
    /// From here on a started wave's devices stay `Pending` until the caller offers them
    /// ([`super::Rollout::offer`]): the engine paces its offers by the plan's schedule. A wave
    /// is still running until every one of its devices has been offered and has finished.
    OffersPaced {
        schedule: Box<crate::plan::pacing::OfferSchedule>,
    },
    /// The caller offered these devices (numbers, ascending) of the running wave.
    Offered {
        devices: Vec<u32>,
    },
    Device {
        device: u32,
        state: DeviceState,
    },
    Telemetry {
        device: u32,
        sample: Box<HealthSample>,
    },
    DeviceSilent {
        device: u32,
    },
    SoakStarted {
        wave: usize,
        until: Timestamp,
    },
    /// One gate evaluation. The report is kept when it has findings.
    GateChecked {
        wave: usize,
        outcome: GateOutcome,
        report: Option<Box<GateReport>>,
    },
    /// A periodic check for silent devices while rolling back.
    SilenceChecked,
    /// The soak of `wave` was extended: a whole-wave gate was trending worse or short of its
    /// minimum sample. The report says which (absent in records written before it was kept).
    SoakExtended {
        wave: usize,
        until: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report: Option<Box<GateReport>>,
    },
    WaveCompleted {
        wave: usize,
        summary: Box<WaveSummary>,
    },
    Paused {
        reason: String,
        by_gate: bool,
    },
    Resumed,
    GateOverridden {
        /// The overridden (metric, stratum) findings; `None` covers every stratum.
        findings: Vec<(String, Option<String>)>,
    },
    RollbackStarted {
        scope: RollbackScope,
        /// Device indices asked to roll back, ascending (so sorted by id).
        devices: Vec<u32>,
    },
    RollbackFinished {
        scope: RollbackScope,
    },
    Completed,
    Aborted {
        reason: String,
    },
    /// An operator took devices out of the rest of the rollout: they are never offered. Only
    /// devices not offered yet are excluded (those already updated stay where they are; a
    /// rollback moves them). `what` is the selector as the operator wrote it.
    Excluded {
        what: String,
        /// Device indices newly excluded, ascending.
        devices: Vec<u32>,
    },
    /// An operator continued past `wave`, which was rolled back: the next wave with devices
    /// left starts (or the rollout completes).
    Continued {
        wave: usize,
    },
    /// Prerequisite chains (`super::chain`): each device of these waves installs its wave's
    /// releases in order, each confirmed before the next, then the target. Recorded once,
    /// before the first wave.
    ChainsSet {
        chains: Vec<WaveChain>,
    },
    /// The caller offered these devices (numbers, ascending) the prerequisite `release`, the
    /// next of their wave's chain.
    PrerequisiteOffered {
        devices: Vec<u32>,
        release: String,
    },
    /// The device confirmed the prerequisite `release` (installed, booted, healthy): its next
    /// step is due.
    PrerequisiteConfirmed {
        device: u32,
        release: String,
    },
    /// The prerequisite `release` failed on the device (install failure, revert, refused
    /// offer, silence): it stops there, and a `Device` event marks it failed for its wave's
    /// gates. `device_id` names it on the timeline.
    PrerequisiteFailed {
        device: u32,
        device_id: String,
        release: String,
        reason: String,
    },
    /// Every prerequisite of these devices (numbers, ascending) is confirmed: the caller
    /// offered them the target.
    ChainCompleted {
        devices: Vec<u32>,
    },
}

/// One event: when, why, what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutEvent {
    pub at: Timestamp,
    pub cause: Cause,
    pub kind: EventKind,
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutAction {
    /// Offer the release to these devices (sorted by id).
    Offer {
        wave: usize,
        device_ids: Vec<String>,
    },
    /// Stop offering; tell the operators why.
    Pause(String),
    /// Send a rollback command to these devices (sorted by id).
    RollBack {
        scope: RollbackScope,
        device_ids: Vec<String>,
    },
    /// Something operators should hear about (a gate decision, a wave done, completion).
    Notify(String),
}

/// The operator commands, for asking which the rollout would accept now
/// ([`super::Rollout::permits`]) before sending one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Pause,
    Resume,
    OverrideGate,
    RollBackWave,
    RollBackAll,
    Abort,
    Exclude,
    Continue,
}

impl Command {
    pub const ALL: [Command; 8] = [
        Self::Pause,
        Self::Resume,
        Self::OverrideGate,
        Self::RollBackWave,
        Self::RollBackAll,
        Self::Abort,
        Self::Exclude,
        Self::Continue,
    ];

    /// The command in words, as an error names it.
    pub fn words(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::OverrideGate => "override the gate",
            Self::RollBackWave => "roll back the wave",
            Self::RollBackAll => "roll back everything",
            Self::Abort => "abort",
            Self::Exclude => "exclude devices",
            Self::Continue => "continue with the next wave",
        }
    }
}

/// What is wrong with a rollout input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RolloutError {
    /// The spec is unusable; `field` names the part.
    #[error("invalid rollout spec: {why} in {field}")]
    InvalidSpec { field: String, why: String },
    /// A report or telemetry named a device that is not in this rollout.
    #[error("device is not in this rollout: {0}")]
    UnknownDevice(String),
    /// A device reported a state it cannot reach from where it is.
    #[error("device cannot go from {from:?} to {to:?}: {device}")]
    BadTransition {
        from: DeviceState,
        to: DeviceState,
        device: String,
    },
    /// An operator command that does not apply in the current phase; `why` says so in words
    /// and names what would work instead.
    #[error("{command} is not allowed while the rollout is {phase}: {why}")]
    NotAllowed {
        command: String,
        phase: String,
        why: String,
    },
    /// An exclusion that matched no device still waiting for the release.
    #[error("nothing to exclude: {0}")]
    NothingToExclude(String),
    /// An operator command without the operator name or reason it needs.
    #[error("{command} needs {what}")]
    Missing { command: String, what: String },
    /// The same operator approved twice.
    #[error("operator already approved this rollout: {0}")]
    DuplicateApproval(String),
    /// An event log that does not describe a rollout.
    #[error("event {index} of the log is invalid: {why}")]
    BadLog { index: usize, why: String },
    /// A telemetry value that is not a finite non-negative number.
    #[error("telemetry value {field} is not a finite non-negative number for device {device}")]
    BadTelemetry { field: String, device: String },
}
