//! Benchmark: the headless engine on a real broker (the embedded rumqttd on 127.0.0.1).
//!
//! `cargo run --release -p convoy --example bench_engine [-- DEVICES SECONDS]`
//!
//! 1. Telemetry throughput: publishers flood valid heartbeat telemetry for the fleet's devices
//!    for SECONDS (default 10) while the engine runs a rollout on the same cache, and a plain
//!    subscriber counts what the broker delivers to it in the same run. The engine's figure is the
//!    telemetry it decoded, validated and folded into health windows per wall second.
//! 2. Dispatch: the rollout's single wave offers every eligible device at once; a raw subscriber
//!    on the command topics times the offers (each is written to the outbox with the decision,
//!    then published with QoS 1).
//! 3. Time to stop: a simulated fleet (in process, `convoy::sim`) runs a release that crash-loops
//!    hardware revision C; the engine runs at time scale 3600, and the cache gives the simulated
//!    time from the first hw C device booting the bad version to the gate decision.

use convoy::engine::{self, EngineOptions};
use convoy::link::broker::{EmbeddedBroker, pick_free_port};
use convoy::link::mqtt::{self, LinkConfig, LinkEvent, Role};
use convoy::link::protocol::{PROTOCOL_VERSION, Telemetry, TelemetryEvent, Topics};
use convoy::sim::SimOptions;
use convoy::store::Store;
use convoy_core::devsim::{Faults, SimConfig};
use convoy_core::gates::GatePolicy;
use convoy_core::manifest::{self, ArtifactDigest, SignedManifest, TrustedKeys};
use convoy_core::plan::{self, PlanInput, PlanningPolicy};
use convoy_core::release::{Artifact, ReleaseSpec};
use convoy_core::rollout::{ChangePath, WaveSpec};
use convoy_core::synth::{SynthOptions, generate};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use ed25519_dalek::SigningKey;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let devices: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        throughput_and_dispatch(devices, seconds).await;
        time_to_stop().await;
    });
}

fn release(now: Timestamp, hardware: &[&str]) -> (SigningKey, ReleaseSpec) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let version = Version::new(2, 5, 0);
    let digest = ArtifactDigest::of_bytes("fw.img", b"bench");
    let spec = ReleaseSpec {
        id: "t300-2.5.0".to_owned(),
        version,
        counter: 50,
        hardware: hardware.iter().map(|s| (*s).to_owned()).collect(),
        provides: [("firmware", version)].into_iter().collect(),
        requires: Vec::new(),
        artifacts: vec![Artifact {
            name: "fw.img".to_owned(),
            url: "fw.img".to_owned(),
            length_bytes: 2_000_000,
            sha256: digest.sha256,
        }],
        expires: now.plus_secs(30 * 86_400),
    };
    (key, spec)
}

#[allow(clippy::too_many_arguments)]
fn options(
    db: &std::path::Path,
    url: &str,
    now: Timestamp,
    key: &SigningKey,
    spec: ReleaseSpec,
    waves: Vec<WaveSpec>,
    gates: GatePolicy,
    time_scale: f64,
    max_wall: Duration,
) -> EngineOptions {
    let bytes = SignedManifest::sign(spec, None, key)
        .expect("sign")
        .to_json_bytes();
    let trust = TrustedKeys::from_keys([&key.verifying_key()]);
    let manifest = manifest::verify(&bytes, &trust, now).expect("verify");
    let mut link = LinkConfig::new(url, "bench-engine");
    link.time_scale = time_scale;
    EngineOptions {
        db: db.to_owned(),
        link,
        topics: Topics::default_prefix(),
        manifest,
        rollout_id: "bench".into(),
        waves,
        sample_period_secs: gates.evaluate_every_secs,
        max_report_gap_secs: convoy::engine::health::DEFAULT_MAX_GAP_SECS,
        gates,
        path: ChangePath::SingleOperator,
        requested_by: "bench".into(),
        approvers: vec!["bench".into()],
        time_scale,
        start: now,
        max_wall: Some(max_wall),
        resend_after: Duration::from_secs(5),
    }
}

