//! The live event stream: one poller thread reads new rows of the cache's event tables by
//! sequence number and broadcasts them to every connected server-sent-events client.
//!
//! Why polling the cache and not a channel from the engine: whoever writes events (a
//! `convoy rollout run` in another process today, the server's own engine later) writes them to
//! the cache first, so the cache is the one place every writer meets. Device events have a
//! global `seq`; rollout events get one from `rollout_event_log`, which a trigger fills on every
//! insert (schema v5). One poll is two indexed range reads, so polling every 200 ms costs little
//! whatever the number of clients: clients share the one poller through a broadcast channel.
//!
//! The stream starts at the newest rows when the server starts: it is a live feed, not a
//! replay (read the timeline and history endpoints for the past). A client that falls more than
//! the channel's capacity behind gets a `lagged` event naming how many events it missed.
//!
//! Not here: resuming with `Last-Event-ID`, filtering by rollout or device on the server.

use anyhow::{Context, Result};
use rusqlite::params;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;

use crate::store::Store;

/// Rows read per table per poll; more wait for the next poll.
const BATCH_ROWS: i64 = 2_000;

/// One event as sent on the stream: an SSE frame, formatted once for every client.
pub type Frame = Arc<str>;

#[derive(Serialize)]
struct DeviceFrame<'a> {
    seq: i64,
    device_id: &'a str,
    rollout_id: Option<&'a str>,
    time: i64,
    kind: &'a str,
    payload: serde_json::Value,
}

#[derive(Serialize)]
struct RolloutFrame<'a> {
    rollout_id: &'a str,
    seq: i64,
    time: i64,
    kind: &'a str,
    cause: &'a str,
    payload: serde_json::Value,
}

/// Formats one SSE event: `event:`, `id:` and one `data:` line of compact JSON (which holds no
/// newline, so it needs no splitting).
pub fn sse_frame(event: &str, id: &str, data: &str) -> Frame {
    Arc::from(format!("event: {event}\nid: {id}\ndata: {data}\n\n"))
}

/// Where the poller has read up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub device_seq: i64,
    pub rollout_log_seq: i64,
}

/// The newest rows now: the stream starts after them.
pub fn cursor_now(store: &Store) -> Result<Cursor> {
    let conn = store.conn();
    Ok(Cursor {
        device_seq: conn
            .query_row("SELECT coalesce(max(seq), 0) FROM device_events", [], |r| {
                r.get(0)
            })
            .context("reading the newest device event")?,
        rollout_log_seq: conn
            .query_row(
                "SELECT coalesce(max(seq), 0) FROM rollout_event_log",
                [],
                |r| r.get(0),
            )
            .context("reading the newest rollout event")?,
    })
}

/// Reads the rows after `cursor`, formats them as frames in sequence order (rollout events
/// first, then device events), and moves the cursor past them.
pub fn poll_once(store: &Store, cursor: &mut Cursor) -> Result<Vec<Frame>> {
    let mut frames = Vec::new();
    let conn = store.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT l.seq, r.rollout_id, r.seq, r.time, r.kind, r.cause, r.payload
         FROM rollout_event_log l
         JOIN rollout_events r ON r.rollout_id = l.rollout_id AND r.seq = l.event_seq
         WHERE l.seq > ?1 ORDER BY l.seq LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![cursor.rollout_log_seq, BATCH_ROWS])?;
    while let Some(r) = rows.next()? {
        let log_seq: i64 = r.get(0)?;
        let rollout_id: String = r.get(1)?;
        let seq: i64 = r.get(2)?;
        let payload: String = r.get(6)?;
        let frame = RolloutFrame {
            rollout_id: &rollout_id,
            seq,
            time: r.get(3)?,
            kind: &r.get::<_, String>(4)?,
            cause: &r.get::<_, String>(5)?,
            payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        };
        frames.push(sse_frame(
            "rollout",
            &format!("r{log_seq}"),
            &serde_json::to_string(&frame)?,
        ));
        cursor.rollout_log_seq = log_seq;
    }
    drop(rows);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, device_id, rollout_id, time, kind, payload FROM device_events
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![cursor.device_seq, BATCH_ROWS])?;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let device_id: String = r.get(1)?;
        let rollout_id: Option<String> = r.get(2)?;
        let payload: String = r.get(5)?;
        let frame = DeviceFrame {
            seq,
            device_id: &device_id,
            rollout_id: rollout_id.as_deref(),
            time: r.get(3)?,
            kind: &r.get::<_, String>(4)?,
            payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        };
        frames.push(sse_frame(
            "device",
            &format!("d{seq}"),
            &serde_json::to_string(&frame)?,
        ));
        cursor.device_seq = seq;
    }
    Ok(frames)
}

/// The running poller; stops when dropped.
pub struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    /// Starts a thread that opens its own connection to the cache and polls it every
    /// `interval`; returns once the connection is open and the starting point read.
    pub fn start(cache: &Path, interval: Duration, tx: broadcast::Sender<Frame>) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let cache = cache.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let thread = std::thread::Builder::new()
            .name("serve-events".into())
            .spawn(move || {
                let opened = Store::open_existing(&cache)
                    .and_then(|store| cursor_now(&store).map(|cursor| (store, cursor)));
                let (store, mut cursor) = match opened {
                    Ok(v) => {
                        let _ = ready_tx.send(Ok(()));
                        v
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(interval);
                    match poll_once(&store, &mut cursor) {
                        Ok(frames) => {
                            for f in frames {
                                // No subscriber is not an error: the cursor moves on anyway.
                                let _ = tx.send(f);
                            }
                        }
                        // A locked or busy cache is transient: try again at the next tick.
                        Err(e) => eprintln!("serve: polling the cache for events: {e:#}"),
                    }
                }
            })
            .context("starting the event poller")?;
        ready_rx
            .recv()
            .context("the event poller stopped while opening the cache")??;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_core::time::Timestamp;

    #[test]
    fn poll_returns_only_new_rows_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(&dir.path().join("c.db")).expect("open");
        let t = Timestamp::from_secs(100);
        store
            .append_event("r0", t, "rollout.created", "old", &serde_json::json!({}))
            .expect("event");
        let mut cursor = cursor_now(&store).expect("cursor");
        assert!(poll_once(&store, &mut cursor).expect("poll").is_empty());
        store
            .append_event(
                "r1",
                t,
                "wave.started",
                "gate",
                &serde_json::json!({"w": 1}),
            )
            .expect("event");
        store
            .append_device_event("d1", Some("r1"), t, "offered", &serde_json::json!({}))
            .expect("event");
        store
            .append_event("r0", t, "rollout.paused", "op", &serde_json::json!({}))
            .expect("event");
        let frames = poll_once(&store, &mut cursor).expect("poll");
        assert_eq!(frames.len(), 3);
        assert!(
            frames[0].starts_with("event: rollout\nid: r2\n"),
            "{}",
            frames[0]
        );
        assert!(
            frames[0].contains(r#""rollout_id":"r1","seq":1"#),
            "{}",
            frames[0]
        );
        assert!(
            frames[1].contains(r#""rollout_id":"r0","seq":2"#),
            "{}",
            frames[1]
        );
        assert!(
            frames[2].starts_with("event: device\nid: d1\n"),
            "{}",
            frames[2]
        );
        assert!(frames[2].contains(r#""kind":"offered""#));
        assert!(poll_once(&store, &mut cursor).expect("poll").is_empty());
    }
}
