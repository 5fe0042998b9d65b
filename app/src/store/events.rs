//! Rollout timelines (the ordered events of each rollout, exported as CSV, JSON and
//! Markdown) and device events (what happened to one device: offered, installed, reverted).
//!
//! The rollout engine appends an [`Event`] for every state change and gate decision (with the
//! cause, so a war room can read why); this module stores them and writes them out. It does not
//! decide anything about rollouts.

use super::Store;
use anyhow::{Context, Result};
use convoy_core::rollout::RolloutEvent;
use convoy_core::time::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use std::io::Write;

/// One event of a rollout's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub rollout_id: String,
    /// 1, 2, 3, ... within the rollout.
    pub seq: i64,
    /// RFC 3339 in exports; Unix seconds in the cache.
    #[serde(serialize_with = "rfc3339")]
    pub time: Timestamp,
    /// `wave.started`, `gate.hold`, `rollout.paused`, ...
    pub kind: String,
    /// Why: the gate, the operator, or the metric that triggered it.
    pub cause: String,
    /// Details as compact JSON.
    pub payload: String,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `serialize_with` passes a reference.
fn rfc3339<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339())
}

/// One event in a device's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceEvent {
    /// Global append order.
    pub seq: i64,
    pub device_id: String,
    /// The rollout it belongs to, if any.
    pub rollout_id: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub time: Timestamp,
    /// `offered`, `downloaded`, `installed`, `reverted`, `report.rejected`, ...
    pub kind: String,
    /// Details as compact JSON.
    pub payload: String,
}

/// A device event to append (see [`Store::append_device_events`]).
#[derive(Clone, Debug, PartialEq)]
pub struct NewDeviceEvent {
    pub device_id: String,
    pub rollout_id: Option<String>,
    pub time: Timestamp,
    pub kind: String,
    pub payload: serde_json::Value,
}

/// When and how fast the simulated clock of a rollout's first engine run started, so a
/// resumed run continues the same time (with a time scale of 1 it is simply the wall clock).
#[derive(Clone, Debug, PartialEq)]
pub struct RunClock {
    pub rollout_id: String,
    pub release_id: String,
    /// The simulated time at the start of the first run.
    pub clock_start: Timestamp,
    /// The wall time (Unix milliseconds) at the start of the first run.
    pub wall_began_ms: i64,
    /// Simulated seconds per wall second.
    pub time_scale: f64,
}

/// Appends rollout log events inside a caller's transaction (see
/// [`Store::commit_decision_logged`](super::Store::commit_decision_logged)).
pub(crate) fn append_log_in(
    tx: &rusqlite::Transaction<'_>,
    rollout_id: &str,
    first_seq: usize,
    events: &[RolloutEvent],
) -> Result<()> {
    let mut stmt =
        tx.prepare_cached("INSERT INTO rollout_log(rollout_id, seq, event) VALUES (?1, ?2, ?3)")?;
    for (i, e) in events.iter().enumerate() {
        let seq = i64::try_from(first_seq + i).context("rollout log too long")?;
        let text = serde_json::to_string(e).context("encoding a rollout event")?;
        stmt.execute(params![rollout_id, seq, text])
            .with_context(|| format!("appending event {seq} to the log of rollout {rollout_id}"))?;
    }
    Ok(())
}

/// Timeline export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TimelineFormat {
    Csv,
    Json,
    Md,
}

