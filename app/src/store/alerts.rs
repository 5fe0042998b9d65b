//! The alert outbox (issue 23): which timeline entries the alert feed has read, and each
//! alert's delivery to each channel.
//!
//! Enqueueing is one transaction with the cursor's move, and a row is unique per
//! (channel, source), so a feed that crashes and reads the same entries again enqueues nothing
//! twice. A delivery's outcome is one transaction with its audit entry. Times are the wall
//! clock in Unix milliseconds. Not here: what an alert says (`convoy_core::alerts`) or how
//! it is sent (`app/src/alerts/`).

use anyhow::{Context, Result};
use rusqlite::{OptionalExtension, params};

use super::audit::{AuditEntry, append_in};
use super::{Store, write_tx};

/// One alert for one channel, to enqueue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAlert {
    pub channel: String,
    pub incident: String,
    /// `gate_paused`, ... (`convoy_core::alerts::AlertKind::as_str`).
    pub kind: String,
    pub resolves: bool,
    /// What raised it: `ROLLOUT#SEQ`, `ROLLOUT#request`, `test#...`.
    pub source: String,
    /// The alert as JSON.
    pub alert: String,
}

/// An alert row as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRow {
    pub id: i64,
    pub channel: String,
    pub incident: String,
    pub thread: String,
    pub update_no: i64,
    pub kind: String,
    pub alert: String,
    pub created_ms: i64,
    pub attempts: i64,
    pub next_ms: i64,
    pub last_error: Option<String>,
    pub sent_ms: Option<i64>,
}

/// What happened to an enqueued batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enqueued {
    pub queued: usize,
    /// Dropped as a repeat of the incident's last alert on that channel.
    pub duplicates: usize,
    /// Already enqueued from the same source (the feed read it before).
    pub seen: usize,
}

/// One channel's delivery health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelHealth {
    pub channel: String,
    pub pending: u64,
    pub oldest_pending_ms: Option<i64>,
    pub sent: u64,
    pub last_sent_ms: Option<i64>,
    /// The error of the pending row tried most recently, if it failed.
    pub last_error: Option<String>,
}

impl Store {
    /// The rollouts whose timeline has entries after the feed's cursor: (rollout, cursor).
    /// A rollout with no cursor yet starts at 0, unless `baseline` says the feed is new: then
    /// every rollout's cursor is first set to its newest entry, so history does not page.
    pub fn alert_sources(&mut self, baseline: bool) -> Result<Vec<(String, i64)>> {
        if baseline {
            let tx = write_tx(&self.conn)?;
            tx.execute(
                "INSERT OR IGNORE INTO alert_cursors(source, position)
                 SELECT rollout_id, max(seq) FROM rollout_events GROUP BY rollout_id",
                [],
            )
            .context("setting the alert feed's first cursors")?;
            tx.commit()?;
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT e.rollout_id, coalesce(c.position, 0) FROM rollout_events e
             LEFT JOIN alert_cursors c ON c.source = e.rollout_id
             GROUP BY e.rollout_id HAVING max(e.seq) > coalesce(c.position, 0)",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading the alert feed's sources")
    }

