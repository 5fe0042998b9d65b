//! Rollout planning: who gets a release, in what order, and when.
//!
//! [`plan`] takes a fleet, the target release, a catalog of other releases (for prerequisite
//! chains), `now`, a seed and a [`PlanningPolicy`], and returns a [`Plan`]: every device's
//! eligibility with reasons, the prerequisite chains, a representative canary with its coverage,
//! the waves, their schedule under rate limits, windows, blackouts and a bandwidth cap, and the
//! bytes and data cost. It is a pure function: the same inputs give the same plan.
//!
//! It deliberately does not dispatch, gate or watch health (the rollout state machine and the
//! gates do), and it reads no clock: `now` is passed in. Devices are referred to by their index
//! into `fleet.devices` (ascending, so in id order), never cloned.

pub mod canary;
pub mod eligibility;
pub mod graph;
pub mod pacing;
pub mod policy;
pub mod schedule;
pub mod waves;

use crate::fleet::Fleet;
use crate::release::ReleaseSpec;
use crate::requirement::RequirementKind;
use crate::time::Timestamp;
use serde::Serialize;

/// A device's installed version of `name`, by a linear scan that compares lengths before
/// bytes. Devices carry a handful of components whose names mostly differ in length, so this
/// avoids most byte comparisons that `SmallMap::get`'s binary search makes; same result.
#[inline]
pub(crate) fn component(
    device: &crate::fleet::Device,
    name: &str,
) -> Option<crate::version::Version> {
    device
        .components
        .iter()
        .find(|(k, _)| k.len() == name.len() && *k == name)
        .map(|(_, v)| *v)
}

/// Whether `device` meets `req` for a download of `download_bytes`: `Requirement::is_met` with
/// the faster component lookup.
#[inline]
pub(crate) fn is_met(
    req: &crate::requirement::Requirement,
    device: &crate::fleet::Device,
    download_bytes: u64,
) -> bool {
    match req {
        crate::requirement::Requirement::Component { name, constraint } => {
            component(device, name).is_some_and(|v| constraint.allows(v))
        }
        other => other.is_met(device, download_bytes),
    }
}

pub(crate) use crate::fasthash::FastMap;

pub use canary::{CanaryReport, Coverage, StratumCoverage};
pub use eligibility::{DeviceEligibility, Status};
pub use policy::PlanningPolicy;
pub use schedule::{HourLoad, OfferSlot};
pub use waves::WavePlan;

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A policy value is out of range.
    #[error("invalid planning policy field {field}: {why}")]
    Policy { field: String, why: String },
    /// The target release has expired at `now`.
    #[error("release {id} expired at {expires}, before the plan starts at {now}")]
    Expired {
        id: String,
        expires: Timestamp,
        now: Timestamp,
    },
    /// The release lists more requirements than the planner tracks.
    #[error("release {id} has {count} requirements; the planner tracks at most 64")]
    TooManyRequirements { id: String, count: usize },
    /// The bandwidth cap is smaller than one device's download, so nothing could ever go.
    #[error(
        "bandwidth_cap_bytes_per_hour {cap} is below one device's download of {bytes} bytes for release {id}"
    )]
    CapBelowDownload { cap: u64, bytes: u64, id: String },
}

/// Everything a plan is computed from.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    pub fleet: &'a Fleet,
    pub release: &'a ReleaseSpec,
    /// Other releases that may serve as prerequisites (the target itself is ignored here).
    pub catalog: &'a [ReleaseSpec],
    pub now: Timestamp,
    pub seed: u64,
    pub policy: &'a PlanningPolicy,
}

/// Devices per status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusCount {
    pub status: Status,
    pub devices: usize,
}

/// Devices per reason within a status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    pub status: Status,
    pub reason: String,
    pub devices: usize,
}

/// Eligibility in numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EligibilitySummary {
    pub devices: usize,
    /// Devices whose model the release is built for.
    pub targeted: usize,
    pub by_status: Vec<StatusCount>,
    /// Sorted by status, then by descending count, then by text. A device waiting on several
    /// conditions counts under each.
    pub by_reason: Vec<ReasonCount>,
    /// Eligible now but offline longer than the online threshold: offered when they return.
    pub eligible_now_offline: usize,
}

