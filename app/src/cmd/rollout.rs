//! `convoy rollout`: rollout records in the cache. Today: export a rollout's timeline.
//!
//! Planning and driving rollouts are not here; the engine appends the events this exports.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::PathBuf;

use crate::store::events::{TimelineFormat, write_timeline};
use crate::store::{self, Store};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: RolloutCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum RolloutCommand {
    /// Export a rollout's timeline (every event with its cause) as CSV, JSON or Markdown.
    Timeline(TimelineArgs),
}

#[derive(clap::Args, Debug)]
pub struct TimelineArgs {
    /// The rollout id.
    #[arg(long)]
    pub rollout: String,
    #[arg(long, value_enum)]
    pub format: TimelineFormat,
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        RolloutCommand::Timeline(a) => timeline(a),
    }
}

fn timeline(args: &TimelineArgs) -> Result<()> {
    let db = store::resolve_path(args.db.as_deref())?;
    let store = Store::open_existing(&db)?;
    let events = store.timeline(&args.rollout)?;
    if events.is_empty() {
        bail!("no events for rollout {} in {}", args.rollout, db.display());
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write_timeline(&mut out, &events, args.format)?;
    out.flush().context("writing to standard output")
}
