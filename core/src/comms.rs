//! Communication drafts written from a rollout's record: what happened, told three ways.
//!
//! [`story`] reads a rollout's timeline (the entries `convoy rollout timeline` exports: time,
//! kind, cause, payload) into a [`RolloutStory`] of plain facts: who asked and who approved, each
//! wave with its outcome, every gate stop with its evidence, holds, pauses, overrides,
//! rollbacks and how it ended. [`draft`] then writes that story for one [`Audience`]:
//! - internal: release and rollout ids, the gate evidence with its raw counts, rollback
//!   triggers and the chronology, for the engineers who fix it;
//! - customer: impact, what the customer must do, and the resolution, in plain words;
//! - regulator: the chronology, the affected population and the corrective evidence.
//!
//! [`support_tree`] writes a support decision tree for the symptoms the record shows.
//!
//! What it deliberately is not: an author. It states only what the record holds; what the
//! record cannot know (the root cause in the code, the customer's name, a contact address) is
//! left as a marked gap, `[to fill: ...]`, never invented. It reads no clock and no files.

use std::fmt::Write as _;

use serde_json::Value;

use crate::rollout::{DeviceState, RolloutState};
use crate::time::Timestamp;

/// One entry of a rollout's timeline, as the cache stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordEntry {
    pub at: Timestamp,
    /// `rollout.created`, `wave.started`, `gate.decision`, ...
    pub kind: String,
    pub cause: String,
    pub payload: Value,
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommsError {
    /// The record has no entries at all.
    #[error("rollout {0} has no recorded events")]
    Empty(String),
    /// The record does not start with the rollout's creation.
    #[error("rollout {rollout}: the first recorded event is `{kind}`, not `rollout.created`")]
    NoCreation { rollout: String, kind: String },
}

/// Who a draft is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    Internal,
    Customer,
    Regulator,
}

/// One wave as the record tells it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WaveStory {
    pub name: String,
    pub devices: u64,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub healthy: u64,
    pub failed: u64,
    pub reverted: u64,
    pub silent: u64,
    /// Offered and not finished (downloading, installing, rebooting): known only from the
    /// device states ([`RolloutStory::count_from_states`]); 0 from wave summaries.
    pub in_flight: u64,
    /// Whole-wave gates that never had enough data.
    pub not_judged: Vec<String>,
    /// Trends recorded but below the pause level.
    pub unconfirmed_trends: Vec<String>,
}

/// A gate stop (pause or rollback) with its failing findings, one line each.
#[derive(Clone, Debug, PartialEq)]
pub struct GateStop {
    pub at: Timestamp,
    pub wave: String,
    pub outcome: String,
    pub findings: Vec<String>,
    /// The metrics that failed, for the support tree.
    pub metrics: Vec<String>,
    /// The failing findings' figures, in the order of `findings` (the war room words them
    /// plainly: "6 crashes on 5 T300 rev C devices ...; normal is about 0").
    pub figures: Vec<FindingFigures>,
}

/// One failing finding's figures as the gate recorded them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FindingFigures {
    pub metric: String,
    /// `None` for the whole wave, else the stratum (`T300/C`).
    pub stratum: Option<String>,
    pub observed: f64,
    pub baseline: f64,
    pub p_value: f64,
    /// Devices behind `observed`.
    pub sample: u64,
    /// For rate metrics: updated events, updated device-hours, baseline events, baseline
    /// device-hours.
    pub counts: Option<(u64, f64, u64, f64)>,
}

fn figures(f: &Value) -> FindingFigures {
    let float = |v: &Value, key: &str| v.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    FindingFigures {
        metric: text(f, "metric"),
        stratum: f.get("stratum").and_then(Value::as_str).map(str::to_owned),
        observed: float(f, "observed"),
        baseline: float(f, "baseline"),
        p_value: f.get("p_value").and_then(Value::as_f64).unwrap_or(1.0),
        sample: num(f, "sample"),
        counts: f.get("counts").map(|c| {
            (
                num(c, "updated_events"),
                float(c, "updated_device_hours"),
                num(c, "baseline_events"),
                float(c, "baseline_device_hours"),
            )
        }),
    }
}

/// How the rollout ended, if it has.
#[derive(Clone, Debug, PartialEq)]
pub enum Ending {
    Completed(Timestamp),
    RolledBack(Timestamp),
    Aborted(Timestamp, String),
}

/// The facts of one rollout, read from its record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutStory {
    pub rollout_id: String,
    pub release_id: String,
    pub requested_by: String,
    pub path: String,
    pub created_at: Timestamp,
    pub approvers: Vec<String>,
    pub approved_at: Option<Timestamp>,
    pub waves: Vec<WaveStory>,
    pub stops: Vec<GateStop>,
    pub holds: u64,
    /// (time, reason) of every pause, by a gate or an operator.
    pub pauses: Vec<(Timestamp, String)>,
    /// (time, who and why) of every gate override.
    pub overrides: Vec<(Timestamp, String)>,
    /// (time, scope, devices asked to go back) of every rollback.
    pub rollbacks: Vec<(Timestamp, String, u64)>,
    pub ending: Option<Ending>,
    /// The entries worth a line in a chronology: (time, what, cause).
    pub chronology: Vec<(Timestamp, String, String)>,
    /// Where the device counts come from.
    pub counts: CountSource,
    /// The finding the rollout remediates and the request's pre-deployment checklist, from
    /// its request (issue 20); `None` for a rollout without a request.
    pub remediation: Option<RemediationFacts>,
    /// (release, device, reason) of every device stopped at a prerequisite (chains).
    pub prerequisite_stops: Vec<(String, String, String)>,
}

