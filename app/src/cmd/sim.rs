//! `convoy sim --broker URL --fleet FLEET [--faults FILE] [--time-scale X] [--trust DIR]
//! [--seed S]`: run every device of a fleet as a simulated device over MQTT.
//!
//! The behaviour lives in `convoy_core::devsim`; the wire side in [`crate::sim`]. This module
//! only reads the files and starts the runtime.

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
    let summary = runtime.block_on(async move {
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
        sim::run(options, stop).await
    })?;
    println!(
        "simulated {} devices: {} commands ({} invalid), {} messages published ({} dropped while the broker was away), {} ticks",
        summary.devices,
        summary.commands,
        summary.bad_commands,
        summary.published,
        summary.dropped_offline,
        summary.ticks
    );
    Ok(())
}
