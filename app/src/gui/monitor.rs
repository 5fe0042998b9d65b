//! The rollout monitor: one rollout at a time, as the engine's replayable log tells it. Per
//! wave, its devices by state (offered, downloading, installed, confirmed, failed, reverted,
//! silent); adoption over time by cohort (model, tier, region, network, power state); cohort
//! health against the baseline for every gate metric, with the tolerated levels and the gate
//! decisions on the time axis (the war room's plots, [`crate::gui::warroom::metric_plot_ui`]);
//! the current verdict with its evidence; and pause, resume, override, roll back and abort,
//! each with a required reason, sent through [`crate::gui::backend::Backend::steer`].
//!
//! The log is read and replayed on the `convoy-monitor` worker thread, never on the UI thread:
//! the view asks for its rollout every [`MONITOR_POLL`] (newest request wins), and the worker
//! replays the log again only when it has grown. The figures are plain functions of the
//! replayed [`Rollout`] with their own tests: [`wave_counts`], [`adoption_curves`] and
//! [`proportion_series`] (the update-outcome gates, which the health series of
//! [`convoy_core::rollout::series`] leaves out). Each reading also gives the map its
//! [`RolloutMap`] for [`crate::gui::model::ColorMode::RolloutState`]. A rollout with
//! prerequisite chains (issue 20) also shows each chain wave's progress step by step
//! ([`chain_progress`]) and the devices stopped at a prerequisite, counted and named.
//!
//! Deliberately not here: deciding anything (the engine applies a command or refuses it, and
//! its answer is shown), or writing to the cache.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use convoy_core::fleet::Fleet;
use convoy_core::gates::{FindingStatus, GateReport, MetricKind, OutcomeAgg};
use convoy_core::metrics::COHORT_ATTRIBUTES;
use convoy_core::rollout::chain::PrerequisiteStop;
use convoy_core::rollout::series::{HealthSeries, MAX_POINTS, MetricSeries, SeriesPoint};
use convoy_core::rollout::{
    Command, DeviceState, EventKind, Phase, Rollout, RolloutState, count_outcome,
};
use convoy_core::time::Timestamp;
use egui::RichText;

use crate::engine::control::{OperatorCommand, RollBackScope};
use crate::gui::app::UiCommand;
use crate::gui::model::{RolloutMap, rollout_class};
use crate::gui::steer::{operator_name, phase_words};
use crate::gui::tokens;
use crate::gui::view::{Commands, ViewContext};
use crate::gui::warroom::{self, PlotStyle};
use crate::store::Store;

/// How often the monitor asks for its rollout again while it shows (or the map colours by it).
pub const MONITOR_POLL: Duration = Duration::from_secs(3);
/// The most cohorts the adoption plot draws (the largest); the list under it names every one.
pub const ADOPTION_LINES: usize = 8;
/// The names the adoption selector gives [`COHORT_ATTRIBUTES`], in that order.
pub const COHORT_NAMES: [&str; 5] = ["model", "tier", "region", "network", "power state"];

/// One wave's devices by where they are in the update.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaveCounts {
    pub name: String,
    pub devices: u32,
    /// Offered the release so far (every device not pending).
    pub offered: u32,
    /// Offered, downloading or verified: the rollout waits for them to install.
    pub downloading: u32,
    /// Installed, installing or rebooting into the new version, not confirmed yet.
    pub installed: u32,
    /// Confirmed healthy on the new version.
    pub confirmed: u32,
    pub failed: u32,
    /// Back on the previous version (an automatic revert or a rollback).
    pub reverted: u32,
    /// Not heard from for the gates' silence period while the rollout waits on them.
    pub silent: u32,
    /// Taken out of the rest of the rollout by an operator before they were offered.
    pub excluded: u32,
}

/// Every wave's [`WaveCounts`] from a replayed rollout, in wave order.
pub fn wave_counts(state: &RolloutState) -> Vec<WaveCounts> {
    state
        .spec
        .waves
        .iter()
        .zip(&state.wave_members)
        .map(|(wave, members)| {
            let mut c = WaveCounts {
                name: wave.name.clone(),
                ..WaveCounts::default()
            };
            for &i in members {
                let Some(d) = state.devices.get(i as usize) else {
                    continue;
                };
                c.devices += 1;
                if d.state != DeviceState::Pending {
                    c.offered += 1;
                }
                if d.excluded {
                    c.excluded += 1;
                }
                match d.state {
                    DeviceState::Pending => {}
                    DeviceState::Offered | DeviceState::Downloading | DeviceState::Verified => {
                        c.downloading += 1;
                    }
                    DeviceState::Installing | DeviceState::Rebooting => c.installed += 1,
                    DeviceState::Healthy => c.confirmed += 1,
                    DeviceState::Failed => c.failed += 1,
                    DeviceState::Reverted => c.reverted += 1,
                }
                if d.silent && !d.state.is_terminal() {
                    c.silent += 1;
                }
            }
            c
        })
        .collect()
}

/// A chain wave's progress (issue 20): the releases its devices install before the target, in
/// order, and how many of its devices are at each step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainProgress {
    pub wave: String,
    pub releases: Vec<String>,
    pub devices: u32,
    /// Per release of the chain, in order: devices that confirmed it.
    pub confirmed: Vec<u32>,
    /// Per release: devices installing it now (offered, not settled).
    pub installing: Vec<u32>,
    /// Devices whose chain is done and that were offered the target.
    pub target_offered: u32,
    /// Devices stopped at a prerequisite (failed, reverted, refused or silent there).
    pub stopped: u32,
}

/// Every chain wave's [`ChainProgress`] from a replayed rollout, in wave order (none without
/// chains).
pub fn chain_progress(state: &RolloutState) -> Vec<ChainProgress> {
    let mut out = Vec::new();
    for (w, (wave, members)) in state.spec.waves.iter().zip(&state.wave_members).enumerate() {
        let releases = state.chain.chain(w);
        if releases.is_empty() {
            continue;
        }
        let mut p = ChainProgress {
            wave: wave.name.clone(),
            releases: releases.to_vec(),
            devices: u32::try_from(members.len()).unwrap_or(u32::MAX),
            confirmed: vec![0; releases.len()],
            installing: vec![0; releases.len()],
            ..ChainProgress::default()
        };
        for i in members {
            let Some(c) = state.chain.devices.get(i) else {
                continue;
            };
            for n in p.confirmed.iter_mut().take(usize::from(c.confirmed)) {
                *n += 1;
            }
            if c.in_progress
                && let Some(n) = p.installing.get_mut(usize::from(c.confirmed))
            {
                *n += 1;
            }
            if c.target_offered {
                p.target_offered += 1;
            }
            if c.stopped_at.is_some() {
                p.stopped += 1;
            }
        }
        out.push(p);
    }
    out
}

/// The time step of the monitor's curves for a rollout spanning `start..end`: at most
/// [`MAX_POINTS`] points, never finer than `min_step_secs`.
fn step_for(start: Timestamp, end: Timestamp, min_step_secs: i64) -> i64 {
    let span = (end.secs() - start.secs()).max(1);
    (span / MAX_POINTS as i64 + 1).max(min_step_secs.max(60))
}

/// Adoption over time in one cohort.
#[derive(Clone, Debug, PartialEq)]
pub struct AdoptionCurve {
    /// The cohort's value of the attribute (`-` for devices the fleet does not hold).
    pub value: String,
    pub targeted: u64,
    /// Confirmed healthy now.
    pub healthy: u64,
    /// (hours since the rollout was created, percent of `targeted` confirmed healthy).
    pub points: Vec<[f64; 2]>,
}

