//! Whole rollouts on a simulated fleet with a virtual clock: no sockets, no sleeps.

use convoy_core::fleet::Fleet;
use convoy_core::gates::{FindingStatus, GatePolicy};
use convoy_core::rollout::sim::{Fault, FaultKind, SimConfig, SimFleet, SimOutcome};
use convoy_core::rollout::{
    ChangePath, Command, DeviceReport, DeviceState, EventKind, Phase, RollbackScope, Rollout,
    RolloutAction, RolloutError, RolloutSpec, WaveSpec,
};
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;

mod paced;

const START: Timestamp = Timestamp::from_secs(1_795_392_000);
const DAY: i64 = 86_400;

fn fleet(devices: usize, seed: u64) -> Fleet {
    generate(&SynthOptions {
        devices,
        seed,
        now: START,
    })
}

/// Canary of 50 (with five of the rare T300 revision C, as a representative canary would
/// have), a wave of 500, then everyone else. Ids sorted within each wave.
fn waves(fleet: &Fleet) -> Vec<WaveSpec> {
    let rare: Vec<String> = fleet
        .devices
        .iter()
        .filter(|d| d.model == "T300" && d.hw_rev == "C")
        .take(5)
        .map(|d| d.id.clone())
        .collect();
    assert_eq!(
        rare.len(),
        5,
        "the synthetic fleet has rare revision C devices"
    );
    let others: Vec<String> = fleet
        .devices
        .iter()
        .map(|d| d.id.clone())
        .filter(|id| !rare.contains(id))
        .collect();
    let mut canary = rare;
    canary.extend(others[..45].iter().cloned());
    canary.sort();
    vec![
        WaveSpec {
            name: "canary".into(),
            device_ids: canary,
            soak_secs: DAY,
        },
        WaveSpec {
            name: "early".into(),
            device_ids: others[45..545].to_vec(),
            soak_secs: DAY / 2,
        },
        WaveSpec {
            name: "everyone".into(),
            device_ids: others[545..].to_vec(),
            soak_secs: DAY / 2,
        },
    ]
}

fn spec(fleet: &Fleet, path: ChangePath) -> RolloutSpec {
    RolloutSpec {
        id: "r-1".into(),
        release_id: "t300-fw-2.5.0".into(),
        requested_by: "alice".into(),
        waves: waves(fleet),
        gates: GatePolicy::default(),
        path,
    }
}

fn approved(fleet: &Fleet) -> Rollout {
    let mut r = Rollout::new(START, spec(fleet, ChangePath::Standard), fleet).expect("valid spec");
    r.approve(START, "bob").expect("bob approves");
    r.approve(START, "carol").expect("carol approves");
    assert_eq!(r.phase(), &Phase::Approved);
    r
}

fn simulate(devices: usize, config: SimConfig) -> (Rollout, SimFleet, SimOutcome) {
    let fleet = fleet(devices, 7);
    let mut r = approved(&fleet);
    let mut sim = SimFleet::new(&fleet, &r, config, START);
    let out = sim.run(&mut r, START, START.plus_secs(30 * DAY));
    (r, sim, out)
}

#[test]
fn a_good_release_goes_through_all_waves() {
    let (r, sim, out) = simulate(3000, SimConfig::default());
    assert_eq!(
        out.phase,
        Phase::Completed,
        "{out:?}\n{:?}",
        r.last_gate_report()
    );
    assert!(!out.stopped_by_gate);
    let offers: Vec<usize> = sim
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            RolloutAction::Offer { wave, .. } => Some(*wave),
            _ => None,
        })
        .collect();
    assert_eq!(offers, vec![0, 1, 2]);
    let completed = r
        .events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::WaveCompleted { .. }))
        .count();
    assert_eq!(completed, 3);
    // Nearly everyone ends healthy; the rest failed, reverted or went silent, by the noise model.
    let healthy = r.devices_in(DeviceState::Healthy).len();
    assert!(healthy > 2900, "{healthy}");
}

#[test]
fn a_release_that_breaks_a_rare_hardware_revision_is_stopped_in_the_canary() {
    let config = SimConfig {
        faults: vec![Fault {
            attribute: Some(("hw_rev".into(), "C".into())),
            kind: FaultKind::CrashLoop,
        }],
        ..SimConfig::default()
    };
    let (r, sim, out) = simulate(3000, config);
    assert!(out.stopped_by_gate, "{out:?}");
    assert_eq!(out.stopped_in_wave, Some(0));
    // Rolled back the canary; nobody outside it was ever offered the release.
    assert!(matches!(
        out.phase,
        Phase::Paused {
            rolled_back: true,
            wave: 0,
            ..
        }
    ));
    assert!(sim.actions.iter().any(|(_, a)| matches!(
        a,
        RolloutAction::RollBack {
            scope: RollbackScope::Wave(0),
            ..
        }
    )));
    assert!(
        !sim.actions
            .iter()
            .any(|(_, a)| matches!(a, RolloutAction::Offer { wave, .. } if *wave > 0))
    );
    // The stop came from the rare stratum, while the canary as a whole was not significant.
    let stop = r
        .events()
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::GateChecked {
                report: Some(rep), ..
            } if rep.failures().next().is_some() => Some(rep.clone()),
            _ => None,
        })
        .expect("a failing gate check");
    let failed: Vec<(String, Option<String>)> = stop
        .failures()
        .map(|f| (f.metric.clone(), f.stratum.clone()))
        .collect();
    assert!(
        failed.contains(&("boot_failure".into(), Some("T300/C".into()))),
        "{failed:?}"
    );
    assert!(
        !failed.iter().any(|(_, s)| s.is_none()),
        "whole-canary gates should not be what fired: {failed:?}"
    );
    // The 45 other canary devices stayed healthy until the rollback reverted them.
    assert_eq!(r.devices_in(DeviceState::Pending).len(), 3000 - 50);
}

