//! The approvals view (issue 8): a plan saved in a real cache for a release signed with a real
//! key is requested by one operator, who cannot approve it; two others approve it on the
//! standard path, and the view then says how it is dispatched. The emergency path needs its
//! named authoriser. With an engine of its own (an embedded broker on 127.0.0.1), the console
//! dispatches the approved request in-process and its run is steerable.

#![allow(clippy::unwrap_used)] // Tests: a failure is the answer.

mod common;

use common::{NOW, click, fill, fixture, settle, wait_for};
use convoy::gui::approvals::LocalDispatch;
use convoy::gui::steer::Steer as _;
use convoy::gui::{Backend, ConsoleApp};
use convoy_core::fleet::Fleet;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};
use std::path::{Path, PathBuf};

fn disabled(h: &Harness<'static, ConsoleApp>, label: &str) -> bool {
    h.get_by_label(label).accesskit_node().is_disabled()
}

/// A fresh cache in `dir` with the fixture fleet, the fixture release signed with a key made in
/// `dir/trust` (where the console looks by default), and the CLI's plan of it saved as the
/// planner saves it. Returns the cache, the release id and the plan id.
fn cache_with_saved_plan(dir: &Path, fleet: &Fleet) -> (PathBuf, String, String) {
    let cache = dir.join("console.db");
    let mut store = convoy::store::Store::open(&cache).unwrap();
    store.replace_fleet(fleet, None).unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/releases/t300-fw-2.5.0.json");
    let spec: convoy_core::release::ReleaseSpec =
        serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let trust = dir.join("trust");
    convoy::keys::generate(&trust, "gui test passphrase").unwrap();
    let manifest =
        convoy::ops::releases::sign_release(spec.clone(), None, &trust, "gui test passphrase", NOW)
            .unwrap();
    convoy::store::releases::record_release(&store, &manifest, "test", NOW).unwrap();
    let policy = convoy_core::plan::PlanningPolicy::default();
    let plan = convoy_core::plan::plan(&convoy_core::plan::PlanInput {
        fleet,
        release: &spec,
        catalog: &[],
        now: NOW,
        seed: 1,
        policy: &policy,
    })
    .unwrap();
    let gates = convoy_core::gates::GatePolicy::default();
    let json = convoy::ops::plans::plan_json(&plan, fleet, &gates, &[]).unwrap();
    let plan_id = convoy::gui::planner::plan_id(&spec.id, NOW);
    convoy::store::plans::record_plan(&store, &plan_id, &spec.id, &json, "console", NOW).unwrap();
    (cache, spec.id, plan_id)
}

/// The console on `cache`, and its backend's in-process engines (what the rollout monitor
/// steers).
fn harness(
    fleet: Fleet,
    cache: PathBuf,
) -> (
    Harness<'static, ConsoleApp>,
    convoy::gui::steer::LocalEngines,
) {
    let (backend, _feed) = Backend::fixture(fleet, cache);
    let engines = backend.engines.clone().unwrap();
    let mut h = common::console(backend, [1400.0, 1800.0]);
    settle(&mut h);
    (h, engines)
}

