//! Signed releases in the cache: the `releases` and `manifests` tables.
//!
//! A manifest is kept as the bytes that came in, so that whoever reads it checks it again: a
//! row changed in the file since it was stored must show as tampered, not vanish. Nothing here
//! verifies a signature; `convoy_core::manifest::verify` does.

use anyhow::{Context, Result};
use convoy_core::manifest::SignedManifest;
use convoy_core::time::Timestamp;
use rusqlite::OptionalExtension;

use super::Store;

/// Stores a signed release in the cache: its spec in `releases`, the manifest file's bytes in
/// `manifests` (replacing an earlier manifest of the same id), and an audit entry, in one
/// transaction. Returns the audit entry's seq.
pub fn record_release(
    store: &Store,
    manifest: &SignedManifest,
    actor: &str,
    now: Timestamp,
) -> Result<i64> {
    let spec = &manifest.signed.release;
    let tx = super::write_tx(&store.conn)?;
    tx.execute(
        "INSERT INTO releases(id, created, body) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET body = excluded.body",
        rusqlite::params![spec.id, now.secs(), serde_json::to_string(spec)?],
    )
    .with_context(|| format!("storing release {}", spec.id))?;
    let bytes = manifest.to_json_bytes();
    let text = String::from_utf8(bytes).context("a manifest file is UTF-8 JSON")?;
    tx.execute(
        "INSERT OR REPLACE INTO manifests(release_id, body) VALUES (?1, ?2)",
        rusqlite::params![spec.id, text],
    )
    .with_context(|| format!("storing the manifest of release {}", spec.id))?;
    let entry = crate::store::audit::append_in(
        &tx,
        &crate::store::audit::AuditEntry {
            time: now,
            actor: actor.to_owned(),
            action: "release.create".into(),
            payload: serde_json::json!({
                "release": spec.id,
                "version": spec.version.to_string(),
                "counter": spec.counter,
                "key_id": manifest.signed.key_id.as_str(),
            }),
        },
    )?;
    tx.commit().context("committing the release")?;
    Ok(entry.seq)
}

/// A manifest file as the cache keeps it: the bytes as signed, checked by whoever reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredManifest {
    pub release_id: String,
    /// Unix seconds.
    pub created: i64,
    pub bytes: Vec<u8>,
}

/// Every manifest in the cache, by release id. The bytes are not verified here: a row changed
/// in the file since it was stored must show as tampered, not vanish.
pub fn stored_manifests(store: &Store) -> Result<Vec<StoredManifest>> {
    let mut stmt = store.conn.prepare_cached(
        "SELECT m.release_id, r.created, m.body FROM manifests m
         JOIN releases r ON r.id = m.release_id ORDER BY m.release_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredManifest {
            release_id: r.get(0)?,
            created: r.get(1)?,
            bytes: r.get::<_, String>(2)?.into_bytes(),
        })
    })?;
    rows.collect::<rusqlite::Result<_>>()
        .context("reading the manifests in the cache")
}

/// The manifest bytes stored for `release_id`, if any (unverified, as [`stored_manifests`]).
pub fn stored_manifest(store: &Store, release_id: &str) -> Result<Option<Vec<u8>>> {
    store
        .conn
        .prepare_cached("SELECT body FROM manifests WHERE release_id = ?1")?
        .query_row([release_id], |r| r.get::<_, String>(0))
        .optional()
        .map(|body| body.map(String::into_bytes))
        .with_context(|| format!("reading the manifest of release {release_id}"))
}