#[test]
fn noise_alone_does_not_stop_a_good_release() {
    // Ten independent good rollouts with noisier devices than the default (wider spread of
    // per-device rates); none may stop. The measured rate over many more runs is in
    // docs/GATES.md (bench_gates prints it).
    for seed in 1..=10 {
        let config = SimConfig {
            seed,
            rate_spread_sigma: 0.8,
            ..SimConfig::default()
        };
        let (r, _, out) = simulate(1500, config);
        assert_eq!(
            out.phase,
            Phase::Completed,
            "seed {seed}: {out:?} {:?}",
            r.last_gate_report()
        );
    }
}

#[test]
fn a_clear_regression_everywhere_is_stopped_in_the_canary() {
    let config = SimConfig {
        faults: vec![Fault {
            attribute: None,
            kind: FaultKind::CrashRateTimes(20.0),
        }],
        ..SimConfig::default()
    };
    let (r, _, out) = simulate(1500, config);
    assert_eq!(out.stopped_in_wave, Some(0), "{out:?}");
    let rep = r.last_gate_report().expect("a report");
    assert!(
        rep.failures()
            .any(|f| f.metric == "crash" && f.stratum.is_none()),
        "{rep:?}"
    );
}

#[test]
fn devices_that_go_silent_after_the_update_stop_the_rollout() {
    let config = SimConfig {
        faults: vec![Fault {
            attribute: Some(("model".into(), "T300".into())),
            kind: FaultKind::SilentAfterReboot(0.5),
        }],
        ..SimConfig::default()
    };
    let (r, _, out) = simulate(3000, config);
    assert!(out.stopped_by_gate, "{out:?}");
    let fired: Vec<String> = r
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::GateChecked {
                report: Some(rep), ..
            } => Some(rep.failures().map(|f| f.metric.clone()).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(fired.iter().any(|m| m == "silent"), "{fired:?} {out:?}");
    assert!(!r.silent_devices().is_empty());
}

#[test]
fn a_wave_does_not_wait_forever_for_silent_devices_and_reports_them() {
    // A good release with some devices that drop off when offered: every wave still ends, and
    // the silent devices are listed by id.
    let config = SimConfig {
        silent_ratio: 0.01,
        ..SimConfig::default()
    };
    let (r, _, out) = simulate(3000, config);
    assert_eq!(out.phase, Phase::Completed, "{out:?}");
    let listed: Vec<String> = r
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::WaveCompleted { summary, .. } => Some(summary.silent_device_ids.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut silent: Vec<String> = r.silent_devices().iter().map(|s| (*s).to_owned()).collect();
    silent.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, silent);
    assert!(listed.len() > 10, "{}", listed.len());
}

#[test]
fn replaying_the_event_log_rebuilds_the_same_state() {
    let config = SimConfig {
        faults: vec![Fault {
            attribute: Some(("hw_rev".into(), "C".into())),
            kind: FaultKind::CrashLoop,
        }],
        ..SimConfig::default()
    };
    let (r, _, _) = simulate(1500, config);
    let replayed = Rollout::replay(r.events().to_vec()).expect("the log replays");
    assert_eq!(replayed.state(), r.state());
    // And through JSON, as the store would keep it.
    let text = serde_json::to_string(r.events()).expect("events serialise");
    let back = serde_json::from_str(&text).expect("events parse");
    let again = Rollout::replay(back).expect("the parsed log replays");
    assert_eq!(again.state(), r.state());
    // A log that does not start with `created` is refused.
    let err = Rollout::replay(r.events()[1..].to_vec()).expect_err("no created event");
    assert!(
        matches!(err, RolloutError::BadLog { index: 0, .. }),
        "{err}"
    );
    // A log naming a device the rollout does not have is refused, not a panic.
    let mut forged = r.events()[..1].to_vec();
    forged.push(convoy_core::rollout::RolloutEvent {
        at: START,
        cause: convoy_core::rollout::Cause::Timer,
        kind: EventKind::DeviceSilent { device: 1_000_000 },
    });
    let err = Rollout::replay(forged).expect_err("out-of-range device");
    assert!(
        matches!(err, RolloutError::BadLog { index: 1, .. }),
        "{err}"
    );
}

#[test]
fn standard_change_needs_two_distinct_approvers_other_than_the_requester() {
    let fleet = fleet(1500, 3);
    let mut r = Rollout::new(START, spec(&fleet, ChangePath::Standard), &fleet).expect("valid");
    r.approve(START, "alice")
        .expect("the requester may approve");
    r.approve(START, "bob").expect("bob");
    assert_eq!(
        r.phase(),
        &Phase::Draft,
        "requester's approval does not count"
    );
    assert_eq!(
        r.approve(START, "bob"),
        Err(RolloutError::DuplicateApproval("bob".into()))
    );
    assert!(r.approve(START, " ").is_err());
    r.approve(START, "carol").expect("carol");
    assert_eq!(r.phase(), &Phase::Approved);
    assert!(r.approve(START, "dave").is_err(), "already approved");
}

#[test]
fn a_single_operator_rollout_starts_only_on_the_requesters_own_recorded_approval() {
    let fleet = fleet(1500, 3);
    let mut r =
        Rollout::new(START, spec(&fleet, ChangePath::SingleOperator), &fleet).expect("valid");
    r.approve(START, "bob").expect("someone else may approve");
    assert_eq!(
        r.phase(),
        &Phase::Draft,
        "the requester's own approval is the rule"
    );
    r.approve(START, "alice").expect("the requester approves");
    assert_eq!(r.phase(), &Phase::Approved);
    let approvals: Vec<&str> = r
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Approval { operator } => Some(operator.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(approvals, ["bob", "alice"], "every approval is in the log");
}

#[test]
fn an_emergency_cannot_be_approved_by_its_requester_alone() {
    let fleet = fleet(1500, 3);
    let path = ChangePath::Emergency {
        authoriser: "alice".into(),
        evidence: "INC-42: CVE-2026-1234 exploited in the wild".into(),
        rollback_window_secs: 3 * DAY,
    };
    let mut r = Rollout::new(START, spec(&fleet, path.clone()), &fleet).expect("valid");
    r.approve(START, "alice").expect("authoriser approves");
    assert_eq!(
        r.phase(),
        &Phase::Draft,
        "requester = authoriser alone is not enough"
    );
    r.approve(START, "bob").expect("second person");
    assert_eq!(r.phase(), &Phase::Approved);

    // An emergency without evidence is refused outright.
    let mut bad = spec(&fleet, path);
    bad.path = ChangePath::Emergency {
        authoriser: "alice".into(),
        evidence: String::new(),
        rollback_window_secs: DAY,
    };
    let err = Rollout::new(START, bad, &fleet).expect_err("no evidence");
    assert!(err.to_string().contains("path.evidence"), "{err}");
}

#[test]
fn emergency_rollouts_keep_their_gates_and_rollback_window() {
    let fleet = fleet(1500, 7);
    let path = ChangePath::Emergency {
        authoriser: "erin".into(),
        evidence: "INC-7".into(),
        rollback_window_secs: DAY,
    };
    let mut r = Rollout::new(START, spec(&fleet, path.clone()), &fleet).expect("valid");
    r.approve(START, "erin").expect("erin");
    assert_eq!(r.phase(), &Phase::Approved);
    let config = SimConfig {
        faults: vec![Fault {
            attribute: Some(("hw_rev".into(), "C".into())),
            kind: FaultKind::CrashLoop,
        }],
        ..SimConfig::default()
    };
    let mut sim = SimFleet::new(&fleet, &r, config, START);
    let out = sim.run(&mut r, START, START.plus_secs(30 * DAY));
    assert_eq!(
        out.stopped_in_wave,
        Some(0),
        "gates apply to emergencies too"
    );

    // A good emergency rollout can be rolled back as a whole within its window, not after.
    let mut good = Rollout::new(START, spec(&fleet, path), &fleet).expect("valid");
    good.approve(START, "erin").expect("erin");
    let mut sim = SimFleet::new(&fleet, &good, SimConfig::default(), START);
    let out = sim.run(&mut good, START, START.plus_secs(30 * DAY));
    assert_eq!(out.phase, Phase::Completed);
    let done = good.state().completed_at.expect("completed");
    let late = done.plus_secs(DAY + 1);
    assert!(matches!(
        good.clone()
            .roll_back(late, "erin", RollbackScope::All, "too late"),
        Err(RolloutError::NotAllowed { .. })
    ));
    good.roll_back(
        done.plus_secs(60),
        "erin",
        RollbackScope::All,
        "field reports",
    )
    .expect("within the window");
    assert!(matches!(good.phase(), Phase::RollingBack { .. }));
    let out = sim.run(&mut good, done.plus_secs(60), done.plus_secs(10 * DAY));
    assert_eq!(out.phase, Phase::RolledBack);
}

#[test]
fn a_gate_stop_resumes_only_by_an_override_with_a_recorded_reason() {
    // Battery drain pauses (it does not roll back): override it and the rollout completes.
    let config = SimConfig {
        faults: vec![Fault {
            attribute: None,
            kind: FaultKind::BatteryDrainPlus(1.0),
        }],
        ..SimConfig::default()
    };
    let fleet = fleet(1500, 7);
    let mut r = approved(&fleet);
    let mut sim = SimFleet::new(&fleet, &r, config, START);
    let out = sim.run(&mut r, START, START.plus_secs(30 * DAY));
    assert!(
        matches!(
            out.phase,
            Phase::Paused {
                by_gate: true,
                rolled_back: false,
                ..
            }
        ),
        "{out:?}"
    );
    let now = out.ended_at;
    assert!(matches!(
        r.resume(now, "bob", "looks fine"),
        Err(RolloutError::NotAllowed { .. })
    ));
    assert!(matches!(
        r.override_gate(now, "bob", "  "),
        Err(RolloutError::Missing { .. })
    ));
    r.override_gate(
        now,
        "bob",
        "drain is the new GPS duty cycle, accepted by product",
    )
    .expect("override with a reason");
    let overridden = r.events().iter().any(|e| {
        matches!(&e.kind, EventKind::GateOverridden { findings } if findings.iter().any(|(m, _)| m == "battery_drain"))
            && matches!(&e.cause, convoy_core::rollout::Cause::Operator { name, reason } if name == "bob" && reason.contains("GPS"))
    });
    assert!(overridden);
    let out = sim.run(&mut r, now, now.plus_secs(30 * DAY));
    // The next waves are judged afresh, so the drain stops the next wave too.
    assert!(
        matches!(out.phase, Phase::Paused { wave: 1, .. }),
        "{out:?}"
    );
    let last = r.last_gate_report().expect("report");
    assert!(
        last.findings
            .iter()
            .any(|f| f.metric == "battery_drain" && f.status == FindingStatus::Fail)
    );
}

#[test]
fn bad_reports_are_rejected_and_change_nothing() {
    let fleet = fleet(1500, 3);
    let mut r = approved(&fleet);
    r.handle_timeout(START);
    let offered = r.devices_in(DeviceState::Offered)[0].to_owned();
    let pending = r.devices_in(DeviceState::Pending)[0].to_owned();
    let before = r.events().len();
    let unknown = r.handle_report(
        START,
        DeviceReport {
            device_id: "nope".into(),
            state: DeviceState::Healthy,
        },
    );
    assert_eq!(unknown, Err(RolloutError::UnknownDevice("nope".into())));
    let early = r.handle_report(
        START,
        DeviceReport {
            device_id: pending,
            state: DeviceState::Installing,
        },
    );
    assert!(matches!(early, Err(RolloutError::BadTransition { .. })));
    r.handle_report(
        START,
        DeviceReport {
            device_id: offered.clone(),
            state: DeviceState::Installing,
        },
    )
    .expect("skipping reports that got lost is fine");
    let back = r.handle_report(
        START,
        DeviceReport {
            device_id: offered,
            state: DeviceState::Downloading,
        },
    );
    assert!(matches!(back, Err(RolloutError::BadTransition { .. })));
    assert_eq!(r.events().len(), before + 1);
}

#[test]
fn metrics_of_a_hand_driven_rollout() {
    use convoy_core::metrics::{adoption_by, rollout_metrics, summarize};
    let fleet = fleet(1500, 3);
    let ids: Vec<String> = fleet.devices[..20].iter().map(|d| d.id.clone()).collect();
    let spec = RolloutSpec {
        id: "r-hand".into(),
        release_id: "x".into(),
        requested_by: "alice".into(),
        waves: vec![WaveSpec {
            name: "only".into(),
            device_ids: ids.clone(),
            soak_secs: 3600,
        }],
        gates: GatePolicy::default(),
        path: ChangePath::Standard,
    };
    let mut r = Rollout::new(START, spec, &fleet).expect("valid");
    r.approve(START, "bob").expect("bob");
    r.approve(START, "carol").expect("carol");
    r.handle_timeout(START);
    // Device k is confirmed healthy at START + 100·(k+1); the 19th (95% of 20) at +1900.
    for (k, id) in ids.iter().enumerate() {
        let at = START.plus_secs(100 * (k as i64 + 1));
        r.handle_report(
            at,
            DeviceReport {
                device_id: id.clone(),
                state: DeviceState::Healthy,
            },
        )
        .expect("healthy");
    }
    // The soak starts at the last report (+2000) and ends an hour later; below the minimum
    // sample the wave holds twice (4 h each) and then completes with the gaps listed.
    while let Some(t) = r.poll_timeout() {
        r.handle_timeout(t);
    }
    assert_eq!(r.phase(), &Phase::Completed);
    let m = rollout_metrics(&r);
    assert_eq!(m.targeted, 20);
    assert_eq!(m.healthy, 20);
    assert_eq!(m.success_ratio, 1.0);
    assert_eq!(m.patch_lead_time_secs, Some(1900));
    assert_eq!(m.time_to_remediate_secs, Some(2000 + 3600 + 2 * 4 * 3600));
    assert_eq!(m.rollback_count, 0);
    let by_model = adoption_by(&r, &fleet, "model");
    assert_eq!(by_model.iter().map(|a| a.targeted).sum::<u64>(), 20);
    assert!(by_model.windows(2).all(|w| w[0].value < w[1].value));
    assert!(by_model.iter().all(|a| a.adoption_ratio == 1.0));
    let summary = summarize(&[m.clone(), m]);
    assert_eq!(summary.mean_patch_lead_time_secs, Some(1900.0));
    assert_eq!(summary.completed, 2);
}

#[test]
fn metrics_count_the_rollback_and_the_recovery_of_a_stopped_rollout() {
    let config = SimConfig {
        faults: vec![Fault {
            attribute: Some(("hw_rev".into(), "C".into())),
            kind: FaultKind::CrashLoop,
        }],
        ..SimConfig::default()
    };
    let (r, _, _) = simulate(1500, config);
    let m = convoy_core::metrics::rollout_metrics(&r);
    assert_eq!(m.rollback_count, 1);
    assert_eq!(m.recoveries_secs.len(), 1);
    assert!(m.recoveries_secs[0] > 0);
    assert!(!m.completed);
    assert_eq!(m.patch_lead_time_secs, None);
    assert_eq!(m.time_to_remediate_secs, None);
}

#[test]
fn a_gate_set_to_hold_extends_the_soak_then_pauses_for_a_human() {
    let fleet = fleet(1500, 7);
    let mut s = spec(&fleet, ChangePath::Standard);
    s.gates.battery_drain.on_fail = convoy_core::gates::GateOutcome::Hold;
    let mut r = Rollout::new(START, s, &fleet).expect("valid");
    r.approve(START, "bob").expect("bob");
    r.approve(START, "carol").expect("carol");
    let config = SimConfig {
        faults: vec![Fault {
            attribute: None,
            kind: FaultKind::BatteryDrainPlus(1.0),
        }],
        ..SimConfig::default()
    };
    let mut sim = SimFleet::new(&fleet, &r, config, START);
    let out = sim.run(&mut r, START, START.plus_secs(30 * DAY));
    let holds = r
        .events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::SoakExtended { wave: 0, .. }))
        .count();
    assert_eq!(holds, 2, "{out:?}");
    match out.phase {
        Phase::Paused {
            wave: 0,
            by_gate: true,
            reason,
            ..
        } => assert!(reason.contains("battery_drain"), "{reason}"),
        other => panic!("expected a gate pause in the canary, got {other:?}"),
    }
}

