//! Rollout planning on synthetic fleets with the fixture release catalog, through the library
//! and through `convoy plan`.

use convoy_core::fleet::{Device, Fleet};
use convoy_core::plan::policy::{
    Blackout, CalendarException, Cohort, LocalTime, MaintenanceWindow, RateLimit, WaveSpec,
};
use convoy_core::plan::{self, Coverage, Plan, PlanInput, PlanningPolicy, Status};
use convoy_core::release::ReleaseSpec;
use convoy_core::requirement::RequirementKind;
use convoy_core::synth::{self, SynthOptions};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use convoy_e2e::{convoy, convoy_ok};
use std::path::PathBuf;

const NOW: &str = "2026-11-23T00:00:00Z";

fn now() -> Timestamp {
    Timestamp::parse_rfc3339(NOW).expect("NOW parses")
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/releases")
}

fn target() -> ReleaseSpec {
    let text = std::fs::read_to_string(fixtures().join("t300-fw-2.5.0.json")).expect("read target");
    serde_json::from_str(&text).expect("target release parses")
}

fn catalog() -> Vec<ReleaseSpec> {
    let text = std::fs::read_to_string(fixtures().join("catalog.json")).expect("read catalog");
    serde_json::from_str(&text).expect("catalog parses")
}

fn fleet(devices: usize, seed: u64) -> Fleet {
    synth::generate(&SynthOptions {
        devices,
        seed,
        now: now(),
    })
}

fn make_plan(
    fleet: &Fleet,
    release: &ReleaseSpec,
    catalog: &[ReleaseSpec],
    policy: &PlanningPolicy,
    seed: u64,
) -> Plan {
    plan::plan(&PlanInput {
        fleet,
        release,
        catalog,
        now: now(),
        seed,
        policy,
    })
    .expect("plan")
}

/// Installs `chain` then the target on a copy of `device` the slow, obvious way, checking every
/// hardware and component requirement on the way. Returns whether the target's component and
/// hardware requirements hold at the end.
fn chain_is_valid(device: &Device, chain: &[&ReleaseSpec], target: &ReleaseSpec) -> bool {
    let mut d = device.clone();
    for r in chain {
        let ok = r.hardware.iter().any(|h| *h == d.model)
            && r.requires
                .iter()
                .filter(|q| q.kind() != RequirementKind::Condition)
                .all(|q| q.is_met(&d, 0));
        if !ok {
            return false;
        }
        for (c, v) in r.provides.iter() {
            if d.component(c).is_some_and(|have| have > *v) {
                return false;
            }
            d.components.insert(c, *v);
        }
    }
    target
        .requires
        .iter()
        .filter(|q| q.kind() != RequirementKind::Condition)
        .all(|q| q.is_met(&d, 0))
}

/// Reference: the first valid chain in (length, then counter order) enumeration, by brute
/// force over every sequence of catalog releases up to four long.
fn brute_force_chain(
    device: &Device,
    catalog: &[ReleaseSpec],
    target: &ReleaseSpec,
) -> Option<Vec<String>> {
    let mut sorted: Vec<&ReleaseSpec> = catalog.iter().collect();
    sorted.sort_by(|a, b| (a.counter, &a.id).cmp(&(b.counter, &b.id)));
    let n = sorted.len();
    for len in 1..=4u32 {
        for code in 0..n.pow(len) {
            let mut seq = Vec::new();
            let mut c = code;
            for _ in 0..len {
                seq.push(sorted[c % n]);
                c /= n;
            }
            seq.reverse(); // most significant first, so enumeration is lexicographic
            // A step that changes nothing is never part of a shortest chain.
            if chain_is_valid(device, &seq, target)
                && seq.iter().enumerate().all(|(i, r)| {
                    let mut d = device.clone();
                    for p in &seq[..i] {
                        for (c, v) in p.provides.iter() {
                            d.components.insert(c, *v);
                        }
                    }
                    r.provides.iter().any(|(c, v)| d.component(c) != Some(*v))
                })
            {
                return Some(seq.iter().map(|r| r.id.clone()).collect());
            }
        }
    }
    None
}