/// One prerequisite chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainSummary {
    /// Release ids, in install order, before the target.
    pub releases: Vec<String>,
    pub devices: usize,
    /// Bytes one device downloads: the chain's releases plus the target.
    pub bytes_per_device: u64,
}

/// A calendar exception and how many devices it let through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExceptionUse {
    pub region: String,
    #[serde(with = "policy::rfc3339")]
    pub from: Timestamp,
    #[serde(with = "policy::rfc3339")]
    pub until: Timestamp,
    pub reason: String,
    pub devices: u64,
}

/// The schedule as a whole.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduleSummary {
    pub rate: policy::RateLimit,
    pub windows: Vec<policy::MaintenanceWindow>,
    pub blackouts: Vec<policy::Blackout>,
    /// Every exception of the calendar, with the devices it let through (logged, never silent).
    pub exceptions: Vec<ExceptionUse>,
    pub bandwidth_cap_bytes_per_hour: Option<u64>,
    pub peak_bytes_per_hour: u64,
    pub total_bytes: u64,
    pub metered_bytes: u64,
    pub data_cost: f64,
    pub data_price_per_gb: f64,
    pub first_offer: Option<Timestamp>,
    pub last_offer: Option<Timestamp>,
    /// Load per UTC clock hour in which anything was offered, in time order.
    pub hours: Vec<HourLoad>,
    /// Offers per minute and depot, in time order (left out of JSON: it can be long).
    #[serde(skip)]
    pub slots: Vec<OfferSlot>,
}

/// A rollout plan. Serialises to the JSON `convoy plan --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub release: String,
    pub now: Timestamp,
    pub seed: u64,
    pub download_bytes: u64,
    pub eligibility: EligibilitySummary,
    pub chains: Vec<ChainSummary>,
    /// Possible dependency cycles in the catalog (release ids, first repeated at the end).
    pub catalog_cycles: Vec<Vec<String>>,
    pub canary: CanaryReport,
    pub waves: Vec<WavePlan>,
    pub schedule: ScheduleSummary,
    pub warnings: Vec<String>,
    /// Every device's verdict, indexed like `fleet.devices`.
    #[serde(skip)]
    pub devices: Vec<DeviceEligibility>,
    /// Texts behind [`DeviceEligibility::detail`] for never-eligible devices.
    #[serde(skip)]
    pub never_reasons: Vec<String>,
    /// Chains by index, behind [`DeviceEligibility::detail`] for devices after prerequisites.
    #[serde(skip)]
    pub chain_ids: Vec<Vec<String>>,
}

impl Plan {
    /// The plan's waves of devices eligible for the release itself, as the rollout state machine
    /// takes them (ids in id order, soak in seconds), in plan order: the canary first.
    /// Prerequisite waves are left out: `rollout::chain::waves_with_chains` appends them with
    /// their chains.
    pub fn rollout_waves(&self, fleet: &Fleet) -> Vec<crate::rollout::WaveSpec> {
        self.waves
            .iter()
            .filter(|w| w.prerequisites.is_empty() && !w.devices.is_empty())
            .map(|w| crate::rollout::WaveSpec {
                name: w.name.clone(),
                device_ids: w
                    .devices
                    .iter()
                    .map(|&i| fleet.devices[i as usize].id.clone())
                    .collect(),
                soak_secs: i64::try_from(w.soak_secs).unwrap_or(i64::MAX),
            })
            .collect()
    }

    /// Why device `index` is never eligible, if it is not.
    pub fn never_reason(&self, index: usize) -> Option<&str> {
        let v = self.devices.get(index)?;
        (v.status == Status::Never).then(|| self.never_reasons[v.detail as usize].as_str())
    }

    /// The prerequisite chain of device `index`, if it needs one.
    pub fn chain_of(&self, index: usize) -> Option<&[String]> {
        let v = self.devices.get(index)?;
        (v.status == Status::AfterPrerequisites)
            .then(|| self.chain_ids[v.detail as usize].as_slice())
    }
}

