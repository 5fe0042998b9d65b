//! `convoy rollout comms` states the same device counts as the rollout's metrics (issue 19:
//! the drafts said "failed or reverted: 0" for a canary the gates rolled back mid-wave, whose
//! devices had all reverted, because a wave that never completes records no summary).
//!
//! The cache is written as the engine writes it (the rollout's log and its timeline, through
//! the core's one timeline mapping) from a simulated crash-looping canary; the real binary
//! then writes every draft from it. The core's tests cover every terminal state.

use convoy::store::Store;
use convoy_core::metrics::rollout_metrics;
use convoy_core::rollout::sim::{Fault, FaultKind, SimConfig, SimFleet};
use convoy_core::rollout::{
    ChangePath, Phase, RollbackScope, Rollout, RolloutSpec, WaveSpec, timeline,
};
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use convoy_e2e::convoy_ok;

#[test]
fn every_draft_of_a_rolled_back_canary_states_its_reverted_devices() {
    let start = Timestamp::from_secs(1_800_000_000);
    let fleet = generate(&SynthOptions {
        devices: 200,
        seed: 5,
        now: start,
    });
    let mut ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    let spec = RolloutSpec {
        id: "ro-canary".into(),
        release_id: "t300-2.6.0".into(),
        requested_by: "alice".into(),
        waves: vec![
            WaveSpec {
                name: "canary".into(),
                device_ids: ids[..40].to_vec(),
                soak_secs: 3_600,
            },
            WaveSpec {
                name: "fleet".into(),
                device_ids: ids[40..].to_vec(),
                soak_secs: 3_600,
            },
        ],
        gates: convoy_core::gates::GatePolicy::default(),
        path: ChangePath::Standard,
    };
    let mut rollout = Rollout::new(start, spec, &fleet).expect("a valid spec");
    rollout.approve(start, "bob").expect("approval");
    rollout.approve(start, "carol").expect("approval");
    let config = SimConfig {
        faults: vec![Fault {
            attribute: None,
            kind: FaultKind::CrashLoop,
        }],
        ..SimConfig::default()
    };
    let mut sim = SimFleet::new(&fleet, &rollout, config, start);
    sim.run(&mut rollout, start, start.plus_secs(86_400));
    let at = rollout.state().last_at;
    rollout
        .roll_back(
            at,
            "dana",
            RollbackScope::Wave(0),
            "crash loop on the canary",
        )
        .expect("a paused canary can be rolled back");
    sim.run(&mut rollout, at, at.plus_secs(86_400));
    assert!(
        matches!(
            rollout.phase(),
            Phase::Paused {
                rolled_back: true,
                ..
            }
        ),
        "{:?}",
        rollout.phase()
    );
    let metrics = rollout_metrics(&rollout);
    let harmed = metrics.failed + metrics.reverted;
    assert!(harmed >= 35, "the canary's devices revert: {metrics:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cache.db");
    let mut store = Store::open(&db).expect("a new cache");
    store
        .append_rollout_log("ro-canary", 0, rollout.events())
        .expect("the engine's log");
    let names = ["canary".to_owned(), "fleet".to_owned()];
    for e in timeline::record(rollout.events(), &names, &rollout.state().device_ids) {
        store
            .append_event("ro-canary", e.at, &e.kind, &e.cause, &e.payload)
            .expect("the timeline");
    }
    drop(store);

    let db = db.to_str().expect("utf-8 path");
    let comms = |audience: &str| {
        convoy_ok(&[
            "rollout",
            "comms",
            "--db",
            db,
            "--rollout",
            "ro-canary",
            "--audience",
            audience,
        ])
    };
    let internal = comms("internal");
    assert!(
        internal.contains(&format!("{harmed} failed or reverted")),
        "{internal}"
    );
    assert!(
        internal.contains(&format!(
            "| canary | 40 | {} | {} | {} |",
            metrics.healthy, metrics.failed, metrics.reverted
        )),
        "the wave table counts the canary's devices: {internal}"
    );
    let regulator = comms("regulator");
    assert!(
        regulator.contains(&format!(
            "failed or reverted to the previous version: {harmed}"
        )),
        "{regulator}"
    );
    assert!(
        regulator.contains("replayed from the engine's log"),
        "the regulator draft says where its counts come from: {regulator}"
    );
    let customer = comms("customer");
    assert!(
        customer.contains(&format!(
            "{harmed} devices returned to their previous software"
        )),
        "{customer}"
    );
}
