//! The console on a `convoy serve` (`convoy gui --server URL`): the wiring of
//! [`crate::remote`] (the API client, the mirror, the offline queue, the remote steer) into the
//! console's backend.
//!
//! [`Backend::remote`] opens the copy, gives the backend the remote steer, and starts the
//! mirror with an observer that turns what it reports into [`BackendEvent`]s, and reads the
//! rollout board (with the health series of logs that grew) from the copy whenever it changed.
//!
//! Deliberately not here: anything that talks to the server or writes the copy (`remote/`
//! does, and does not import the console).

use anyhow::Result;
use std::sync::{Arc, Mutex, PoisonError};

use super::backend::{
    Backend, BackendEvent, BrokerKind, HealthCache, LinkStatus, Reporter, RolloutBoard,
    read_rollouts,
};
use super::steer::Steer;
use crate::remote::{LinkWords, Observer, Remote, RemoteCommands, RemoteEvent, RemoteOptions};
use crate::store::Store;

/// The console's side of the mirror's reports.
struct ToBackend {
    reporter: Reporter,
    /// Health series already computed: a log that has not grown is not read again.
    health: Mutex<HealthCache>,
}

impl Observer for ToBackend {
    fn report(&self, event: RemoteEvent) -> bool {
        self.reporter.blocking(match event {
            RemoteEvent::Stage(text) => BackendEvent::Stage(text),
            RemoteEvent::FleetLoaded { fleet, copy } => {
                BackendEvent::FleetLoaded { fleet, cache: copy }
            }
            RemoteEvent::Link(link) => BackendEvent::Link(match link {
                LinkWords::Connecting => LinkStatus::Connecting,
                LinkWords::Connected => LinkStatus::Connected,
                LinkWords::Unreachable(why) => LinkStatus::Reconnecting(why),
            }),
            RemoteEvent::Engine(text) => BackendEvent::Engine(text),
            RemoteEvent::Steered {
                rollout_id,
                operator,
                command,
                result,
            } => BackendEvent::Steered {
                rollout_id,
                operator,
                command,
                result,
            },
            RemoteEvent::Failed(text) => BackendEvent::Failed(text),
        })
    }

    fn copy_changed(&self, copy: &Store) -> bool {
        self.reporter
            .blocking(BackendEvent::Rollouts(self.board(copy)))
    }
}

impl ToBackend {
    /// The board of the copy, with health series recomputed where a log grew.
    fn board(&self, store: &Store) -> Result<RolloutBoard, String> {
        let mut board = read_rollouts(store).map_err(|e| format!("{e:#}"))?;
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fill(store, &mut board);
        Ok(board)
    }
}

impl Backend {
    /// [`Backend::remote`], with a second way into its steering ([`RemoteCommands`]).
    pub fn remote_with_commands(options: &RemoteOptions) -> Result<(Self, RemoteCommands)> {
        let (backend, remote) = Self::remote_parts(options)?;
        Ok((backend, remote))
    }

    /// The console attached to the server of `options`: its views read the local copy, which a
    /// mirror thread keeps in step with the server; commands go to the server's API (see
    /// [`crate::remote`] for what happens offline). Fails only on local problems: a copy that
    /// cannot be opened or belongs to another server, an unreadable `--ca-cert`. An unreachable
    /// server is not an error: the console opens on the copy and says so.
    pub fn remote(options: &RemoteOptions) -> Result<Self> {
        Self::remote_parts(options).map(|(backend, _)| backend)
    }

    fn remote_parts(options: &RemoteOptions) -> Result<(Self, RemoteCommands)> {
        let remote = Remote::open(options)?;
        let steer = remote.steer();
        let (backend, reporter, handle) = Self::parts(
            BrokerKind::Server(options.server.clone()),
            false,
            &options.copy,
            Arc::clone(&steer) as Arc<dyn Steer>,
        )?;
        remote.start(
            Arc::new(ToBackend {
                reporter,
                health: Mutex::default(),
            }),
            &handle,
        )?;
        Ok((backend, RemoteCommands::new(steer)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_mirror_copies_as_many_rollouts_as_the_console_reads() {
        assert_eq!(
            crate::remote::ROLLOUTS_COPIED,
            super::super::backend::ROLLOUT_LIMIT
        );
    }
}