#[test]
fn device_offline_for_weeks_gets_its_prerequisite_chain() {
    let _turn = convoy_e2e::shared();
    let fleet = fleet(20_000, 7);
    let (target, catalog) = (target(), catalog());
    let plan = make_plan(&fleet, &target, &catalog, &PlanningPolicy::default(), 1);
    let v = |s: &str| s.parse::<Version>().expect("version");
    // The stalest kind of T300: offline for weeks on the oldest firmware, bootloader and modem.
    let stale: Vec<usize> = fleet
        .devices
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            d.model == "T300"
                && d.offline_secs(now()) > 14 * 86_400
                && d.firmware() == Some(v("2.1.5"))
                && d.component("bootloader") == Some(v("1.6.2"))
                && d.component("modem") == Some(v("1.1.0"))
        })
        .map(|(i, _)| i)
        .collect();
    assert!(!stale.is_empty(), "the synthetic fleet has stale T300s");
    for &i in &stale {
        assert_eq!(
            plan.chain_of(i).expect("needs prerequisites"),
            [
                "t300-fw-2.2.0",
                "t300-bl-2.0.1",
                "t300-fw-2.3.2",
                "t300-modem-1.3.0"
            ],
            "{}",
            fleet.devices[i].id
        );
    }
    // Every chain the planner gives is valid and as short as the brute-force reference (and
    // the same one, by counter order); every device without one really has none.
    let mut checked = 0;
    for (i, d) in fleet
        .devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.model == "T300")
    {
        match plan.devices[i].status {
            Status::AfterPrerequisites => {
                let chain = plan.chain_of(i).expect("chain");
                let expected = brute_force_chain(d, &catalog, &target);
                assert_eq!(Some(chain.to_vec()), expected, "{}", d.id);
                checked += 1;
            }
            Status::EligibleNow | Status::AfterConditions => {
                assert!(chain_is_valid(d, &[], &target), "{}", d.id);
            }
            _ => {}
        }
        if checked > 400 {
            break;
        }
    }
    assert!(checked > 100, "{checked}");
    // The chains' device counts add up to the devices after prerequisites.
    let after: usize = plan.chains.iter().map(|c| c.devices).sum();
    let by_status = plan
        .eligibility
        .by_status
        .iter()
        .find(|c| c.status == Status::AfterPrerequisites)
        .expect("row")
        .devices;
    assert_eq!(after, by_status);
}

#[test]
fn never_eligible_devices_say_why() {
    let _turn = convoy_e2e::shared();
    let fleet = fleet(5_000, 3);
    let mut release = target();
    // Only revisions A and B, and no bootloader release in the catalog.
    release.requires.push("hw_rev in A,B".parse().expect("req"));
    let catalog: Vec<ReleaseSpec> = catalog()
        .into_iter()
        .filter(|r| !r.id.contains("-bl-"))
        .collect();
    let plan = make_plan(&fleet, &release, &catalog, &PlanningPolicy::default(), 1);
    let boot_2 = Version::new(2, 0, 0);
    let mut seen = [false; 3];
    for (i, d) in fleet.devices.iter().enumerate() {
        let why = plan.never_reason(i);
        if d.model != "T300" {
            let why = why.expect("other models are never eligible");
            assert!(why.contains(&format!("model {}", d.model)), "{why}");
            seen[0] = true;
        } else if d.hw_rev == "C" {
            let why = why.expect("revision C is never eligible");
            assert!(why.contains("hw_rev in A,B"), "{why}");
            seen[1] = true;
        } else if d.component("bootloader") < Some(boot_2) {
            let why = why.expect("no bootloader release: never");
            assert!(
                why.contains("no release in the catalog provides bootloader>=2.0 for T300"),
                "{why}"
            );
            seen[2] = true;
        } else {
            assert_eq!(why, None, "{}", d.id);
        }
    }
    assert_eq!(seen, [true; 3]);
    // A release older than what devices run: never, because no downgrade.
    let mut old = target();
    old.provides.insert("firmware", Version::new(2, 3, 0));
    old.requires.clear();
    let plan = make_plan(&fleet, &old, &[], &PlanningPolicy::default(), 1);
    let newer = fleet
        .devices
        .iter()
        .position(|d| d.model == "T300" && d.firmware() == Some(Version::new(2, 4, 0)))
        .expect("a T300 on 2.4.0");
    let why = plan.never_reason(newer).expect("never");
    assert!(why.contains("no downgrade"), "{why}");
    // Reasons are counted in the summary.
    assert!(
        plan.eligibility
            .by_reason
            .iter()
            .any(|r| r.status == Status::Never
                && r.reason.contains("no downgrade")
                && r.devices > 0)
    );
}

