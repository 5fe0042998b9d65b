//! The offline queue: the file beside the copy (`COPY.remote.json`: which server it copies,
//! when it was last in step, the pauses waiting), a pause queued while the server is
//! unreachable, and the queue sent, oldest first, when it answers again.
//!
//! The file is written before a queued pause is answered, so a crash or a restart loses none.
//! Deliberately not here: which commands may be queued (only a pause: `steer.rs` says why).

use anyhow::{Context, Result, bail};
use convoy_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::client::{Api, CallError};
use super::steer::send_command;
use super::{RemoteEvent, Shared, clock_words};
use crate::engine::control::OperatorCommand;

/// A pause waiting for the server, as kept in `COPY.remote.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedPause {
    pub rollout_id: String,
    /// The console's operator who asked (the server records the token's operator).
    pub operator: String,
    pub reason: String,
    /// Unix seconds.
    pub queued_at: i64,
}

/// The file beside the copy: which server it copies, when it was last in step, what waits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CopyState {
    pub server: String,
    /// Unix seconds of the last complete sync pass.
    pub synced_at: Option<i64>,
    pub queued: Vec<QueuedPause>,
}

impl CopyState {
    /// The state file of `copy`.
    pub fn path(copy: &Path) -> PathBuf {
        let mut p = copy.as_os_str().to_owned();
        p.push(".remote.json");
        PathBuf::from(p)
    }

    /// Reads the state of `copy` (a fresh one if there is none); refuses a copy of another
    /// server, so that its queued pauses and its rollouts never mix with this one's.
    pub fn load(copy: &Path, server: &str) -> Result<Self> {
        let path = Self::path(copy);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Self>(&bytes)
                .with_context(|| format!("reading the console's copy state {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self {
                server: server.to_owned(),
                ..Self::default()
            },
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if state.server != server {
            bail!(
                "{} is the copy of the server {}, not of {server}: give another --db",
                copy.display(),
                state.server
            );
        }
        Ok(state)
    }

    /// Writes the state atomically (a crash leaves the old file or the new one).
    pub fn save(&self, copy: &Path) -> Result<()> {
        let path = Self::path(copy);
        crate::fleet_io::write_atomically(&path, |out| {
            serde_json::to_writer_pretty(&mut *out, self)?;
            Ok(())
        })
        .with_context(|| format!("writing the console's copy state {}", path.display()))
    }
}

/// Queues a pause of `rollout_id` while the server is unreachable (one per rollout: a second
/// is answered with the first), saved in the copy's state file before it is answered.
pub(super) fn queue_pause(
    shared: &Shared,
    rollout_id: &str,
    operator: &str,
    reason: &str,
) -> Result<String, String> {
    let server = &shared.endpoint.server;
    let now = crate::now();
    {
        let mut s = shared.lock();
        // One pause per rollout is enough: the first one queued is sent, and this one
        // is answered with it rather than dropped without a word.
        if let Some(q) = s.copy.queued.iter().find(|q| q.rollout_id == rollout_id) {
            return Ok(format!(
                "already queued: a pause of {rollout_id} by {} at {} ({}) is sent as soon as the server {server} answers",
                q.operator,
                clock_words(Timestamp::from_secs(q.queued_at)),
                q.reason
            ));
        }
        s.copy.queued.push(QueuedPause {
            rollout_id: rollout_id.to_owned(),
            operator: operator.to_owned(),
            reason: reason.to_owned(),
            queued_at: now.secs(),
        });
    }
    shared.save_copy_state().map_err(|e| {
        format!("the server {server} is unreachable and the pause could not be queued: {e:#}")
    })?;
    shared.report(RemoteEvent::Link(shared.link_status()));
    shared.report(RemoteEvent::Engine(shared.engine_note()));
    shared.wake();
    Ok(format!(
        "queued: the server {server} is unreachable; the pause of {rollout_id} is sent \
         as soon as it answers (kept in the console's copy, it survives a restart)"
    ))
}

/// Sends the queued pauses, oldest first; each answer is reported as the command's own would
/// be. Stops at the first that gets no answer (it stays queued).
pub(super) fn send_queued(api: &Api, shared: &Shared) -> Result<(), CallError> {
    loop {
        let Some(next) = shared.lock().copy.queued.first().cloned() else {
            return Ok(());
        };
        let command = OperatorCommand::Pause {
            reason: format!(
                "{} (queued offline at {} by {})",
                next.reason,
                clock_words(Timestamp::from_secs(next.queued_at)),
                next.operator
            ),
        };
        let result = match send_command(api, shared, &next.rollout_id, &command) {
            Ok(words) => Ok(format!("sent after the link returned: {words}")),
            Err(e @ CallError::Unreachable { .. }) => return Err(e),
            Err(e) => Err(format!(
                "the pause of {} queued at {} was refused by the server: {e}",
                next.rollout_id,
                clock_words(Timestamp::from_secs(next.queued_at))
            )),
        };
        {
            let mut s = shared.lock();
            if s.copy.queued.first() == Some(&next) {
                s.copy.queued.remove(0);
            }
        }
        if let Err(e) = shared.save_copy_state() {
            shared.report(RemoteEvent::Failed(format!("{e:#}")));
        }
        shared.report(RemoteEvent::Steered {
            rollout_id: next.rollout_id,
            operator: next.operator,
            command,
            result,
        });
        shared.report(RemoteEvent::Engine(shared.engine_note()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_of_one_server_is_not_used_for_another_and_keeps_its_queue() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let copy = dir.path().join("copy.db");
        let mut state = CopyState::load(&copy, "http://127.0.0.1:1").expect("fresh");
        state.queued.push(QueuedPause {
            rollout_id: "r1".into(),
            operator: "ana".into(),
            reason: "depot flooded".into(),
            queued_at: 1_800_000_000,
        });
        state.save(&copy).expect("saved");
        assert_eq!(
            CopyState::load(&copy, "http://127.0.0.1:1").expect("again"),
            state
        );
        let err = CopyState::load(&copy, "http://127.0.0.1:2").expect_err("another server");
        assert!(err.to_string().contains("http://127.0.0.1:1"), "{err}");
    }
}
