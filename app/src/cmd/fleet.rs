//! `convoy fleet`: generate synthetic fleets (and, later, import and export inventories).

use anyhow::{Context, Result};
use convoy_core::synth::{self, SynthOptions};
use convoy_core::time::Timestamp;
use std::path::PathBuf;
use std::time::Instant;

use crate::fleet_io;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum FleetCommand {
    /// Write a deterministic synthetic fleet: the same seed gives the same fleet.
    Generate(GenerateArgs),
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Number of devices.
    #[arg(long)]
    pub devices: usize,
    /// Seed: the same seed (and --now) always gives the same fleet.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output file; the format follows the extension (`.json`).
    #[arg(long)]
    pub out: PathBuf,
    /// The moment the fleet is observed at (RFC 3339); `last_seen` values lie before it.
    /// Defaults to today, 00:00 UTC, so that a day's runs agree.
    #[arg(long, value_parser = parse_time)]
    pub now: Option<Timestamp>,
}

pub fn parse_time(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(text).map_err(|e| e.to_string())
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        FleetCommand::Generate(g) => generate(g),
    }
}

fn generate(args: &GenerateArgs) -> Result<()> {
    let now = args.now.unwrap_or_else(|| {
        let t = crate::now();
        Timestamp::from_secs(t.secs() - t.secs().rem_euclid(86_400))
    });
    let started = Instant::now();
    let fleet = synth::generate(&SynthOptions {
        devices: args.devices,
        seed: args.seed,
        now,
    });
    let generated = started.elapsed();
    fleet_io::save_fleet(&args.out, &fleet)
        .with_context(|| format!("writing the fleet to {}", args.out.display()))?;
    eprintln!(
        "generated {} devices in {} depots (seed {}, observed at {now}) in {:.2?}, written to {} in {:.2?}",
        fleet.len(),
        fleet.depots.len(),
        args.seed,
        generated,
        args.out.display(),
        started.elapsed().saturating_sub(generated),
    );
    Ok(())
}
