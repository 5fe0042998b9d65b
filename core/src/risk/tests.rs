//! Unit tests of risk scoring.

use super::*;
use crate::synth::{SynthOptions, generate};

const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

fn fleet(n: usize) -> Fleet {
    generate(&SynthOptions {
        devices: n,
        seed: 1,
        now: NOW,
    })
}

fn fixture(name: &str) -> Finding {
    let text = match name {
        "t300-remote-rce" => include_str!("../../../fixtures/findings/t300-remote-rce.json"),
        "k20-pos-crash" => include_str!("../../../fixtures/findings/k20-pos-crash.json"),
        "t500-can-timeout" => include_str!("../../../fixtures/findings/t500-can-timeout.json"),
        "s1-rev-a2-auth-bypass" => {
            include_str!("../../../fixtures/findings/s1-rev-a2-auth-bypass.json")
        }
        "t500-cosmetic-units" => {
            include_str!("../../../fixtures/findings/t500-cosmetic-units.json")
        }
        "c7-modem-reconnect" => include_str!("../../../fixtures/findings/c7-modem-reconnect.json"),
        "m10-audit-log-gap" => include_str!("../../../fixtures/findings/m10-audit-log-gap.json"),
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).expect("fixture parses")
}

const FIXTURES: [&str; 7] = [
    "t300-remote-rce",
    "k20-pos-crash",
    "t500-can-timeout",
    "s1-rev-a2-auth-bypass",
    "t500-cosmetic-units",
    "c7-modem-reconnect",
    "m10-audit-log-gap",
];

fn score_default(finding: &Finding, fleet: &Fleet) -> Scorecard {
    score(finding, fleet, &ScoringPolicy::default(), NOW).expect("scores")
}

fn assert_lines_add_up(card: &Scorecard) {
    let sum: f64 = card.lines.iter().map(|l| l.points).sum();
    assert!(
        (sum - card.points).abs() < 1e-6 * card.points.abs().max(1.0),
        "{}: lines add up to {sum}, points {}",
        card.finding,
        card.points
    );
}

/// One named scenario: the fixture, the tier and the recommendation it must get, and the
/// sources of lines that must appear.
fn check(name: &str, fleet: &Fleet, tier: Tier, rec: Recommendation, sources: &[&str]) {
    let card = score_default(&fixture(name), fleet);
    assert_eq!(card.tier, tier, "{name}: {:#?}", card.lines);
    assert_eq!(card.recommendation, rec, "{name}: {}", card.reason);
    for s in sources {
        assert!(
            card.lines.iter().any(|l| l.source == *s),
            "{name}: no {s} line in {:#?}",
            card.lines
        );
    }
    assert_lines_add_up(&card);
    assert!(
        card.reason.contains(&format!("tier {tier}")),
        "{}",
        card.reason
    );
}

#[test]
fn named_scenarios() {
    use Recommendation::{Defer, FullPatch, Hotfix};
    let f = fleet(20_000);
    // Remote, actively exploited RCE on the biggest model's 2.3.x firmware: push now.
    check(
        "t300-remote-rce",
        &f,
        Tier::Emergency,
        Hotfix,
        &[
            "cvss",
            "exploitation",
            "remote",
            "blast_radius",
            "criticality",
        ],
    );
    // A crash bug on most POS terminals with a contract behind it: fast, but staged.
    check(
        "k20-pos-crash",
        &f,
        Tier::Accelerated,
        Hotfix,
        &["anomaly", "contractual"],
    );
    // A moderate bug on every truck and bus.
    check(
        "t500-can-timeout",
        &f,
        Tier::Accelerated,
        Hotfix,
        &["anomaly"],
    );
    // A critical CVE on 0.2% of the fleet, cheap sensors, not exploited: normal canary.
    check(
        "s1-rev-a2-auth-bypass",
        &f,
        Tier::Canary,
        FullPatch,
        &["cvss"],
    );
    // Cosmetic: waits for a maintenance window.
    check(
        "t500-cosmetic-units",
        &f,
        Tier::Hold,
        Defer,
        &["classification"],
    );
    // A modem fix without A/B: urgent enough for tier 1, too risky for a hotfix.
    check(
        "c7-modem-reconnect",
        &f,
        Tier::Accelerated,
        FullPatch,
        &["cvss", "anomaly"],
    );
    // A regulatory gap on the few gateways still on 4.1.x.
    check(
        "m10-audit-log-gap",
        &f,
        Tier::Canary,
        FullPatch,
        &["regulatory"],
    );
}

