//! `convoy telemetry ingest`: load JSON-lines telemetry samples into the cache.
//!
//! Each committed batch is reported on standard output (`committed lines A-B ...`) only after
//! its transaction is durable, so a caller can rely on every reported line being in the cache.
//! This command does not watch a live link; the MQTT side feeds the same store API.

use anyhow::{Context, Result};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::store::{self, Sample, Store};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: TelemetryCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TelemetryCommand {
    /// Ingest samples, one JSON object per line:
    /// {"device":"CV0000001","time":"2026-11-23T06:00:00Z","metric":"battery_pct","value":81.5}
    Ingest(IngestArgs),
}

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// JSON-lines file of samples (`-` for standard input).
    pub file: PathBuf,
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Samples per transaction.
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        TelemetryCommand::Ingest(a) => ingest(a),
    }
}

/// Running totals of one ingest.
#[derive(Default)]
struct Totals {
    stored: usize,
    duplicates: usize,
    rejected: usize,
}

/// Commits `batch` (whose samples came from `lines`) and reports it once it is durable.
fn commit(
    store: &mut Store,
    file: &Path,
    batch: &mut Vec<Sample>,
    lines: &mut Vec<u64>,
    totals: &mut Totals,
) -> Result<()> {
    let (Some(first), Some(last)) = (lines.first().copied(), lines.last().copied()) else {
        return Ok(());
    };
    let report = store.ingest(batch)?;
    for (i, reason) in &report.rejected {
        eprintln!("{}: line {}: {reason}", file.display(), lines[*i]);
    }
    totals.stored += report.stored;
    totals.duplicates += report.duplicates;
    totals.rejected += report.rejected.len();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(
        out,
        "committed lines {first}-{last}: {} stored, {} duplicates, {} rejected",
        report.stored,
        report.duplicates,
        report.rejected.len()
    )?;
    out.flush()?;
    batch.clear();
    lines.clear();
    Ok(())
}

fn ingest(args: &IngestArgs) -> Result<()> {
    let db = store::resolve_path(args.db.as_deref())?;
    let mut store = Store::open_existing(&db)?;
    let input: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&args.file)
            .with_context(|| format!("opening {}", args.file.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let batch_size = args.batch.max(1);
    let mut batch: Vec<Sample> = Vec::with_capacity(batch_size);
    let mut lines: Vec<u64> = Vec::with_capacity(batch_size);
    let mut totals = Totals::default();
    for (i, line) in input.lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = line.with_context(|| format!("reading line {line_no}"))?;
        if line.trim().is_empty() {
            continue;
        }
        match Sample::parse_line(&line) {
            Ok(s) => {
                batch.push(s);
                lines.push(line_no);
            }
            Err(e) => {
                totals.rejected += 1;
                eprintln!("{}: line {line_no}: {e:#}", args.file.display());
            }
        }
        if batch.len() >= batch_size {
            commit(&mut store, &args.file, &mut batch, &mut lines, &mut totals)?;
        }
    }
    commit(&mut store, &args.file, &mut batch, &mut lines, &mut totals)?;
    eprintln!(
        "ingested {} into {}: {} stored, {} duplicates, {} rejected",
        args.file.display(),
        db.display(),
        totals.stored,
        totals.duplicates,
        totals.rejected
    );
    Ok(())
}
