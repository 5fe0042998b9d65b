//! The byte-identical guard of issue 22: plans and scorecards on generated fleets must stay
//! byte for byte what the code of 2026-12-07 (commit `c3b2e51`, before any columnar change)
//! wrote. The digests of that code's output are in `tests/fixtures/guard_digests.json`; this
//! test recomputes them and compares.
//!
//! Each case generates a fleet (`synth::generate`, at a fixed `now`), plans the fixture release
//! `t300-fw-2.5.0` with the fixture catalog and the default policies, and scores the fixture
//! findings with the default scoring policy. The digest is the SHA-256 of the exact bytes
//! `convoy plan --json` and `convoy score finding --json` print (pretty JSON and a newline,
//! through the same `ops::plans::plan_json`).
//!
//! The three 200,000-device cases run in every `cargo test`: about 6 s each in a debug build
//! (generation, planning, four scorecards), 20 s for the test on the 2-core machine.
//! To record the digests of new cases (never to paper over a difference), run with
//! `CONVOY_GUARD_PRINT=1` and `--nocapture`: the test prints what it computed.

use convoy_core::fleet::Fleet;
use convoy_core::gates::GatePolicy;
use convoy_core::plan::{self, PlanInput, PlanningPolicy};
use convoy_core::release::ReleaseSpec;
use convoy_core::risk::{self, Finding, ScoringPolicy};
use convoy_core::synth::{self, SynthOptions};
use convoy_core::time::Timestamp;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;

const NOW: &str = "2026-11-23T00:00:00Z";

const FINDINGS: [&str; 4] = [
    "t300-remote-rce",
    "k20-pos-crash",
    "s1-rev-a2-auth-bypass",
    "c7-modem-reconnect",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn now() -> Timestamp {
    Timestamp::parse_rfc3339(NOW).expect("NOW parses")
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The digests of one fleet: the plan's, then each finding's scorecard's.
fn digests(devices: usize, seed: u64) -> BTreeMap<String, String> {
    let fleet: Fleet = synth::generate(&SynthOptions {
        devices,
        seed,
        now: now(),
    });
    let read = |rel: &str| {
        std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    };
    let release: ReleaseSpec =
        serde_json::from_str(&read("fixtures/releases/t300-fw-2.5.0.json")).expect("release");
    let catalog: Vec<ReleaseSpec> =
        serde_json::from_str(&read("fixtures/releases/catalog.json")).expect("catalog");
    let policy = PlanningPolicy::default();
    let gates = GatePolicy::default();
    let plan = plan::plan(&PlanInput {
        fleet: &fleet,
        release: &release,
        catalog: &catalog,
        now: now(),
        seed,
        policy: &policy,
    })
    .expect("plan");
    let notes = convoy::ops::plans::gate_notes(&policy, &gates);
    let value = convoy::ops::plans::plan_json(&plan, &fleet, &gates, &notes).expect("plan json");
    let mut text = serde_json::to_string_pretty(&value).expect("plan text");
    text.push('\n');
    let mut out = BTreeMap::new();
    out.insert("plan".to_owned(), sha(text.as_bytes()));
    let scoring = ScoringPolicy::default();
    for name in FINDINGS {
        let finding: Finding =
            convoy_core::strict_json::from_str(&read(&format!("fixtures/findings/{name}.json")))
                .expect("finding");
        let card = risk::score(&finding, &fleet, &scoring, now()).expect("score");
        let mut text = serde_json::to_string_pretty(&card).expect("card text");
        text.push('\n');
        out.insert(format!("score {name}"), sha(text.as_bytes()));
    }
    out
}

fn check(devices: usize, seeds: &[u64]) {
    let recorded: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/guard_digests.json"))
            .expect("reading tests/fixtures/guard_digests.json"),
    )
    .expect("guard_digests.json parses");
    let print = std::env::var_os("CONVOY_GUARD_PRINT").is_some();
    let mut failures = Vec::new();
    let computed: Vec<(String, BTreeMap<String, String>)> = seeds
        .iter()
        .map(|&seed| {
            let case = format!("{devices} devices, seed {seed}");
            let got = digests(devices, seed);
            if print {
                println!(
                    "\"{case}\": {},",
                    serde_json::to_string_pretty(&got).expect("json")
                );
            }
            (case, got)
        })
        .collect();
    for (case, got) in computed {
        let want = &recorded["cases"][&case];
        assert!(
            want.is_object(),
            "no recorded digests for {case} in tests/fixtures/guard_digests.json"
        );
        for (key, digest) in &got {
            if want[key].as_str() != Some(digest.as_str()) {
                failures.push(format!("{case}: {key} is {digest}, recorded {}", want[key]));
            }
        }
        assert_eq!(
            want.as_object().map(serde_json::Map::len),
            Some(got.len()),
            "{case}: the recorded digests name other outputs"
        );
    }
    assert!(
        failures.is_empty(),
        "plans or scorecards changed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn guard_plans_and_scores_are_byte_identical_at_200k() {
    let _turn = convoy_e2e::shared();
    check(200_000, &[1, 3, 7]);
}
