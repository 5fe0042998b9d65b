//! Benchmark: gate evaluation on a 1,000,000-device rollout, and the false-stop rate.
//!
//! `cargo run --release -p convoy --example bench_gates [-- DEVICES RUNS]`
//!
//! Part 1 builds a rollout over DEVICES devices (default 1,000,000), confirms its first wave,
//! feeds one telemetry sample from every device, and times one gate tick (every gate, whole
//! wave and every stratum, from the running aggregates). Part 2 simulates RUNS whole rollouts
//! (default 200) on a 3,000-device fleet and counts how often the gates stop a good release
//! (the false-stop rate) and how often they stop a bad one, and in which wave (power). Looks
//! are driven by evidence as the engine drives them: the simulated rollout's timeout includes
//! the look that each report asks for (issue 18).

use convoy_core::gates::GatePolicy;
use convoy_core::rollout::sim::{Fault, FaultKind, SimConfig, SimFleet};
use convoy_core::rollout::{
    Cause, ChangePath, DeviceReport, DeviceState, EventKind, HealthSample, Phase, Rollout,
    RolloutSpec, TelemetryReport, WaveSpec,
};
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use std::time::Instant;

const START: Timestamp = Timestamp::from_secs(1_795_392_000);

fn arg(n: usize, default: usize) -> usize {
    match std::env::args().nth(n).map(|a| a.parse()) {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            eprintln!("error: argument {n} must be a number: {e}");
            std::process::exit(2);
        }
        None => default,
    }
}

fn waves(ids: &[String], canary: usize, early: usize) -> Vec<WaveSpec> {
    let wave = |name: &str, ids: &[String], soak_secs| WaveSpec {
        name: name.into(),
        device_ids: ids.to_vec(),
        soak_secs,
    };
    vec![
        wave("canary", &ids[..canary], 86_400),
        wave("early", &ids[canary..canary + early], 43_200),
        wave("everyone", &ids[canary + early..], 43_200),
    ]
}

