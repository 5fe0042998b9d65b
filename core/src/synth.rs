//! Synthetic fleets: deterministic, realistic fleets generated from a seed.
//!
//! Used by tests, benchmarks and the demo. The same [`SynthOptions`] always give the same
//! fleet, byte for byte. The shape follows what real fleets look like: several models with
//! uneven shares, hardware revisions that are rare (a few percent), older bootloaders on part of
//! the fleet, depots at real cities across regions and time zones, a mix of connectivity and
//! power states, and a share of devices that have been offline for days or weeks (and have
//! therefore skipped releases).
//!
//! Every device is drawn from its own sub-stream of the seed, so device `i` is the same whatever
//! the fleet size: a 1,000-device fleet is a prefix of the 1,000,000-device fleet of the same
//! seed.

use crate::fleet::{
    Connectivity, CustomerTier, Depot, Device, DeviceClass, Fleet, GeoPoint, PowerState,
    Redundancy, Slot, SmallMap, Sym, component,
};
use crate::rng::SeededRng;
use crate::time::Timestamp;
use crate::version::Version;

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct SynthOptions {
    pub devices: usize,
    pub seed: u64,
    /// The moment the fleet is observed at: `last_seen` values lie before it.
    pub now: Timestamp,
}

struct CitySpec {
    id: &'static str,
    name: &'static str,
    region: &'static str,
    lat: f64,
    lon: f64,
    utc_offset_minutes: i32,
    time_zone: &'static str,
    weight: f64,
}

#[allow(clippy::too_many_arguments)] // One row of the table below.
const fn city(
    id: &'static str,
    name: &'static str,
    region: &'static str,
    lat: f64,
    lon: f64,
    utc_offset_minutes: i32,
    time_zone: &'static str,
    weight: f64,
) -> CitySpec {
    CitySpec {
        id,
        name,
        region,
        lat,
        lon,
        utc_offset_minutes,
        time_zone,
        weight,
    }
}

/// Depots at real cities' coordinates, with uneven sizes.
#[rustfmt::skip] // One city per row.
const CITIES: &[CitySpec] = &[
    city("ber", "Berlin", "eu-central", 52.520, 13.405, 60, "Europe/Berlin", 9.0),
    city("muc", "Munich", "eu-central", 48.137, 11.575, 60, "Europe/Berlin", 6.0),
    city("ham", "Hamburg", "eu-central", 53.551, 9.994, 60, "Europe/Berlin", 5.0),
    city("vie", "Vienna", "eu-central", 48.208, 16.373, 60, "Europe/Vienna", 4.0),
    city("prg", "Prague", "eu-central", 50.076, 14.438, 60, "Europe/Prague", 2.5),
    city("par", "Paris", "eu-west", 48.857, 2.352, 60, "Europe/Paris", 8.0),
    city("lyo", "Lyon", "eu-west", 45.764, 4.836, 60, "Europe/Paris", 3.0),
    city("mad", "Madrid", "eu-west", 40.417, -3.704, 60, "Europe/Madrid", 5.0),
    city("ams", "Amsterdam", "eu-west", 52.368, 4.904, 60, "Europe/Amsterdam", 4.0),
    city("lon", "London", "uk-ie", 51.507, -0.128, 0, "Europe/London", 8.0),
    city("man", "Manchester", "uk-ie", 53.481, -2.243, 0, "Europe/London", 3.0),
    city("dub", "Dublin", "uk-ie", 53.350, -6.260, 0, "Europe/Dublin", 2.0),
    city("nyc", "New York", "us-east", 40.713, -74.006, -300, "America/New_York", 7.0),
    city("bos", "Boston", "us-east", 42.360, -71.059, -300, "America/New_York", 2.5),
    city("atl", "Atlanta", "us-east", 33.749, -84.388, -300, "America/New_York", 3.0),
    city("chi", "Chicago", "us-central", 41.878, -87.630, -360, "America/Chicago", 4.5),
    city("dal", "Dallas", "us-central", 32.777, -96.797, -360, "America/Chicago", 3.5),
    city("lax", "Los Angeles", "us-west", 34.052, -118.244, -480, "America/Los_Angeles", 5.0),
    city("sea", "Seattle", "us-west", 47.606, -122.332, -480, "America/Los_Angeles", 2.0),
    city("tyo", "Tokyo", "apac", 35.676, 139.650, 540, "Asia/Tokyo", 3.0),
    city("sin", "Singapore", "apac", 1.352, 103.820, 480, "Asia/Singapore", 1.5),
    city("syd", "Sydney", "apac", -33.869, 151.209, 600, "Australia/Sydney", 1.5),
];