/// The planner's own canary, not a hand-built one: the representative canary must give the
/// rare revision enough devices for its stratum gate, and the gate must stop the rollout there.
#[test]
fn a_planned_canary_stops_a_release_that_breaks_a_rare_revision() {
    use convoy_core::plan::{PlanInput, PlanningPolicy, plan};
    use convoy_core::release::ReleaseSpec;

    let fleet = fleet(20_000, 7);
    let release: ReleaseSpec = serde_json::from_str(include_str!(
        "../../../fixtures/releases/t300-fw-2.5.0.json"
    ))
    .expect("release");
    let catalog: Vec<ReleaseSpec> =
        serde_json::from_str(include_str!("../../../fixtures/releases/catalog.json"))
            .expect("catalog");
    let policy = PlanningPolicy::default();
    let gates = GatePolicy::default();
    let planned = plan(&PlanInput {
        fleet: &fleet,
        release: &release,
        catalog: &catalog,
        now: START,
        seed: 1,
        policy: &policy,
    })
    .expect("plan");
    let waves = planned.rollout_waves(&fleet);
    assert!(waves.len() >= 2, "{waves:?}");
    assert_eq!(
        waves[0].device_ids, planned.canary.device_ids,
        "the first wave is the canary"
    );
    let rare_in_canary = waves[0]
        .device_ids
        .iter()
        .filter(|id| {
            fleet
                .device(id)
                .is_some_and(|d| d.model == "T300" && d.hw_rev == "C")
        })
        .count();
    assert!(
        rare_in_canary >= gates.min_stratum_devices as usize,
        "the canary holds {rare_in_canary} T300/C devices, the stratum gate needs {}",
        gates.min_stratum_devices
    );

    let spec = RolloutSpec {
        id: "r-planned".into(),
        release_id: release.id.clone(),
        requested_by: "alice".into(),
        waves,
        gates,
        path: ChangePath::Standard,
    };
    let mut r = Rollout::new(START, spec, &fleet).expect("valid spec");
    r.approve(START, "bob").expect("bob approves");
    r.approve(START, "carol").expect("carol approves");
    let config = SimConfig {
        faults: vec![Fault {
            attribute: Some(("hw_rev".into(), "C".into())),
            kind: FaultKind::CrashLoop,
        }],
        ..SimConfig::default()
    };
    let mut sim = SimFleet::new(&fleet, &r, config, START);
    let out = sim.run(&mut r, START, START.plus_secs(30 * DAY));
    assert!(out.stopped_by_gate, "{out:?}");
    assert_eq!(out.stopped_in_wave, Some(0), "{out:?}");
    assert!(
        !sim.actions
            .iter()
            .any(|(_, a)| matches!(a, RolloutAction::Offer { wave, .. } if *wave > 0)),
        "no device outside the canary was offered the release"
    );
}

