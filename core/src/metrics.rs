//! Rollout metrics computed from event logs: time to remediate and to recover, patch lead
//! time, adoption by cohort, rollout success and rollback count.
//!
//! Every figure is a fold over a rollout's events (or its final state joined with the fleet),
//! so it can be recomputed from the store at any time. Not a time-series store, and not live:
//! call it when a report or a dashboard needs the numbers.
//!
//! Definitions (also in docs/GATES.md):
//! - time to remediate: rollout created (the fix released for rollout) → rollout completed;
//! - time to recover: a gate stop (gate pause or gate rollback) → the rollback finished or the
//!   rollout resumed, whichever comes first;
//! - patch lead time: rollout created → 95% of its devices confirmed healthy;
//! - rollout success: devices confirmed healthy / devices targeted.

use crate::fleet::Fleet;
use crate::rollout::{Cause, DeviceState, EventKind, Phase, Rollout};
use serde::{Deserialize, Serialize};

/// Share of targeted devices that counts as "deployed" for the patch lead time.
pub const DEPLOYED_RATIO: f64 = 0.95;

/// The attributes adoption is broken down by.
pub const COHORT_ATTRIBUTES: [&str; 5] =
    ["model", "customer_tier", "region", "connectivity", "power"];

/// Metrics of one rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutMetrics {
    pub rollout_id: String,
    pub targeted: u64,
    pub healthy: u64,
    pub failed: u64,
    pub reverted: u64,
    pub silent: u64,
    /// healthy / targeted.
    pub success_ratio: f64,
    pub completed: bool,
    pub rollback_count: u32,
    pub time_to_remediate_secs: Option<i64>,
    pub patch_lead_time_secs: Option<i64>,
    /// One entry per gate stop that was recovered from, in order.
    pub recoveries_secs: Vec<i64>,
    /// Devices stopped at a prerequisite release (prerequisite chains), by release in chain
    /// order: "stopped at prerequisite X: N devices".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped_at_prerequisite: Vec<(String, u64)>,
}

/// Adoption of a rollout in one cohort.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adoption {
    pub attribute: String,
    pub value: String,
    pub targeted: u64,
    pub healthy: u64,
    pub adoption_ratio: f64,
}

/// Means over many rollouts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryMetrics {
    pub rollouts: u64,
    pub completed: u64,
    pub rollback_count: u64,
    pub mean_time_to_remediate_secs: Option<f64>,
    pub mean_time_to_recover_secs: Option<f64>,
    pub mean_patch_lead_time_secs: Option<f64>,
    pub mean_success_ratio: Option<f64>,
}

/// Metrics of one rollout, by folding its events.
pub fn rollout_metrics(rollout: &Rollout) -> RolloutMetrics {
    let state = rollout.state();
    let targeted = state.devices.len() as u64;
    let needed = (targeted as f64 * DEPLOYED_RATIO).ceil() as u64;
    let mut states = vec![DeviceState::Pending; state.devices.len()];
    let mut healthy_now = 0u64;
    let mut lead = None;
    let mut stopped_at = None;
    let mut recoveries = Vec::new();
    let mut completed_at = None;
    let mut rollbacks = 0;
    for e in rollout.events() {
        match &e.kind {
            EventKind::Device { device, state: to } => {
                let Some(from) = states.get_mut(*device as usize) else {
                    continue;
                };
                if *from != DeviceState::Healthy && *to == DeviceState::Healthy {
                    healthy_now += 1;
                } else if *from == DeviceState::Healthy && *to != DeviceState::Healthy {
                    healthy_now -= 1;
                }
                *from = *to;
                if lead.is_none() && targeted > 0 && healthy_now >= needed {
                    lead = Some(e.at.secs_since(state.created_at));
                }
            }
            EventKind::Paused { by_gate: true, .. } if stopped_at.is_none() => {
                stopped_at = Some(e.at);
            }
            EventKind::RollbackStarted { .. } => {
                rollbacks += 1;
                if e.cause == Cause::Gate && stopped_at.is_none() {
                    stopped_at = Some(e.at);
                }
            }
            EventKind::RollbackFinished { .. } | EventKind::Resumed => {
                if let Some(t) = stopped_at.take() {
                    recoveries.push(e.at.secs_since(t));
                }
            }
            EventKind::Completed => completed_at = Some(e.at),
            _ => {}
        }
    }
    let count = |s: DeviceState| state.devices.iter().filter(|d| d.state == s).count() as u64;
    let healthy = count(DeviceState::Healthy);
    RolloutMetrics {
        rollout_id: state.spec.id.clone(),
        targeted,
        healthy,
        failed: count(DeviceState::Failed),
        reverted: count(DeviceState::Reverted),
        silent: state.devices.iter().filter(|d| d.silent).count() as u64,
        success_ratio: if targeted == 0 {
            0.0
        } else {
            healthy as f64 / targeted as f64
        },
        completed: matches!(state.phase, Phase::Completed),
        rollback_count: rollbacks,
        time_to_remediate_secs: completed_at.map(|t| t.secs_since(state.created_at)),
        patch_lead_time_secs: lead,
        recoveries_secs: recoveries,
        stopped_at_prerequisite: rollout
            .prerequisite_stops()
            .into_iter()
            .map(|s| (s.release, s.device_ids.len() as u64))
            .collect(),
    }
}

