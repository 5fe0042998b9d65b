//! The planning policy: every knob of eligibility, canary, waves, schedule and bandwidth, with
//! defaults that follow the project's seeds (a 50-device canary, a few hundred in one region,
//! then wider; soak of one operating cycle; off-peak windows).
//!
//! This is plain data read from the `"planning"` section of a policy file (the app reads the
//! file); it deliberately holds no logic beyond parsing its own small types and checking that
//! values are in range ([`PlanningPolicy::validate`]).

use crate::fleet::{CustomerTier, DeviceClass, Redundancy};
use crate::time::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

use super::PlanError;

/// Everything the planner may be told; every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanningPolicy {
    pub canary: CanaryPolicy,
    pub criticality: CriticalityPolicy,
    /// The waves, in order. Every eligible-now device lands in exactly one of them; devices
    /// left over after the last wave go into a final `rest` wave.
    pub waves: Vec<WaveSpec>,
    /// One operating cycle per device class: a wave soaks for at least the longest cycle of
    /// the classes in it.
    pub operating_cycle_secs: BTreeMap<DeviceClass, u64>,
    /// The cycle of a class missing from `operating_cycle_secs`.
    pub default_operating_cycle_secs: u64,
    pub rate: RateLimit,
    /// Local-time windows in which devices may download; none means any time.
    pub windows: Vec<MaintenanceWindow>,
    /// Periods in which nothing is dispatched (UTC), e.g. a holiday freeze.
    pub blackouts: Vec<Blackout>,
    /// Explicit, logged exceptions to blackouts.
    pub exceptions: Vec<CalendarException>,
    /// Cap on bytes dispatched per clock hour (UTC), across the whole rollout.
    pub bandwidth_cap_bytes_per_hour: Option<u64>,
    /// Price of one gigabyte (10^9 bytes) on pooled, metered data plans.
    pub data_price_per_gb: f64,
    /// A device heard from within this many seconds counts as online.
    pub online_threshold_secs: i64,
    /// Schedule devices that need prerequisites in waves after the last wave, one per chain.
    pub prerequisite_waves: bool,
    /// The schedule gives up (and says so) if a wave would end later than this after `now`.
    pub horizon_days: u32,
}

impl Default for PlanningPolicy {
    fn default() -> Self {
        Self {
            canary: CanaryPolicy::default(),
            criticality: CriticalityPolicy::default(),
            waves: vec![
                WaveSpec::new("canary", Cohort::Canary),
                WaveSpec {
                    max_devices: Some(500),
                    ..WaveSpec::new("region", Cohort::Region { id: None })
                },
                WaveSpec::new("fleet-10pct", Cohort::Percent { pct: 10.0 }),
                WaveSpec::new("fleet", Cohort::Rest),
            ],
            operating_cycle_secs: [
                (DeviceClass::DeliveryVan, DAY),
                (DeviceClass::Truck, DAY),
                (DeviceClass::Bus, DAY),
                (DeviceClass::Pos, DAY),
                (DeviceClass::Kiosk, DAY),
                (DeviceClass::EvCharger, DAY),
                (DeviceClass::MedicalGateway, 7 * DAY),
                (DeviceClass::Sensor, DAY),
            ]
            .into_iter()
            .collect(),
            default_operating_cycle_secs: DAY,
            rate: RateLimit::Exponential {
                start_per_minute: 10,
                factor: 2.0,
                every_devices: 1_000,
                max_per_minute: 2_000,
            },
            windows: Vec::new(),
            blackouts: Vec::new(),
            exceptions: Vec::new(),
            bandwidth_cap_bytes_per_hour: None,
            data_price_per_gb: 0.0,
            online_threshold_secs: 3_600,
            prerequisite_waves: true,
            horizon_days: 120,
        }
    }
}

const DAY: u64 = 86_400;

/// The longest soak or operating cycle the policy accepts: a year.
const MAX_SOAK_SECS: u64 = 365 * DAY;