struct ModelSpec {
    model: &'static str,
    share: f64,
    /// (revision, share)
    revs: &'static [(&'static str, f64)],
    classes: &'static [(DeviceClass, f64)],
    /// Firmware versions, oldest first, with shares among recently seen devices.
    firmware: &'static [(&'static str, f64)],
    /// Bootloader versions, oldest first.
    bootloader: &'static [(&'static str, f64)],
    /// Modem firmware versions, oldest first; empty for models without a modem.
    modem: &'static [(&'static str, f64)],
    storage_mb: f64,
}

const MODELS: &[ModelSpec] = &[
    ModelSpec {
        model: "T300",
        share: 0.38,
        revs: &[("A", 0.58), ("B", 0.39), ("C", 0.03)],
        classes: &[(DeviceClass::DeliveryVan, 0.8), (DeviceClass::Truck, 0.2)],
        firmware: &[
            ("2.1.5", 0.04),
            ("2.2.0", 0.08),
            ("2.3.2", 0.30),
            ("2.4.0", 0.58),
        ],
        bootloader: &[("1.6.2", 0.06), ("1.8.0", 0.19), ("2.0.1", 0.75)],
        modem: &[("1.1.0", 0.10), ("1.2.0", 0.35), ("1.3.0", 0.55)],
        storage_mb: 1024.0,
    },
    ModelSpec {
        model: "T500",
        share: 0.22,
        revs: &[("A", 0.79), ("B", 0.21)],
        classes: &[(DeviceClass::Truck, 0.55), (DeviceClass::Bus, 0.45)],
        firmware: &[("3.0.4", 0.07), ("3.1.0", 0.33), ("3.2.1", 0.60)],
        bootloader: &[("2.0.1", 0.15), ("2.2.0", 0.85)],
        modem: &[("2.0.0", 0.2), ("2.1.3", 0.8)],
        storage_mb: 4096.0,
    },
    ModelSpec {
        model: "K20",
        share: 0.18,
        revs: &[("A", 0.96), ("B", 0.04)],
        classes: &[(DeviceClass::Kiosk, 0.45), (DeviceClass::Pos, 0.55)],
        firmware: &[("5.6.0", 0.12), ("5.7.1", 0.88)],
        bootloader: &[("3.0.0", 0.3), ("3.1.0", 0.7)],
        modem: &[],
        storage_mb: 8192.0,
    },
    ModelSpec {
        model: "C7",
        share: 0.10,
        revs: &[("A", 0.7), ("B", 0.3)],
        classes: &[(DeviceClass::EvCharger, 1.0)],
        firmware: &[("1.8.2", 0.25), ("1.9.0", 0.75)],
        bootloader: &[("1.0.0", 0.4), ("1.1.0", 0.6)],
        modem: &[("4.4.0", 1.0)],
        storage_mb: 512.0,
    },
    ModelSpec {
        model: "S1",
        share: 0.07,
        revs: &[("A", 0.98), ("A2", 0.02)],
        classes: &[(DeviceClass::Sensor, 1.0)],
        firmware: &[("0.9.8", 0.3), ("1.0.0", 0.7)],
        bootloader: &[("0.4.0", 1.0)],
        modem: &[("1.0.5", 1.0)],
        storage_mb: 64.0,
    },
    ModelSpec {
        model: "M10",
        share: 0.05,
        revs: &[("A", 0.97), ("D", 0.03)],
        classes: &[(DeviceClass::MedicalGateway, 1.0)],
        firmware: &[("4.1.0", 0.2), ("4.2.2", 0.8)],
        bootloader: &[("2.5.0", 1.0)],
        modem: &[("3.3.1", 1.0)],
        storage_mb: 2048.0,
    },
];