/// Plans a rollout. Pure and deterministic: the same input gives the same plan.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let PlanInput {
        fleet,
        release,
        catalog,
        now,
        seed,
        policy,
    } = *input;
    policy.validate()?;
    if release.expires <= now {
        return Err(PlanError::Expired {
            id: release.id.clone(),
            expires: release.expires,
            now,
        });
    }
    if release.requires.len() > 64 {
        return Err(PlanError::TooManyRequirements {
            id: release.id.clone(),
            count: release.requires.len(),
        });
    }
    let download_bytes = release.download_bytes();
    if let Some(cap) = policy.bandwidth_cap_bytes_per_hour
        && cap < download_bytes
    {
        return Err(PlanError::CapBelowDownload {
            cap,
            bytes: download_bytes,
            id: release.id.clone(),
        });
    }
    let mut warnings = Vec::new();
    let usable: Vec<&ReleaseSpec> = catalog
        .iter()
        .filter(|r| r.id != release.id)
        .filter(|r| {
            let live = r.expires > now;
            if !live {
                warnings.push(format!(
                    "catalog release {} expired at {}; not used as a prerequisite",
                    r.id, r.expires
                ));
            }
            live
        })
        .collect();

    let elig = eligibility::evaluate(fleet, release, usable);
    let summary = summarise(fleet, release, &elig, now, policy);
    let chain_bytes: Vec<u64> = elig.chain_bytes.clone();
    let mut chain_devices = vec![0usize; elig.chains.len()];
    for v in &elig.devices {
        if v.status == Status::AfterPrerequisites {
            chain_devices[v.detail as usize] += 1;
        }
    }
    let mut chains: Vec<ChainSummary> = elig
        .chains
        .iter()
        .zip(&chain_devices)
        .zip(&chain_bytes)
        .map(|((c, &n), &b)| ChainSummary {
            releases: c.clone(),
            devices: n,
            bytes_per_device: b + download_bytes,
        })
        .collect();
    chains.sort_by(|a, b| b.devices.cmp(&a.devices).then(a.releases.cmp(&b.releases)));

    let calendar = schedule::Calendar::new(fleet, policy);
    // Only devices that can ever be offered need a calendar group.
    let depot_index: FastMap<&str, u32> = fleet
        .depots
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i as u32))
        .collect();
    let unknown_group = calendar.unknown_depot_group() as u32;
    // By the depot's shared text first (one lookup of a word per device, not a hash of its
    // text); the text decides on a miss, so a fleet without shared values gets the same groups.
    let mut by_addr: FastMap<usize, u32> = FastMap::default();
    let group_of: Vec<u32> = fleet
        .devices
        .iter()
        .zip(&elig.devices)
        .map(|(d, v)| match v.status {
            Status::Never | Status::Installed => unknown_group,
            _ => {
                if let Some(&g) = by_addr.get(&d.depot.addr()) {
                    return g;
                }
                let g = depot_index
                    .get(d.depot.as_str())
                    .copied()
                    .unwrap_or(unknown_group);
                if by_addr.len() < 1 << 16 {
                    by_addr.insert(d.depot.addr(), g);
                }
                g
            }
        })
        .collect();
    let horizon_end = now.plus_secs(i64::from(policy.horizon_days) * 86_400);
    let first_open_minute: Vec<Option<u16>> = (0..calendar.group_count())
        .map(|g| {
            calendar
                .next_open(g, now, now.plus_secs(14 * 86_400))
                .map(|t| calendar.local_minute(g, t))
        })
        .collect();
    let targeted: Vec<u32> = (0..fleet.devices.len() as u32)
        .filter(|&i| elig.devices[i as usize].supported)
        .collect();
    let canary = canary::select(&canary::CanaryInput {
        fleet,
        eligibility: &elig.devices,
        targeted: &targeted,
        policy,
        calendar: &calendar,
        group_of: &group_of,
        first_open_minute: &first_open_minute,
        now,
        seed,
    });
    if canary.devices.len() < policy.canary.size.min(canary.candidates) {
        warnings.push(format!(
            "canary has {} devices, fewer than the {} asked for",
            canary.devices.len(),
            policy.canary.size
        ));
    }
    let mut sim = schedule::Simulator::new(&calendar, policy, horizon_end);
    let (waves, wave_warnings) = waves::build(
        &waves::WaveInput {
            fleet,
            eligibility: &elig.devices,
            policy,
            canary: &canary.devices,
            group_of: &group_of,
            groups: calendar.group_count(),
            chains: &elig.chains,
            chain_bytes: &chain_bytes,
            target_bytes: download_bytes,
            now,
            seed,
        },
        &mut sim,
    );
    warnings.extend(wave_warnings);
    let exceptions = policy
        .exceptions
        .iter()
        .zip(&sim.exception_devices)
        .map(|(e, &n)| ExceptionUse {
            region: e.region.clone(),
            from: e.from,
            until: e.until,
            reason: e.reason.clone(),
            devices: n,
        })
        .collect();
    let total_bytes = waves.iter().map(|w| w.bytes).sum();
    let metered_bytes: u64 = waves.iter().map(|w| w.metered_bytes).sum();
    let schedule = ScheduleSummary {
        rate: policy.rate.clone(),
        windows: policy.windows.clone(),
        blackouts: policy.blackouts.clone(),
        exceptions,
        bandwidth_cap_bytes_per_hour: policy.bandwidth_cap_bytes_per_hour,
        peak_bytes_per_hour: sim.hours.iter().map(|h| h.bytes).max().unwrap_or(0),
        total_bytes,
        metered_bytes,
        data_cost: metered_bytes as f64 / 1e9 * policy.data_price_per_gb,
        data_price_per_gb: policy.data_price_per_gb,
        first_offer: waves.iter().find_map(|w| w.timing.first_offer),
        last_offer: waves.iter().filter_map(|w| w.timing.last_offer).max(),
        hours: std::mem::take(&mut sim.hours),
        slots: std::mem::take(&mut sim.slots),
    };
    Ok(Plan {
        release: release.id.clone(),
        now,
        seed,
        download_bytes,
        eligibility: summary,
        chains,
        catalog_cycles: elig.cycles.clone(),
        canary,
        waves,
        schedule,
        warnings,
        devices: elig.devices,
        never_reasons: elig.reasons,
        chain_ids: elig.chains,
    })
}

