//! Risk scoring: how urgent is the fix for one finding, on this fleet, and why.
//!
//! [`score`] combines a [`Finding`] (what the defect is: classification, CVSS, exploitation,
//! reachability, regulatory and contractual impact, rollback difficulty, anomaly rate) with the
//! [`Fleet`] (how many devices it hits, how critical they are, whether they share a fate) under
//! a [`ScoringPolicy`], and returns a [`Scorecard`]: points, every line the points come from, a
//! [`Tier`] and a [`Recommendation`] with its reason.
//!
//! The shape is `points = severity × exposure`. Severity is the sum of the finding's own lines;
//! exposure is a multiplier that starts at the policy's floor and grows with the square roots
//! of the affected share, the criticality-weighted affected share and the share of hard-hit
//! shared-fate clusters. So a moderate defect on a widely deployed critical class can outrank a
//! severe one on a tiny isolated cohort, and no single number (CVSS included) decides alone.
//! The exposure lines carry `severity × term` points, so the lines always add up to the total.
//! docs/RISK.md explains every factor and default.
//!
//! What this module deliberately is not: it does not plan the rollout (cohorts, waves and
//! windows are the planner's), does not look vulnerabilities up anywhere, and does not read the
//! clock: `now` (for how long devices have been unreachable) is passed in. Scoring is one pass
//! over the fleet with no allocation per device.

mod finding;
mod policy;
pub mod remediation;

#[cfg(test)]
mod tests;

pub use finding::{
    Affected, AffectedMatcher, Anomaly, Classification, Exploitation, Finding, Layer, Rollback,
};
pub use policy::{
    ClassWeights, ClassificationPoints, DynamicWeights, POLICY_VERSION, RedundancyWeights,
    ScoringPolicy, TierThresholds, TierWeights,
};
pub use remediation::{Checklist, ChecklistError, Shape, shape_waves};

use crate::cluster::{ClusterHit, ClusterTally};
use crate::cvss::CvssSummary;
use crate::fleet::{Connectivity, Device, DeviceClass, Fleet, PowerState};
use crate::time::Timestamp;
use serde::{Serialize, Serializer};
use std::fmt;

/// How many of the most affected shared-fate clusters a scorecard lists.
pub const TOP_CLUSTERS: usize = 5;

/// Why a finding or policy cannot be scored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RiskError {
    /// A field of the finding holds a value scoring cannot use.
    #[error("invalid finding field {field}: {reason}")]
    InvalidFinding { field: &'static str, reason: String },
    /// A weight or threshold of the policy is out of range.
    #[error("invalid scoring policy field {field}: {reason}")]
    InvalidPolicy { field: &'static str, reason: String },
    /// The policy was written for another policy format.
    #[error(
        "scoring policy version {found} is not supported (this build reads version {supported})"
    )]
    PolicyVersion { found: u32, supported: u32 },
}

/// How fast a fix goes out. Lower is more urgent; `Ord` follows the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// 0: emergency push now.
    Emergency,
    /// 1: accelerated staged rollout.
    Accelerated,
    /// 2: normal canary.
    Canary,
    /// 3: hold for a maintenance window.
    Hold,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::Emergency, Tier::Accelerated, Tier::Canary, Tier::Hold];

    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The tier with this number; numbers above 3 give [`Tier::Hold`].
    pub const fn from_number(n: u8) -> Self {
        match n {
            0 => Tier::Emergency,
            1 => Tier::Accelerated,
            2 => Tier::Canary,
            _ => Tier::Hold,
        }
    }

    pub const fn meaning(self) -> &'static str {
        match self {
            Tier::Emergency => "emergency push now",
            Tier::Accelerated => "accelerated staged rollout",
            Tier::Canary => "normal canary",
            Tier::Hold => "hold for a maintenance window",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.number(), self.meaning())
    }
}

/// A tier serialises as its number.
impl Serialize for Tier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.number())
    }
}

/// What to ship.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recommendation {
    /// The smallest change that removes the defect, released on its own, now.
    Hotfix,
    /// The fix goes into the next full release and through its whole test cycle.
    FullPatch,
    /// Nothing ships for this finding now.
    Defer,
}