/// What a rollout's request says about the finding it remediates and its checklist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemediationFacts {
    pub finding_id: Option<String>,
    /// The shape the finding's tier proposed and the one chosen (`emergency`, ...), and who
    /// changed it, if anyone did.
    pub proposed_shape: Option<String>,
    pub chosen_shape: Option<String>,
    pub shape_changed_by: Option<String>,
    pub checklist: Option<crate::risk::Checklist>,
}

/// Where a story's device counts come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CountSource {
    /// The summaries the timeline records when a wave completes: a wave that was stopped,
    /// rolled back or aborted before it completed has none, so its devices count as 0.
    #[default]
    WaveSummaries,
    /// Every device's state, replayed from the engine's log: the same counts as the
    /// rollout's metrics, whatever state the rollout ended in.
    DeviceStates,
}

impl RolloutStory {
    /// Devices that took the release and kept it.
    pub fn updated(&self) -> u64 {
        self.waves.iter().map(|w| w.healthy).sum()
    }

    /// Devices whose update failed or was reverted: they run their previous version.
    pub fn reverted_or_failed(&self) -> u64 {
        self.waves.iter().map(|w| w.failed + w.reverted).sum()
    }

    /// Devices in waves that started.
    pub fn offered(&self) -> u64 {
        self.waves
            .iter()
            .filter(|w| w.started_at.is_some())
            .map(|w| w.devices)
            .sum()
    }

    /// Devices offered the update that have not finished with it.
    pub fn in_flight(&self) -> u64 {
        self.waves.iter().map(|w| w.in_flight).sum()
    }

    /// Takes the device counts of every wave from the rollout's replayed `state` (its device
    /// states), not from the timeline's wave summaries, which exist only for waves that
    /// completed. A draft must never understate the affected population: a canary rolled
    /// back mid-wave has reverted devices and no summary.
    pub fn count_from_states(&mut self, state: &RolloutState) {
        for w in &mut self.waves {
            w.healthy = 0;
            w.failed = 0;
            w.reverted = 0;
            w.silent = 0;
            w.in_flight = 0;
        }
        for d in &state.devices {
            let Some(w) = self.waves.get_mut(usize::from(d.wave)) else {
                continue;
            };
            match d.state {
                DeviceState::Healthy => w.healthy += 1,
                DeviceState::Failed => w.failed += 1,
                DeviceState::Reverted => w.reverted += 1,
                s if s.is_in_flight() => w.in_flight += 1,
                _ => {}
            }
            if d.silent {
                w.silent += 1;
            }
        }
        self.counts = CountSource::DeviceStates;
    }