/// Adoption over time by the values of `attribute` (see `Device::attribute`), sorted by
/// value: each cohort's share of its devices confirmed healthy, sampled every `step_secs` from
/// the rollout's creation to its last event. Its last point is
/// [`convoy_core::metrics::adoption_by`]'s ratio.
pub fn adoption_curves(
    rollout: &Rollout,
    fleet: &Fleet,
    attribute: &str,
    step_secs: i64,
) -> Vec<AdoptionCurve> {
    let state = rollout.state();
    let values: Vec<String> = state
        .device_ids
        .iter()
        .map(|id| {
            fleet
                .device(id)
                .and_then(|d| d.attribute(attribute))
                .unwrap_or_else(|| "-".to_owned())
        })
        .collect();
    let mut names: Vec<&str> = values.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let group: Vec<usize> = values
        .iter()
        .map(|v| names.binary_search(&v.as_str()).unwrap_or(0))
        .collect();
    let mut curves: Vec<AdoptionCurve> = names
        .iter()
        .map(|v| AdoptionCurve {
            value: (*v).to_owned(),
            targeted: 0,
            healthy: 0,
            points: Vec::new(),
        })
        .collect();
    for &g in &group {
        curves[g].targeted += 1;
    }
    let start = state.created_at.secs();
    let hours = |t: i64| (t - start) as f64 / 3600.0;
    let emit = |curves: &mut Vec<AdoptionCurve>, at: i64| {
        for c in curves.iter_mut() {
            let pct = if c.targeted == 0 {
                0.0
            } else {
                c.healthy as f64 * 100.0 / c.targeted as f64
            };
            c.points.push([hours(at), pct]);
        }
    };
    emit(&mut curves, start);
    let step = step_secs.max(1);
    let mut healthy = vec![false; group.len()];
    let mut next_point = start + step;
    let mut dirty = false;
    for e in rollout.events() {
        if e.at.secs() >= next_point {
            if dirty {
                emit(&mut curves, next_point);
                dirty = false;
            }
            next_point += step * ((e.at.secs() - next_point) / step + 1);
        }
        if let EventKind::Device { device, state: to } = &e.kind {
            let i = *device as usize;
            let (Some(was), Some(&g)) = (healthy.get_mut(i), group.get(i)) else {
                continue;
            };
            let now = *to == DeviceState::Healthy;
            if now != *was {
                *was = now;
                if now {
                    curves[g].healthy += 1;
                } else {
                    curves[g].healthy = curves[g].healthy.saturating_sub(1);
                }
                dirty = true;
            }
        }
    }
    let end = rollout.events().last().map_or(start, |e| e.at.secs());
    if end > start {
        emit(&mut curves, end);
    }
    curves
}

/// One device as the outcome gates count it.
#[derive(Clone, Copy)]
struct Outcome {
    state: DeviceState,
    silent: bool,
    rollback_pending: bool,
    /// Excluded by an operator before its wave started: never offered.
    excluded: bool,
}

/// The update-outcome gates (install failure, boot failure, silent) over time, as percentages
/// of the devices each judges, for the whole rollout: the "updated" line is the observed
/// share, the "baseline" the historical share the gate compares against (its
/// `baseline_ratio`), so that the plots' tolerated line is the gate's `baseline_ratio ×
/// max_ratio`. Sampled every `step_secs`. Each device's move is counted by the state machine's
/// own rule (`convoy_core::rollout::count_outcome`) into the gates' `OutcomeAgg`; a test checks
/// that the series ends where the replayed state's outcomes do.
pub fn proportion_series(rollout: &Rollout, step_secs: i64) -> Vec<MetricSeries> {
    let state = rollout.state();
    let gates: Vec<(String, f64, f64)> = state
        .spec
        .gates
        .metric_gates()
        .into_iter()
        .filter(|(_, kind, g)| g.enabled && *kind == MetricKind::Proportion)
        .map(|(name, _, g)| {
            (
                name.to_owned(),
                g.baseline_ratio.unwrap_or(0.0),
                g.max_ratio,
            )
        })
        .collect();
    let mut series: Vec<MetricSeries> = gates
        .iter()
        .map(|(name, _, max_ratio)| MetricSeries {
            metric: name.clone(),
            unit: "% of the devices judged",
            max_ratio: *max_ratio,
            points: Vec::new(),
        })
        .collect();
    let emit = |series: &mut Vec<MetricSeries>, out: &OutcomeAgg, at: i64| {
        for (s, (name, baseline, _)) in series.iter_mut().zip(&gates) {
            let (failures, judged) = out.proportion(name);
            s.points.push(SeriesPoint {
                at: Timestamp::from_secs(at),
                updated: (judged > 0).then(|| failures as f64 * 100.0 / judged as f64),
                baseline: Some(baseline * 100.0),
                updated_weight: judged as f64,
                baseline_weight: 0.0,
            });
        }
    };
    let mut devices = vec![
        Outcome {
            state: DeviceState::Pending,
            silent: false,
            rollback_pending: false,
            excluded: false,
        };
        state.devices.len()
    ];
    let mut out = OutcomeAgg::default();
    let start = state.created_at.secs();
    let step = step_secs.max(1);
    let mut next_point = start + step;
    let mut dirty = false;
    let mut paced = false;
    let heard = |d: &mut Outcome, out: &mut OutcomeAgg| {
        if d.silent {
            d.silent = false;
            out.silent = out.silent.saturating_sub(1);
        }
    };
    for e in rollout.events() {
        if e.at.secs() >= next_point {
            if dirty {
                emit(&mut series, &out, next_point);
                dirty = false;
            }
            next_point += step * ((e.at.secs() - next_point) / step + 1);
        }
        match &e.kind {
            // Paced offers (issue 20): a wave's devices are offered by `Offered` events.
            EventKind::OffersPaced { .. } => paced = true,
            // An offered device enters the install-failure question (the gate's denominator,
            // `OutcomeAgg::proportion`), as the state machine counts it.
            EventKind::Offered { devices: offered } => {
                for &i in offered {
                    if let Some(d) = devices.get_mut(i as usize)
                        && d.state == DeviceState::Pending
                    {
                        d.state = DeviceState::Offered;
                        out.offered += 1;
                        dirty = true;
                    }
                }
            }
            EventKind::Excluded {
                devices: excluded, ..
            } => {
                for &i in excluded {
                    if let Some(d) = devices.get_mut(i as usize) {
                        d.excluded = true;
                    }
                }
            }
            EventKind::WaveStarted { .. } if paced => {}
            EventKind::WaveStarted { wave } => {
                for &i in state.wave_members.get(*wave).into_iter().flatten() {
                    if let Some(d) = devices.get_mut(i as usize)
                        && d.state == DeviceState::Pending
                        && !d.excluded
                    {
                        d.state = DeviceState::Offered;
                        out.offered += 1;
                        dirty = true;
                    }
                }
            }
            EventKind::Device { device, state: to } => {
                let Some(d) = devices.get_mut(*device as usize) else {
                    continue;
                };
                let (from, to) = (d.state, *to);
                if from != to {
                    count_outcome(&mut out, from, to, d.rollback_pending);
                    if d.rollback_pending
                        && matches!(to, DeviceState::Reverted | DeviceState::Failed)
                    {
                        d.rollback_pending = false;
                    }
                    d.state = to;
                    dirty = true;
                }
                heard(d, &mut out);
            }
            EventKind::Telemetry { device, .. } => {
                if let Some(d) = devices.get_mut(*device as usize)
                    && (d.state.is_in_flight() || d.rollback_pending || d.silent)
                {
                    dirty |= d.silent;
                    heard(d, &mut out);
                }
            }
            EventKind::DeviceSilent { device } => {
                if let Some(d) = devices.get_mut(*device as usize)
                    && !d.silent
                {
                    d.silent = true;
                    d.rollback_pending = false;
                    out.silent += 1;
                    dirty = true;
                }
            }
            EventKind::RollbackStarted { devices: asked, .. } => {
                for &i in asked {
                    if let Some(d) = devices.get_mut(i as usize)
                        && !d.rollback_pending
                        && !d.silent
                    {
                        d.rollback_pending = true;
                    }
                }
            }
            _ => {}
        }
    }
    let end = rollout.events().last().map_or(start, |e| e.at.secs());
    if dirty || series.iter().all(|s| s.points.is_empty()) {
        emit(&mut series, &out, end);
    }
    series
}