/// How the canary is chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CanaryPolicy {
    pub size: usize,
    /// Devices every meaningful stratum gets, if it has candidates.
    pub floor_per_stratum: usize,
    /// A stratum whose share of the targeted fleet is at least this is meaningful.
    pub meaningful_share_pct: f64,
    /// Attributes that define strata: any `Device::attribute` name, or several joined by `+`
    /// (`model+hw_rev` makes `T300/C` a stratum of its own).
    pub strata: Vec<String>,
    /// Confine the canary to one depot (the seeds' "25–50 devices in one depot"); strata one
    /// depot cannot cover are reported missing.
    pub depot: Option<String>,
    /// Devices within this distance of their home depot are preferred (a technician can reach
    /// them).
    pub near_depot_km: f64,
}

impl Default for CanaryPolicy {
    fn default() -> Self {
        Self {
            size: 50,
            floor_per_stratum: 5,
            meaningful_share_pct: 0.5,
            strata: [
                "model",
                "model+hw_rev",
                "model+firmware",
                "model+bootloader",
                "region",
                "connectivity",
                "device_class",
            ]
            .map(str::to_owned)
            .to_vec(),
            depot: None,
            near_depot_km: 25.0,
        }
    }
}

/// Which devices are critical, and when their peak is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriticalityPolicy {
    /// Every device of these classes is critical.
    pub critical_classes: Vec<DeviceClass>,
    /// Devices of these tiers are critical when nothing takes over while they update.
    pub critical_tiers: Vec<CustomerTier>,
    /// Redundancy that makes a device of a critical tier non-critical.
    pub covering_redundancy: Vec<Redundancy>,
    /// Peak hours per class in the device's local time; critical devices are not picked for
    /// the canary when the canary starts inside their peak.
    pub peak_hours: BTreeMap<DeviceClass, LocalRange>,
}

impl Default for CriticalityPolicy {
    fn default() -> Self {
        let range = |a: u16, b: u16| LocalRange {
            start: LocalTime(a * 60),
            end: LocalTime(b * 60),
        };
        Self {
            critical_classes: vec![DeviceClass::MedicalGateway],
            critical_tiers: vec![CustomerTier::Enterprise],
            covering_redundancy: vec![Redundancy::Standby, Redundancy::Pooled],
            peak_hours: [
                (DeviceClass::DeliveryVan, range(7, 19)),
                (DeviceClass::Truck, range(6, 20)),
                (DeviceClass::Bus, range(6, 22)),
                (DeviceClass::Pos, range(9, 21)),
                (DeviceClass::Kiosk, range(9, 21)),
                (DeviceClass::EvCharger, range(16, 22)),
                (DeviceClass::MedicalGateway, range(0, 24)),
            ]
            .into_iter()
            .collect(),
        }
    }
}

/// One wave of the rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveSpec {
    pub name: String,
    pub cohort: Cohort,
    /// At most this many devices.
    #[serde(default)]
    pub max_devices: Option<usize>,
    /// Soak after the wave's last dispatch; raised to one operating cycle if shorter.
    #[serde(default)]
    pub soak_secs: Option<u64>,
}

impl WaveSpec {
    pub fn new(name: &str, cohort: Cohort) -> Self {
        Self {
            name: name.to_owned(),
            cohort,
            max_devices: None,
            soak_secs: None,
        }
    }
}

/// Who a wave takes, from the eligible-now devices not yet in an earlier wave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Cohort {
    /// The representative canary (see [`CanaryPolicy`]); only valid as the first wave.
    Canary,
    /// One depot; `None` picks the depot with the most canary devices.
    Depot { id: Option<String> },
    /// One region; `None` picks the region with the most canary devices.
    Region { id: Option<String> },
    /// This percentage of all eligible-now devices, in a seeded order.
    Percent { pct: f64 },
    /// Devices whose attribute has one of these values (a user-defined cohort).
    Filter {
        attribute: String,
        values: Vec<String>,
    },
    /// Devices that match a fleet search (`crate::search`, e.g. `model:T300 hw_rev:C
    /// region:eu-*`). A `cohort:NAME` term reads the saved cohort's query from `saved`, which
    /// the app fills from its cache when it plans (the core keeps no saved cohorts), so the
    /// plan is made from the queries actually used and re-planning picks up new devices.
    Query {
        query: String,
        /// Saved cohorts' queries by name, for the `cohort:NAME` terms of `query`.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        saved: BTreeMap<String, String>,
    },
    /// Everything left.
    Rest,
}

