//! The scoring policy: every weight and threshold of risk scoring, in one versioned, editable
//! document. docs/RISK.md explains each default and why it has that value.

use super::RiskError;
use crate::fleet::{CustomerTier, DeviceClass, Redundancy};
use serde::{Deserialize, Serialize};

/// The policy format this build reads. A policy with another `version` is rejected rather than
/// half-understood.
pub const POLICY_VERSION: u32 = 1;

/// Severity points per classification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassificationPoints {
    pub security: f64,
    pub stability: f64,
    pub compliance: f64,
    pub performance: f64,
    pub cosmetic: f64,
}

impl Default for ClassificationPoints {
    fn default() -> Self {
        Self {
            security: 20.0,
            stability: 15.0,
            compliance: 15.0,
            performance: 6.0,
            cosmetic: 1.0,
        }
    }
}

/// Criticality weight (0 to 1) of each device class: what it costs the owner when one device of
/// the class fails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassWeights {
    pub delivery_van: f64,
    pub truck: f64,
    pub bus: f64,
    pub pos: f64,
    pub kiosk: f64,
    pub medical_gateway: f64,
    pub ev_charger: f64,
    pub sensor: f64,
}

impl Default for ClassWeights {
    fn default() -> Self {
        Self {
            delivery_van: 0.5,
            truck: 0.6,
            bus: 0.8,
            pos: 0.7,
            kiosk: 0.35,
            medical_gateway: 1.0,
            ev_charger: 0.5,
            sensor: 0.2,
        }
    }
}

impl ClassWeights {
    pub fn get(&self, class: DeviceClass) -> f64 {
        match class {
            DeviceClass::DeliveryVan => self.delivery_van,
            DeviceClass::Truck => self.truck,
            DeviceClass::Bus => self.bus,
            DeviceClass::Pos => self.pos,
            DeviceClass::Kiosk => self.kiosk,
            DeviceClass::MedicalGateway => self.medical_gateway,
            DeviceClass::EvCharger => self.ev_charger,
            DeviceClass::Sensor => self.sensor,
        }
    }
}

/// Criticality factor (0 to 1) of each customer tier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierWeights {
    pub basic: f64,
    pub standard: f64,
    pub premium: f64,
    pub enterprise: f64,
}

impl Default for TierWeights {
    fn default() -> Self {
        Self {
            basic: 0.6,
            standard: 0.75,
            premium: 0.9,
            enterprise: 1.0,
        }
    }
}

impl TierWeights {
    pub fn get(&self, tier: CustomerTier) -> f64 {
        match tier {
            CustomerTier::Basic => self.basic,
            CustomerTier::Standard => self.standard,
            CustomerTier::Premium => self.premium,
            CustomerTier::Enterprise => self.enterprise,
        }
    }
}

/// Criticality factor of each redundancy: a device something else covers for matters less.
/// `standby` and `pooled` may not exceed `none`, so adding redundancy never raises criticality.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedundancyWeights {
    pub none: f64,
    pub standby: f64,
    pub pooled: f64,
}

impl Default for RedundancyWeights {
    fn default() -> Self {
        Self {
            none: 1.0,
            standby: 0.5,
            pooled: 0.7,
        }
    }
}

impl RedundancyWeights {
    pub fn get(&self, r: Redundancy) -> f64 {
        match r {
            Redundancy::None => self.none,
            Redundancy::Standby => self.standby,
            Redundancy::Pooled => self.pooled,
        }
    }
}

/// The dynamic state that makes a device fragile right now: a defect that strikes it is more
/// likely to strand it in the field. Each condition adds its extra to the device's criticality
/// multiplier (1 + the sum of extras).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicWeights {
    /// Running on battery alone below this charge counts as low battery.
    pub low_battery_pct: u8,
    pub low_battery_extra: f64,
    /// On a roaming link: the fix is expensive or forbidden to deliver, so the device stays
    /// exposed longer.
    pub roaming_extra: f64,
    /// This many failed update attempts in a row or more: the device is already in trouble.
    pub failed_attempts_min: u32,
    pub failed_attempts_extra: f64,
    /// Not heard from for this long: reported as unreachable (no points; a push will not reach
    /// it, and the planner must plan for it).
    pub unreachable_after_secs: i64,
}

impl Default for DynamicWeights {
    fn default() -> Self {
        Self {
            low_battery_pct: 20,
            low_battery_extra: 0.2,
            roaming_extra: 0.1,
            failed_attempts_min: 2,
            failed_attempts_extra: 0.3,
            unreachable_after_secs: 7 * 86_400,
        }
    }
}