#[test]
fn moderate_bug_on_a_wide_critical_class_outranks_severe_bug_on_a_tiny_isolated_cohort() {
    let f = fleet(20_000);
    let moderate = score_default(&fixture("t500-can-timeout"), &f);
    let severe = score_default(&fixture("s1-rev-a2-auth-bypass"), &f);
    // The premise: the severe one is far worse on its own, and has a critical CVSS score.
    assert!(severe.severity_points > 2.0 * moderate.severity_points);
    assert_eq!(
        severe.cvss.map(|c| c.severity),
        Some(crate::cvss::Severity::Critical)
    );
    assert!(moderate.cvss.is_none());
    assert!(severe.affected_devices * 50 < moderate.affected_devices);
    // The result: exposure turns it around.
    assert!(
        moderate.points > severe.points,
        "moderate {} vs severe {}",
        moderate.points,
        severe.points
    );
    assert!(moderate.tier < severe.tier);
}

#[test]
fn affected_count_and_blast_radius_match_a_brute_force_count() {
    let f = fleet(10_000);
    for name in FIXTURES {
        let finding = fixture(name);
        let card = score_default(&finding, &f);
        let a = &finding.affected;
        let expected: Vec<&Device> = f
            .devices
            .iter()
            .filter(|d| {
                (a.models.is_empty() || a.models.iter().any(|m| *m == d.model))
                    && (a.hw_revs.is_empty() || a.hw_revs.iter().any(|r| *r == d.hw_rev))
                    && a.requires.iter().all(|r| r.is_met(d, 0))
            })
            .collect();
        assert!(
            !expected.is_empty(),
            "{name} affects nothing in the test fleet"
        );
        assert_eq!(card.affected_devices, expected.len(), "{name}");
        let br = &card.blast_radius;
        assert_eq!(br.fleet_devices, 10_000);
        assert!((br.affected_share - expected.len() as f64 / 10_000.0).abs() < 1e-12);
        let by_class: usize = br.by_class.iter().map(|c| c.devices).sum();
        assert_eq!(by_class, expected.len(), "{name}");
        let policy = ScoringPolicy::default();
        let crit: f64 = expected
            .iter()
            .map(|d| device_criticality(&policy, d).0)
            .sum();
        assert!(
            (br.criticality_weighted_share - crit / 10_000.0).abs() < 1e-9,
            "{name}"
        );
        let unreachable = expected
            .iter()
            .filter(|d| d.offline_secs(NOW) > 7 * 86_400)
            .count();
        assert_eq!(br.unreachable_devices, unreachable, "{name}");
        assert!(br.clusters.len() <= TOP_CLUSTERS);
        let in_top: usize = br.clusters.iter().map(|c| c.affected).sum();
        assert!(in_top <= expected.len());
        assert!(
            br.shared_fate_devices
                >= br
                    .clusters
                    .iter()
                    .filter(|c| c.affected_ratio >= 0.5)
                    .map(|c| c.devices)
                    .sum::<usize>()
        );
    }
}

#[test]
fn scoring_is_deterministic() {
    let f = fleet(5_000);
    let finding = fixture("t300-remote-rce");
    assert_eq!(score_default(&finding, &f), score_default(&finding, &f));
}