impl fmt::Display for Recommendation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Recommendation::Hotfix => "hotfix",
            Recommendation::FullPatch => "full patch",
            Recommendation::Defer => "defer",
        })
    }
}

/// One line of a scorecard: where some points come from. Rule lines (rollback, tier rules,
/// reachability) carry 0 points and explain a decision instead.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreLine {
    pub source: &'static str,
    pub detail: String,
    pub points: f64,
}

/// Affected devices of one class and their summed criticality.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassExposure {
    pub class: DeviceClass,
    pub devices: usize,
    pub criticality_sum: f64,
}

/// Who the defect hits.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlastRadius {
    pub fleet_devices: usize,
    pub affected_devices: usize,
    /// `affected_devices / fleet_devices`.
    pub affected_share: f64,
    /// Sum of the affected devices' criticality over `fleet_devices`.
    pub criticality_weighted_share: f64,
    /// Affected devices in a fragile dynamic state (low battery, roaming, failed attempts).
    pub fragile_devices: usize,
    /// Affected devices not heard from for longer than the policy's `unreachable_after_secs`.
    pub unreachable_devices: usize,
    /// Devices in shared-fate clusters where at least the policy's ratio of members is affected.
    pub shared_fate_devices: usize,
    pub shared_fate_clusters: usize,
    /// Affected devices per class, in [`DeviceClass::ALL`] order, classes with none left out.
    pub by_class: Vec<ClassExposure>,
    /// The clusters the affected set concentrates in, at most [`TOP_CLUSTERS`].
    pub clusters: Vec<ClusterHit>,
}

/// The result of scoring one finding against one fleet.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scorecard {
    pub finding: String,
    pub policy_version: u32,
    /// The content version of the policy that scored it ([`ScoringPolicy::digest`]).
    pub policy_digest: String,
    /// Total points: the sum of every line's points.
    pub points: f64,
    /// The finding's own points, before exposure.
    pub severity_points: f64,
    /// What severity is multiplied by: floor + blast radius + criticality + shared fate.
    pub exposure_multiplier: f64,
    pub lines: Vec<ScoreLine>,
    pub tier: Tier,
    pub recommendation: Recommendation,
    pub reason: String,
    pub cvss: Option<CvssSummary>,
    pub affected_devices: usize,
    pub blast_radius: BlastRadius,
}

/// The criticality of one device under `policy`: class × customer tier × redundancy × (1 + the
/// extras of its fragile dynamic state). Also says whether the device is fragile.
pub fn device_criticality(policy: &ScoringPolicy, d: &Device) -> (f64, bool) {
    let dy = &policy.dynamic;
    let mut extra = 0.0;
    let mut fragile = false;
    if d.power == PowerState::Battery && d.battery_pct.is_some_and(|b| b < dy.low_battery_pct) {
        extra += dy.low_battery_extra;
        fragile = true;
    }
    if d.connectivity == Connectivity::Roaming {
        extra += dy.roaming_extra;
        fragile = true;
    }
    if dy.failed_attempts_min > 0 && d.failed_update_attempts >= dy.failed_attempts_min {
        extra += dy.failed_attempts_extra;
        fragile = true;
    }
    let base = policy.device_class.get(d.device_class)
        * policy.customer_tier.get(d.customer_tier)
        * policy.redundancy.get(d.redundancy);
    (base * (1.0 + extra), fragile)
}