/// Minimum points for each tier; below `canary_min_points` a finding is tier 3.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierThresholds {
    pub emergency_min_points: f64,
    pub accelerated_min_points: f64,
    pub canary_min_points: f64,
}

impl Default for TierThresholds {
    fn default() -> Self {
        Self {
            emergency_min_points: 100.0,
            accelerated_min_points: 50.0,
            canary_min_points: 20.0,
        }
    }
}

/// Every weight of risk scoring. Unknown keys are rejected (a typo must not silently fall back
/// to a default); missing keys take the default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringPolicy {
    /// The policy format; must be [`POLICY_VERSION`].
    pub version: u32,
    pub classification: ClassificationPoints,
    /// Severity points per point of CVSS base score (0 to 10).
    pub cvss_points_per_score: f64,
    pub public_poc_points: f64,
    pub active_exploitation_points: f64,
    pub remote_points: f64,
    pub regulatory_points: f64,
    pub contractual_points: f64,
    /// Severity points per doubling of the anomaly rate over its baseline.
    pub anomaly_points_per_doubling: f64,
    pub anomaly_max_points: f64,
    /// The exposure multiplier's starting value: a defect on a handful of devices still
    /// counts for this fraction of its severity.
    pub exposure_floor: f64,
    /// Exposure added per square root of the affected share of the fleet.
    pub blast_weight: f64,
    /// Exposure added per square root of the criticality-weighted affected share.
    pub criticality_weight: f64,
    /// Exposure added per square root of the fleet share in shared-fate clusters that the
    /// defect hits hard.
    pub shared_fate_weight: f64,
    /// A cluster is hit hard when at least this ratio of its members is affected.
    pub shared_fate_min_affected_ratio: f64,
    pub device_class: ClassWeights,
    pub customer_tier: TierWeights,
    pub redundancy: RedundancyWeights,
    pub dynamic: DynamicWeights,
    pub tiers: TierThresholds,
    /// With active exploitation, the tier is at most this (0 or 1).
    pub active_exploitation_max_tier: u8,
    /// With a hard rollback (no A/B bank, or a bootloader or modem fix), the tier is at least
    /// this, unless the defect is actively exploited and remote.
    pub hard_rollback_min_tier: u8,
}

impl Default for ScoringPolicy {
    fn default() -> Self {
        Self {
            version: POLICY_VERSION,
            classification: ClassificationPoints::default(),
            cvss_points_per_score: 4.0,
            public_poc_points: 10.0,
            active_exploitation_points: 25.0,
            remote_points: 10.0,
            regulatory_points: 15.0,
            contractual_points: 10.0,
            anomaly_points_per_doubling: 8.0,
            anomaly_max_points: 24.0,
            exposure_floor: 0.3,
            blast_weight: 1.5,
            criticality_weight: 2.0,
            shared_fate_weight: 0.5,
            shared_fate_min_affected_ratio: 0.5,
            device_class: ClassWeights::default(),
            customer_tier: TierWeights::default(),
            redundancy: RedundancyWeights::default(),
            dynamic: DynamicWeights::default(),
            tiers: TierThresholds::default(),
            active_exploitation_max_tier: 1,
            hard_rollback_min_tier: 1,
        }
    }
}