const CARRIERS: &[(&str, &[&str])] = &[
    ("eu-central", &["telekom", "vodafone", "o2"]),
    ("eu-west", &["orange", "sfr", "movistar"]),
    ("uk-ie", &["ee", "three", "vodafone"]),
    ("us-east", &["verizon", "att", "tmobile"]),
    ("us-central", &["verizon", "att", "tmobile"]),
    ("us-west", &["verizon", "att", "tmobile"]),
    ("apac", &["docomo", "singtel", "telstra"]),
];

/// The depots of every synthetic fleet, sorted by id.
pub fn depots() -> Vec<Depot> {
    let mut depots: Vec<Depot> = CITIES
        .iter()
        .map(|c| Depot {
            id: format!("{}-{}", c.region, c.id),
            name: c.name.to_owned(),
            region: c.region.to_owned(),
            position: GeoPoint {
                lat: c.lat,
                lon: c.lon,
            },
            utc_offset_minutes: c.utc_offset_minutes,
            time_zone: Some(c.time_zone.to_owned()),
        })
        .collect();
    depots.sort_by(|a, b| a.id.cmp(&b.id));
    depots
}

/// Generates a fleet. Runs in roughly a second per million devices in a release build.
pub fn generate(options: &SynthOptions) -> Fleet {
    let depots = depots();
    // Each device's values are shared as it is made, so that no million private copies are
    // alive at once (their freed memory would stay in the process).
    let mut interner = crate::fleet::Interner::new();
    let devices = (0..options.devices)
        .map(|i| {
            let mut d = device(options, i as u64);
            interner.device(&mut d);
            d
        })
        .collect();
    Fleet::new(depots, devices)
}

fn pick<'a, T>(rng: &mut SeededRng, items: &'a [(T, f64)]) -> &'a T {
    let weights: Vec<f64> = items.iter().map(|(_, w)| *w).collect();
    &items[rng.weighted(&weights)].0
}

/// Picks a version, shifted towards older ones when `staleness` (0..=1) is high: devices that
/// have been offline for weeks skipped the latest releases.
fn pick_version(rng: &mut SeededRng, items: &[(&str, f64)], staleness: f64) -> Version {
    let n = items.len();
    let weights: Vec<f64> = items
        .iter()
        .enumerate()
        .map(|(i, (_, w))| {
            let age = (n - 1 - i) as f64; // 0 for the newest
            w * (1.0 + staleness * 4.0 * age)
        })
        .collect();
    let text = items[rng.weighted(&weights)].0;
    // The tables above are constants; a typo there is a bug caught by the tests below.
    text.parse().unwrap_or_default()
}