    /// One sentence saying where the counts come from, for the drafts.
    fn counts_note(&self) -> &'static str {
        match self.counts {
            CountSource::DeviceStates => {
                "Device counts are every device's state replayed from the engine's log."
            }
            CountSource::WaveSummaries => {
                "Device counts are the wave summaries recorded when a wave completed; the engine's log was not available, so devices of a wave that did not complete are not counted."
            }
        }
    }

    /// Devices planned in all waves.
    pub fn planned(&self) -> u64 {
        self.waves.iter().map(|w| w.devices).sum()
    }

    fn state_words(&self) -> &'static str {
        match (&self.ending, self.stops.is_empty(), self.pauses.is_empty()) {
            (Some(Ending::Completed(_)), ..) => "completed",
            (Some(Ending::RolledBack(_)), ..) => "rolled back",
            (Some(Ending::Aborted(..)), ..) => "aborted",
            (None, false, _) => "stopped by a health gate",
            (None, true, false) => "paused",
            (None, true, true) => "in progress",
        }
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn list(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The wave index an event names, under its variant key (`{"wave_started": {"wave": 0}}`).
fn wave_of(payload: &Value, variant: &str) -> Option<usize> {
    payload
        .get(variant)
        .and_then(|v| v.get("wave"))
        .and_then(Value::as_u64)
        .and_then(|w| usize::try_from(w).ok())
}

/// One finding of a gate report as a line: metric, scope, observed vs baseline, p, counts.
fn finding_line(f: &Value) -> String {
    let scope = f
        .get("stratum")
        .and_then(Value::as_str)
        .map_or_else(|| "whole wave".to_owned(), |s| format!("stratum {s}"));
    let observed = f.get("observed").and_then(Value::as_f64).unwrap_or(0.0);
    let baseline = f.get("baseline").and_then(Value::as_f64).unwrap_or(0.0);
    let p = f.get("p_value").and_then(Value::as_f64).unwrap_or(1.0);
    let mut line = format!(
        "{} ({scope}): {observed:.2} against a baseline of {baseline:.2}, p = {p:.2e}, {} devices",
        text(f, "metric"),
        num(f, "sample")
    );
    if let Some(c) = f.get("counts") {
        let _ = write!(
            line,
            " ({} events in {:.1} device-hours; baseline {} in {:.1})",
            num(c, "updated_events"),
            c.get("updated_device_hours")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            num(c, "baseline_events"),
            c.get("baseline_device_hours")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        );
    }
    line
}

/// Reads a rollout's record into its story. Unknown kinds are kept in the chronology only.
pub fn story(rollout_id: &str, entries: &[RecordEntry]) -> Result<RolloutStory, CommsError> {
    let first = entries
        .first()
        .ok_or_else(|| CommsError::Empty(rollout_id.to_owned()))?;
    if first.kind != "rollout.created" {
        return Err(CommsError::NoCreation {
            rollout: rollout_id.to_owned(),
            kind: first.kind.clone(),
        });
    }
    let created = &first.payload;
    let mut story = RolloutStory {
        rollout_id: rollout_id.to_owned(),
        release_id: text(created, "release"),
        requested_by: text(created, "requested_by"),
        path: text(created, "path"),
        created_at: first.at,
        waves: created
            .get("waves")
            .and_then(Value::as_array)
            .map(|ws| {
                ws.iter()
                    .map(|w| WaveStory {
                        name: text(w, "name"),
                        devices: num(w, "devices"),
                        ..WaveStory::default()
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ..RolloutStory::default()
    };
    let wave_name = |st: &RolloutStory, i: usize| {
        st.waves
            .get(i)
            .map_or_else(|| format!("wave {i}"), |w| w.name.clone())
    };
    for e in entries {
        let payload = &e.payload;
        let line: Option<String> = match e.kind.as_str() {
            "rollout.created" => Some(format!(
                "rollout {} of release {} requested by {} ({} path)",
                story.rollout_id, story.release_id, story.requested_by, story.path
            )),
            "approval" => {
                let who = payload
                    .get("approval")
                    .map(|a| text(a, "operator"))
                    .unwrap_or_default();
                story.approvers.push(who.clone());
                Some(format!("approved by {who}"))
            }
            "rollout.approved" => {
                story.approved_at = Some(e.at);
                Some("approvals complete".to_owned())
            }
            "wave.started" => wave_of(payload, "wave_started").map(|i| {
                if let Some(w) = story.waves.get_mut(i) {
                    w.started_at = Some(e.at);
                }
                format!("wave {} started", wave_name(&story, i))
            }),
            "wave.completed" => wave_of(payload, "wave_completed").map(|i| {
                let sum = payload
                    .get("wave_completed")
                    .and_then(|v| v.get("summary"))
                    .cloned()
                    .unwrap_or(Value::Null);
                if let Some(w) = story.waves.get_mut(i) {
                    w.completed_at = Some(e.at);
                    w.healthy = num(&sum, "healthy");
                    w.failed = num(&sum, "failed");
                    w.reverted = num(&sum, "reverted");
                    w.silent = list(&sum, "silent_device_ids").len() as u64;
                    w.not_judged = list(&sum, "not_judged");
                    w.unconfirmed_trends = list(&sum, "unconfirmed_trends");
                }
                format!(
                    "wave {} completed: {} healthy, {} failed, {} reverted",
                    wave_name(&story, i),
                    num(&sum, "healthy"),
                    num(&sum, "failed"),
                    num(&sum, "reverted")
                )
            }),
            "gate.decision" => {
                let findings: Vec<&Value> = payload
                    .get("report")
                    .and_then(|r| r.get("findings"))
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter(|f| text(f, "status") == "fail").collect())
                    .unwrap_or_default();
                let stop = GateStop {
                    at: e.at,
                    wave: text(payload, "wave"),
                    outcome: text(payload, "outcome").replace('_', " "),
                    findings: findings.iter().map(|f| finding_line(f)).collect(),
                    metrics: findings.iter().map(|f| text(f, "metric")).collect(),
                    figures: findings.iter().map(|f| figures(f)).collect(),
                };
                let line = format!(
                    "health gate in wave {}: {} ({})",
                    stop.wave,
                    stop.outcome,
                    stop.findings.join("; ")
                );
                story.stops.push(stop);
                Some(line)
            }
            "soak.started" => wave_of(payload, "soak_started").map(|i| {
                let until = payload
                    .get("soak_started")
                    .and_then(|v| v.get("until"))
                    .and_then(Value::as_i64)
                    .map_or_else(String::new, |t| format!(" until {}", Timestamp(t)));
                format!(
                    "wave {} installed; watching its health{until}",
                    wave_name(&story, i)
                )
            }),
            "soak.extended" => {
                story.holds += 1;
                None
            }
            "rollout.paused" => {
                let reason = payload
                    .get("paused")
                    .map(|v| text(v, "reason"))
                    .unwrap_or_default();
                story.pauses.push((e.at, reason.clone()));
                Some(format!("paused: {reason}"))
            }
            "rollout.resumed" => Some(format!("resumed ({})", e.cause)),
            "gate.overridden" => {
                story.overrides.push((e.at, e.cause.clone()));
                Some(format!("gate overridden ({})", e.cause))
            }
            "rollback.started" => {
                let rb = payload
                    .get("rollback_started")
                    .cloned()
                    .unwrap_or(Value::Null);
                let scope = match rb.get("scope") {
                    Some(Value::String(x)) => x.clone(),
                    Some(Value::Object(o)) => o
                        .iter()
                        .next()
                        .map(|(k, n)| {
                            let wave = n.as_u64().and_then(|n| usize::try_from(n).ok());
                            match (k.as_str(), wave) {
                                ("wave", Some(i)) => format!("wave {}", wave_name(&story, i)),
                                _ => k.clone(),
                            }
                        })
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                let devices = rb
                    .get("devices")
                    .and_then(Value::as_array)
                    .map_or(0, |d| d.len() as u64);
                story.rollbacks.push((e.at, scope.clone(), devices));
                Some(format!(
                    "rollback of {scope} started: {devices} devices asked to go back"
                ))
            }
            "rollback.finished" => Some("rollback finished".to_owned()),
            "rollout.completed" => {
                story.ending = Some(Ending::Completed(e.at));
                Some("rollout completed".to_owned())
            }
            "rollout.aborted" => {
                let reason = payload
                    .get("aborted")
                    .map(|v| text(v, "reason"))
                    .unwrap_or_default();
                story.ending = Some(Ending::Aborted(e.at, reason.clone()));
                Some(format!("rollout aborted: {reason}"))
            }
            "prerequisite.failed" => {
                let (release, device) = (text(payload, "release"), text(payload, "device"));
                let reason = text(payload, "reason");
                let line = format!("device {device} stopped at prerequisite {release}: {reason}");
                story.prerequisite_stops.push((release, device, reason));
                Some(line)
            }
            "prerequisite.offered" => Some(format!(
                "prerequisite {} offered to {} device(s)",
                text(payload, "release"),
                num(payload, "devices")
            )),
            "prerequisites.done" => Some(format!(
                "{} device(s) offered the release after their prerequisites",
                num(payload, "devices")
            )),
            "notify" => None,
            other => Some(other.to_owned()),
        };
        if let Some(line) = line {
            story.chronology.push((e.at, line, e.cause.clone()));
        }
    }
    // A rollback of everything that finished ends the rollout.
    if story.ending.is_none()
        && story.rollbacks.iter().any(|(_, scope, _)| scope == "all")
        && let Some((at, ..)) = story
            .chronology
            .iter()
            .rev()
            .find(|(_, l, _)| l == "rollback finished")
    {
        story.ending = Some(Ending::RolledBack(*at));
    }
    Ok(story)
}

fn fill(what: &str) -> String {
    format!("[to fill: {what}]")
}

/// Writes the draft for `audience` as Markdown.
pub fn draft(s: &RolloutStory, audience: Audience) -> String {
    match audience {
        Audience::Internal => internal(s),
        Audience::Customer => customer(s),
        Audience::Regulator => regulator(s),
    }
}

fn internal(s: &RolloutStory) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Internal: rollout {} of {} ({})\n",
        s.rollout_id,
        s.release_id,
        s.state_words()
    );
    let _ = writeln!(
        out,
        "- Requested by {} on the {} path at {}; approved by {}.",
        s.requested_by,
        s.path,
        s.created_at,
        if s.approvers.is_empty() {
            "nobody yet".to_owned()
        } else {
            s.approvers.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "- Devices: {} planned, {} offered, {} updated and healthy, {} failed or reverted, {} still updating. {}",
        s.planned(),
        s.offered(),
        s.updated(),
        s.reverted_or_failed(),
        s.in_flight(),
        s.counts_note()
    );
    let _ = writeln!(out, "- Soak holds: {}.", s.holds);
    out.push_str("\n## Rollback triggers\n\n");
    if s.stops.is_empty() {
        out.push_str("No health gate stopped this rollout.\n");
    }
    for stop in &s.stops {
        let _ = writeln!(out, "- {} in wave {}: {}", stop.at, stop.wave, stop.outcome);
        for f in &stop.findings {
            let _ = writeln!(out, "  - {f}");
        }
    }
    for (at, scope, devices) in &s.rollbacks {
        let _ = writeln!(out, "- {at}: rollback of {scope}, {devices} devices.");
    }
    for (at, why) in &s.overrides {
        let _ = writeln!(out, "- {at}: gate overridden by {why}.");
    }
    prerequisite_stops(&mut out, s);
    let trends: Vec<&String> = s.waves.iter().flat_map(|w| &w.unconfirmed_trends).collect();
    if !trends.is_empty() {
        out.push_str("\nTrends recorded below the pause level (not stops):\n");
        for t in trends {
            let _ = writeln!(out, "- {t}");
        }
    }
    let _ = writeln!(
        out,
        "\n## Root cause\n\n{}\n",
        fill("what in the release caused it; the gate evidence above says where it showed")
    );
    out.push_str("## Waves\n\n| wave | devices | healthy | failed | reverted | still updating | silent |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for w in &s.waves {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            w.name, w.devices, w.healthy, w.failed, w.reverted, w.in_flight, w.silent
        );
    }
    out.push_str("\n## Chronology\n\n");
    chronology(&mut out, s);
    out
}

/// "Stopped at prerequisite X: N devices (ids)", one line per release, in the order seen.
fn prerequisite_stops(out: &mut String, s: &RolloutStory) {
    let mut releases: Vec<&str> = Vec::new();
    for (r, _, _) in &s.prerequisite_stops {
        if !releases.contains(&r.as_str()) {
            releases.push(r);
        }
    }
    for r in releases {
        let devices: Vec<&str> = s
            .prerequisite_stops
            .iter()
            .filter(|(x, _, _)| x == r)
            .map(|(_, d, _)| d.as_str())
            .collect();
        let _ = writeln!(
            out,
            "- Stopped at prerequisite {r}: {} device(s) ({}).",
            devices.len(),
            devices.join(", ")
        );
    }
}

fn customer(s: &RolloutStory) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Software update {}: status\n", s.release_id);
    let _ = writeln!(out, "Dear {},\n", fill("customer name"));
    out.push_str("## What happened\n\n");
    match (&s.ending, s.stops.first()) {
        (Some(Ending::Completed(at)), _) => {
            let _ = writeln!(
                out,
                "The update reached {} devices and finished on {at}. Each stage was watched for crashes, failed restarts, connection problems and battery use before the next began.",
                s.updated()
            );
        }
        (_, Some(stop)) => {
            let _ = writeln!(
                out,
                "On {}, our automatic health checks found a problem in the {} stage of the update and {} it before it went further. {} of {} devices had been offered the update.",
                stop.at,
                stop.wave,
                if stop.outcome.contains("roll back") {
                    "reversed"
                } else {
                    "paused"
                },
                s.offered(),
                s.planned()
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "The update is in progress: {} of {} devices have it so far.",
                s.updated(),
                s.planned()
            );
        }
    }
    out.push_str("\n## Impact on your devices\n\n");
    let back = s.reverted_or_failed();
    if back > 0 {
        let _ = writeln!(
            out,
            "{back} devices returned to their previous software by themselves; they keep working as before the update."
        );
    } else {
        out.push_str("No device had to return to its previous software.\n");
    }
    let _ = writeln!(
        out,
        "{}\n",
        fill("effect on the customer's operations, if any")
    );
    out.push_str("## What you need to do\n\n");
    if s.stops.is_empty() {
        out.push_str("Nothing: devices update by themselves in their maintenance windows.\n");
    } else {
        out.push_str("Nothing for now: affected devices are back on their previous software. Keep them powered and connected so they receive the corrected update.\n");
    }
    out.push_str("\n## Resolution\n\n");
    if matches!(s.ending, Some(Ending::Completed(_))) {
        out.push_str("The update is complete.\n");
    } else if !s.stops.is_empty() {
        let _ = writeln!(out, "{}", fill("when the corrected release is expected"));
    } else {
        out.push_str("We will write again when the update is complete.\n");
    }
    let _ = writeln!(out, "\nQuestions: {}", fill("support contact"));
    out
}

fn regulator(s: &RolloutStory) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Report on software rollout {} (release {})\n",
        s.rollout_id, s.release_id
    );
    let _ = writeln!(
        out,
        "Prepared from the rollout's recorded timeline (hash-chained audit trail in the operator's cache); times are UTC. Status: {}.\n",
        s.state_words()
    );
    out.push_str("## Chronology\n\n");
    chronology(&mut out, s);
    out.push_str("\n## Affected population\n\n");
    let _ = writeln!(
        out,
        "- Planned: {} devices in {} stages; offered: {}; updated and healthy: {}; failed or reverted to the previous version: {}; still updating: {}.",
        s.planned(),
        s.waves.len(),
        s.offered(),
        s.updated(),
        s.reverted_or_failed(),
        s.in_flight()
    );
    let _ = writeln!(out, "- {}", s.counts_note());
    let silent: u64 = s.waves.iter().map(|w| w.silent).sum();
    let _ = writeln!(
        out,
        "- Devices not heard from by the end of their stage: {silent}."
    );
    out.push_str("\n## Controls and corrective evidence\n\n");
    let _ = writeln!(
        out,
        "- Approval: {} path; requested by {}; approved by {}.",
        s.path,
        s.requested_by,
        s.approvers.join(", ")
    );
    if s.stops.is_empty() {
        out.push_str("- No health gate stopped the rollout.\n");
    }
    for stop in &s.stops {
        let _ = writeln!(
            out,
            "- {}: automatic health gate in stage {} decided: {}. Evidence:",
            stop.at, stop.wave, stop.outcome
        );
        for f in &stop.findings {
            let _ = writeln!(out, "  - {f}");
        }
    }
    for (at, scope, devices) in &s.rollbacks {
        let _ = writeln!(
            out,
            "- {at}: {devices} devices of {scope} instructed to return to their previous version."
        );
    }
    for (at, why) in &s.overrides {
        let _ = writeln!(out, "- {at}: a gate was overridden by {why}.");
    }
    if let Some(r) = &s.remediation {
        regulator_remediation(&mut out, r);
    }
    let _ = writeln!(
        out,
        "\n{}",
        fill("root cause analysis and the corrective release, with its own rollout record")
    );
    out
}