impl ScoringPolicy {
    /// The policy's content version: the SHA-256 (hex) of its JSON, the first 16 characters.
    /// Two policies with the same weights have the same digest whatever file they came from,
    /// and a scorecard records the digest of the policy that made it.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        // Field order is the struct's and floats are printed shortest-round-trip, so the JSON
        // of equal policies is equal.
        let json = serde_json::to_vec(self).unwrap_or_default();
        let hash = Sha256::digest(&json);
        hash.iter()
            .take(8)
            .fold(String::with_capacity(16), |mut out, b| {
                use std::fmt::Write as _;
                let _ = write!(out, "{b:02x}");
                out
            })
    }

    /// Checks the version and that every weight is finite and in range, so that scoring can
    /// rely on the monotonicity docs/RISK.md promises.
    pub fn validate(&self) -> Result<(), RiskError> {
        if self.version != POLICY_VERSION {
            return Err(RiskError::PolicyVersion {
                found: self.version,
                supported: POLICY_VERSION,
            });
        }
        let c = &self.classification;
        let d = &self.device_class;
        let t = &self.customer_tier;
        let r = &self.redundancy;
        let dy = &self.dynamic;
        let non_negative: [(&'static str, f64); 28] = [
            ("classification.security", c.security),
            ("classification.stability", c.stability),
            ("classification.compliance", c.compliance),
            ("classification.performance", c.performance),
            ("classification.cosmetic", c.cosmetic),
            ("cvss_points_per_score", self.cvss_points_per_score),
            ("public_poc_points", self.public_poc_points),
            (
                "active_exploitation_points",
                self.active_exploitation_points,
            ),
            ("remote_points", self.remote_points),
            ("regulatory_points", self.regulatory_points),
            ("contractual_points", self.contractual_points),
            (
                "anomaly_points_per_doubling",
                self.anomaly_points_per_doubling,
            ),
            ("anomaly_max_points", self.anomaly_max_points),
            ("exposure_floor", self.exposure_floor),
            ("blast_weight", self.blast_weight),
            ("criticality_weight", self.criticality_weight),
            ("shared_fate_weight", self.shared_fate_weight),
            ("device_class.delivery_van", d.delivery_van),
            ("device_class.truck", d.truck),
            ("device_class.bus", d.bus),
            ("device_class.pos", d.pos),
            ("device_class.kiosk", d.kiosk),
            ("device_class.medical_gateway", d.medical_gateway),
            ("device_class.ev_charger", d.ev_charger),
            ("device_class.sensor", d.sensor),
            ("dynamic.low_battery_extra", dy.low_battery_extra),
            ("dynamic.roaming_extra", dy.roaming_extra),
            ("dynamic.failed_attempts_extra", dy.failed_attempts_extra),
        ];
        let more: [(&'static str, f64); 7] = [
            ("customer_tier.basic", t.basic),
            ("customer_tier.standard", t.standard),
            ("customer_tier.premium", t.premium),
            ("customer_tier.enterprise", t.enterprise),
            ("redundancy.none", r.none),
            ("redundancy.standby", r.standby),
            ("redundancy.pooled", r.pooled),
        ];
        for (field, v) in non_negative.into_iter().chain(more) {
            if !v.is_finite() || v < 0.0 {
                return Err(RiskError::InvalidPolicy {
                    field,
                    reason: format!("must be a finite number >= 0, found {v}"),
                });
            }
        }
        if !(0.0..=1.0).contains(&self.shared_fate_min_affected_ratio)
            || self.shared_fate_min_affected_ratio == 0.0
        {
            return Err(RiskError::InvalidPolicy {
                field: "shared_fate_min_affected_ratio",
                reason: format!(
                    "must be in (0, 1], found {}",
                    self.shared_fate_min_affected_ratio
                ),
            });
        }
        if r.standby > r.none || r.pooled > r.none {
            return Err(RiskError::InvalidPolicy {
                field: "redundancy",
                reason: format!(
                    "standby ({}) and pooled ({}) may not exceed none ({}): redundancy must never raise criticality",
                    r.standby, r.pooled, r.none
                ),
            });
        }
        let th = &self.tiers;
        for (field, v) in [
            ("tiers.emergency_min_points", th.emergency_min_points),
            ("tiers.accelerated_min_points", th.accelerated_min_points),
            ("tiers.canary_min_points", th.canary_min_points),
        ] {
            if !v.is_finite() {
                return Err(RiskError::InvalidPolicy {
                    field,
                    reason: format!("must be a finite number, found {v}"),
                });
            }
        }
        if !(th.emergency_min_points >= th.accelerated_min_points
            && th.accelerated_min_points >= th.canary_min_points)
        {
            return Err(RiskError::InvalidPolicy {
                field: "tiers",
                reason: format!(
                    "thresholds must not increase from emergency ({}) to accelerated ({}) to canary ({})",
                    th.emergency_min_points, th.accelerated_min_points, th.canary_min_points
                ),
            });
        }
        for (field, v) in [
            (
                "active_exploitation_max_tier",
                self.active_exploitation_max_tier,
            ),
            ("hard_rollback_min_tier", self.hard_rollback_min_tier),
        ] {
            if v > 3 {
                return Err(RiskError::InvalidPolicy {
                    field,
                    reason: format!("must be a tier from 0 to 3, found {v}"),
                });
            }
        }
        if dy.low_battery_pct > 100 {
            return Err(RiskError::InvalidPolicy {
                field: "dynamic.low_battery_pct",
                reason: format!("must be a percentage, found {}", dy.low_battery_pct),
            });
        }
        Ok(())
    }
}
