//! UI tests of the rollout monitor: the real [`ConsoleApp`] on a cache holding a real rollout
//! log in which a gate stopped the rollout, driven through egui_kittest by accessible labels.
#![allow(clippy::unwrap_used)]

mod common;

use common::{GateStop, NOW, fixture, label_text, settle, wait_for, write_gate_stop};
use convoy::engine::control::{OperatorCommand, control_channel};
use convoy::gui::{Backend, ConsoleApp, UiCommand, View};
use convoy_core::fleet::Fleet;
use convoy_core::rollout::Phase;
use convoy_core::time::Timestamp;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable};

const ROLLOUT: &str = "ro-install";

/// A rollout of `fleet` in two waves (a canary of 100, then the rest) whose release fails to
/// install on 40% of the devices, run by the core's simulated fleet until the install-failure
/// gate pauses it in the canary; its log and timeline written to `cache` as the engine writes
/// them. Returns when the gate stopped it.
fn write_gate_paused_rollout(cache: &std::path::Path, fleet: &Fleet) -> Timestamp {
    let scenario = GateStop {
        rollout_id: ROLLOUT,
        release_id: "t300-2.6.0",
        device_ids: fleet.devices.iter().map(|d| d.id.clone()).collect(),
        start: Timestamp::from_secs(NOW.secs() - 2 * 86_400),
        fault: convoy_core::rollout::sim::FaultKind::InstallFailure(0.4),
        telemetry_every_secs: 900,
        run_secs: 86_400,
    };
    let (rollout, out) = write_gate_stop(cache, fleet, scenario);
    assert!(
        matches!(
            rollout.phase(),
            Phase::Paused {
                by_gate: true,
                rolled_back: false,
                ..
            }
        ),
        "a gate pause: {:?}",
        rollout.phase()
    );
    out.ended_at
}

/// The console on `fleet` and `cache`, with the rollout steerable through a control channel
/// whose other end is returned (a stand-in for the engine's loop).
fn monitor_harness(
    fleet: Fleet,
    cache: std::path::PathBuf,
    height: f32,
) -> (
    Harness<'static, ConsoleApp>,
    tokio::sync::mpsc::Receiver<convoy::engine::control::ControlRequest>,
) {
    let (backend, _feed) = Backend::fixture(fleet, cache);
    let (handle, commands) = control_channel(ROLLOUT, 4);
    backend.engines.as_ref().unwrap().register(handle);
    let mut h = common::console(backend, [1400.0, height]);
    settle(&mut h);
    h.state_mut().send(UiCommand::Show(View::Monitor));
    settle(&mut h);
    (h, commands)
}