/// One reading of a rollout, computed on the worker from its log.
#[derive(Debug)]
pub struct MonitorData {
    pub rollout_id: String,
    /// The log's length when it was read.
    pub log_rows: i64,
    pub phase: Phase,
    pub release_id: String,
    pub requested_by: String,
    pub created_at: Timestamp,
    /// When the log last recorded anything.
    pub last_at: Timestamp,
    pub waves: Vec<WaveCounts>,
    /// The most recent gate look's findings (`None` before any look with findings).
    pub last_report: Option<GateReport>,
    /// Findings an operator overrode in the current wave.
    pub overridden: Vec<(String, Option<String>)>,
    /// Every gated metric: the health series' rates and means, then [`proportion_series`].
    pub health: HealthSeries,
    /// Adoption curves by each of [`COHORT_ATTRIBUTES`], in that order.
    pub adoption: Vec<Vec<AdoptionCurve>>,
    /// Each device's class, for the map.
    pub map: Arc<RolloutMap>,
    /// Whether each operator command would be accepted as of the log's last entry, and if not
    /// why ([`Rollout::permits`]): the buttons are enabled by it and say why not.
    pub permitted: Vec<(Command, Result<(), String>)>,
    /// The strata the last gate look found failing (`T300/C`), offered as exclusions.
    pub failing_strata: Vec<String>,
    /// Devices of the running wave still waiting for their paced offer (issue 20).
    pub awaiting_offer: usize,
    /// Why they wait and when the next offer is due, from the engine's latest
    /// `schedule.waiting` timeline entry.
    pub offers_wait: Option<String>,
    /// Each chain wave's progress (issue 20; empty without chains).
    pub chains: Vec<ChainProgress>,
    /// Devices stopped at each prerequisite release, named.
    pub prerequisite_stops: Vec<PrerequisiteStop>,
}

impl MonitorData {
    /// Whether `command` would be accepted now, or why not.
    pub fn permits(&self, command: Command) -> Result<(), String> {
        self.permitted
            .iter()
            .find(|(c, _)| *c == command)
            .map_or_else(|| Err("unknown command".to_owned()), |(_, r)| r.clone())
    }
}

/// Replays `log` (a rollout's whole event log, `Created` first) into everything the monitor
/// shows; `fleet` gives the cohorts of the adoption curves.
pub fn read_rollout(
    rollout_id: &str,
    log: Vec<convoy_core::rollout::RolloutEvent>,
    log_rows: i64,
    fleet: Option<&Fleet>,
) -> Result<MonitorData, String> {
    let mut health = convoy_core::rollout::series::health_series(&log);
    let rollout = Rollout::replay(log)
        .map_err(|e| format!("the log of rollout {rollout_id} does not replay: {e}"))?;
    let state = rollout.state();
    let last_at = rollout.events().last().map_or(state.created_at, |e| e.at);
    let step = step_for(
        state.created_at,
        last_at,
        state.spec.gates.evaluate_every_secs,
    );
    health.metrics.extend(proportion_series(&rollout, step));
    let empty = Fleet::default();
    let fleet = fleet.unwrap_or(&empty);
    let adoption = COHORT_ATTRIBUTES
        .iter()
        .map(|a| adoption_curves(&rollout, fleet, a, step))
        .collect();
    let map = RolloutMap {
        rollout_id: rollout_id.to_owned(),
        device_ids: state.device_ids.clone(),
        classes: state
            .devices
            .iter()
            .map(|d| rollout_class(d.state, d.silent))
            .collect(),
    };
    Ok(MonitorData {
        rollout_id: rollout_id.to_owned(),
        log_rows,
        phase: state.phase.clone(),
        release_id: state.spec.release_id.clone(),
        requested_by: state.spec.requested_by.clone(),
        created_at: state.created_at,
        last_at,
        waves: wave_counts(state),
        last_report: state.last_report.clone(),
        overridden: state.overridden.clone(),
        health,
        adoption,
        map: Arc::new(map),
        permitted: Command::ALL
            .iter()
            .map(|c| (*c, rollout.permits(*c, last_at).map_err(|e| e.to_string())))
            .collect(),
        awaiting_offer: rollout.awaiting_offer().len(),
        offers_wait: None,
        chains: chain_progress(state),
        prerequisite_stops: rollout.prerequisite_stops(),
        failing_strata: {
            let mut f: Vec<String> = state
                .last_failures
                .iter()
                .filter_map(|(_, s)| s.clone())
                .collect();
            f.sort();
            f.dedup();
            f
        },
    })
}

/// What the view asks the worker.
struct Request {
    rollout_id: String,
    cache: PathBuf,
    fleet: Option<Arc<Fleet>>,
}

/// What the worker answers: a reading (the last one again, the same `Arc`, when the log has
/// not grown), or why there is none.
enum Answer {
    Read(Arc<MonitorData>),
    Failed { rollout_id: String, why: String },
}

/// The view's end of the `convoy-monitor` thread.
struct Worker {
    tx: Sender<Request>,
    rx: Receiver<Answer>,
}

impl Worker {
    fn spawn(ctx: &egui::Context) -> std::io::Result<Self> {
        let (tx, requests) = std::sync::mpsc::channel::<Request>();
        let (answers, rx) = std::sync::mpsc::sync_channel(4);
        let ctx = ctx.clone();
        std::thread::Builder::new()
            .name("convoy-monitor".into())
            .spawn(move || {
                let mut store: Option<(PathBuf, Store)> = None;
                // The last reading, under its (rollout, log rows, fleet).
                let mut last: Option<(ReadingKey, Arc<MonitorData>)> = None;
                while let Ok(first) = requests.recv() {
                    // Only the newest request matters: the view shows one rollout.
                    let request = requests.try_iter().last().unwrap_or(first);
                    let answer = serve(&request, &mut store, &mut last);
                    if answers.send(answer).is_err() {
                        return;
                    }
                    ctx.request_repaint();
                }
            })?;
        Ok(Self { tx, rx })
    }
}

/// What a reading depends on: the rollout, its log's length, and the fleet (by address).
type ReadingKey = (String, i64, usize);

/// Answers one request on the worker.
fn serve(
    request: &Request,
    store: &mut Option<(PathBuf, Store)>,
    last: &mut Option<(ReadingKey, Arc<MonitorData>)>,
) -> Answer {
    let id = &request.rollout_id;
    let failed = |why: String| Answer::Failed {
        rollout_id: id.clone(),
        why,
    };
    if store.as_ref().is_none_or(|(p, _)| *p != request.cache) {
        match Store::open_existing(&request.cache) {
            Ok(s) => *store = Some((request.cache.clone(), s)),
            Err(e) => {
                *store = None;
                return failed(format!("{e:#}"));
            }
        }
    }
    let Some((_, s)) = store.as_ref() else {
        return failed(format!("the cache {} is not open", request.cache.display()));
    };
    // The log's length from its last key, as the history worker reads it.
    let rows = match s.rollout_log_len(id) {
        Ok(n) => n,
        Err(e) => return failed(format!("{e:#}")),
    };
    if rows == 0 {
        return failed(format!(
            "the cache holds no engine log for rollout {id} (recorded before schema v6, or by \
             hand): its timeline is in the war room"
        ));
    }
    if rows > crate::gui::backend::MAX_HEALTH_LOG_ROWS {
        return failed(format!(
            "the log of rollout {id} has {rows} rows, more than the monitor replays ({})",
            crate::gui::backend::MAX_HEALTH_LOG_ROWS
        ));
    }
    let fleet_key = request
        .fleet
        .as_ref()
        .map_or(0, |f| Arc::as_ptr(f) as usize);
    let key = (id.clone(), rows, fleet_key);
    if let Some((k, data)) = last.as_ref()
        && *k == key
    {
        return Answer::Read(Arc::clone(data));
    }
    let log = match s.rollout_log(id) {
        Ok(log) => log,
        Err(e) => return failed(format!("{e:#}")),
    };
    match read_rollout(id, log, rows, request.fleet.as_deref()) {
        Ok(mut data) => {
            if data.awaiting_offer > 0 {
                data.offers_wait = schedule_note(s, id);
            }
            let data = Arc::new(data);
            *last = Some((key, Arc::clone(&data)));
            Answer::Read(data)
        }
        Err(why) => failed(why),
    }
}

/// The engine's latest word on why paced offers wait (`schedule.waiting`): the reason and the
/// next offer time.
fn schedule_note(store: &Store, rollout_id: &str) -> Option<String> {
    let timeline = store.timeline(rollout_id).ok()?;
    let entry = timeline
        .iter()
        .rev()
        .find(|e| e.kind == "schedule.waiting")?;
    let payload: serde_json::Value = serde_json::from_str(&entry.payload).ok()?;
    let why = payload["why"].as_str().unwrap_or("the schedule");
    let next = payload["next_offer_at"]
        .as_i64()
        .map(|t| format!("; next offer at {}", Timestamp::from_secs(t)))
        .or_else(|| {
            payload["next_offer_at"]
                .as_str()
                .map(|t| format!("; next offer at {t}"))
        })
        .unwrap_or_default();
    Some(format!("{why} (since {}){next}", entry.time))
}

