//! The console harness the UI test files share: the real [`ConsoleApp`] on a fixture fleet,
//! offline, with a fixed clock.
#![allow(dead_code)] // Each test file uses its own part of it.
#![allow(clippy::unwrap_used)] // Tests: a failure is the answer.

use convoy::gui::backend::FixtureFeed;
use convoy::gui::{Backend, Clock, ConsoleApp};
use convoy_core::fleet::Fleet;
use convoy_core::gates::GateOutcome;
use convoy_core::rollout::EventKind as K;
use convoy_core::rollout::sim::{Fault, FaultKind, SimConfig, SimFleet, SimOutcome};
use convoy_core::rollout::{ChangePath, Rollout, RolloutSpec, WaveSpec};
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};
use std::path::Path;

/// The fixed "now" of every test.
pub const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);
pub const DEVICES: usize = 500;

pub fn fixture() -> Fleet {
    generate(&SynthOptions {
        devices: DEVICES,
        seed: 5,
        now: NOW,
    })
}

/// The shared harness: the real app on the fixture, offline, with a fixed clock.
pub fn harness() -> (Harness<'static, ConsoleApp>, FixtureFeed, Fleet) {
    let fleet = fixture();
    let (backend, feed) = Backend::fixture(fleet.clone(), "fixture.db".into());
    let mut h = console(backend, [1400.0, 900.0]);
    settle(&mut h);
    (h, feed, fleet)
}

/// The one way the UI tests build the console: the real [`ConsoleApp`] on `backend`, with no
/// tile source and the fixed clock [`NOW`], in a window of `size` points.
pub fn console(backend: Backend, size: [f32; 2]) -> Harness<'static, ConsoleApp> {
    Harness::builder()
        .with_size(size)
        .build_eframe(move |cc| ConsoleApp::new(&cc.egui_ctx, None, backend, Clock::Fixed(NOW)))
}

/// A few frames: events drained, commands applied, derived data refreshed and drawn.
pub fn settle(h: &mut Harness<'static, ConsoleApp>) {
    h.run_steps(4);
}

/// Runs frames until a label containing `text` shows (workers answer on their own threads, the
/// monitor and the war room read every few seconds), or fails after half a minute: a bound on
/// waiting for an answer, not a measurement.
pub fn wait_for(h: &mut Harness<'static, ConsoleApp>, text: &str) {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(30) {
        if h.query_by_label_contains(text).is_some() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        h.run_steps(1);
    }
    panic!("no label containing {text:?} ever appeared");
}

/// As [`wait_for`], for a label that is exactly `label`.
pub fn wait_for_label(h: &mut Harness<'static, ConsoleApp>, label: &str) {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(30) {
        if h.query_by_label(label).is_some() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        h.run_steps(1);
    }
    panic!("{label:?} never appeared");
}

/// Points at the widget named `label`, clicks it, and lets the frame apply it.
pub fn click(h: &mut Harness<'static, ConsoleApp>, label: &str) {
    h.get_by_label(label).hover();
    h.run_steps(1);
    h.get_by_label(label).click();
    settle(h);
}

/// Replaces the text of the field named `label` with `text`, as a user would.
pub fn fill(h: &mut Harness<'static, ConsoleApp>, label: &str, text: &str) {
    h.get_by_label(label).focus();
    h.run_steps(1);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_label(label).type_text(text);
    settle(h);
}

/// The whole texts of the labels containing `text`.
pub fn label_texts(h: &Harness<'static, ConsoleApp>, text: &str) -> Vec<String> {
    h.query_all_by_label_contains(text)
        .map(|node| {
            let node = node.accesskit_node();
            node.label().or_else(|| node.value()).unwrap_or_default()
        })
        .collect()
}

/// The whole text of the one label containing `text`.
pub fn label_text(h: &Harness<'static, ConsoleApp>, text: &str) -> String {
    let all = label_texts(h, text);
    assert_eq!(all.len(), 1, "labels containing {text:?}: {all:#?}");
    all.into_iter().next().unwrap_or_default()
}

