//! Benchmark: how soon the engine stops the demo's bad rollout, in wall time, over a real broker.
//!
//! `cargo run --release -p convoy --example bench_stop [-- SCALE MAX_MINUTES BROKERS]`
//!
//! SCALE is the time scale of the engine and the simulated fleet (default 1: real time; the
//! console's demo runs at 60), MAX_MINUTES bounds each run (default 30), BROKERS is
//! `embedded`, `mosquitto` or `both` (default). Each run is the demo's rollout as the console
//! plans it (3,000 synthetic vehicles of seed 7, the T300 release, the canary with the rare
//! hardware revision C, which crash-loops on the release): the embedded broker or Mosquitto
//! on 127.0.0.1, the simulated fleet (`convoy::sim`) and the engine, each on its own client.
//! A plain subscriber sees every device message and every command, with its wall arrival time.
//!
//! Two figures per broker:
//! 1. Decision latency: from the device message that made the evidence decisive to the first
//!    rollback (or cancel) command seen on the wire, both timed by the plain subscriber, in
//!    wall milliseconds. Which message was decisive is found afterwards from the cache: the
//!    rollout's log is replayed up to each event until the gates first ask for a stop; that
//!    event names the device, and its last message before the command is the decisive one.
//! 2. Time to stop: from the first revision C device rebooting into the bad version to the gate
//!    decision (wall minutes: the cache's simulated times divided by the scale), with the
//!    devices and the device-hours behind the decision.
//!
//! What it deliberately is not: a test. Nothing is asserted; the figures are printed for
//! docs/BENCHMARKS.md.

use convoy::engine::{self, EngineOptions};
use convoy::link::broker::{EmbeddedBroker, pick_free_port};
use convoy::link::mqtt::{self, LinkConfig, LinkEvent, Role};
use convoy::link::protocol::Topics;
use convoy::sim::SimOptions;
use convoy::store::Store;
use convoy_core::devsim::{Faults, SimConfig};
use convoy_core::gates::{GateOutcome, GatePolicy};
use convoy_core::manifest::{self, ArtifactDigest, SignedManifest, TrustedKeys};
use convoy_core::plan::{self, PlanInput, PlanningPolicy};
use convoy_core::release::{Artifact, ReleaseSpec};
use convoy_core::rollout::{ChangePath, EventKind, Rollout, RolloutEvent};
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use ed25519_dalek::SigningKey;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every message the plain subscriber saw: topic, wall arrival, and whether it is a rollback
/// or cancel command.
type Seen = Arc<Mutex<Vec<(String, Instant, bool)>>>;

fn main() {
    let mut args = std::env::args().skip(1);
    let scale: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1.0);
    let minutes: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let brokers = args.next().unwrap_or_else(|| "both".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "| broker | time scale | final state | decisive message → rollback on the wire (wall ms) | first bad boot → decision (wall min) | engine start → decision (wall min) | T300/C devices booted / reverted at the decision | their device-hours on the new version | deciding gate |"
    );
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |");
    runtime.block_on(async move {
        if brokers == "embedded" || brokers == "both" {
            let port = pick_free_port([127, 0, 0, 1].into()).expect("port");
            let broker = EmbeddedBroker::start(([127, 0, 0, 1], port).into()).expect("broker");
            run("embedded", &broker.url(), scale, minutes).await;
        }
        if brokers == "mosquitto" || brokers == "both" {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = pick_free_port([127, 0, 0, 1].into()).expect("port");
            let conf = dir.path().join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!("per_listener_settings true\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"),
            )
            .expect("mosquitto.conf");
            let mut child = std::process::Command::new("/usr/sbin/mosquitto")
                .arg("-c")
                .arg(&conf)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("starting /usr/sbin/mosquitto");
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "mosquitto did not listen");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            run("mosquitto", &format!("mqtt://127.0.0.1:{port}"), scale, minutes).await;
            let _ = child.kill();
            let _ = child.wait();
        }
    });
}

/// The demo's release, signed with a bench key, and the key set devices trust.
fn release(now: Timestamp) -> (manifest::VerifiedManifest, TrustedKeys) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let version = Version::new(2, 5, 0);
    let digest = ArtifactDigest::of_bytes("t300-fw-2.5.0.img", b"convoy demo firmware 2.5.0");
    let spec = ReleaseSpec {
        id: "t300-fw-2.5.0".to_owned(),
        version,
        counter: 50,
        hardware: vec!["T300".into()],
        provides: [("firmware", version)].into_iter().collect(),
        requires: Vec::new(),
        artifacts: vec![Artifact {
            name: "t300-fw-2.5.0.img".to_owned(),
            url: "t300-fw-2.5.0.img".to_owned(),
            length_bytes: 4_000_000,
            sha256: digest.sha256,
        }],
        expires: now.plus_secs(30 * 86_400),
    };
    let bytes = SignedManifest::sign(spec, None, &key)
        .expect("sign")
        .to_json_bytes();
    let trust = TrustedKeys::from_keys([&key.verifying_key()]);
    (
        manifest::verify(&bytes, &trust, now).expect("verify"),
        trust,
    )
}