fn approved(spec: RolloutSpec, fleet: &convoy_core::fleet::Fleet) -> Rollout {
    let mut r = match Rollout::new(START, spec, fleet) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    for who in ["bob", "carol"] {
        if let Err(e) = r.approve(START, who) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
    r.handle_timeout(START);
    r
}

fn tick_bench(devices: usize, stratify_by: &[&str]) {
    let fleet = generate(&SynthOptions {
        devices,
        seed: 1,
        now: START,
    });
    let ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
    let gates = GatePolicy {
        stratify_by: stratify_by.iter().map(|s| (*s).to_owned()).collect(),
        ..GatePolicy::default()
    };
    let spec = RolloutSpec {
        id: "bench".into(),
        release_id: "bench".into(),
        requested_by: "alice".into(),
        waves: waves(&ids, devices / 100, devices / 10),
        gates,
        path: ChangePath::Standard,
    };
    let mut r = approved(spec, &fleet);
    let wave0 = r.spec().waves[0].device_ids.clone();
    let started = Instant::now();
    for (k, id) in wave0.iter().enumerate() {
        let report = DeviceReport {
            device_id: id.clone(),
            state: DeviceState::Healthy,
        };
        if let Err(e) = r.handle_report(START.plus_secs(600 + (k % 600) as i64), report) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
    let report_secs = started.elapsed().as_secs_f64();
    let now = START.plus_secs(3600);
    let started = Instant::now();
    for (k, id) in ids.iter().enumerate() {
        let sample = HealthSample {
            period_secs: 3600,
            crashes: u32::from(k % 500 == 0),
            reconnect_failures: u32::from(k % 100 == 0),
            support_contacts: 0,
            reconnect_secs: Some(15.0 + (k % 10) as f64),
            battery_drain_pct_per_hour: Some(0.8 + (k % 5) as f64 / 10.0),
            custom: Vec::new(),
        };
        let t = TelemetryReport {
            device_id: id.clone(),
            sample,
        };
        if let Err(e) = r.handle_telemetry(now, t) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
    let telemetry_secs = started.elapsed().as_secs_f64();
    // One gate tick: every gate over the whole wave and every stratum. Best of 50.
    let mut best = f64::MAX;
    let mut findings = 0;
    for _ in 0..50 {
        let started = Instant::now();
        let report = r.evaluate_gates();
        best = best.min(started.elapsed().as_secs_f64());
        findings = report.map_or(0, |rep| rep.findings.len());
    }
    // A full `handle_timeout` look (silence queue, gate tick, event) on the same state.
    let started = Instant::now();
    r.handle_timeout(START.plus_secs(3600));
    let look_secs = started.elapsed().as_secs_f64();
    println!(
        "| {devices} | {} | {} | {:.3} | {:.3} | {:.0} | {:.3} | {findings} |",
        stratify_by.join("×"),
        r.state().strata.len(),
        best * 1e3,
        look_secs * 1e3,
        devices as f64 / telemetry_secs,
        report_secs * 1e3 / wave0.len() as f64 * 1e3,
    );
}

struct RateRow {
    label: &'static str,
    runs: usize,
    stops: usize,
    canary_stops: usize,
    /// Stops in the second and third waves.
    later_stops: [usize; 2],
    mean_secs: f64,
    /// What stopped the runs that stopped, counted.
    reasons: String,
}

/// The gate (metric, scope, status) behind a rollout's first gate stop.
fn stop_reason(r: &Rollout) -> String {
    let mut last_findings = String::new();
    for e in r.events() {
        match &e.kind {
            EventKind::GateChecked {
                report: Some(rep), ..
            } => {
                let failed: Vec<String> = rep
                    .failures()
                    .map(|f| {
                        format!(
                            "{} {}",
                            f.metric,
                            f.stratum.as_deref().unwrap_or("whole wave")
                        )
                    })
                    .collect();
                last_findings = failed.join(", ");
            }
            EventKind::Paused {
                by_gate: true,
                reason,
            } => {
                return if reason.starts_with("still failing") {
                    format!("hold gate failing after holds: {reason}")
                } else {
                    format!("pause: {last_findings}")
                };
            }
            EventKind::RollbackStarted { .. } if e.cause == Cause::Gate => {
                return format!("rollback: {last_findings}");
            }
            _ => {}
        }
    }
    "unknown".into()
}

fn rates(runs: usize, label: &'static str, config: impl Fn(u64) -> SimConfig) -> RateRow {
    let fleet = generate(&SynthOptions {
        devices: 3000,
        seed: 7,
        now: START,
    });
    let rare: Vec<String> = fleet
        .devices
        .iter()
        .filter(|d| d.model == "T300" && d.hw_rev == "C")
        .take(5)
        .map(|d| d.id.clone())
        .collect();
    let mut ids: Vec<String> = rare.clone();
    ids.extend(
        fleet
            .devices
            .iter()
            .map(|d| d.id.clone())
            .filter(|id| !rare.contains(id)),
    );
    let mut wave_specs = waves(&ids, 50, 500);
    wave_specs[0].device_ids.sort();
    let spec = RolloutSpec {
        id: "sim".into(),
        release_id: "sim".into(),
        requested_by: "alice".into(),
        waves: wave_specs,
        gates: GatePolicy::default(),
        path: ChangePath::Standard,
    };
    let (mut stops, mut canary_stops, mut later_stops) = (0, 0, [0, 0]);
    let mut reasons: Vec<String> = Vec::new();
    let started = Instant::now();
    for run in 0..runs {
        let mut r = approved(spec.clone(), &fleet);
        let mut sim = SimFleet::new(&fleet, &r, config(run as u64 + 1), START);
        let out = sim.run(&mut r, START, START.plus_secs(30 * 86_400));
        if out.stopped_by_gate {
            stops += 1;
            reasons.push(stop_reason(&r));
            match out.stopped_in_wave {
                Some(0) => canary_stops += 1,
                Some(1) => later_stops[0] += 1,
                Some(_) => later_stops[1] += 1,
                None => {}
            }
        } else if out.phase != Phase::Completed {
            eprintln!("run {run} of {label} neither stopped nor completed: {out:?}");
        }
    }
    reasons.sort();
    let mut counted: Vec<(String, usize)> = Vec::new();
    for r in reasons {
        match counted.last_mut() {
            Some((last, n)) if *last == r => *n += 1,
            _ => counted.push((r, 1)),
        }
    }
    RateRow {
        reasons: counted
            .iter()
            .map(|(r, n)| format!("{n}× {r}"))
            .collect::<Vec<_>>()
            .join("; "),
        label,
        runs,
        stops,
        canary_stops,
        later_stops,
        mean_secs: started.elapsed().as_secs_f64() / runs as f64,
    }
}

fn main() {
    let devices = arg(1, 1_000_000);
    let runs = arg(2, 200);
    println!(
        "Gate tick on one rollout (canary = 1% confirmed healthy, one telemetry sample from every device):\n"
    );
    println!(
        "| devices | strata by | strata | gate tick (ms) | handle_timeout look (ms) | telemetry ingest (samples/s) | report (µs each) | findings |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    tick_bench(devices, &["model", "hw_rev"]);
    tick_bench(devices, &["model", "hw_rev", "region"]);

    println!(
        "\nWhole simulated rollouts (3,000 devices; canary 50 with five T300/C, then 500, then 2,450):\n"
    );
    println!(
        "| scenario | runs | stopped by a gate | in the canary | in wave 2 (500) | in wave 3 (2,450) | stop rate | s per run |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let rows = [
        rates(runs, "good release, default noise", |seed| SimConfig {
            seed,
            ..SimConfig::default()
        }),
        rates(
            runs,
            "good release, noisy devices (rate spread σ=0.8, 1% silent)",
            |seed| SimConfig {
                seed,
                rate_spread_sigma: 0.8,
                silent_ratio: 0.01,
                ..SimConfig::default()
            },
        ),
        rates(runs, "hw_rev C crash-loops", |seed| SimConfig {
            seed,
            faults: vec![Fault {
                attribute: Some(("hw_rev".into(), "C".into())),
                kind: FaultKind::CrashLoop,
            }],
            ..SimConfig::default()
        }),
        rates(runs, "crash rate ×3 everywhere", |seed| SimConfig {
            seed,
            faults: vec![Fault {
                attribute: None,
                kind: FaultKind::CrashRateTimes(3.0),
            }],
            ..SimConfig::default()
        }),
        rates(runs, "battery drain +4%/h on model T500", |seed| {
            SimConfig {
                seed,
                faults: vec![Fault {
                    attribute: Some(("model".into(), "T500".into())),
                    kind: FaultKind::BatteryDrainPlus(4.0),
                }],
                ..SimConfig::default()
            }
        }),
    ];
    let mut why = Vec::new();
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.3} | {:.3} |",
            row.label,
            row.runs,
            row.stops,
            row.canary_stops,
            row.later_stops[0],
            row.later_stops[1],
            row.stops as f64 / row.runs as f64,
            row.mean_secs
        );
        why.push((row.label, row.reasons));
    }
    println!("\nWhat stopped them (gate, scope):\n");
    for (label, reasons) in why {
        println!(
            "- {label}: {}",
            if reasons.is_empty() {
                "no stops"
            } else {
                &reasons
            }
        );
    }
}