#[test]
fn canary_covers_rare_strata_or_flags_them() {
    let _turn = convoy_e2e::shared();
    let fleet = fleet(20_000, 7);
    let (target, catalog) = (target(), catalog());
    let plan = make_plan(&fleet, &target, &catalog, &PlanningPolicy::default(), 1);
    let canary = &plan.canary;
    assert_eq!(canary.devices.len(), 50);
    let rev_c_canary = canary
        .devices
        .iter()
        .filter(|&&i| {
            let d = &fleet.devices[i as usize];
            d.model == "T300" && d.hw_rev == "C"
        })
        .count();
    let row = canary
        .strata
        .iter()
        .find(|s| s.attribute == "model+hw_rev" && s.value == "T300/C")
        .expect("T300/C stratum");
    // T300/C is about 1% of the fleet (3% of T300s): meaningful, and in the canary.
    let share = row.devices as f64 / fleet.len() as f64;
    assert!((0.005..0.02).contains(&share), "{share}");
    assert_eq!(row.coverage, Coverage::Represented);
    assert!(rev_c_canary >= 1);
    assert_eq!(row.canary, rev_c_canary);
    // Every canary device is eligible now; every meaningful stratum with candidates has its
    // floor, and the ones without are flagged with the reason.
    for &i in &canary.devices {
        assert_eq!(plan.devices[i as usize].status, Status::EligibleNow);
    }
    for s in &canary.strata {
        match &s.coverage {
            Coverage::Represented => assert!(s.canary >= 1),
            Coverage::Missing(why) => {
                assert_eq!(s.canary, 0);
                assert!(
                    canary
                        .flags
                        .iter()
                        .any(|f| f.contains(&s.value) && f.contains(why)),
                    "{why}"
                );
            }
            Coverage::BelowFloor(_) => panic!("floor 1 is either met or missing: {s:?}"),
            Coverage::NotRequired => assert!(s.share_pct < 0.5),
        }
    }
    // The easy-devices bias is flagged: old bootloaders are a fifth of T300s and none is
    // eligible now, so the canary cannot test them and says so.
    let old_boot = canary
        .strata
        .iter()
        .find(|s| s.attribute == "model+bootloader" && s.value == "T300/1.8.0")
        .expect("old bootloader stratum");
    match &old_boot.coverage {
        Coverage::Missing(why) => assert!(why.contains("no device is eligible now"), "{why}"),
        other => panic!("expected missing, got {other:?}"),
    }
    // Confined to one depot that has no revision C (we move its C devices to another depot),
    // T300/C is missing, with the reason.
    let (only, other) = (fleet.depots[0].id.clone(), fleet.depots[1].id.clone());
    let mut moved = fleet.clone();
    for d in &mut moved.devices {
        if d.depot == only && d.model == "T300" && d.hw_rev == "C" {
            d.depot = other.as_str().into();
        }
    }
    let mut policy = PlanningPolicy::default();
    policy.canary.depot = Some(only.clone());
    policy.canary.size = 30;
    let plan = make_plan(&moved, &target, &catalog, &policy, 1);
    assert_eq!(plan.canary.devices.len(), 30);
    assert!(
        plan.canary
            .devices
            .iter()
            .all(|&i| moved.devices[i as usize].depot == only)
    );
    let row = plan
        .canary
        .strata
        .iter()
        .find(|s| s.value == "T300/C")
        .expect("row");
    assert_eq!(row.canary, 0);
    match &row.coverage {
        Coverage::Missing(why) => assert!(why.contains("outside the canary depot"), "{why}"),
        other => panic!("expected missing, got {other:?}"),
    }
    assert!(
        plan.canary
            .flags
            .iter()
            .any(|f| f.contains("model+hw_rev=T300/C"))
    );
}

