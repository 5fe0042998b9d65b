//! The local cache: one SQLite file that holds everything the console and the engine read.
//!
//! Devices, depots and components; telemetry samples and rollups; the hash-chained audit log;
//! the outbox of commands to devices; rollout timelines; settings. The cache is the single
//! source for the UI and the engine, and it keeps working offline. A compact snapshot of the
//! devices (`snapshot.rs`), derived from their rows and never used once stale, makes the cold
//! load of a large fleet one query.
//!
//! The file runs in WAL mode with foreign keys on and `synchronous = FULL`: a committed
//! transaction survives a killed process and a power cut. Every write that belongs together
//! (a decision and its commands, an import, a telemetry batch and its rollups) is one
//! transaction.
//!
//! This module deliberately makes no decisions: it stores and returns core types
//! ([`convoy_core::fleet::Fleet`]) and plain records, and `convoy_core` decides.

pub mod alerts;
pub mod audit;
pub mod cohorts;
pub mod console;
pub mod console_history;
pub mod devices;
pub mod events;
pub mod feed;
pub mod lease;
pub mod mbtiles;
pub mod metrics;
pub mod outbox;
pub mod plans;
pub mod query;
pub mod releases;
pub mod requests;
pub mod schema;
pub mod signals;
pub mod snapshot;
pub mod summary;
pub mod telemetry;
pub mod tokens;

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use audit::{AuditEntry, RecordedEntry, VerifyReport};
pub use devices::FleetSource;
pub use events::Event;
pub use outbox::{CommandState, Decision, OutboxCommand, QueuedCommand};
pub use snapshot::Unusable;
pub use telemetry::Sample;

/// An open cache file.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    ingest_cache: telemetry::IngestCache,
    /// Whether the schema has the fleet snapshot's tables (not when a test opens the cache at
    /// an earlier version).
    has_snapshot: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Where the cache lives when no `--db` is given: `$CONVOY_DB`, else