/// What the rollout monitor keeps between frames.
pub struct MonitorState {
    /// The rollout chosen; `None` follows the one the war room would show first.
    pub selected: Option<String>,
    /// The reason typed for the next command.
    pub reason: String,
    /// What "Roll back" covers.
    pub scope: RollBackScope,
    /// Index into [`COHORT_ATTRIBUTES`] of the adoption plot.
    pub attribute: usize,
    worker: Option<Worker>,
    worker_error: Option<String>,
    /// The reading of the rollout shown, or why it could not be read; `None` while loading.
    pub data: Option<Result<Arc<MonitorData>, String>>,
    /// The rollout last asked for, and when.
    asked: Option<(String, Instant)>,
    /// The fleet the last request carried (a reload gives a new one).
    fleet: Option<Arc<Fleet>>,
    /// The command sent last from here and not answered yet, with how many answers had
    /// arrived when it was sent (`ConsoleApp::steered_total`).
    pub awaiting: Option<(String, OperatorCommand, u64)>,
    /// The exclusion's selector being typed (a fleet search or device ids).
    pub selector: String,
    /// A rollback or abort waiting for its confirmation (the rollout's id typed again), with
    /// the rollout it is for and what has been typed.
    pub confirming: Option<(String, OperatorCommand, String)>,
}

impl std::fmt::Debug for MonitorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorState")
            .field("selected", &self.selected)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl MonitorState {
    /// The console sent `command` for `rollout_id` from this view, when `steered_total`
    /// answers had arrived: the view waits for its answer, and the reason field empties.
    pub fn sent(&mut self, rollout_id: String, command: OperatorCommand, steered_total: u64) {
        self.awaiting = Some((rollout_id, command, steered_total));
        self.reason.clear();
    }
}

impl Default for MonitorState {
    fn default() -> Self {
        Self {
            selected: None,
            reason: String::new(),
            scope: RollBackScope::CurrentWave,
            attribute: 0,
            worker: None,
            worker_error: None,
            data: None,
            asked: None,
            fleet: None,
            awaiting: None,
            confirming: None,
            selector: String::new(),
        }
    }
}

/// The rollout the monitor shows: the one chosen, else the one the war room shows first.
pub fn target_of(
    monitor: &MonitorState,
    rollouts: Option<&Result<crate::gui::backend::RolloutBoard, String>>,
) -> Option<String> {
    if let Some(id) = &monitor.selected {
        return Some(id.clone());
    }
    let board = rollouts?.as_ref().ok()?;
    warroom::wall_order(&board.rollouts)
        .first()
        .map(|s| s.rollout_id.clone())
}