fn summarise(
    fleet: &Fleet,
    release: &ReleaseSpec,
    elig: &eligibility::Eligibility,
    now: Timestamp,
    policy: &PlanningPolicy,
) -> EligibilitySummary {
    let mut by_status = [0usize; 5];
    let mut never = vec![0usize; elig.reasons.len()];
    let mut conditions = [0usize; 64];
    let mut chains = vec![0usize; elig.chains.len()];
    let mut eligible_now_offline = 0;
    let mut targeted = 0;
    for (v, d) in elig.devices.iter().zip(&fleet.devices) {
        by_status[v.status as usize] += 1;
        targeted += usize::from(v.supported);
        match v.status {
            Status::Never => never[v.detail as usize] += 1,
            Status::AfterPrerequisites => chains[v.detail as usize] += 1,
            Status::AfterConditions => {
                let mut bits = v.unmet_conditions;
                while bits != 0 {
                    conditions[bits.trailing_zeros() as usize] += 1;
                    bits &= bits - 1;
                }
            }
            Status::EligibleNow => {
                eligible_now_offline +=
                    usize::from(!d.is_online(now, policy.online_threshold_secs));
            }
            Status::Installed => {}
        }
    }
    let mut by_reason = Vec::new();
    for (r, &n) in elig.reasons.iter().zip(&never) {
        if n > 0 {
            by_reason.push(ReasonCount {
                status: Status::Never,
                reason: r.clone(),
                devices: n,
            });
        }
    }
    for (c, &n) in elig.chains.iter().zip(&chains) {
        by_reason.push(ReasonCount {
            status: Status::AfterPrerequisites,
            reason: format!("needs {} first", c.join(" then ")),
            devices: n,
        });
    }
    for (i, req) in release.requires.iter().enumerate().take(64) {
        if req.kind() == RequirementKind::Condition && conditions[i] > 0 {
            by_reason.push(ReasonCount {
                status: Status::AfterConditions,
                reason: format!("{req} unmet ({})", eligibility::condition_hint(req)),
                devices: conditions[i],
            });
        }
    }
    by_reason.sort_by(|a, b| {
        (a.status, usize::MAX - a.devices, &a.reason).cmp(&(
            b.status,
            usize::MAX - b.devices,
            &b.reason,
        ))
    });
    EligibilitySummary {
        devices: fleet.devices.len(),
        targeted,
        by_status: Status::ALL
            .iter()
            .map(|&s| StatusCount {
                status: s,
                devices: by_status[s as usize],
            })
            .collect(),
        by_reason,
        eligible_now_offline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::SmallMap;
    use crate::version::Version;

    fn release() -> ReleaseSpec {
        ReleaseSpec {
            id: "x-1".to_owned(),
            version: Version::new(1, 0, 0),
            counter: 1,
            hardware: vec!["T300".to_owned()],
            provides: [("firmware", Version::new(9, 0, 0))]
                .into_iter()
                .collect::<SmallMap<Version>>(),
            requires: Vec::new(),
            artifacts: Vec::new(),
            expires: Timestamp::from_secs(1_000),
        }
    }

    #[test]
    fn empty_fleet_gives_an_empty_plan() {
        let fleet = Fleet::default();
        let policy = PlanningPolicy::default();
        let plan = plan(&PlanInput {
            fleet: &fleet,
            release: &release(),
            catalog: &[],
            now: Timestamp::from_secs(0),
            seed: 1,
            policy: &policy,
        })
        .expect("plan");
        assert!(plan.canary.devices.is_empty());
        assert!(plan.waves.iter().all(|w| w.size == 0));
        assert_eq!(plan.schedule.total_bytes, 0);
        assert_eq!(plan.schedule.first_offer, None);
    }

    #[test]
    fn refuses_expired_releases_and_impossible_caps() {
        let fleet = Fleet::default();
        let mut policy = PlanningPolicy::default();
        let input = |now: i64, policy: &PlanningPolicy, release: &ReleaseSpec| {
            plan(&PlanInput {
                fleet: &fleet,
                release,
                catalog: &[],
                now: Timestamp::from_secs(now),
                seed: 1,
                policy,
            })
        };
        let err = input(2_000, &policy, &release()).expect_err("expired");
        assert!(err.to_string().contains("release x-1 expired"), "{err}");
        let mut big = release();
        big.artifacts.push(crate::release::Artifact {
            name: "a.img".to_owned(),
            url: "a.img".to_owned(),
            length_bytes: 10_000,
            sha256: String::new(),
        });
        policy.bandwidth_cap_bytes_per_hour = Some(5_000);
        let err = input(0, &policy, &big).expect_err("cap");
        assert!(
            err.to_string()
                .contains("below one device's download of 10000"),
            "{err}"
        );
    }

    mod properties {
        use super::super::policy::{Cohort, LocalTime, MaintenanceWindow, RateLimit, WaveSpec};
        use super::super::*;
        use crate::release::Artifact;
        use crate::synth::{self, SynthOptions};
        use proptest::prelude::*;

        fn target() -> ReleaseSpec {
            ReleaseSpec {
                id: "t300-fw-9".to_owned(),
                version: crate::version::Version::new(9, 0, 0),
                counter: 9,
                hardware: vec!["T300".to_owned(), "T500".to_owned()],
                provides: [("firmware", crate::version::Version::new(9, 0, 0))]
                    .into_iter()
                    .collect(),
                requires: ["bootloader>=2.0", "battery>=40", "no_roaming"]
                    .iter()
                    .map(|r| r.parse().expect("requirement"))
                    .collect(),
                artifacts: vec![Artifact {
                    name: "fw.img".to_owned(),
                    url: "fw.img".to_owned(),
                    length_bytes: 1_000_000,
                    sha256: String::new(),
                }],
                expires: Timestamp::from_secs(i64::MAX),
            }
        }

        /// A query wave takes exactly the eligible devices (not in the canary) that match the
        /// query, `cohort:NAME` reads the wave's saved queries, the rest wave takes the others,
        /// and a query that does not read is refused naming the wave.
        #[test]
        fn query_waves_take_exactly_the_matching_devices() {
            let now = Timestamp::from_secs(1_795_392_000);
            let fleet = synth::generate(&SynthOptions {
                devices: 400,
                seed: 7,
                now,
            });
            let release = target();
            let saved: std::collections::BTreeMap<String, String> =
                [("vans".to_owned(), "device_class:delivery_van".to_owned())].into();
            for cohort in [
                Cohort::query("device_class:delivery_van -region:nowhere"),
                Cohort::Query {
                    query: "cohort:vans -region:nowhere".to_owned(),
                    saved,
                },
            ] {
                let policy = PlanningPolicy {
                    waves: vec![
                        WaveSpec::new("canary", Cohort::Canary),
                        WaveSpec::new("vans", cohort),
                    ],
                    ..PlanningPolicy::default()
                };
                let plan = plan(&PlanInput {
                    fleet: &fleet,
                    release: &release,
                    catalog: &[],
                    now,
                    seed: 3,
                    policy: &policy,
                })
                .expect("plans");
                assert_eq!(plan.waves[1].name, "vans");
                let van = |i: u32| {
                    fleet.devices[i as usize].device_class == crate::fleet::DeviceClass::DeliveryVan
                };
                let canary: std::collections::BTreeSet<u32> =
                    plan.canary.devices.iter().copied().collect();
                let expected: Vec<u32> = plan
                    .devices
                    .iter()
                    .enumerate()
                    .filter(|(i, v)| {
                        matches!(v.status, Status::EligibleNow | Status::AfterConditions)
                            && !canary.contains(&(*i as u32))
                            && van(*i as u32)
                    })
                    .map(|(i, _)| i as u32)
                    .collect();
                assert!(!expected.is_empty(), "the synthetic fleet has vans to plan");
                assert_eq!(plan.waves[1].devices, expected);
                let rest = plan
                    .waves
                    .iter()
                    .find(|w| w.name == "rest")
                    .expect("a rest wave");
                assert!(!rest.devices.is_empty());
                assert!(rest.devices.iter().all(|&i| !van(i)));
            }
            let bad = PlanningPolicy {
                waves: vec![
                    WaveSpec::new("canary", Cohort::Canary),
                    WaveSpec::new("fine", Cohort::query("model:T300")),
                    WaveSpec::new("broken", Cohort::query("firmware:<")),
                ],
                ..PlanningPolicy::default()
            };
            let err = bad.validate().expect_err("a query that does not read");
            assert!(err.to_string().contains("waves[2].cohort.query"), "{err}");
            assert!(err.to_string().contains("\"broken\""), "{err}");
            let unknown = PlanningPolicy {
                waves: vec![WaveSpec::new("pilots", Cohort::query("cohort:pilots"))],
                ..PlanningPolicy::default()
            };
            let err = unknown.validate().expect_err("a cohort not filled in");
            assert!(err.to_string().contains("pilots"), "{err}");
        }

        /// The planner groups by shared values' addresses (the canary's device shapes, the
        /// eligibility of a model, revision and components, the depot's calendar group) with
        /// the text deciding on a miss: a fleet whose every device owns its own copies plans
        /// byte for byte as the same fleet with its values shared.
        #[test]
        fn a_fleet_without_shared_values_plans_as_the_same_fleet_with_them() {
            use crate::fleet::SmallMap;
            use crate::sym::Sym;
            let now = Timestamp::from_secs(1_795_392_000);
            let shared = synth::generate(&SynthOptions {
                devices: 3_000,
                seed: 5,
                now,
            });
            let mut own = shared.clone();
            for d in &mut own.devices {
                d.model = Sym::new(d.model.as_str());
                d.hw_rev = Sym::new(d.hw_rev.as_str());
                d.region = Sym::new(d.region.as_str());
                d.depot = Sym::new(d.depot.as_str());
                d.components = d
                    .components
                    .iter()
                    .map(|(k, v)| (Sym::new(k.as_str()), *v))
                    .collect::<SmallMap<_>>();
                d.tags = d
                    .tags
                    .iter()
                    .map(|(k, v)| (Sym::new(k.as_str()), Sym::new(v.as_str())))
                    .collect::<SmallMap<_>>();
            }
            assert!(
                own.devices[0].model.addr() != own.devices[1].model.addr()
                    && shared.devices[0].components.addr() != own.devices[0].components.addr(),
                "the copy owns its values"
            );
            let release = target();
            for policy in [
                PlanningPolicy::default(),
                PlanningPolicy {
                    waves: vec![
                        WaveSpec::new("canary", Cohort::Canary),
                        WaveSpec::new("depot", Cohort::Depot { id: None }),
                        WaveSpec::new("rest", Cohort::Rest),
                    ],
                    ..PlanningPolicy::default()
                },
            ] {
                let plan_of = |fleet: &Fleet| {
                    let p = plan(&PlanInput {
                        fleet,
                        release: &release,
                        catalog: &[],
                        now,
                        seed: 11,
                        policy: &policy,
                    })
                    .expect("plans");
                    serde_json::to_string(&p).expect("serialises")
                };
                let (a, b) = (plan_of(&shared), plan_of(&own));
                assert!(a.len() > 1_000 && a.contains("\"canary\""), "a real plan");
                assert_eq!(a, b);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            /// Whatever the fleet and policy: every device in the pool lands in exactly one
            /// wave, the canary is eligible now and within its size, no hour exceeds the cap,
            /// and every offer falls inside the window.
            #[test]
            fn plans_keep_their_invariants(
                devices in 0usize..400,
                fleet_seed in 0u64..1_000,
                seed in 0u64..1_000,
                canary_size in 1usize..40,
                floor in 0usize..3,
                pct in 1.0f64..100.0,
                per_minute in 1u32..50,
                cap_devices in 1u64..200,
                window_start in 0u16..24,
                window_len in 1u16..24,
            ) {
                let now = Timestamp::from_secs(1_795_392_000);
                let fleet = synth::generate(&SynthOptions { devices, seed: fleet_seed, now });
                let policy = PlanningPolicy {
                    canary: policy::CanaryPolicy {
                        size: canary_size,
                        floor_per_stratum: floor,
                        ..policy::CanaryPolicy::default()
                    },
                    waves: vec![
                        WaveSpec::new("canary", Cohort::Canary),
                        WaveSpec::new("some", Cohort::Percent { pct }),
                        WaveSpec::new("vans", Cohort::Filter {
                            attribute: "device_class".to_owned(),
                            values: vec!["delivery_van".to_owned()],
                        }),
                    ],
                    rate: RateLimit::Constant { per_minute },
                    bandwidth_cap_bytes_per_hour: Some(cap_devices * 1_000_000),
                    windows: vec![MaintenanceWindow {
                        region: "*".to_owned(),
                        start: LocalTime(window_start * 60),
                        end: LocalTime(((window_start + window_len) % 24) * 60),
                    }],
                    ..PlanningPolicy::default()
                };
                let release = target();
                let plan = plan(&PlanInput { fleet: &fleet, release: &release, catalog: &[], now, seed, policy: &policy })
                    .expect("valid policy plans");
                let mut seen = vec![0u8; fleet.len()];
                for w in &plan.waves {
                    for &i in &w.devices {
                        seen[i as usize] += 1;
                    }
                }
                for (i, v) in plan.devices.iter().enumerate() {
                    let pooled = matches!(v.status, Status::EligibleNow | Status::AfterConditions);
                    prop_assert_eq!(seen[i], u8::from(pooled));
                }
                prop_assert!(plan.canary.devices.len() <= canary_size);
                for &i in &plan.canary.devices {
                    prop_assert_eq!(plan.devices[i as usize].status, Status::EligibleNow);
                }
                for h in &plan.schedule.hours {
                    prop_assert!(h.bytes <= cap_devices * 1_000_000);
                }
                let window = policy::LocalRange { start: policy.windows[0].start, end: policy.windows[0].end };
                for slot in &plan.schedule.slots {
                    let offset_secs = slot.depot.map_or(0, |d| {
                        fleet.depots[d as usize]
                            .local_clock()
                            .expect("synthetic zones are known")
                            .offset_secs_at(slot.at)
                    });
                    let minute = ((slot.at.secs() + offset_secs).rem_euclid(86_400) / 60) as u16;
                    prop_assert!(window.contains(minute));
                }
            }
        }
    }
}
