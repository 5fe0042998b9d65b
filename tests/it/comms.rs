//! `convoy rollout comms` states the same device counts as the rollout's metrics (issue 19:
//! the drafts said "failed or reverted: 0" for a canary the gates rolled back mid-wave, whose
//! devices had all reverted, because a wave that never completes records no summary).
//!
//! The cache is written as the engine writes it (the rollout's log and its timeline, through
//! the core's one timeline mapping) from a simulated crash-looping canary; the real binary
//! then writes every draft from it. The core's tests cover every terminal state.

use convoy::store::Store;
use convoy_core::metrics::rollout_metrics;
use convoy_core::rollout::Phase;
use convoy_e2e::{convoy_ok, record_crash_looping_canary};

#[test]
fn every_draft_of_a_rolled_back_canary_states_its_reverted_devices() {
    let _turn = convoy_e2e::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cache.db");
    let mut store = Store::open(&db).expect("a new cache");
    // The gates roll the crash-looping canary back themselves.
    let rollout = record_crash_looping_canary(&mut store, "ro-canary", false);
    drop(store);
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
