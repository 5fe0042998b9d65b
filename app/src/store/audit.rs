//! The audit trail: an append-only, hash-chained log of every operator action and every
//! automatic decision.
//!
//! Entry `n` stores `hash_n = SHA-256(encode(seq, time, actor, action, payload, hash_{n-1}))`
//! with `hash_0` = 64 zeros, and `audit_head` holds the last seq and hash (written in the same
//! transaction as each append). [`Store::verify_audit`] recomputes the chain and names the
//! first entry that was edited, deleted or moved. The encoding is length-prefixed so no two
//! different entries encode alike (see [`canonical_encoding`]).
//!
//! This is tamper *evidence*, not prevention: someone who rewrites the whole chain and the
//! head from the first edited entry onward is caught only by comparing the head hash with a
//! copy kept elsewhere (`convoy audit log` prints it).

use super::Store;
use anyhow::{Context, Result};
use convoy_core::time::Timestamp;
use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An entry to append: who did what, when, with what details.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub time: Timestamp,
    /// `operator:NAME` for people, `engine` for automatic decisions, `import` for imports.
    pub actor: String,
    /// A dotted verb such as `fleet.import`, `rollout.pause`, `dispatch.offer`.
    pub action: String,
    pub payload: serde_json::Value,
}

/// An entry as stored, with its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordedEntry {
    pub seq: i64,
    pub time: i64,
    pub actor: String,
    pub action: String,
    /// The payload exactly as hashed (compact JSON).
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The result of checking the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: usize,
    /// The first problem found, if any.
    pub problem: Option<ChainProblem>,
}

/// What is wrong with the chain, at the first entry where it breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainProblem {
    /// The entry's content does not match its own hash.
    Edited { seq: i64 },
    /// Entries are missing before `seq` (`first_missing..seq`).
    Deleted { first_missing: i64, seq: i64 },
    /// Entries were deleted from the end: the head says `head_seq`, the log ends at `last_seq`.
    TruncatedEnd { last_seq: i64, head_seq: i64 },
    /// The entry is intact but does not follow its predecessor: rows were swapped or moved.
    Reordered { seq: i64 },
    /// The head record does not match the last entry.
    HeadMismatch { seq: i64 },
}

impl std::fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Edited { seq } => write!(
                f,
                "entry {seq} was edited: its content does not match its hash"
            ),
            Self::Deleted { first_missing, seq } if first_missing + 1 == *seq => {
                write!(f, "entry {first_missing} was deleted")
            }
            Self::Deleted { first_missing, seq } => {
                write!(f, "entries {first_missing} to {} were deleted", seq - 1)
            }
            Self::TruncatedEnd { last_seq, head_seq } => write!(
                f,
                "entries {} to {head_seq} were deleted from the end of the log",
                last_seq + 1
            ),
            Self::Reordered { seq } => write!(
                f,
                "entry {seq} was reordered: it is intact but was moved from another place in the log"
            ),
            Self::HeadMismatch { seq } => write!(
                f,
                "the chain head does not match entry {seq}: the head or the last entry was replaced"
            ),
        }
    }
}

impl ChainProblem {
    /// The first seq at which the chain is broken.
    pub fn seq(&self) -> i64 {
        match self {
            Self::Edited { seq } | Self::Reordered { seq } | Self::HeadMismatch { seq } => *seq,
            Self::Deleted { first_missing, .. } => *first_missing,
            Self::TruncatedEnd { last_seq, .. } => last_seq + 1,
        }
    }
}

/// The bytes that are hashed for one entry: a tag, then each field as `len:bytes` (decimal
/// length), so that no two different entries encode alike.
pub fn canonical_encoding(
    seq: i64,
    time: i64,
    actor: &str,
    action: &str,
    payload: &str,
    prev_hash: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + actor.len() + action.len() + payload.len());
    out.extend_from_slice(b"convoy-audit-v1\n");
    for field in [
        seq.to_string().as_str(),
        time.to_string().as_str(),
        actor,
        action,
        payload,
        prev_hash,
    ] {
        out.extend_from_slice(field.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(field.as_bytes());
        out.push(b'\n');
    }
    out
}

/// The hex SHA-256 of an entry's canonical encoding.
pub fn entry_hash(
    seq: i64,
    time: i64,
    actor: &str,
    action: &str,
    payload: &str,
    prev_hash: &str,
) -> String {
    hex::encode(Sha256::digest(canonical_encoding(
        seq, time, actor, action, payload, prev_hash,
    )))
}