/// Keeps the monitor's reading of its rollout fresh: takes the worker's answers (publishing
/// each new reading's map for [`crate::gui::model::ColorMode::RolloutState`]) and asks again
/// every [`MONITOR_POLL`]. `id` is the rollout shown ([`target_of`]), `fleet` the console's
/// shared copy. The console calls it before the monitor draws, and before the map draws while
/// it colours by rollout. Never blocks: the worker reads the cache.
pub fn sync(
    m: &mut MonitorState,
    ctx: &egui::Context,
    id: String,
    cache: PathBuf,
    fleet: Option<Arc<Fleet>>,
) {
    if m.worker.is_none() && m.worker_error.is_none() {
        match Worker::spawn(ctx) {
            Ok(w) => m.worker = Some(w),
            Err(e) => m.worker_error = Some(format!("could not start the monitor thread: {e}")),
        }
    }
    let Some(worker) = &m.worker else {
        return;
    };
    for answer in worker.rx.try_iter() {
        match answer {
            Answer::Read(data) if data.rollout_id == id => {
                let same = matches!(&m.data, Some(Ok(d)) if Arc::ptr_eq(d, &data));
                if !same {
                    crate::gui::derive::publish_rollout_map(ctx, Arc::clone(&data.map));
                    m.data = Some(Ok(data));
                }
            }
            Answer::Failed { rollout_id, why } if rollout_id == id => m.data = Some(Err(why)),
            // An answer for a rollout no longer shown.
            _ => {}
        }
    }
    let fleet_changed = match (&fleet, &m.fleet) {
        (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
        (a, b) => a.is_some() != b.is_some(),
    };
    let due = match &m.asked {
        Some((asked, at)) => *asked != id || at.elapsed() >= MONITOR_POLL || fleet_changed,
        None => true,
    };
    if !due {
        return;
    }
    if m.asked.as_ref().is_some_and(|(asked, _)| *asked != id) {
        // Another rollout: nothing of the old one shows.
        m.data = None;
    }
    let request = Request {
        rollout_id: id.clone(),
        cache,
        fleet: fleet.clone(),
    };
    if worker.tx.send(request).is_ok() {
        m.asked = Some((id, Instant::now()));
        m.fleet = fleet;
    } else {
        m.worker = None;
        m.worker_error = Some("the monitor thread stopped".into());
    }
}

/// Draws the view.
/// The console keeps the reading of the rollout fresh before the view draws ([`sync`]).
pub fn monitor_ui(
    state: &mut MonitorState,
    cx: &ViewContext<'_>,
    out: &mut Commands,
    ui: &mut egui::Ui,
) {
    ui.heading("Rollout monitor");
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .show(ui, |ui| body_ui(state, cx, out, ui));
}

fn body_ui(state: &mut MonitorState, cx: &ViewContext<'_>, out: &mut Commands, ui: &mut egui::Ui) {
    let board = match cx.rollouts {
        None => {
            ui.label("Reading the rollouts in the cache…");
            return;
        }
        Some(Err(why)) => {
            ui.colored_label(tokens::WARN, format!("Could not read the rollouts: {why}"));
            return;
        }
        Some(Ok(board)) => board,
    };
    let order = warroom::wall_order(&board.rollouts);
    if order.is_empty() {
        ui.label(
            RichText::new(
                "No rollouts recorded in the cache: `convoy rollout run` and the demo record \
                 them here.",
            )
            .color(tokens::MUTED),
        );
        return;
    }
    let Some(id) = cx.rollout_target.clone() else {
        return;
    };
    let story = board.rollouts.iter().find(|s| s.rollout_id == id).cloned();
    let choices: Vec<(String, warroom::WallState)> = order
        .iter()
        .map(|s| (s.rollout_id.clone(), warroom::state_of(s)))
        .collect();
    ui.horizontal(|ui| {
        let l = ui.label("Rollout:");
        egui::ComboBox::from_id_salt("monitor-rollout")
            .selected_text(id.as_str())
            .show_ui(ui, |ui| {
                for (rid, wall) in &choices {
                    let text = format!("{rid} · {}", wall.label().to_lowercase());
                    if ui.selectable_label(*rid == id, text).clicked() {
                        state.selected = Some(rid.clone());
                    }
                }
            })
            .response
            .labelled_by(l.id);
        if let Some(s) = &story {
            let state = warroom::state_of(s);
            ui.label(RichText::new(state.label()).strong().color(state.color()));
        }
    });
    if let Some(why) = &state.worker_error {
        ui.colored_label(tokens::BAD, why);
        return;
    }
    let data = match &state.data {
        None => {
            ui.label("Reading the rollout's log…");
            return;
        }
        Some(Err(why)) => {
            ui.colored_label(tokens::WARN, format!("Could not read the rollout: {why}"));
            return;
        }
        Some(Ok(d)) => Arc::clone(d),
    };
    ui.label(
        RichText::new(format!(
            "release {} · requested by {} · created {} · last event {}",
            data.release_id, data.requested_by, data.created_at, data.last_at
        ))
        .color(tokens::MUTED),
    );
    ui.add_space(6.0);
    verdict_ui(ui, &data, story.as_ref());
    ui.add_space(6.0);
    controls_ui(state, cx, out, ui, &data);
    ui.separator();
    waves_ui(ui, &data);
    if !data.chains.is_empty() || !data.prerequisite_stops.is_empty() {
        ui.separator();
        chains_ui(ui, &data);
    }
    ui.separator();
    adoption_ui(state, ui, &data);
    ui.separator();
    health_ui(ui, &data);
}

/// The verdict (the rollout's phase in words) and the evidence behind the last gate decision.
fn verdict_ui(
    ui: &mut egui::Ui,
    data: &MonitorData,
    story: Option<&convoy_core::comms::RolloutStory>,
) {
    let color = match &data.phase {
        Phase::Paused { .. } => tokens::WARN,
        Phase::RollingBack { .. } | Phase::RolledBack | Phase::Aborted { .. } => tokens::BAD,
        Phase::Completed => tokens::MUTED,
        _ => tokens::OK,
    };
    ui.label(
        RichText::new(format!("Verdict: {}", phase_words(&data.phase)))
            .strong()
            .size(16.0)
            .color(color),
    );
    if data.awaiting_offer > 0 {
        let why = data
            .offers_wait
            .as_deref()
            .unwrap_or("waiting for the schedule's next minute");
        ui.label(
            RichText::new(format!(
                "Paced offers: {} devices of this wave wait for the schedule: {why}",
                data.awaiting_offer
            ))
            .color(tokens::WARN),
        );
    }
    if let Some(stop) = story.and_then(|s| s.stops.last()) {
        ui.label(format!(
            "Last gate decision: {} in wave {} at {}",
            stop.outcome, stop.wave, stop.at
        ));
    }
    let Some(report) = &data.last_report else {
        ui.label(RichText::new("No gate finding on record.").color(tokens::MUTED));
        return;
    };
    ui.label(RichText::new("Evidence (the last gate look's findings):").strong());
    // What stopped the rollout first, then what was overridden, trending, or not judged.
    let rank = |f: &&convoy_core::gates::Finding| match f.status {
        FindingStatus::Fail => 0,
        FindingStatus::Overridden => 1,
        FindingStatus::Trending => 2,
        FindingStatus::NotEnoughData => 3,
    };
    let mut findings: Vec<&convoy_core::gates::Finding> = report.findings.iter().collect();
    findings.sort_by_key(rank);
    for f in findings {
        let scope = f
            .stratum
            .as_deref()
            .map_or_else(|| "whole wave".to_owned(), |s| format!("stratum {s}"));
        let (status, color) = match f.status {
            FindingStatus::Fail => ("FAIL", tokens::BAD),
            FindingStatus::Trending => ("trending", tokens::WARN),
            FindingStatus::Overridden => ("overridden", tokens::MUTED),
            FindingStatus::NotEnoughData => ("not enough data", tokens::MUTED),
        };
        // What stopped or worries the gate, in plain words first (as on the wall).
        if matches!(f.status, FindingStatus::Fail | FindingStatus::Trending) {
            let words = crate::gui::warroom::plain_evidence(&plain_figures(f), None);
            ui.label(
                RichText::new(format!("{status}: {words}"))
                    .color(color)
                    .strong(),
            );
        }
        // Not judged: no test was run, so no p-value to show (the 1 recorded is a placeholder).
        let mut line = if f.status == FindingStatus::NotEnoughData {
            format!(
                "{status} · {} · {scope}: observed {:.4} against baseline {:.4} ({} devices, too \
                 few to judge yet)",
                f.metric, f.observed, f.baseline, f.sample
            )
        } else {
            format!(
                "{status} · {} · {scope}: observed {:.4} against baseline {:.4} (p = {:.2e}, \
                 level {:.2e}, {} devices)",
                f.metric, f.observed, f.baseline, f.p_value, f.level, f.sample
            )
        };
        if let Some(c) = &f.counts {
            let _ = write!(
                line,
                " · {} events in {:.1} device-hours against {} in {:.1}",
                c.updated_events,
                c.updated_device_hours,
                c.baseline_events,
                c.baseline_device_hours
            );
        }
        ui.label(RichText::new(line).color(color));
    }
    if !data.overridden.is_empty() {
        let names: Vec<String> = data
            .overridden
            .iter()
            .map(|(m, s)| format!("{m} ({})", s.as_deref().unwrap_or("every stratum")))
            .collect();
        ui.label(format!("Overridden in this wave: {}", names.join(", ")));
    }
}

/// The confirmation of a rollback or an abort: the rollout's id typed again enables
/// "Confirm"; "Cancel" (or another rollout) drops it. Returns the command once confirmed.
fn confirm_ui(state: &mut MonitorState, id: &str, ui: &mut egui::Ui) -> Option<OperatorCommand> {
    let (rid, command, typed) = state.confirming.as_mut()?;
    if rid != id {
        state.confirming = None;
        return None;
    }
    let what = match &*command {
        OperatorCommand::RollBack { scope, .. } => format!("Roll back {}", scope_words(*scope)),
        OperatorCommand::Abort { .. } => "Abort".to_owned(),
        other => other.name().to_owned(),
    };
    let mut decided = None;
    egui::Frame::group(ui.style())
        .stroke(egui::Stroke::new(1.5, tokens::BAD))
        .show(ui, |ui| {
            ui.label(
                RichText::new(format!(
                    "{what} of rollout {id}? This cannot be undone. Type the rollout id to confirm."
                ))
                .color(tokens::BAD),
            );
            ui.horizontal(|ui| {
                let label = ui.label("Rollout id:");
                ui.add(egui::TextEdit::singleline(typed).desired_width(220.0))
                    .labelled_by(label.id);
                let matches = typed.trim() == id;
                if ui
                    .add_enabled(matches, egui::Button::new(format!("Confirm: {what}")))
                    .on_disabled_hover_text("Type the rollout id exactly to enable it")
                    .clicked()
                {
                    decided = Some(Some(command.clone()));
                }
                if ui.button("Cancel").clicked() {
                    decided = Some(None);
                }
            });
        });
    match decided {
        Some(confirmed) => {
            state.confirming = None;
            confirmed
        }
        None => None,
    }
}

/// The reason field, the command buttons, and the answers to the commands sent.
fn controls_ui(
    state: &mut MonitorState,
    cx: &ViewContext<'_>,
    out: &mut Commands,
    ui: &mut egui::Ui,
    data: &MonitorData,
) {
    let id = data.rollout_id.clone();
    let operator = operator_name();
    let steerable = (cx.can_steer)(&id);
    ui.label(RichText::new("Steer").strong());
    ui.horizontal(|ui| {
        let label = ui.label("Reason:");
        // The operator's name comes from the environment: on hover only, so that the view
        // looks the same for everyone (and in the snapshot test).
        ui.add(
            egui::TextEdit::singleline(&mut state.reason)
                .hint_text("required: it goes to the timeline and the audit trail")
                .desired_width(520.0),
        )
        .labelled_by(label.id)
        .on_hover_text(format!(
            "Commands are sent as {operator} ($CONVOY_OPERATOR, else $USER)"
        ));
    });
    let reason = state.reason.trim().to_owned();
    let ready = steerable.is_ok() && !reason.is_empty();
    let mut command = None;
    // What the phase leaves open, in words: the way forward after a stop.
    if let Some(line) = way_forward(data) {
        ui.label(RichText::new(line).strong());
    }
    ui.horizontal_wrapped(|ui| {
        // Enabled only when the rollout would accept it now; a disabled button says why.
        let button = |ui: &mut egui::Ui, text: &str, hint: &str, c: Command| {
            let allowed = data.permits(c);
            let why = match (&allowed, ready) {
                (Err(why), _) => format!("Not now: {why}"),
                (Ok(()), false) => "Type a reason first".to_owned(),
                (Ok(()), true) => hint.to_owned(),
            };
            ui.add_enabled(ready && allowed.is_ok(), egui::Button::new(text))
                .on_hover_text(hint)
                .on_disabled_hover_text(why)
                .clicked()
        };
        if button(
            ui,
            "Pause",
            "Stop offering; devices already installing finish",
            Command::Pause,
        ) {
            command = Some(OperatorCommand::Pause {
                reason: reason.clone(),
            });
        }
        if button(
            ui,
            "Resume",
            "Continue a rollout an operator paused",
            Command::Resume,
        ) {
            command = Some(OperatorCommand::Resume {
                reason: reason.clone(),
            });
        }
        if button(
            ui,
            "Override the gate",
            "Override the findings that stopped the rollout and continue the wave",
            Command::OverrideGate,
        ) {
            command = Some(OperatorCommand::Override {
                reason: reason.clone(),
            });
        }
        if button(
            ui,
            "Continue with the next wave",
            "Go on with the next wave after this one was rolled back (exclude what failed first)",
            Command::Continue,
        ) {
            command = Some(OperatorCommand::Continue {
                reason: reason.clone(),
            });
        }
        let rollback = match state.scope {
            RollBackScope::CurrentWave => Command::RollBackWave,
            RollBackScope::All => Command::RollBackAll,
        };
        if button(
            ui,
            "Roll back",
            "Send the devices back to their previous version (asks you to confirm)",
            rollback,
        ) {
            // Not sent yet: a rollback cannot be taken back, so it waits for the rollout's
            // id typed again (issue 19: a stray click sent one).
            state.confirming = Some((
                id.clone(),
                OperatorCommand::RollBack {
                    scope: state.scope,
                    reason: reason.clone(),
                },
                String::new(),
            ));
        }
        let l = ui.label("of");
        egui::ComboBox::from_id_salt("monitor-rollback-scope")
            .selected_text(scope_words(state.scope))
            .show_ui(ui, |ui| {
                for s in [RollBackScope::CurrentWave, RollBackScope::All] {
                    ui.selectable_value(&mut state.scope, s, scope_words(s));
                }
            })
            .response
            .labelled_by(l.id);
        if button(
            ui,
            "Abort",
            "Stop the rollout for good, leaving devices where they are (asks you to confirm)",
            Command::Abort,
        ) {
            state.confirming = Some((
                id.clone(),
                OperatorCommand::Abort {
                    reason: reason.clone(),
                },
                String::new(),
            ));
        }
    });
    ui.horizontal_wrapped(|ui| {
        let label = ui.label("Exclude:");
        ui.add(
            egui::TextEdit::singleline(&mut state.selector)
                .hint_text("model:T300 hw_rev:C, stratum:T300/C, region:eu-*, or device ids")
                .desired_width(420.0),
        )
        .labelled_by(label.id);
        for stratum in &data.failing_strata {
            if ui
                .small_button(format!("stratum {stratum}"))
                .on_hover_text("The gates found this stratum failing: exclude it")
                .clicked()
            {
                state.selector = format!("stratum:{}", quote_value(stratum));
            }
        }
        let allowed = data.permits(Command::Exclude);
        let selector = state.selector.trim().to_owned();
        let why = match &allowed {
            Err(why) => format!("Not now: {why}"),
            Ok(()) if !ready => "Type a reason first".to_owned(),
            Ok(()) if selector.is_empty() => "Say which devices to exclude".to_owned(),
            Ok(()) => String::new(),
        };
        let hint = "Take these devices out of the rest of the rollout: those not offered yet \
                    never are; those already updated stay (roll them back to move them)";
        if ui
            .add_enabled(
                ready && allowed.is_ok() && !selector.is_empty(),
                egui::Button::new("Exclude from the rest"),
            )
            .on_hover_text(hint)
            .on_disabled_hover_text(why)
            .clicked()
        {
            command = Some(OperatorCommand::Exclude {
                selector,
                reason: reason.clone(),
            });
        }
    });
    if let Some(confirmed) = confirm_ui(state, &id, ui) {
        command = Some(confirmed);
    }
    match &steerable {
        Err(why) => {
            ui.colored_label(tokens::WARN, format!("Cannot steer from here: {why}"));
        }
        Ok(()) if reason.is_empty() => {
            ui.label(RichText::new("Type a reason to enable the commands.").color(tokens::MUTED));
        }
        Ok(()) => {}
    }
    if let Some(command) = command {
        out.send(UiCommand::Steer {
            rollout_id: id.clone(),
            operator,
            command,
        });
    }
    // The answers to this rollout's commands, newest first.
    let answers: Vec<&crate::gui::app::SteerAnswer> = cx
        .steered
        .iter()
        .rev()
        .filter(|a| a.rollout_id == id)
        .collect();
    if let Some((rid, cmd, before)) = &state.awaiting {
        // Any answer that arrived since it was sent, not only the newest (a queued pause sent by
        // the mirror, or another view's command, may land in between).
        let since = usize::try_from(cx.steered_total.saturating_sub(*before)).unwrap_or(usize::MAX);
        let answered = cx
            .steered
            .iter()
            .rev()
            .take(since)
            .any(|a| a.rollout_id == *rid && a.command == *cmd);
        if answered {
            state.awaiting = None;
        } else if *rid == id {
            ui.label(format!(
                "{} sent; waiting for the engine's answer…",
                cmd.name()
            ));
        }
    }
    for a in answers.iter().take(5) {
        let (text, color) = match &a.result {
            Ok(phase) => (phase.clone(), tokens::OK),
            Err(why) => (format!("refused: {why}"), tokens::BAD),
        };
        ui.label(
            RichText::new(format!(
                "Answer to {} by {} (\"{}\"): {text}",
                a.command.name(),
                a.operator,
                a.command.reason()
            ))
            .color(color),
        );
    }
}

/// A value for a search term: quoted when it has a space.
fn quote_value(v: &str) -> String {
    if v.contains(char::is_whitespace) {
        format!("\"{v}\"")
    } else {
        v.to_owned()
    }
}

/// After a stop, what the operator can do next, in words (`None` while nothing waits for a
/// decision).
pub fn way_forward(data: &MonitorData) -> Option<String> {
    let Phase::Paused {
        reason,
        by_gate,
        rolled_back,
        ..
    } = &data.phase
    else {
        return None;
    };
    let next = if *rolled_back {
        "exclude what failed (a stratum, a region, a list of devices) and continue with the next \
         wave, roll back every device, or abort"
    } else if *by_gate {
        "override the gate with a reason, exclude what failed from the next waves, roll back the \
         wave, or abort"
    } else {
        "resume, exclude devices from the next waves, roll back, or abort"
    };
    let who = if *by_gate { "Stopped" } else { "Paused" };
    Some(format!("{who}: {reason}. Next: {next}."))
}

fn scope_words(scope: RollBackScope) -> &'static str {
    match scope {
        RollBackScope::CurrentWave => "the current wave",
        RollBackScope::All => "every device offered",
    }
}