#[test]
fn same_inputs_same_plan() {
    let _turn = convoy_e2e::shared();
    let fleet = fleet(10_000, 11);
    let (target, catalog) = (target(), catalog());
    let policy = PlanningPolicy::default();
    let a = make_plan(&fleet, &target, &catalog, &policy, 5);
    let b = make_plan(&fleet, &target, &catalog, &policy, 5);
    assert_eq!(a, b);
    assert_eq!(
        serde_json::to_string(&a).expect("json"),
        serde_json::to_string(&b).expect("json")
    );
    // A catalog in another order gives the same chains.
    let mut reversed = catalog.clone();
    reversed.reverse();
    let c = make_plan(&fleet, &target, &reversed, &policy, 5);
    assert_eq!(a.chains, c.chains);
    // Another seed picks another canary from the same candidates.
    let d = make_plan(&fleet, &target, &catalog, &policy, 6);
    assert_ne!(a.canary.devices, d.canary.devices);
    assert_eq!(a.eligibility, d.eligibility);
}

#[test]
fn every_device_in_waves_lands_in_exactly_one() {
    let _turn = convoy_e2e::shared();
    let fleet = fleet(10_000, 2);
    let plan = make_plan(&fleet, &target(), &catalog(), &PlanningPolicy::default(), 1);
    let mut count = vec![0u8; fleet.len()];
    for w in &plan.waves {
        assert_eq!(w.size, w.devices.len());
        assert!(w.devices.windows(2).all(|p| p[0] < p[1]), "ascending ids");
        for &i in &w.devices {
            count[i as usize] += 1;
        }
    }
    for (i, v) in plan.devices.iter().enumerate() {
        let expected = u8::from(matches!(
            v.status,
            Status::EligibleNow | Status::AfterConditions | Status::AfterPrerequisites
        ));
        assert_eq!(count[i], expected, "{} {:?}", fleet.devices[i].id, v.status);
    }
    // Shape: canary, then one region of at most 500, then wider; each wave starts only after
    // the previous one's soak of at least one operating cycle (a day for vans and trucks).
    assert_eq!(plan.waves[0].name, "canary");
    assert_eq!(plan.waves[0].devices, plan.canary.devices);
    let region = &plan.waves[1];
    assert!(region.size <= 500 && region.size > 100, "{}", region.size);
    let r0 = &fleet.devices[region.devices[0] as usize].region;
    assert!(
        region
            .devices
            .iter()
            .all(|&i| &fleet.devices[i as usize].region == r0)
    );
    for pair in plan.waves.windows(2) {
        assert!(pair[0].soak_secs >= 86_400);
        let soak_end = pair[0].soak_end.expect("scheduled");
        assert!(pair[1].timing.first_offer.expect("scheduled") >= soak_end);
    }
    // Prerequisite waves come last, and their devices download the chain too.
    let first_prereq = plan
        .waves
        .iter()
        .position(|w| !w.prerequisites.is_empty())
        .expect("prerequisite waves");
    assert!(
        plan.waves[first_prereq..]
            .iter()
            .all(|w| !w.prerequisites.is_empty())
    );
    let w = &plan.waves[first_prereq];
    assert!(w.bytes_per_device > plan.download_bytes);
}

