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
//! A new client gets the events written from the moment it connects: a live feed (read the
//! timeline and history endpoints for the past). Every event's `id:` is the stream's position
//! after it in both sequences, `r{rollout log seq}.d{device event seq}`, so a client that
//! reconnects with `Last-Event-ID` (as a browser's `EventSource` does by itself) is first sent
//! what it missed, read from the cache (at most [`MAX_REPLAY`] events, then a `lagged` event),
//! then the live feed, with no event twice. A client that falls more than the channel's capacity
//! behind gets a `lagged` event naming how many events it missed.
//!
//! Streams are bounded ([`StreamSlots`]): at most `max_streams_per_token` open at once on one
//! token (more get 429) and `max_streams` in all (more get 503), the second below the
//! connection limit, so that one token's streams (260 once took every connection and locked the
//! admin out) can never hold the server. A stream's slot is given back when its response body is
//! dropped, which hyper does as soon as the connection closes.
//!
//! Not here: filtering by rollout or device on the server.

use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::broadcast;

use crate::store::Store;

/// Rows read per table per poll; more wait for the next poll.
const BATCH_ROWS: i64 = 2_000;

/// The most events replayed to a client that reconnects with `Last-Event-ID`; past it, the
/// client gets a `lagged` event and reads the timeline and history endpoints instead.
pub const MAX_REPLAY: usize = 10_000;

/// One event as sent on the stream: an SSE frame formatted once for every client, the row it
/// carries, and the stream's position after it (its id).
#[derive(Clone, Debug)]
pub struct Frame {
    pub text: Arc<str>,
    pub row: Row,
    pub after: Cursor,
}

/// The row an event carries, by its own sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// A `rollout_event_log` seq.
    Rollout(i64),
    /// A `device_events` seq.
    Device(i64),
}

impl Row {
    /// Whether a client that has seen up to `seen` has this row.
    pub fn seen_by(self, seen: Cursor) -> bool {
        match self {
            Row::Rollout(s) => s <= seen.rollout_log_seq,
            Row::Device(s) => s <= seen.device_seq,
        }
    }
}

impl Frame {
    /// The frame as sent to a client that had already seen up to `floor` when the live feed
    /// began for it: its id raised to `floor` where the stream's position is behind it, so that
    /// a reconnect with that id does not replay what was already sent.
    pub fn text_above(&self, floor: Cursor) -> std::borrow::Cow<'_, str> {
        let id = Cursor {
            device_seq: self.after.device_seq.max(floor.device_seq),
            rollout_log_seq: self.after.rollout_log_seq.max(floor.rollout_log_seq),
        };
        if id == self.after {
            std::borrow::Cow::Borrowed(&self.text)
        } else {
            let old = format!("\nid: {}\n", self.after.id());
            std::borrow::Cow::Owned(self.text.replacen(&old, &format!("\nid: {}\n", id.id()), 1))
        }
    }
}

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

/// Formats one SSE event: `event:`, `id:` (the position `after` it) and one `data:` line of
/// compact JSON (which holds no newline, so it needs no splitting).
pub fn sse_frame(event: &str, row: Row, after: Cursor, data: &str) -> Frame {
    Frame {
        text: Arc::from(format!(
            "event: {event}\nid: {}\ndata: {data}\n\n",
            after.id()
        )),
        row,
        after,
    }
}

/// Where the poller has read up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub device_seq: i64,
    pub rollout_log_seq: i64,
}

impl Cursor {
    /// The SSE id of this position: `r{rollout_log_seq}.d{device_seq}`.
    pub fn id(self) -> String {
        format!("r{}.d{}", self.rollout_log_seq, self.device_seq)
    }

    /// Parses an id this stream sent (`Last-Event-ID`); `None` for anything else.
    pub fn parse(id: &str) -> Option<Self> {
        let (r, d) = id.trim().split_once('.')?;
        let rollout_log_seq: i64 = r.strip_prefix('r')?.parse().ok()?;
        let device_seq: i64 = d.strip_prefix('d')?.parse().ok()?;
        (rollout_log_seq >= 0 && device_seq >= 0).then_some(Self {
            device_seq,
            rollout_log_seq,
        })
    }
}

/// The newest rows now: the stream starts after them.
pub fn cursor_now(store: &Store) -> Result<Cursor> {
    let (device_seq, rollout_log_seq) = store.feed_heads()?;
    Ok(Cursor {
        device_seq,
        rollout_log_seq,
    })
}