/// Appends `entry` inside `tx` and moves the head. Callers commit.
pub(crate) fn append_in(tx: &Transaction<'_>, entry: &AuditEntry) -> Result<RecordedEntry> {
    let head: Option<(i64, String)> = tx
        .query_row("SELECT seq, hash FROM audit_head WHERE one = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let (prev_seq, prev_hash) = head.unwrap_or((0, GENESIS_HASH.to_owned()));
    let seq = prev_seq + 1;
    let payload = serde_json::to_string(&entry.payload).context("encoding the audit payload")?;
    let time = entry.time.secs();
    let hash = entry_hash(seq, time, &entry.actor, &entry.action, &payload, &prev_hash);
    tx.prepare_cached(
        "INSERT INTO audit(seq, time, actor, action, payload, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        seq,
        time,
        entry.actor,
        entry.action,
        payload,
        prev_hash,
        hash
    ])
    .with_context(|| format!("appending audit entry {seq}"))?;
    tx.prepare_cached(
        "INSERT INTO audit_head(one, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT(one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )?
    .execute(params![seq, hash])?;
    Ok(RecordedEntry {
        seq,
        time,
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        payload,
        prev_hash,
        hash,
    })
}

/// The actor for an operator's action on this machine: `operator:NAME` from
/// `$CONVOY_OPERATOR`, else `$USER`, else `operator:unknown`.
pub fn operator_actor() -> String {
    let name = ["CONVOY_OPERATOR", "USER"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|n| !n.trim().is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    format!("operator:{}", name.trim())
}

impl Store {
    /// The recorded head of the chain (last seq and hash), if any entry was ever appended.
    pub fn audit_head(&self) -> Result<Option<(i64, String)>> {
        self.conn
            .query_row("SELECT seq, hash FROM audit_head WHERE one = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .context("reading the audit head")
    }

    /// Appends one entry in its own transaction.
    pub fn append_audit(&mut self, entry: &AuditEntry) -> Result<RecordedEntry> {
        let tx = super::write_tx(&self.conn)?;
        let recorded = append_in(&tx, entry)?;
        tx.commit().context("committing the audit entry")?;
        Ok(recorded)
    }

    /// Entries in seq order; the last `limit` entries when `limit` is given.
    pub fn audit_entries(&self, limit: Option<usize>) -> Result<Vec<RecordedEntry>> {
        let limit = limit.map_or(-1, |l| l as i64);
        let mut stmt = self.conn.prepare(
            "SELECT seq, time, actor, action, payload, prev_hash, hash FROM
               (SELECT * FROM audit ORDER BY seq DESC LIMIT ?1)
             ORDER BY seq",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(RecordedEntry {
                seq: r.get(0)?,
                time: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                payload: r.get(4)?,
                prev_hash: r.get(5)?,
                hash: r.get(6)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading the audit log")
    }

    /// Recomputes the chain from the first entry and reports the first break.
    pub fn verify_audit(&self) -> Result<VerifyReport> {
        let entries = self.audit_entries(None)?;
        let head: Option<(i64, String)> = self
            .conn
            .query_row("SELECT seq, hash FROM audit_head WHERE one = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        Ok(VerifyReport {
            entries: entries.len(),
            problem: check_chain(&entries, head.as_ref()),
        })
    }
}

/// Finds the first break in `entries` (in seq order) against the recorded `head`.
pub fn check_chain(
    entries: &[RecordedEntry],
    head: Option<&(i64, String)>,
) -> Option<ChainProblem> {
    let mut expected_seq = 1;
    let mut prev_hash = GENESIS_HASH;
    for (i, e) in entries.iter().enumerate() {
        let own = entry_hash(e.seq, e.time, &e.actor, &e.action, &e.payload, &e.prev_hash);
        if own != e.hash {
            // A row whose content hashes correctly under its original seq (found through its
            // predecessor's hash) was moved, not edited.
            let original_seq = if e.prev_hash == GENESIS_HASH {
                Some(1)
            } else {
                entries
                    .iter()
                    .find(|o| o.hash == e.prev_hash)
                    .map(|o| o.seq + 1)
            };
            let moved = original_seq.is_some_and(|k| {
                k != e.seq
                    && entry_hash(k, e.time, &e.actor, &e.action, &e.payload, &e.prev_hash)
                        == e.hash
            });
            return Some(if moved {
                ChainProblem::Reordered { seq: e.seq }
            } else {
                ChainProblem::Edited { seq: e.seq }
            });
        }
        if e.seq > expected_seq {
            return Some(ChainProblem::Deleted {
                first_missing: expected_seq,
                seq: e.seq,
            });
        }
        if e.prev_hash != prev_hash {
            // Intact but not linked to its predecessor. If its predecessor hash belongs to
            // another entry of the log, rows were moved; otherwise content was replaced
            // wholesale (and rehashed), which is an edit of the entry before it.
            let moved = entries.iter().skip(i + 1).any(|o| o.hash == e.prev_hash)
                || entries.iter().take(i).any(|o| o.hash == e.prev_hash);
            return Some(if moved {
                ChainProblem::Reordered { seq: e.seq }
            } else {
                ChainProblem::Edited { seq: e.seq - 1 }
            });
        }
        prev_hash = &e.hash;
        expected_seq = e.seq + 1;
    }
    let last_seq = expected_seq - 1;
    match head {
        Some((head_seq, _)) if *head_seq > last_seq => Some(ChainProblem::TruncatedEnd {
            last_seq,
            head_seq: *head_seq,
        }),
        Some((head_seq, head_hash)) if *head_seq != last_seq || head_hash != prev_hash => {
            Some(ChainProblem::HeadMismatch { seq: last_seq })
        }
        None if last_seq > 0 => Some(ChainProblem::HeadMismatch { seq: last_seq }),
        _ => None,
    }
}