/// Done-when of issue 8: a rollout walked through a gate pause. The monitor shows the gate's
/// pause with its evidence, the canary's devices by state and every gate metric's plot; the
/// commands stay disabled until a reason is typed; Override reaches the engine's handle as the
/// console's operator with the reason, and the engine's answer shows.
#[test]
fn the_monitor_walks_a_gate_paused_rollout_to_an_override_with_a_reason() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("monitor.db");
    write_gate_paused_rollout(&cache, &fleet);
    let (mut h, mut commands) = monitor_harness(fleet, cache, 1700.0);
    wait_for(&mut h, "Verdict: ");
    let verdict = label_text(&h, "Verdict: ");
    assert!(
        verdict.starts_with("Verdict: paused at wave 1 by a gate"),
        "{verdict}"
    );
    // The evidence: in plain words first, then the failing install-failure finding with its
    // numbers.
    let plain = label_text(&h, "FAIL: ");
    assert!(
        plain.contains("failed to install") && plain.contains("normal is about"),
        "{plain}"
    );
    // A metric too short of devices to judge shows no p-value (no test was run).
    let unjudged = label_text(&h, "not enough data · crash");
    assert!(unjudged.contains("too few to judge yet"), "{unjudged}");
    assert!(!unjudged.contains("p = "), "{unjudged}");
    let evidence = label_text(&h, "FAIL · install_failure");
    assert!(evidence.contains("observed 0."), "{evidence}");
    assert!(evidence.contains("against baseline 0.02"), "{evidence}");
    // The canary's row: 100 devices, all offered; the second wave untouched.
    h.get_by_label("1 canary");
    h.get_by_label("2 fleet");
    h.get_by_label("current");
    for metric in [
        "crash",
        "reconnect_failure",
        "install_failure",
        "boot_failure",
        "silent",
    ] {
        h.get_by_label(&format!("{metric} health plot"));
    }
    let line = label_text(&h, "install_failure: updated ");
    assert!(
        line.contains("% of the devices judged · tolerated ×2"),
        "{line}"
    );
    h.get_by_label("adoption by model plot");
    // No reason, no command.
    assert!(
        h.get_by_label("Override the gate")
            .accesskit_node()
            .is_disabled()
    );
    h.get_by_label_contains("Type a reason to enable the commands.");
    h.get_by_label("Reason:").focus();
    h.run_steps(1);
    h.get_by_label("Reason:")
        .type_text("install failures are the depot's proxy, not the release");
    settle(&mut h);
    assert!(
        !h.get_by_label("Override the gate")
            .accesskit_node()
            .is_disabled()
    );
    // The stand-in engine: checks what arrives and answers as the engine would.
    let engine = std::thread::spawn(move || {
        let request = commands.blocking_recv().expect("a command");
        let answer = (request.operator.clone(), request.command.clone());
        let _ = request.reply.send(Ok(Phase::Running { wave: 0 }));
        answer
    });
    h.get_by_label("Override the gate").click();
    settle(&mut h);
    let (operator, command) = engine.join().unwrap();
    assert_eq!(operator, convoy::gui::steer::operator_name());
    assert_eq!(
        command,
        OperatorCommand::Override {
            reason: "install failures are the depot's proxy, not the release".into()
        }
    );
    wait_for(&mut h, "Answer to override by ");
    let answer = label_text(&h, "Answer to override by ");
    assert!(
        answer.ends_with(&format!("{ROLLOUT} is now running wave 1")),
        "{answer}"
    );
    assert!(
        answer.contains("install failures are the depot"),
        "{answer}"
    );
    // The field is cleared for the next command.
    assert!(
        h.get_by_label("Override the gate")
            .accesskit_node()
            .is_disabled()
    );
}

/// A release manifest for `release_id`, signed with a test key and verified: what the engine
/// takes.
fn verified_manifest(release_id: &str) -> convoy_core::manifest::VerifiedManifest {
    use convoy_core::manifest::{ArtifactDigest, SignedManifest, TrustedKeys};
    use convoy_core::release::{Artifact, ReleaseSpec};
    use convoy_core::version::Version;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let version = Version::new(2, 6, 0);
    let digest = ArtifactDigest::of_bytes("fw.img", b"firmware 2.6.0");
    let spec = ReleaseSpec {
        id: release_id.to_owned(),
        version,
        counter: 60,
        hardware: vec!["T300".to_owned()],
        provides: [("firmware", version)].into_iter().collect(),
        requires: Vec::new(),
        artifacts: vec![Artifact {
            name: "fw.img".to_owned(),
            url: "fw.img".to_owned(),
            length_bytes: 14,
            sha256: digest.sha256,
        }],
        expires: NOW.plus_secs(30 * 86_400),
    };
    let bytes = SignedManifest::sign(spec, None, &key)
        .unwrap()
        .to_json_bytes();
    let trust = TrustedKeys::from_keys([&key.verifying_key()]);
    convoy_core::manifest::verify(&bytes, &trust, NOW).unwrap()
}

