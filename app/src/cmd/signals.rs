//! `convoy signals import`: support tickets and customer reports per device, from a CSV or
//! JSON file, into the cache, where an engine counts them in the support-contacts gate
//! (`ops::signals` has the formats and rules).

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

use crate::store::{self, Store};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: SignalsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SignalsCommand {
    /// Import signals from a file (CSV: device_id,kind,reference,time,note; or JSON).
    Import {
        /// The file to read.
        file: PathBuf,
        /// `csv` or `json` (default: from the file's extension).
        #[arg(long)]
        format: Option<String>,
        /// Where the signals come from (default: `import:FILENAME`); with each reference, what
        /// makes a signal imported twice count once.
        #[arg(long)]
        source: Option<String>,
        /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
        #[arg(long)]
        db: Option<PathBuf>,
    },
}

/// The largest file read.
const MAX_FILE_BYTES: u64 = 16 << 20;

pub fn run(args: &Args) -> Result<()> {
    let SignalsCommand::Import {
        file,
        format,
        source,
        db,
    } = &args.command;
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if len > MAX_FILE_BYTES {
        bail!("{}: larger than {MAX_FILE_BYTES} bytes", file.display());
    }
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let format = match format.as_deref() {
        Some(f) => f.to_owned(),
        None => file
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase(),
    };
    let name = file
        .file_name()
        .map_or_else(|| "file".to_owned(), |n| n.to_string_lossy().into_owned());
    let source = source.clone().unwrap_or_else(|| format!("import:{name}"));
    let now = crate::now();
    let signals = match format.as_str() {
        "json" => crate::ops::signals::from_json(&bytes, &source, now),
        "csv" => {
            let text = String::from_utf8(bytes).context("the CSV is not UTF-8")?;
            crate::ops::signals::from_csv(&text, &source, now)
        }
        other => bail!("--format {other:?}: use csv or json"),
    }
    .with_context(|| format!("{}", file.display()))?;
    let store = Store::open_existing(&store::resolve_path(db.as_deref())?)?;
    let stored = crate::ops::signals::store(&store, &signals, &store::audit::operator_actor(), now)
        .with_context(|| format!("{}", file.display()))?;
    println!(
        "{} signal(s) added, {} already there ({source})",
        stored.added, stored.duplicates
    );
    Ok(())
}