#[test]
fn a_saved_plan_is_requested_approved_by_two_others_and_the_emergency_path_needs_its_authoriser() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (cache, release, plan_id) = cache_with_saved_plan(dir.path(), &fleet);
    let (mut h, _) = harness(fleet, cache.clone());
    click(&mut h, "Approvals");
    h.get_by_label_contains("Local approvals prove nothing about who approved");
    wait_for(&mut h, &plan_id);

    // alice requests the saved plan on the standard path.
    fill(&mut h, "Operator", "alice");
    h.get_by_label_contains(&plan_id).click();
    settle(&mut h);
    fill(&mut h, "Rollout id", "ro-std");
    click(&mut h, "Request rollout");
    wait_for(&mut h, "alice requested rollout ro-std");
    wait_for(&mut h, "ro-std: awaiting approval");
    h.get_by_label_contains(&format!(
        "release {release} · standard path · requested by alice"
    ));
    // She cannot approve her own request, and the view says why.
    h.get_by_label(
        "alice requested ro-std and cannot approve it: nobody approves their own request",
    );
    assert!(disabled(&h, "Approve ro-std"));
    assert!(
        h.query_by_label("Dispatch ro-std").is_none(),
        "not approved: nothing to dispatch"
    );

    // bob approves: the standard path needs one more.
    fill(&mut h, "Operator", "bob");
    fill(&mut h, "Comment or reason", "canary looks right");
    assert!(!disabled(&h, "Approve ro-std"));
    click(&mut h, "Approve ro-std");
    wait_for(&mut h, "bob approved rollout ro-std");
    wait_for(&mut h, "bob approved at");
    h.get_by_label("ro-std needs 2 approvals by distinct people other than alice (1 so far)");
    h.get_by_label("bob approved at 2027-01-15T08:00:00Z: canary looks right");
    // The comment went with bob's approval; the field is empty for the next.
    assert!(h.state().approvals.comment.is_empty());
    // bob cannot count twice.
    h.get_by_label("bob has approved ro-std already: approvals must come from distinct operators");
    assert!(disabled(&h, "Approve ro-std"));

    // carol approves: approved, and this console (no engine of its own) says who dispatches.
    fill(&mut h, "Operator", "carol");
    click(&mut h, "Approve ro-std");
    wait_for(&mut h, "ro-std: approved");
    h.get_by_label("ro-std needs nothing: approved");
    assert!(disabled(&h, "Dispatch ro-std"));
    h.get_by_label_contains("convoy serve --dispatch-args FILE");

    // The emergency path: the requester cannot authorise it herself.
    fill(&mut h, "Operator", "alice");
    h.get_by_label_contains(&plan_id).click();
    click(&mut h, "Emergency path (break-glass)");
    fill(&mut h, "Rollout id", "ro-em");
    fill(&mut h, "Authoriser", "alice");
    fill(&mut h, "Evidence", "CVE-2027-1234 exploited in the field");
    click(&mut h, "Request rollout");
    wait_for(&mut h, "cannot authorise their own emergency request");
    fill(&mut h, "Authoriser", "dave");
    // The pre-deployment checklist is required on the emergency path (issue 20).
    click(&mut h, "Request rollout");
    wait_for(
        &mut h,
        "checklist.owner: the pre-deployment checklist's owner is missing",
    );
    fill(&mut h, "Owner", "alice");
    fill(&mut h, "Regression test", "CI 4411");
    fill(&mut h, "Rollback readiness", "A/B revert");
    fill(&mut h, "Support brief", "KB-77");
    click(&mut h, "Request rollout");
    wait_for(&mut h, "alice requested rollout ro-em");
    wait_for(&mut h, "Checklist · regression test: CI 4411");
    wait_for(&mut h, "ro-em: awaiting approval");
    h.get_by_label("Break-glass authoriser: dave · evidence: CVE-2027-1234 exploited in the field");
    h.get_by_label("ro-em needs the approval of the authoriser dave");
    // Another operator's approval is not enough without the authoriser.
    fill(&mut h, "Operator", "bob");
    click(&mut h, "Approve ro-em");
    wait_for(&mut h, "bob approved rollout ro-em");
    wait_for(&mut h, "ro-em needs the approval of the authoriser dave");
    fill(&mut h, "Operator", "dave");
    click(&mut h, "Approve ro-em");
    wait_for(&mut h, "ro-em: approved");

    // The trust directory's path is the test's temporary one: a fixed text for the image.
    h.state_mut().approvals.trust_dir = "trust".into();
    h.state_mut().dismiss_toasts();
    settle(&mut h);
    h.snapshot("approvals");

    // Every step is in the audit trail under the name typed, marked as a local console's.
    let store = convoy::store::Store::open_existing(&cache).unwrap();
    let actions: Vec<(String, String)> = store
        .audit_entries(None)
        .unwrap()
        .into_iter()
        .map(|e| (e.actor.clone(), e.action.clone()))
        .filter(|(_, a)| a.starts_with("rollout."))
        .collect();
    for expected in [
        ("console-operator:alice", "rollout.request"),
        ("console-operator:bob", "rollout.approve"),
        ("console-operator:carol", "rollout.approve"),
        ("console-operator:dave", "rollout.approve"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(actor, action)| actor == expected.0 && action == expected.1),
            "{expected:?} in {actions:?}"
        );
    }
    // The request froze the saved plan's waves.
    let request = convoy::serve::requests::load(&store, "ro-std")
        .unwrap()
        .unwrap();
    let saved = convoy::store::plans::stored_plan(&store, &plan_id)
        .unwrap()
        .unwrap();
    let waves: Vec<convoy_core::rollout::WaveSpec> =
        serde_json::from_value(saved["rollout_waves"].clone()).unwrap();
    assert_eq!(request.record.waves, waves);
    assert!(
        request.record.gates.is_some(),
        "the plan's gates are frozen too"
    );
}

#[test]
fn an_approved_request_is_dispatched_to_the_consoles_own_engine_and_is_steerable() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (cache, _release, plan_id) = cache_with_saved_plan(dir.path(), &fleet);
    let broker = convoy::link::broker::EmbeddedBroker::start(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        0,
    )))
    .unwrap();
    let (mut h, engines) = harness(fleet, cache.clone());
    h.state_mut().approvals.local = Some(LocalDispatch {
        engines: engines.clone(),
        broker_url: broker.url(),
        time_scale: 1.0,
    });
    click(&mut h, "Approvals");
    wait_for(&mut h, &plan_id);
    fill(&mut h, "Operator", "alice");
    h.get_by_label_contains(&plan_id).click();
    settle(&mut h);
    fill(&mut h, "Rollout id", "ro-go");
    click(&mut h, "Request rollout");
    wait_for(&mut h, "ro-go: awaiting approval");
    for approver in ["bob", "carol"] {
        fill(&mut h, "Operator", approver);
        click(&mut h, "Approve ro-go");
        wait_for(&mut h, &format!("{approver} approved rollout ro-go"));
    }
    wait_for(&mut h, "ro-go: approved");
    h.get_by_label_contains("Ready to dispatch to the engine in this console");
    h.get_by_label_contains("offers wait in the outbox");
    assert!(!disabled(&h, "Dispatch ro-go"));
    click(&mut h, "Dispatch ro-go");
    wait_for(&mut h, "Dispatched rollout ro-go");
    assert_eq!(h.state().approvals.runs(), 1);
    assert!(
        engines.can_steer("ro-go").is_ok(),
        "registered for the monitor"
    );
    wait_for(&mut h, "ro-go is dispatched");
    assert!(disabled(&h, "Dispatch ro-go"), "dispatched once");
    // The engine records the rollout with its requester once it has started.
    let store = convoy::store::Store::open_existing(&cache).unwrap();
    let mut timeline = Vec::new();
    for _ in 0..1000 {
        timeline = store.timeline("ro-go").unwrap();
        if !timeline.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        !timeline.is_empty(),
        "the engine never recorded the rollout"
    );
    assert_eq!(timeline[0].kind, "rollout.created");
    assert!(
        timeline[0].payload.contains("alice"),
        "{}",
        timeline[0].payload
    );
    let stopped = h.state_mut().approvals.stop_runs();
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].0, "ro-go");
    assert!(stopped[0].1.is_ok(), "{stopped:?}");
}