/// Reads the rows after `cursor`, formats them as frames in sequence order (rollout events
/// first, then device events), and moves the cursor past them.
pub fn poll_once(store: &Store, cursor: &mut Cursor) -> Result<Vec<Frame>> {
    read_after(store, cursor, None)
}

/// What a client that reconnects having seen up to `from` missed, up to `until` (where the
/// cache stood when its live feed began): at most [`MAX_REPLAY`] frames in stream order, and
/// whether more were left out.
pub fn replay(store: &Store, from: Cursor, until: Cursor) -> Result<(Vec<Frame>, bool)> {
    let mut cursor = from;
    let mut out = Vec::new();
    loop {
        let frames = read_after(store, &mut cursor, Some(until))?;
        if frames.is_empty() {
            return Ok((out, false));
        }
        for f in frames {
            if out.len() == MAX_REPLAY {
                return Ok((out, true));
            }
            out.push(f);
        }
    }
}

/// [`poll_once`], reading no row past `until` when given.
fn read_after(store: &Store, cursor: &mut Cursor, until: Option<Cursor>) -> Result<Vec<Frame>> {
    let until = until.unwrap_or(Cursor {
        device_seq: i64::MAX,
        rollout_log_seq: i64::MAX,
    });
    let mut frames = Vec::new();
    for e in store.feed_rollout_events(cursor.rollout_log_seq, until.rollout_log_seq, BATCH_ROWS)? {
        let frame = RolloutFrame {
            rollout_id: &e.rollout_id,
            seq: e.seq,
            time: e.time,
            kind: &e.kind,
            cause: &e.cause,
            payload: serde_json::from_str(&e.payload)
                .unwrap_or_else(|_| serde_json::Value::String(e.payload.clone())),
        };
        cursor.rollout_log_seq = e.log_seq;
        frames.push(sse_frame(
            "rollout",
            Row::Rollout(e.log_seq),
            *cursor,
            &serde_json::to_string(&frame)?,
        ));
    }
    for e in store.feed_device_events(cursor.device_seq, until.device_seq, BATCH_ROWS)? {
        let frame = DeviceFrame {
            seq: e.seq,
            device_id: &e.device_id,
            rollout_id: e.rollout_id.as_deref(),
            time: e.time,
            kind: &e.kind,
            payload: serde_json::from_str(&e.payload)
                .unwrap_or_else(|_| serde_json::Value::String(e.payload.clone())),
        };
        cursor.device_seq = e.seq;
        frames.push(sse_frame(
            "device",
            Row::Device(e.seq),
            *cursor,
            &serde_json::to_string(&frame)?,
        ));
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

/// The event streams open, per token and in all.
#[derive(Debug)]
pub struct StreamSlots {
    per_token: usize,
    total: usize,
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// Why a stream was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamRefusal {
    /// The token has `max_streams_per_token` streams open.
    PerToken(usize),
    /// The server has `max_streams` streams open.
    Total(usize),
}

impl std::fmt::Display for StreamRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PerToken(n) => write!(
                f,
                "this token has {n} event streams open, the most allowed (--max-streams-per-token {n}); close one first"
            ),
            Self::Total(n) => write!(
                f,
                "the server has {n} event streams open, the most allowed (--max-streams {n}); retry later"
            ),
        }
    }
}

/// One open stream; dropping it gives its slot back.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    token: String,
}