/// Adoption by the values of `attribute` (see `Device::attribute`), sorted by value.
/// Devices missing from `fleet` count under the value `-`.
pub fn adoption_by(rollout: &Rollout, fleet: &Fleet, attribute: &str) -> Vec<Adoption> {
    let state = rollout.state();
    let mut rows: Vec<(String, u64, u64)> = Vec::new();
    let mut keyed: Vec<(String, bool)> = state
        .device_ids
        .iter()
        .zip(&state.devices)
        .map(|(id, d)| {
            let value = fleet
                .device(id)
                .and_then(|dev| dev.attribute(attribute))
                .unwrap_or_else(|| "-".to_owned());
            (value, d.state == DeviceState::Healthy)
        })
        .collect();
    keyed.sort_unstable();
    for (value, healthy) in keyed {
        match rows.last_mut() {
            Some((v, t, h)) if *v == value => {
                *t += 1;
                *h += u64::from(healthy);
            }
            _ => rows.push((value, 1, u64::from(healthy))),
        }
    }
    rows.into_iter()
        .map(|(value, targeted, healthy)| Adoption {
            attribute: attribute.to_owned(),
            value,
            targeted,
            healthy,
            adoption_ratio: healthy as f64 / targeted as f64,
        })
        .collect()
}

/// Adoption by model, tier, region, network and power state.
pub fn adoption_by_cohort(rollout: &Rollout, fleet: &Fleet) -> Vec<Adoption> {
    COHORT_ATTRIBUTES
        .iter()
        .flat_map(|a| adoption_by(rollout, fleet, a))
        .collect()
}

/// Means over several rollouts' metrics.
pub fn summarize(all: &[RolloutMetrics]) -> SummaryMetrics {
    fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
        let (n, sum) = values.fold((0u64, 0.0), |(n, s), v| (n + 1, s + v));
        (n > 0).then(|| sum / n as f64)
    }
    SummaryMetrics {
        rollouts: all.len() as u64,
        completed: all.iter().filter(|m| m.completed).count() as u64,
        rollback_count: all.iter().map(|m| u64::from(m.rollback_count)).sum(),
        mean_time_to_remediate_secs: mean(
            all.iter()
                .filter_map(|m| m.time_to_remediate_secs)
                .map(|s| s as f64),
        ),
        mean_time_to_recover_secs: mean(
            all.iter()
                .flat_map(|m| m.recoveries_secs.iter())
                .map(|s| *s as f64),
        ),
        mean_patch_lead_time_secs: mean(
            all.iter()
                .filter_map(|m| m.patch_lead_time_secs)
                .map(|s| s as f64),
        ),
        mean_success_ratio: mean(all.iter().map(|m| m.success_ratio)),
    }
}
