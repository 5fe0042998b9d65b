//! Steering through the server's API: the console's operator commands (pause, resume, roll
//! back, override, abort, each with a reason) become `POST /rollouts/{id}/{command}` with the
//! token; the server's engine applies them and the timeline event comes back through the mirror.
//!
//! While the server is unreachable a command is judged by whether it is safe to apply late: a
//! pause is queued (`queue.rs`), the others are refused with the reason ([`crate::remote`]
//! says why).
//!
//! The [`Steer`] trait, which every target of the console's commands implements (this one, and
//! the console's engines in `gui/steer.rs`), is declared here rather than in `gui/`: this room
//! sits below the console and implements it without importing it.
//!
//! Deliberately not here: the console's steering thread and its local engines (`gui/steer.rs`),
//! and approvals, which this console does not send.

use std::sync::{Arc, Mutex, PoisonError};

use convoy_core::rollout::Phase;

use super::client::{Api, CallError, parse_answer, segment};
use super::{RemoteEvent, Shared, queue};
use crate::engine::control::{OperatorCommand, RollBackScope};
use crate::link::api_wire as wire;

/// Something that applies operator commands to rollouts.
pub trait Steer: Send + Sync {
    /// Whether `rollout_id` can be steered from here; `Err` says why not, in words for the
    /// UI (shown beside disabled buttons). Cheap: called on the UI thread every frame.
    fn can_steer(&self, rollout_id: &str) -> Result<(), String>;

    /// Applies `command` to `rollout_id` as `operator` and waits for the answer: the rollout's
    /// phase afterwards in words, or why it was refused. Runs on the steering thread, never on
    /// the UI thread, so it may block (a network round trip, the engine's next step).
    fn steer(
        &self,
        rollout_id: &str,
        operator: &str,
        command: &OperatorCommand,
    ) -> Result<String, String>;
}

/// A rollout's phase in the words the monitor and its answers use (waves counted from 1).
pub fn phase_words(phase: &Phase) -> String {
    match phase {
        Phase::Draft => "awaiting approval".to_owned(),
        Phase::Approved => "approved".to_owned(),
        Phase::Running { wave } => format!("running wave {}", wave + 1),
        Phase::Soaking { wave, .. } => format!("soaking wave {}", wave + 1),
        Phase::Paused {
            wave,
            reason,
            by_gate,
            rolled_back,
            ..
        } => {
            let by = if *by_gate {
                "by a gate"
            } else {
                "by an operator"
            };
            let back = if *rolled_back {
                ", wave rolled back"
            } else {
                ""
            };
            format!("paused at wave {} {by}{back}: {reason}", wave + 1)
        }
        Phase::RollingBack { .. } => "rolling back".to_owned(),
        Phase::Completed => "completed".to_owned(),
        Phase::RolledBack => "rolled back".to_owned(),
        Phase::Aborted { reason } => format!("aborted: {reason}"),
    }
}

/// Steering through the server's API, queueing pauses while it is unreachable.
pub struct RemoteSteer {
    shared: Arc<Shared>,
    /// The steering thread's client, made on its first command.
    api: Mutex<Option<Api>>,
}

impl RemoteSteer {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            api: Mutex::new(None),
        }
    }

    fn with_api<T>(&self, f: impl FnOnce(&Api) -> T) -> Result<T, String> {
        let mut api = self.api.lock().unwrap_or_else(PoisonError::into_inner);
        if api.is_none() {
            *api = Some(self.shared.endpoint.api().map_err(|e| format!("{e:#}"))?);
        }
        api.as_ref()
            .map(f)
            .ok_or_else(|| "no client for the server".to_owned())
    }

    /// What to do with `command` while the server is unreachable.
    fn offline(
        &self,
        rollout_id: &str,
        operator: &str,
        command: &OperatorCommand,
        maybe_sent: bool,
    ) -> Result<String, String> {
        let name = command.name();
        let server = &self.shared.endpoint.server;
        if let OperatorCommand::Pause { reason } = command {
            return queue::queue_pause(&self.shared, rollout_id, operator, reason);
        }
        let unknown = if maybe_sent {
            " The server did not answer in time: it may have applied the command; check the \
             rollout when it is back."
        } else {
            ""
        };
        Err(format!(
            "the server {server} is unreachable, and a {name} is not queued: applied later it \
             would act on a state this console cannot see (only a pause is queued; it is safe \
             late and can be resumed). Pause now and {name} when the server is back.{unknown}"
        ))
    }
}

