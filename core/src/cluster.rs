//! Shared-fate clusters: groups of devices that tend to fail together.
//!
//! Two devices share a fate when the same defect, bad release or outside event hits both at
//! once: they run the same firmware build on the same board, their batteries age the same way,
//! and they sit behind the same kind of link on the same carrier. A [`ClusterKey`] is exactly
//! that tuple: model, firmware version, hardware revision, the `battery_chem` tag, the
//! connectivity and the `carrier` tag. Missing values (no battery, no modem) are part of the key
//! as `None`, so mains-powered kiosks on Ethernet form their own clusters.
//!
//! [`clusters`] reports every cluster of a fleet with its size and share; [`ClusterTally`] counts
//! clusters and how many of their members an affected set holds in the same pass, which is what
//! risk scoring (blast radius) and the planner use; [`concentration`] is the one-call form.
//!
//! What this module deliberately is not: it does not learn clusters from failure history or
//! telemetry (the key is fixed and documented), and it does not group by geography (the depot
//! and region are strata for the planner, not fates: a depot's devices do not share a defect).
//! It allocates per cluster, never per device, so a 1,000,000-device fleet is one cheap pass.

use crate::fleet::{Connectivity, Device, Fleet};
use crate::version::Version;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;

/// The tag naming a device's battery chemistry.
pub const BATTERY_CHEM_TAG: &str = "battery_chem";
/// The tag naming a device's mobile carrier.
pub const CARRIER_TAG: &str = "carrier";

/// What puts devices in the same shared-fate cluster. Ordered field by field, so cluster lists
/// have a defined order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ClusterKey {
    pub model: String,
    /// The installed application firmware build; `None` when the device reports none.
    pub firmware: Option<Version>,
    pub hw_rev: String,
    /// The `battery_chem` tag; `None` for devices without a battery.
    pub battery_chem: Option<String>,
    pub connectivity: Connectivity,
    /// The `carrier` tag; `None` for devices without a modem.
    pub carrier: Option<String>,
}

impl fmt::Display for ClusterKey {
    /// `T300 fw 2.3.2 rev A li-ion-nmc cellular/vodafone`; absent parts read `-`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fw = self
            .firmware
            .map_or_else(|| "-".to_owned(), |v| v.to_string());
        write!(
            f,
            "{} fw {fw} rev {} {} {}/{}",
            self.model,
            self.hw_rev,
            self.battery_chem.as_deref().unwrap_or("-"),
            self.connectivity,
            self.carrier.as_deref().unwrap_or("-"),
        )
    }
}

/// The borrowed form of a key, used while counting so that no device costs an allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct KeyRef<'a> {
    model: &'a str,
    firmware: Option<Version>,
    hw_rev: &'a str,
    battery_chem: Option<&'a str>,
    connectivity: Connectivity,
    carrier: Option<&'a str>,
}

impl<'a> KeyRef<'a> {
    fn of(d: &'a Device) -> Self {
        Self {
            model: &d.model,
            firmware: d.firmware(),
            hw_rev: &d.hw_rev,
            battery_chem: d.tag(BATTERY_CHEM_TAG),
            connectivity: d.connectivity,
            carrier: d.tag(CARRIER_TAG),
        }
    }

    fn to_owned_key(self) -> ClusterKey {
        ClusterKey {
            model: self.model.to_owned(),
            firmware: self.firmware,
            hw_rev: self.hw_rev.to_owned(),
            battery_chem: self.battery_chem.map(str::to_owned),
            connectivity: self.connectivity,
            carrier: self.carrier.map(str::to_owned),
        }
    }
}

/// How to report clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Clusters with fewer devices than this are left out of [`clusters`]' report (they are
    /// still counted in every share).
    pub min_devices: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self { min_devices: 1 }
    }
}

/// One shared-fate cluster of a fleet.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cluster {
    pub key: ClusterKey,
    pub devices: usize,
    /// `devices` over the fleet size.
    pub share: f64,
}

/// How much of one cluster an affected set holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterHit {
    pub key: ClusterKey,
    /// Devices in the cluster.
    pub devices: usize,
    /// Affected devices in the cluster.
    pub affected: usize,
    /// `affected / devices`: 1.0 means the whole cluster is hit.
    pub affected_ratio: f64,
    /// `affected` over all affected devices: where the affected set concentrates.
    pub share_of_affected: f64,
}

type FixedState = BuildHasherDefault<crate::fasthash::FastHasher>;