impl Store {
    /// Appends an event to `rollout_id`'s timeline and returns its seq.
    pub fn append_event(
        &mut self,
        rollout_id: &str,
        time: Timestamp,
        kind: &str,
        cause: &str,
        payload: &serde_json::Value,
    ) -> Result<i64> {
        let payload = serde_json::to_string(payload).context("encoding the event payload")?;
        let tx = super::write_tx(&self.conn)?;
        let seq: i64 = tx.query_row(
            "SELECT coalesce(max(seq), 0) + 1 FROM rollout_events WHERE rollout_id = ?1",
            [rollout_id],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO rollout_events(rollout_id, seq, time, kind, cause, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![rollout_id, seq, time.secs(), kind, cause, payload],
        )
        .with_context(|| format!("appending event {seq} of rollout {rollout_id}"))?;
        tx.commit()?;
        Ok(seq)
    }

    /// The seq of `rollout_id`'s newest timeline event (0 when it has none).
    pub fn newest_timeline_seq(&self, rollout_id: &str) -> Result<i64> {
        self.conn
            .prepare_cached(
                "SELECT coalesce(max(seq), 0) FROM rollout_events WHERE rollout_id = ?1",
            )?
            .query_row([rollout_id], |r| r.get(0))
            .with_context(|| format!("reading the timeline of rollout {rollout_id}"))
    }

    /// Adds timeline events with the seqs another cache gave them (a copy kept in step with a
    /// server), in one transaction: all of them or none.
    pub fn copy_timeline_events(&mut self, rollout_id: &str, events: &[Event]) -> Result<()> {
        let tx = super::write_tx(&self.conn)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO rollout_events(rollout_id, seq, time, kind, cause, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for e in events {
                stmt.execute(params![
                    rollout_id,
                    e.seq,
                    e.time.secs(),
                    e.kind,
                    e.cause,
                    e.payload
                ])
                .with_context(|| format!("copying event {} of rollout {rollout_id}", e.seq))?;
            }
        }
        tx.commit()
            .with_context(|| format!("committing the timeline of rollout {rollout_id}"))
    }

    /// Appends an event to a device's history and returns its seq.
    pub fn append_device_event(
        &mut self,
        device_id: &str,
        rollout_id: Option<&str>,
        time: Timestamp,
        kind: &str,
        payload: &serde_json::Value,
    ) -> Result<i64> {
        let payload = serde_json::to_string(payload).context("encoding the event payload")?;
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO device_events(device_id, rollout_id, time, kind, payload)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        super::patiently(|| {
            insert.execute(params![device_id, rollout_id, time.secs(), kind, payload])
        })
        .with_context(|| format!("appending an event of device {device_id}"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Appends many device events in one transaction (a rollout engine writes thousands per
    /// wave; one transaction each would cost one sync each). Returns how many were written.
    pub fn append_device_events(&mut self, events: &[NewDeviceEvent]) -> Result<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        let tx = super::write_tx(&self.conn)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO device_events(device_id, rollout_id, time, kind, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for e in events {
                let payload =
                    serde_json::to_string(&e.payload).context("encoding the event payload")?;
                stmt.execute(params![
                    e.device_id,
                    e.rollout_id,
                    e.time.secs(),
                    e.kind,
                    payload
                ])
                .with_context(|| format!("appending an event of device {}", e.device_id))?;
            }
        }
        tx.commit().context("committing device events")?;
        Ok(events.len())
    }

    /// Appends `events` to `rollout_id`'s replayable log (the rollout's whole core event log,
    /// telemetry included), numbered from `first_seq`, in one transaction.
    pub fn append_rollout_log(
        &mut self,
        rollout_id: &str,
        first_seq: usize,
        events: &[RolloutEvent],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let tx = super::write_tx(&self.conn)?;
        append_log_in(&tx, rollout_id, first_seq, events)?;
        tx.commit().context("committing the rollout log")
    }

    /// Whether `rollout_id` has started: its timeline has an event (an engine wrote one when
    /// it created the rollout). A request whose rollout has started is continued with
    /// `--resume`, never dispatched again.
    pub fn rollout_started(&self, rollout_id: &str) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM rollout_events WHERE rollout_id = ?1)")?
            .query_row([rollout_id], |r| r.get(0))
            .with_context(|| format!("reading the timeline of rollout {rollout_id}"))
    }

    /// How many events `rollout_id`'s timeline holds.
    pub fn timeline_len(&self, rollout_id: &str) -> Result<i64> {
        self.conn
            .prepare_cached("SELECT count(*) FROM rollout_events WHERE rollout_id = ?1")?
            .query_row([rollout_id], |r| r.get(0))
            .with_context(|| format!("reading the timeline of rollout {rollout_id}"))
    }

    /// The ids of the `limit` rollouts with the newest timeline activity, newest first, ties
    /// by id.
    pub fn recent_rollouts(&self, limit: usize) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rollout_id FROM rollout_events GROUP BY rollout_id
             ORDER BY MAX(time) DESC, rollout_id LIMIT ?1",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        stmt.query_map([limit], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()
            .context("listing the rollouts in the cache")
    }

    /// The length of `rollout_id`'s replayable log: its seqs run from 0 without gaps, so this
    /// is the next seq, and 0 means the engine has logged nothing of it (it has not started).
    pub fn rollout_log_len(&self, rollout_id: &str) -> Result<i64> {
        self.conn
            .prepare_cached(
                "SELECT coalesce(max(seq) + 1, 0) FROM rollout_log WHERE rollout_id = ?1",
            )?
            .query_row([rollout_id], |r| r.get(0))
            .with_context(|| format!("reading the log of rollout {rollout_id}"))
    }

    /// The replayable log of `rollout_id`, in order (empty if none was recorded).
    pub fn rollout_log(&self, rollout_id: &str) -> Result<Vec<RolloutEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, event FROM rollout_log WHERE rollout_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([rollout_id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, text) =
                row.with_context(|| format!("reading the log of rollout {rollout_id}"))?;
            if usize::try_from(seq).ok() != Some(out.len()) {
                anyhow::bail!("the log of rollout {rollout_id} has a gap before event {seq}");
            }
            let event = serde_json::from_str(&text)
                .with_context(|| format!("event {seq} of the log of rollout {rollout_id}"))?;
            out.push(event);
        }
        Ok(out)
    }