impl Cohort {
    /// A query cohort with no saved cohorts filled in.
    pub fn query(query: &str) -> Self {
        Cohort::Query {
            query: query.to_owned(),
            saved: BTreeMap::new(),
        }
    }

    /// The parsed query of a [`Cohort::Query`] (`None` for other kinds), reading `cohort:NAME`
    /// terms from its `saved` queries.
    pub fn parsed_query(&self) -> Option<Result<crate::search::Query, crate::search::QueryError>> {
        match self {
            Cohort::Query { query, saved } => {
                Some(crate::search::Query::parse_with(query, &|name| {
                    saved.get(name).cloned()
                }))
            }
            _ => None,
        }
    }
}

/// How fast devices are offered the release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RateLimit {
    Constant {
        per_minute: u32,
    },
    /// Start at `start_per_minute`; multiply by `factor` after every `every_devices` offered
    /// (AWS IoT Jobs' ramp, counted on devices offered), up to `max_per_minute`.
    Exponential {
        start_per_minute: u32,
        factor: f64,
        every_devices: u64,
        max_per_minute: u32,
    },
}

impl RateLimit {
    /// Devices per minute after `offered` devices have been offered.
    pub fn per_minute(&self, offered: u64) -> u64 {
        match *self {
            RateLimit::Constant { per_minute } => u64::from(per_minute),
            RateLimit::Exponential {
                start_per_minute,
                factor,
                every_devices,
                max_per_minute,
            } => {
                let steps = (offered / every_devices.max(1)).min(64) as i32;
                let rate = f64::from(start_per_minute) * factor.powi(steps);
                (rate.min(f64::from(max_per_minute)) as u64).max(1)
            }
        }
    }
}

/// A time of day, in minutes after local midnight (`"22:30"`; `"24:00"` is the end of day).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalTime(pub u16);

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl std::str::FromStr for LocalTime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid local time {s:?}: expected HH:MM between 00:00 and 24:00");
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        if m > 59 || h > 24 || (h == 24 && m > 0) {
            return Err(bad());
        }
        Ok(Self(h * 60 + m))
    }
}

impl Serialize for LocalTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LocalTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A daily local-time range; `start > end` wraps past midnight (`22:00`–`06:00`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRange {
    pub start: LocalTime,
    pub end: LocalTime,
}

impl LocalRange {
    /// Whether `minute_of_day` (0..1440) lies in the range.
    pub fn contains(self, minute_of_day: u16) -> bool {
        let (s, e) = (self.start.0, self.end.0);
        if s <= e {
            (s..e).contains(&minute_of_day)
        } else {
            minute_of_day >= s || minute_of_day < e
        }
    }
}

/// A daily maintenance window for one region (`"*"`: every region without its own).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub region: String,
    pub start: LocalTime,
    pub end: LocalTime,
}

/// A period with no dispatch, for one region or `"*"` (all).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blackout {
    pub region: String,
    #[serde(with = "rfc3339")]
    pub from: Timestamp,
    #[serde(with = "rfc3339")]
    pub until: Timestamp,
    pub reason: String,
}

/// Dispatch allowed inside a blackout, for one region or `"*"`: explicit and logged in the
/// plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarException {
    pub region: String,
    #[serde(with = "rfc3339")]
    pub from: Timestamp,
    #[serde(with = "rfc3339")]
    pub until: Timestamp,
    pub reason: String,
}

