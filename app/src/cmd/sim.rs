//! `convoy sim --broker URL --fleet FLEET [--faults FILE] [--time-scale X] [--trust DIR]
//! [--seed S]`: run every device of a fleet as a simulated device over MQTT.
//!
//! The behaviour lives in `convoy_core::devsim`; the wire side in [`crate::sim`]. This module
//! only reads the files and starts the runtime. `--fetch-artifacts DIR` also fetches each offered
//! release's artifacts over HTTP once (see [`crate::sim::ArtifactFetch`]).

use anyhow::{Context, Result};
use convoy_core::devsim::{Faults, SimConfig};
use convoy_core::manifest::TrustedKeys;
use std::path::PathBuf;
use std::time::Duration;

use crate::link::protocol::Topics;
use crate::sim::{self, SimOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The MQTT broker, e.g. mqtt://127.0.0.1:1883.
    #[arg(long)]
    pub broker: String,
    /// The fleet file (JSON, as written by `convoy fleet generate`).
    #[arg(long)]
    pub fleet: PathBuf,
    /// Faults to inject (JSON: `{"faults": [...]}`, see docs/PROTOCOL.md).
    #[arg(long)]
    pub faults: Option<PathBuf>,
    /// Simulated seconds per wall second.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// The keys devices trust: a trust directory or a key directory. Without it the devices trust
    /// no key and reject every offer as signed by the wrong key.
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// Seed of the noise and of the fault rolls.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Topic prefix.
    #[arg(long, default_value = "convoy/v1")]
    pub prefix: String,
    /// Stop after this many wall seconds (default: run until stopped).
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Wall milliseconds between clock ticks.
    #[arg(long, default_value_t = 100)]
    pub tick_ms: u64,
    /// Really fetch each offered release's artifacts over HTTP (once per run, with resume, hash
    /// checked against the verified manifest) into this directory before its offers reach the
    /// devices; a failed fetch rejects the offers.
    #[arg(long, value_name = "DIR")]
    pub fetch_artifacts: Option<PathBuf>,
    /// Base URL for artifact URLs in manifests that are relative, e.g. http://127.0.0.1:8080/.
    #[arg(long, value_name = "URL", requires = "fetch_artifacts")]
    pub artifact_base: Option<String>,
    /// The simulator's broker identity. One connection speaks for every simulated device, so a
    /// broker with per-device ACLs must know it as the fleet simulator (`convoy broker
    /// mosquitto-config --sim-identity`, test and demo only).
    #[command(flatten)]
    pub mqtt_auth: crate::ops::runs::MqttAuthArgs,
}

pub fn run(args: &Args) -> Result<()> {
    let fleet = crate::fleet_io::load_fleet(&args.fleet)?;
    let faults = match &args.faults {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading fault file {}", path.display()))?;
            Faults::parse(&text, &fleet)
                .with_context(|| format!("parsing fault file {}", path.display()))?
        }
        None => Faults::default(),
    };
    let trust = if let Some(dir) = &args.trust {
        crate::keys::load_trust(dir)?
    } else {
        eprintln!("sim: no --trust given: the devices trust no key and will reject every offer");
        TrustedKeys::from_keys([])
    };
    let topics =
        Topics::new(&args.prefix).map_err(|e| anyhow::anyhow!("invalid topic prefix {:?}", e.0))?;
    let options = SimOptions {
        broker_url: args.broker.clone(),
        client_id: format!("convoy-sim-{}", std::process::id()),
        topics,
        fleet,
        faults,
        trust,
        seed: args.seed,
        time_scale: args.time_scale,
        tick: Duration::from_millis(args.tick_ms.max(1)),
        config: SimConfig::default(),
        start: crate::now(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let duration = args.duration_secs;
    let auth = args.mqtt_auth.auth()?;
    let fetch = args.fetch_artifacts.as_ref().map(|dir| sim::ArtifactFetch {
        dir: dir.clone(),
        base_url: args.artifact_base.clone(),
        retry: crate::link::http::RetryPolicy {
            attempts: 8,
            backoff: Duration::from_millis(500),
        },
    });
    let (summary, fetched) = runtime.block_on(async move {
        eprintln!(
            "sim: {} devices on {} (time scale {})",
            options.fleet.len(),
            options.broker_url,
            options.time_scale
        );
        let stop = match duration {
            Some(secs) if secs.is_finite() && secs >= 0.0 => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    let _ = tx.send(());
                });
                Some(rx)
            }
            _ => None,
        };
        sim::run_as(options, auth, fetch, stop).await
    })?;
    println!(
        "simulated {} devices: {} commands ({} invalid), {} messages published ({} dropped while the broker was away), {} ticks ({} of a second or more)",
        summary.devices,
        summary.commands,
        summary.bad_commands,
        summary.published,
        summary.dropped_offline,
        summary.ticks,
        summary.slow_ticks
    );
    if args.fetch_artifacts.is_some() {
        println!(
            "artifacts: {} releases fetched ({} bytes), {} failed; {} offers held, {} refused",
            fetched.releases_fetched,
            fetched.bytes_fetched,
            fetched.releases_failed,
            fetched.offers_held,
            fetched.offers_refused
        );
    }
    Ok(())
}
