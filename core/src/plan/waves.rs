//! Waves: which devices each wave takes, its soak, bytes and cost, and when it runs.
//!
//! The pool is every device eligible now plus those waiting only on a transient condition (the
//! dispatcher re-checks conditions when it offers). The canary wave takes the canary; every
//! later wave takes, in a seeded order, the pool devices not yet placed that match its cohort,
//! up to its size; devices left after the last wave go into a final `rest` wave, so every pool
//! device lands in exactly one wave. Devices that need prerequisites follow in one wave per
//! chain after the last wave: each device installs its chain's releases in order, then the
//! target, and the wave's bytes count all of them.
//!
//! It deliberately does not gate: whether a wave may start is the gates' decision at run time;
//! the times here are the earliest the policy allows.

use crate::fleet::{DeviceClass, Fleet};
use crate::rng::SeededRng;
use crate::time::Timestamp;
use serde::Serialize;
use std::collections::BTreeMap;

use super::canary::Attribute;
use super::eligibility::{DeviceEligibility, Status};
use super::policy::{Cohort, PlanningPolicy};
use super::schedule::{Simulator, WaveTiming};

/// One planned wave.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WavePlan {
    pub name: String,
    /// The cohort in words (`region us-east`, `10% of eligible devices`, ...).
    pub cohort: String,
    /// Indices into `fleet.devices`, ascending (id order).
    #[serde(skip)]
    pub devices: Vec<u32>,
    pub size: usize,
    /// Members that wait on a transient condition (battery, roaming, storage) now.
    pub waiting_on_conditions: usize,
    /// Members offline longer than the online threshold.
    pub offline: usize,
    /// Members on metered links: their bytes are billed on the pooled plan.
    pub metered: usize,
    /// Releases each member installs before the target (prerequisite waves only).
    pub prerequisites: Vec<String>,
    pub bytes_per_device: u64,
    pub bytes: u64,
    pub metered_bytes: u64,
    /// `metered_bytes` at the policy's price per GB (10^9 bytes).
    pub data_cost: f64,
    /// Soak after the last offer: at least one operating cycle of the wave's device classes.
    pub soak_secs: u64,
    /// Set when the wave's own `soak_secs` was shorter than an operating cycle and was raised.
    pub soak_raised_from_secs: Option<u64>,
    pub earliest_start: Timestamp,
    pub timing: WaveTiming,
    /// When the soak ends and the next wave may start (if the gates agree).
    pub soak_end: Option<Timestamp>,
}

/// Shared inputs of wave building.
pub struct WaveInput<'a> {
    pub fleet: &'a Fleet,
    pub eligibility: &'a [DeviceEligibility],
    pub policy: &'a PlanningPolicy,
    pub canary: &'a [u32],
    pub group_of: &'a [u32],
    pub groups: usize,
    pub chains: &'a [Vec<String>],
    pub chain_bytes: &'a [u64],
    pub target_bytes: u64,
    pub now: Timestamp,
    pub seed: u64,
}

/// The most frequent value of `key` among `devices` (ties: the smallest value).
fn most_common(
    fleet: &Fleet,
    devices: impl Iterator<Item = u32>,
    key: fn(&crate::fleet::Device) -> &str,
) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in devices {
        *counts.entry(key(&fleet.devices[i as usize])).or_default() += 1;
    }
    let best = counts.values().copied().max()?;
    counts
        .into_iter()
        .find(|(_, c)| *c == best)
        .map(|(k, _)| k.to_owned())
}

/// A query cohort in words: `devices matching model:T300`, then each saved cohort it read
/// (`; cohort "rev C" = hw_rev:C`), so the plan shows the queries actually used.
fn query_description(query: &str, saved: &BTreeMap<String, String>) -> String {
    use std::fmt::Write as _;
    let mut out = format!("devices matching {}", query.trim());
    for (name, q) in saved {
        // Writing to a String cannot fail.
        let _ = write!(out, "; cohort {name:?} = {q}");
    }
    out
}

/// A wave before scheduling: name, cohort text, devices, soak override, prerequisites, bytes
/// per device.
type Members = (String, String, Vec<u32>, Option<u64>, Vec<String>, u64);