#[allow(clippy::too_many_lines)] // One measured run, start to figures.
async fn run(broker: &str, url: &str, scale: f64, minutes: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cache.db");
    let now = convoy::now();
    let fleet = generate(&SynthOptions {
        devices: 3000,
        seed: 7,
        now,
    });
    Store::open(&db)
        .expect("cache")
        .replace_fleet(&fleet, None)
        .expect("fleet");
    let (manifest, trust) = release(now);
    // Planned as the console's demo plans it.
    let mut planning = PlanningPolicy::default();
    planning.operating_cycle_secs.clear();
    planning.default_operating_cycle_secs = 3600;
    let plan = plan::plan(&PlanInput {
        fleet: &fleet,
        release: manifest.spec(),
        catalog: &[],
        now,
        seed: 7,
        policy: &planning,
    })
    .expect("plan");
    let waves = plan.rollout_waves(&fleet);
    let faults = Faults::parse(
        r#"{"faults": [{"release_version": "2.5.0", "match": {"hw_rev": "C"}, "effect": "crash_loop", "probability": 1.0}]}"#,
        &fleet,
    )
    .expect("faults");

    // The plain subscriber: every device message and command, with its arrival.
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let (first_stop_tx, mut first_stop_rx) = tokio::sync::watch::channel(false);
    let (_plain, mut plain_rx) = mqtt::spawn(
        &LinkConfig::new(url, "bench-stop-plain"),
        Topics::default_prefix(),
        &Role::Filters(vec!["convoy/v1/devices/+/+".into()]),
    )
    .expect("plain subscriber");
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(e) = plain_rx.recv().await {
                if let LinkEvent::Raw { topic, payload } = e {
                    let at = Instant::now();
                    let mut stop = false;
                    if topic.ends_with("/commands") {
                        let text = String::from_utf8_lossy(&payload);
                        stop = text.contains("\"kind\":\"roll_back\"")
                            || text.contains("\"kind\":\"cancel\"");
                        if stop {
                            let _ = first_stop_tx.send(true);
                        }
                    }
                    if let Ok(mut s) = seen.lock() {
                        s.push((topic, at, stop));
                    }
                }
            }
        });
    }

    let (sim_stop_tx, sim_stop_rx) = tokio::sync::oneshot::channel();
    let sim = tokio::spawn(convoy::sim::run(
        SimOptions {
            broker_url: url.to_owned(),
            client_id: "bench-stop-sim".into(),
            topics: Topics::default_prefix(),
            fleet: fleet.clone(),
            faults,
            trust,
            seed: 7,
            time_scale: scale,
            tick: Duration::from_millis(100),
            config: SimConfig::default(),
            start: now,
        },
        Some(sim_stop_rx),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gates = GatePolicy::default();
    let mut link = LinkConfig::new(url, "bench-stop-engine");
    link.time_scale = scale;
    let opts = EngineOptions {
        db: db.clone(),
        link,
        topics: Topics::default_prefix(),
        manifest,
        rollout_id: "demo".into(),
        waves,
        sample_period_secs: gates.evaluate_every_secs,
        max_report_gap_secs: engine::health::DEFAULT_MAX_GAP_SECS,
        gates,
        path: ChangePath::SingleOperator,
        requested_by: "bench".into(),
        approvers: vec!["bench".into()],
        time_scale: scale,
        start: now,
        max_wall: Some(Duration::from_secs(minutes * 60)),
        resend_after: Duration::from_secs(5),
    };
    let (engine_stop_tx, engine_stop_rx) = tokio::sync::oneshot::channel();
    let engine_started = Instant::now();
    let cpu_before = cpu_secs();
    // The engine holds the SQLite connection on one thread: give it its own.
    let engine = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("engine runtime")
            .block_on(engine::run(opts, Some(engine_stop_rx)))
    });
    // Stop the run a few seconds after the first rollback command: the figures are in by then.
    let _ = tokio::time::timeout(
        Duration::from_secs(minutes * 60),
        first_stop_rx.wait_for(|v| *v),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = engine_stop_tx.send(());
    let report = tokio::task::spawn_blocking(move || engine.join())
        .await
        .expect("join")
        .expect("engine thread")
        .expect("engine run");
    let wall = engine_started.elapsed();
    let cpu = cpu_secs() - cpu_before;
    let _ = sim_stop_tx.send(());
    let _ = sim.await;

    let store = Store::open(&db).expect("cache");
    let log = store.rollout_log("demo").expect("the rollout's log");
    let stop_at = log.iter().position(|e| {
        matches!(&e.kind, EventKind::GateChecked { outcome, .. } if *outcome > GateOutcome::Hold)
    });
    let Some(stop_at) = stop_at else {
        println!(
            "| {broker} | {scale} | {:?} | no gate decision in {minutes} min | | | | | |",
            report.final_state
        );
        return;
    };
    let decided = find_decisive(&log[..stop_at]);
    let rollout = Rollout::replay(log[..=stop_at].to_vec()).expect("replay");
    let state = rollout.state();
    let decisive_device = decided.and_then(|k| match &log[k].kind {
        EventKind::Telemetry { device, .. } | EventKind::Device { device, .. } => {
            state.device_ids.get(*device as usize).cloned()
        }
        _ => None,
    });
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let first_stop_cmd = seen.iter().find(|(_, _, stop)| *stop).map(|(_, at, _)| *at);
    let latency_ms = match (&decisive_device, first_stop_cmd) {
        (Some(id), Some(cmd)) => seen
            .iter()
            .filter(|(t, at, _)| t.contains(&format!("/devices/{id}/")) && *at <= cmd)
            .filter(|(t, _, _)| !t.ends_with("/commands"))
            .map(|(_, at, _)| *at)
            .max()
            .map_or_else(
                || "not seen".into(),
                |msg| format!("{:.0}", cmd.duration_since(msg).as_secs_f64() * 1e3),
            ),
        _ => "not found".into(),
    };
    let decision_at = log[stop_at].at;
    let mut first_bad: Option<Timestamp> = None;
    let (mut booted, mut reverted, mut hours) = (0, 0, 0.0);
    let rare: Vec<usize> = state
        .strata
        .iter()
        .enumerate()
        .filter(|(_, s)| s.as_str() == "T300/C")
        .map(|(i, _)| i)
        .collect();
    for e in &log[..=stop_at] {
        if let EventKind::Device { device, state: s } = &e.kind {
            let slot = state.devices[*device as usize];
            if rare.contains(&usize::from(slot.stratum))
                && *s == convoy_core::rollout::DeviceState::Rebooting
            {
                first_bad = first_bad.or(Some(e.at));
                booted += 1;
            }
            if rare.contains(&usize::from(slot.stratum))
                && *s == convoy_core::rollout::DeviceState::Reverted
            {
                reverted += 1;
            }
        }
    }
    for &s in &rare {
        hours += state.updated[0][s].exposure_secs / 3600.0;
    }
    let deciding: Vec<String> = match &log[stop_at].kind {
        EventKind::GateChecked {
            report: Some(r), ..
        } => r
            .failures()
            .map(|f| {
                format!(
                    "{} {} (p={:.1e}, n={})",
                    f.metric,
                    f.stratum.as_deref().unwrap_or("all"),
                    f.p_value,
                    f.sample
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    let minutes_of = |a: Timestamp, b: Timestamp| b.secs_since(a) as f64 / scale / 60.0;
    println!(
        "| {broker} | {scale} | {:?} | {latency_ms} | {} | {:.1} | {booted} / {reverted} | {hours:.2} | {} |",
        report.final_state,
        first_bad.map_or_else(
            || "none".into(),
            |t| format!("{:.1}", minutes_of(t, decision_at))
        ),
        minutes_of(state.created_at, decision_at),
        deciding.join("; "),
    );
    let secs_of = |a: Timestamp, b: Timestamp| b.secs_since(a) as f64 / scale;
    eprintln!(
        "({broker}: first bad boot → decision {} wall s, engine start → decision {:.1} wall s; engine run {:.1} s wall, {cpu:.1} s CPU of this process; decisive device {decisive_device:?})",
        first_bad.map_or_else(
            || "none".into(),
            |t| format!("{:.1}", secs_of(t, decision_at))
        ),
        secs_of(state.created_at, decision_at),
        wall.as_secs_f64()
    );
}

/// The index of the event after which the gates first ask for a stop, replaying the log
/// prefix by prefix (bisection: once decisive, the evidence stays so until the look).
fn find_decisive(log: &[RolloutEvent]) -> Option<usize> {
    let stops = |n: usize| {
        Rollout::replay(log[..n].to_vec())
            .ok()
            .and_then(|r| r.evaluate_gates())
            .is_some_and(|g| g.outcome() > GateOutcome::Hold)
    };
    if !stops(log.len()) {
        return None;
    }
    let (mut lo, mut hi) = (1, log.len());
    while lo < hi {
        let mid = usize::midpoint(lo, hi);
        if stops(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(hi - 1)
}

/// CPU seconds this process has used (user + system), from /proc.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime 11, stime 12 (clock ticks, 100 a second).
    (ticks(11) + ticks(12)) / 100.0
}