#[test]
fn a_finding_that_affects_no_device_is_deferred_with_zero_points() {
    let f = fleet(2_000);
    let mut finding = fixture("t300-remote-rce");
    finding.affected.models = vec!["X999".into()];
    let card = score_default(&finding, &f);
    assert_eq!(card.affected_devices, 0);
    assert_eq!(card.points, 0.0);
    assert_eq!(card.tier, Tier::Hold);
    assert_eq!(card.recommendation, Recommendation::Defer);
    assert_lines_add_up(&card);
    // Scoring an empty fleet does not divide by zero.
    let card = score_default(&fixture("k20-pos-crash"), &Fleet::default());
    assert_eq!(card.points, 0.0);
}

#[test]
fn device_ids_narrow_the_affected_set() {
    let f = fleet(2_000);
    let mut finding = fixture("t500-can-timeout");
    let t500: Vec<String> = f
        .devices
        .iter()
        .filter(|d| d.model == "T500")
        .map(|d| d.id.clone())
        .take(7)
        .collect();
    let other = f
        .devices
        .iter()
        .find(|d| d.model != "T500")
        .expect("another model");
    // Unsorted on purpose, plus an id of another model (excluded by `models`) and an unknown id.
    finding.affected.device_ids = t500.iter().rev().cloned().collect();
    finding.affected.device_ids.push(other.id.clone());
    finding.affected.device_ids.push("NOPE".into());
    let card = score_default(&finding, &f);
    assert_eq!(t500.len(), 7);
    assert_eq!(card.affected_devices, 7);
    finding.affected.models.clear();
    assert_eq!(score_default(&finding, &f).affected_devices, 8);
}

#[test]
fn hard_rollback_keeps_a_fix_out_of_tier_0_unless_actively_exploited_remotely() {
    let f = fleet(5_000);
    let mut finding = fixture("t300-remote-rce");
    finding.exploitation.active = false;
    assert_eq!(score_default(&finding, &f).tier, Tier::Emergency);
    finding.rollback = Rollback {
        ab_slot: false,
        layer: Layer::Bootloader,
    };
    let card = score_default(&finding, &f);
    assert_eq!(card.tier, Tier::Accelerated);
    assert!(
        card.lines
            .iter()
            .any(|l| l.source == "rollback" && l.detail.contains("bootloader"))
    );
    assert_eq!(card.recommendation, Recommendation::FullPatch);
    finding.exploitation.active = true;
    let card = score_default(&finding, &f);
    assert_eq!(card.tier, Tier::Emergency);
    assert_eq!(card.recommendation, Recommendation::Hotfix);
    assert!(card.reason.contains("bootloader"), "{}", card.reason);
}

#[test]
fn active_exploitation_lifts_a_small_cohort_to_tier_1() {
    let f = fleet(20_000);
    let mut finding = fixture("s1-rev-a2-auth-bypass");
    finding.exploitation.active = true;
    let card = score_default(&finding, &f);
    assert!(card.points < ScoringPolicy::default().tiers.accelerated_min_points);
    assert_eq!(card.tier, Tier::Accelerated);
    assert!(
        card.lines
            .iter()
            .any(|l| l.source == "exploitation" && l.points == 0.0)
    );
}

#[test]
fn anomaly_points_follow_doublings_and_cap() {
    let f = fleet(1_000);
    let p = ScoringPolicy::default();
    let mut finding = fixture("t500-can-timeout");
    let anomaly_points = |finding: &Finding| {
        score(finding, &f, &p, NOW)
            .expect("scores")
            .lines
            .iter()
            .find(|l| l.source == "anomaly")
            .map(|l| l.points)
    };
    for (rate, base, expected) in [
        (4.0, 1.0, 2.0 * p.anomaly_points_per_doubling),
        (1.0, 1.0, 0.0),
        (0.5, 1.0, 0.0),
        (1000.0, 1.0, p.anomaly_max_points),
        (1.0, 0.0, p.anomaly_max_points),
        (0.0, 0.0, 0.0),
    ] {
        finding.anomaly = Some(Anomaly {
            rate_per_1000_device_days: rate,
            baseline_per_1000_device_days: base,
        });
        let got = anomaly_points(&finding).expect("anomaly line");
        assert!(
            (got - expected).abs() < 1e-9,
            "{rate}/{base}: {got} != {expected}"
        );
    }
    finding.anomaly = None;
    assert_eq!(anomaly_points(&finding), None);
}

