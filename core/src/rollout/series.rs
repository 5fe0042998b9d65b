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
    let Some(last) = events.last() else {
        return HealthSeries::default();
    };
    let mut builder = SeriesBuilder::new(last.at);
    for e in events {
        builder.push(e);
    }
    builder.finish()
}

/// [`health_series`] event by event, so a log read from the cache row by row never has to be
/// held whole: a long rollout's log is hundreds of thousands of events, and reading it into one
/// list at every refresh grew the console's memory with the log (issue 19). Built with the
/// log's last event time (the end of the time axis, which sets the step); gives exactly what
/// [`health_series`] gives for the same events.
pub struct SeriesBuilder {
    end: Timestamp,
    /// Events before the `Created` event (none in a log the engine wrote), replayed once it
    /// comes.
    before: Vec<RolloutEvent>,
    fold: Option<Fold>,
}

/// The fold once the `Created` event gave the gates and the origin.
struct Fold {
    start: Timestamp,
    step: i64,
    layout: MetricLayout,
    metric_gates: Vec<(String, MetricKind, f64)>,
    updated: crate::gates::CohortAgg,
    baseline: crate::gates::CohortAgg,
    metrics: Vec<MetricSeries>,
    states: Vec<DeviceState>,
    markers: Vec<SeriesMarker>,
    next_point: i64,
    dirty: bool,
}

impl SeriesBuilder {
    /// A builder for a log whose last event is at `end`.
    pub fn new(end: Timestamp) -> Self {
        Self {
            end,
            before: Vec::new(),
            fold: None,
        }
    }

    /// Adds the log's next event.
    pub fn push(&mut self, e: &RolloutEvent) {
        if let Some(fold) = &mut self.fold {
            fold.push(e);
            return;
        }
        let EventKind::Created { spec, .. } = &e.kind else {
            self.before.push(e.clone());
            return;
        };
        let mut fold = Fold::new(e.at, &spec.gates, self.end);
        for early in std::mem::take(&mut self.before) {
            fold.push(&early);
        }
        fold.push(e);
        self.fold = Some(fold);
    }

    /// The series of the events pushed (empty without a `Created` event).
    pub fn finish(self) -> HealthSeries {
        let Some(mut fold) = self.fold else {
            return HealthSeries::default();
        };
        if fold.dirty {
            fold.emit(self.end.secs());
        }
        HealthSeries {
            metrics: fold.metrics,
            markers: fold.markers,
            step_secs: fold.step,
            started_at: fold.start,
        }
    }
}

impl Fold {
    fn new(start: Timestamp, gates: &crate::gates::GatePolicy, end: Timestamp) -> Self {
        let end = if end < start { start } else { end };
        let span = (end.secs() - start.secs()).max(1);
        let step = (span / MAX_POINTS as i64 + 1).max(gates.evaluate_every_secs.max(60));
        let layout = MetricLayout::new(gates);
        let updated = layout.empty_cohort();
        let baseline = layout.empty_cohort();
        let metric_gates: Vec<(String, MetricKind, f64)> = gates
            .metric_gates()
            .into_iter()
            .filter(|(_, kind, g)| g.enabled && matches!(kind, MetricKind::Rate | MetricKind::Mean))
            .map(|(n, k, g)| (n.to_owned(), k, g.max_ratio))
            .collect();
        let metrics = metric_gates
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
        Self {
            start,
            step,
            layout,
            metric_gates,
            updated,
            baseline,
            metrics,
            states: Vec::new(),
            markers: Vec::new(),
            next_point: start.secs() + step,
            dirty: false,
        }
    }

    fn emit(&mut self, at: i64) {
        let layout = &self.layout;
        for (series, (name, kind, _)) in self.metrics.iter_mut().zip(&self.metric_gates) {
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
            let (u, uw) = value(&self.updated);
            let (b, bw) = value(&self.baseline);
            series.points.push(SeriesPoint {
                at: Timestamp::from_secs(at),
                updated: u,
                baseline: b,
                updated_weight: uw,
                baseline_weight: bw,
            });
        }
    }

    fn push(&mut self, e: &RolloutEvent) {
        if e.at.secs() >= self.next_point {
            if self.dirty {
                self.emit(self.next_point);
                self.dirty = false;
            }
            // Past this event in one go: quiet stretches get no points.
            self.next_point += self.step * ((e.at.secs() - self.next_point) / self.step + 1);
        }
        let marker = |label: &str, stop: bool| SeriesMarker {
            at: e.at,
            label: label.to_owned(),
            stop,
        };
        match &e.kind {
            EventKind::Device { device, state } => {
                let i = *device as usize;
                if self.states.len() <= i {
                    self.states.resize(i + 1, DeviceState::Pending);
                }
                self.states[i] = *state;
            }
            EventKind::Telemetry { device, sample } => {
                let state = self
                    .states
                    .get(*device as usize)
                    .copied()
                    .unwrap_or(DeviceState::Pending);
                if state.runs_new_version() {
                    add_sample(&mut self.updated, &self.layout, sample);
                    self.dirty = true;
                } else if state.runs_old_version() {
                    add_sample(&mut self.baseline, &self.layout, sample);
                    self.dirty = true;
                }
            }
            EventKind::WaveStarted { wave } => self
                .markers
                .push(marker(&format!("wave {} started", wave + 1), false)),
            EventKind::GateChecked { outcome, .. } if *outcome != GateOutcome::Continue => {
                self.markers.push(marker(
                    &format!("gate: {}", outcome_word(*outcome)),
                    *outcome != GateOutcome::Hold,
                ));
            }
            EventKind::SoakExtended { .. } => self.markers.push(marker("gate: hold", false)),
            EventKind::Paused { by_gate: false, .. } => {
                self.markers.push(marker("paused by an operator", true));
            }
            EventKind::Resumed => self.markers.push(marker("resumed", false)),
            EventKind::RollbackStarted { .. } => self.markers.push(marker("rollback", true)),
            EventKind::Aborted { .. } => self.markers.push(marker("aborted", true)),
            _ => {}
        }
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