/// The regulator draft's lines on the finding remediated and the pre-deployment checklist.
fn regulator_remediation(out: &mut String, r: &RemediationFacts) {
    if let Some(f) = &r.finding_id {
        let _ = write!(out, "- Remediates finding {f}");
        if let (Some(p), Some(c)) = (&r.proposed_shape, &r.chosen_shape) {
            if p == c {
                let _ = write!(out, "; rollout shape {c}, as its tier proposed");
            } else {
                let by = r.shape_changed_by.as_deref().unwrap_or("the requester");
                let _ = write!(out, "; its tier proposed {p}, {by} chose {c}");
            }
        }
        out.push_str(".\n");
    }
    match &r.checklist {
        Some(c) if !c.is_empty() => {
            out.push_str("- Pre-deployment checklist:\n");
            for (item, text) in c.items() {
                let text = if text.trim().is_empty() {
                    "(not given)".to_owned()
                } else {
                    text.replace('\n', " ")
                };
                let _ = writeln!(out, "  - {}: {text}", item.replace('_', " "));
            }
        }
        _ => out.push_str("- Pre-deployment checklist: none recorded with the request.\n"),
    }
}

fn chronology(out: &mut String, s: &RolloutStory) {
    for (at, what, cause) in &s.chronology {
        let _ = writeln!(out, "- {at}: {what} (cause: {cause})");
    }
}