#[test]
fn invalid_findings_are_rejected_naming_the_field() {
    let f = fleet(100);
    let p = ScoringPolicy::default();
    let mut finding = fixture("t300-remote-rce");
    finding.affected = Affected::default();
    let err = score(&finding, &f, &p, NOW).expect_err("nothing named");
    assert!(err.to_string().contains("affected"), "{err}");

    let mut finding = fixture("t300-remote-rce");
    finding
        .affected
        .requires
        .push("battery>=30".parse().expect("requirement"));
    let err = score(&finding, &f, &p, NOW).expect_err("condition");
    assert!(err.to_string().contains("battery>=30"), "{err}");

    let mut finding = fixture("t300-remote-rce");
    finding.anomaly = Some(Anomaly {
        rate_per_1000_device_days: f64::NAN,
        baseline_per_1000_device_days: 1.0,
    });
    let err = score(&finding, &f, &p, NOW).expect_err("nan");
    assert!(
        err.to_string()
            .contains("anomaly.rate_per_1000_device_days"),
        "{err}"
    );

    let json =
        include_str!("../../../fixtures/findings/t300-remote-rce.json").replace("AV:N", "AV:Q");
    let err = serde_json::from_str::<Finding>(&json).expect_err("bad cvss");
    assert!(err.to_string().contains("AV"), "{err}");
    let json = include_str!("../../../fixtures/findings/t300-remote-rce.json")
        .replace("\"remote\"", "\"remot\"");
    let err = serde_json::from_str::<Finding>(&json).expect_err("typo");
    assert!(err.to_string().contains("remot"), "{err}");
}

#[test]
fn default_policy_fixture_equals_the_built_in_default() {
    let file: serde_json::Value =
        serde_json::from_str(include_str!("../../../fixtures/policy/default.json"))
            .expect("policy fixture is JSON");
    let section = file.get("scoring").expect("a scoring section").clone();
    let parsed: ScoringPolicy = serde_json::from_value(section.clone()).expect("parses");
    assert_eq!(parsed, ScoringPolicy::default());
    // Every field is written out: a new field must be added to the file too.
    assert_eq!(
        section,
        serde_json::to_value(ScoringPolicy::default()).expect("serialise")
    );
    parsed.validate().expect("the default is valid");
}