/// The walk with the real engine: the gate-paused rollout resumed by an engine run in this
/// process over the embedded broker, held paused (`WhenPaused::Hold`) and registered with the
/// console as the demo's run is. The override typed in the monitor reaches the engine, which
/// applies it (the canary runs again); its answer shows, and the monitor's next reading of the
/// log the engine extended says so.
#[test]
fn an_override_from_the_monitor_resumes_a_real_engine_run_held_by_a_gate() {
    use convoy::engine::{self, EngineControl, EngineOptions, StartMode, WhenPaused};
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("monitor.db");
    write_gate_paused_rollout(&cache, &fleet);
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let addr = std::net::SocketAddr::new(ip, convoy::link::broker::pick_free_port(ip).unwrap());
    let broker = convoy::link::broker::EmbeddedBroker::start(addr).unwrap();
    let (backend, _feed) = Backend::fixture(fleet, cache.clone());
    let (handle, commands) = control_channel(ROLLOUT, 4);
    backend.engines.as_ref().unwrap().register(handle);
    let options = EngineOptions {
        db: cache,
        link: convoy::link::mqtt::LinkConfig::new(&broker.url(), "monitor-test-engine"),
        topics: convoy::link::protocol::Topics::default_prefix(),
        manifest: verified_manifest("t300-2.6.0"),
        rollout_id: ROLLOUT.into(),
        // Resuming takes the waves, gates and path from the log.
        waves: Vec::new(),
        gates: convoy_core::gates::GatePolicy::default(),
        path: convoy_core::rollout::ChangePath::Standard,
        requested_by: "alice".into(),
        approvers: Vec::new(),
        time_scale: 1.0,
        start: NOW,
        sample_period_secs: 900,
        max_report_gap_secs: engine::health::DEFAULT_MAX_GAP_SECS,
        max_wall: None,
        resend_after: std::time::Duration::from_secs(5),
    };
    let control = EngineControl {
        commands: Some(commands),
        when_paused: WhenPaused::Hold,
        start: StartMode::Resume,
        started_by: Some("monitor-test".into()),
        ..EngineControl::default()
    };
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    // The engine's future holds the cache connection (not `Send`): its own thread, as the
    // demo runs it.
    let run = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(engine::run_with(options, control, Some(stop_rx)))
    });
    let mut h = common::console(backend, [1400.0, 1700.0]);
    settle(&mut h);
    h.state_mut().send(UiCommand::Show(View::Monitor));
    wait_for(&mut h, "Verdict: paused at wave 1 by a gate");
    h.get_by_label("Reason:").focus();
    h.run_steps(1);
    h.get_by_label("Reason:")
        .type_text("the depot's proxy fails installs, not the release");
    settle(&mut h);
    h.get_by_label("Override the gate").click();
    settle(&mut h);
    wait_for(&mut h, "Answer to override by ");
    let answer = label_text(&h, "Answer to override by ");
    assert!(
        answer.ends_with(&format!("{ROLLOUT} is now running wave 1")),
        "the engine applied it: {answer}"
    );
    // The engine recorded it; the monitor's next reading of the log shows the rollout running.
    wait_for(&mut h, "Verdict: running wave 1");
    assert!(!run.is_finished(), "the engine still runs the rollout");
    let _ = stop.send(());
    let report = run.join().unwrap().unwrap();
    assert_eq!(serde_json::to_value(report.final_state).unwrap(), "stopped");
    let store =
        convoy::store::Store::open_existing(dir.path().join("monitor.db").as_path()).unwrap();
    let timeline = store.timeline(ROLLOUT).unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.cause.contains("the depot's proxy fails installs")),
        "the override is on the timeline with its reason"
    );
}

/// A rollout no engine of this console runs: the buttons stay disabled and say why.
#[test]
fn a_rollout_this_console_does_not_run_cannot_be_steered_and_says_why() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("monitor.db");
    write_gate_paused_rollout(&cache, &fleet);
    let (backend, _feed) = Backend::fixture(fleet, cache);
    let mut h = common::console(backend, [1400.0, 1200.0]);
    settle(&mut h);
    h.state_mut().send(UiCommand::Show(View::Monitor));
    wait_for(&mut h, "Verdict: ");
    h.get_by_label("Reason:").focus();
    h.run_steps(1);
    h.get_by_label("Reason:").type_text("a reason");
    settle(&mut h);
    let why = label_text(&h, "Cannot steer from here: ");
    assert!(why.contains("not run by this console"), "{why}");
    for button in ["Pause", "Resume", "Override the gate", "Roll back", "Abort"] {
        assert!(
            h.get_by_label(button).accesskit_node().is_disabled(),
            "{button}"
        );
    }
}

