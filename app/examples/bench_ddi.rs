//! Benchmark: DDI polls served per second by the hawkBit-compatible endpoint, and their latency,
//! under load from a second process on loopback. Prints a Markdown table for
//! docs/BENCHMARKS.md.
//!
//! Run with `cargo run --release -p convoy --example bench_ddi` (optionally `-- CONTROLLERS`).
//!
//! The endpoint runs in this process (tokio, 2 worker threads) with CONTROLLERS controllers
//! (default 100,000) registered with their own target tokens, one in ten with an open
//! deployment. The load comes from this same binary started again as a client process
//! (`--client`), with reqwest on 2 threads: C connections, each polling one random controller
//! at a time with its `TargetToken`, for a fixed time. Each poll is authenticated (a SHA-256 of
//! the token and a map lookup) and answered with the links the controller needs. Client and
//! server share the machine's cores, so the figures are what one machine does for both.

use convoy::link::ddi::wire::HandlingType;
use convoy::link::ddi::{DdiArtifact, DdiConfig, DdiDeployment, DdiHub, DdiServer, HubConfig};
use convoy_core::rng::SeededRng;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECS: u64 = 8;

fn token(i: usize) -> String {
    format!("bench-token-{i:08}-secret")
}

fn controller(i: usize) -> String {
    format!("veh-{i:07}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The client process: polls for `SECS` seconds and prints `count errors p50_us p99_us`.
fn client(base: &str, controllers: usize, connections: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(SECS);
        let mut tasks = Vec::new();
        for c in 0..connections {
            let base = base.to_owned();
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("client");
                let mut rng = SeededRng::new(c as u64 + 1);
                let mut lat = Vec::new();
                let mut errors = 0usize;
                while Instant::now() < deadline {
                    let i = (rng.next_u64() % controllers as u64) as usize;
                    let t = Instant::now();
                    let r = http
                        .get(format!("{base}/DEFAULT/controller/v1/{}", controller(i)))
                        .header("Authorization", format!("TargetToken {}", token(i)))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            lat.push(t.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await?;
            all.extend(l);
            errors += e;
        }
        all.sort_unstable();
        println!(
            "{} {} {} {}",
            all.len(),
            errors,
            percentile(&all, 0.5).as_micros(),
            percentile(&all, 0.99).as_micros()
        );
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--client") {
        let base = &args[2];
        let controllers: usize = args[3].parse()?;
        let connections: usize = args[4].parse()?;
        return client(base, controllers, connections);
    }
    let controllers: usize = args.get(1).map_or(Ok(100_000), |s| s.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("fw.bin");
    std::fs::write(&file, vec![7u8; 1 << 20])?;
    let artifact = DdiArtifact::from_file(&file, "fw.bin", "http://127.0.0.1:9/fw.bin")?;
    let deployment = Arc::new(DdiDeployment {
        release_id: "fw-2.5.0".into(),
        part: "firmware".into(),
        name: "fw".into(),
        version: "2.5.0".into(),
        artifacts: vec![artifact],
        metadata: vec![],
        download: HandlingType::Forced,
        update: HandlingType::Forced,
        maintenance_window: None,
    });
    let (hub, mut events) = DdiHub::new(HubConfig::default());
    let started = Instant::now();
    for i in 0..controllers {
        hub.register(&controller(i), Some(&token(i)))?;
        if i % 10 == 0 {
            hub.assign(&controller(i), Arc::clone(&deployment))?;
        }
    }
    let setup = started.elapsed();
    let server = rt.block_on(DdiServer::start(
        DdiConfig::new("127.0.0.1:0".parse()?),
        Arc::clone(&hub),
    ))?;
    // Nothing is reported in this benchmark; drain in case.
    rt.spawn(async move { while events.recv().await.is_some() {} });
    let exe = std::env::current_exe()?;
    println!(
        "{controllers} controllers registered (one in ten with an open deployment) in {:.2} s; each client process runs {SECS} s.\n",
        setup.as_secs_f64()
    );
    println!("| Connections | Polls/s | p50 ms | p99 ms | Errors |");
    println!("|---:|---:|---:|---:|---:|");
    for connections in [1usize, 8, 32, 128] {
        let out = Command::new(&exe)
            .args([
                "--client",
                &server.base_url(),
                &controllers.to_string(),
                &connections.to_string(),
            ])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "client process failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout)?;
        let f: Vec<u128> = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        let [count, errors, p50, p99] = f[..] else {
            anyhow::bail!("unexpected client output {text:?}");
        };
        println!(
            "| {connections} | {:.0} | {:.2} | {:.2} | {errors} |",
            count as f64 / SECS as f64,
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0
        );
    }
    let stats = server.stats();
    println!(
        "\nServer counted {} polls, {} refused (401).",
        stats.polls, stats.unauthorized
    );
    rt.block_on(server.shutdown());
    Ok(())
}