#[test]
fn bandwidth_cap_is_respected_by_the_schedule() {
    let _turn = convoy_e2e::shared();
    let fleet = fleet(10_000, 4);
    let target = target();
    let mut policy = PlanningPolicy::default();
    let cap = 40 * target.download_bytes();
    policy.bandwidth_cap_bytes_per_hour = Some(cap);
    policy.rate = RateLimit::Constant { per_minute: 1000 };
    policy.data_price_per_gb = 2.0;
    let plan = make_plan(&fleet, &target, &catalog(), &policy, 1);
    assert!(!plan.schedule.hours.is_empty());
    for h in &plan.schedule.hours {
        assert!(
            h.bytes <= cap,
            "{} bytes in the hour from {}",
            h.bytes,
            h.start
        );
    }
    assert_eq!(
        plan.schedule.peak_bytes_per_hour, cap,
        "the cap is the binding limit"
    );
    // Everything in waves is scheduled, and the hours add up to the waves' bytes.
    let scheduled: u64 = plan.schedule.hours.iter().map(|h| h.bytes).sum();
    assert_eq!(scheduled, plan.schedule.total_bytes);
    assert!(plan.waves.iter().all(|w| w.timing.unscheduled == 0));
    // Cost: metered bytes at 2.0 per GB (10^9 bytes).
    let metered: u64 = plan
        .waves
        .iter()
        .flat_map(|w| w.devices.iter().map(move |&i| (i, w.bytes_per_device)))
        .filter(|(i, _)| fleet.devices[*i as usize].metered)
        .map(|(_, b)| b)
        .sum();
    assert_eq!(plan.schedule.metered_bytes, metered);
    assert!((plan.schedule.data_cost - metered as f64 / 1e9 * 2.0).abs() < 1e-9);
}

#[test]
fn seed_bandwidth_example_5mb_to_20000_devices_is_100gb() {
    let _turn = convoy_e2e::shared();
    // The seeds' figure: a 5 MB image to 20,000 devices is 100 GB.
    let fleet = fleet(60_000, 8);
    let mut release = target();
    release.requires.clear();
    let mut policy = PlanningPolicy::default();
    policy.waves = vec![plan::policy::WaveSpec {
        max_devices: Some(20_000),
        ..plan::policy::WaveSpec::new("twenty-thousand", Cohort::Rest)
    }];
    policy.prerequisite_waves = false;
    let plan = make_plan(&fleet, &release, &[], &policy, 1);
    assert_eq!(plan.download_bytes, 5_000_000);
    assert_eq!(plan.waves[0].size, 20_000);
    assert_eq!(plan.waves[0].bytes, 100_000_000_000);
}

#[test]
fn windows_and_blackouts_are_respected() {
    let _turn = convoy_e2e::shared();
    let fleet = fleet(8_000, 5);
    let target = target();
    let start = now();
    let blackout_until = start.plus_secs(3 * 86_400);
    let exception_from = start.plus_secs(86_400);
    let exception_until = start.plus_secs(86_400 + 6 * 3600);
    let policy = PlanningPolicy {
        windows: vec![
            MaintenanceWindow {
                region: "*".into(),
                start: LocalTime(60),
                end: LocalTime(4 * 60),
            },
            // us-east has its own window, across midnight.
            MaintenanceWindow {
                region: "us-east".into(),
                start: LocalTime(23 * 60),
                end: LocalTime(60),
            },
        ],
        blackouts: vec![Blackout {
            region: "eu-central".into(),
            from: start,
            until: blackout_until,
            reason: "holiday freeze".into(),
        }],
        exceptions: vec![CalendarException {
            region: "eu-central".into(),
            from: exception_from,
            until: exception_until,
            reason: "CHG-1234 approved by ops".into(),
        }],
        ..PlanningPolicy::default()
    };
    let plan = make_plan(&fleet, &target, &catalog(), &policy, 1);
    assert!(!plan.schedule.slots.is_empty());
    let mut by_exception = 0;
    let mut eu_central_before_end = 0;
    for slot in &plan.schedule.slots {
        let depot = &fleet.depots[slot.depot.expect("known depot") as usize];
        // The depot's local time with its zone's daylight-saving time (issue 20).
        let local_min = depot
            .local_clock()
            .expect("synthetic depots name known zones")
            .local_second_of_day(slot.at)
            / 60;
        let in_window = if depot.region == "us-east" {
            !(60..23 * 60).contains(&local_min)
        } else {
            (60..4 * 60).contains(&local_min)
        };
        assert!(
            in_window,
            "{} at local minute {local_min} in {}",
            slot.at, depot.id
        );
        if depot.region == "eu-central" && slot.at < blackout_until {
            eu_central_before_end += slot.devices;
            assert!(
                exception_from <= slot.at && slot.at < exception_until,
                "eu-central offered at {} in the blackout",
                slot.at
            );
            assert_eq!(slot.exception, Some(0));
            by_exception += slot.devices;
        }
    }
    // The exception was used, and logged with its device count.
    assert!(by_exception > 0);
    assert_eq!(by_exception, eu_central_before_end);
    assert_eq!(plan.schedule.exceptions[0].devices, by_exception);
    assert_eq!(
        plan.schedule.exceptions[0].reason,
        "CHG-1234 approved by ops"
    );
}

