//! A rollout event as the timeline records it: the kind's name (`wave.started`) and its JSON
//! payload, which `convoy rollout timeline` exports and [`crate::comms`] reads back.
//!
//! One definition, so what the engine writes and what the drafts read cannot drift apart. It
//! is not the engine's log (the full [`RolloutEvent`]s, replayed for metrics) and it skips
//! what would drown a reader: raw telemetry, routine silence checks, per-device states (those
//! go to each device's own history) and gate looks that let the rollout continue.

use super::{Cause, ChangePath, EventKind, RolloutEvent};
use crate::gates::GateOutcome;
use serde_json::{Value, json};

/// The timeline's name of an event kind.
pub fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Created { .. } => "rollout.created",
        EventKind::Approval { .. } => "approval",
        EventKind::Approved => "rollout.approved",
        EventKind::WaveStarted { .. } => "wave.started",
        EventKind::OffersPaced { .. } => "offers.paced",
        EventKind::Offered { .. } => "offers.sent",
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
        EventKind::Excluded { .. } => "devices.excluded",
        EventKind::Continued { .. } => "rollout.continued",
        EventKind::ChainsSet { .. } => "prerequisites.set",
        EventKind::PrerequisiteOffered { .. } => "prerequisite.offered",
        EventKind::PrerequisiteConfirmed { .. } => "prerequisite.confirmed",
        EventKind::PrerequisiteFailed { .. } => "prerequisite.failed",
        EventKind::ChainCompleted { .. } => "prerequisites.done",
    }
}

/// The change path in the timeline's words.
pub fn path_name(path: &ChangePath) -> &'static str {
    match path {
        ChangePath::Standard => "standard",
        ChangePath::Emergency { .. } => "emergency",
        ChangePath::SingleOperator => "single operator",
    }
}

/// The timeline entry of `kind` (name and payload), or `None` for what the timeline skips.
/// `wave_name` names a wave by its index (a gate decision records the wave's name).
pub fn entry(
    kind: &EventKind,
    wave_name: impl Fn(usize) -> String,
) -> Option<(&'static str, Value)> {
    let payload = match kind {
        // Paced offers are on the timeline as the engine's `rollout.offer` decisions (with
        // the wave's name) and its `schedule.waiting` entries; per-device lists stay in the log.
        EventKind::Telemetry { .. }
        | EventKind::SilenceChecked
        | EventKind::Device { .. }
        | EventKind::PrerequisiteConfirmed { .. }
        | EventKind::Offered { .. } => {
            return None;
        }
        EventKind::GateChecked {
            outcome: GateOutcome::Continue,
            ..
        } => return None,
        EventKind::GateChecked {
            wave,
            outcome,
            report,
        } => {
            let evidence = serde_json::to_value(report).unwrap_or_default();
            return Some((
                "gate.decision",
                json!({"wave": wave_name(*wave), "outcome": outcome, "report": evidence}),
            ));
        }
        // The spec's device lists are in the cache already; the timeline gets the shape.
        EventKind::Created { spec, strata, .. } => json!({
            "release": spec.release_id,
            "requested_by": spec.requested_by,
            "path": path_name(&spec.path),
            "waves": spec.waves.iter().map(|w| json!({
                "name": w.name, "devices": w.device_ids.len(), "soak_secs": w.soak_secs,
            })).collect::<Vec<_>>(),
            "strata": strata,
        }),
        // The device list can be long; the count and the selector tell the story.
        EventKind::Excluded { what, devices } => json!({
            "what": what, "devices": devices.len(),
        }),
        EventKind::Continued { wave } => json!({"after_rolled_back_wave": wave_name(*wave)}),
        // Chains by wave name; a stop names its device, release and reason. Per-device offers
        // and confirmations go to each device's history (and the log), as device states do;
        // the timeline keeps their counts.
        EventKind::ChainsSet { chains } => json!({
            "chains": chains.iter().map(|c| json!({
                "wave": wave_name(c.wave), "releases": c.releases,
            })).collect::<Vec<_>>(),
        }),
        EventKind::PrerequisiteOffered { devices, release } => json!({
            "release": release, "devices": devices.len(),
        }),
        EventKind::PrerequisiteFailed {
            device_id,
            release,
            reason,
            ..
        } => json!({"device": device_id, "release": release, "reason": reason}),
        EventKind::ChainCompleted { devices } => json!({"devices": devices.len()}),
        kind => serde_json::to_value(kind).unwrap_or_default(),
    };
    Some((kind_name(kind), payload))
}

/// Who or what caused an event, in the timeline's words (`device_ids` names a device cause).
pub fn cause_text(cause: &Cause, device_ids: &[String]) -> String {
    match cause {
        Cause::Operator { name, reason } if reason.is_empty() => name.clone(),
        Cause::Operator { name, reason } => format!("{name}: {reason}"),
        Cause::Device(i) => device_ids.get(*i as usize).cloned().unwrap_or_default(),
        Cause::Gate => "gate".into(),
        Cause::Timer => "timer".into(),
    }
}

/// The record [`crate::comms::story`] reads, from a rollout's whole event log.
pub fn record(
    events: &[RolloutEvent],
    wave_names: &[String],
    device_ids: &[String],
) -> Vec<crate::comms::RecordEntry> {
    let name = |i: usize| {
        wave_names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("wave {i}"))
    };
    events
        .iter()
        .filter_map(|e| {
            entry(&e.kind, name).map(|(kind, payload)| crate::comms::RecordEntry {
                at: e.at,
                kind: kind.to_owned(),
                cause: cause_text(&e.cause, device_ids),
                payload,
            })
        })
        .collect()
}