/// The same planned rollout of a good release runs through every wave.
#[test]
fn a_planned_rollout_of_a_good_release_completes() {
    use convoy_core::plan::{PlanInput, PlanningPolicy, plan};
    use convoy_core::release::ReleaseSpec;

    let fleet = fleet(5_000, 7);
    let release: ReleaseSpec = serde_json::from_str(include_str!(
        "../../../fixtures/releases/t300-fw-2.5.0.json"
    ))
    .expect("release");
    let planned = plan(&PlanInput {
        fleet: &fleet,
        release: &release,
        catalog: &[],
        now: START,
        seed: 1,
        policy: &PlanningPolicy::default(),
    })
    .expect("plan");
    let waves = planned.rollout_waves(&fleet);
    let wave_count = waves.len();
    let spec = RolloutSpec {
        id: "r-good".into(),
        release_id: release.id.clone(),
        requested_by: "alice".into(),
        waves,
        gates: GatePolicy::default(),
        path: ChangePath::Standard,
    };
    let mut r = Rollout::new(START, spec, &fleet).expect("valid spec");
    r.approve(START, "bob").expect("bob approves");
    r.approve(START, "carol").expect("carol approves");
    let mut sim = SimFleet::new(&fleet, &r, SimConfig::default(), START);
    let out = sim.run(&mut r, START, START.plus_secs(60 * DAY));
    assert_eq!(
        out.phase,
        Phase::Completed,
        "{out:?}\n{:?}",
        r.last_gate_report()
    );
    let offered_waves: std::collections::BTreeSet<usize> = sim
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            RolloutAction::Offer { wave, .. } => Some(*wave),
            _ => None,
        })
        .collect();
    assert_eq!(offered_waves.len(), wave_count);
}