/// A rollout the core plays out on the fixture fleet until a gate stops it.
pub struct GateStop<'a> {
    pub rollout_id: &'a str,
    pub release_id: &'a str,
    /// The rollout's devices in wave order: the first 100 are the canary, the rest the fleet.
    pub device_ids: Vec<String>,
    pub start: Timestamp,
    pub fault: FaultKind,
    pub telemetry_every_secs: i64,
    /// How long the simulated fleet may run before the gate must have stopped it.
    pub run_secs: i64,
}

/// Plays `scenario` out (requested by alice, approved by bob and carol on the standard path,
/// the default gates) and writes it to `cache` as the engine writes it: the fleet, the
/// replayable log, and beside it the story (every event but device states, telemetry and
/// routine checks; gate looks only when they decided something).
pub fn write_gate_stop(
    cache: &Path,
    fleet: &Fleet,
    scenario: GateStop<'_>,
) -> (Rollout, SimOutcome) {
    let GateStop {
        rollout_id,
        release_id,
        device_ids: ids,
        start,
        fault,
        telemetry_every_secs,
        run_secs,
    } = scenario;
    let waves = ["canary", "fleet"];
    let spec = RolloutSpec {
        id: rollout_id.into(),
        release_id: release_id.into(),
        requested_by: "alice".into(),
        waves: vec![
            WaveSpec {
                name: waves[0].into(),
                device_ids: ids[..100].to_vec(),
                soak_secs: 86_400,
            },
            WaveSpec {
                name: waves[1].into(),
                device_ids: ids[100..].to_vec(),
                soak_secs: 86_400,
            },
        ],
        gates: convoy_core::gates::GatePolicy::default(),
        path: ChangePath::Standard,
    };
    let mut rollout = Rollout::new(start, spec, fleet).unwrap();
    rollout.approve(start, "bob").unwrap();
    rollout.approve(start, "carol").unwrap();
    let config = SimConfig {
        faults: vec![Fault {
            attribute: None,
            kind: fault,
        }],
        telemetry_every_secs,
        ..SimConfig::default()
    };
    let mut sim = SimFleet::new(fleet, &rollout, config, start);
    let out = sim.run(&mut rollout, start, start.plus_secs(run_secs));
    assert!(out.stopped_by_gate, "{out:?}");
    let mut store = convoy::store::Store::open(cache).unwrap();
    store.replace_fleet(fleet, None).unwrap();
    store
        .append_rollout_log(rollout_id, 0, rollout.events())
        .unwrap();
    store
        .append_event(
            rollout_id,
            start,
            "rollout.created",
            "alice: created",
            &serde_json::json!({"release": release_id, "requested_by": "alice", "path": "standard",
                "waves": [{"name": waves[0], "devices": 100}, {"name": waves[1], "devices": ids.len() - 100}]}),
        )
        .unwrap();
    for e in rollout.events() {
        let value = || serde_json::to_value(&e.kind).unwrap();
        let (kind, payload) = match &e.kind {
            K::GateChecked {
                wave,
                outcome,
                report,
            } if *outcome != GateOutcome::Continue => (
                "gate.decision",
                serde_json::json!({"wave": waves[*wave], "outcome": outcome, "report": report}),
            ),
            K::Approval { .. } => ("approval", value()),
            K::Approved => ("rollout.approved", value()),
            K::WaveStarted { .. } => ("wave.started", value()),
            K::SoakStarted { .. } => ("soak.started", value()),
            K::Paused { .. } => ("rollout.paused", value()),
            K::RollbackStarted { .. } => ("rollback.started", value()),
            K::RollbackFinished { .. } => ("rollback.finished", value()),
            _ => continue,
        };
        store
            .append_event(rollout_id, e.at, kind, "gate", &payload)
            .unwrap();
    }
    (rollout, out)
}
