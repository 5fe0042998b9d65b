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

// Time to remediate from a finding's detection (issue 20).

/// The finding a rollout remediates, as the remediation metrics need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemediatedFinding {
    pub finding_id: String,
    /// The finding's classification (`security`, `stability`, ...).
    pub classification: String,
    /// When the defect was detected: time to remediate counts from here.
    pub detected_at: crate::time::Timestamp,
    /// `detected_at` (the finding's own field) or `recorded` (the finding has none: when it
    /// entered the cache).
    pub detected_from: String,
}

/// Time to remediate of one rollout that names its finding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Remediation {
    pub rollout_id: String,
    pub finding_id: String,
    pub classification: String,
    /// RFC 3339.
    pub detected_at: String,
    pub detected_from: String,
    /// The finding's detection → the rollout completed (`None` while it has not).
    pub time_to_remediate_secs: Option<i64>,
    /// Devices confirmed healthy on the fix.
    pub devices_remediated: u64,
}

/// Time to remediate over the devices of one group (a classification, a model, a region):
/// each device counts from its finding's detection to its last confirmation as healthy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemediationGroup {
    /// `classification`, `model` or `region`.
    pub attribute: String,
    pub value: String,
    pub devices: u64,
    pub mean_secs: f64,
    pub max_secs: i64,
}

/// Time to remediate of the rollouts that name a finding, and broken down by the finding's
/// classification and the devices' model and region.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RemediationReport {
    pub rollouts: Vec<Remediation>,
    pub mean_time_to_remediate_secs: Option<f64>,
    /// By `classification`, then `model`, then `region`, each sorted by value.
    pub by: Vec<RemediationGroup>,
}

/// The attributes time to remediate is broken down by, beside the finding's classification.
pub const REMEDIATION_ATTRIBUTES: [&str; 2] = ["model", "region"];

/// Time to remediate from each finding's detection, for `rollouts` (each with the finding it
/// remediates), over `fleet` for the devices' model and region (`-` for a device it lacks).
pub fn remediation(
    rollouts: &[(&Rollout, &RemediatedFinding)],
    fleet: &Fleet,
) -> RemediationReport {
    use std::collections::BTreeMap;
    // (attribute, value) -> (devices, sum, max)
    let mut groups: BTreeMap<(usize, String), (u64, i64, i64)> = BTreeMap::new();
    let mut out = RemediationReport::default();
    for (rollout, finding) in rollouts {
        let state = rollout.state();
        let mut healthy_at: Vec<Option<crate::time::Timestamp>> = vec![None; state.devices.len()];
        let mut completed_at = None;
        for e in rollout.events() {
            match &e.kind {
                EventKind::Device { device, state: to } => {
                    if let Some(slot) = healthy_at.get_mut(*device as usize) {
                        *slot = (*to == DeviceState::Healthy).then_some(e.at);
                    }
                }
                EventKind::Completed => completed_at = Some(e.at),
                _ => {}
            }
        }
        let mut remediated = 0;
        for (i, at) in healthy_at.iter().enumerate() {
            let Some(at) = at else { continue };
            remediated += 1;
            let secs = at.secs_since(finding.detected_at);
            let device = state.device_ids.get(i).and_then(|id| fleet.device(id));
            let mut keys = vec![(0, finding.classification.clone())];
            for (n, a) in REMEDIATION_ATTRIBUTES.iter().enumerate() {
                let value = device
                    .and_then(|d| d.attribute(a))
                    .unwrap_or_else(|| "-".to_owned());
                keys.push((n + 1, value));
            }
            for key in keys {
                let g = groups.entry(key).or_insert((0, 0, i64::MIN));
                g.0 += 1;
                g.1 = g.1.saturating_add(secs);
                g.2 = g.2.max(secs);
            }
        }
        out.rollouts.push(Remediation {
            rollout_id: state.spec.id.clone(),
            finding_id: finding.finding_id.clone(),
            classification: finding.classification.clone(),
            detected_at: finding.detected_at.to_rfc3339(),
            detected_from: finding.detected_from.clone(),
            time_to_remediate_secs: completed_at.map(|t| t.secs_since(finding.detected_at)),
            devices_remediated: remediated,
        });
    }
    let done: Vec<f64> = out
        .rollouts
        .iter()
        .filter_map(|r| r.time_to_remediate_secs)
        .map(|s| s as f64)
        .collect();
    out.mean_time_to_remediate_secs =
        (!done.is_empty()).then(|| done.iter().sum::<f64>() / done.len() as f64);
    out.by = groups
        .into_iter()
        .map(|((n, value), (devices, sum, max))| RemediationGroup {
            attribute: if n == 0 {
                "classification".to_owned()
            } else {
                REMEDIATION_ATTRIBUTES[n - 1].to_owned()
            },
            value,
            devices,
            mean_secs: sum as f64 / devices as f64,
            max_secs: max,
        })
        .collect();
    out
}