/// Severity points of the finding alone, as lines.
fn severity_lines(finding: &Finding, policy: &ScoringPolicy) -> Vec<ScoreLine> {
    let mut lines = Vec::with_capacity(8);
    let c = &policy.classification;
    let class_points = match finding.classification {
        Classification::Security => c.security,
        Classification::Stability => c.stability,
        Classification::Compliance => c.compliance,
        Classification::Performance => c.performance,
        Classification::Cosmetic => c.cosmetic,
    };
    lines.push(ScoreLine {
        source: "classification",
        detail: format!("{} defect", finding.classification),
        points: class_points,
    });
    if let Some(cvss) = &finding.cvss {
        lines.push(ScoreLine {
            source: "cvss",
            detail: format!(
                "CVSS {} base score {:.1} ({}) × {} points per score point: {}",
                cvss.version(),
                cvss.base_score(),
                cvss.severity(),
                policy.cvss_points_per_score,
                cvss.vector()
            ),
            points: cvss.base_score() * policy.cvss_points_per_score,
        });
    }
    if finding.exploitation.public_poc {
        lines.push(ScoreLine {
            source: "exploitation",
            detail: "a proof of concept is public".into(),
            points: policy.public_poc_points,
        });
    }
    if finding.exploitation.active {
        lines.push(ScoreLine {
            source: "exploitation",
            detail: "exploitation in the wild has been observed".into(),
            points: policy.active_exploitation_points,
        });
    }
    if finding.remote {
        lines.push(ScoreLine {
            source: "remote",
            detail: "reachable over the network, no physical access needed".into(),
            points: policy.remote_points,
        });
    }
    if let Some(reg) = &finding.regulatory_impact {
        lines.push(ScoreLine {
            source: "regulatory",
            detail: format!("regulatory impact: {reg}"),
            points: policy.regulatory_points,
        });
    }
    if let Some(con) = &finding.contractual_impact {
        lines.push(ScoreLine {
            source: "contractual",
            detail: format!("contractual impact: {con}"),
            points: policy.contractual_points,
        });
    }
    if let Some(an) = finding.anomaly {
        let (rate, base) = (
            an.rate_per_1000_device_days,
            an.baseline_per_1000_device_days,
        );
        let (points, detail) = if rate <= base {
            (
                0.0,
                format!("telemetry {rate} per 1,000 device-days, not above baseline {base}"),
            )
        } else if base == 0.0 {
            (
                policy.anomaly_max_points,
                format!(
                    "telemetry {rate} per 1,000 device-days against a baseline of 0: capped at {}",
                    policy.anomaly_max_points
                ),
            )
        } else {
            let doublings = (rate / base).log2();
            (
                (doublings * policy.anomaly_points_per_doubling).min(policy.anomaly_max_points),
                format!(
                    "telemetry {rate} per 1,000 device-days vs baseline {base}: {:.2}× = {doublings:.2} doublings × {} (max {})",
                    rate / base,
                    policy.anomaly_points_per_doubling,
                    policy.anomaly_max_points
                ),
            )
        };
        lines.push(ScoreLine {
            source: "anomaly",
            detail,
            points,
        });
    }
    lines
}

/// Counts from the one pass over the fleet.
struct FleetPass<'a> {
    affected: usize,
    criticality_sum: f64,
    fragile: usize,
    unreachable: usize,
    by_class: [(usize, f64); 8],
    tally: ClusterTally<'a>,
}