#[test]
fn critical_devices_at_peak_stay_out_of_the_canary() {
    let _turn = convoy_e2e::shared();
    // Medical gateways are critical. By default they are always at peak: none may be in the
    // canary, and the coverage says why.
    let fleet = fleet(6_000, 9);
    let mut release = target();
    release.hardware = vec!["M10".into()];
    release.requires.clear();
    release.provides = [("firmware", Version::new(4, 3, 0))].into_iter().collect();
    let plan = make_plan(&fleet, &release, &[], &PlanningPolicy::default(), 1);
    assert!(plan.canary.devices.is_empty());
    let eligible = plan
        .devices
        .iter()
        .filter(|v| v.status == Status::EligibleNow)
        .count();
    assert!(eligible > 100);
    assert_eq!(plan.canary.excluded_critical_at_peak, eligible);
    let model = plan
        .canary
        .strata
        .iter()
        .find(|s| s.attribute == "model")
        .expect("model row");
    match &model.coverage {
        Coverage::Missing(why) => assert!(why.contains("critical at peak"), "{why}"),
        other => panic!("expected missing, got {other:?}"),
    }
    // With a daytime peak (08:00-20:00 local) and the plan starting at 00:00 UTC (no windows,
    // so the first offer is now), gateways whose depot's local time is then 08:00-20:00
    // (the Americas in the evening, Asia-Pacific in the morning) are at peak; Europe's are not.
    let mut policy = PlanningPolicy::default();
    policy.criticality.peak_hours.insert(
        convoy_core::fleet::DeviceClass::MedicalGateway,
        plan::policy::LocalRange {
            start: LocalTime(8 * 60),
            end: LocalTime(20 * 60),
        },
    );
    let plan = make_plan(&fleet, &release, &[], &policy, 1);
    let at_peak = |d: &Device| {
        let clock = fleet.depot(&d.depot).expect("depot").local_clock();
        let local_min = clock.expect("a known zone").local_second_of_day(now()) / 60;
        (8 * 60..20 * 60).contains(&local_min)
    };
    let expected = fleet
        .devices
        .iter()
        .zip(&plan.devices)
        .filter(|(d, v)| v.status == Status::EligibleNow && at_peak(d))
        .count();
    assert!(expected > 0 && expected < eligible, "{expected}");
    assert_eq!(plan.canary.excluded_critical_at_peak, expected);
    assert_eq!(plan.canary.devices.len(), 50);
    assert!(
        plan.canary
            .devices
            .iter()
            .all(|&i| !at_peak(&fleet.devices[i as usize]))
    );
}

fn write_json(dir: &std::path::Path, name: &str, value: &serde_json::Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(value).expect("json")).expect("write");
    path.to_str().expect("utf-8").to_owned()
}