/// The body of a control command.
fn control_body(command: &OperatorCommand) -> wire::ControlBody {
    wire::ControlBody {
        reason: command.reason().to_owned(),
        scope: match command {
            OperatorCommand::RollBack { scope, .. } => Some(match scope {
                RollBackScope::CurrentWave => wire::RollBackScope::CurrentWave,
                RollBackScope::All => wire::RollBackScope::All,
            }),
            _ => None,
        },
        selector: match command {
            OperatorCommand::Exclude { selector, .. } => Some(selector.clone()),
            _ => None,
        },
    }
}

/// Sends one command; the answer in the console's words.
pub(super) fn send_command(
    api: &Api,
    shared: &Shared,
    rollout_id: &str,
    command: &OperatorCommand,
) -> Result<String, CallError> {
    let path = format!("/rollouts/{}/{}", segment(rollout_id), command.name());
    let result = api.post(&path, &control_body(command));
    shared.saw(&result);
    let bytes = result?;
    let answer: wire::ControlAnswer = parse_answer(&Api::endpoint_name("POST", &path), &bytes)?;
    Ok(format!(
        "{rollout_id} is now {}",
        phase_words(&answer.phase)
    ))
}

impl Steer for RemoteSteer {
    fn can_steer(&self, _rollout_id: &str) -> Result<(), String> {
        // Every command is sent, queued (a pause, offline) or refused with the reason: the
        // server decides which rollouts it runs, and says so (404) for one it does not.
        Ok(())
    }

    fn steer(
        &self,
        rollout_id: &str,
        operator: &str,
        command: &OperatorCommand,
    ) -> Result<String, String> {
        let answer = self.with_api(|api| send_command(api, &self.shared, rollout_id, command))?;
        match answer {
            Ok(words) => Ok(words),
            Err(CallError::Unreachable { maybe_sent, .. }) => {
                self.offline(rollout_id, operator, command, maybe_sent)
            }
            Err(CallError::Refused { status, message }) => Err(format!(
                "the server refused the {} of {rollout_id} (HTTP {status}): {message}",
                command.name()
            )),
            Err(e @ CallError::Malformed(_)) => Err(e.to_string()),
        }
    }
}

/// The remote console's steering for a caller other than its UI (a test or a script driving a
/// console): the same [`RemoteSteer`] as the console's steering thread uses, and the answer is
/// reported to the console as [`RemoteEvent::Steered`], as that one's is.
#[derive(Clone)]
pub struct RemoteCommands {
    steer: Arc<RemoteSteer>,
}

impl RemoteCommands {
    /// Commands through `steer`.
    pub fn new(steer: Arc<RemoteSteer>) -> Self {
        Self { steer }
    }

    /// Applies `command` (or queues it, or refuses it: see [`crate::remote`]) and
    /// waits for the answer, which the console also gets.
    pub fn steer(
        &self,
        rollout_id: &str,
        operator: &str,
        command: OperatorCommand,
    ) -> Result<String, String> {
        let result = self.steer.steer(rollout_id, operator, &command);
        self.steer.shared.report(RemoteEvent::Steered {
            rollout_id: rollout_id.to_owned(),
            operator: operator.to_owned(),
            command,
            result: result.clone(),
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{CopyState, Remote, RemoteOptions};

    /// A server that refuses connections (nothing listens on port 1 of 127.0.0.1): only a
    /// pause is queued, once per rollout, kept in the copy's state file; the others are refused
    /// naming why.
    #[test]
    fn offline_only_a_pause_is_queued_once_and_kept_and_the_rest_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let copy = dir.path().join("copy.db");
        let server = "http://127.0.0.1:1";
        let options = RemoteOptions::new(server, "t".into(), copy.clone()).expect("options");
        let remote = Remote::open(&options).expect("opened");
        let steer = remote.steer();
        let pause = OperatorCommand::Pause {
            reason: "depot flooded".into(),
        };
        let queued = steer.steer("r1", "ana", &pause).expect("queued");
        assert!(queued.starts_with("queued:"), "{queued}");
        let again = steer.steer("r1", "sam", &pause).expect("answered");
        assert!(
            again.starts_with("already queued") && again.contains("ana"),
            "{again}"
        );
        let resume = OperatorCommand::Resume {
            reason: "open again".into(),
        };
        let refused = steer.steer("r1", "ana", &resume).expect_err("refused");
        assert!(
            refused.contains("unreachable") && refused.contains("resume is not queued"),
            "{refused}"
        );
        let state = CopyState::load(&copy, server).expect("the copy's state");
        assert_eq!(state.queued.len(), 1);
        assert_eq!(
            (
                state.queued[0].rollout_id.as_str(),
                state.queued[0].operator.as_str()
            ),
            ("r1", "ana")
        );
    }
}
