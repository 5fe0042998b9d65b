//! Benchmark: latency of `convoy serve`'s JSON API under load from concurrent clients on
//! loopback. Prints Markdown tables for docs/BENCHMARKS.md.
//!
//! Run with `cargo run --release -p convoy --example bench_serve` (optionally `-- DEVICES`).
//!
//! The server runs in this process on its own tokio runtime (2 worker threads, 4 cache
//! workers), on a cache holding a synthetic fleet; the clients run on a second runtime (2
//! threads) with reqwest, each client one connection doing one request at a time. Every
//! request is authenticated (a token lookup in the cache) and passes the rate limiter (set high
//! enough not to refuse any). Clients and server share the machine's cores.

use convoy::serve::auth::{self, Role};
use convoy::serve::{ServeConfig, Server};
use convoy::store::Store;
use convoy_core::rng::SeededRng;
use convoy_core::synth::{self, SynthOptions};
use convoy_core::time::Timestamp;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One kind of request the clients make.
#[derive(Clone, Copy)]
enum Call {
    WhoAmI,
    DevicePage,
    DeviceFiltered,
    Device,
    Fleet,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::WhoAmI => "`GET /whoami` (auth only)",
            Call::DevicePage => "`GET /devices?limit=100&after=ID`",
            Call::DeviceFiltered => "`GET /devices?model=T300&region=eu-central&limit=100`",
            Call::Device => "`GET /devices/ID` (with 50 history rows)",
            Call::Fleet => "`GET /fleet` (summary: full scans)",
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Outcome {
    latencies: Vec<Duration>,
    wall: Duration,
    errors: usize,
}

/// `clients` concurrent clients each make `per_client` requests of `call`.
async fn load(
    base: &str,
    token: &str,
    ids: &Arc<Vec<String>>,
    call: Call,
    clients: usize,
    per_client: usize,
) -> Outcome {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let base = base.to_owned();
        let token = token.to_owned();
        let ids = Arc::clone(ids);
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut rng = SeededRng::derive(7, c as u64);
            let mut latencies = Vec::with_capacity(per_client);
            let mut errors = 0;
            for _ in 0..per_client {
                let id = &ids[rng.below(ids.len() as u64) as usize];
                let url = match call {
                    Call::WhoAmI => format!("{base}/api/v1/whoami"),
                    Call::DevicePage => format!("{base}/api/v1/devices?limit=100&after={id}"),
                    Call::DeviceFiltered => {
                        format!("{base}/api/v1/devices?model=T300&region=eu-central&limit=100")
                    }
                    Call::Device => format!("{base}/api/v1/devices/{id}"),
                    Call::Fleet => format!("{base}/api/v1/fleet"),
                };
                let t = Instant::now();
                let ok = match http.get(&url).bearer_auth(&token).send().await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        ok && resp.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                latencies.push(t.elapsed());
                if !ok {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("client task");
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    Outcome {
        latencies,
        wall: start.elapsed(),
        errors,
    }
}

fn main() -> anyhow::Result<()> {
    let devices: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("bench.db");
    let now = Timestamp::from_secs(1_795_000_000);
    let fleet = synth::generate(&SynthOptions {
        devices,
        seed: 1,
        now,
    });
    let mut ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    {
        let mut store = Store::open(&cache)?;
        store.replace_fleet(&fleet, None)?;
        // Every device gets a short history, so device reads and state columns have rows.
        let events: Vec<_> = fleet
            .devices
            .iter()
            .flat_map(|d| {
                ["offered", "downloading", "confirmed"].map(|kind| {
                    convoy::store::events::NewDeviceEvent {
                        device_id: d.id.clone(),
                        rollout_id: Some("bench".into()),
                        time: now,
                        kind: kind.into(),
                        payload: serde_json::json!({}),
                    }
                })
            })
            .collect();
        store.append_device_events(&events)?;
    }
    let token = {
        let store = Store::open(&cache)?;
        auth::add_token(&store, "bench", Role::Viewer, "operator:bench", now)?.token
    };
    drop(fleet);

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-server")
        .enable_all()
        .build()?;
    let mut config = ServeConfig::new(cache.clone(), "127.0.0.1:0".parse()?);
    config.rate_per_sec = 1e9;
    config.rate_burst = u32::MAX;
    let server = server_rt.block_on(Server::start(config))?;
    let base = server.base_url();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-clients")
        .enable_all()
        .build()?;
    let ids = Arc::new(ids);

    println!("{devices} devices, 3 history rows each; server: 2 runtime threads, 4 cache workers");
    println!();
    println!("| request | clients | requests | p50 ms | p99 ms | max ms | requests/s | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let plan: &[(Call, &[usize], usize)] = &[
        (Call::WhoAmI, &[1, 16, 64], 4_000),
        (Call::DevicePage, &[1, 16, 64], 2_000),
        (Call::DeviceFiltered, &[1, 16], 1_000),
        (Call::Device, &[1, 16, 64], 4_000),
        (Call::Fleet, &[1, 4], 8),
    ];
    for &(call, levels, total) in plan {
        // Warm up connections and the page cache.
        client_rt.block_on(load(&base, &token, &ids, call, 1, 3));
        for &clients in levels {
            let per_client = (total / clients).max(1);
            let o = client_rt.block_on(load(&base, &token, &ids, call, clients, per_client));
            println!(
                "| {} | {clients} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {} |",
                call.name(),
                o.latencies.len(),
                ms(percentile(&o.latencies, 0.50)),
                ms(percentile(&o.latencies, 0.99)),
                ms(o.latencies.last().copied().unwrap_or_default()),
                o.latencies.len() as f64 / o.wall.as_secs_f64(),
                o.errors
            );
        }
    }

    // The live stream: time from a write to the cache to the event on a client's stream.
    let mut delays = Vec::new();
    client_rt.block_on(async {
        let http = reqwest::Client::new();
        let mut resp = http
            .get(format!("{base}/api/v1/events"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("subscribe");
        let _ = resp.chunk().await; // ": connected"
        let mut writer = Store::open(&cache).expect("open");
        for i in 0..20 {
            let t = Instant::now();
            writer
                .append_event(
                    "bench-live",
                    now,
                    "wave.started",
                    "bench",
                    &serde_json::json!({ "i": i }),
                )
                .expect("write");
            let needle = format!("{{\"i\":{i}}}");
            let mut text = String::new();
            while !text.contains(&needle) {
                match resp.chunk().await {
                    Ok(Some(c)) => text.push_str(&String::from_utf8_lossy(&c)),
                    _ => panic!("stream ended"),
                }
            }
            delays.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(37)).await;
        }
    });
    delays.sort();
    println!();
    println!("| live stream (poll every 200 ms) | events | p50 ms | max ms |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| write to the cache → event on the client | {} | {:.1} | {:.1} |",
        delays.len(),
        ms(percentile(&delays, 0.5)),
        ms(delays.last().copied().unwrap_or_default())
    );
    server_rt.block_on(server.shutdown());
    Ok(())
}