fn fleet_pass<'a>(
    finding: &Finding,
    fleet: &'a Fleet,
    policy: &ScoringPolicy,
    now: Timestamp,
) -> FleetPass<'a> {
    let matcher = finding.matcher();
    let mut pass = FleetPass {
        affected: 0,
        criticality_sum: 0.0,
        fragile: 0,
        unreachable: 0,
        by_class: [(0, 0.0); 8],
        tally: ClusterTally::new(),
    };
    for d in &fleet.devices {
        let hit = matcher.matches(d);
        pass.tally.add(d, hit);
        if !hit {
            continue;
        }
        pass.affected += 1;
        let (crit, fragile) = device_criticality(policy, d);
        pass.criticality_sum += crit;
        pass.fragile += usize::from(fragile);
        if d.offline_secs(now) > policy.dynamic.unreachable_after_secs {
            pass.unreachable += 1;
        }
        let slot = &mut pass.by_class[d.device_class as usize];
        slot.0 += 1;
        slot.1 += crit;
    }
    pass
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// Scores `finding` against `fleet` under `policy`. `now` decides which devices count as
/// unreachable. Validates both the finding and the policy first.
pub fn score(
    finding: &Finding,
    fleet: &Fleet,
    policy: &ScoringPolicy,
    now: Timestamp,
) -> Result<Scorecard, RiskError> {
    policy.validate()?;
    finding.validate()?;
    let mut lines = severity_lines(finding, policy);
    let severity: f64 = lines.iter().map(|l| l.points).sum();

    let pass = fleet_pass(finding, fleet, policy, now);
    let n = fleet.len().max(1) as f64;
    let affected_share = pass.affected as f64 / n;
    let weighted_share = pass.criticality_sum / n;
    let (sf_devices, sf_clusters) = pass
        .tally
        .shared_fate_devices(policy.shared_fate_min_affected_ratio);
    let sf_share = sf_devices as f64 / n;

    let by_class: Vec<ClassExposure> = DeviceClass::ALL
        .iter()
        .zip(pass.by_class)
        .filter(|(_, (count, _))| *count > 0)
        .map(|(class, (devices, criticality_sum))| ClassExposure {
            class: *class,
            devices,
            criticality_sum,
        })
        .collect();

    let multiplier;
    if pass.affected == 0 {
        multiplier = 0.0;
        lines.push(ScoreLine {
            source: "exposure",
            detail: format!(
                "no device of this fleet ({} devices) is affected: exposure ×0",
                fleet.len()
            ),
            points: -severity,
        });
    } else {
        let blast = policy.blast_weight * affected_share.sqrt();
        let crit = policy.criticality_weight * weighted_share.sqrt();
        let fate = policy.shared_fate_weight * sf_share.sqrt();
        multiplier = policy.exposure_floor + blast + crit + fate;
        lines.push(ScoreLine {
            source: "exposure",
            detail: format!(
                "severity {severity:.1} × exposure {multiplier:.3} = floor {} + blast radius {blast:.3} + criticality {crit:.3} + shared fate {fate:.3}; the floor keeps ×{} of severity",
                policy.exposure_floor, policy.exposure_floor
            ),
            points: severity * (policy.exposure_floor - 1.0),
        });
        lines.push(ScoreLine {
            source: "blast_radius",
            detail: format!(
                "{} of {} devices affected ({}): {} × √{:.4} = {blast:.3}",
                pass.affected,
                fleet.len(),
                pct(affected_share),
                policy.blast_weight,
                affected_share
            ),
            points: severity * blast,
        });
        let top = by_class
            .iter()
            .max_by(|a, b| a.criticality_sum.total_cmp(&b.criticality_sum))
            .map(|c| {
                format!(
                    "; most from {} ({} devices, criticality {:.1})",
                    c.class, c.devices, c.criticality_sum
                )
            })
            .unwrap_or_default();
        lines.push(ScoreLine {
            source: "criticality",
            detail: format!(
                "criticality-weighted share {} (class × customer tier × redundancy × dynamic state): {} × √{weighted_share:.4} = {crit:.3}{top}",
                pct(weighted_share),
                policy.criticality_weight
            ),
            points: severity * crit,
        });
        lines.push(ScoreLine {
            source: "shared_fate",
            detail: format!(
                "{sf_devices} devices in {sf_clusters} shared-fate clusters (same model, build, hw_rev, battery, link and carrier) at least {} affected: {} × √{sf_share:.4} = {fate:.3}",
                pct(policy.shared_fate_min_affected_ratio),
                policy.shared_fate_weight
            ),
            points: severity * fate,
        });
        if pass.fragile > 0 {
            lines.push(ScoreLine {
                source: "dynamic_state",
                detail: format!(
                    "{} affected devices are fragile now (battery below {}% off charge, roaming, or {}+ failed update attempts); counted in criticality above",
                    pass.fragile, policy.dynamic.low_battery_pct, policy.dynamic.failed_attempts_min
                ),
                points: 0.0,
            });
        }
        if pass.unreachable > 0 {
            lines.push(ScoreLine {
                source: "reachability",
                detail: format!(
                    "{} affected devices not heard from for over {} days: a push now will not reach them",
                    pass.unreachable,
                    policy.dynamic.unreachable_after_secs / 86_400
                ),
                points: 0.0,
            });
        }
    }
    let points = severity * multiplier;

    let tier = decide_tier(finding, policy, points, pass.affected, &mut lines);
    let (recommendation, reason) = recommend(finding, tier, points, pass.affected, &lines);

    let mut clusters = pass.tally.hits();
    clusters.truncate(TOP_CLUSTERS);
    Ok(Scorecard {
        finding: finding.id.clone(),
        policy_version: policy.version,
        policy_digest: policy.digest(),
        points,
        severity_points: severity,
        exposure_multiplier: multiplier,
        lines,
        tier,
        recommendation,
        reason,
        cvss: finding.cvss.as_ref().map(crate::cvss::Cvss::summary),
        affected_devices: pass.affected,
        blast_radius: BlastRadius {
            fleet_devices: fleet.len(),
            affected_devices: pass.affected,
            affected_share,
            criticality_weighted_share: weighted_share,
            fragile_devices: pass.fragile,
            unreachable_devices: pass.unreachable,
            shared_fate_devices: sf_devices,
            shared_fate_clusters: sf_clusters,
            by_class,
            clusters,
        },
    })
}