    /// Feeds the log of `rollout_id` to `f` event by event, in order, without holding it
    /// whole (a long rollout's log is hundreds of thousands of events); returns how many.
    pub fn for_each_rollout_event(
        &self,
        rollout_id: &str,
        mut f: impl FnMut(&RolloutEvent),
    ) -> Result<usize> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, event FROM rollout_log WHERE rollout_id = ?1 ORDER BY seq",
        )?;
        let mut rows = stmt.query([rollout_id])?;
        let mut n = 0usize;
        while let Some(row) = rows
            .next()
            .with_context(|| format!("reading the log of rollout {rollout_id}"))?
        {
            let seq: i64 = row.get(0)?;
            if usize::try_from(seq).ok() != Some(n) {
                anyhow::bail!("the log of rollout {rollout_id} has a gap before event {seq}");
            }
            let text = row.get_ref(1)?.as_str()?;
            let event: RolloutEvent = serde_json::from_str(text)
                .with_context(|| format!("event {seq} of the log of rollout {rollout_id}"))?;
            f(&event);
            n += 1;
        }
        Ok(n)
    }

    /// The last event of the log of `rollout_id`, if it has one.
    pub fn last_rollout_event(&self, rollout_id: &str) -> Result<Option<RolloutEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, event FROM rollout_log WHERE rollout_id = ?1 ORDER BY seq DESC LIMIT 1",
        )?;
        let mut rows = stmt.query([rollout_id])?;
        let Some(row) = rows
            .next()
            .with_context(|| format!("reading the log of rollout {rollout_id}"))?
        else {
            return Ok(None);
        };
        let seq: i64 = row.get(0)?;
        let text = row.get_ref(1)?.as_str()?;
        let event = serde_json::from_str(text)
            .with_context(|| format!("event {seq} of the log of rollout {rollout_id}"))?;
        Ok(Some(event))
    }

    /// Records the clock of a rollout's first engine run (kept if one is there already).
    pub fn record_run_clock(&mut self, clock: &RunClock) -> Result<()> {
        super::patiently(|| {
            self.conn.execute(
                "INSERT OR IGNORE INTO rollout_runs(rollout_id, release_id, clock_start,
                     wall_began_ms, time_scale) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    clock.rollout_id,
                    clock.release_id,
                    clock.clock_start.secs(),
                    clock.wall_began_ms,
                    clock.time_scale
                ],
            )
        })
        .with_context(|| format!("recording the clock of rollout {}", clock.rollout_id))?;
        Ok(())
    }

    /// The clock of `rollout_id`'s first engine run, if recorded.
    pub fn run_clock(&self, rollout_id: &str) -> Result<Option<RunClock>> {
        self.conn
            .query_row(
                "SELECT release_id, clock_start, wall_began_ms, time_scale FROM rollout_runs
                 WHERE rollout_id = ?1",
                [rollout_id],
                |r| {
                    Ok(RunClock {
                        rollout_id: rollout_id.to_owned(),
                        release_id: r.get(0)?,
                        clock_start: Timestamp::from_secs(r.get(1)?),
                        wall_began_ms: r.get(2)?,
                        time_scale: r.get(3)?,
                    })
                },
            )
            .optional()
            .with_context(|| format!("reading the clock of rollout {rollout_id}"))
    }

    /// The history of `device_id`, oldest first.
    pub fn device_events(&self, device_id: &str) -> Result<Vec<DeviceEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, device_id, rollout_id, time, kind, payload FROM device_events
             WHERE device_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([device_id], device_event_row)?;
        rows.collect::<rusqlite::Result<_>>()
            .with_context(|| format!("reading the events of device {device_id}"))
    }

    /// Devices with an event of `kind` whose payload names `release` (`"release": ID`), by id:
    /// e.g. the devices that reported a release installed.
    pub fn devices_with_release_event(
        &self,
        kind: &str,
        release: &str,
    ) -> Result<std::collections::BTreeSet<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT device_id FROM device_events
             WHERE kind = ?1 AND json_extract(payload, '$.release') = ?2",
        )?;
        let rows = stmt.query_map(params![kind, release], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()
            .with_context(|| format!("reading the devices with a {kind} event of {release}"))
    }

    /// The timeline of `rollout_id` as the communication drafts read it (`convoy_core::comms`):
    /// each event with its payload parsed; a payload that is not JSON is an error naming the
    /// event (`convoy rollout comms` and the console's reports refuse such a record).
    pub fn rollout_record(&self, rollout_id: &str) -> Result<Vec<convoy_core::comms::RecordEntry>> {
        self.timeline(rollout_id)?
            .into_iter()
            .map(|e| {
                let payload = serde_json::from_str(&e.payload).with_context(|| {
                    format!(
                        "rollout {} event {} ({}): its payload is not JSON",
                        e.rollout_id, e.seq, e.kind
                    )
                })?;
                Ok(convoy_core::comms::RecordEntry {
                    at: e.time,
                    kind: e.kind,
                    cause: e.cause,
                    payload,
                })
            })
            .collect()
    }

    /// The timeline of `rollout_id`, in seq order.
    pub fn timeline(&self, rollout_id: &str) -> Result<Vec<Event>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rollout_id, seq, time, kind, cause, payload FROM rollout_events
             WHERE rollout_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([rollout_id], |r| {
            Ok(Event {
                rollout_id: r.get(0)?,
                seq: r.get(1)?,
                time: Timestamp::from_secs(r.get(2)?),
                kind: r.get(3)?,
                cause: r.get(4)?,
                payload: r.get(5)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .with_context(|| format!("reading the timeline of rollout {rollout_id}"))
    }
}

/// Writes `events` in `format`.
pub fn write_timeline(out: &mut dyn Write, events: &[Event], format: TimelineFormat) -> Result<()> {
    match format {
        TimelineFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(["rollout_id", "seq", "time", "kind", "cause", "payload"])?;
            // Causes and payloads carry operators' reasons: safe to open in a spreadsheet.
            for e in events {
                w.write_record(
                    [
                        e.rollout_id.as_str(),
                        &e.seq.to_string(),
                        &e.time.to_rfc3339(),
                        &e.kind,
                        &e.cause,
                        &e.payload,
                    ]
                    .map(|cell| crate::csv_safe::neutralise(cell).into_owned()),
                )?;
            }
            w.flush()?;
        }
        TimelineFormat::Json => {
            let rows: Vec<serde_json::Value> = events
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "rollout_id": e.rollout_id,
                        "seq": e.seq,
                        "time": e.time.to_rfc3339(),
                        "kind": e.kind,
                        "cause": e.cause,
                        "payload": serde_json::from_str::<serde_json::Value>(&e.payload)
                            .unwrap_or_else(|_| serde_json::Value::String(e.payload.clone())),
                    })
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &rows)?;
            writeln!(out)?;
        }
        TimelineFormat::Md => {
            writeln!(out, "| seq | time | kind | cause | details |")?;
            writeln!(out, "| ---: | --- | --- | --- | --- |")?;
            for e in events {
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    e.seq,
                    e.time.to_rfc3339(),
                    md_cell(&e.kind),
                    md_cell(&e.cause),
                    md_cell(&e.payload)
                )?;
            }
        }
    }
    Ok(())
}

