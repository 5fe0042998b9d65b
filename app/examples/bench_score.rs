//! Benchmark: scoring one finding against a 1,000,000-device fleet, and listing the fleet's
//! shared-fate clusters. Prints a Markdown table for docs/BENCHMARKS.md.
//!
//! Run with `cargo run --release -p convoy --example bench_score` (optionally `-- DEVICES`).

use convoy_core::cluster::{self, ClusterOptions};
use convoy_core::risk::{self, Finding, ScoringPolicy};
use convoy_core::synth::{self, SynthOptions};
use convoy_core::time::Timestamp;
use std::time::{Duration, Instant};

const RUNS: usize = 5;

const FINDINGS: [(&str, &str); 4] = [
    (
        "t300-remote-rce",
        include_str!("../../fixtures/findings/t300-remote-rce.json"),
    ),
    (
        "k20-pos-crash",
        include_str!("../../fixtures/findings/k20-pos-crash.json"),
    ),
    (
        "s1-rev-a2-auth-bypass",
        include_str!("../../fixtures/findings/s1-rev-a2-auth-bypass.json"),
    ),
    (
        "c7-modem-reconnect",
        include_str!("../../fixtures/findings/c7-modem-reconnect.json"),
    ),
];

/// The median of `RUNS` timings of `f`, and its last result.
fn median<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        last = Some(std::hint::black_box(f()));
        times.push(start.elapsed());
    }
    times.sort();
    (times[RUNS / 2], last.expect("RUNS > 0"))
}

fn main() -> anyhow::Result<()> {
    let devices: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };
    let now = Timestamp::parse_rfc3339("2026-11-23T00:00:00Z")?;
    let start = Instant::now();
    let fleet = synth::generate(&SynthOptions {
        devices,
        seed: 1,
        now,
    });
    eprintln!(
        "generated {} devices in {:.2?}",
        fleet.len(),
        start.elapsed()
    );
    let policy = ScoringPolicy::default();

    println!("| operation | devices | affected | result | median of {RUNS} |");
    println!("| --- | ---: | ---: | --- | ---: |");
    for (name, json) in FINDINGS {
        let finding: Finding = serde_json::from_str(json)?;
        let (time, card) = median(|| risk::score(&finding, &fleet, &policy, now));
        let card = card?;
        println!(
            "| score finding `{name}` | {} | {} | {:.1} points, tier {}, {} | {:.1} ms |",
            fleet.len(),
            card.affected_devices,
            card.points,
            card.tier.number(),
            card.recommendation,
            time.as_secs_f64() * 1e3
        );
    }
    // The floor any one pass pays: touch each device's model, firmware and tags once.
    let (time, count) = median(|| {
        fleet
            .devices
            .iter()
            .filter(|d| {
                d.model == "T300"
                    && d.firmware().is_some()
                    && d.tag("carrier").is_some()
                    && d.tag("battery_chem").is_some()
            })
            .count()
    });
    println!(
        "| baseline: one pass reading model, firmware and two tags | {} | {count} | - | {:.1} ms |",
        fleet.len(),
        time.as_secs_f64() * 1e3
    );
    let (time, clusters) = median(|| cluster::clusters(&fleet, &ClusterOptions::default()));
    println!(
        "| shared-fate clusters | {} | - | {} clusters, largest {} devices | {:.1} ms |",
        fleet.len(),
        clusters.len(),
        clusters.first().map_or(0, |c| c.devices),
        time.as_secs_f64() * 1e3
    );
    Ok(())
}