#[test]
fn policy_files_take_defaults_reject_typos_and_check_ranges() {
    let partial: ScoringPolicy = serde_json::from_str(
        r#"{"version": 1, "remote_points": 30, "tiers": {"canary_min_points": 10}}"#,
    )
    .expect("partial policy");
    assert_eq!(partial.remote_points, 30.0);
    assert_eq!(partial.tiers.canary_min_points, 10.0);
    assert_eq!(partial.tiers.emergency_min_points, 100.0);
    assert_eq!(partial.classification, ClassificationPoints::default());

    let err = serde_json::from_str::<ScoringPolicy>(r#"{"remote_pionts": 30}"#).expect_err("typo");
    assert!(err.to_string().contains("remote_pionts"), "{err}");
    let err = serde_json::from_str::<ScoringPolicy>(r#"{"redundancy": {"standy": 0.1}}"#)
        .expect_err("nested typo");
    assert!(err.to_string().contains("standy"), "{err}");

    let bad = |edit: &dyn Fn(&mut ScoringPolicy), field: &str| {
        let mut p = ScoringPolicy::default();
        edit(&mut p);
        let err = p.validate().expect_err(field);
        assert!(err.to_string().contains(field), "{err}");
    };
    bad(&|p| p.version = 2, "version 2");
    bad(&|p| p.remote_points = -1.0, "remote_points");
    bad(&|p| p.device_class.bus = f64::INFINITY, "device_class.bus");
    bad(&|p| p.redundancy.pooled = 1.5, "redundancy");
    bad(&|p| p.tiers.canary_min_points = 200.0, "tiers");
    bad(&|p| p.hard_rollback_min_tier = 4, "hard_rollback_min_tier");
    bad(
        &|p| p.shared_fate_min_affected_ratio = 0.0,
        "shared_fate_min_affected_ratio",
    );
}

#[test]
fn policy_weights_change_the_outcome() {
    let f = fleet(5_000);
    let finding = fixture("m10-audit-log-gap");
    let default = score_default(&finding, &f);
    let p = ScoringPolicy {
        regulatory_points: 100.0,
        ..ScoringPolicy::default()
    };
    let heavy = score(&finding, &f, &p, NOW).expect("scores");
    assert!(heavy.points > default.points);
    assert!(
        heavy.tier < default.tier,
        "{} vs {}",
        heavy.tier,
        default.tier
    );
}

#[test]
fn dynamic_state_raises_criticality() {
    let f = fleet(200);
    let p = ScoringPolicy::default();
    let mut d = f
        .devices
        .iter()
        .find(|d| {
            d.connectivity == Connectivity::Cellular
                && d.failed_update_attempts == 0
                && d.power != PowerState::Battery
        })
        .expect("a calm device")
        .clone();
    let (calm, fragile) = device_criticality(&p, &d);
    assert!(!fragile);
    d.failed_update_attempts = 3;
    let (failing, fragile) = device_criticality(&p, &d);
    assert!(fragile);
    assert!((failing - calm * (1.0 + p.dynamic.failed_attempts_extra)).abs() < 1e-12);
    d.connectivity = Connectivity::Roaming;
    d.power = PowerState::Battery;
    d.battery_pct = Some(5);
    let (worst, _) = device_criticality(&p, &d);
    let extras =
        p.dynamic.failed_attempts_extra + p.dynamic.roaming_extra + p.dynamic.low_battery_extra;
    assert!((worst - calm * (1.0 + extras)).abs() < 1e-12);
}

mod props {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn small_fleet() -> &'static Fleet {
        static FLEET: OnceLock<Fleet> = OnceLock::new();
        FLEET.get_or_init(|| fleet(400))
    }

    const VECTORS: [&str; 4] = [
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "CVSS:3.0/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N",
        "CVSS:4.0/AV:A/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:L/SC:N/SI:N/SA:N",
        "CVSS:3.1/AV:P/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H",
    ];

    fn arb_finding() -> impl Strategy<Value = Finding> {
        (
            0usize..5,
            proptest::option::of(0usize..VECTORS.len()),
            any::<(bool, bool, bool, bool, bool)>(),
            (any::<bool>(), 0usize..3),
            proptest::option::of((0.0f64..50.0, 0.0f64..10.0)),
            proptest::sample::subsequence(vec!["T300", "T500", "K20", "C7", "S1", "M10"], 1..=6),
        )
            .prop_map(
                |(class, cvss, (poc, active, remote, reg, con), (ab, layer), anomaly, models)| {
                    Finding {
                        id: "PROP-1".into(),
                        title: String::new(),
                        classification: [
                            Classification::Security,
                            Classification::Stability,
                            Classification::Compliance,
                            Classification::Performance,
                            Classification::Cosmetic,
                        ][class],
                        cvss: cvss.map(|i| VECTORS[i].parse().expect("valid vector")),
                        exploitation: Exploitation {
                            public_poc: poc,
                            active,
                        },
                        remote,
                        affected: Affected {
                            models: models.into_iter().map(str::to_owned).collect(),
                            ..Affected::default()
                        },
                        regulatory_impact: reg.then(|| "a regulation".to_owned()),
                        contractual_impact: con.then(|| "a contract".to_owned()),
                        rollback: Rollback {
                            ab_slot: ab,
                            layer: [Layer::Application, Layer::Bootloader, Layer::Modem][layer],
                        },
                        anomaly: anomaly.map(|(rate, base)| Anomaly {
                            rate_per_1000_device_days: rate,
                            baseline_per_1000_device_days: base,
                        }),
                        detected_at: None,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn more_affected_devices_never_lower_points(
            finding in arb_finding(),
            base in proptest::collection::vec(any::<bool>(), 400),
            extra in proptest::collection::vec(any::<bool>(), 400),
        ) {
            let f = small_fleet();
            let ids = |mask: &dyn Fn(usize) -> bool| -> Vec<String> {
                f.devices.iter().enumerate().filter(|(i, _)| mask(*i)).map(|(_, d)| d.id.clone()).collect()
            };
            let mut small = finding.clone();
            small.affected = Affected { device_ids: ids(&|i| base[i]), ..Affected::default() };
            let mut big = finding;
            big.affected = Affected { device_ids: ids(&|i| base[i] || extra[i]), ..Affected::default() };
            prop_assume!(!small.affected.device_ids.is_empty());
            let s = score_default(&small, f);
            let b = score_default(&big, f);
            prop_assert!(b.affected_devices >= s.affected_devices);
            prop_assert!(b.points >= s.points - 1e-9, "{} < {}", b.points, s.points);
            prop_assert!(b.tier <= s.tier);
            assert_lines_add_up(&s);
            assert_lines_add_up(&b);
        }

        #[test]
        fn active_exploitation_never_lowers_the_tier(finding in arb_finding()) {
            let f = small_fleet();
            let mut quiet = finding.clone();
            quiet.exploitation.active = false;
            let mut active = finding;
            active.exploitation.active = true;
            let q = score_default(&quiet, f);
            let a = score_default(&active, f);
            prop_assert!(a.tier <= q.tier, "active {} vs quiet {}", a.tier, q.tier);
            prop_assert!(a.points >= q.points);
        }

        #[test]
        fn adding_redundancy_never_raises_criticality(
            index in 0usize..400,
            none in 0.0f64..2.0,
            standby_ratio in 0.0f64..=1.0,
            pooled_ratio in 0.0f64..=1.0,
            finding in arb_finding(),
            covered in proptest::collection::vec(any::<bool>(), 400),
        ) {
            let policy = ScoringPolicy {
                redundancy: RedundancyWeights {
                    none,
                    standby: none * standby_ratio,
                    pooled: none * pooled_ratio,
                },
                ..ScoringPolicy::default()
            };
            policy.validate().expect("valid policy");
            let f = small_fleet();
            let mut d = f.devices[index].clone();
            d.redundancy = crate::fleet::Redundancy::None;
            let (alone, _) = device_criticality(&policy, &d);
            for r in [crate::fleet::Redundancy::Standby, crate::fleet::Redundancy::Pooled] {
                d.redundancy = r;
                prop_assert!(device_criticality(&policy, &d).0 <= alone);
            }
            // Fleet level: give some devices a standby unit; the score never rises.
            let mut before = f.clone();
            for d in &mut before.devices {
                d.redundancy = crate::fleet::Redundancy::None;
            }
            let mut after = before.clone();
            for (d, c) in after.devices.iter_mut().zip(&covered) {
                if *c {
                    d.redundancy = crate::fleet::Redundancy::Standby;
                }
            }
            let b = score(&finding, &before, &policy, NOW).expect("scores");
            let a = score(&finding, &after, &policy, NOW).expect("scores");
            prop_assert!(a.blast_radius.criticality_weighted_share <= b.blast_radius.criticality_weighted_share + 1e-12);
            prop_assert!(a.points <= b.points + 1e-9);
            prop_assert!(a.tier >= b.tier);
        }
    }
}

#[test]
fn the_policy_digest_follows_its_content_and_is_on_the_scorecard() {
    let built_in = ScoringPolicy::default();
    assert_eq!(built_in.digest().len(), 16);
    assert_eq!(built_in.digest(), ScoringPolicy::default().digest());
    let mut edited = ScoringPolicy::default();
    edited.remote_points += 1.0;
    assert_ne!(edited.digest(), built_in.digest());
    // Through its JSON and back: the same content, the same digest.
    let again: ScoringPolicy =
        serde_json::from_str(&serde_json::to_string(&edited).expect("json")).expect("parse");
    assert_eq!(again.digest(), edited.digest());
}