/// Escapes a Markdown table cell: pipes would split the cell, newlines would end the row.
fn md_cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// One `device_events` row selected as `seq, device_id, rollout_id, time, kind, payload`.
pub(crate) fn device_event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceEvent> {
    Ok(DeviceEvent {
        seq: r.get(0)?,
        device_id: r.get(1)?,
        rollout_id: r.get(2)?,
        time: Timestamp::from_secs(r.get(3)?),
        kind: r.get(4)?,
        payload: r.get(5)?,
    })
}

#[cfg(test)]
mod log_tests {
    use super::*;
    use crate::store::audit::AuditEntry;
    use crate::store::outbox::{OutboxCommand, RolloutLogAppend};
    use convoy_core::rollout::{Cause, EventKind};

    fn event(at: i64, kind: EventKind) -> RolloutEvent {
        RolloutEvent {
            at: Timestamp::from_secs(at),
            cause: Cause::Timer,
            kind,
        }
    }

    fn decision(rollout: &str) -> AuditEntry {
        AuditEntry {
            time: Timestamp::from_secs(100),
            actor: "convoy-engine".into(),
            action: "rollout.offer".into(),
            payload: serde_json::json!({ "rollout": rollout }),
        }
    }

    fn offer(device: &str) -> OutboxCommand {
        OutboxCommand {
            device_id: device.into(),
            kind: "offer".into(),
            payload: serde_json::json!({"issued_at": 100, "action": {}}),
        }
    }