/// Timestamps as RFC 3339 text in policy files (people write them by hand).
pub(crate) mod rfc3339 {
    use crate::time::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's `with` passes a reference.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

impl PlanningPolicy {
    /// Checks ranges that serde cannot: sizes, rates, percentages, periods.
    pub fn validate(&self) -> Result<(), PlanError> {
        let bad = |field: &str, why: String| {
            Err(PlanError::Policy {
                field: field.to_owned(),
                why,
            })
        };
        if self.canary.size == 0 {
            return bad("canary.size", "must be at least 1".into());
        }
        if !(0.0..=100.0).contains(&self.canary.meaningful_share_pct) {
            return bad(
                "canary.meaningful_share_pct",
                format!("{} is not in 0..=100", self.canary.meaningful_share_pct),
            );
        }
        if self.canary.near_depot_km.is_nan() || self.canary.near_depot_km <= 0.0 {
            return bad("canary.near_depot_km", "must be positive".into());
        }
        if self.canary.strata.iter().any(|s| s.trim().is_empty()) {
            return bad("canary.strata", "an attribute name is empty".into());
        }
        if self.waves.is_empty() {
            return bad("waves", "at least one wave is needed".into());
        }
        for (i, w) in self.waves.iter().enumerate() {
            if i > 0 && w.cohort == Cohort::Canary {
                return bad(
                    &format!("waves[{i}].cohort"),
                    format!("the canary must be the first wave, not wave {:?}", w.name),
                );
            }
            if let Cohort::Percent { pct } = w.cohort
                && !(pct > 0.0 && pct <= 100.0)
            {
                return bad(
                    &format!("waves[{i}].cohort.pct"),
                    format!("{pct} is not in (0, 100]"),
                );
            }
            if let Some(Err(e)) = w.cohort.parsed_query() {
                return bad(
                    &format!("waves[{i}].cohort.query"),
                    format!("wave {:?}: {e}", w.name),
                );
            }
            if w.soak_secs.is_some_and(|s| s > MAX_SOAK_SECS) {
                return bad(
                    &format!("waves[{i}].soak_secs"),
                    format!("more than {MAX_SOAK_SECS} s (a year)"),
                );
            }
            if w.max_devices == Some(0) {
                return bad(
                    &format!("waves[{i}].max_devices"),
                    "must be at least 1".into(),
                );
            }
        }
        match self.rate {
            RateLimit::Constant { per_minute: 0 } => {
                return bad("rate.per_minute", "must be at least 1".into());
            }
            RateLimit::Exponential {
                start_per_minute,
                factor,
                max_per_minute,
                ..
            } => {
                if start_per_minute == 0 || max_per_minute < start_per_minute {
                    return bad(
                        "rate",
                        format!(
                            "start_per_minute {start_per_minute} must be at least 1 and at most max_per_minute {max_per_minute}"
                        ),
                    );
                }
                if factor.is_nan() || factor < 1.0 {
                    return bad("rate.factor", format!("{factor} is below 1"));
                }
            }
            RateLimit::Constant { .. } => {}
        }
        for (i, w) in self.windows.iter().enumerate() {
            if w.start == w.end {
                return bad(
                    &format!("windows[{i}]"),
                    format!("window for region {} is empty", w.region),
                );
            }
        }
        for (i, b) in self.blackouts.iter().enumerate() {
            if b.until <= b.from {
                return bad(
                    &format!("blackouts[{i}]"),
                    format!("until {} is not after from {}", b.until, b.from),
                );
            }
        }
        for (i, e) in self.exceptions.iter().enumerate() {
            if e.until <= e.from || e.reason.trim().is_empty() {
                return bad(
                    &format!("exceptions[{i}]"),
                    "needs until after from and a reason".into(),
                );
            }
        }
        if self.bandwidth_cap_bytes_per_hour == Some(0) {
            return bad("bandwidth_cap_bytes_per_hour", "must be positive".into());
        }
        if self.data_price_per_gb.is_nan() || self.data_price_per_gb < 0.0 {
            return bad("data_price_per_gb", "must not be negative".into());
        }
        if let Some((class, secs)) = self
            .operating_cycle_secs
            .iter()
            .find(|(_, s)| **s > MAX_SOAK_SECS)
        {
            return bad(
                &format!("operating_cycle_secs.{class}"),
                format!("{secs} is more than {MAX_SOAK_SECS} s (a year)"),
            );
        }
        if self.default_operating_cycle_secs > MAX_SOAK_SECS {
            return bad(
                "default_operating_cycle_secs",
                format!("more than {MAX_SOAK_SECS} s (a year)"),
            );
        }
        if self.horizon_days == 0 || self.horizon_days > 3_650 {
            return bad("horizon_days", "must be between 1 and 3650".into());
        }
        Ok(())
    }