/// A small wave, a baseline of 10 crashes per 1,000 device-hours, and `crashes` crashes in the
/// updated wave's 40 device-hours; runs the first wave's soak and holds to their end.
fn small_wave_with_crashes(crashes: u32) -> Rollout {
    use convoy_core::rollout::{HealthSample, TelemetryReport};
    let fleet = fleet(1500, 3);
    let ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
    let spec = RolloutSpec {
        id: "r-trend".into(),
        release_id: "x".into(),
        requested_by: "alice".into(),
        waves: vec![
            WaveSpec {
                name: "small".into(),
                device_ids: ids[..20].to_vec(),
                soak_secs: 3600,
            },
            WaveSpec {
                name: "rest".into(),
                device_ids: ids[20..220].to_vec(),
                soak_secs: 3600,
            },
        ],
        gates: GatePolicy::default(),
        path: ChangePath::Standard,
    };
    let mut r = Rollout::new(START, spec, &fleet).expect("valid");
    r.approve(START, "bob").expect("bob");
    r.approve(START, "carol").expect("carol");
    r.handle_timeout(START);
    let at = START.plus_secs(100);
    for id in &ids[..20] {
        r.handle_report(
            at,
            DeviceReport {
                device_id: id.clone(),
                state: DeviceState::Healthy,
            },
        )
        .expect("healthy");
    }
    let sample = |period_secs: u32, crashes: u32| HealthSample {
        period_secs,
        crashes,
        reconnect_failures: 0,
        support_contacts: 0,
        reconnect_secs: None,
        battery_drain_pct_per_hour: None,
        custom: Vec::new(),
    };
    let at = START.plus_secs(200);
    // Baseline: 200 devices × 2 h with 4 crashes (10 per 1,000 device-hours). Updated: 20
    // devices × 2 h. Every device reports over the same period, as the engine's health windows
    // do, so the updated cohort's share of the devices is its share of the exposure.
    for (k, id) in ids[20..220].iter().enumerate() {
        let report = TelemetryReport {
            device_id: id.clone(),
            sample: sample(7_200, u32::from(k < 4)),
        };
        r.handle_telemetry(at, report).expect("baseline telemetry");
    }
    for (k, id) in ids[..20].iter().enumerate() {
        let report = TelemetryReport {
            device_id: id.clone(),
            sample: sample(7_200, u32::from((k as u32) < crashes)),
        };
        r.handle_telemetry(at, report).expect("updated telemetry");
    }
    while matches!(
        r.phase(),
        Phase::Running { wave: 0 } | Phase::Soaking { wave: 0, .. }
    ) {
        let t = r.poll_timeout().expect("a soak has an end");
        r.handle_timeout(t);
    }
    r
}

