//! The core's million-device passes alone, for `perf`: generate a fleet, then plan and score
//! it a few times (the whole app's figures come from `app/examples/bench_million.rs`).
//!
//! ```sh
//! cargo run --release -p convoy_core --example profile_core -- [DEVICES] [ROUNDS]
//! ```

use convoy_core::plan::{self, PlanInput, PlanningPolicy};
use convoy_core::release::ReleaseSpec;
use convoy_core::risk::{self, Finding, ScoringPolicy};
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use std::time::Instant;

fn fixture(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The process's resident memory now and at its peak (Linux).
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU seconds this process has used (user + system, /proc/self/stat, 10 ms ticks).
fn cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let devices: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let now = Timestamp::from_secs(1_795_392_000);
    let t = Instant::now();
    let fleet = generate(&SynthOptions {
        devices,
        seed: 1,
        now,
    });
    println!(
        "generate: {:.0} ms; {}",
        t.elapsed().as_secs_f64() * 1e3,
        memory()
    );
    let release: ReleaseSpec =
        serde_json::from_str(&fixture("fixtures/releases/t300-fw-2.5.0.json")).expect("release");
    let catalog: Vec<ReleaseSpec> =
        serde_json::from_str(&fixture("fixtures/releases/catalog.json")).expect("catalog");
    let policy = PlanningPolicy::default();
    let finding: Finding =
        convoy_core::strict_json::from_str(&fixture("fixtures/findings/t300-remote-rce.json"))
            .expect("finding");
    let scoring = ScoringPolicy::default();
    for _ in 0..rounds {
        let (t, c) = (Instant::now(), cpu());
        let p = plan::plan(&PlanInput {
            fleet: &fleet,
            release: &release,
            catalog: &catalog,
            now,
            seed: 1,
            policy: &policy,
        })
        .expect("plan");
        let plan_ms = t.elapsed().as_secs_f64() * 1e3;
        let plan_cpu = (cpu() - c) * 1e3;
        let (t, c) = (Instant::now(), cpu());
        let s = risk::score(&finding, &fleet, &scoring, now).expect("score");
        let score_ms = t.elapsed().as_secs_f64() * 1e3;
        let score_cpu = (cpu() - c) * 1e3;
        println!(
            "plan: {plan_ms:.0} ms wall, {plan_cpu:.0} ms CPU ({} waves)  score: {score_ms:.0} ms wall, {score_cpu:.0} ms CPU ({:.1} points)",
            p.waves.len(),
            s.points
        );
    }
    println!("after: {}", memory());
}