/// Counts cluster sizes and affected members in one pass over a fleet.
#[derive(Default)]
pub struct ClusterTally<'a> {
    /// Each cluster's key, devices and affected devices.
    slots: Vec<(KeyRef<'a>, usize, usize)>,
    /// The slot of each cluster key.
    index: HashMap<KeyRef<'a>, usize, FixedState>,
    /// The slot of each combination of shared values seen (model, revision, component
    /// map and tag map by address, and connectivity): most devices share all four with many
    /// others, so their key is found by hashing five words instead of four strings and a
    /// version. Equal values at two addresses make two entries with one key; the fleet is
    /// borrowed for the tally's life, so no address is reused meanwhile.
    by_addr: HashMap<[usize; 5], usize, FixedState>,
    devices: usize,
    affected: usize,
}

impl fmt::Debug for ClusterTally<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTally")
            .field("clusters", &self.slots.len())
            .field("devices", &self.devices)
            .field("affected", &self.affected)
            .finish()
    }
}

impl<'a> ClusterTally<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `device`, and whether it is in the affected set.
    pub fn add(&mut self, device: &'a Device, affected: bool) {
        let addr = [
            device.model.addr(),
            device.hw_rev.addr(),
            device.components.addr(),
            device.tags.addr(),
            device.connectivity as usize,
        ];
        let slot = *self.by_addr.entry(addr).or_insert_with(|| {
            let key = KeyRef::of(device);
            *self.index.entry(key).or_insert_with(|| {
                self.slots.push((key, 0, 0));
                self.slots.len() - 1
            })
        });
        let entry = &mut self.slots[slot];
        entry.1 += 1;
        self.devices += 1;
        if affected {
            entry.2 += 1;
            self.affected += 1;
        }
    }

    /// Every cluster with at least `options.min_devices` devices, largest first, ties by key.
    pub fn clusters(&self, options: &ClusterOptions) -> Vec<Cluster> {
        let total = self.devices.max(1) as f64;
        let mut out: Vec<Cluster> = self
            .slots
            .iter()
            .filter(|(_, n, _)| *n >= options.min_devices)
            .map(|(k, n, _)| Cluster {
                key: k.to_owned_key(),
                devices: *n,
                share: *n as f64 / total,
            })
            .collect();
        out.sort_by(|a, b| b.devices.cmp(&a.devices).then_with(|| a.key.cmp(&b.key)));
        out
    }

    /// The clusters holding at least one affected device, most affected devices first, then by
    /// the larger affected ratio, then by key.
    pub fn hits(&self) -> Vec<ClusterHit> {
        let affected_total = self.affected.max(1) as f64;
        let mut out: Vec<ClusterHit> = self
            .slots
            .iter()
            .filter(|(_, _, a)| *a > 0)
            .map(|(k, n, a)| ClusterHit {
                key: k.to_owned_key(),
                devices: *n,
                affected: *a,
                affected_ratio: *a as f64 / *n as f64,
                share_of_affected: *a as f64 / affected_total,
            })
            .collect();
        out.sort_by(|a, b| {
            b.affected
                .cmp(&a.affected)
                .then_with(|| b.affected_ratio.total_cmp(&a.affected_ratio))
                .then_with(|| a.key.cmp(&b.key))
        });
        out
    }

    /// Devices in clusters where at least `min_affected_ratio` of the members are affected:
    /// the devices that go down together when the defect strikes. Never decreases when more
    /// devices are marked affected.
    pub fn shared_fate_devices(&self, min_affected_ratio: f64) -> (usize, usize) {
        let mut devices = 0;
        let mut clusters = 0;
        for (_, n, a) in &self.slots {
            if *a > 0 && *a as f64 >= min_affected_ratio * *n as f64 {
                devices += n;
                clusters += 1;
            }
        }
        (devices, clusters)
    }

    /// Number of distinct clusters counted.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Every shared-fate cluster of `fleet` with at least `options.min_devices` devices, largest
/// first, ties broken by key.
pub fn clusters(fleet: &Fleet, options: &ClusterOptions) -> Vec<Cluster> {
    let mut tally = ClusterTally::new();
    for d in &fleet.devices {
        tally.add(d, false);
    }
    tally.clusters(options)
}