#[test]
fn a_chance_trend_in_a_small_wave_is_recorded_but_does_not_pause() {
    // 6 crashes in 40 device-hours against 10 per 1,000: against a 1.5× tolerance the evidence
    // gives an anytime p of 0.017, below the hold level (0.05) but not the per-test level.
    let r = small_wave_with_crashes(6);
    let holds = r
        .events()
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::SoakExtended { wave: 0, report: Some(rep), .. } if rep.trending))
        .count();
    assert_eq!(holds, 2, "held twice for the trend: {:?}", r.phase());
    // The hold's evidence carries the raw counts behind the rates.
    let counts = r
        .events()
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::SoakExtended {
                report: Some(rep), ..
            } => rep
                .findings
                .iter()
                .find(|f| f.metric == "crash" && f.stratum.is_none())
                .and_then(|f| f.counts),
            _ => None,
        })
        .expect("the crash finding has its counts");
    assert_eq!(
        (counts.updated_events, counts.baseline_events),
        (6, 4),
        "{counts:?}"
    );
    assert!(
        (counts.updated_device_hours - 40.0).abs() < 1e-9,
        "{counts:?}"
    );
    assert!(
        (counts.baseline_device_hours - 400.0).abs() < 1e-9,
        "{counts:?}"
    );
    let summary = r
        .events()
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::WaveCompleted { wave: 0, summary } => Some(summary.clone()),
            _ => None,
        })
        .expect("the small wave completed");
    assert_eq!(summary.unconfirmed_trends.len(), 1, "{summary:?}");
    assert!(
        summary.unconfirmed_trends[0].starts_with("crash all 150.0000 vs baseline 10.0000"),
        "{summary:?}"
    );
}

#[test]
fn a_trend_never_pauses_by_itself_after_the_holds() {
    // 7 crashes in 40 device-hours against 10 per 1,000 (issue 18): the old rule paused such a
    // trend after two holds at a fixed-sample level. The e-value's anytime p (0.004) does not
    // clear the per-test level, so the wave holds, then completes with the trend recorded for
    // a human to read.
    let r = small_wave_with_crashes(7);
    assert!(
        !matches!(r.phase(), Phase::Paused { .. }),
        "a trend alone does not pause: {:?}",
        r.phase()
    );
    let summary = r
        .events()
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::WaveCompleted { wave: 0, summary } => Some(summary.clone()),
            _ => None,
        })
        .expect("the small wave completed");
    assert!(
        summary
            .unconfirmed_trends
            .iter()
            .any(|t| t.starts_with("crash all 175.0000")),
        "{summary:?}"
    );
}