/// The tier from the points, then the rules, each rule that changes it adding a 0-point line.
fn decide_tier(
    finding: &Finding,
    policy: &ScoringPolicy,
    points: f64,
    affected: usize,
    lines: &mut Vec<ScoreLine>,
) -> Tier {
    let th = &policy.tiers;
    if affected == 0 {
        return Tier::Hold;
    }
    let mut tier = if points >= th.emergency_min_points {
        Tier::Emergency
    } else if points >= th.accelerated_min_points {
        Tier::Accelerated
    } else if points >= th.canary_min_points {
        Tier::Canary
    } else {
        Tier::Hold
    };
    let active_remote = finding.exploitation.active && finding.remote;
    let rb = finding.rollback;
    if rb.is_hard() && !active_remote {
        let min = Tier::from_number(policy.hard_rollback_min_tier);
        if tier < min {
            lines.push(ScoreLine {
                source: "rollback",
                detail: format!(
                    "{} fix{}: a bad image may need a technician, so at most tier {min} (was {tier})",
                    rb.layer.as_str(),
                    if rb.ab_slot { "" } else { " without an A/B slot" },
                ),
                points: 0.0,
            });
            tier = min;
        }
    }
    if finding.exploitation.active {
        let max = Tier::from_number(policy.active_exploitation_max_tier);
        if tier > max {
            lines.push(ScoreLine {
                source: "exploitation",
                detail: format!(
                    "active exploitation: at least tier {max} whatever the points (was {tier})"
                ),
                points: 0.0,
            });
            tier = max;
        }
    }
    tier
}

/// The recommendation and its reason, naming the lines that weigh most.
fn recommend(
    finding: &Finding,
    tier: Tier,
    points: f64,
    affected: usize,
    lines: &[ScoreLine],
) -> (Recommendation, String) {
    if affected == 0 {
        return (
            Recommendation::Defer,
            "no device of this fleet is affected: nothing to ship".into(),
        );
    }
    let mut top: Vec<&ScoreLine> = lines.iter().filter(|l| l.points > 0.0).collect();
    top.sort_by(|a, b| b.points.total_cmp(&a.points).then(a.source.cmp(b.source)));
    let drivers = top
        .iter()
        .take(3)
        .map(|l| format!("{} {:+.1}", l.source, l.points))
        .collect::<Vec<_>>()
        .join(", ");
    let rb = finding.rollback;
    let rollback_note = if rb.is_hard() {
        format!(
            "; the fix changes the {} layer{}, so stage it and keep a technician path ready",
            rb.layer.as_str(),
            if rb.ab_slot {
                ""
            } else {
                " without an A/B slot"
            }
        )
    } else {
        String::new()
    };
    let (rec, what) = match tier {
        Tier::Emergency => (
            Recommendation::Hotfix,
            "ship the smallest change that removes the defect, on its own, to every affected device now",
        ),
        // A layer without automatic rollback needs the full test cycle that a hotfix skips;
        // only an emergency justifies skipping it.
        Tier::Accelerated if rb.is_hard() => (
            Recommendation::FullPatch,
            "ship a full patch, with its whole test cycle, through an accelerated staged rollout",
        ),
        Tier::Accelerated => (
            Recommendation::Hotfix,
            "ship a minimal fix on its own through an accelerated staged rollout; do not wait for the next release",
        ),
        Tier::Canary => (
            Recommendation::FullPatch,
            "fold the fix into the next full release and roll it out through the normal canary",
        ),
        Tier::Hold => (
            Recommendation::Defer,
            "hold the fix for the next maintenance window",
        ),
    };
    (
        rec,
        format!("tier {tier} at {points:.1} points (most from {drivers}): {what}{rollback_note}"),
    )
}