async fn throughput_and_dispatch(devices: usize, seconds: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cache.db");
    let now = convoy::now();
    let fleet = generate(&SynthOptions {
        devices,
        seed: 7,
        now,
    });
    Store::open(&db)
        .expect("cache")
        .replace_fleet(&fleet, None)
        .expect("fleet");
    let port = pick_free_port([127, 0, 0, 1].into()).expect("port");
    let broker = EmbeddedBroker::start(([127, 0, 0, 1], port).into()).expect("broker");
    let url = broker.url();
    let (key, spec) = release(now, &["T300"]);
    let eligible: Vec<String> = fleet
        .devices
        .iter()
        .filter(|d| d.model == "T300")
        .map(|d| d.id.clone())
        .collect();
    let waves = vec![WaveSpec {
        name: "all".into(),
        device_ids: eligible.clone(),
        soak_secs: 86_400,
    }];
    // Counts what the broker delivers to a plain subscriber, and when commands pass by.
    let plain = Arc::new(AtomicU64::new(0));
    let (_plain_link, mut plain_rx) = mqtt::spawn(
        &LinkConfig::new(&url, "bench-plain"),
        Topics::default_prefix(),
        &Role::Filters(vec![
            "convoy/v1/devices/+/telemetry".into(),
            "convoy/v1/devices/+/commands".into(),
        ]),
    )
    .expect("plain subscriber");
    let commands = Arc::new(std::sync::Mutex::new((
        std::collections::HashSet::<String>::new(),
        Vec::<Instant>::new(),
    )));
    {
        let plain = plain.clone();
        let commands = commands.clone();
        tokio::spawn(async move {
            while let Some(e) = plain_rx.recv().await {
                if let LinkEvent::Raw { topic, .. } = e {
                    if topic.ends_with("/commands") {
                        // First offer per device only: resends are not dispatch.
                        if let Ok(mut c) = commands.lock()
                            && c.0.insert(topic)
                        {
                            c.1.push(Instant::now());
                        }
                    } else {
                        plain.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    let opts = options(
        &db,
        &url,
        now,
        &key,
        spec,
        waves,
        GatePolicy::default(),
        1.0,
        Duration::from_secs(seconds + 4),
    );
    let engine_started = Instant::now();
    // The engine holds the SQLite connection, which stays on one thread: give it its own.
    let engine = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("engine runtime")
            .block_on(engine::run(opts, None))
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Publishers: valid heartbeats for every device, round robin, as fast as the broker takes.
    let published = Arc::new(AtomicU64::new(0));
    let plain_before = plain.load(Ordering::Relaxed);
    let flood_started = Instant::now();
    let ids: Arc<Vec<String>> = Arc::new(fleet.devices.iter().map(|d| d.id.clone()).collect());
    let mut publishers = Vec::new();
    for p in 0..4u64 {
        let ids = ids.clone();
        let url = url.clone();
        let published = published.clone();
        publishers.push(tokio::spawn(async move {
            let (mut link, _rx) = mqtt::spawn(
                &LinkConfig::new(&url, &format!("bench-pub-{p}")),
                Topics::default_prefix(),
                &Role::Filters(Vec::new()),
            )
            .expect("publisher");
            link.wait_connected(Duration::from_secs(10))
                .await
                .expect("publisher connects");
            let topics = Topics::default_prefix();
            let mut seq = 0u64;
            let deadline = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < deadline {
                for id in ids.iter().skip(p as usize).step_by(4).take(1000) {
                    seq += 1;
                    let t = Telemetry {
                        v: PROTOCOL_VERSION,
                        device_id: id.clone(),
                        ts: convoy::now(),
                        seq,
                        event: TelemetryEvent::Heartbeat { uptime_secs: seq },
                    };
                    let payload = serde_json::to_vec(&t).expect("encode");
                    if link
                        .publish(topics.telemetry(id), payload, false)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    published.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for p in publishers {
        let _ = p.await;
    }
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let report = tokio::task::spawn_blocking(move || engine.join())
        .await
        .expect("join task")
        .expect("engine thread")
        .expect("engine run");
    let plain_count = plain.load(Ordering::Relaxed) - plain_before;
    let engine_count = report.link.telemetry_messages;
    let wall = engine_started.elapsed().as_secs_f64();
    println!(
        "| devices | flood (s) | published | plain subscriber received | per s | engine received (whole run) | per s over the flood |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {devices} | {flood_secs:.1} | {} | {plain_count} | {:.0} | {engine_count} | {:.0} |",
        published.load(Ordering::Relaxed),
        plain_count as f64 / flood_secs,
        engine_count as f64 / flood_secs,
    );
    let times = commands.lock().map(|c| c.1.clone()).unwrap_or_default();
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        let secs = last.duration_since(*first).as_secs_f64().max(0.001);
        let from_start = first.duration_since(engine_started).as_secs_f64();
        println!();
        println!(
            "| devices offered | first offer after engine start (s) | first to last offer (s) | offers per minute |"
        );
        println!("| ---: | ---: | ---: | ---: |");
        println!(
            "| {} of {} | {from_start:.2} | {secs:.2} | {:.0} |",
            times.len(),
            eligible.len(),
            times.len() as f64 / secs * 60.0
        );
    }
    println!();
    println!(
        "(engine run {wall:.1} s wall, final state {:?})",
        report.final_state
    );
}

async fn time_to_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cache.db");
    let now = convoy::now();
    let fleet = generate(&SynthOptions {
        devices: 400,
        seed: 7,
        now,
    });
    Store::open(&db)
        .expect("cache")
        .replace_fleet(&fleet, None)
        .expect("fleet");
    let port = pick_free_port([127, 0, 0, 1].into()).expect("port");
    let broker = EmbeddedBroker::start(([127, 0, 0, 1], port).into()).expect("broker");
    let url = broker.url();
    let (key, spec) = release(now, &["T300"]);
    let mut planning = PlanningPolicy::default();
    planning.operating_cycle_secs.clear();
    planning.default_operating_cycle_secs = 3600;
    let plan = plan::plan(&PlanInput {
        fleet: &fleet,
        release: &spec,
        catalog: &[],
        now,
        seed: 1,
        policy: &planning,
    })
    .expect("plan");
    let waves = plan.rollout_waves(&fleet);
    let faults = Faults::parse(
        r#"{"faults": [{"release_version": "2.5.0", "match": {"hw_rev": "C"}, "effect": "crash_loop", "probability": 1.0}]}"#,
        &fleet,
    )
    .expect("faults");
    let scale = 3600.0;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let sim = tokio::spawn(convoy::sim::run(
        SimOptions {
            broker_url: url.clone(),
            client_id: "bench-sim".into(),
            topics: Topics::default_prefix(),
            fleet: fleet.clone(),
            faults,
            trust: TrustedKeys::from_keys([&key.verifying_key()]),
            seed: 1,
            time_scale: scale,
            tick: Duration::from_millis(100),
            config: SimConfig::default(),
            start: now,
        },
        Some(stop_rx),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let opts = options(
        &db,
        &url,
        now,
        &key,
        spec,
        waves,
        GatePolicy::default(),
        scale,
        Duration::from_mins(2),
    );
    let wall = Instant::now();
    let report = engine::run(opts, None).await.expect("engine run");
    let wall = wall.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = sim.await;
    let store = Store::open(&db).expect("cache");
    let first_bad: Option<i64> = rusqlite::Connection::open(store.path())
        .expect("a second connection to the cache")
        .query_row(
            "SELECT min(e.time) FROM device_events e JOIN devices d ON d.id = e.device_id
             WHERE e.rollout_id = 'bench' AND e.kind = 'rebooting' AND d.hw_rev = 'C'",
            [],
            |r| r.get(0),
        )
        .expect("query");
    let decision: Option<i64> = rusqlite::Connection::open(store.path()).expect("a second connection to the cache")
        .query_row(
            "SELECT min(time) FROM rollout_events WHERE rollout_id = 'bench' AND kind = 'gate.decision'",
            [],
            |r| r.get(0),
        )
        .expect("query");
    let wave_started: Option<i64> = rusqlite::Connection::open(store.path()).expect("a second connection to the cache")
        .query_row(
            "SELECT min(time) FROM rollout_events WHERE rollout_id = 'bench' AND kind = 'wave.started'",
            [],
            |r| r.get(0),
        )
        .expect("query");
    let took_it = report.waves.first().map_or(0, |w| w.reverted + w.confirmed);
    println!();
    println!(
        "| scenario | final state | canary start → gate decision (simulated min) | first hw C device on the bad version → gate decision (simulated min) | canary devices that took it | wall for the whole run (s) |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let minutes = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}", (b - a) as f64 / 60.0),
        _ => "no decision".into(),
    };
    println!(
        "| 400 devices, hw_rev C crash-loops, time scale 3600 | {:?} | {} | {} | {took_it} | {wall:.1} |",
        report.final_state,
        minutes(wave_started, decision),
        minutes(first_bad, decision),
    );
}