#[test]
fn convoy_plan_prints_text_and_json() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet_path = dir.path().join("fleet.json");
    let fleet_arg = fleet_path.to_str().expect("utf-8");
    convoy_ok(&[
        "fleet",
        "generate",
        "--devices",
        "3000",
        "--seed",
        "4",
        "--now",
        NOW,
        "--out",
        fleet_arg,
    ]);
    let release = fixtures().join("t300-fw-2.5.0.json");
    let catalog = fixtures().join("catalog.json");
    let policy = write_json(
        dir.path(),
        "policy.json",
        &serde_json::json!({
            "version": 1,
            "scoring": {"anything": "belongs to another part"},
            "gates": {"min_stratum_devices": 8},
            "planning": {"canary": {"size": 30}, "data_price_per_gb": 1.5}
        }),
    );
    let args = |json: bool| {
        let mut a = vec![
            "plan",
            "--fleet",
            fleet_arg,
            "--release",
            release.to_str().expect("utf-8"),
            "--catalog",
            catalog.to_str().expect("utf-8"),
            "--policy",
            &policy,
            "--now",
            NOW,
            "--seed",
            "3",
        ];
        if json {
            a.push("--json");
        }
        a.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()
    };
    let text_args = args(false);
    let text = convoy_ok(&text_args.iter().map(String::as_str).collect::<Vec<_>>());
    for needle in [
        "Eligibility:",
        "after_prerequisites",
        "t300-bl-2.0.1 -> t300-fw-2.5.0",
        "Canary: 30 of 30",
        "model+hw_rev",
        "Waves:",
        "Schedule:",
        "Bandwidth:",
        "not among the release's hardware",
        "Gates (each judged against the not-yet-updated baseline",
        "min_stratum_devices: 8",
        "warning: canary.floor_per_stratum is 5 but the gates judge a stratum only from 8 devices",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let json_args = args(true);
    let out = convoy_ok(&json_args.iter().map(String::as_str).collect::<Vec<_>>());
    let v: serde_json::Value = serde_json::from_str(&out).expect("plan JSON");
    assert_eq!(v["release"], "t300-fw-2.5.0");
    assert_eq!(v["gates"]["min_stratum_devices"], 8);
    assert_eq!(v["gate_warnings"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["canary"]["device_ids"].as_array().expect("ids").len(), 30);
    assert_eq!(v["schedule"]["data_price_per_gb"], 1.5);
    assert!(v["waves"].as_array().expect("waves").len() >= 4);
    assert!(
        v["eligibility"]["by_reason"]
            .as_array()
            .expect("reasons")
            .len()
            > 3
    );
    // Same inputs, same bytes.
    let again = convoy_ok(&json_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out, again);

    // A typo in the planning section names the field; a wrong version is refused.
    let bad = write_json(
        dir.path(),
        "bad.json",
        &serde_json::json!({"version": 1, "planning": {"canary": {"sise": 3}}}),
    );
    let mut bad_args = args(false);
    let at = bad_args.iter().position(|a| a == "--policy").expect("flag") + 1;
    bad_args[at] = bad;
    let run = convoy(&bad_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("sise") && err.contains("planning"), "{err}");
    let v2 = write_json(dir.path(), "v2.json", &serde_json::json!({"version": 2}));
    bad_args[at] = v2;
    let run = convoy(&bad_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("unsupported policy version 2"));
}

#[test]
fn policy_example_in_docs_parses_and_plans() {
    let _turn = convoy_e2e::shared();
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/PLANNING.md"),
    )
    .expect("read docs/PLANNING.md");
    let start = doc.find("```json\n").expect("a JSON example") + "```json\n".len();
    let end = start + doc[start..].find("```").expect("closing fence");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.json");
    std::fs::write(&path, &doc[start..end]).expect("write");
    let policy = convoy::ops::plans::read_policy(&path).expect("the documented example parses");
    assert_eq!(policy.canary.size, 40);
    assert_eq!(policy.waves.len(), 4);
    let fleet = fleet(3_000, 1);
    let plan = make_plan(&fleet, &target(), &catalog(), &policy, 1);
    assert_eq!(plan.waves[1].cohort, "depot eu-central-ber");
    assert!(plan.waves[3].soak_secs >= 172_800);
}