/// Builds and schedules the waves. Returns the waves and warnings.
pub fn build(input: &WaveInput<'_>, sim: &mut Simulator<'_>) -> (Vec<WavePlan>, Vec<String>) {
    let fleet = input.fleet;
    let policy = input.policy;
    let mut warnings = Vec::new();
    // The pool in a seeded order.
    let mut pool: Vec<(u64, u32)> = input
        .eligibility
        .iter()
        .enumerate()
        .filter(|(_, v)| matches!(v.status, Status::EligibleNow | Status::AfterConditions))
        .map(|(i, _)| {
            (
                SeededRng::derive(input.seed ^ 0x3A7E_5EED, i as u64).next_u64(),
                i as u32,
            )
        })
        .collect();
    pool.sort_unstable();
    let pool_len = pool.len();
    let mut placed = vec![false; fleet.devices.len()];
    let mut members: Vec<Members> = Vec::new();
    let mut buf = String::new();
    for spec in &policy.waves {
        let cap = spec.max_devices.unwrap_or(usize::MAX);
        let mut take: Vec<u32> = Vec::new();
        let description;
        match &spec.cohort {
            Cohort::Canary => {
                description = "representative canary".to_owned();
                take.extend(
                    input
                        .canary
                        .iter()
                        .copied()
                        .filter(|&i| !placed[i as usize]),
                );
                take.truncate(cap);
            }
            Cohort::Depot { id } | Cohort::Region { id } => {
                let by_depot = matches!(spec.cohort, Cohort::Depot { .. });
                let key: fn(&crate::fleet::Device) -> &str = if by_depot {
                    |d| d.depot.as_str()
                } else {
                    |d| d.region.as_str()
                };
                let chosen = id.clone().or_else(|| {
                    let canary = most_common(fleet, input.canary.iter().copied(), key);
                    canary.or_else(|| {
                        most_common(
                            fleet,
                            pool.iter().map(|p| p.1).filter(|&i| !placed[i as usize]),
                            key,
                        )
                    })
                });
                let kind = if by_depot { "depot" } else { "region" };
                description = match &chosen {
                    Some(c) => format!("{kind} {c}"),
                    None => format!("{kind} (none: no devices)"),
                };
                if let Some(c) = chosen {
                    for &(_, i) in &pool {
                        if take.len() >= cap {
                            break;
                        }
                        if !placed[i as usize] && key(&fleet.devices[i as usize]) == c.as_str() {
                            take.push(i);
                        }
                    }
                }
            }
            Cohort::Percent { pct } => {
                let n = ((pct / 100.0) * pool_len as f64).ceil() as usize;
                description = format!("{pct}% of the {pool_len} devices in waves");
                let n = n.min(cap);
                take.extend(
                    pool.iter()
                        .map(|p| p.1)
                        .filter(|&i| !placed[i as usize])
                        .take(n),
                );
            }
            Cohort::Filter { attribute, values } => {
                description = format!("{attribute} in {}", values.join(","));
                let parsed = Attribute::parse(attribute);
                for &(_, i) in &pool {
                    if take.len() >= cap {
                        break;
                    }
                    if placed[i as usize] {
                        continue;
                    }
                    buf.clear();
                    parsed.write(&fleet.devices[i as usize], &mut buf);
                    if values.contains(&buf) {
                        take.push(i);
                    }
                }
            }
            Cohort::Query { query, saved } => {
                description = query_description(query, saved);
                // `validate` refused a query that does not read; one that still does not
                // matches nothing rather than everything.
                if let Some(Ok(parsed)) = spec.cohort.parsed_query() {
                    for &(_, i) in &pool {
                        if take.len() >= cap {
                            break;
                        }
                        if !placed[i as usize]
                            && parsed.matches(&fleet.devices[i as usize], &|_| None)
                        {
                            take.push(i);
                        }
                    }
                }
            }
            Cohort::Rest => {
                description = "every remaining device".to_owned();
                take.extend(
                    pool.iter()
                        .map(|p| p.1)
                        .filter(|&i| !placed[i as usize])
                        .take(cap),
                );
            }
        }
        for &i in &take {
            placed[i as usize] = true;
        }
        members.push((
            spec.name.clone(),
            description,
            take,
            spec.soak_secs,
            Vec::new(),
            input.target_bytes,
        ));
    }
    let left: Vec<u32> = pool
        .iter()
        .map(|p| p.1)
        .filter(|&i| !placed[i as usize])
        .collect();
    if !left.is_empty() {
        warnings.push(format!(
            "{} devices matched no wave; they go into a final `rest` wave",
            left.len()
        ));
        members.push((
            "rest".to_owned(),
            "devices no wave took".to_owned(),
            left,
            None,
            Vec::new(),
            input.target_bytes,
        ));
    }
    if policy.prerequisite_waves {
        let mut by_chain: Vec<Vec<u32>> = vec![Vec::new(); input.chains.len()];
        for (i, v) in input.eligibility.iter().enumerate() {
            if v.status == Status::AfterPrerequisites {
                by_chain[v.detail as usize].push(i as u32);
            }
        }
        let mut order: Vec<usize> = (0..by_chain.len()).collect();
        order.sort_by_key(|&c| (usize::MAX - by_chain[c].len(), c));
        for (k, c) in order.into_iter().enumerate() {
            let chain = &input.chains[c];
            members.push((
                format!("after-prerequisites-{}", k + 1),
                format!("devices that first install {}", chain.join(", then ")),
                std::mem::take(&mut by_chain[c]),
                None,
                chain.clone(),
                input.chain_bytes[c] + input.target_bytes,
            ));
        }
    }

    let mut waves = Vec::with_capacity(members.len());
    let mut start = input.now;
    // Each class's cycle once, not a map lookup per device.
    let cycles: Vec<u64> = DeviceClass::ALL
        .iter()
        .map(|c| policy.operating_cycle_secs(*c))
        .collect();
    for (name, cohort, mut devices, soak_override, prerequisites, bytes_per_device) in members {
        devices.sort_unstable();
        let mut per_group = vec![0u64; input.groups];
        let mut cycle = 0u64;
        let (mut waiting, mut offline, mut metered) = (0, 0, 0);
        for &i in &devices {
            let d = &fleet.devices[i as usize];
            per_group[input.group_of[i as usize] as usize] += 1;
            cycle = cycle.max(cycles[d.device_class as usize]);
            waiting += usize::from(input.eligibility[i as usize].status == Status::AfterConditions);
            offline += usize::from(!d.is_online(input.now, policy.online_threshold_secs));
            metered += usize::from(d.metered);
        }
        let (soak_secs, raised) = match soak_override {
            Some(s) if s < cycle => (cycle, Some(s)),
            Some(s) => (s, None),
            None => (cycle, None),
        };
        if let Some(s) = raised {
            warnings.push(format!(
                "wave {name}: soak {s} s is shorter than one operating cycle; raised to {cycle} s"
            ));
        }
        let timing = sim.run_wave(&per_group, bytes_per_device, start);
        if timing.unscheduled > 0 {
            warnings.push(format!(
                "wave {name}: {} devices could not be scheduled within {} days (windows, blackouts or bandwidth cap too tight)",
                timing.unscheduled, policy.horizon_days
            ));
        }
        let soak_end = timing
            .last_offer
            .map(|t| t.plus_secs(60 + soak_secs as i64));
        let earliest_start = start;
        if let Some(end) = soak_end {
            start = end;
        }
        let bytes = devices.len() as u64 * bytes_per_device;
        let metered_bytes = metered as u64 * bytes_per_device;
        waves.push(WavePlan {
            name,
            cohort,
            size: devices.len(),
            devices,
            waiting_on_conditions: waiting,
            offline,
            metered,
            prerequisites,
            bytes_per_device,
            bytes,
            metered_bytes,
            data_cost: metered_bytes as f64 / 1e9 * policy.data_price_per_gb,
            soak_secs,
            soak_raised_from_secs: raised,
            earliest_start,
            timing,
            soak_end,
        });
    }
    (waves, warnings)
}