/// `$XDG_DATA_HOME/convoy/convoy.db`, else `~/.local/share/convoy/convoy.db`.
pub fn default_path() -> Result<PathBuf> {
    default_path_from(
        std::env::var_os("CONVOY_DB"),
        std::env::var_os("XDG_DATA_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`default_path`] from the values of `CONVOY_DB`, `XDG_DATA_HOME` and `HOME` (empty counts
/// as unset).
pub fn default_path_from(
    convoy_db: Option<std::ffi::OsString>,
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Result<PathBuf> {
    if let Some(p) = convoy_db.filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let data = if let Some(d) = xdg_data_home.filter(|p| !p.is_empty()) {
        PathBuf::from(d)
    } else {
        let home = home
            .filter(|p| !p.is_empty())
            .context("neither CONVOY_DB, XDG_DATA_HOME nor HOME is set: pass --db PATH")?;
        PathBuf::from(home).join(".local").join("share")
    };
    Ok(data.join("convoy").join("convoy.db"))
}

/// `--db PATH` if given, else [`default_path`].
pub fn resolve_path(db: Option<&Path>) -> Result<PathBuf> {
    match db {
        Some(p) => Ok(p.to_owned()),
        None => default_path(),
    }
}

impl Store {
    /// Opens the cache at `path`, creating the file (and its directory) if needed, and
    /// upgrades its schema to the latest version in place.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_at_version(path, schema::LATEST_VERSION)
    }

    /// Opens an existing cache; fails if there is no file at `path` (for `--fleet cache.db`,
    /// where a typo should not create an empty fleet).
    pub fn open_existing(path: &Path) -> Result<Self> {
        if !path.is_file() {
            bail!("no fleet cache at {}", path.display());
        }
        Self::open(path)
    }

    /// Opens the cache, upgrading its schema only up to `version`. Tests use this to build
    /// caches of every earlier version.
    pub fn open_at_version(path: &Path, version: u32) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the cache directory {}", dir.display()))?;
        }
        let mut conn = Connection::open(path)
            .with_context(|| format!("opening the cache {}", path.display()))?;
        configure(&conn).with_context(|| format!("configuring the cache {}", path.display()))?;
        schema::migrate_to(&mut conn, version)
            .with_context(|| format!("upgrading the cache {}", path.display()))?;
        let has_snapshot = conn
            .query_row(
                "SELECT count(*) = 2 FROM sqlite_master
                 WHERE type = 'table' AND name IN ('fleet_state', 'fleet_snapshot')",
                [],
                |r| r.get(0),
            )
            .with_context(|| format!("reading the schema of {}", path.display()))?;
        Ok(Self {
            conn,
            path: path.to_owned(),
            ingest_cache: telemetry::IngestCache::default(),
            has_snapshot,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open cache.
    pub fn schema_version(&self) -> Result<u32> {
        schema::version(&self.conn)
    }

    /// Runs `PRAGMA integrity_check` and returns its messages (`["ok"]` when sound).
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .context("running the integrity check")
    }

    /// A setting, if set.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .with_context(|| format!("reading setting {key}"))
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        patiently(|| {
            self.conn.execute(
                "INSERT INTO settings(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
        })
        .with_context(|| format!("writing setting {key}"))?;
        Ok(())
    }
}

/// A write transaction that takes the cache's write lock when it begins (`BEGIN IMMEDIATE`).
/// A deferred transaction that reads first and writes later cannot wait for a writer in
/// another process: SQLite fails its upgrade at once with `SQLITE_BUSY_SNAPSHOT` (error 517)
/// rather than invoke the busy handler. Taking the lock first makes every writer wait its turn
/// instead: an engine, a server and a console on one cache.
///
/// The busy handler waits up to [`BUSY_TIMEOUT`] per attempt; a writer that still finds the
/// lock taken (a million-device import, a snapshot being written) tries again, for up to
/// [`WRITE_PATIENCE`] in all, rather than fail: an engine must not die of another process's
/// long write (issue 19). Nothing has been written when `BEGIN` fails, so trying again is safe.
fn write_tx(conn: &Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    patiently(|| {
        rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
    })
}

/// Runs `attempt` (a `BEGIN IMMEDIATE`, or one write statement outside a transaction) again
/// while it fails because another connection holds the write lock, for up to
/// [`WRITE_PATIENCE`]. Only for attempts that change nothing when they fail busy.
pub(crate) fn patiently<T>(
    mut attempt: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + WRITE_PATIENCE;
    loop {
        match attempt() {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                // The busy handler already waited; a short pause keeps a connection with a
                // short handler (a test's) from spinning.
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// Whether `e` says another connection holds the lock (`SQLITE_BUSY`, with its extended codes).
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy
    )
}

/// How long a write waits for another connection's write lock in one attempt.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write keeps trying for the write lock, in all, before it gives up.
pub(crate) const WRITE_PATIENCE: Duration = Duration::from_mins(5);

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("the cache could not switch to WAL mode (journal_mode is {mode})");
    }
    // A 64 MiB page cache and memory-mapped reads: a million-device fleet is a few hundred
    // MiB, and the default 2 MiB cache turns a full load or import into page-by-page reads.
    // A checkpoint every 8,192 WAL pages (32 MiB) rather than SQLite's 1,000: telemetry
    // batches rewrite the same rollup pages again and again, and each checkpoint copies every
    // page it finds (and syncs the file) once, however often it was written since.
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;
         PRAGMA cache_size = -65536; PRAGMA mmap_size = 1073741824;
         PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 8192;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// `HashMap`s keyed by short strings that come from the cache itself (the snapshot's interned
/// values), where SipHash costs more than the rest of the work: the core's fast hasher. Not
/// for keys from outside (telemetry's device ids), which could be chosen to collide.
pub(crate) type FastHash = convoy_core::fasthash::FastBuild;

/// An `i64` for SQLite from a `u64` count, or an error naming the field.
pub(crate) fn to_i64(value: u64, field: &str) -> Result<i64> {
    i64::try_from(value).with_context(|| format!("{field} {value} is too large for the cache"))
}

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