/// Which clusters the devices selected by `is_affected` concentrate in (see
/// [`ClusterTally::hits`] for the order).
pub fn concentration(
    fleet: &Fleet,
    mut is_affected: impl FnMut(&Device) -> bool,
) -> Vec<ClusterHit> {
    let mut tally = ClusterTally::new();
    for d in &fleet.devices {
        tally.add(d, is_affected(d));
    }
    tally.hits()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthOptions, generate};
    use crate::time::Timestamp;

    fn fleet(n: usize) -> Fleet {
        generate(&SynthOptions {
            devices: n,
            seed: 5,
            now: Timestamp::from_secs(1_795_392_000),
        })
    }

    #[test]
    fn clusters_partition_the_fleet_in_a_defined_order() {
        let f = fleet(5_000);
        let all = clusters(&f, &ClusterOptions::default());
        assert_eq!(all.iter().map(|c| c.devices).sum::<usize>(), 5_000);
        let share: f64 = all.iter().map(|c| c.share).sum();
        assert!((share - 1.0).abs() < 1e-9, "{share}");
        for pair in all.windows(2) {
            assert!(
                pair[0].devices > pair[1].devices
                    || (pair[0].devices == pair[1].devices && pair[0].key < pair[1].key),
                "{:?} before {:?}",
                pair[0],
                pair[1]
            );
        }
        // Recount one cluster by brute force.
        let top = &all[0];
        let n = f
            .devices
            .iter()
            .filter(|d| KeyRef::of(d).to_owned_key() == top.key)
            .count();
        assert_eq!(n, top.devices);
        assert_eq!(all, clusters(&f, &ClusterOptions::default()));
    }

    #[test]
    fn min_devices_leaves_small_clusters_out_of_the_report_only() {
        let f = fleet(3_000);
        let all = clusters(&f, &ClusterOptions::default());
        let big = clusters(&f, &ClusterOptions { min_devices: 20 });
        assert!(big.len() < all.len());
        assert!(big.iter().all(|c| c.devices >= 20));
        let expected: Vec<&Cluster> = all.iter().filter(|c| c.devices >= 20).collect();
        assert_eq!(big.iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn key_separates_each_shared_fate_dimension() {
        let f = fleet(200);
        let base = f.devices[0].clone();
        let mut variants = vec![base.clone()];
        let mut d = base.clone();
        d.hw_rev = "Z".into();
        variants.push(d);
        let mut d = base.clone();
        d.components.insert("firmware", Version::new(9, 9, 9));
        variants.push(d);
        let mut d = base.clone();
        d.tags.insert(BATTERY_CHEM_TAG, "unobtainium".into());
        variants.push(d);
        let mut d = base.clone();
        d.tags.insert(CARRIER_TAG, "nowhere-mobile".into());
        variants.push(d);
        let mut d = base.clone();
        d.connectivity = if base.connectivity == Connectivity::Roaming {
            Connectivity::Ethernet
        } else {
            Connectivity::Roaming
        };
        variants.push(d);
        // Same fate despite a different region, depot and customer: geography is not a fate.
        let mut d = base.clone();
        d.region = "elsewhere".into();
        d.depot = "elsewhere-x".into();
        variants.push(d);
        for (i, d) in variants.iter_mut().enumerate() {
            d.id = format!("X{i}");
        }
        let f = Fleet::new(Vec::new(), variants);
        let all = clusters(&f, &ClusterOptions::default());
        assert_eq!(all.len(), 6, "{all:#?}");
        assert_eq!(all[0].devices, 2);
    }

    #[test]
    fn concentration_finds_where_an_affected_set_sits() {
        let f = fleet(5_000);
        let all = clusters(&f, &ClusterOptions::default());
        let target = all[3].key.clone();
        let hits = concentration(&f, |d| {
            KeyRef::of(d).to_owned_key() == target || d.id == "CV0000000"
        });
        assert_eq!(hits[0].key, target);
        assert_eq!(hits[0].affected, hits[0].devices);
        assert_eq!(hits[0].affected_ratio, 1.0);
        let affected: usize = hits.iter().map(|h| h.affected).sum();
        assert!(
            (hits[0].share_of_affected - hits[0].affected as f64 / affected as f64).abs() < 1e-12
        );
        assert!(hits.len() <= 2);
        assert!(concentration(&f, |_| false).is_empty());
    }

    #[test]
    fn shared_fate_devices_grow_with_the_affected_set() {
        let f = fleet(2_000);
        let mut previous = 0;
        // Multiples of 64 are multiples of 32, ...: each set holds the one before.
        for stride in [64usize, 32, 16, 8, 4, 2, 1] {
            let mut tally = ClusterTally::new();
            for (i, d) in f.devices.iter().enumerate() {
                tally.add(d, i % stride == 0);
            }
            let (devices, _) = tally.shared_fate_devices(0.5);
            assert!(
                devices >= previous,
                "stride {stride}: {devices} < {previous}"
            );
            previous = devices;
        }
        assert_eq!(
            previous, 2_000,
            "everything affected: every cluster shares the fate"
        );
    }
}