    /// The audit entries after `after` whose action is one of `actions`, oldest first, at most
    /// `limit`, and the newest audit seq read (the cursor's next position).
    pub fn audit_after(
        &self,
        after: i64,
        actions: &[&str],
        limit: usize,
    ) -> Result<(Vec<super::audit::RecordedEntry>, i64)> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, time, actor, action, payload, prev_hash, hash FROM audit
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![after, limit], |r| {
            Ok(super::audit::RecordedEntry {
                seq: r.get(0)?,
                time: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                payload: r.get(4)?,
                prev_hash: r.get(5)?,
                hash: r.get(6)?,
            })
        })?;
        let mut newest = after;
        let mut out = Vec::new();
        for row in rows {
            let row = row?;
            newest = newest.max(row.seq);
            if actions.contains(&row.action.as_str()) {
                out.push(row);
            }
        }
        Ok((out, newest))
    }

    /// The feed's cursor of `source` (0 if it has none).
    pub fn alert_cursor(&self, source: &str) -> Result<Option<i64>> {
        self.conn
            .prepare_cached("SELECT position FROM alert_cursors WHERE source = ?1")?
            .query_row([source], |r| r.get(0))
            .optional()
            .context("reading an alert cursor")
    }

    /// The newest audit seq (0 for an empty log).
    pub fn audit_head_seq(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT coalesce(max(seq), 0) FROM audit", [], |r| r.get(0))
            .context("reading the audit log's head")
    }

    /// Whether the alert feed has ever run on this cache.
    pub fn alert_feed_started(&self) -> Result<bool> {
        Ok(self.setting("alerts.feed_started")?.is_some())
    }

    /// Marks the alert feed as started (its first cursors are set).
    pub fn mark_alert_feed_started(&self, now_ms: i64) -> Result<()> {
        self.set_setting("alerts.feed_started", &now_ms.to_string())
    }

    /// `rollout_id`'s timeline entries after `after`, oldest first, at most `limit`, with
    /// their seqs.
    pub fn timeline_after(
        &self,
        rollout_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, convoy_core::comms::RecordEntry)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, time, kind, cause, payload FROM rollout_events
             WHERE rollout_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![rollout_id, after, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, time, kind, cause, payload) = row?;
            // A payload that is not JSON still moves the cursor: it raises no alert.
            let payload = serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null);
            out.push((
                seq,
                convoy_core::comms::RecordEntry {
                    at: convoy_core::time::Timestamp::from_secs(time),
                    kind,
                    cause,
                    payload,
                },
            ));
        }
        Ok(out)
    }

    /// Enqueues `alerts` and moves `source`'s cursor to `position`, in one transaction.
    /// An alert whose kind the incident's open thread on that channel already has (a second
    /// pause of the same stop) is dropped as a duplicate; an alert after a resolving one opens
    /// a new thread.
    pub fn enqueue_alerts(
        &mut self,
        source: &str,
        position: i64,
        alerts: &[NewAlert],
        now_ms: i64,
    ) -> Result<Enqueued> {
        let tx = write_tx(&self.conn)?;
        let mut done = Enqueued::default();
        {
            let mut last = tx.prepare_cached(
                "SELECT thread, update_no, resolves FROM alert_outbox
                 WHERE channel = ?1 AND incident = ?2 ORDER BY id DESC LIMIT 1",
            )?;
            let mut seen_in_thread = tx.prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM alert_outbox WHERE channel = ?1 AND thread = ?2 AND kind = ?3)",
            )?;
            let mut threads = tx.prepare_cached(
                "SELECT count(DISTINCT thread) FROM alert_outbox WHERE channel = ?1 AND incident = ?2",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO alert_outbox(channel, incident, thread, update_no, kind,
                     resolves, source, alert, created_ms, state, next_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?9)",
            )?;
            for a in alerts {
                let previous: Option<(String, i64, bool)> = last
                    .query_row(params![a.channel, a.incident], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                let (thread, update_no) = match previous {
                    Some((thread, n, false)) => {
                        let seen: bool = seen_in_thread
                            .query_row(params![a.channel, thread, a.kind], |r| r.get(0))?;
                        if seen {
                            // The open incident already said this (a second pause of the
                            // same stop): not sent twice.
                            done.duplicates += 1;
                            continue;
                        }
                        (thread, n + 1)
                    }
                    Some((_, _, true)) => {
                        let n: i64 =
                            threads.query_row(params![a.channel, a.incident], |r| r.get(0))?;
                        (format!("{}#{}", a.incident, n + 1), 0)
                    }
                    None => (format!("{}#1", a.incident), 0),
                };
                let n = insert.execute(params![
                    a.channel, a.incident, thread, update_no, a.kind, a.resolves, a.source,
                    a.alert, now_ms
                ])?;
                if n == 1 {
                    done.queued += 1;
                } else {
                    done.seen += 1;
                }
            }
            tx.execute(
                "INSERT INTO alert_cursors(source, position) VALUES (?1, ?2)
                 ON CONFLICT(source) DO UPDATE SET position = max(position, excluded.position)",
                params![source, position],
            )?;
        }
        tx.commit().context("committing enqueued alerts")?;
        Ok(done)
    }

    /// Pending alerts due at `now_ms` on `channels`, oldest first.
    pub fn due_alerts(
        &self,
        now_ms: i64,
        channels: &[String],
        limit: usize,
    ) -> Result<Vec<AlertRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, channel, incident, thread, update_no, kind, alert, created_ms, attempts,
                    next_ms, last_error, sent_ms
             FROM alert_outbox WHERE state = 'pending' AND next_ms <= ?1 ORDER BY id LIMIT ?2",
        )?;
        let limit = i64::try_from(limit.saturating_mul(4)).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![now_ms, limit], alert_row)?;
        let mut out = Vec::new();
        for row in rows {
            let row = row?;
            if channels.contains(&row.channel) {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// When the next pending alert on `channels` is due, if any.
    pub fn next_alert_due(&self, channels: &[String]) -> Result<Option<i64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT channel, min(next_ms) FROM alert_outbox WHERE state = 'pending' GROUP BY channel",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut next: Option<i64> = None;
        for row in rows {
            let (channel, at) = row?;
            if channels.contains(&channel) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        Ok(next)
    }

    /// How many alerts `channel` sent since `since_ms` (its rate limit's window).
    pub fn alerts_sent_since(&self, channel: &str, since_ms: i64) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM alert_outbox WHERE channel = ?1 AND state = 'sent' AND sent_ms >= ?2",
            )?
            .query_row(params![channel, since_ms], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Records alert `id` delivered, with its audit entry.
    pub fn mark_alert_sent(&mut self, id: i64, now_ms: i64, audit: &AuditEntry) -> Result<()> {
        let tx = write_tx(&self.conn)?;
        tx.execute(
            "UPDATE alert_outbox SET state = 'sent', sent_ms = ?2, attempts = attempts + 1,
                 last_error = NULL WHERE id = ?1 AND state = 'pending'",
            params![id, now_ms],
        )?;
        append_in(&tx, audit)?;
        tx.commit().context("committing a delivered alert")
    }

    /// Records a failed attempt at alert `id`: tried again at `next_ms`; with its audit entry.
    pub fn mark_alert_failed(
        &mut self,
        id: i64,
        next_ms: i64,
        error: &str,
        audit: &AuditEntry,
    ) -> Result<()> {
        let tx = write_tx(&self.conn)?;
        tx.execute(
            "UPDATE alert_outbox SET attempts = attempts + 1, next_ms = ?2, last_error = ?3
             WHERE id = ?1 AND state = 'pending'",
            params![id, next_ms, error],
        )?;
        append_in(&tx, audit)?;
        tx.commit().context("committing a failed alert attempt")
    }

    /// Defers alert `id` to `next_ms` without counting an attempt (its channel's rate limit).
    pub fn defer_alert(&mut self, id: i64, next_ms: i64) -> Result<()> {
        super::patiently(|| {
            self.conn.execute(
                "UPDATE alert_outbox SET next_ms = ?2 WHERE id = ?1 AND state = 'pending'",
                params![id, next_ms],
            )
        })
        .context("deferring an alert")?;
        Ok(())
    }

    /// Every alert row of `channel` (all channels if `None`), oldest first.
    pub fn alerts(&self, channel: Option<&str>) -> Result<Vec<AlertRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, channel, incident, thread, update_no, kind, alert, created_ms, attempts,
                    next_ms, last_error, sent_ms
             FROM alert_outbox WHERE ?1 IS NULL OR channel = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([channel], alert_row)?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading the alert outbox")
    }

    /// Each channel's delivery health, by channel name.
    pub fn alert_health(&self) -> Result<Vec<ChannelHealth>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT channel,
                    sum(state = 'pending'), min(CASE WHEN state = 'pending' THEN created_ms END),
                    sum(state = 'sent'), max(sent_ms),
                    (SELECT last_error FROM alert_outbox p WHERE p.channel = o.channel
                        AND p.state = 'pending' AND p.last_error IS NOT NULL
                        ORDER BY p.next_ms DESC LIMIT 1)
             FROM alert_outbox o GROUP BY channel ORDER BY channel",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ChannelHealth {
                channel: r.get(0)?,
                pending: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                oldest_pending_ms: r.get(2)?,
                sent: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                last_sent_ms: r.get(4)?,
                last_error: r.get(5)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading the alert channels' health")
    }
}

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRow> {
    Ok(AlertRow {
        id: r.get(0)?,
        channel: r.get(1)?,
        incident: r.get(2)?,
        thread: r.get(3)?,
        update_no: r.get(4)?,
        kind: r.get(5)?,
        alert: r.get(6)?,
        created_ms: r.get(7)?,
        attempts: r.get(8)?,
        next_ms: r.get(9)?,
        last_error: r.get(10)?,
        sent_ms: r.get(11)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn alert(channel: &str, incident: &str, kind: &str, resolves: bool, source: &str) -> NewAlert {
        NewAlert {
            channel: channel.into(),
            incident: incident.into(),
            kind: kind.into(),
            resolves,
            source: source.into(),
            alert: "{}".into(),
        }
    }

    fn audit(action: &str) -> AuditEntry {
        AuditEntry {
            time: convoy_core::time::Timestamp::from_secs(1_800_000_000),
            actor: "alerts".into(),
            action: action.into(),
            payload: serde_json::json!({}),
        }
    }

    #[test]
    fn a_source_read_twice_enqueues_once_and_repeats_of_an_incident_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("a.db")).unwrap();
        let first = [
            alert("hook", "r1/stop", "gate_paused", false, "r1#4"),
            alert("mail", "r1/stop", "gate_paused", false, "r1#4"),
        ];
        assert_eq!(s.enqueue_alerts("r1", 4, &first, 10).unwrap().queued, 2);
        // The feed crashed before it knew the cursor moved, and reads entry 4 again.
        let again = s.enqueue_alerts("r1", 4, &first, 11).unwrap();
        assert_eq!(again.queued, 0);
        // A second pause of the same stop (another entry) is a duplicate of the incident.
        let dup = s
            .enqueue_alerts(
                "r1",
                5,
                &[alert("hook", "r1/stop", "gate_paused", false, "r1#5")],
                12,
            )
            .unwrap();
        assert_eq!(dup.duplicates, 1);
        // The rollback is an update in the same thread, the resume resolves it, and the next
        // stop opens a new thread.
        s.enqueue_alerts(
            "r1",
            6,
            &[alert("hook", "r1/stop", "gate_rolled_back", false, "r1#6")],
            13,
        )
        .unwrap();
        s.enqueue_alerts(
            "r1",
            7,
            &[alert("hook", "r1/stop", "resumed", true, "r1#7")],
            14,
        )
        .unwrap();
        s.enqueue_alerts(
            "r1",
            9,
            &[alert("hook", "r1/stop", "gate_paused", false, "r1#9")],
            15,
        )
        .unwrap();
        let rows = s.alerts(Some("hook")).unwrap();
        let threads: Vec<(&str, i64)> = rows
            .iter()
            .map(|r| (r.thread.as_str(), r.update_no))
            .collect();
        assert_eq!(
            threads,
            [
                ("r1/stop#1", 0),
                ("r1/stop#1", 1),
                ("r1/stop#1", 2),
                ("r1/stop#2", 0)
            ]
        );
    }

    #[test]
    fn delivery_outcomes_are_recorded_with_their_audit_entries_and_health() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("a.db")).unwrap();
        s.enqueue_alerts(
            "r1",
            1,
            &[
                alert("hook", "r1/stop", "gate_paused", false, "r1#1"),
                alert("mail", "r1/stop", "gate_paused", false, "r1#1"),
            ],
            100,
        )
        .unwrap();
        let channels = vec!["hook".to_owned(), "mail".to_owned()];
        let due = s.due_alerts(100, &channels, 10).unwrap();
        assert_eq!(due.len(), 2);
        s.mark_alert_failed(due[0].id, 2_100, "HTTP 503", &audit("alert.failed"))
            .unwrap();
        s.mark_alert_sent(due[1].id, 150, &audit("alert.sent"))
            .unwrap();
        assert!(s.due_alerts(1_000, &channels, 10).unwrap().is_empty());
        assert_eq!(s.next_alert_due(&channels).unwrap(), Some(2_100));
        assert_eq!(s.alerts_sent_since("mail", 0).unwrap(), 1);
        let health = s.alert_health().unwrap();
        assert_eq!(health[0].channel, "hook");
        assert_eq!(health[0].pending, 1);
        assert_eq!(health[0].last_error.as_deref(), Some("HTTP 503"));
        assert_eq!(health[1].sent, 1);
        let chain = s.verify_audit().unwrap();
        assert_eq!(chain.entries, 2, "each outcome is audited");
    }
}
