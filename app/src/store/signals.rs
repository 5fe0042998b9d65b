//! Signals in the cache: support tickets and customer reports per device (the `signals`
//! table), which an engine counts in the support-contacts gate like telemetry. Idempotent by
//! `(source, reference)`: the same ticket imported twice is stored once.

use anyhow::{Context, Result};
use convoy_core::time::Timestamp;

use super::Store;

/// One signal about one device.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Signal {
    pub device_id: String,
    pub time: Timestamp,
    /// `support_ticket` or `customer_report`.
    pub kind: String,
    /// The system it came from (`zendesk`, `import:tickets.csv`).
    pub source: String,
    /// Its id there.
    pub reference: String,
    pub note: String,
}

/// What storing a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stored {
    pub added: usize,
    /// Already stored under the same source and reference.
    pub duplicates: usize,
}

impl Store {
    /// Stores `signals` in one transaction with one audit entry (`signals.add`, by `actor`).
    pub fn add_signals(&self, signals: &[Signal], actor: &str, now: Timestamp) -> Result<Stored> {
        let tx = super::write_tx(&self.conn)?;
        let mut stored = Stored::default();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO signals(device_id, time, kind, source, reference, note)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .context("storing signals")?;
            for s in signals {
                let n = stmt
                    .execute(rusqlite::params![
                        s.device_id,
                        s.time.secs(),
                        s.kind,
                        s.source,
                        s.reference,
                        s.note
                    ])
                    .with_context(|| format!("storing signal {}/{}", s.source, s.reference))?;
                if n == 1 {
                    stored.added += 1;
                } else {
                    stored.duplicates += 1;
                }
            }
        }
        super::audit::append_in(
            &tx,
            &super::audit::AuditEntry {
                time: now,
                actor: actor.to_owned(),
                action: "signals.add".into(),
                payload: serde_json::json!({"added": stored.added, "duplicates": stored.duplicates}),
            },
        )?;
        tx.commit().context("committing signals")?;
        Ok(stored)
    }

    /// The highest signal id stored (0 when none).
    pub fn signals_head(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT coalesce(max(id), 0) FROM signals", [], |r| r.get(0))
            .context("reading the signals' head")
    }

    /// Signals stored after id `after`, in id order, at most `limit`: (id, device id, kind).
    pub fn signals_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, String, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, device_id, kind FROM signals WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .context("reading signals")?;
        let rows = stmt
            .query_map(
                rusqlite::params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .context("reading signals")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .context("reading signals")
    }
}

impl Store {
    /// Which of `ids` are devices of the cache, as a sorted list of those that are not.
    pub fn unknown_devices(&self, ids: &[&str]) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM devices WHERE id = ?1")
            .context("looking up devices")?;
        let mut unknown = Vec::new();
        for id in ids {
            let known = stmt
                .exists([id])
                .with_context(|| format!("looking up device {id}"))?;
            if !known {
                unknown.push((*id).to_owned());
            }
        }
        unknown.sort();
        unknown.dedup();
        Ok(unknown)
    }
}
