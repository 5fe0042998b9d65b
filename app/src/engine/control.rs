//! Operator control of a running engine: the commands (pause, resume, roll back, override a
//! gate, abort, exclude devices, continue after a rolled-back wave), the bounded channel that carries them to the engine's loop, and the answer
//! that comes back.
//!
//! A command is applied through the core's operator mutators
//! ([`convoy_core::rollout::Rollout::pause`] and the others) between two engine steps, so it
//! is recorded exactly like an automatic decision: a rollout event whose cause names the
//! operator and the reason (the timeline), an audit entry with the operator as actor, and the
//! commands it implies in the outbox in the same transaction as their decision.
//!
//! What it deliberately is not: authentication or roles. Whoever holds a [`ControlHandle`]
//! speaks for the operator name it passes; `convoy serve` checks tokens and roles before it
//! sends anything here.

use convoy_core::rollout::{Phase, RolloutError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Which devices an operator's rollback covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollBackScope {
    /// The wave that is running, soaking or paused now.
    CurrentWave,
    /// Every device of the rollout that was offered the release.
    All,
}

/// What an operator asks of a running rollout. Every command carries a reason: it goes to the
/// timeline and the audit trail with the operator's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum OperatorCommand {
    /// Stop offering; devices already installing finish.
    Pause { reason: String },
    /// Continue a rollout an operator paused (a gate stop needs `Override`).
    Resume { reason: String },
    /// Send devices back to their previous version.
    RollBack {
        scope: RollBackScope,
        reason: String,
    },
    /// Override the gate findings that stopped the rollout and continue the wave.
    Override { reason: String },
    /// Stop the rollout for good, leaving devices where they are.
    Abort { reason: String },
    /// Take devices out of the rest of the rollout: those not offered yet never are. The
    /// selector is a fleet search (`model:T300 hw_rev:C`, `region:eu-*`, `stratum:T300/C`, a
    /// list of device ids separated by spaces or commas).
    Exclude { selector: String, reason: String },
    /// Go on with the next wave after the current one was rolled back.
    Continue { reason: String },
}

impl OperatorCommand {
    /// The command's name, as in the audit trail (`operator.{name}`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pause { .. } => "pause",
            Self::Resume { .. } => "resume",
            Self::RollBack { .. } => "rollback",
            Self::Override { .. } => "override",
            Self::Abort { .. } => "abort",
            Self::Exclude { .. } => "exclude",
            Self::Continue { .. } => "continue",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Pause { reason }
            | Self::Resume { reason }
            | Self::RollBack { reason, .. }
            | Self::Override { reason }
            | Self::Abort { reason }
            | Self::Exclude { reason, .. }
            | Self::Continue { reason } => reason,
        }
    }
}

/// Why an operator command was not applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    /// A field the command needs is empty (`operator` or `reason`).
    #[error("{command} needs a non-empty {field}")]
    MissingField {
        command: &'static str,
        field: &'static str,
    },
    /// The rollout refused the command in its current phase.
    #[error("rollout {rollout}: {source}")]
    Refused {
        rollout: String,
        source: RolloutError,
    },
    /// An exclusion's selector that is not a valid fleet search.
    #[error("the selector is not a valid fleet search: {0}")]
    BadSelector(String),
    /// The engine run has ended, or its channel is full and it did not take the command.
    #[error("the engine is not running rollout {0} (its run has ended)")]
    NotRunning(String),
}

/// One command on its way to the engine, with the way back for the answer.
#[derive(Debug)]
pub struct ControlRequest {
    pub operator: String,
    pub command: OperatorCommand,
    /// The phase after the command, or why it was refused.
    pub reply: oneshot::Sender<Result<Phase, ControlError>>,
}

/// The sending side of an engine's control channel; cheap to clone (one per console or API
/// handler).
#[derive(Clone, Debug)]
pub struct ControlHandle {
    rollout_id: String,
    tx: mpsc::Sender<ControlRequest>,
}

