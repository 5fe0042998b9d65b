//! Cohort health over time, from a rollout's replayable event log: for every gated rate and
//! mean metric, the updated cohort (devices running the new version) against the baseline
//! (devices still on the old one), cumulative since the rollout started, sampled at fixed
//! steps, with the gate's tolerated ratio and the decisions marked on the time axis. What the
//! war-room wall and the rollout monitor plot.
//!
//! The numbers are the gates' own: each health sample is added to its cohort by the same
//! function the state machine's aggregates use, so a plot never disagrees with a gate about
//! what was observed. They are whole-rollout figures, not per wave or per stratum: a gate that
//! stopped a rollout on one stratum shows on the plot as its decision marker, with its evidence
//! in the decision itself.

use super::{DeviceState, EventKind, RolloutEvent, add_sample};
use crate::gates::{GateOutcome, MetricKind, MetricLayout};
use crate::time::Timestamp;
use serde::Serialize;

/// The most points per metric: longer rollouts are sampled at wider steps.
pub const MAX_POINTS: usize = 240;

/// One metric's two cohorts over time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricSeries {
    pub metric: String,
    /// `per 1,000 device-hours` for rate metrics; the value's unit is the metric's for means.
    pub unit: &'static str,
    /// The gate's tolerated ratio updated / baseline.
    pub max_ratio: f64,
    pub points: Vec<SeriesPoint>,
}

/// Cumulative values at one moment; `None` while a cohort has no sample yet.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SeriesPoint {
    pub at: Timestamp,
    pub updated: Option<f64>,
    pub baseline: Option<f64>,
    /// Device-hours (rates) or samples (means) behind each value.
    pub updated_weight: f64,
    pub baseline_weight: f64,
}

/// A decision or milestone on the time axis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesMarker {
    pub at: Timestamp,
    pub label: String,
    /// A stop: a pause, a rollback or an abort.
    pub stop: bool,
}

/// The health series of one rollout.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HealthSeries {
    pub metrics: Vec<MetricSeries>,
    pub markers: Vec<SeriesMarker>,
    /// The time step between points, in seconds.
    pub step_secs: i64,
    /// When the rollout was created: the origin of the time axis.
    pub started_at: Timestamp,
}