/// Issue 19: a saved cohort as a planner wave. `convoy cohort save` keeps the query in a
/// cache; a policy wave `{"kind": "query", "query": "cohort:NAME"}` planned with `--db` takes
/// exactly the eligible devices matching the saved query (the rest wave the others), the plan
/// names the query used, an unknown cohort is refused naming it and a query that does not read
/// is refused naming the wave.
#[test]
fn convoy_plan_takes_a_saved_cohort_as_a_wave() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet_path = dir.path().join("fleet.json");
    let fleet_arg = fleet_path.to_str().expect("utf-8");
    convoy_ok(&[
        "fleet",
        "generate",
        "--devices",
        "3000",
        "--seed",
        "4",
        "--now",
        NOW,
        "--out",
        fleet_arg,
    ]);
    let db = dir.path().join("cache.db");
    let db_arg = db.to_str().expect("utf-8");
    convoy_ok(&[
        "cohort",
        "save",
        "rev C",
        "model:T300 hw_rev:C",
        "--db",
        db_arg,
    ]);
    let release = fixtures().join("t300-fw-2.5.0.json");
    let policy_with = |name: &str, query: &str| {
        write_json(
            dir.path(),
            &format!("{name}.json"),
            &serde_json::json!({
                "version": 1,
                "planning": {
                    "canary": {"size": 30},
                    "waves": [
                        {"name": "canary", "cohort": {"kind": "canary"}},
                        {"name": "rev-c", "cohort": {"kind": "query", "query": query}},
                        {"name": "fleet", "cohort": {"kind": "rest"}}
                    ]
                }
            }),
        )
    };
    let run_plan = |policy: &str| {
        convoy(&[
            "plan",
            "--fleet",
            fleet_arg,
            "--release",
            release.to_str().expect("utf-8"),
            "--policy",
            policy,
            "--db",
            db_arg,
            "--now",
            NOW,
            "--seed",
            "3",
            "--json",
        ])
    };
    let good = policy_with("good", "cohort:\"rev C\"");
    let out = run_plan(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    assert_eq!(v["waves"][1]["name"], "rev-c");
    let cohort = v["waves"][1]["cohort"].as_str().expect("cohort text");
    assert!(
        cohort.contains("cohort:\"rev C\"") && cohort.contains("model:T300 hw_rev:C"),
        "the plan names the query it used: {cohort}"
    );
    let fleet = convoy::fleet_io::load_fleet(&fleet_path).expect("fleet");
    let rev_c = |id: &str| {
        fleet
            .devices
            .iter()
            .find(|d| d.id == id)
            .is_some_and(|d| d.model == "T300" && d.hw_rev == "C")
    };
    let waves = v["rollout_waves"].as_array().expect("rollout waves");
    let ids = |w: &serde_json::Value| -> Vec<String> {
        w["device_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|i| i.as_str().expect("id").to_owned())
            .collect()
    };
    let wave = ids(&waves[1]);
    assert!(
        !wave.is_empty(),
        "the fleet has eligible T300 rev C devices"
    );
    assert!(wave.iter().all(|id| rev_c(id)), "only rev C in the wave");
    for w in &waves[2..] {
        assert!(
            ids(w).iter().all(|id| !rev_c(id)),
            "no rev C device is left for wave {}",
            w["name"]
        );
    }
    // The same plan in-process, from the query the cache holds: the same devices.
    let mut policy = PlanningPolicy {
        canary: convoy_core::plan::policy::CanaryPolicy {
            size: 30,
            ..Default::default()
        },
        waves: vec![
            WaveSpec::new("canary", Cohort::Canary),
            WaveSpec::new("rev-c", Cohort::query("cohort:\"rev C\"")),
            WaveSpec::new("fleet", Cohort::Rest),
        ],
        ..PlanningPolicy::default()
    };
    let table = [("rev C".to_owned(), "model:T300 hw_rev:C".to_owned())].into();
    convoy::ops::cohorts::fill_policy_from(&table, &mut policy).expect("filled");
    let expected = make_plan(&fleet, &target(), &[], &policy, 3);
    let expected: Vec<String> = expected.waves[1]
        .devices
        .iter()
        .map(|&i| fleet.devices[i as usize].id.clone())
        .collect();
    assert_eq!(wave, expected);

    // An unknown cohort is refused naming it; a query that does not read names the wave.
    let out = run_plan(&policy_with("unknown", "cohort:pilots region:eu-*"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no saved cohort named \"pilots\"") && err.contains("waves[1]"),
        "{err}"
    );
    let out = run_plan(&policy_with("bad", "firmware:<"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("waves[1].cohort.query") && err.contains("\"rev-c\""),
        "{err}"
    );
}
