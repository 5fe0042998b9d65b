//! The messages the agent could not send yet, kept on disk (`STATE_DIR/outbox.json`) while the
//! broker is unreachable, so a status, an ack or a crash report made offline (or just before a
//! reboot) reaches the console when the link comes back.
//!
//! Bounded: past `max_messages` the oldest message is dropped and counted. Only the newest
//! status is kept (a status is the device's whole state, retained by the broker, so an older one
//! is worth nothing once a newer exists); the agent sends a fresh status on every connection and
//! drops the kept one then, so the outbox's status only matters if the agent stops before that. Every change rewrites the file atomically; with the
//! default bound of 1,000 small messages that is at most a few hundred KB per change, and
//! changes happen at the rate a device makes messages while offline.
//!
//! Deliberately not here: delivery guarantees beyond the broker's QoS 1. A message handed to the
//! MQTT client is out of the outbox; if the connection drops before the broker has it, the MQTT
//! client's own session state resends QoS 1 messages, and telemetry (QoS 0) may be lost.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// One message waiting to be published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub kind: Kind,
    pub topic: String,
    /// The JSON payload, as text.
    pub payload: String,
}

/// How a message is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Retained, QoS 1; only the newest is kept.
    Status,
    /// QoS 1.
    Ack,
    /// QoS 0.
    Telemetry,
}

/// The on-disk outbox.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    max_messages: usize,
    queue: VecDeque<Pending>,
    /// Messages dropped because the outbox was full, since the agent started.
    pub dropped: u64,
}

impl Outbox {
    /// Opens the outbox in `dir`, with what an earlier run left in it. A damaged file is set
    /// aside (renamed with `.damaged`) rather than stopping the agent: the messages are lost,
    /// the device is not.
    pub fn open(dir: &Path, max_messages: usize) -> Result<Self> {
        let path = dir.join("outbox.json");
        let queue = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<VecDeque<Pending>>(&bytes) {
                Ok(q) => q,
                Err(e) => {
                    let aside = dir.join("outbox.json.damaged");
                    eprintln!(
                        "convoy-agent: {} is damaged ({e}); set aside as {}",
                        path.display(),
                        aside.display()
                    );
                    std::fs::rename(&path, &aside)
                        .with_context(|| format!("setting aside {}", path.display()))?;
                    VecDeque::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => VecDeque::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut outbox = Self {
            path,
            max_messages: max_messages.max(1),
            queue,
            dropped: 0,
        };
        outbox.trim();
        Ok(outbox)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Keeps a message for later and writes the outbox.
    pub fn push(&mut self, message: Pending) -> Result<()> {
        if message.kind == Kind::Status {
            self.queue.retain(|m| m.kind != Kind::Status);
        }
        self.queue.push_back(message);
        self.trim();
        self.persist()
    }

    /// Takes every message, oldest first, and empties the file.
    pub fn take_all(&mut self) -> Result<Vec<Pending>> {
        let all: Vec<Pending> = self.queue.drain(..).collect();
        if !all.is_empty() {
            self.persist()?;
        }
        Ok(all)
    }

    /// Puts messages that could not be published back at the front, in their order.
    pub fn requeue_front(&mut self, messages: Vec<Pending>) -> Result<()> {
        for m in messages.into_iter().rev() {
            self.queue.push_front(m);
        }
        self.trim();
        self.persist()
    }

    fn trim(&mut self) {
        while self.queue.len() > self.max_messages {
            self.queue.pop_front();
            self.dropped += 1;
        }
    }

    fn persist(&self) -> Result<()> {
        let bytes = serde_json::to_vec(&self.queue).context("encoding the outbox")?;
        crate::state::write_atomic(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: Kind, n: u32) -> Pending {
        Pending {
            kind,
            topic: format!("t/{n}"),
            payload: format!("{{\"n\":{n}}}"),
        }
    }

    #[test]
    fn the_outbox_is_bounded_keeps_one_status_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = Outbox::open(dir.path(), 3).expect("open");
        o.push(msg(Kind::Status, 1)).expect("push");
        o.push(msg(Kind::Telemetry, 2)).expect("push");
        o.push(msg(Kind::Status, 3)).expect("push");
        assert_eq!(o.len(), 2, "only the newest status is kept");
        o.push(msg(Kind::Ack, 4)).expect("push");
        o.push(msg(Kind::Telemetry, 5)).expect("push");
        assert_eq!(o.len(), 3);
        assert_eq!(o.dropped, 1, "the oldest was dropped and counted");
        drop(o);
        let mut again = Outbox::open(dir.path(), 3).expect("reopen");
        let all = again.take_all().expect("take");
        let order: Vec<&str> = all.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            order,
            ["t/3", "t/4", "t/5"],
            "oldest first, as kept on disk"
        );
        assert!(Outbox::open(dir.path(), 3).expect("reopen").is_empty());
    }

    #[test]
    fn a_damaged_outbox_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("outbox.json"), b"[{").expect("write");
        let o = Outbox::open(dir.path(), 10).expect("open");
        assert!(o.is_empty());
        assert!(dir.path().join("outbox.json.damaged").exists());
    }
}
