//! Which timeline events page someone, and what the page says.
//!
//! [`alert_for`] reads one entry of a rollout's timeline (as [`crate::comms`] does: kind,
//! cause, JSON payload) and says whether it is an alert: a gate pause or rollback, an
//! operator's rollback, an abort, a completion, an engine that let go of a running rollout,
//! devices gone silent. Each alert belongs to an incident (its key groups the pause, the
//! rollback and the resume of one stop), says what happened in plain words first and the
//! statistics second, and says how to open it.
//!
//! What it deliberately is not: a sender or a scheduler. Delivery, retries, deduplication
//! and rate limits live in the app (`app/src/alerts/`); this reads no clock and no files.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::comms::RecordEntry;
use crate::time::Timestamp;

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// What an alert is about. The names are what a channel's `events` list selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A health gate paused the rollout.
    GatePaused,
    /// A health gate rolled a wave back.
    GateRolledBack,
    /// An operator started a rollback.
    RollbackStarted,
    Aborted,
    Completed,
    /// An operator resumed or overrode a stop: an update to the stop's incident.
    Resumed,
    /// The engine let go of a rollout that is not over (stopped, timed out, lost its lease).
    EngineStopped,
    /// Devices of a wave went silent after they were offered the update.
    DevicesSilent,
    /// The engine has been without its broker for longer than its limit (a minute).
    LinkLost,
    /// The engine has its broker again (closes the `link_lost` thread).
    LinkRestored,
    /// A rollout request waits for approval.
    ApprovalWaiting,
    /// Sent by `convoy alerts test`.
    Test,
}

