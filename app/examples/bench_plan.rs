//! Benchmark: planning a rollout (eligibility and prerequisite chains, canary, waves,
//! schedule) on synthetic fleets.
//!
//! `cargo run --release -p convoy --example bench_plan [-- DEVICES]`
//! Plans the fixture release `t300-fw-2.5.0` with the fixture catalog and the default policy
//! for fleets of 100,000 and 1,000,000 devices (or DEVICES), and prints a Markdown table.
//! Fleet generation is not timed.

use convoy_core::plan::{self, PlanInput, PlanningPolicy, eligibility};
use convoy_core::release::ReleaseSpec;
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use std::path::PathBuf;
use std::time::Instant;

fn read<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/releases")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("error: reading {}: {e}", path.display());
        std::process::exit(2);
    });
    serde_json::from_str(&text).unwrap_or_else(|e| {
        eprintln!("error: parsing {}: {e}", path.display());
        std::process::exit(2);
    })
}

/// Nanoseconds this thread has spent on a CPU, user plus system (Linux `/proc/thread-self/stat`,
/// in clock ticks of 10 ms), so that a shared, loaded machine still shows the single-core
/// cost; `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10_000_000)
}

/// Best of three runs: (wall seconds, CPU seconds of this thread). Best of three, so one slow
/// run on a shared machine does not stand for the code.
fn best_of_3(mut f: impl FnMut()) -> (f64, Option<f64>) {
    let mut wall = f64::MAX;
    let mut cpu: Option<f64> = None;
    for _ in 0..3 {
        let cpu_before = thread_cpu_ns();
        let started = Instant::now();
        f();
        wall = wall.min(started.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (cpu_before, thread_cpu_ns()) {
            let secs = b.saturating_sub(a) as f64 / 1e9;
            cpu = Some(cpu.map_or(secs, |c: f64| c.min(secs)));
        }
    }
    (wall, cpu)
}

fn secs(cpu: Option<f64>) -> String {
    cpu.map_or_else(|| "n/a".to_owned(), |s| format!("{s:.3}"))
}

fn main() {
    let sizes: Vec<usize> = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(n)) => vec![n],
        Some(Err(e)) => {
            eprintln!("error: DEVICES must be a number: {e}");
            std::process::exit(2);
        }
        None => vec![100_000, 1_000_000],
    };
    let release: ReleaseSpec = read("t300-fw-2.5.0.json");
    let catalog: Vec<ReleaseSpec> = read("catalog.json");
    let policy = PlanningPolicy::default();
    let now = Timestamp::from_secs(1_795_392_000);
    println!(
        "| devices | eligibility + chains: wall (s) | CPU (s) | whole plan: wall (s) | CPU (s) | eligible now | after prerequisites | chains | canary | waves |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for n in sizes {
        let fleet = generate(&SynthOptions {
            devices: n,
            seed: 1,
            now,
        });
        let (eligibility_secs, eligibility_cpu) = best_of_3(|| {
            let usable: Vec<&ReleaseSpec> = catalog.iter().collect();
            let e = eligibility::evaluate(&fleet, &release, usable);
            assert_eq!(e.devices.len(), n);
        });
        let input = PlanInput {
            fleet: &fleet,
            release: &release,
            catalog: &catalog,
            now,
            seed: 1,
            policy: &policy,
        };
        let plan = match plan::plan(&input) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: planning: {e}");
                std::process::exit(1);
            }
        };
        let (plan_secs, plan_cpu) = best_of_3(|| {
            let again = plan::plan(&input);
            assert!(again.is_ok_and(|p| p.waves.len() == plan.waves.len()));
        });
        let count = |s: plan::Status| {
            plan.eligibility
                .by_status
                .iter()
                .find(|c| c.status == s)
                .map_or(0, |c| c.devices)
        };
        println!(
            "| {n} | {eligibility_secs:.3} | {} | {plan_secs:.3} | {} | {} | {} | {} | {} | {} |",
            secs(eligibility_cpu),
            secs(plan_cpu),
            count(plan::Status::EligibleNow),
            count(plan::Status::AfterPrerequisites),
            plan.chains.len(),
            plan.canary.devices.len(),
            plan.waves.len(),
        );
    }
}