#[test]
fn decisive_evidence_stops_the_wave_within_the_debounce_not_at_the_next_timed_look() {
    // 40 crashes in the updated cohort's first report: a look is due at once, well before the
    // timed look 15 minutes away, and it rolls the wave back.
    let r = small_wave_with_crashes(40);
    let stop = r
        .events()
        .iter()
        .find(|e| matches!(e.kind, EventKind::RollbackStarted { .. }))
        .expect("the crash gate rolled the wave back");
    let last_report = r
        .events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Telemetry { .. }))
        .map(|e| e.at)
        .max()
        .expect("telemetry");
    assert!(
        stop.at.secs_since(last_report) <= convoy_core::rollout::LOOK_DEBOUNCE_SECS,
        "stopped at {} after the evidence at {last_report}",
        stop.at
    );
}

#[test]
fn the_health_series_shows_the_regression_the_gate_stopped_and_marks_the_stop() {
    use convoy_core::rollout::series::{MAX_POINTS, health_series};
    let config = SimConfig {
        faults: vec![Fault {
            attribute: None,
            kind: FaultKind::CrashRateTimes(20.0),
        }],
        ..SimConfig::default()
    };
    let (r, _, out) = simulate(1500, config);
    assert_eq!(out.stopped_in_wave, Some(0), "{out:?}");
    let s = health_series(r.events());
    let crash = s
        .metrics
        .iter()
        .find(|m| m.metric == "crash")
        .expect("a crash series");
    assert!(!crash.points.is_empty() && crash.points.len() <= MAX_POINTS + 1);
    assert!(
        crash.points.windows(2).all(|w| w[0].at < w[1].at),
        "points in time order"
    );
    let last = crash.points.last().expect("a last point");
    let (u, b) = (
        last.updated.expect("updated devices reported"),
        last.baseline.expect("baseline devices reported"),
    );
    assert!(u > crash.max_ratio * b, "updated {u} against baseline {b}");
    // Cumulative exposure never shrinks.
    assert!(
        crash
            .points
            .windows(2)
            .all(|w| w[1].updated_weight >= w[0].updated_weight
                && w[1].baseline_weight >= w[0].baseline_weight)
    );
    assert!(s.markers.iter().any(|m| m.label == "wave 1 started"));
    let stop = s
        .markers
        .iter()
        .find(|m| m.stop)
        .expect("the stop is marked");
    assert!(stop.label.starts_with("gate: "), "{stop:?}");
    assert!(stop.at <= out.ended_at);
}

#[test]
fn the_health_series_of_a_good_release_stays_within_the_tolerated_ratio() {
    use convoy_core::rollout::series::health_series;
    let (r, _, out) = simulate(3000, SimConfig::default());
    assert_eq!(r.phase(), &Phase::Completed, "{out:?}");
    let s = health_series(r.events());
    let crash = s
        .metrics
        .iter()
        .find(|m| m.metric == "crash")
        .expect("a crash series");
    let last = crash.points.last().expect("a last point");
    let (u, b) = (
        last.updated.expect("updated"),
        last.baseline.expect("baseline"),
    );
    assert!(u <= crash.max_ratio * b, "updated {u} against baseline {b}");
    assert!(!s.markers.iter().any(|m| m.stop), "{:?}", s.markers);
    assert_eq!(
        s.markers
            .iter()
            .filter(|m| m.label.ends_with("started"))
            .count(),
        3
    );
    // A log without its creation has nothing to plot.
    assert!(health_series(&r.events()[1..]).metrics.is_empty());
}