/// Builds the series from a rollout's log (its `Created` event first). A log without one gives
/// an empty series.
pub fn health_series(events: &[RolloutEvent]) -> HealthSeries {
    let Some((start, gates)) = events.iter().find_map(|e| match &e.kind {
        EventKind::Created { spec, .. } => Some((e.at, spec.gates.clone())),
        _ => None,
    }) else {
        return HealthSeries::default();
    };
    let end = events.last().map_or(start, |e| e.at);
    let span = (end.secs() - start.secs()).max(1);
    let step = (span / MAX_POINTS as i64 + 1).max(gates.evaluate_every_secs.max(60));
    let layout = MetricLayout::new(&gates);
    let mut updated = layout.empty_cohort();
    let mut baseline = layout.empty_cohort();
    let metric_gates: Vec<(String, MetricKind, f64)> = gates
        .metric_gates()
        .into_iter()
        .filter(|(_, kind, g)| g.enabled && matches!(kind, MetricKind::Rate | MetricKind::Mean))
        .map(|(n, k, g)| (n.to_owned(), k, g.max_ratio))
        .collect();
    let mut metrics: Vec<MetricSeries> = metric_gates
        .iter()
        .map(|(name, kind, max_ratio)| MetricSeries {
            metric: name.clone(),
            unit: if *kind == MetricKind::Rate {
                "per 1,000 device-hours"
            } else {
                "mean"
            },
            max_ratio: *max_ratio,
            points: Vec::new(),
        })
        .collect();
    let mut states: Vec<DeviceState> = Vec::new();
    let mut markers = Vec::new();
    let mut next_point = start.secs() + step;
    let mut dirty = false;
    let emit = |at: i64,
                updated: &crate::gates::CohortAgg,
                baseline: &crate::gates::CohortAgg,
                metrics: &mut Vec<MetricSeries>| {
        for (series, (name, kind, _)) in metrics.iter_mut().zip(&metric_gates) {
            let value = |c: &crate::gates::CohortAgg| -> (Option<f64>, f64) {
                if *kind == MetricKind::Rate {
                    let hours = c.exposure_secs / 3600.0;
                    let count = layout.rate_slot(name).map_or(0, |s| c.counts[s]);
                    ((hours > 0.0).then(|| count as f64 / hours * 1000.0), hours)
                } else {
                    let m = layout.mean_slot(name).map(|s| c.means[s]);
                    let n = m.map_or(0, |m| m.n);
                    (m.filter(|m| m.n > 0).map(|m| m.sum / m.n as f64), n as f64)
                }
            };
            let (u, uw) = value(updated);
            let (b, bw) = value(baseline);
            series.points.push(SeriesPoint {
                at: Timestamp::from_secs(at),
                updated: u,
                baseline: b,
                updated_weight: uw,
                baseline_weight: bw,
            });
        }
    };
    for e in events {
        if e.at.secs() >= next_point {
            if dirty {
                emit(next_point, &updated, &baseline, &mut metrics);
                dirty = false;
            }
            // Past this event in one go: quiet stretches get no points.
            next_point += step * ((e.at.secs() - next_point) / step + 1);
        }
        match &e.kind {
            EventKind::Device { device, state } => {
                let i = *device as usize;
                if states.len() <= i {
                    states.resize(i + 1, DeviceState::Pending);
                }
                states[i] = *state;
            }
            EventKind::Telemetry { device, sample } => {
                let state = states
                    .get(*device as usize)
                    .copied()
                    .unwrap_or(DeviceState::Pending);
                if state.runs_new_version() {
                    add_sample(&mut updated, &layout, sample);
                    dirty = true;
                } else if state.runs_old_version() {
                    add_sample(&mut baseline, &layout, sample);
                    dirty = true;
                }
            }
            EventKind::WaveStarted { wave } => markers.push(SeriesMarker {
                at: e.at,
                label: format!("wave {} started", wave + 1),
                stop: false,
            }),
            EventKind::GateChecked { outcome, .. } if *outcome != GateOutcome::Continue => {
                markers.push(SeriesMarker {
                    at: e.at,
                    label: format!("gate: {}", outcome_word(*outcome)),
                    stop: *outcome != GateOutcome::Hold,
                });
            }
            EventKind::SoakExtended { .. } => markers.push(SeriesMarker {
                at: e.at,
                label: "gate: hold".into(),
                stop: false,
            }),
            EventKind::Paused { by_gate: false, .. } => markers.push(SeriesMarker {
                at: e.at,
                label: "paused by an operator".into(),
                stop: true,
            }),
            EventKind::Resumed => markers.push(SeriesMarker {
                at: e.at,
                label: "resumed".into(),
                stop: false,
            }),
            EventKind::RollbackStarted { .. } => markers.push(SeriesMarker {
                at: e.at,
                label: "rollback".into(),
                stop: true,
            }),
            EventKind::Aborted { .. } => markers.push(SeriesMarker {
                at: e.at,
                label: "aborted".into(),
                stop: true,
            }),
            _ => {}
        }
    }
    if dirty {
        emit(end.secs(), &updated, &baseline, &mut metrics);
    }
    HealthSeries {
        metrics,
        markers,
        step_secs: step,
        started_at: start,
    }
}

fn outcome_word(o: GateOutcome) -> &'static str {
    match o {
        GateOutcome::Continue => "continue",
        GateOutcome::Hold => "hold",
        GateOutcome::Pause => "pause",
        GateOutcome::RollBackWave => "roll back the wave",
        GateOutcome::RollBackAll => "roll back everything",
    }
}