    #[test]
    fn the_log_is_written_with_decisions_and_read_back_in_order_per_rollout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("c.db")).expect("open");
        let first = [
            event(1, EventKind::WaveStarted { wave: 0 }),
            event(2, EventKind::Resumed),
        ];
        let d = store
            .commit_decision_logged(
                &decision("r1"),
                &[offer("CV1"), offer("CV2")],
                Some(RolloutLogAppend {
                    rollout_id: "r1",
                    first_seq: 0,
                    events: &first,
                }),
            )
            .expect("decision with its log");
        store
            .append_rollout_log("r1", 2, &[event(3, EventKind::Completed)])
            .expect("rest of the log");
        store
            .commit_decision(&decision("r2"), &[offer("CV3")])
            .expect("another rollout's decision");
        let log = store.rollout_log("r1").expect("log");
        assert_eq!(log.len(), 3);
        assert_eq!(log[..2], first);
        assert_eq!(log[2].kind, EventKind::Completed);
        assert!(store.rollout_log("r2").expect("empty log").is_empty());
        // Read event by event: the same events in the same order, and the last one alone.
        let mut streamed = Vec::new();
        let n = store
            .for_each_rollout_event("r1", |e| streamed.push(e.clone()))
            .expect("streamed");
        assert_eq!((n, &streamed), (3, &log));
        assert_eq!(
            store.last_rollout_event("r1").expect("last").as_ref(),
            log.last()
        );
        assert!(store.last_rollout_event("r2").expect("none").is_none());
        // Only r1's unacknowledged commands belong to r1.
        let mine: Vec<String> = store
            .pending_for_rollout("r1")
            .expect("pending")
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(mine, d.command_ids);
        store
            .mark_acked_many(&d.command_ids[..1], Timestamp::from_secs(101))
            .expect("ack");
        assert_eq!(
            store.pending_for_rollout("r1").expect("pending").len(),
            1,
            "acknowledged commands are not adopted"
        );
        // Writing an event twice at the same place is refused, not silently duplicated.
        assert!(
            store
                .append_rollout_log("r1", 2, &[event(4, EventKind::Completed)])
                .is_err()
        );
    }

    #[test]
    fn the_run_clock_keeps_the_first_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("c.db")).expect("open");
        assert_eq!(store.run_clock("r1").expect("none"), None);
        let first = RunClock {
            rollout_id: "r1".into(),
            release_id: "t300-2.5.0".into(),
            clock_start: Timestamp::from_secs(1_795_000_000),
            wall_began_ms: 1_795_000_000_123,
            time_scale: 2400.0,
        };
        store.record_run_clock(&first).expect("record");
        store
            .record_run_clock(&RunClock {
                wall_began_ms: 1,
                ..first.clone()
            })
            .expect("a second record is ignored");
        assert_eq!(store.run_clock("r1").expect("read"), Some(first));
    }
}
