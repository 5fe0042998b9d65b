//! `convoy fleet`: generate synthetic fleets, import inventories into the cache, export them.
//!
//! This module parses arguments and reports; file formats live in `fleet_io`, the cache in
//! `store`.

use anyhow::{Context, Result};
use convoy_core::synth::{self, SynthOptions};
use convoy_core::time::Timestamp;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::fleet_io::{self, FleetFormat};
use crate::store::{self, AuditEntry, Store};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum FleetCommand {
    /// Write a deterministic synthetic fleet: the same seed gives the same fleet.
    Generate(GenerateArgs),
    /// Import a CSV or JSON inventory into the cache: new devices are added, known ones
    /// updated; bad rows are reported and skipped.
    Import(ImportArgs),
    /// Export the cache's fleet as CSV or JSON (importing it again gives the same fleet).
    Export(ExportArgs),
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Number of devices.
    #[arg(long)]
    pub devices: usize,
    /// Seed: the same seed (and --now) always gives the same fleet.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output file; the format follows the extension: `.db` (the SQLite cache, recommended;
    /// its fleet is replaced, its audit log kept), `.json` or `.csv`.
    #[arg(long)]
    pub out: PathBuf,
    /// The moment the fleet is observed at (RFC 3339); `last_seen` values lie before it.
    /// Defaults to today, 00:00 UTC, so that a day's runs agree.
    #[arg(long, value_parser = parse_time)]
    pub now: Option<Timestamp>,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The inventory: `.csv` (with a header) or `.json`.
    pub file: PathBuf,
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Write here (atomically) instead of to standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn parse_time(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(text).map_err(|e| e.to_string())
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        FleetCommand::Generate(g) => generate(g),
        FleetCommand::Import(a) => import(a),
        FleetCommand::Export(a) => export(a),
    }
}

fn generate(args: &GenerateArgs) -> Result<()> {
    let now = args.now.unwrap_or_else(|| {
        let t = crate::now();
        Timestamp::from_secs(t.secs() - t.secs().rem_euclid(86_400))
    });
    // Check the format before spending time on a large fleet.
    let format = FleetFormat::of(&args.out)?;
    let started = Instant::now();
    let fleet = synth::generate(&SynthOptions {
        devices: args.devices,
        seed: args.seed,
        now,
    });
    let generated = started.elapsed();
    if format == FleetFormat::Cache {
        let mut store = Store::open(&args.out)?;
        let entry = AuditEntry {
            time: crate::now(),
            actor: store::audit::operator_actor(),
            action: "fleet.generate".to_owned(),
            payload: serde_json::json!({
                "devices": args.devices, "seed": args.seed, "now": now.to_rfc3339(),
            }),
        };
        store
            .replace_fleet(&fleet, Some(&entry))
            .with_context(|| format!("writing the fleet to {}", args.out.display()))?;
    } else {
        fleet_io::save_fleet(&args.out, &fleet)
            .with_context(|| format!("writing the fleet to {}", args.out.display()))?;
    }
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

fn import(args: &ImportArgs) -> Result<()> {
    let db = store::resolve_path(args.db.as_deref())?;
    let entry = |inv: &fleet_io::Inventory| AuditEntry {
        time: crate::now(),
        actor: store::audit::operator_actor(),
        action: "fleet.import".to_owned(),
        payload: serde_json::json!({
            "file": args.file.display().to_string(),
            "devices": inv.devices.len(),
            "depots": inv.depots.len(),
            "rejected": inv.rejected.len(),
        }),
    };
    let is_csv = fleet_io::FleetFormat::of(&args.file)? == fleet_io::FleetFormat::Csv;
    let (inv, counts) = if is_csv {
        // Parsed on one thread while the rows read so far are written on this one.
        let mut store = Store::open(&db)?;
        let done = fleet_io::import_csv(&args.file, &mut store, entry)
            .with_context(|| format!("importing {} into {}", args.file.display(), db.display()))?;
        (done.inventory, done.outcome.counts)
    } else {
        let mut inv = fleet_io::read_inventory(&args.file)?;
        for r in &inv.rejected {
            eprintln!("{}: {r}", args.file.display());
        }
        let mut store = Store::open(&db)?;
        let audit = entry(&inv);
        let counts = store
            .import_fleet(&inv.depots, &mut inv.devices, Some(&audit))
            .with_context(|| format!("importing {} into {}", args.file.display(), db.display()))?
            .counts;
        (inv, counts)
    };
    if is_csv {
        for r in &inv.rejected {
            eprintln!("{}: {r}", args.file.display());
        }
    }
    println!(
        "imported {} devices from {} into {}: {} new, {} updated, {} rows rejected",
        inv.devices.len(),
        args.file.display(),
        db.display(),
        counts.inserted,
        counts.updated,
        inv.rejected.len()
    );
    Ok(())
}

fn export(args: &ExportArgs) -> Result<()> {
    let db = store::resolve_path(args.db.as_deref())?;
    let store = Store::open_existing(&db)?;
    let fleet = store.load_fleet()?;
    let write = |w: &mut dyn Write| match args.format {
        ExportFormat::Csv => fleet_io::write_csv(w, &fleet.devices),
        ExportFormat::Json => fleet_io::write_json(w, &fleet),
    };
    if let Some(path) = &args.out {
        return write_file(path, write);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write(&mut out)?;
    out.flush().context("writing to standard output")
}

fn write_file(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    fleet_io::write_atomically(path, write).with_context(|| format!("writing {}", path.display()))
}