/// The per-wave table.
fn waves_ui(ui: &mut egui::Ui, data: &MonitorData) {
    ui.label(RichText::new("Waves").strong());
    let current = match &data.phase {
        Phase::Running { wave } | Phase::Soaking { wave, .. } | Phase::Paused { wave, .. } => {
            Some(*wave)
        }
        _ => None,
    };
    egui::Grid::new("monitor-waves")
        .striped(true)
        .num_columns(11)
        .show(ui, |ui| {
            for h in [
                "wave",
                "devices",
                "offered",
                "downloading",
                "installed",
                "confirmed",
                "failed",
                "reverted",
                "silent",
                "excluded",
                "",
            ] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for (k, w) in data.waves.iter().enumerate() {
                ui.label(format!("{} {}", k + 1, w.name));
                let cells = [
                    (w.devices, None),
                    (w.offered, None),
                    (w.downloading, None),
                    (w.installed, None),
                    (w.confirmed, Some(tokens::OK)),
                    (w.failed, Some(tokens::BAD)),
                    (w.reverted, Some(tokens::BAD)),
                    (w.silent, Some(tokens::WARN)),
                    (w.excluded, Some(tokens::WARN)),
                ];
                for (n, color) in cells {
                    let text = RichText::new(n.to_string());
                    ui.label(match color {
                        Some(c) if n > 0 => text.color(c),
                        _ => text,
                    });
                }
                ui.label(if current == Some(k) {
                    RichText::new("current").strong()
                } else {
                    RichText::new("")
                });
                ui.end_row();
            }
        });
}

/// The most device ids a prerequisite stop names before "and N more".
const STOP_NAMES: usize = 12;

/// The line of one chain wave: each release with the devices that confirmed it (and those
/// installing it), then the target, and the devices stopped.
pub fn chain_line(c: &ChainProgress) -> String {
    let mut s = format!("{}: {} devices", c.wave, c.devices);
    for (k, release) in c.releases.iter().enumerate() {
        let confirmed = c.confirmed.get(k).copied().unwrap_or(0);
        let _ = write!(s, " -> {release} confirmed {confirmed}");
        match c.installing.get(k).copied().unwrap_or(0) {
            0 => {}
            n => {
                let _ = write!(s, " ({n} installing)");
            }
        }
    }
    let _ = write!(s, " -> target offered {}", c.target_offered);
    if c.stopped > 0 {
        let _ = write!(s, " · {} stopped at a prerequisite", c.stopped);
    }
    s
}

/// The lines of the devices stopped at prerequisites: the total, then each release with its
/// devices named (the first [`STOP_NAMES`], then how many more).
pub fn stop_lines(stops: &[PrerequisiteStop]) -> Vec<String> {
    if stops.is_empty() {
        return Vec::new();
    }
    let total: usize = stops.iter().map(|s| s.device_ids.len()).sum();
    let mut out = vec![format!(
        "Stopped at a prerequisite: {total} device{}",
        if total == 1 { "" } else { "s" }
    )];
    for stop in stops {
        let mut names = stop
            .device_ids
            .iter()
            .take(STOP_NAMES)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if stop.device_ids.len() > STOP_NAMES {
            let _ = write!(names, " and {} more", stop.device_ids.len() - STOP_NAMES);
        }
        out.push(format!(
            "at {}: {} ({names})",
            stop.release,
            stop.device_ids.len()
        ));
    }
    out
}