impl AlertKind {
    pub const ALL: [AlertKind; 12] = [
        AlertKind::GatePaused,
        AlertKind::GateRolledBack,
        AlertKind::RollbackStarted,
        AlertKind::Aborted,
        AlertKind::Completed,
        AlertKind::Resumed,
        AlertKind::EngineStopped,
        AlertKind::DevicesSilent,
        AlertKind::LinkLost,
        AlertKind::LinkRestored,
        AlertKind::ApprovalWaiting,
        AlertKind::Test,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::GatePaused => "gate_paused",
            AlertKind::GateRolledBack => "gate_rolled_back",
            AlertKind::RollbackStarted => "rollback_started",
            AlertKind::Aborted => "aborted",
            AlertKind::Completed => "completed",
            AlertKind::Resumed => "resumed",
            AlertKind::EngineStopped => "engine_stopped",
            AlertKind::DevicesSilent => "devices_silent",
            AlertKind::LinkLost => "link_lost",
            AlertKind::LinkRestored => "link_restored",
            AlertKind::ApprovalWaiting => "approval_waiting",
            AlertKind::Test => "test",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One alert: what a person on call reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Alerts with one key are one incident: the first opens it, the rest are updates.
    pub incident: String,
    pub kind: AlertKind,
    pub severity: Severity,
    pub rollout_id: String,
    /// When it happened, on the rollout's clock.
    pub at: Timestamp,
    /// One line: what happened.
    pub title: String,
    /// Plain words: what was seen, against what is normal.
    pub summary: String,
    /// The statistics behind it, one line each.
    pub evidence: Vec<String>,
    /// Whether this alert closes its incident (the rollout resumed, completed or ended).
    pub resolves: bool,
}

/// The incident of a rollout's stops: its pause, rollback, abort and resume are one thread.
pub fn stop_incident(rollout_id: &str) -> String {
    format!("{rollout_id}/stop")
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// A failing finding in plain words, then its statistics.
fn finding_words(f: &Value) -> (String, String) {
    let metric = text(f, "metric");
    let scope = f.get("stratum").and_then(Value::as_str).map_or_else(
        || "devices of the wave".to_owned(),
        |s| format!("{s} devices"),
    );
    let sample = num(f, "sample");
    let observed = num(f, "observed");
    let baseline = num(f, "baseline");
    let p = f.get("p_value").and_then(Value::as_f64).unwrap_or(1.0);
    let stats = format!(
        "{metric} ({scope}): {observed:.2} against a baseline of {baseline:.2}, p = {p:.1e}, {sample:.0} devices"
    );
    let words = match f.get("counts") {
        Some(c) => {
            let events = num(c, "updated_events");
            let hours = num(c, "updated_device_hours");
            let base_rate = num(c, "baseline_events") / num(c, "baseline_device_hours").max(1e-9);
            let expected = base_rate * hours;
            format!(
                "{events:.0} {} on {sample:.0} {scope} in {hours:.1} device-hours; normal would be about {}",
                plural_metric(&metric, events),
                round_expected(expected)
            )
        }
        None => match proportion_words(&metric) {
            Some(what) => format!(
                "{} of {sample:.0} {scope} {what}; normal is about {}",
                percent(observed),
                percent(baseline)
            ),
            None => match metric.as_str() {
                "battery_drain" => format!(
                    "{scope} drain their battery at {observed:.1}% an hour; normal is about {baseline:.1}%"
                ),
                "reconnect_time" => format!(
                    "{scope} take {observed:.0} s to reconnect; normal is about {baseline:.0} s"
                ),
                _ => format!("{metric} on {scope}: {observed:.2}; normal is about {baseline:.2}"),
            },
        },
    };
    (words, stats)
}

/// What a proportion metric's devices did, in words.
fn proportion_words(metric: &str) -> Option<&'static str> {
    Some(match metric {
        "boot_failure" => "failed to boot the new version",
        "install_failure" => "failed to install it",
        "silent" => "went silent after the offer",
        _ => return None,
    })
}

fn percent(p: f64) -> String {
    let pct = p * 100.0;
    if pct >= 10.0 || pct == 0.0 {
        format!("{pct:.0}%")
    } else {
        format!("{pct:.1}%")
    }
}

fn plural_metric(metric: &str, n: f64) -> String {
    let one = (n - 1.0).abs() < f64::EPSILON;
    match metric {
        "crash" | "crash_rate" | "crashes" => (if one { "crash" } else { "crashes" }).to_owned(),
        "reconnect_failures" | "reconnect_failure" => (if one {
            "failed reconnect"
        } else {
            "failed reconnects"
        })
        .to_owned(),
        "support_contacts" => (if one {
            "support contact"
        } else {
            "support contacts"
        })
        .to_owned(),
        other => format!("{other} events"),
    }
}

fn round_expected(x: f64) -> String {
    if x < 0.5 {
        "0".to_owned()
    } else if x < 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// The alert `entry` of `rollout_id`'s timeline raises, if any.
pub fn alert_for(rollout_id: &str, entry: &RecordEntry) -> Option<Alert> {
    let p = &entry.payload;
    let base = |kind, severity, incident: String, title: String, summary: String| Alert {
        incident,
        kind,
        severity,
        rollout_id: rollout_id.to_owned(),
        at: entry.at,
        title,
        summary,
        evidence: Vec::new(),
        resolves: false,
    };
    match entry.kind.as_str() {
        "gate.decision" => {
            let outcome = text(p, "outcome");
            if outcome == "hold" || outcome == "continue" {
                // A hold extends the soak; nothing has stopped.
                return None;
            }
            let wave = text(p, "wave");
            let findings: Vec<&Value> = p
                .get("report")
                .and_then(|r| r.get("findings"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter(|f| text(f, "status") == "fail").collect())
                .unwrap_or_default();
            let (words, stats): (Vec<String>, Vec<String>) =
                findings.iter().map(|f| finding_words(f)).unzip();
            let (kind, verb) = if outcome.contains("roll") {
                (AlertKind::GateRolledBack, "rolled back")
            } else {
                (AlertKind::GatePaused, "paused")
            };
            let mut a = base(
                kind,
                Severity::Critical,
                stop_incident(rollout_id),
                format!("Rollout {rollout_id} {verb} by a health gate in wave {wave}"),
                if words.is_empty() {
                    format!("A health gate {verb} wave {wave}.")
                } else {
                    format!("{}.", words.join("; "))
                },
            );
            a.evidence = stats;
            Some(a)
        }
        "rollback.started" if entry.cause != "gate" => Some(base(
            AlertKind::RollbackStarted,
            Severity::Warning,
            stop_incident(rollout_id),
            format!("Rollout {rollout_id}: rollback started by {}", entry.cause),
            format!(
                "{} asked devices to return to their previous version.",
                entry.cause
            ),
        )),
        "rollout.aborted" => {
            let reason = p
                .get("aborted")
                .map(|a| text(a, "reason"))
                .unwrap_or_default();
            let mut a = base(
                AlertKind::Aborted,
                Severity::Warning,
                stop_incident(rollout_id),
                format!("Rollout {rollout_id} aborted by {}", entry.cause),
                format!("Aborted: {reason}."),
            );
            a.resolves = true;
            Some(a)
        }
        "rollout.resumed" | "gate.overridden" => {
            let mut a = base(
                AlertKind::Resumed,
                Severity::Info,
                stop_incident(rollout_id),
                format!("Rollout {rollout_id} resumed by {}", entry.cause),
                if entry.kind == "gate.overridden" {
                    format!("{} overrode the gate that stopped it.", entry.cause)
                } else {
                    format!("{} resumed it.", entry.cause)
                },
            );
            a.resolves = true;
            Some(a)
        }
        "rollout.completed" => {
            let mut a = base(
                AlertKind::Completed,
                Severity::Info,
                format!("{rollout_id}/done"),
                format!("Rollout {rollout_id} completed"),
                "Every wave completed and passed its health gates.".to_owned(),
            );
            a.resolves = true;
            Some(a)
        }
        "link.lost" => Some(base(
            AlertKind::LinkLost,
            Severity::Critical,
            format!("{rollout_id}/link"),
            format!("The engine of rollout {rollout_id} lost its broker"),
            format!(
                "No connection to the broker for {} s ({}): no command reaches the devices and no report of theirs reaches the gates until it returns.",
                p.get("for_secs").and_then(Value::as_u64).unwrap_or(0),
                text(p, "why")
            ),
        )),
        "link.restored" => {
            let mut a = base(
                AlertKind::LinkRestored,
                Severity::Info,
                format!("{rollout_id}/link"),
                format!("The engine of rollout {rollout_id} has its broker again"),
                "The broker connection is back; unacknowledged commands are sent again.".to_owned(),
            );
            a.resolves = true;
            Some(a)
        }
        "engine.stopped" => {
            let state = text(p, "final_state");
            Some(base(
                AlertKind::EngineStopped,
                if state == "paused" {
                    Severity::Warning
                } else {
                    Severity::Critical
                },
                format!("{rollout_id}/engine"),
                format!("The engine of rollout {rollout_id} stopped ({state})"),
                format!(
                    "The engine let go of rollout {rollout_id} before it was over ({state}); nothing watches its devices until an engine resumes it (`convoy rollout run --resume`)."
                ),
            ))
        }
        _ => None,
    }
}

/// The alert for `silent` devices of `wave` gone quiet after their offer (the caller counts
/// `device.silent` entries per wave; one alert per wave, updates as the count grows).
pub fn silent_alert(rollout_id: &str, wave: &str, silent: u64, at: Timestamp) -> Alert {
    Alert {
        incident: format!("{rollout_id}/silent/{wave}"),
        kind: AlertKind::DevicesSilent,
        severity: Severity::Warning,
        rollout_id: rollout_id.to_owned(),
        at,
        title: format!("Rollout {rollout_id}: {silent} devices silent in wave {wave}"),
        summary: format!(
            "{silent} devices of wave {wave} have not been heard from since they were offered the update."
        ),
        evidence: Vec::new(),
        resolves: false,
    }
}

/// The alert for a request that waits for approval.
pub fn approval_alert(
    rollout_id: &str,
    release_id: &str,
    requested_by: &str,
    at: Timestamp,
) -> Alert {
    Alert {
        incident: format!("{rollout_id}/approval"),
        kind: AlertKind::ApprovalWaiting,
        severity: Severity::Info,
        rollout_id: rollout_id.to_owned(),
        at,
        title: format!("Rollout {rollout_id} of {release_id} waits for approval"),
        summary: format!(
            "{requested_by} asked to roll out {release_id}; it needs its approvals before it can be dispatched."
        ),
        evidence: Vec::new(),
        resolves: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(kind: &str, cause: &str, payload: Value) -> RecordEntry {
        RecordEntry {
            at: Timestamp(1_800_000_000),
            kind: kind.into(),
            cause: cause.into(),
            payload,
        }
    }

    #[test]
    fn a_gate_pause_says_what_was_seen_in_plain_words_then_the_statistics() {
        let e = entry(
            "gate.decision",
            "gate",
            json!({"wave": "canary", "outcome": "pause", "report": {"findings": [
                {"metric": "crash", "stratum": "T300/C", "status": "fail", "observed": 650.0,
                 "baseline": 0.9, "p_value": 4.9e-16, "sample": 5,
                 "counts": {"updated_events": 13, "updated_device_hours": 20.0,
                            "baseline_events": 3, "baseline_device_hours": 3300.0}},
                {"metric": "battery", "status": "pass"}
            ]}}),
        );
        let a = alert_for("ro-1", &e).expect("a gate stop alerts");
        assert_eq!(a.kind, AlertKind::GatePaused);
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.incident, "ro-1/stop");
        assert_eq!(
            a.title,
            "Rollout ro-1 paused by a health gate in wave canary"
        );
        assert_eq!(
            a.summary,
            "13 crashes on 5 T300/C devices in 20.0 device-hours; normal would be about 0."
        );
        assert_eq!(a.evidence.len(), 1, "passing findings are not evidence");
        assert!(a.evidence[0].contains("p = 4.9e-16"), "{:?}", a.evidence);
    }

    #[test]
    fn a_proportion_reads_as_a_share_of_devices() {
        let e = entry(
            "gate.decision",
            "gate",
            json!({"wave": "canary", "outcome": "roll_back_wave", "report": {"findings": [
                {"metric": "boot_failure", "stratum": "T300/C", "status": "fail", "observed": 1.0,
                 "baseline": 0.01, "p_value": 1e-9, "sample": 5}]}}),
        );
        let a = alert_for("ro-1", &e).expect("alerts");
        assert_eq!(
            a.summary,
            "100% of 5 T300/C devices failed to boot the new version; normal is about 1.0%."
        );
    }

    #[test]
    fn a_stop_its_rollback_and_its_resume_are_one_incident() {
        let pause = entry(
            "gate.decision",
            "gate",
            json!({"wave": "w1", "outcome": "roll_back_wave"}),
        );
        let rollback = entry("rollback.started", "dana: crash loop", json!({}));
        let resume = entry("rollout.resumed", "dana", json!({}));
        let a: Vec<Alert> = [pause, rollback, resume]
            .iter()
            .filter_map(|e| alert_for("ro-2", e))
            .collect();
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|x| x.incident == "ro-2/stop"));
        assert_eq!(a[0].kind, AlertKind::GateRolledBack);
        assert!(a[2].resolves);
    }

    #[test]
    fn a_lost_broker_and_its_return_are_one_incident() {
        let lost = alert_for(
            "r9",
            &entry(
                "link.lost",
                "engine",
                json!({"for_secs": 61, "why": "connection refused"}),
            ),
        )
        .expect("alerts");
        assert_eq!(
            (lost.kind, lost.severity),
            (AlertKind::LinkLost, Severity::Critical)
        );
        assert!(
            lost.summary.contains("61 s (connection refused)"),
            "{}",
            lost.summary
        );
        let back = alert_for("r9", &entry("link.restored", "engine", json!({}))).expect("alerts");
        assert_eq!(back.incident, lost.incident);
        assert!(back.resolves);
    }

    #[test]
    fn routine_events_do_not_alert() {
        for kind in [
            "wave.started",
            "soak.started",
            "approval",
            "rollout.created",
        ] {
            assert!(
                alert_for("ro", &entry(kind, "timer", json!({}))).is_none(),
                "{kind}"
            );
        }
        // A rollback the gate started is already the gate decision's alert.
        assert!(alert_for("ro", &entry("rollback.started", "gate", json!({}))).is_none());
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(AlertKind::parse("gate-paused"), None);
    }
}
