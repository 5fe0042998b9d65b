//! Faults a simulated fleet injects: behaviour attached to a release version and to the devices
//! whose attributes match, parsed strictly from the JSON fault file.
//!
//! This module only parses and matches; whether a fault fires on a device is rolled by the
//! device's own seeded generator in [`super::SimDevice`], so it stays reproducible.

use crate::fleet::{Device, Fleet};
use crate::version::Version;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Device attributes every device has (see [`Device::attribute`]); other names must be a
/// component or tag of at least one device of the fleet.
const FIXED_ATTRIBUTES: [&str; 13] = [
    "id",
    "model",
    "hw_rev",
    "region",
    "depot",
    "connectivity",
    "power",
    "power_state",
    "customer_tier",
    "device_class",
    "redundancy",
    "active_slot",
    "metered",
];

/// Effect names, in the order the error message lists them.
pub const EFFECT_NAMES: [&str; 7] = [
    "crash_loop",
    "boot_failure",
    "battery_drain",
    "reconnect_failure",
    "install_failure",
    "download_stall",
    "link_loss",
];

/// What a fault does to a device running (or installing) its release.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultEffect {
    /// The new slot boots but its firmware crashes repeatedly in the health window: the device
    /// reverts to the previous slot.
    CrashLoop,
    /// The new slot fails its boot health check: the device reverts at once.
    BootFailure,
    /// While the release runs on battery, the battery drains this much faster.
    BatteryDrain { pct_per_hour: f64 },
    /// While the release runs, reconnect attempts after an outage mostly fail.
    ReconnectFailure,
    /// Writing the inactive slot fails: the update fails, the active slot is untouched.
    InstallFailure,
    /// The download stalls for good; after the stall timeout the device checks what it holds,
    /// which is short of the signed length, and fails the update as a mismatch.
    DownloadStall,
    /// The new slot boots but its modem never registers: the device has no link after the
    /// update, so it cannot confirm, and reverts by itself when its health window ends (the
    /// A/B rule); on the previous slot its link comes back.
    LinkLoss,
}

impl FaultEffect {
    pub const fn name(self) -> &'static str {
        match self {
            FaultEffect::CrashLoop => "crash_loop",
            FaultEffect::BootFailure => "boot_failure",
            FaultEffect::BatteryDrain { .. } => "battery_drain",
            FaultEffect::ReconnectFailure => "reconnect_failure",
            FaultEffect::InstallFailure => "install_failure",
            FaultEffect::DownloadStall => "download_stall",
            FaultEffect::LinkLoss => "link_loss",
        }
    }
}

/// One fault: a release version, the attributes a device must have (all of them), the effect and
/// the chance that it fires on a matching device.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub release_version: Version,
    /// Attribute name → required value, compared as text with [`Device::attribute`].
    pub matches: BTreeMap<String, String>,
    pub effect: FaultEffect,
    /// 0..=1.
    pub probability: f64,
}

impl Fault {
    /// Whether `device` has every attribute this fault names, with the named value.
    pub fn matches_device(&self, device: &Device) -> bool {
        self.matches
            .iter()
            .all(|(k, v)| device.attribute(k).as_deref() == Some(v.as_str()))
    }
}

/// All faults of a fault file, in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    pub faults: Vec<Fault>,
}

/// Why a fault file was refused. `index` is the fault's position in the file, from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// Not JSON, or not the shape of a fault file (unknown or missing field).
    #[error("fault file: {0}")]
    Shape(String),
    /// The effect name is not one the simulator knows.
    #[error("fault {index}: unknown effect {effect:?} (expected one of {expected})")]
    UnknownEffect {
        index: usize,
        effect: String,
        expected: String,
    },
    /// `match` names an attribute no device of the fleet has.
    #[error("fault {index}: unknown device attribute {attribute:?} in `match`")]
    UnknownAttribute { index: usize, attribute: String },
    /// A value out of range or missing for the effect.
    #[error("fault {index}: {detail}")]
    Invalid { index: usize, detail: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    faults: Vec<RawFault>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    release_version: Version,
    #[serde(rename = "match", default)]
    matches: BTreeMap<String, String>,
    effect: String,
    #[serde(default)]
    probability: Option<f64>,
    #[serde(default)]
    pct_per_hour: Option<f64>,
}

impl Faults {
    /// Parses a fault file. Attribute names in `match` must be fixed device attributes or a
    /// component or tag that at least one device of `fleet` has, so a typo is an error, not a
    /// fault that silently never fires. `probability` defaults to 1.
    pub fn parse(json: &str, fleet: &Fleet) -> Result<Self, FaultError> {
        let raw: RawFile =
            crate::strict_json::from_str(json).map_err(|e| FaultError::Shape(e.to_string()))?;
        let mut faults = Vec::with_capacity(raw.faults.len());
        for (i, f) in raw.faults.into_iter().enumerate() {
            // Counted from 1, as a person reading the file counts.
            let index = i + 1;
            for attribute in f.matches.keys() {
                let known = FIXED_ATTRIBUTES.contains(&attribute.as_str())
                    || fleet.devices.iter().any(|d| {
                        d.components.get(attribute).is_some() || d.tags.get(attribute).is_some()
                    });
                if !known {
                    return Err(FaultError::UnknownAttribute {
                        index,
                        attribute: attribute.clone(),
                    });
                }
            }
            let probability = f.probability.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&probability) {
                return Err(FaultError::Invalid {
                    index,
                    detail: format!("probability {probability} is not within 0..=1"),
                });
            }
            let effect = match f.effect.as_str() {
                "crash_loop" => FaultEffect::CrashLoop,
                "boot_failure" => FaultEffect::BootFailure,
                "reconnect_failure" => FaultEffect::ReconnectFailure,
                "install_failure" => FaultEffect::InstallFailure,
                "download_stall" => FaultEffect::DownloadStall,
                "link_loss" => FaultEffect::LinkLoss,
                "battery_drain" => {
                    let Some(pct_per_hour) = f.pct_per_hour else {
                        return Err(FaultError::Invalid {
                            index,
                            detail: "battery_drain needs `pct_per_hour`".to_owned(),
                        });
                    };
                    if !(pct_per_hour.is_finite() && pct_per_hour > 0.0) {
                        return Err(FaultError::Invalid {
                            index,
                            detail: format!("pct_per_hour {pct_per_hour} is not a positive number"),
                        });
                    }
                    FaultEffect::BatteryDrain { pct_per_hour }
                }
                other => {
                    return Err(FaultError::UnknownEffect {
                        index,
                        effect: other.to_owned(),
                        expected: EFFECT_NAMES.join(", "),
                    });
                }
            };
            if f.pct_per_hour.is_some() && !matches!(effect, FaultEffect::BatteryDrain { .. }) {
                return Err(FaultError::Invalid {
                    index,
                    detail: format!("`pct_per_hour` does not apply to effect {}", effect.name()),
                });
            }
            faults.push(Fault {
                release_version: f.release_version,
                matches: f.matches,
                effect,
                probability,
            });
        }
        Ok(Self { faults })
    }

    /// The faults for `version` that match `device`, in file order.
    pub fn for_device<'a>(
        &'a self,
        version: &'a Version,
        device: &'a Device,
    ) -> impl Iterator<Item = &'a Fault> + 'a {
        self.faults
            .iter()
            .filter(move |f| &f.release_version == version && f.matches_device(device))
    }
}