fn device(options: &SynthOptions, index: u64) -> Device {
    let mut rng = SeededRng::derive(options.seed, index);
    let model_weights: Vec<f64> = MODELS.iter().map(|m| m.share).collect();
    let spec = &MODELS[rng.weighted(&model_weights)];
    let hw_rev = *pick(&mut rng, spec.revs);
    let class = *pick(&mut rng, spec.classes);
    let vehicle = matches!(
        class,
        DeviceClass::DeliveryVan | DeviceClass::Truck | DeviceClass::Bus
    );

    // Depot: city weights are uneven; medical gateways cluster in fewer, bigger cities.
    let city_weights: Vec<f64> = CITIES.iter().map(|c| c.weight).collect();
    let city = &CITIES[rng.weighted(&city_weights)];
    let spread_deg = if vehicle { 0.35 } else { 0.12 };
    let position = GeoPoint {
        lat: (city.lat + rng.normal(0.0, spread_deg)).clamp(-85.0, 85.0),
        lon: city.lon + rng.normal(0.0, spread_deg * 1.4),
    };

    // Time since last seen: most within minutes, a tail offline for days or weeks.
    let offline_secs = match rng.weighted(&[0.80, 0.10, 0.07, 0.03]) {
        0 => rng.range_inclusive(0, 15 * 60),
        1 => rng.range_inclusive(3600, 86_400),
        2 => rng.range_inclusive(2 * 86_400, 14 * 86_400),
        _ => rng.range_inclusive(15 * 86_400, 60 * 86_400),
    };
    let staleness = (offline_secs as f64 / (30.0 * 86_400.0)).min(1.0);

    let mut components = SmallMap::new();
    components.insert(
        component::FIRMWARE,
        pick_version(&mut rng, spec.firmware, staleness),
    );
    components.insert(
        component::BOOTLOADER,
        pick_version(&mut rng, spec.bootloader, staleness),
    );
    if !spec.modem.is_empty() {
        components.insert(
            component::MODEM,
            pick_version(&mut rng, spec.modem, staleness),
        );
    }

    let has_modem = !spec.modem.is_empty();
    let connectivity = match class {
        _ if !has_modem => *pick(
            &mut rng,
            &[(Connectivity::Ethernet, 0.65), (Connectivity::Wifi, 0.35)],
        ),
        DeviceClass::DeliveryVan | DeviceClass::Truck | DeviceClass::Bus => *pick(
            &mut rng,
            &[
                (Connectivity::Cellular, 0.84),
                (Connectivity::Wifi, 0.12),
                (Connectivity::Roaming, 0.04),
            ],
        ),
        DeviceClass::Sensor => *pick(
            &mut rng,
            &[
                (Connectivity::Cellular, 0.97),
                (Connectivity::Roaming, 0.03),
            ],
        ),
        _ => *pick(
            &mut rng,
            &[
                (Connectivity::Ethernet, 0.45),
                (Connectivity::Wifi, 0.2),
                (Connectivity::Cellular, 0.35),
            ],
        ),
    };
    let metered = match connectivity {
        Connectivity::Cellular | Connectivity::Roaming => true,
        Connectivity::Wifi => rng.chance(0.1),
        Connectivity::Ethernet => false,
    };

    let (power, battery_pct) = if vehicle {
        let power = *pick(
            &mut rng,
            &[(PowerState::Charging, 0.55), (PowerState::Battery, 0.45)],
        );
        let pct = if power == PowerState::Charging {
            rng.normal(85.0, 10.0)
        } else {
            rng.normal(62.0, 20.0)
        };
        (power, Some(pct.clamp(3.0, 100.0) as u8))
    } else if class == DeviceClass::Sensor {
        (PowerState::Battery, Some(rng.range_inclusive(4, 100) as u8))
    } else if class == DeviceClass::MedicalGateway {
        // Gateways carry a backup battery that is normally full.
        (
            PowerState::Mains,
            Some(rng.normal(97.0, 3.0).clamp(40.0, 100.0) as u8),
        )
    } else {
        (PowerState::Mains, None)
    };

    let free_storage_bytes = if rng.chance(0.05) {
        // A few devices are nearly full (logs, caches): updates will not fit.
        rng.range_inclusive(1 << 20, 40 << 20) as u64
    } else {
        let mb = rng
            .normal(spec.storage_mb * 0.55, spec.storage_mb * 0.15)
            .clamp(8.0, spec.storage_mb);
        (mb * 1024.0 * 1024.0) as u64
    };

    let customer_tier = *pick(
        &mut rng,
        &[
            (CustomerTier::Basic, 0.30),
            (CustomerTier::Standard, 0.45),
            (CustomerTier::Premium, 0.18),
            (CustomerTier::Enterprise, 0.07),
        ],
    );
    let redundancy = match class {
        DeviceClass::MedicalGateway => *pick(
            &mut rng,
            &[(Redundancy::Standby, 0.7), (Redundancy::None, 0.3)],
        ),
        DeviceClass::Kiosk | DeviceClass::EvCharger => *pick(
            &mut rng,
            &[(Redundancy::Pooled, 0.55), (Redundancy::None, 0.45)],
        ),
        DeviceClass::Pos => *pick(
            &mut rng,
            &[(Redundancy::Pooled, 0.35), (Redundancy::None, 0.65)],
        ),
        _ => *pick(
            &mut rng,
            &[(Redundancy::Pooled, 0.15), (Redundancy::None, 0.85)],
        ),
    };
    let failed_update_attempts = if rng.chance(0.03) {
        rng.range_inclusive(1, 4) as u32
    } else {
        0
    };
    let active_slot = if rng.chance(0.55) { Slot::A } else { Slot::B };

    let mut tags = SmallMap::new();
    if battery_pct.is_some() {
        let chem = if vehicle {
            *pick(
                &mut rng,
                &[("li-ion-nmc", 0.6), ("lfp", 0.3), ("lead-acid", 0.1)],
            )
        } else {
            *pick(&mut rng, &[("li-ion-nmc", 0.7), ("lfp", 0.3)])
        };
        tags.insert("battery_chem", Sym::new(chem));
    }
    if has_modem && let Some((_, carriers)) = CARRIERS.iter().find(|(r, _)| *r == city.region) {
        let carrier = carriers[rng.below(carriers.len() as u64) as usize];
        tags.insert("carrier", Sym::new(carrier));
    }

    Device {
        id: format!("CV{index:07}"),
        model: spec.model.into(),
        hw_rev: hw_rev.into(),
        components,
        active_slot,
        region: city.region.into(),
        depot: format!("{}-{}", city.region, city.id).into(),
        position,
        connectivity,
        metered,
        battery_pct,
        power,
        free_storage_bytes,
        customer_tier,
        device_class: class,
        redundancy,
        last_seen: options.now.plus_secs(-offline_secs),
        failed_update_attempts,
        tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

    fn fleet(n: usize, seed: u64) -> Fleet {
        generate(&SynthOptions {
            devices: n,
            seed,
            now: NOW,
        })
    }

    #[test]
    fn tables_hold_valid_versions_and_shares() {
        for m in MODELS {
            for (v, _) in m.firmware.iter().chain(m.bootloader).chain(m.modem) {
                assert!(v.parse::<Version>().is_ok(), "{} {v}", m.model);
            }
            let revs: f64 = m.revs.iter().map(|(_, w)| w).sum();
            assert!((revs - 1.0).abs() < 1e-9, "{}", m.model);
        }
        let shares: f64 = MODELS.iter().map(|m| m.share).sum();
        assert!((shares - 1.0).abs() < 1e-9);
    }

    #[test]
    fn same_seed_same_fleet_and_prefix_property() {
        let a = fleet(2_000, 7);
        assert_eq!(a, fleet(2_000, 7));
        assert_ne!(a, fleet(2_000, 8));
        let small = fleet(100, 7);
        assert_eq!(small.devices[..], a.devices[..100]);
    }

    #[test]
    fn looks_like_a_real_fleet() {
        let f = fleet(50_000, 1);
        let share = |pred: &dyn Fn(&Device) -> bool| {
            f.devices.iter().filter(|d| pred(d)).count() as f64 / f.len() as f64
        };
        // Uneven model shares.
        let t300 = share(&|d| d.model == "T300");
        assert!((0.35..0.41).contains(&t300), "{t300}");
        // A rare hardware revision: a few percent of one model.
        let rev_c = share(&|d| d.model == "T300" && d.hw_rev == "C");
        assert!((0.005..0.02).contains(&rev_c), "{rev_c}");
        // Older bootloaders on part of the fleet.
        let old_boot = share(&|d| {
            d.model == "T300" && d.component("bootloader") < Some(Version::new(2, 0, 0))
        });
        assert!((0.05..0.15).contains(&old_boot), "{old_boot}");
        // Offline for days or weeks.
        let offline_week = share(&|d| d.offline_secs(NOW) > 7 * 86_400);
        assert!((0.03..0.10).contains(&offline_week), "{offline_week}");
        // A mix of links and power states.
        for c in Connectivity::ALL {
            assert!(share(&|d| d.connectivity == *c) > 0.005, "{c}");
        }
        for p in PowerState::ALL {
            assert!(share(&|d| d.power == *p) > 0.05, "{p}");
        }
        // Several regions, each with devices.
        assert!(f.count_by("region").len() >= 6);
        // Every device's depot exists and lies in its region.
        for d in &f.devices[..1000] {
            let depot = f.depot(&d.depot).expect("depot exists");
            assert_eq!(depot.region, d.region);
            assert!(d.position.distance_km(depot.position) < 400.0, "{}", d.id);
        }
    }

    #[test]
    fn devices_offline_for_weeks_run_older_firmware() {
        let f = fleet(50_000, 3);
        let newest = Version::new(2, 4, 0);
        let current_share = |pred: &dyn Fn(&Device) -> bool| {
            let group: Vec<&Device> = f
                .devices
                .iter()
                .filter(|d| d.model == "T300" && pred(d))
                .collect();
            group
                .iter()
                .filter(|d| d.firmware() == Some(newest))
                .count() as f64
                / group.len() as f64
        };
        let online = current_share(&|d| d.offline_secs(NOW) < 3600);
        let stale = current_share(&|d| d.offline_secs(NOW) > 20 * 86_400);
        assert!(online > stale + 0.2, "online {online} stale {stale}");
    }
}
