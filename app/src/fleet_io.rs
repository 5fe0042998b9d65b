//! Reading and writing whole fleets as files. The format follows the file's extension.

use anyhow::{Context, Result, bail};
use convoy_core::fleet::Fleet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

/// Loads a fleet written by [`save_fleet`].
pub fn load_fleet(path: &Path) -> Result<Fleet> {
    match extension(path).as_str() {
        "json" => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let fleet: Fleet = serde_json::from_reader(BufReader::new(file))
                .with_context(|| format!("parsing fleet JSON {}", path.display()))?;
            Ok(Fleet::new(fleet.depots, fleet.devices))
        }
        other => bail!(
            "unsupported fleet file extension {other:?} for {}: use .json",
            path.display()
        ),
    }
}

/// Writes a fleet atomically: to a temporary file beside `path`, then renamed over it, so a
/// crash never leaves a half-written fleet behind.
pub fn save_fleet(path: &Path, fleet: &Fleet) -> Result<()> {
    match extension(path).as_str() {
        "json" => write_atomically(path, |w| {
            serde_json::to_writer(&mut *w, fleet)?;
            Ok(())
        }),
        other => bail!(
            "unsupported fleet file extension {other:?} for {}: use .json",
            path.display()
        ),
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Writes through `write` into `path.tmp`, syncs, and renames over `path`.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = BufWriter::new(file);
    write(&mut out)?;
    let file = out.into_inner().context("flushing")?;
    file.sync_all().context("syncing")?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