/// The map coloured by rollout state: the legend names the monitor's rollout and counts its
/// devices by state, the devices outside it apart.
#[test]
fn the_map_colours_devices_by_their_state_in_the_monitored_rollout() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("monitor.db");
    write_gate_paused_rollout(&cache, &fleet);
    let (mut h, _commands) = monitor_harness(fleet, cache, 900.0);
    h.state_mut().send(UiCommand::SetColorMode(
        convoy::gui::model::ColorMode::RolloutState,
    ));
    h.state_mut().send(UiCommand::Show(View::Map));
    settle(&mut h);
    wait_for(&mut h, &format!("Rollout state of {ROLLOUT}:"));
    // Every device of the second wave is planned and not offered: 400 of them.
    wait_for(&mut h, "planned, not offered 400");
    let counts = &h.state().derived.counts_all;
    assert_eq!(counts[0], 0, "every fixture device is in the rollout");
    assert_eq!(counts[1], 400);
    assert_eq!(
        counts[2..].iter().sum::<u32>(),
        100,
        "the canary: {counts:?}"
    );
    assert!(counts[5] > 0, "install failures show as failed: {counts:?}");
}

/// The monitor's snapshot image: the gate-paused rollout, its evidence, waves, adoption and
/// health plots. `UPDATE_SNAPSHOTS=1` rewrites it.
#[test]
fn snapshot_of_the_monitor() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("monitor.db");
    write_gate_paused_rollout(&cache, &fleet);
    let (mut h, _commands) = monitor_harness(fleet, cache, 1500.0);
    wait_for(&mut h, "Verdict: ");
    h.state_mut().dismiss_toasts();
    settle(&mut h);
    h.snapshot("monitor");
}

/// Issue 19: a click two pixels below the reason field sent a rollback. Roll back and Abort
/// now wait for the rollout's id typed again; a wrong id keeps Confirm disabled, Cancel drops
/// the command, and only Confirm sends it.
#[test]
fn roll_back_and_abort_wait_for_the_rollout_id_typed_again() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("monitor.db");
    write_gate_paused_rollout(&cache, &fleet);
    let (mut h, mut commands) = monitor_harness(fleet, cache, 1700.0);
    wait_for(&mut h, "Verdict: ");
    h.get_by_label("Reason:").focus();
    h.run_steps(1);
    h.get_by_label("Reason:")
        .type_text("crash loop on T300 rev C");
    settle(&mut h);
    // Abort, then Cancel: nothing is sent.
    h.get_by_label("Abort").click();
    settle(&mut h);
    h.get_by_label_contains(&format!(
        "Abort of rollout {ROLLOUT}? This cannot be undone."
    ));
    h.get_by_label("Cancel").click();
    settle(&mut h);
    assert!(h.query_by_label_contains("This cannot be undone").is_none());
    assert!(
        commands.try_recv().is_err(),
        "a cancelled abort is not sent"
    );
    // Roll back: a wrong id keeps Confirm disabled.
    h.get_by_label("Roll back").click();
    settle(&mut h);
    let confirm = "Confirm: Roll back the current wave";
    assert!(h.get_by_label(confirm).accesskit_node().is_disabled());
    h.get_by_label("Rollout id:").focus();
    h.run_steps(1);
    h.get_by_label("Rollout id:").type_text("ro-other");
    settle(&mut h);
    assert!(h.get_by_label(confirm).accesskit_node().is_disabled());
    assert!(
        commands.try_recv().is_err(),
        "nothing sent before the confirmation"
    );
    // The right id enables it, and Confirm sends the rollback.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_label("Rollout id:").type_text(ROLLOUT);
    settle(&mut h);
    assert!(!h.get_by_label(confirm).accesskit_node().is_disabled());
    let engine = std::thread::spawn(move || {
        let request = commands.blocking_recv().expect("a command");
        let command = request.command.clone();
        let _ = request.reply.send(Ok(Phase::RolledBack));
        command
    });
    h.get_by_label(confirm).click();
    settle(&mut h);
    let command = engine.join().unwrap();
    assert!(
        matches!(command, OperatorCommand::RollBack { ref reason, .. } if reason == "crash loop on T300 rev C"),
        "{command:?}"
    );
}