/// A bounded control channel for the engine run of `rollout_id`: give the receiver to
/// [`super::EngineControl::commands`]. Commands beyond `capacity` wait for room.
pub fn control_channel(
    rollout_id: &str,
    capacity: usize,
) -> (ControlHandle, mpsc::Receiver<ControlRequest>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        ControlHandle {
            rollout_id: rollout_id.to_owned(),
            tx,
        },
        rx,
    )
}

impl ControlHandle {
    pub fn rollout_id(&self) -> &str {
        &self.rollout_id
    }

    /// A request for `command` as `operator`, and where its answer will come.
    fn request(
        operator: &str,
        command: OperatorCommand,
    ) -> (
        ControlRequest,
        oneshot::Receiver<Result<Phase, ControlError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let request = ControlRequest {
            operator: operator.to_owned(),
            command,
            reply,
        };
        (request, answer)
    }

    fn not_running(&self) -> ControlError {
        ControlError::NotRunning(self.rollout_id.clone())
    }

    /// Sends `command` as `operator` and waits for the engine to apply or refuse it.
    pub async fn send(
        &self,
        operator: &str,
        command: OperatorCommand,
    ) -> Result<Phase, ControlError> {
        let (request, answer) = Self::request(operator, command);
        if self.tx.send(request).await.is_err() {
            return Err(self.not_running());
        }
        answer.await.unwrap_or_else(|_| Err(self.not_running()))
    }

    /// [`Self::send`] from a plain thread (not inside an async runtime): the console's
    /// steering thread.
    pub fn send_blocking(
        &self,
        operator: &str,
        command: OperatorCommand,
    ) -> Result<Phase, ControlError> {
        let (request, answer) = Self::request(operator, command);
        if self.tx.blocking_send(request).is_err() {
            return Err(self.not_running());
        }
        answer
            .blocking_recv()
            .unwrap_or_else(|_| Err(self.not_running()))
    }

    /// Whether the engine run has ended (its receiver is gone).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Checks the fields every command needs before the rollout sees it, so the refusal names the
/// field (`reason`, `operator`) rather than the core's wording.
pub(super) fn check_fields(operator: &str, command: &OperatorCommand) -> Result<(), ControlError> {
    if operator.trim().is_empty() {
        return Err(ControlError::MissingField {
            command: command.name(),
            field: "operator",
        });
    }
    if let OperatorCommand::Exclude { selector, .. } = command
        && selector.trim().is_empty()
    {
        return Err(ControlError::MissingField {
            command: command.name(),
            field: "selector",
        });
    }
    if command.reason().trim().is_empty() {
        return Err(ControlError::MissingField {
            command: command.name(),
            field: "reason",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_without_a_reason_names_the_field() {
        let err = check_fields(
            "bob",
            &OperatorCommand::Override {
                reason: "  ".into(),
            },
        )
        .expect_err("refused");
        assert_eq!(
            err,
            ControlError::MissingField {
                command: "override",
                field: "reason"
            }
        );
        assert_eq!(err.to_string(), "override needs a non-empty reason");
        let err = check_fields(
            "",
            &OperatorCommand::Pause {
                reason: "night".into(),
            },
        )
        .expect_err("refused");
        assert_eq!(err.to_string(), "pause needs a non-empty operator");
        assert!(
            check_fields(
                "bob",
                &OperatorCommand::Abort {
                    reason: "wrong build".into()
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn commands_read_from_json_by_name() {
        let c: OperatorCommand = serde_json::from_str(
            r#"{"command": "roll_back", "scope": "current_wave", "reason": "canary looks off"}"#,
        )
        .expect("valid command");
        assert_eq!(
            c,
            OperatorCommand::RollBack {
                scope: RollBackScope::CurrentWave,
                reason: "canary looks off".into()
            }
        );
        assert_eq!(c.name(), "rollback");
    }
}
