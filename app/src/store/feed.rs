//! The cache's event feed: rows of the rollout timelines and device histories in the order
//! they were written, by their global sequence numbers, for the server's live event stream
//! (`serve/stream.rs`).
//!
//! Device events have a global `seq`; rollout events get one from `rollout_event_log`, which a
//! trigger fills on every insert (schema v5). A read is one indexed range read per table.
//!
//! Deliberately not here: formatting frames, the stream's cursor and its clients.

use anyhow::{Context, Result};
use rusqlite::params;

use super::Store;

/// A rollout timeline event as the feed reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedRolloutEvent {
    /// The event's position in `rollout_event_log` (global across rollouts).
    pub log_seq: i64,
    pub rollout_id: String,
    /// The event's seq within its rollout.
    pub seq: i64,
    /// Unix seconds.
    pub time: i64,
    pub kind: String,
    pub cause: String,
    /// The stored JSON text.
    pub payload: String,
}

/// A device history event as the feed reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedDeviceEvent {
    /// The event's global seq.
    pub seq: i64,
    pub device_id: String,
    pub rollout_id: Option<String>,
    /// Unix seconds.
    pub time: i64,
    pub kind: String,
    /// The stored JSON text.
    pub payload: String,
}

impl Store {
    /// The newest positions of the feed: (device event seq, rollout event log seq), 0 when a
    /// table is empty.
    pub fn feed_heads(&self) -> Result<(i64, i64)> {
        let device: i64 = self
            .conn
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM device_events")?
            .query_row([], |r| r.get(0))
            .context("reading the newest device event")?;
        let rollout: i64 = self
            .conn
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM rollout_event_log")?
            .query_row([], |r| r.get(0))
            .context("reading the newest rollout event")?;
        Ok((device, rollout))
    }

    /// Rollout events with a log position in `(after, until]`, in order, at most `limit`.
    pub fn feed_rollout_events(
        &self,
        after: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<FeedRolloutEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT l.seq, r.rollout_id, r.seq, r.time, r.kind, r.cause, r.payload
             FROM rollout_event_log l
             JOIN rollout_events r ON r.rollout_id = l.rollout_id AND r.seq = l.event_seq
             WHERE l.seq > ?1 AND l.seq <= ?3 ORDER BY l.seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit, until], |r| {
            Ok(FeedRolloutEvent {
                log_seq: r.get(0)?,
                rollout_id: r.get(1)?,
                seq: r.get(2)?,
                time: r.get(3)?,
                kind: r.get(4)?,
                cause: r.get(5)?,
                payload: r.get(6)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading the rollout event feed")
    }

    /// Device events with a seq in `(after, until]`, in order, at most `limit`.
    pub fn feed_device_events(
        &self,
        after: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<FeedDeviceEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, device_id, rollout_id, time, kind, payload FROM device_events
             WHERE seq > ?1 AND seq <= ?3 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit, until], |r| {
            Ok(FeedDeviceEvent {
                seq: r.get(0)?,
                device_id: r.get(1)?,
                rollout_id: r.get(2)?,
                time: r.get(3)?,
                kind: r.get(4)?,
                payload: r.get(5)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()
            .context("reading the device event feed")
    }
}