/// Issue 19: after a gate stop every button stayed enabled and most were refused. The monitor
/// enables only what the rollout's state machine accepts now (here, paused by a gate: override,
/// roll back, exclude, abort), says the way forward in words, and sends an exclusion with its
/// selector and reason.
#[test]
fn after_a_gate_stop_the_monitor_enables_only_what_the_rollout_accepts_and_sends_an_exclusion() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("monitor.db");
    write_gate_paused_rollout(&cache, &fleet);
    let (mut h, mut commands) = monitor_harness(fleet, cache, 1700.0);
    wait_for(&mut h, "Verdict: ");
    let way = label_text(&h, "Stopped: ");
    assert!(
        way.contains("Next: override the gate with a reason, exclude what failed"),
        "{way}"
    );
    h.get_by_label("Reason:").focus();
    h.run_steps(1);
    h.get_by_label("Reason:")
        .type_text("hold the depot's vans until the fix");
    settle(&mut h);
    let disabled = |h: &Harness<'static, ConsoleApp>, label: &str| {
        h.get_by_label(label).accesskit_node().is_disabled()
    };
    // What a gate stop accepts, and what it does not.
    assert!(!disabled(&h, "Override the gate"));
    assert!(!disabled(&h, "Roll back"));
    assert!(!disabled(&h, "Abort"));
    assert!(disabled(&h, "Resume"), "a gate stop is not resumed");
    assert!(disabled(&h, "Pause"), "it is paused already");
    assert!(
        disabled(&h, "Continue with the next wave"),
        "the wave was not rolled back"
    );
    // An exclusion needs a selector.
    assert!(disabled(&h, "Exclude from the rest"));
    h.get_by_label("Exclude:").focus();
    h.run_steps(1);
    h.get_by_label("Exclude:").type_text("model:T300 hw_rev:C");
    settle(&mut h);
    assert!(!disabled(&h, "Exclude from the rest"));
    let engine = std::thread::spawn(move || {
        let request = commands.blocking_recv().expect("a command");
        let command = request.command.clone();
        let _ = request.reply.send(Ok(request_phase()));
        command
    });
    h.get_by_label("Exclude from the rest").click();
    settle(&mut h);
    assert_eq!(
        engine.join().unwrap(),
        OperatorCommand::Exclude {
            selector: "model:T300 hw_rev:C".into(),
            reason: "hold the depot's vans until the fix".into()
        }
    );
    wait_for(&mut h, "Answer to exclude by ");
}

/// The phase a stand-in engine answers an exclusion with: still paused by the gate.
fn request_phase() -> Phase {
    Phase::Paused {
        wave: 0,
        reason: "install_failure".into(),
        by_gate: true,
        rolled_back: false,
        soak_until: None,
    }
}

