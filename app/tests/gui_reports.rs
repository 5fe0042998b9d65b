//! The reports view (issue 8): a rollout simulated by the core, written to a real cache as the
//! engine writes it (its replayable log and its timeline), is picked from the cache's rollouts;
//! its metrics and its three drafts show facts of the record, and its timeline is exported as
//! Markdown, CSV and JSON through the typed path, byte for byte what `convoy rollout timeline`
//! prints for the same cache.

#![allow(clippy::unwrap_used)] // Tests: a failure is the answer.

mod common;

use common::{
    GateStop, NOW, click, fill, fixture, label_text, label_texts, settle, wait_for, write_gate_stop,
};
use convoy::gui::Backend;
use convoy_core::rollout::Rollout;
use convoy_core::rollout::sim::FaultKind;
use convoy_core::time::Timestamp;
use egui_kittest::kittest::Queryable as _;
use std::path::Path;

const ROLLOUT: &str = "ro-crashy";
const RELEASE: &str = "t300-2.6.0";

/// A release that crashes twenty times as often, rolled out by the core to the fixture fleet
/// and stopped by its gate; written to `cache` as the engine writes it.
fn write_crashy_rollout(cache: &Path, fleet: &convoy_core::fleet::Fleet) -> Rollout {
    let mut ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    let scenario = GateStop {
        rollout_id: ROLLOUT,
        release_id: RELEASE,
        device_ids: ids,
        start: Timestamp::from_secs(NOW.secs() - 20 * 86_400),
        fault: FaultKind::CrashRateTimes(20.0),
        telemetry_every_secs: 1800,
        run_secs: 15 * 86_400,
    };
    write_gate_stop(cache, fleet, scenario).0
}

/// What the CLI prints for `args` on `cache`.
fn cli(cache: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_convoy"))
        .args(args)
        .arg("--db")
        .arg(cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "convoy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_rollouts_report_shows_its_metrics_and_drafts_and_exports_the_clis_timeline() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("reports.db");
    let rollout = write_crashy_rollout(&cache, &fleet);
    let expected = convoy_core::metrics::rollout_metrics(&rollout);
    assert!(!expected.completed, "stopped by its gate");

    let (backend, _feed) = Backend::fixture(fleet, cache.clone());
    let mut h = common::console(backend, [1400.0, 1200.0]);
    settle(&mut h);
    click(&mut h, "Reports");
    // The history worker lists the cache's rollouts; pick ours.
    wait_for(&mut h, ROLLOUT);
    click(&mut h, ROLLOUT);
    wait_for(&mut h, &format!("Report of {ROLLOUT}"));

    // The record's facts: release, requester, path, state.
    let head = label_text(&h, &format!("Release {RELEASE} · requested by"));
    assert!(head.contains("requested by alice"), "{head}");
    assert!(head.contains("standard path"), "{head}");
    assert!(head.contains("stopped by a gate"), "{head}");
    // The metrics, folded from the engine's log as the core folds them.
    h.get_by_label(&format!(
        "Devices: {} targeted, {} healthy ({:.1} %), {} failed, {} reverted, {} silent",
        expected.targeted,
        expected.healthy,
        expected.success_ratio * 100.0,
        expected.failed,
        expected.reverted,
        expected.silent
    ));
    assert_eq!(expected.targeted, 500);
    h.get_by_label(&format!("Rollbacks: {}", expected.rollback_count));
    h.get_by_label("Time to remediate: not completed");
    h.get_by_label_contains("Patch lead time (95 % healthy): ");
    h.get_by_label(&format!(
        "Over 1 rollout(s) with an engine log: 0 completed, {} rollback(s)",
        expected.rollback_count
    ));
    h.get_by_label("Adoption by cohort");
    h.state_mut().dismiss_toasts();
    settle(&mut h);
    h.snapshot("reports");

    // The three drafts and the support tree: what `convoy rollout comms` writes, shown whole.
    for (tab, audience) in [
        ("Internal", "internal"),
        ("Customer", "customer"),
        ("Regulator", "regulator"),
        ("Support tree", "support"),
    ] {
        click(&mut h, tab);
        let from_cli = cli(
            &cache,
            &[
                "rollout",
                "comms",
                "--rollout",
                ROLLOUT,
                "--audience",
                audience,
            ],
        );
        let first_line = from_cli.lines().next().unwrap();
        let shown = label_texts(&h, first_line);
        assert!(
            shown.contains(&from_cli),
            "the {tab} draft: {shown:#?}\nthe CLI's: {from_cli}"
        );
    }
    click(&mut h, "Internal");
    let internal = label_texts(&h, "crash")
        .into_iter()
        .find(|t| t.contains(ROLLOUT) && t.contains(RELEASE))
        .unwrap();
    // The draft states the metrics' harm (issue 19: it said 0 for a canary rolled back
    // mid-wave, whose wave never completed).
    assert!(
        internal.contains(&format!(
            "{} failed or reverted",
            expected.failed + expected.reverted
        )),
        "{internal}"
    );
    assert!(expected.failed + expected.reverted > 0);
    assert!(
        internal.contains("crash"),
        "the failing metric is named: {internal}"
    );

    // The timeline through the typed path, in each format, equal to the CLI's export.
    for (kind, format, file) in [
        ("Timeline as Markdown", "md", "t.md"),
        ("Timeline as CSV", "csv", "t.csv"),
        ("Timeline as JSON", "json", "t.json"),
    ] {
        let path = dir.path().join(file);
        click(&mut h, kind);
        fill(&mut h, "Export path", &path.display().to_string());
        click(&mut h, "Write the export");
        wait_for(&mut h, &format!("to {}", path.display()));
        h.get_by_label_contains(&format!("Wrote the timeline of {ROLLOUT}"));
        let written = std::fs::read_to_string(&path).unwrap();
        let from_cli = cli(
            &cache,
            &[
                "rollout",
                "timeline",
                "--rollout",
                ROLLOUT,
                "--format",
                format,
            ],
        );
        assert_eq!(written, from_cli, "{format}");
        assert!(written.contains("gate.decision"), "{format}");
    }

    // The draft shown, saved as Markdown.
    click(&mut h, "Regulator");
    click(&mut h, "Draft shown, as Markdown");
    let path = dir.path().join("regulator.md");
    fill(&mut h, "Export path", &path.display().to_string());
    click(&mut h, "Write the export");
    wait_for(&mut h, "Wrote the regulator draft");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        cli(
            &cache,
            &[
                "rollout",
                "comms",
                "--rollout",
                ROLLOUT,
                "--audience",
                "regulator"
            ]
        )
    );

    // A path that cannot be written says why, naming it.
    click(&mut h, "Timeline as CSV");
    let bad = dir.path().join("no-such-dir").join("t.csv");
    fill(&mut h, "Export path", &bad.display().to_string());
    click(&mut h, "Write the export");
    wait_for(&mut h, "Could not export the timeline");
    h.get_by_label_contains(&bad.display().to_string());
}

#[test]
fn a_rollout_id_that_is_not_in_the_cache_is_named_in_the_answer() {
    let fleet = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("empty.db");
    convoy::store::Store::open(&cache)
        .unwrap()
        .replace_fleet(&fleet, None)
        .unwrap();
    let (backend, _feed) = Backend::fixture(fleet, cache);
    let mut h = common::console(backend, [1400.0, 900.0]);
    settle(&mut h);
    click(&mut h, "Reports");
    fill(&mut h, "Rollout id", "ro-nowhere");
    click(&mut h, "Open report");
    wait_for(&mut h, "rollout ro-nowhere has no recorded events");
}