/// Prerequisite chains: each chain wave's progress, and the devices stopped at a prerequisite.
fn chains_ui(ui: &mut egui::Ui, data: &MonitorData) {
    ui.label(RichText::new("Prerequisite chains").strong());
    for c in &data.chains {
        ui.label(chain_line(c));
    }
    for (k, line) in stop_lines(&data.prerequisite_stops).into_iter().enumerate() {
        if k == 0 {
            ui.label(RichText::new(line).color(tokens::BAD).strong());
        } else {
            ui.label(line);
        }
    }
}

/// Adoption curves by the chosen cohort attribute.
fn adoption_ui(state: &mut MonitorState, ui: &mut egui::Ui, data: &MonitorData) {
    ui.horizontal(|ui| {
        ui.label(RichText::new("Adoption by").strong());
        for (k, name) in COHORT_NAMES.iter().enumerate() {
            if ui
                .add(egui::Button::selectable(state.attribute == k, *name))
                .clicked()
            {
                state.attribute = k;
            }
        }
    });
    let Some(curves) = data.adoption.get(state.attribute) else {
        return;
    };
    let mut largest: Vec<&AdoptionCurve> = curves.iter().collect();
    largest.sort_by(|a, b| b.targeted.cmp(&a.targeted).then(a.value.cmp(&b.value)));
    largest.truncate(ADOPTION_LINES);
    let response = egui_plot::Plot::new("monitor-adoption")
        .height(170.0)
        .allow_zoom(false)
        .allow_drag(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .include_y(0.0)
        .include_y(100.0)
        .include_x(0.0)
        .x_axis_label("hours since the rollout started")
        .y_axis_label("% confirmed")
        .legend(egui_plot::Legend::default().position(egui_plot::Corner::LeftTop))
        .show(ui, |plot_ui| {
            for c in &largest {
                plot_ui.line(
                    egui_plot::Line::new(
                        c.value.clone(),
                        egui_plot::PlotPoints::from(c.points.clone()),
                    )
                    .width(2.0),
                );
            }
        });
    let label = format!("adoption by {} plot", COHORT_NAMES[state.attribute]);
    response
        .response
        .widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, &label));
    let line: Vec<String> = curves
        .iter()
        .map(|c| {
            let pct = if c.targeted == 0 {
                0.0
            } else {
                c.healthy as f64 * 100.0 / c.targeted as f64
            };
            format!("{} {}/{} ({pct:.0}%)", c.value, c.healthy, c.targeted)
        })
        .collect();
    ui.label(RichText::new(line.join(" · ")).small());
}

/// Cohort health against baseline for every gated metric, two plots a row.
fn health_ui(ui: &mut egui::Ui, data: &MonitorData) {
    ui.label(RichText::new("Cohort health against baseline").strong());
    let series = &data.health;
    let drawn: Vec<&MetricSeries> = series
        .metrics
        .iter()
        .filter(|m| !m.points.is_empty())
        .collect();
    if drawn.is_empty() {
        ui.label(RichText::new("No health samples yet.").color(tokens::MUTED));
        return;
    }
    let style = PlotStyle {
        text_size: 13.0,
        height: 120.0,
        id_salt: "monitor-health",
    };
    for pair in drawn.chunks(2) {
        ui.columns(2, |cols| {
            for (col, m) in cols.iter_mut().zip(pair) {
                warroom::metric_plot_ui(col, series, m, &style);
            }
        });
    }
    let missing: Vec<&str> = series
        .metrics
        .iter()
        .filter(|m| m.points.is_empty())
        .map(|m| m.metric.as_str())
        .collect();
    if !missing.is_empty() {
        ui.label(
            RichText::new(format!("No samples yet: {}", missing.join(", "))).color(tokens::MUTED),
        );
    }
    warroom::last_stop_ui(ui, series, 13.0);
}

