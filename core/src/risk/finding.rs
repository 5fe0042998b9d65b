//! The finding: what is known about one defect before a fix is scored.

use super::RiskError;
use crate::cvss::Cvss;
use crate::fleet::Device;
use crate::requirement::{Requirement, RequirementKind};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of defect a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    Security,
    Stability,
    Compliance,
    Performance,
    Cosmetic,
}

impl Classification {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Security => "security",
            Self::Stability => "stability",
            Self::Compliance => "compliance",
            Self::Performance => "performance",
            Self::Cosmetic => "cosmetic",
        }
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Evidence that the defect is exploited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Exploitation {
    /// A proof of concept is public.
    pub public_poc: bool,
    /// Exploitation in the wild has been observed.
    pub active: bool,
}

/// Which devices the defect affects. A device is affected when it matches every non-empty
/// criterion: its model is listed, its hardware revision is listed, it meets every requirement
/// (component versions, e.g. `firmware>=2.3.0` and `firmware<2.4.0` for "2.3.x"), and its id
/// is listed. Empty criteria match every device; at least one criterion must be given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Affected {
    pub models: Vec<String>,
    pub hw_revs: Vec<String>,
    /// Component and hardware requirements in the text form of
    /// [`Requirement`]; transient conditions (battery, power, links) are rejected.
    pub requires: Vec<Requirement>,
    pub device_ids: Vec<String>,
}

/// The software layer a fix changes: deeper layers are harder to roll back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Application firmware: written to the inactive A/B bank and reverted by switching back.
    #[default]
    Application,
    /// Bootloader: a bad one can leave a device that no longer boots either bank.
    Bootloader,
    /// Modem firmware: a bad one cuts the device off the network that would deliver the fix.
    Modem,
}

impl Layer {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Application => "application",
            Self::Bootloader => "bootloader",
            Self::Modem => "modem",
        }
    }
}

/// How hard it is to undo the fix if it goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rollback {
    /// The fix is installed into an A/B bank and the device reverts on its own when the new
    /// bank fails its health check.
    pub ab_slot: bool,
    pub layer: Layer,
}

impl Default for Rollback {
    fn default() -> Self {
        Self {
            ab_slot: true,
            layer: Layer::Application,
        }
    }
}

impl Rollback {
    /// Whether undoing a bad fix may need a technician: no A/B bank, or a layer below the
    /// application.
    pub fn is_hard(self) -> bool {
        !self.ab_slot || self.layer != Layer::Application
    }
}

/// The anomaly telemetry shows for the defect, as events per 1,000 device-days (crashes,
/// reboots, failed sessions: whichever signal the finding is about) among affected devices,
/// against the same signal's baseline on unaffected devices.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anomaly {
    pub rate_per_1000_device_days: f64,
    pub baseline_per_1000_device_days: f64,
}

/// One defect and what is known about it. Read from JSON; see docs/RISK.md for the schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// A stable id, e.g. a CVE or a ticket number.
    pub id: String,
    #[serde(default)]
    pub title: String,
    pub classification: Classification,
    /// The CVSS v3.0, v3.1 or v4.0 vector, if the defect has one.
    #[serde(default)]
    pub cvss: Option<Cvss>,
    #[serde(default)]
    pub exploitation: Exploitation,
    /// The defect can be reached over the network, without physical access.
    #[serde(default)]
    pub remote: bool,
    pub affected: Affected,
    /// The regulation the defect breaches, if any (e.g. "MDR post-market surveillance").
    #[serde(default)]
    pub regulatory_impact: Option<String>,
    /// The contract or SLA the defect breaches, if any.
    #[serde(default)]
    pub contractual_impact: Option<String>,
    /// How the fix installs and rolls back; defaults to an application fix with an A/B bank.
    #[serde(default)]
    pub rollback: Rollback,
    #[serde(default)]
    pub anomaly: Option<Anomaly>,
    /// When the defect was detected (RFC 3339, e.g. `2026-11-20T08:00:00Z`): time to remediate
    /// counts from it. Optional; without it, from when the finding entered the cache.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Timestamp>,
}

/// An optional [`Timestamp`] written as RFC 3339 text (the finding file's `detected_at`).
mod rfc3339_opt {
    use crate::time::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    // serde's `with` hands the field by reference.
    #[allow(clippy::ref_option)]
    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.to_rfc3339()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            Timestamp::parse_rfc3339(&t).map_err(|_| {
                serde::de::Error::custom(format!(
                    "detected_at {t:?} is not an RFC 3339 time such as 2026-11-20T08:00:00Z"
                ))
            })
        })
        .transpose()
    }
}

impl Finding {
    /// Checks what serde cannot: that the affected set names something, that requirements are
    /// about components or hardware, and that rates are finite and non-negative.
    pub fn validate(&self) -> Result<(), RiskError> {
        if self.id.trim().is_empty() {
            return Err(RiskError::InvalidFinding {
                field: "id",
                reason: "must not be empty".into(),
            });
        }
        let a = &self.affected;
        if a.models.is_empty()
            && a.hw_revs.is_empty()
            && a.requires.is_empty()
            && a.device_ids.is_empty()
        {
            return Err(RiskError::InvalidFinding {
                field: "affected",
                reason: "names no models, hw_revs, requires or device_ids; list at least one"
                    .into(),
            });
        }
        if let Some(r) = a
            .requires
            .iter()
            .find(|r| r.kind() == RequirementKind::Condition)
        {
            return Err(RiskError::InvalidFinding {
                field: "affected.requires",
                reason: format!(
                    "{r} is a transient condition; only component versions and hw_rev say whether a device has the defect"
                ),
            });
        }
        if let Some(an) = self.anomaly {
            for (field, v) in [
                (
                    "anomaly.rate_per_1000_device_days",
                    an.rate_per_1000_device_days,
                ),
                (
                    "anomaly.baseline_per_1000_device_days",
                    an.baseline_per_1000_device_days,
                ),
            ] {
                if !v.is_finite() || v < 0.0 {
                    return Err(RiskError::InvalidFinding {
                        field,
                        reason: format!("must be a finite number >= 0, found {v}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// A matcher for the affected set, prepared once per scoring (device ids sorted for binary
    /// search) so that matching a device allocates nothing.
    pub fn matcher(&self) -> AffectedMatcher<'_> {
        let mut ids: Vec<&str> = self
            .affected
            .device_ids
            .iter()
            .map(String::as_str)
            .collect();
        ids.sort_unstable();
        AffectedMatcher {
            affected: &self.affected,
            ids,
        }
    }
}

/// Tells whether a device is affected; see [`Affected`] for the rule.
#[derive(Debug)]
pub struct AffectedMatcher<'a> {
    affected: &'a Affected,
    ids: Vec<&'a str>,
}

impl AffectedMatcher<'_> {
    pub fn matches(&self, d: &Device) -> bool {
        let a = self.affected;
        (a.models.is_empty() || a.models.iter().any(|m| *m == d.model))
            && (a.hw_revs.is_empty() || a.hw_revs.iter().any(|r| *r == d.hw_rev))
            && a.requires.iter().all(|r| r.is_met(d, 0))
            && (self.ids.is_empty() || self.ids.binary_search(&d.id.as_str()).is_ok())
    }
}
