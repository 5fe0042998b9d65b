//! Rollout requests and approvals in the cache: request records in `rollout_plans` (beside the
//! plans consoles save), decisions in `approvals`, and [`Txn`], a transaction in which the
//! request rules of `ops::requests` write a request or a decision together with its audit
//! entry.
//!
//! Deliberately not here: who may approve what (the two-person rule is `ops::requests`'s and
//! `ops::tokens`'s); this module stores and reads rows.

use anyhow::{Context, Result};
use convoy_core::time::Timestamp;
use rusqlite::{OptionalExtension, params};

use super::Store;
use super::audit::{AuditEntry, RecordedEntry, append_in};

/// A stored decision on a request, with its JSON body as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRow {
    pub operator: String,
    /// Unix seconds.
    pub time: i64,
    /// `approve` or `reject`.
    pub decision: String,
    pub body: String,
}

/// A row of `rollout_plans`: a saved plan or a request record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanRow {
    pub rollout_id: String,
    pub release_id: String,
    /// Unix seconds.
    pub created: i64,
    pub body: String,
}

/// One transaction on the cache, open while [`Store::atomically`]'s closure runs: everything
/// written through it is committed together when the closure returns `Ok`, and nothing when
/// it returns an error. Reads through the [`Store`] inside the closure see its writes.
pub struct Txn<'a> {
    tx: rusqlite::Transaction<'a>,
}

impl Store {
    /// Runs `f` in one transaction: committed if `f` returns `Ok`, rolled back otherwise.
    pub fn atomically<T>(&self, f: impl FnOnce(&Txn<'_>) -> Result<T>) -> Result<T> {
        let txn = Txn {
            tx: super::write_tx(&self.conn)?,
        };
        let out = f(&txn)?;
        txn.tx.commit().context("committing")?;
        Ok(out)
    }

    /// Every row of `rollout_plans`, newest first (then by id).
    pub fn plan_rows(&self) -> Result<Vec<PlanRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rollout_id, release_id, created, body FROM rollout_plans
             ORDER BY created DESC, rollout_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PlanRow {
                rollout_id: r.get(0)?,
                release_id: r.get(1)?,
                created: r.get(2)?,
                body: r.get(3)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading the saved plans")
    }

    /// The body of the `rollout_plans` row of `rollout_id`, if any.
    pub fn plan_body(&self, rollout_id: &str) -> Result<Option<String>> {
        self.conn
            .prepare_cached("SELECT body FROM rollout_plans WHERE rollout_id = ?1")?
            .query_row([rollout_id], |r| r.get(0))
            .optional()
            .with_context(|| format!("reading the plan of rollout {rollout_id}"))
    }

    /// The rollouts whose request names a finding: (rollout id, finding id), by rollout id.
    pub fn remediating_requests(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rollout_id, finding_id FROM rollout_plans WHERE finding_id IS NOT NULL
             ORDER BY rollout_id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading the requests that name a finding")
    }

    /// Whether `rollout_id` is taken: a plan or request is saved under it, or a rollout of
    /// that id has a timeline.
    pub fn rollout_id_taken(&self, rollout_id: &str) -> Result<bool> {
        self.conn
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM rollout_plans WHERE rollout_id = ?1)
                     OR EXISTS(SELECT 1 FROM rollout_events WHERE rollout_id = ?1)",
            )?
            .query_row([rollout_id], |r| r.get(0))
            .with_context(|| format!("looking up rollout {rollout_id}"))
    }

    /// The decisions on `rollout_id`'s request, by time then operator.
    pub fn approvals(&self, rollout_id: &str) -> Result<Vec<ApprovalRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT operator, time, decision, body FROM approvals WHERE rollout_id = ?1
             ORDER BY time, operator",
        )?;
        let rows = stmt.query_map([rollout_id], |r| {
            Ok(ApprovalRow {
                operator: r.get(0)?,
                time: r.get(1)?,
                decision: r.get(2)?,
                body: r.get(3)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .with_context(|| format!("reading the approvals of rollout {rollout_id}"))
    }
}

impl Txn<'_> {
    /// Appends an audit entry.
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<RecordedEntry> {
        append_in(&self.tx, entry)
    }

    /// Stores a request record under `rollout_id` (refused if the id is taken).
    pub fn insert_request(
        &self,
        rollout_id: &str,
        release_id: &str,
        now: Timestamp,
        body: &str,
    ) -> Result<()> {
        self.insert_request_for(rollout_id, release_id, None, now, body)
    }

    /// Stores a request record under `rollout_id` that names the finding it remediates
    /// (refused if the id is taken).
    pub fn insert_request_for(
        &self,
        rollout_id: &str,
        release_id: &str,
        finding_id: Option<&str>,
        now: Timestamp,
        body: &str,
    ) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO rollout_plans(rollout_id, release_id, created, body, finding_id)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![rollout_id, release_id, now.secs(), body, finding_id],
            )
            .with_context(|| format!("storing the request of rollout {rollout_id}"))?;
        Ok(())
    }

    /// Replaces the body of `rollout_id`'s request (a shape change before any decision).
    pub fn update_request(&self, rollout_id: &str, body: &str) -> Result<()> {
        let n = self
            .tx
            .execute(
                "UPDATE rollout_plans SET body = ?2 WHERE rollout_id = ?1",
                params![rollout_id, body],
            )
            .with_context(|| format!("updating the request of rollout {rollout_id}"))?;
        anyhow::ensure!(n == 1, "no request of rollout {rollout_id} to update");
        Ok(())
    }

    /// Records operator `name` with `role` unless they exist.
    pub fn ensure_operator(&self, name: &str, role: &str, now: Timestamp) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO operators(name, role, created) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO NOTHING",
                params![name, role, now.secs()],
            )
            .with_context(|| format!("recording operator {name}"))?;
        Ok(())
    }

    /// Records a decision on `rollout_id`'s request.
    pub fn insert_approval(
        &self,
        rollout_id: &str,
        operator: &str,
        now: Timestamp,
        decision: &str,
        body: &str,
    ) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO approvals(rollout_id, operator, time, decision, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![rollout_id, operator, now.secs(), decision, body],
            )
            .with_context(|| format!("recording {operator}'s decision on rollout {rollout_id}"))?;
        Ok(())
    }
}