#[test]
fn after_a_gate_rolls_back_the_canary_excluding_the_failing_stratum_lets_the_rest_complete() {
    // Issue 19: after the gates rolled the canary back, no command worked. Now: what the phase
    // accepts is asked before sending, exclusion takes the failing stratum out of the next
    // waves, and continuing completes the rollout for everyone else.
    let config = SimConfig {
        faults: vec![Fault {
            attribute: Some(("hw_rev".into(), "C".into())),
            kind: FaultKind::CrashLoop,
        }],
        ..SimConfig::default()
    };
    let fleet = fleet(3000, 7);
    let mut r = approved(&fleet);
    let mut sim = SimFleet::new(&fleet, &r, config, START);
    let out = sim.run(&mut r, START, START.plus_secs(30 * DAY));
    assert!(
        matches!(
            out.phase,
            Phase::Paused {
                rolled_back: true,
                wave: 0,
                ..
            }
        ),
        "{out:?}"
    );
    let now = out.ended_at;
    // The phase's own answers, each refusal naming the way forward.
    for c in [Command::Resume, Command::OverrideGate, Command::Pause] {
        let why = r.permits(c, now).expect_err("refused after a rollback");
        assert!(why.to_string().contains("is not allowed"), "{why}");
    }
    let why = r.permits(Command::Resume, now).expect_err("refused");
    assert!(
        why.to_string()
            .contains("exclude what failed and continue with the next wave"),
        "{why}"
    );
    for c in [
        Command::Exclude,
        Command::Continue,
        Command::RollBackAll,
        Command::Abort,
    ] {
        assert_eq!(r.permits(c, now), Ok(()), "{c:?}");
    }
    // The refusal of the mutator is the same as the answer of `permits`.
    assert_eq!(
        r.resume(now, "bob", "try again"),
        r.permits(Command::Resume, now)
    );

    // Exclude every rev C device still waiting (the canary's five are done and stay reverted).
    let rev_c: Vec<&str> = fleet
        .devices
        .iter()
        .filter(|d| d.hw_rev == "C")
        .map(|d| d.id.as_str())
        .collect();
    let pending_rev_c = rev_c
        .iter()
        .filter(|id| r.device_state(id) == Some(DeviceState::Pending))
        .count() as u32;
    assert!(
        pending_rev_c > 0,
        "the fleet has rev C devices past the canary"
    );
    assert!(matches!(
        r.exclude(now, "bob", "", "hw_rev:C", &rev_c),
        Err(RolloutError::Missing { .. })
    ));
    let n = r
        .exclude(
            now,
            "bob",
            "rev C crash-loops: held for a fix",
            "hw_rev:C",
            &rev_c,
        )
        .expect("exclude");
    assert_eq!(n, pending_rev_c);
    assert_eq!(r.state().excluded, pending_rev_c);
    // The same again excludes nothing, and says so.
    assert!(matches!(
        r.exclude(now, "bob", "again", "hw_rev:C", &rev_c),
        Err(RolloutError::NothingToExclude(_))
    ));
    assert!(matches!(
        r.exclude(now, "bob", "typo", "x", &["no-such-device"]),
        Err(RolloutError::UnknownDevice(_))
    ));
    r.continue_rollout(now, "bob", "the rest of the fleet is not affected")
        .expect("continue after the rollback");
    assert_eq!(r.phase(), &Phase::Running { wave: 1 });
    let out = sim.run(&mut r, now, now.plus_secs(60 * DAY));
    assert_eq!(out.phase, Phase::Completed, "{out:?}");
    // No excluded device was ever offered; every one is still pending.
    for id in &rev_c {
        let slot = r
            .state()
            .device_ids
            .binary_search_by(|d| d.as_str().cmp(id));
        let slot = &r.state().devices[slot.expect("in the rollout")];
        if slot.excluded {
            assert_eq!(slot.state, DeviceState::Pending, "{id}");
        }
    }
    let offered_excluded = sim.actions.iter().any(|(_, a)| match a {
        RolloutAction::Offer { device_ids, .. } => device_ids.iter().any(|d| {
            let i = r
                .state()
                .device_ids
                .binary_search(d)
                .expect("in the rollout");
            r.state().devices[i].excluded
        }),
        _ => false,
    });
    assert!(!offered_excluded, "an excluded device was offered");
    // The log replays to the same state, exclusions and the continue included.
    let replayed = Rollout::replay(r.events().to_vec()).expect("replays");
    assert_eq!(replayed.state(), r.state());
    let kinds: Vec<&str> = r
        .events()
        .iter()
        .map(|e| convoy_core::rollout::timeline::kind_name(&e.kind))
        .collect();
    assert!(kinds.contains(&"devices.excluded") && kinds.contains(&"rollout.continued"));
}

#[test]
fn a_wave_whose_devices_are_all_excluded_is_skipped() {
    let fleet = fleet(1500, 7);
    let mut r = approved(&fleet);
    let early: Vec<String> = r.spec().waves[1].device_ids.clone();
    let ids: Vec<&str> = early.iter().map(String::as_str).collect();
    r.exclude(
        START,
        "bob",
        "depot closed for the month",
        "wave early",
        &ids,
    )
    .expect("exclude before the start");
    let mut sim = SimFleet::new(&fleet, &r, SimConfig::default(), START);
    let out = sim.run(&mut r, START, START.plus_secs(30 * DAY));
    assert_eq!(out.phase, Phase::Completed, "{out:?}");
    let offers: Vec<usize> = sim
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            RolloutAction::Offer { wave, .. } => Some(*wave),
            _ => None,
        })
        .collect();
    assert_eq!(offers, vec![0, 2], "the emptied wave is skipped");
    assert_eq!(
        r.devices_in(DeviceState::Pending).len(),
        early.len(),
        "the excluded devices were never offered"
    );
}

#[test]
fn every_phase_answers_every_command_and_the_mutators_agree() {
    let fleet = fleet(600, 7);
    let mut r = Rollout::new(START, spec(&fleet, ChangePath::Standard), &fleet).expect("spec");
    // A draft accepts only abort and exclude.
    for c in Command::ALL {
        let ok = matches!(c, Command::Abort | Command::Exclude);
        assert_eq!(r.permits(c, START).is_ok(), ok, "{c:?} in a draft");
    }
    r.approve(START, "bob").expect("approve");
    r.approve(START, "carol").expect("approve");
    r.handle_timeout(START);
    assert_eq!(r.phase(), &Phase::Running { wave: 0 });
    let t = START.plus_secs(60);
    assert!(r.permits(Command::Continue, t).is_err());
    assert!(r.permits(Command::OverrideGate, t).is_err());
    r.pause(t, "bob", "depot closed").expect("pause");
    let why = r.permits(Command::OverrideGate, t).expect_err("not a gate");
    assert!(why.to_string().contains("resume it"), "{why}");
    assert_eq!(r.permits(Command::Resume, t), Ok(()));
    assert!(r.permits(Command::Pause, t).is_err());
    r.abort(t, "bob", "wrong build").expect("abort");
    for c in Command::ALL {
        let why = r
            .permits(c, t)
            .expect_err("an aborted rollout takes nothing");
        assert!(why.to_string().contains("aborted"), "{why}");
    }
}