    /// The operating cycle of a class.
    pub fn operating_cycle_secs(&self, class: DeviceClass) -> u64 {
        self.operating_cycle_secs
            .get(&class)
            .copied()
            .unwrap_or(self.default_operating_cycle_secs)
    }
}

/// The largest canary a boot-critical release starts with (fewer devices at risk of needing a
/// technician if the image is bad).
pub const BOOT_CRITICAL_CANARY_SIZE: usize = 25;

/// How much longer a boot-critical release's waves soak than the policy says.
pub const BOOT_CRITICAL_SOAK_FACTOR: u64 = 2;

/// The stricter plan and gates for a release that installs a boot-critical component
/// (bootloader or modem; issue 20), chosen from the release's components.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BootCritical {
    /// The boot-critical components the release installs, e.g. `["bootloader"]`.
    pub components: Vec<&'static str>,
    /// `boot-critical: bootloader` (what the plan prints beside the stricter defaults).
    pub reason: String,
    #[serde(skip)]
    pub planning: PlanningPolicy,
    #[serde(skip)]
    pub gates: crate::gates::GatePolicy,
    /// Each default made stricter, in words.
    pub changes: Vec<String>,
}

/// The stricter defaults for `release` if it installs a bootloader or a modem image; `None`
/// for any other release. A smaller canary (at most [`BOOT_CRITICAL_CANARY_SIZE`]), every
/// wave's soak [`BOOT_CRITICAL_SOAK_FACTOR`] times as long (a wave without one soaks that many
/// operating cycles), and the gates of
/// [`GatePolicy::stricter_for_boot_critical`](crate::gates::GatePolicy::stricter_for_boot_critical).
/// Never looser than `planning` and `gates`.
pub fn boot_critical(
    release: &crate::release::ReleaseSpec,
    planning: &PlanningPolicy,
    gates: &crate::gates::GatePolicy,
) -> Option<BootCritical> {
    let components = release.boot_critical_components();
    if components.is_empty() {
        return None;
    }
    let mut changes = Vec::new();
    let mut p = planning.clone();
    let size = p.canary.size.min(BOOT_CRITICAL_CANARY_SIZE);
    if size != p.canary.size {
        changes.push(format!("canary.size: {} -> {size}", p.canary.size));
        p.canary.size = size;
    }
    for w in &mut p.waves {
        let soak = w.soak_secs.map_or(
            p.default_operating_cycle_secs
                .saturating_mul(BOOT_CRITICAL_SOAK_FACTOR),
            |s| s.saturating_mul(BOOT_CRITICAL_SOAK_FACTOR),
        );
        let soak = soak.min(MAX_SOAK_SECS);
        changes.push(format!(
            "waves.{}.soak_secs: {} -> {soak}",
            w.name,
            w.soak_secs
                .map_or_else(|| "one operating cycle".to_owned(), |s| s.to_string())
        ));
        w.soak_secs = Some(soak);
    }
    let (gates, gate_changes) = gates.stricter_for_boot_critical(&components);
    changes.extend(gate_changes.into_iter().map(|c| format!("gates.{c}")));
    Some(BootCritical {
        reason: format!("boot-critical: {}", components.join(", ")),
        components,
        planning: p,
        gates,
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bootloader_release_gets_a_smaller_canary_longer_soaks_and_tighter_gates() {
        use crate::gates::GatePolicy;
        use crate::release::ReleaseSpec;
        let spec = |provides: serde_json::Value| -> ReleaseSpec {
            serde_json::from_value(serde_json::json!({
                "id": "r", "version": "1.0.0", "counter": 1, "hardware": ["T300"],
                "provides": provides, "artifacts": [], "expires": 0
            }))
            .expect("spec")
        };
        let policy = PlanningPolicy::default();
        let gates = GatePolicy::default();
        assert!(
            boot_critical(
                &spec(serde_json::json!({"firmware": "2.5.0"})),
                &policy,
                &gates
            )
            .is_none()
        );
        let b = boot_critical(
            &spec(serde_json::json!({"bootloader": "1.4.0", "firmware": "2.5.0"})),
            &policy,
            &gates,
        )
        .expect("boot-critical");
        assert_eq!(b.reason, "boot-critical: bootloader");
        assert_eq!(b.planning.canary.size, BOOT_CRITICAL_CANARY_SIZE);
        assert!(
            b.planning
                .waves
                .iter()
                .all(|w| w.soak_secs == Some(2 * DAY))
        );
        b.planning.validate().expect("valid");
        assert!(b.gates.boot_failure.max_ratio < gates.boot_failure.max_ratio);
        assert!(
            b.changes.iter().any(|c| c == "canary.size: 50 -> 25"),
            "{:?}",
            b.changes
        );
        let m = boot_critical(&spec(serde_json::json!({"modem": "7.1"})), &policy, &gates)
            .expect("modem");
        assert_eq!(m.components, ["modem"]);
        assert!(m.gates.reconnect_failure.max_ratio < gates.reconnect_failure.max_ratio);
    }

    #[test]
    fn defaults_round_trip_and_validate() {
        let p = PlanningPolicy::default();
        p.validate().expect("defaults are valid");
        let json = serde_json::to_string(&p).expect("serialise");
        let back: PlanningPolicy = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, p);
    }

    #[test]
    fn partial_policy_keeps_defaults_and_rejects_unknown_fields() {
        let p: PlanningPolicy = serde_json::from_str(
            r#"{"canary": {"size": 30}, "windows": [{"region": "*", "start": "22:00", "end": "06:00"}]}"#,
        )
        .expect("parse");
        assert_eq!(p.canary.size, 30);
        assert_eq!(p.canary.floor_per_stratum, 5);
        assert_eq!(p.windows[0].start, LocalTime(22 * 60));
        let err = serde_json::from_str::<PlanningPolicy>(r#"{"canary": {"sise": 30}}"#)
            .expect_err("typo");
        assert!(err.to_string().contains("sise"), "{err}");
        let err = serde_json::from_str::<PlanningPolicy>(
            r#"{"windows": [{"region": "*", "start": "25:00", "end": "06:00"}]}"#,
        )
        .expect_err("bad time");
        assert!(err.to_string().contains("25:00"), "{err}");
    }

    #[test]
    fn local_ranges_wrap_midnight() {
        let r = LocalRange {
            start: LocalTime(22 * 60),
            end: LocalTime(6 * 60),
        };
        assert!(r.contains(23 * 60));
        assert!(r.contains(0));
        assert!(!r.contains(6 * 60));
        assert!(!r.contains(12 * 60));
    }

    #[test]
    fn exponential_ramp_grows_and_caps() {
        let r = RateLimit::Exponential {
            start_per_minute: 10,
            factor: 2.0,
            every_devices: 100,
            max_per_minute: 50,
        };
        assert_eq!(r.per_minute(0), 10);
        assert_eq!(r.per_minute(99), 10);
        assert_eq!(r.per_minute(100), 20);
        assert_eq!(r.per_minute(250), 40);
        assert_eq!(r.per_minute(10_000), 50);
    }

    #[test]
    fn validation_names_the_field() {
        let mut p = PlanningPolicy::default();
        p.waves[1].cohort = Cohort::Canary;
        let err = p.validate().expect_err("canary second").to_string();
        assert!(err.contains("waves[1].cohort"), "{err}");
        let mut p = PlanningPolicy::default();
        p.waves[2].soak_secs = Some(u64::MAX);
        let err = p.validate().expect_err("huge soak").to_string();
        assert!(err.contains("waves[2].soak_secs"), "{err}");
        let mut p = PlanningPolicy::default();
        p.operating_cycle_secs.insert(DeviceClass::Bus, u64::MAX);
        let err = p.validate().expect_err("huge cycle").to_string();
        assert!(err.contains("operating_cycle_secs.bus"), "{err}");
    }
}
