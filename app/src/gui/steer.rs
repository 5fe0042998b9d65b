//! Where the console's operator commands for a rollout go: pause, resume, roll back, override
//! a gate, abort (the engine's [`OperatorCommand`]s, each with a reason).
//!
//! The UI never steers an engine itself: it calls [`super::Backend::steer`], which queues the
//! command for the `convoy-steer` thread; the thread hands it to the backend's [`Steer`] and
//! reports the answer as [`super::BackendEvent::Steered`]. Three kinds of target:
//! - [`LocalEngines`]: engine runs in this process (the demo's rollout), through their
//!   [`ControlHandle`]s, exactly as `convoy serve` steers the runs it hosts;
//! - a server (`convoy gui --server URL`), through its API (`crate::remote`'s `RemoteSteer`);
//! - [`NoEngine`]: a cache whose rollouts are run by another process (`convoy rollout run`),
//!   which this console cannot reach: every command is refused with the way to do it instead.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::engine::control::{ControlHandle, OperatorCommand};
// The trait and the phase's words are declared in `remote/`, below the console, which
// implements them without importing `gui/`; re-exported so the console's paths stay.
pub use crate::remote::steer::{Steer, phase_words};

/// Engine runs in this process, by rollout id; a run registers its handle when it starts.
#[derive(Clone, Default, Debug)]
pub struct LocalEngines {
    runs: Arc<Mutex<BTreeMap<String, ControlHandle>>>,
}

impl LocalEngines {
    /// Makes `handle`'s rollout steerable from the console (replacing an earlier run's).
    pub fn register(&self, handle: ControlHandle) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(handle.rollout_id().to_owned(), handle);
        }
    }

    fn handle(&self, rollout_id: &str) -> Option<ControlHandle> {
        self.runs.lock().ok()?.get(rollout_id).cloned()
    }
}

impl Steer for LocalEngines {
    fn can_steer(&self, rollout_id: &str) -> Result<(), String> {
        match self.handle(rollout_id) {
            Some(h) if !h.is_closed() => Ok(()),
            Some(_) => Err(format!(
                "the engine run of {rollout_id} in this console has ended; \
                 continue it with `convoy rollout run --resume`"
            )),
            None => Err(format!(
                "{rollout_id} is not run by this console (its engine runs elsewhere: \
                 steer it through the server that hosts it, `convoy gui --server URL`)"
            )),
        }
    }

    fn steer(
        &self,
        rollout_id: &str,
        operator: &str,
        command: &OperatorCommand,
    ) -> Result<String, String> {
        self.can_steer(rollout_id)?;
        let handle = self
            .handle(rollout_id)
            .ok_or_else(|| format!("{rollout_id} is not run by this console"))?;
        handle
            .send_blocking(operator, command.clone())
            .map(|phase| format!("{rollout_id} is now {}", phase_words(&phase)))
            .map_err(|e| e.to_string())
    }
}

/// A console on a cache only: its rollouts are run by other processes it cannot reach.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEngine;

impl Steer for NoEngine {
    fn can_steer(&self, rollout_id: &str) -> Result<(), String> {
        Err(format!(
            "this console reads the cache only: {rollout_id} is run by `convoy rollout run` or \
             `convoy serve`; steer it with `convoy gui --server URL` or the server's API"
        ))
    }

    fn steer(&self, rollout_id: &str, _: &str, _: &OperatorCommand) -> Result<String, String> {
        Err(self.can_steer(rollout_id).err().unwrap_or_default())
    }
}

/// One command from the UI on its way to the steering thread.
#[derive(Debug, Clone)]
pub(crate) struct SteerRequest {
    pub rollout_id: String,
    pub operator: String,
    pub command: OperatorCommand,
}

/// Starts the `convoy-steer` thread: each request is handed to `target` in turn and its answer
/// goes to `report` (false when the UI has gone, which ends the thread).
pub(crate) fn spawn_worker(
    target: Arc<dyn Steer>,
    report: impl Fn(SteerRequest, Result<String, String>) -> bool + Send + 'static,
) -> std::io::Result<std::sync::mpsc::Sender<SteerRequest>> {
    let (tx, rx) = std::sync::mpsc::channel::<SteerRequest>();
    std::thread::Builder::new()
        .name("convoy-steer".into())
        .spawn(move || {
            for request in rx {
                let answer = target.steer(&request.rollout_id, &request.operator, &request.command);
                if !report(request, answer) {
                    break;
                }
            }
        })?;
    Ok(tx)
}

/// The operator name the console acts as: `$CONVOY_OPERATOR`, else `$USER` (as the audit
/// trail's actor, without its `operator:` prefix).
pub fn operator_name() -> String {
    let actor = crate::store::audit::operator_actor();
    actor.strip_prefix("operator:").unwrap_or(&actor).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::control::control_channel;
    use convoy_core::rollout::Phase;

    #[test]
    fn a_local_run_is_steered_through_its_handle_and_an_unknown_or_ended_one_is_refused() {
        let engines = LocalEngines::default();
        assert!(engines.can_steer("r1").is_err(), "nothing registered");
        let (handle, mut commands) = control_channel("r1", 4);
        engines.register(handle);
        assert!(engines.can_steer("r1").is_ok());
        assert!(
            engines
                .can_steer("r2")
                .expect_err("not here")
                .contains("not run by this console")
        );
        // A stand-in engine loop: applies nothing, answers the phase it would be in.
        let engine = std::thread::spawn(move || {
            let request = commands.blocking_recv().expect("a command");
            assert_eq!(request.operator, "ana");
            assert_eq!(request.command.name(), "pause");
            let _ = request.reply.send(Ok(Phase::Paused {
                wave: 0,
                reason: "depot closed".into(),
                by_gate: false,
                rolled_back: false,
                soak_until: None,
            }));
            drop(commands);
        });
        let answer = engines.steer(
            "r1",
            "ana",
            &OperatorCommand::Pause {
                reason: "depot closed".into(),
            },
        );
        engine.join().expect("engine thread");
        assert_eq!(
            answer.expect("applied"),
            "r1 is now paused at wave 1 by an operator: depot closed"
        );
        let ended = engines
            .steer(
                "r1",
                "ana",
                &OperatorCommand::Resume {
                    reason: "open again".into(),
                },
            )
            .expect_err("the run has ended");
        assert!(ended.contains("has ended"), "{ended}");
        assert!(
            NoEngine
                .can_steer("r1")
                .expect_err("cache only")
                .contains("--server")
        );
    }
}