/// A gate finding as the figures [`crate::gui::warroom::plain_evidence`] puts in words.
fn plain_figures(f: &convoy_core::gates::Finding) -> convoy_core::comms::FindingFigures {
    convoy_core::comms::FindingFigures {
        metric: f.metric.clone(),
        stratum: f.stratum.clone(),
        observed: f.observed,
        baseline: f.baseline,
        p_value: f.p_value,
        sample: f.sample,
        counts: f.counts.map(|c| {
            (
                c.updated_events,
                c.updated_device_hours,
                c.baseline_events,
                c.baseline_device_hours,
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prerequisite_stops_are_counted_and_named_the_first_twelve_then_how_many_more() {
        assert!(stop_lines(&[]).is_empty(), "no stop, no line");
        let ids = |n: usize, p: &str| (0..n).map(|i| format!("{p}-{i:02}")).collect();
        let lines = stop_lines(&[
            PrerequisiteStop {
                release: "bl".into(),
                device_ids: ids(15, "a"),
            },
            PrerequisiteStop {
                release: "modem".into(),
                device_ids: ids(1, "b"),
            },
        ]);
        assert_eq!(lines[0], "Stopped at a prerequisite: 16 devices");
        assert!(
            lines[1].starts_with("at bl: 15 (a-00, a-01,")
                && lines[1].ends_with("a-11 and 3 more)"),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], "at modem: 1 (b-00)");
        let line = chain_line(&ChainProgress {
            wave: "after-prerequisites-1".into(),
            releases: vec!["bl".into(), "modem".into()],
            devices: 9,
            confirmed: vec![6, 2],
            installing: vec![0, 3],
            target_offered: 2,
            stopped: 1,
        });
        assert_eq!(
            line,
            "after-prerequisites-1: 9 devices -> bl confirmed 6 -> modem confirmed 2 (3 installing) -> target offered 2 · 1 stopped at a prerequisite"
        );
    }

    #[test]
    fn paced_offers_say_why_they_wait_and_when_the_next_is_due() {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = Store::open(&dir.path().join("c.db")).expect("cache");
        assert_eq!(schedule_note(&store, "ro"), None, "no entry, no note");
        let event = |seq: i64, t: i64, payload: &str| crate::store::events::Event {
            rollout_id: "ro".into(),
            seq,
            time: Timestamp::from_secs(t),
            kind: "schedule.waiting".into(),
            cause: "schedule".into(),
            payload: payload.into(),
        };
        store
            .copy_timeline_events(
                "ro",
                &[
                    event(1, 1_800_000_000, r#"{"why": "hourly bandwidth cap reached"}"#),
                    event(
                        2,
                        1_800_000_600,
                        r#"{"why": "window closed for 4 depots until 22:00 local", "next_offer_at": 1800036000}"#,
                    ),
                ],
            )
            .expect("timeline");
        let note = schedule_note(&store, "ro").expect("a note");
        assert!(
            note.starts_with("window closed for 4 depots until 22:00 local (since "),
            "{note}"
        );
        assert!(
            note.ends_with(&format!(
                "; next offer at {}",
                Timestamp::from_secs(1_800_036_000)
            )),
            "{note}"
        );
    }
    use convoy_core::rollout::sim::{Fault, FaultKind, SimConfig, SimFleet};
    use convoy_core::rollout::{ChangePath, RolloutSpec, WaveSpec};
    use convoy_core::synth::{SynthOptions, generate};

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    /// A two-wave rollout of `fleet` (canary of 60, the rest after) run by the core's
    /// simulated fleet with `faults` until it ends or stops.
    fn simulated(fleet: &Fleet, faults: Vec<Fault>) -> Rollout {
        let ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
        let spec = RolloutSpec {
            id: "ro".into(),
            release_id: "rel".into(),
            requested_by: "alice".into(),
            waves: vec![
                WaveSpec {
                    name: "canary".into(),
                    device_ids: ids[..60].to_vec(),
                    soak_secs: 86_400,
                },
                WaveSpec {
                    name: "fleet".into(),
                    device_ids: ids[60..].to_vec(),
                    soak_secs: 86_400,
                },
            ],
            gates: convoy_core::gates::GatePolicy::default(),
            path: ChangePath::Standard,
        };
        let mut rollout = Rollout::new(T0, spec, fleet).expect("a valid spec");
        rollout.approve(T0, "bob").expect("approve");
        rollout.approve(T0, "carol").expect("approve");
        let config = SimConfig {
            faults,
            telemetry_every_secs: 900,
            ..SimConfig::default()
        };
        let mut sim = SimFleet::new(fleet, &rollout, config, T0);
        let _ = sim.run(&mut rollout, T0, T0.plus_secs(10 * 86_400));
        rollout
    }

    fn fleet() -> Fleet {
        generate(&SynthOptions {
            devices: 200,
            seed: 11,
            now: T0,
        })
    }

    #[test]
    fn wave_counts_count_each_device_once_by_its_state() {
        let fleet = fleet();
        let rollout = simulated(
            &fleet,
            vec![Fault {
                attribute: None,
                kind: FaultKind::InstallFailure(0.4),
            }],
        );
        let state = rollout.state();
        assert!(
            matches!(state.phase, Phase::Paused { by_gate: true, .. }),
            "{:?}",
            state.phase
        );
        let waves = wave_counts(state);
        assert_eq!(waves.len(), 2);
        assert_eq!((waves[0].name.as_str(), waves[0].devices), ("canary", 60));
        assert_eq!(waves[1].devices, 140);
        for w in &waves {
            let by_state = w.downloading + w.installed + w.confirmed + w.failed + w.reverted;
            assert_eq!(by_state, w.offered, "{w:?}");
        }
        // The canary was offered whole and its install failures counted; the second wave
        // was never offered, the gate having paused the rollout.
        assert_eq!(waves[0].offered, 60);
        assert!(waves[0].failed > 0, "{:?}", waves[0]);
        assert_eq!(waves[1].offered, 0);
        // The same numbers as the state machine's own lists.
        let total = |s: DeviceState| rollout.devices_in(s).len() as u32;
        assert_eq!(
            waves.iter().map(|w| w.confirmed).sum::<u32>(),
            total(DeviceState::Healthy)
        );
        assert_eq!(
            waves.iter().map(|w| w.failed).sum::<u32>(),
            total(DeviceState::Failed)
        );
    }

    #[test]
    fn a_silent_device_is_counted_as_silent_until_it_finishes() {
        let fleet = fleet();
        let rollout = simulated(
            &fleet,
            vec![Fault {
                attribute: None,
                kind: FaultKind::SilentAfterReboot(0.5),
            }],
        );
        let waves = wave_counts(rollout.state());
        let silent: u32 = waves.iter().map(|w| w.silent).sum();
        let expected = rollout
            .state()
            .devices
            .iter()
            .filter(|d| d.silent && !d.state.is_terminal())
            .count() as u32;
        assert_eq!(silent, expected);
        assert!(silent > 0, "{waves:?}");
    }

    #[test]
    fn adoption_curves_end_at_the_adoption_the_core_reports() {
        let fleet = fleet();
        let rollout = simulated(&fleet, Vec::new());
        assert_eq!(rollout.phase(), &Phase::Completed);
        for attribute in COHORT_ATTRIBUTES {
            let curves = adoption_curves(&rollout, &fleet, attribute, 3600);
            let core = convoy_core::metrics::adoption_by(&rollout, &fleet, attribute);
            assert_eq!(curves.len(), core.len(), "{attribute}");
            for (c, a) in curves.iter().zip(&core) {
                assert_eq!(
                    (&c.value, c.targeted, c.healthy),
                    (&a.value, a.targeted, a.healthy)
                );
                let last = c.points.last().expect("points");
                assert!((last[1] - a.adoption_ratio * 100.0).abs() < 1e-9, "{c:?}");
                assert_eq!(c.points[0], [0.0, 0.0], "nobody has it at the start");
                // Adoption never falls in a rollout with no rollback.
                assert!(
                    c.points
                        .windows(2)
                        .all(|p| p[1][1] >= p[0][1] && p[1][0] > p[0][0])
                );
            }
        }
    }

    /// The outcomes of every wave and stratum of `rollout`, added up.
    fn outcome_totals(rollout: &Rollout) -> OutcomeAgg {
        let mut total = OutcomeAgg::default();
        for o in rollout.state().outcomes.iter().flatten() {
            total.offered += o.offered;
            total.installed += o.installed;
            total.healthy += o.healthy;
            total.install_failed += o.install_failed;
            total.boot_failed += o.boot_failed;
            total.silent += o.silent;
        }
        total
    }

    /// What the wall showed: "install_failure: updated 53.33 %" while the gate that stopped the
    /// wave said 16 of 100 (16%): the plot left out the devices offered and still downloading,
    /// which the gate counts. At every moment of a rollout, not only at its end, the plot's
    /// last point is the gate's own proportion.
    #[test]
    fn proportions_agree_with_the_gate_at_every_moment_not_only_at_the_end() {
        let fleet = fleet();
        let rollout = simulated(
            &fleet,
            vec![Fault {
                attribute: None,
                kind: FaultKind::InstallFailure(0.4),
            }],
        );
        let log = rollout.events().to_vec();
        let mut compared_in_flight = 0;
        for cut in (2..log.len()).step_by((log.len() / 40).max(1)) {
            let partial = Rollout::replay(log[..cut].to_vec()).expect("a prefix replays");
            let total = outcome_totals(&partial);
            let (failures, judged) = total.proportion("install_failure");
            if judged > u64::from(total.installed + total.install_failed) {
                compared_in_flight += 1;
            }
            let series = proportion_series(&partial, 900);
            let install = series
                .iter()
                .find(|s| s.metric == "install_failure")
                .expect("the install-failure series");
            let Some(last) = install.points.last() else {
                continue;
            };
            assert_eq!(last.updated_weight, judged as f64, "at event {cut}");
            let expected = (judged > 0).then(|| failures as f64 * 100.0 / judged as f64);
            assert_eq!(last.updated, expected, "at event {cut}");
        }
        assert!(
            compared_in_flight > 0,
            "some moments had devices offered and not yet answered"
        );
    }

    #[test]
    fn proportions_end_where_the_state_machines_outcomes_do() {
        let fleet = fleet();
        for kind in [
            FaultKind::InstallFailure(0.4),
            FaultKind::CrashLoop,
            FaultKind::SilentAfterReboot(0.5),
        ] {
            let rollout = simulated(
                &fleet,
                vec![Fault {
                    attribute: None,
                    kind: kind.clone(),
                }],
            );
            let total = outcome_totals(&rollout);
            let series = proportion_series(&rollout, 900);
            let names: Vec<&str> = series.iter().map(|s| s.metric.as_str()).collect();
            assert_eq!(names, ["boot_failure", "install_failure", "silent"]);
            for s in &series {
                let (failures, judged) = total.proportion(&s.metric);
                let last = s.points.last().expect("a point");
                assert_eq!(last.updated_weight, judged as f64, "{kind:?} {}", s.metric);
                let expected = (judged > 0).then(|| failures as f64 * 100.0 / judged as f64);
                assert_eq!(last.updated, expected, "{kind:?} {}", s.metric);
                assert!(last.baseline.is_some_and(|b| b > 0.0));
            }
        }
    }

    #[test]
    fn a_reading_has_every_gated_metric_and_the_map() {
        let fleet = fleet();
        let rollout = simulated(
            &fleet,
            vec![Fault {
                attribute: None,
                kind: FaultKind::InstallFailure(0.4),
            }],
        );
        let log = rollout.events().to_vec();
        let rows = log.len() as i64;
        let data = read_rollout("ro", log, rows, Some(&fleet)).expect("replays");
        let metrics: Vec<&str> = data
            .health
            .metrics
            .iter()
            .map(|m| m.metric.as_str())
            .collect();
        for m in [
            "crash",
            "reconnect_failure",
            "support_contacts",
            "reconnect_time",
            "battery_drain",
            "boot_failure",
            "install_failure",
            "silent",
        ] {
            assert!(metrics.contains(&m), "{m} in {metrics:?}");
        }
        assert_eq!(data.adoption.len(), COHORT_ATTRIBUTES.len());
        assert_eq!(data.map.device_ids.len(), 200);
        assert!(
            data.map.classes.contains(&5),
            "failed devices are coloured as failed"
        );
        let report = data.last_report.expect("the gate's evidence");
        assert!(
            report.failures().any(|f| f.metric == "install_failure"),
            "{report:?}"
        );
        let bad = read_rollout("ro", Vec::new(), 0, None).expect_err("an empty log");
        assert!(bad.contains("rollout ro"), "{bad}");
    }
}
