//! The outbox: commands to devices, written in the same transaction as the decision that made
//! them, and sent when the link is up.
//!
//! A command's id is derived from its decision: the first 16 bytes of
//! `SHA-256("convoy-cmd-v1" || decision's audit hash || index)`, printed like a UUID. The audit
//! hash is unique per entry (it covers the seq and the previous hash), so ids are unique, and
//! the same decision always yields the same ids, so a resend after a crash carries the same id
//! and the same payload and devices apply it once. No random source is needed.
//!
//! Delivery is at least once: [`Store::pending`] returns every command not yet acknowledged
//! (pending or sent), oldest first; the sender sends, calls [`Store::mark_sent`], and calls
//! [`Store::mark_acked`] when the device confirms. This module does not send anything itself.

use super::Store;
use super::audit::{AuditEntry, RecordedEntry, append_in};
use anyhow::{Context, Result, bail};
use convoy_core::time::Timestamp;
use rusqlite::params;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// A command to enqueue with a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxCommand {
    pub device_id: String,
    /// `offer`, `rollback`, `cancel`, ...
    pub kind: String,
    pub payload: serde_json::Value,
}

/// Where a command is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandState {
    /// Written, never sent.
    Pending,
    /// Sent at least once, not yet acknowledged: it will be sent again (same id, same payload).
    Sent,
    /// The device confirmed it; never sent again.
    Acked,
}

impl CommandState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Acked => "acked",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "pending" => Self::Pending,
            "sent" => Self::Sent,
            "acked" => Self::Acked,
            other => bail!("invalid outbox state {other:?}"),
        })
    }
}

/// A command as stored in the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueuedCommand {
    /// Enqueue order.
    pub seq: i64,
    pub id: String,
    /// The audit entry of the decision that made it.
    pub audit_seq: i64,
    pub device_id: String,
    pub kind: String,
    /// Compact JSON, exactly as it is sent every time.
    pub payload: String,
    pub state: CommandState,
    pub attempts: u32,
}

/// Rollout log events to append with a decision (see [`Store::commit_decision_logged`]).
#[derive(Clone, Copy, Debug)]
pub struct RolloutLogAppend<'a> {
    pub rollout_id: &'a str,
    /// The seq of the first of `events` in the rollout's log.
    pub first_seq: usize,
    pub events: &'a [convoy_core::rollout::RolloutEvent],
}

/// A committed decision: its audit entry and the ids of its commands, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub audit: RecordedEntry,
    pub command_ids: Vec<String>,
}