impl StreamSlots {
    pub fn new(per_token: usize, total: usize) -> Self {
        Self {
            per_token,
            total,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// A slot for one more stream on `token_id`, or why not.
    pub fn open(self: &Arc<Self>, token_id: &str) -> Result<StreamSlot, StreamRefusal> {
        let mut guard = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, per_token) = &mut *guard;
        let mine = per_token.get(token_id).copied().unwrap_or(0);
        if mine >= self.per_token {
            return Err(StreamRefusal::PerToken(self.per_token));
        }
        if *total >= self.total {
            return Err(StreamRefusal::Total(self.total));
        }
        *total += 1;
        per_token.insert(token_id.to_owned(), mine + 1);
        Ok(StreamSlot {
            slots: Arc::clone(self),
            token: token_id.to_owned(),
        })
    }

    /// Streams open now: in all, and on `token_id`.
    pub fn count(&self, token_id: &str) -> (usize, usize) {
        let guard = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        (guard.0, guard.1.get(token_id).copied().unwrap_or(0))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut guard = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, per_token) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(n) = per_token.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                per_token.remove(&self.token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_core::time::Timestamp;

    #[test]
    fn streams_are_bounded_per_token_and_in_all() {
        let slots = Arc::new(StreamSlots::new(2, 3));
        let a1 = slots.open("a").expect("first of a");
        let a2 = slots.open("a").expect("second of a");
        assert_eq!(
            slots.open("a").expect_err("third of a"),
            StreamRefusal::PerToken(2)
        );
        let b1 = slots.open("b").expect("b has its own share");
        assert_eq!(
            slots.open("b").expect_err("server full"),
            StreamRefusal::Total(3)
        );
        assert!(
            StreamRefusal::PerToken(2)
                .to_string()
                .contains("--max-streams-per-token 2")
        );
        assert!(
            StreamRefusal::Total(3)
                .to_string()
                .contains("--max-streams 3")
        );
        drop(a1);
        assert_eq!(slots.count("a"), (2, 1));
        let b2 = slots.open("b").expect("a slot given back is free again");
        drop((a2, b1, b2));
        assert_eq!(slots.count("a"), (0, 0));
        assert!(
            slots
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .1
                .is_empty(),
            "tokens with nothing open are forgotten"
        );
    }

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
            frames[0].text.starts_with("event: rollout\nid: r2.d0\n"),
            "{}",
            frames[0].text
        );
        assert!(
            frames[0].text.contains(r#""rollout_id":"r1","seq":1"#),
            "{}",
            frames[0].text
        );
        assert!(
            frames[1].text.contains(r#""rollout_id":"r0","seq":2"#),
            "{}",
            frames[1].text
        );
        assert!(
            frames[2].text.starts_with("event: device\nid: r3.d1\n"),
            "{}",
            frames[2].text
        );
        assert!(frames[2].text.contains(r#""kind":"offered""#));
        assert!(poll_once(&store, &mut cursor).expect("poll").is_empty());
    }

    #[test]
    fn a_reconnect_is_replayed_what_it_missed_up_to_where_the_live_feed_began() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(&dir.path().join("c.db")).expect("open");
        let t = Timestamp::from_secs(100);
        let rollout = |store: &mut Store, kind: &str| {
            store
                .append_event("r1", t, kind, "gate", &serde_json::json!({}))
                .expect("event");
        };
        let device = |store: &mut Store, id: &str| {
            store
                .append_device_event(id, Some("r1"), t, "offered", &serde_json::json!({}))
                .expect("event");
        };
        rollout(&mut store, "rollout.created");
        device(&mut store, "d1");
        // The client saw up to here.
        let seen = cursor_now(&store).expect("cursor");
        assert_eq!(Cursor::parse(&seen.id()), Some(seen));
        rollout(&mut store, "wave.started");
        device(&mut store, "d2");
        device(&mut store, "d3");
        // The live feed begins here for the reconnecting client.
        let until = cursor_now(&store).expect("cursor");
        rollout(&mut store, "rollout.paused");
        let (frames, more) = replay(&store, seen, until).expect("replay");
        assert!(!more);
        let rows: Vec<Row> = frames.iter().map(|f| f.row).collect();
        assert_eq!(
            rows,
            [Row::Rollout(2), Row::Device(2), Row::Device(3)],
            "what was missed, nothing after the live feed began"
        );
        assert!(frames.iter().all(|f| f.after.device_seq <= until.device_seq
            && f.after.rollout_log_seq <= until.rollout_log_seq));
        assert_eq!(frames.last().expect("a frame").after, until);
        // A live frame behind the floor in one sequence is sent with its id raised to it.
        let mut live = until;
        live.device_seq = 0;
        let mut at = live;
        let late = poll_once(&store, &mut at).expect("poll");
        let paused = late
            .iter()
            .find(|f| f.row == Row::Rollout(3))
            .expect("the pause");
        assert!(!paused.row.seen_by(until));
        let sent = paused.text_above(until);
        assert!(
            sent.contains(&format!("\nid: r3.d{}\n", until.device_seq)),
            "{sent}"
        );
        for bad in ["", "r1", "d1.r1", "r-1.d0", "rx.d1", "r1.d1.x"] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }
}
