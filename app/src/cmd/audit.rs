//! `convoy audit`: check and list the cache's hash-chained audit log.
//!
//! Verification recomputes every hash; it does not repair anything.

use anyhow::{Result, bail};
use convoy_core::time::Timestamp;
use std::path::PathBuf;

use crate::store::{self, Store};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the hash chain; exit non-zero naming the first edited, deleted or reordered
    /// entry.
    Verify(DbArgs),
    /// List entries, oldest first.
    Log(LogArgs),
}

#[derive(clap::Args, Debug)]
pub struct DbArgs {
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only the last N entries.
    #[arg(long)]
    pub limit: Option<usize>,
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Log(a) => log(a),
    }
}

fn verify(args: &DbArgs) -> Result<()> {
    let db = store::resolve_path(args.db.as_deref())?;
    let store = Store::open_existing(&db)?;
    let report = store.verify_audit()?;
    if let Some(problem) = report.problem {
        bail!(
            "audit log of {} is broken at entry {}: {problem}",
            db.display(),
            problem.seq()
        );
    }
    let head = store
        .audit_head()?
        .map_or_else(|| "none".to_owned(), |(seq, hash)| format!("{seq} {hash}"));
    println!(
        "audit log ok: {} entries verified; head {head}",
        report.entries
    );
    Ok(())
}

fn log(args: &LogArgs) -> Result<()> {
    let db = store::resolve_path(args.db.as_deref())?;
    let store = Store::open_existing(&db)?;
    let entries = store.audit_entries(args.limit)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    for e in &entries {
        println!(
            "{:>6}  {}  {:<20}  {:<20}  {}",
            e.seq,
            Timestamp::from_secs(e.time).to_rfc3339(),
            e.actor,
            e.action,
            e.payload
        );
    }
    if let Some((seq, hash)) = store.audit_head()? {
        println!("head: entry {seq}, hash {hash}");
    }
    Ok(())
}