/// The id of command `index` of the decision whose audit hash is `audit_hash`.
pub fn command_id(audit_hash: &str, index: u32) -> String {
    let mut h = Sha256::new();
    h.update(b"convoy-cmd-v1\n");
    h.update(audit_hash.as_bytes());
    h.update(index.to_be_bytes());
    let d = h.finalize();
    let x = hex::encode(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

impl Store {
    /// Appends the decision's audit entry and enqueues its commands, in one transaction: either
    /// both are in the cache or neither is.
    pub fn commit_decision(
        &mut self,
        entry: &AuditEntry,
        commands: &[OutboxCommand],
    ) -> Result<Decision> {
        self.commit_decision_logged(entry, commands, None)
    }

    /// [`Store::commit_decision`], also appending the rollout log events that led to the
    /// decision in the same transaction: a resumed rollout then never sees a wave started
    /// whose offers are not in the outbox, nor offers of a wave its log does not know.
    pub fn commit_decision_logged(
        &mut self,
        entry: &AuditEntry,
        commands: &[OutboxCommand],
        log: Option<RolloutLogAppend<'_>>,
    ) -> Result<Decision> {
        let tx = super::write_tx(&self.conn)?;
        if let Some(log) = log {
            super::events::append_log_in(&tx, log.rollout_id, log.first_seq, log.events)?;
        }
        let audit = append_in(&tx, entry)?;
        let mut ids = Vec::with_capacity(commands.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO outbox(id, audit_seq, device_id, kind, payload, state, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
            )?;
            for (i, c) in commands.iter().enumerate() {
                let index = u32::try_from(i).context("too many commands in one decision")?;
                let id = command_id(&audit.hash, index);
                let payload =
                    serde_json::to_string(&c.payload).context("encoding a command payload")?;
                insert
                    .execute(params![
                        id,
                        audit.seq,
                        c.device_id,
                        c.kind,
                        payload,
                        audit.time
                    ])
                    .with_context(|| format!("enqueuing command {id} for {}", c.device_id))?;
                ids.push(id);
            }
        }
        tx.commit().context("committing the decision")?;
        Ok(Decision {
            audit,
            command_ids: ids,
        })
    }

    /// Up to `limit` commands not yet acknowledged, oldest first.
    pub fn pending(&self, limit: usize) -> Result<Vec<QueuedCommand>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, id, audit_seq, device_id, kind, payload, state, attempts
             FROM outbox WHERE state != 'acked' ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok((
                QueuedCommand {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    audit_seq: r.get(2)?,
                    device_id: r.get(3)?,
                    kind: r.get(4)?,
                    payload: r.get(5)?,
                    state: CommandState::Pending,
                    attempts: r.get(7)?,
                },
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut cmd, state) = row.context("reading the outbox")?;
            cmd.state = CommandState::parse(&state)?;
            out.push(cmd);
        }
        Ok(out)
    }

    /// The commands of `rollout_id`'s decisions not yet acknowledged, oldest first (a decision
    /// belongs to the rollout its audit entry names in `payload.rollout`).
    pub fn pending_for_rollout(&self, rollout_id: &str) -> Result<Vec<QueuedCommand>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.seq, o.id, o.audit_seq, o.device_id, o.kind, o.payload, o.state, o.attempts
             FROM outbox o JOIN audit a ON a.seq = o.audit_seq
             WHERE o.state != 'acked' AND json_extract(a.payload, '$.rollout') = ?1
             ORDER BY o.seq",
        )?;
        let rows = stmt.query_map([rollout_id], |r| {
            Ok((
                QueuedCommand {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    audit_seq: r.get(2)?,
                    device_id: r.get(3)?,
                    kind: r.get(4)?,
                    payload: r.get(5)?,
                    state: CommandState::Pending,
                    attempts: r.get(7)?,
                },
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut cmd, state) =
                row.with_context(|| format!("reading the outbox of rollout {rollout_id}"))?;
            cmd.state = CommandState::parse(&state)?;
            out.push(cmd);
        }
        Ok(out)
    }

    /// One command by id.
    pub fn command(&self, id: &str) -> Result<Option<QueuedCommand>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, id, audit_seq, device_id, kind, payload, state, attempts
             FROM outbox WHERE id = ?1",
        )?;
        let mut rows = stmt.query([id])?;
        let Some(r) = rows.next()? else {
            return Ok(None);
        };
        let state: String = r.get(6)?;
        Ok(Some(QueuedCommand {
            seq: r.get(0)?,
            id: r.get(1)?,
            audit_seq: r.get(2)?,
            device_id: r.get(3)?,
            kind: r.get(4)?,
            payload: r.get(5)?,
            state: CommandState::parse(&state)?,
            attempts: r.get(7)?,
        }))
    }

    /// Records that command `id` was sent (once more). An acknowledged command stays acked.
    pub fn mark_sent(&mut self, id: &str, now: Timestamp) -> Result<()> {
        let mut update = self.conn.prepare_cached(
            "UPDATE outbox SET state = CASE state WHEN 'acked' THEN 'acked' ELSE 'sent' END,
                 attempts = attempts + 1, last_sent = ?2
             WHERE id = ?1",
        )?;
        let n = super::patiently(|| update.execute(params![id, now.secs()]))
            .with_context(|| format!("marking command {id} sent"))?;
        if n == 0 {
            bail!("no command {id} in the outbox");
        }
        Ok(())
    }

    /// [`Store::mark_sent`] for many commands in one transaction; unknown ids are skipped.
    pub fn mark_sent_many(&mut self, ids: &[String], now: Timestamp) -> Result<usize> {
        let tx = super::write_tx(&self.conn)?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE outbox SET state = CASE state WHEN 'acked' THEN 'acked' ELSE 'sent' END,
                     attempts = attempts + 1, last_sent = ?2
                 WHERE id = ?1",
            )?;
            for id in ids {
                n += stmt
                    .execute(params![id, now.secs()])
                    .with_context(|| format!("marking command {id} sent"))?;
            }
        }
        tx.commit().context("committing sent commands")?;
        Ok(n)
    }

    /// [`Store::mark_acked`] for many commands in one transaction; returns how many were newly
    /// acknowledged (duplicates and unknown ids count for nothing).
    pub fn mark_acked_many(&mut self, ids: &[String], now: Timestamp) -> Result<usize> {
        let tx = super::write_tx(&self.conn)?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE outbox SET state = 'acked', acked = ?2 WHERE id = ?1 AND state != 'acked'",
            )?;
            for id in ids {
                n += stmt
                    .execute(params![id, now.secs()])
                    .with_context(|| format!("marking command {id} acknowledged"))?;
            }
        }
        tx.commit().context("committing acknowledgements")?;
        Ok(n)
    }

    /// Records that the device acknowledged command `id`. Idempotent: returns `false` if it
    /// was already acknowledged (a duplicate ack).
    pub fn mark_acked(&mut self, id: &str, now: Timestamp) -> Result<bool> {
        let mut update = self.conn.prepare_cached(
            "UPDATE outbox SET state = 'acked', acked = ?2 WHERE id = ?1 AND state != 'acked'",
        )?;
        let n = super::patiently(|| update.execute(params![id, now.secs()]))
            .with_context(|| format!("marking command {id} acknowledged"))?;
        if n == 1 {
            return Ok(true);
        }
        match self.command(id)? {
            Some(_) => Ok(false),
            None => bail!("no command {id} in the outbox"),
        }
    }
}