/// Issue 20: a rollout with a prerequisite chain (bootloader, then modem, then the target) in
/// which some devices confirmed their steps, some are installing and five failed the
/// bootloader's install. The monitor shows the chain wave's progress step by step and the
/// devices stopped at the bootloader, counted and named (snapshot `monitor_chains`).
#[test]
fn the_monitor_shows_chain_progress_and_the_devices_stopped_at_a_prerequisite() {
    use convoy_core::rollout::{
        ChangePath, DeviceReport, DeviceState, RolloutAction, RolloutSpec, WaveChain, WaveSpec,
    };
    const BL: &str = "t300-bl-2.0.1";
    const MODEM: &str = "t300-modem-1.3.0";
    const ID: &str = "ro-chains";
    let fleet = fixture();
    let mut ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    let start = Timestamp::from_secs(NOW.secs() - 86_400);
    let spec = RolloutSpec {
        id: ID.into(),
        release_id: "t300-2.5.0".into(),
        requested_by: "alice".into(),
        waves: vec![
            WaveSpec {
                name: "canary".into(),
                device_ids: ids[..10].to_vec(),
                soak_secs: 0,
            },
            WaveSpec {
                name: "after-prerequisites-1".into(),
                device_ids: ids[10..30].to_vec(),
                soak_secs: 0,
            },
        ],
        gates: convoy_core::gates::GatePolicy::default(),
        path: ChangePath::SingleOperator,
    };
    let mut r = convoy_core::rollout::Rollout::new(start, spec, &fleet).unwrap();
    r.approve(start, "alice").unwrap();
    r.set_chains(
        start,
        vec![WaveChain {
            wave: 1,
            releases: vec![BL.into(), MODEM.into()],
        }],
    )
    .unwrap();
    // The canary installs the target and the chain wave opens.
    r.handle_timeout(start);
    let Some(RolloutAction::Offer { device_ids, .. }) = r.poll_action() else {
        panic!("the canary starts");
    };
    let mut at = start.plus_secs(60);
    for id in &device_ids {
        for state in [
            DeviceState::Downloading,
            DeviceState::Verified,
            DeviceState::Installing,
            DeviceState::Rebooting,
            DeviceState::Healthy,
        ] {
            r.handle_report(
                at,
                DeviceReport {
                    device_id: id.clone(),
                    state,
                },
            )
            .unwrap();
        }
    }
    for _ in 0..200 {
        at = at.plus_secs(600);
        r.handle_timeout(at);
        if matches!(r.phase(), Phase::Running { wave: 1 }) {
            break;
        }
    }
    assert_eq!(r.phase(), &Phase::Running { wave: 1 });
    let chained = ids[10..30].to_vec();
    r.chain_offer(at, &chained).unwrap();
    // Five fail the bootloader, ten confirm it, five are still installing it.
    for id in &chained[..5] {
        r.handle_prerequisite_report(at, id, BL, DeviceState::Failed, Some("install failed"))
            .unwrap();
    }
    for id in &chained[5..15] {
        r.handle_prerequisite_report(at, id, BL, DeviceState::Healthy, None)
            .unwrap();
    }
    r.chain_offer(at, &chained[5..15]).unwrap();
    // Four of them confirm the modem and are offered the target.
    for id in &chained[5..9] {
        r.handle_prerequisite_report(at, id, MODEM, DeviceState::Healthy, None)
            .unwrap();
    }
    r.chain_offer(at, &chained[5..9]).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("chains.db");
    {
        let mut store = convoy::store::Store::open(&cache).unwrap();
        store.replace_fleet(&fleet, None).unwrap();
        store.append_rollout_log(ID, 0, r.events()).unwrap();
        store
            .append_event(
                ID,
                start,
                "rollout.created",
                "alice: created",
                &serde_json::json!({"release": "t300-2.5.0", "requested_by": "alice", "path": "single_operator",
                    "waves": [{"name": "canary", "devices": 10}, {"name": "after-prerequisites-1", "devices": 20}]}),
            )
            .unwrap();
    }
    let (backend, _feed) = Backend::fixture(fleet, cache);
    let mut h = common::console(backend, [1400.0, 1500.0]);
    settle(&mut h);
    h.state_mut().send(UiCommand::Show(View::Monitor));
    settle(&mut h);
    wait_for(&mut h, "Prerequisite chains");
    assert_eq!(
        label_text(&h, "after-prerequisites-1: 20 devices"),
        format!(
            "after-prerequisites-1: 20 devices -> {BL} confirmed 10 (5 installing) -> {MODEM} confirmed 4 (6 installing) -> target offered 4 · 5 stopped at a prerequisite"
        )
    );
    wait_for(&mut h, "Stopped at a prerequisite: 5 devices");
    let named = label_text(&h, &format!("at {BL}: 5 ("));
    for id in &chained[..5] {
        assert!(named.contains(id.as_str()), "{id} named: {named}");
    }
    for id in &chained[5..] {
        assert!(!named.contains(id.as_str()), "{id} not stopped: {named}");
    }
    h.state_mut().dismiss_toasts();
    settle(&mut h);
    h.snapshot("monitor_chains");
}