/// A support decision tree for the symptoms this rollout's record shows (Markdown).
pub fn support_tree(s: &RolloutStory) -> String {
    let mut metrics: Vec<&str> = s
        .stops
        .iter()
        .flat_map(|st| st.metrics.iter().map(String::as_str))
        .collect();
    metrics.sort_unstable();
    metrics.dedup();
    let mut out = format!(
        "# Support decision tree: release {}\n\n1. Is the device on release {}? (device view, or the firmware version on its status screen)\n   - No: it never took the update or went back to its previous version by itself; it needs no action for this release.\n   - Yes: go to 2.\n",
        s.release_id, s.release_id
    );
    let mut step = 2;
    for m in &metrics {
        let (symptom, action) = match *m {
            "crash" | "boot_failure" => (
                "restarting by itself, or not starting",
                "leave it powered: a device that fails its health checks returns to its previous version on its own; if it is still restarting after an hour, escalate with its id",
            ),
            "reconnect_failure" | "reconnect_time" => (
                "losing its connection, or slow to reconnect",
                "check the site's network first; if other devices there are fine, escalate with its id and the times it dropped",
            ),
            "battery_drain" => (
                "draining its battery faster than before",
                "keep it on charge; escalate with its id and its battery readings",
            ),
            "install_failure" => (
                "reporting a failed update",
                "nothing on site: it keeps its previous version; it will be offered the corrected release",
            ),
            "silent" => (
                "not reporting at all",
                "check power and connectivity on site; escalate with its id if it is powered and connected",
            ),
            _ => ("showing this rollout's problem", "escalate with its id"),
        };
        let _ = writeln!(
            out,
            "{step}. Is it {symptom}? (the health gate stopped this rollout on `{m}`)\n   - Yes: {action}.\n   - No: go to {}.",
            step + 1
        );
        step += 1;
    }
    let _ = writeln!(
        out,
        "{step}. {}: handle it as a usual support case and note the release id and the device id.",
        if metrics.is_empty() {
            "No health gate stopped this release"
        } else {
            "None of the above"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: Timestamp = Timestamp(1_795_392_000);

    fn entry(secs: i64, kind: &str, cause: &str, payload: Value) -> RecordEntry {
        RecordEntry {
            at: T0.plus_secs(secs),
            kind: kind.into(),
            cause: cause.into(),
            payload,
        }
    }

    /// A rollout whose canary was rolled back by the boot-failure gate on the T300/C stratum.
    fn stopped() -> Vec<RecordEntry> {
        vec![
            entry(
                0,
                "rollout.created",
                "alice: created",
                json!({"release": "t300-2.5.0", "requested_by": "alice", "path": "standard",
                       "waves": [{"name": "canary", "devices": 50, "soak_secs": 3600},
                                 {"name": "fleet", "devices": 950, "soak_secs": 3600}]}),
            ),
            entry(
                1,
                "approval",
                "bob: ok",
                json!({"approval": {"operator": "bob"}}),
            ),
            entry(
                2,
                "approval",
                "carol: ok",
                json!({"approval": {"operator": "carol"}}),
            ),
            entry(2, "rollout.approved", "carol", json!("approved")),
            entry(
                60,
                "wave.started",
                "timer",
                json!({"wave_started": {"wave": 0}}),
            ),
            entry(
                900,
                "gate.decision",
                "gate",
                json!({"wave": "canary", "outcome": "roll_back_wave", "report": {"findings": [
                    {"metric": "boot_failure", "stratum": "T300/C", "status": "fail", "observed": 1.0,
                     "baseline": 0.005, "p_value": 1e-10, "sample": 5},
                    {"metric": "crash", "stratum": null, "status": "trending", "observed": 40.0,
                     "baseline": 9.0, "p_value": 0.03, "sample": 50,
                     "counts": {"updated_events": 4, "updated_device_hours": 100.0,
                                "baseline_events": 9, "baseline_device_hours": 1000.0}}]}}),
            ),
            entry(
                900,
                "rollback.started",
                "gate",
                json!({"rollback_started": {"scope": {"wave": 0}, "devices": [3, 9, 17, 21, 40]}}),
            ),
            entry(
                1500,
                "wave.completed",
                "gate",
                json!({"wave_completed": {"wave": 0, "summary": {"healthy": 45, "failed": 0,
                       "reverted": 5, "silent_device_ids": [], "not_judged": []}}}),
            ),
        ]
    }

    #[test]
    fn the_story_has_the_facts_of_the_record() {
        let s = story("r1", &stopped()).expect("story");
        assert_eq!(s.release_id, "t300-2.5.0");
        assert_eq!(s.approvers, vec!["bob", "carol"]);
        assert_eq!(s.approved_at, Some(T0.plus_secs(2)));
        assert_eq!((s.planned(), s.offered(), s.updated()), (1000, 50, 45));
        assert_eq!(s.reverted_or_failed(), 5);
        assert_eq!(s.stops.len(), 1);
        assert_eq!(s.stops[0].outcome, "roll back wave");
        // Only the failing finding is a trigger; the trending one is not.
        assert_eq!(s.stops[0].metrics, vec!["boot_failure"]);
        assert_eq!(
            s.rollbacks,
            vec![(T0.plus_secs(900), "wave canary".to_owned(), 5)]
        );
        assert_eq!(s.ending, None);
        assert_eq!(s.state_words(), "stopped by a health gate");
    }

    #[test]
    fn devices_stopped_at_a_prerequisite_are_named_and_counted_in_the_internal_draft() {
        let mut entries = stopped();
        for (device, reason) in [
            ("CV7", "install failed: writing slot b did not verify"),
            ("CV9", "timed out"),
        ] {
            entries.push(entry(
                1000,
                "prerequisite.failed",
                device,
                json!({"device": device, "release": "t300-bl-2.0.1", "reason": reason}),
            ));
        }
        let s = story("r1", &entries).expect("story");
        assert_eq!(s.prerequisite_stops.len(), 2);
        let text = draft(&s, Audience::Internal);
        assert!(
            text.contains("Stopped at prerequisite t300-bl-2.0.1: 2 device(s) (CV7, CV9)."),
            "{text}"
        );
        assert!(
            text.contains("device CV7 stopped at prerequisite t300-bl-2.0.1: install failed"),
            "{text}"
        );
    }

    #[test]
    fn each_audience_gets_its_layer_and_nothing_is_invented() {
        let s = story("r1", &stopped()).expect("story");
        let internal = draft(&s, Audience::Internal);
        assert!(internal.contains("boot_failure (stratum T300/C): 1.00 against a baseline of 0.01, p = 1.00e-10, 5 devices"), "{internal}");
        assert!(
            internal.contains("rollback of wave canary, 5 devices"),
            "{internal}"
        );
        assert!(
            internal.contains("[to fill: what in the release caused it"),
            "{internal}"
        );
        let customer = draft(&s, Audience::Customer);
        assert!(
            customer.contains("found a problem in the canary stage"),
            "{customer}"
        );
        assert!(customer.contains("reversed it"), "{customer}");
        assert!(
            customer.contains("5 devices returned to their previous software"),
            "{customer}"
        );
        assert!(
            !customer.contains("p ="),
            "no statistics for customers: {customer}"
        );
        assert!(customer.contains("[to fill: customer name]"));
        let regulator = draft(&s, Audience::Regulator);
        assert!(
            regulator.contains("Planned: 1000 devices in 2 stages; offered: 50"),
            "{regulator}"
        );
        assert!(regulator.contains("approved by bob, carol"), "{regulator}");
        assert!(
            regulator.contains("5 devices of wave canary instructed to return"),
            "{regulator}"
        );
        // The chronology is in record order with causes.
        let a = regulator.find("wave canary started").expect("start");
        let b = regulator.find("health gate in wave canary").expect("gate");
        assert!(a < b);
    }

    #[test]
    fn a_completed_rollout_reads_as_completed_and_the_tree_has_no_symptom_steps() {
        let mut e = stopped();
        e.truncate(5);
        e.push(entry(
            5000,
            "wave.completed",
            "gate",
            json!({"wave_completed": {"wave": 0, "summary": {"healthy": 50, "failed": 0,
                   "reverted": 0, "silent_device_ids": [], "not_judged": [],
                   "unconfirmed_trends": ["crash all 40.0000 vs baseline 9.0000 (p=3.00e-2, n=50)"]}}}),
        ));
        e.push(entry(
            5001,
            "rollout.completed",
            "timer",
            json!("completed"),
        ));
        let s = story("r1", &e).expect("story");
        assert_eq!(s.ending, Some(Ending::Completed(T0.plus_secs(5001))));
        let internal = draft(&s, Audience::Internal);
        assert!(internal.contains("No health gate stopped this rollout."));
        assert!(
            internal.contains("crash all 40.0000"),
            "trend on record: {internal}"
        );
        let customer = draft(&s, Audience::Customer);
        assert!(
            customer.contains("The update reached 50 devices"),
            "{customer}"
        );
        let tree = support_tree(&s);
        assert!(tree.starts_with("# Support decision tree: release t300-2.5.0"));
        assert!(
            tree.contains("2. No health gate stopped this release"),
            "{tree}"
        );
        assert!(customer.contains("The update is complete."), "{customer}");
    }

    #[test]
    fn the_support_tree_asks_about_the_symptoms_that_stopped_the_rollout() {
        let s = story("r1", &stopped()).expect("story");
        let tree = support_tree(&s);
        assert!(tree.contains("2. Is it restarting by itself, or not starting? (the health gate stopped this rollout on `boot_failure`)"), "{tree}");
        assert!(tree.contains("3. None of the above"), "{tree}");
    }

    #[test]
    fn a_record_that_does_not_start_with_creation_is_refused() {
        assert_eq!(story("r9", &[]), Err(CommsError::Empty("r9".into())));
        let e = stopped();
        assert_eq!(
            story("r1", &e[1..]),
            Err(CommsError::NoCreation {
                rollout: "r1".into(),
                kind: "approval".into()
            })
        );
    }
}

/// Every terminal state's drafts against the rollout's metrics: the counts a draft states are
/// the counts of the replayed devices, never the wave summaries alone (issue 19: a canary
/// rolled back mid-wave has reverted devices and no summary, and the drafts said 0).
#[cfg(test)]
mod count_tests {
    use super::*;
    use crate::metrics::rollout_metrics;
    use crate::rollout::sim::{Fault, FaultKind, SimConfig, SimFleet};
    use crate::rollout::{
        ChangePath, Phase, RollbackScope, Rollout, RolloutSpec, WaveSpec, timeline,
    };
    use crate::synth::{SynthOptions, generate};

    const START: Timestamp = Timestamp(1_800_000_000);

    fn simulate(faults: Vec<Fault>, stop: impl FnOnce(&mut Rollout, &mut SimFleet)) -> Rollout {
        let fleet = generate(&SynthOptions {
            devices: 300,
            seed: 11,
            now: START,
        });
        let mut ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
        ids.sort();
        let spec = RolloutSpec {
            id: "ro-drafts".into(),
            release_id: "t300-2.6.0".into(),
            requested_by: "alice".into(),
            waves: vec![
                WaveSpec {
                    name: "canary".into(),
                    device_ids: ids[..60].to_vec(),
                    soak_secs: 3_600,
                },
                WaveSpec {
                    name: "fleet".into(),
                    device_ids: ids[60..].to_vec(),
                    soak_secs: 3_600,
                },
            ],
            gates: crate::gates::GatePolicy::default(),
            path: ChangePath::Standard,
        };
        let mut rollout = Rollout::new(START, spec, &fleet).expect("a valid spec");
        rollout.approve(START, "bob").expect("approval");
        rollout.approve(START, "carol").expect("approval");
        let config = SimConfig {
            faults,
            ..SimConfig::default()
        };
        let mut sim = SimFleet::new(&fleet, &rollout, config, START);
        sim.run(&mut rollout, START, START.plus_secs(10 * 86_400));
        stop(&mut rollout, &mut sim);
        rollout
    }

    fn crash_loop() -> Vec<Fault> {
        vec![Fault {
            attribute: None,
            kind: FaultKind::CrashLoop,
        }]
    }

    /// The story as the drafts read it: the timeline record, then the replayed device states.
    fn stories(rollout: &Rollout) -> (RolloutStory, RolloutStory) {
        let state = rollout.state();
        let names: Vec<String> = state.spec.waves.iter().map(|w| w.name.clone()).collect();
        let entries = timeline::record(rollout.events(), &names, &state.device_ids);
        let summaries = story("ro-drafts", &entries).expect("a record that starts with creation");
        let mut counted = summaries.clone();
        counted.count_from_states(state);
        (summaries, counted)
    }

    fn assert_drafts_match_metrics(rollout: &Rollout) -> RolloutStory {
        let m = rollout_metrics(rollout);
        let (_, s) = stories(rollout);
        assert_eq!(s.counts, CountSource::DeviceStates);
        assert_eq!(s.updated(), m.healthy, "healthy");
        assert_eq!(
            s.reverted_or_failed(),
            m.failed + m.reverted,
            "failed or reverted"
        );
        assert_eq!(
            s.waves.iter().map(|w| w.silent).sum::<u64>(),
            m.silent,
            "silent"
        );
        let harm = format!("{} failed or reverted", m.failed + m.reverted);
        assert!(
            draft(&s, Audience::Internal).contains(&harm),
            "internal draft"
        );
        let regulator = draft(&s, Audience::Regulator);
        assert!(
            regulator.contains(&format!(
                "failed or reverted to the previous version: {}",
                m.failed + m.reverted
            )),
            "{regulator}"
        );
        let reverted: u64 = s.waves.iter().map(|w| w.reverted).sum();
        assert_eq!(reverted, m.reverted, "the wave table's reverted column");
        s
    }

    #[test]
    fn a_completed_rollout_s_drafts_state_the_metrics_counts() {
        let rollout = simulate(Vec::new(), |_, _| {});
        assert_eq!(rollout.phase(), &Phase::Completed);
        let s = assert_drafts_match_metrics(&rollout);
        assert_eq!(s.updated(), rollout_metrics(&rollout).healthy);
        assert!(s.updated() > 250, "most devices confirm: {}", s.updated());
    }

    #[test]
    fn a_canary_paused_by_a_gate_states_its_reverted_devices_which_the_summaries_miss() {
        let rollout = simulate(crash_loop(), |_, _| {});
        assert!(
            matches!(rollout.phase(), Phase::Paused { wave: 0, .. }),
            "{:?}",
            rollout.phase()
        );
        let m = rollout_metrics(&rollout);
        assert!(
            m.failed + m.reverted > 0,
            "crash-looping devices revert: {m:?}"
        );
        // The bug: the wave never completed, so the summaries say nobody was harmed.
        let (summaries, _) = stories(&rollout);
        assert_eq!(summaries.reverted_or_failed(), 0);
        assert!(
            summaries.counts_note().contains("not counted"),
            "a summaries-only story says what it cannot count"
        );
        assert_drafts_match_metrics(&rollout);
    }

    fn rolled_back(scope: RollbackScope) -> Rollout {
        simulate(crash_loop(), |rollout, sim| {
            let at = rollout.state().last_at;
            // The gate may have rolled the canary back already (then only `All` is left).
            let command = match scope {
                RollbackScope::All => crate::rollout::Command::RollBackAll,
                RollbackScope::Wave(_) => crate::rollout::Command::RollBackWave,
            };
            if rollout.permits(command, at).is_ok() {
                rollout
                    .roll_back(at, "dana", scope, "crash loop on the canary")
                    .expect("a paused canary can be rolled back");
            }
            sim.run(rollout, at, at.plus_secs(10 * 86_400));
        })
    }

    #[test]
    fn a_rolled_back_canary_wave_s_drafts_state_every_reverted_device() {
        let rollout = rolled_back(RollbackScope::Wave(0));
        assert!(
            matches!(
                rollout.phase(),
                Phase::Paused {
                    rolled_back: true,
                    ..
                }
            ),
            "{:?}",
            rollout.phase()
        );
        let s = assert_drafts_match_metrics(&rollout);
        assert!(s.reverted_or_failed() >= 55, "{s:?}");
    }

    #[test]
    fn a_rollout_rolled_back_whole_states_every_reverted_device() {
        let rollout = rolled_back(RollbackScope::All);
        assert_eq!(rollout.phase(), &Phase::RolledBack);
        let s = assert_drafts_match_metrics(&rollout);
        assert!(s.reverted_or_failed() >= 55, "{s:?}");
    }

    #[test]
    fn an_aborted_rollout_s_drafts_state_the_metrics_counts() {
        let rollout = simulate(crash_loop(), |rollout, _| {
            let at = rollout.state().last_at;
            rollout
                .abort(at, "dana", "release withdrawn")
                .expect("a paused rollout can be aborted");
        });
        assert!(
            matches!(rollout.phase(), Phase::Aborted { .. }),
            "{:?}",
            rollout.phase()
        );
        assert_drafts_match_metrics(&rollout);
    }
}

#[cfg(test)]
mod remediation_tests {
    use super::*;
    use crate::risk::Checklist;

    #[test]
    fn the_regulator_draft_names_the_finding_the_shape_change_and_the_checklist() {
        let mut s = RolloutStory {
            rollout_id: "ro-1".into(),
            release_id: "t300-2.5.1".into(),
            path: "emergency".into(),
            ..RolloutStory::default()
        };
        let text = draft(&s, Audience::Regulator);
        assert!(!text.contains("Pre-deployment checklist"), "{text}");
        s.remediation = Some(RemediationFacts {
            finding_id: Some("SEC-2026-014".into()),
            proposed_shape: Some("accelerated".into()),
            chosen_shape: Some("emergency".into()),
            shape_changed_by: Some("ana".into()),
            checklist: Some(Checklist {
                owner: "ana".into(),
                regression_test: "CI 4411".into(),
                rollback_readiness: "A/B revert".into(),
                support_brief: "KB-77".into(),
            }),
        });
        let text = draft(&s, Audience::Regulator);
        assert!(
            text.contains("- Remediates finding SEC-2026-014; its tier proposed accelerated, ana chose emergency."),
            "{text}"
        );
        assert!(text.contains("  - regression test: CI 4411"), "{text}");
        assert!(text.contains("  - support brief: KB-77"), "{text}");
        s.remediation = Some(RemediationFacts::default());
        let text = draft(&s, Audience::Regulator);
        assert!(
            text.contains("- Pre-deployment checklist: none recorded with the request."),
            "{text}"
        );
    }
}