#[cfg(test)]
mod remediation_tests {
    use super::*;
    use crate::rollout::sim::{SimConfig, SimFleet};
    use crate::rollout::{ChangePath, RolloutSpec, WaveSpec};
    use crate::synth::{SynthOptions, generate};
    use crate::time::Timestamp;

    fn completed(id: &str, fleet: &Fleet, ids: &[String], start: Timestamp) -> Rollout {
        let spec = RolloutSpec {
            id: id.into(),
            release_id: "r".into(),
            requested_by: "alice".into(),
            waves: vec![WaveSpec {
                name: "canary".into(),
                device_ids: ids.to_vec(),
                soak_secs: 3_600,
            }],
            gates: crate::gates::GatePolicy::default(),
            path: ChangePath::Standard,
        };
        let mut rollout = Rollout::new(start, spec, fleet).expect("rollout");
        rollout.approve(start, "bob").expect("approve");
        rollout.approve(start, "carol").expect("approve");
        let mut sim = SimFleet::new(fleet, &rollout, SimConfig::default(), start);
        sim.run(&mut rollout, start, start.plus_secs(10 * 86_400));
        rollout
    }

    #[test]
    fn time_to_remediate_counts_from_detection_and_breaks_down_by_classification_model_region() {
        let start = Timestamp::from_secs(1_800_000_000);
        let fleet = generate(&SynthOptions {
            devices: 60,
            seed: 5,
            now: start,
        });
        let mut ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
        ids.sort();
        let a = completed("ro-a", &fleet, &ids[..30], start);
        let b = completed("ro-b", &fleet, &ids[30..], start.plus_secs(7_200));
        let fa = RemediatedFinding {
            finding_id: "SEC-1".into(),
            classification: "security".into(),
            detected_at: start.plus_secs(-86_400),
            detected_from: "detected_at".into(),
        };
        let fb = RemediatedFinding {
            finding_id: "STA-1".into(),
            classification: "stability".into(),
            detected_at: start.plus_secs(-3_600),
            detected_from: "recorded".into(),
        };
        let report = remediation(&[(&a, &fa), (&b, &fb)], &fleet);
        let ra = &report.rollouts[0];
        let ma = rollout_metrics(&a);
        assert!(ma.completed);
        // From the detection, a day before the rollout was created: a day more than the
        // rollout's own time to remediate.
        assert_eq!(
            ra.time_to_remediate_secs,
            ma.time_to_remediate_secs.map(|s| s + 86_400)
        );
        let rb = &report.rollouts[1];
        assert_eq!(
            rb.time_to_remediate_secs,
            // b was created two hours after `start`, its finding detected an hour before it.
            rollout_metrics(&b)
                .time_to_remediate_secs
                .map(|s| s + 10_800)
        );
        assert_eq!(ra.devices_remediated, ma.healthy);
        let class: Vec<(&str, u64)> = report
            .by
            .iter()
            .filter(|g| g.attribute == "classification")
            .map(|g| (g.value.as_str(), g.devices))
            .collect();
        assert_eq!(
            class,
            [
                ("security", ma.healthy),
                ("stability", rollout_metrics(&b).healthy)
            ]
        );
        for attribute in ["model", "region"] {
            let devices: u64 = report
                .by
                .iter()
                .filter(|g| g.attribute == attribute)
                .map(|g| g.devices)
                .sum();
            assert_eq!(
                devices,
                ma.healthy + rollout_metrics(&b).healthy,
                "{attribute}"
            );
        }
        let security = report
            .by
            .iter()
            .find(|g| g.value == "security")
            .expect("security");
        assert!(
            security.mean_secs >= 86_400.0 && security.max_secs >= 86_400,
            "{security:?}"
        );
        let mean = (ra.time_to_remediate_secs.unwrap_or(0) + rb.time_to_remediate_secs.unwrap_or(0))
            as f64
            / 2.0;
        assert_eq!(report.mean_time_to_remediate_secs, Some(mean));
    }

    #[test]
    fn an_empty_report_has_no_mean() {
        let r = remediation(&[], &Fleet::default());
        assert_eq!(r.mean_time_to_remediate_secs, None);
        assert!(r.by.is_empty());
    }
}
