//! Engine runs hosted in this process (by the server, or the console for requests it
//! dispatches; `serve::host` is this module): each runs on a thread of its own (the engine's
//! future holds a cache connection and is not `Send`) with its own Tokio runtime, holds when
//! paused (an operator may resume it over the API), and is steered through its
//! [`ControlHandle`], which the API's rollout endpoints use.
//!
//! The server hosts the runs it was started with (`convoy serve --host-rollout FILE`) and the
//! runs of requests approved over the API (`--dispatch-args FILE`, see [`super::requests`]).
//! It is not a scheduler: a run that ends stays ended, and a restarted server does not pick up
//! unfinished runs by itself (a `--host-rollout` file with `--resume` continues one).

use anyhow::{Context, Result};
use std::path::Path;
use tokio::sync::oneshot;

use crate::engine::control::{ControlHandle, control_channel};
use crate::engine::{self, EngineReport, WhenPaused};
use crate::ops::runs::{RunArgs, engine_options, parse_run_args};

/// Operator commands waiting for the engine beyond this many wait for room.
const CONTROL_CAPACITY: usize = 64;

/// One engine run on its own thread.
#[derive(Debug)]
pub struct HostedRun {
    pub control: ControlHandle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<EngineReport>>>,
}

impl HostedRun {
    pub fn rollout_id(&self) -> &str {
        self.control.rollout_id()
    }

    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        self.thread
            .as_ref()
            .is_none_or(std::thread::JoinHandle::is_finished)
    }

    /// Waits for the run to end by itself and returns its report.
    pub fn join(mut self) -> Result<EngineReport> {
        self.wait()
    }

    /// Stops the run (as Ctrl-C stops `convoy rollout run`: `engine.stopped` in the timeline,
    /// resumable with `--resume`) and returns its report.
    pub fn stop(mut self) -> Result<EngineReport> {
        if let Some(stop) = self.stop.take() {
            // A run that already ended has dropped its receiver: nothing to stop.
            let _ = stop.send(());
        }
        self.wait()
    }

    fn wait(&mut self) -> Result<EngineReport> {
        let thread = self.thread.take().context("the run was already joined")?;
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the engine thread of {} panicked", self.rollout_id()))?
    }
}

/// Starts the engine run that `args` (the arguments of `convoy rollout run`) describe, holding
/// when paused, with a control channel.
pub fn host_rollout(args: &RunArgs) -> Result<HostedRun> {
    let (options, mut control) = engine_options(args)?;
    let id = options.rollout_id.clone();
    let (handle, commands) = control_channel(&id, CONTROL_CAPACITY);
    control.commands = Some(commands);
    control.when_paused = WhenPaused::Hold;
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("engine-{id}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .thread_name("engine")
                .build()
                .context("starting the engine's runtime")?;
            runtime.block_on(engine::run_with(options, control, Some(stop_rx)))
        })
        .with_context(|| format!("starting the engine thread of rollout {id}"))?;
    Ok(HostedRun {
        control: handle,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// Reads the arguments of `convoy rollout run` from `path`, one per line (blank lines and lines
/// starting with `#` are skipped), and hosts that run.
pub fn host_rollout_file(path: &Path) -> Result<HostedRun> {
    let words = read_args_file(path)?;
    let args = parse_run_args(words)
        .with_context(|| format!("{}: the arguments of convoy rollout run", path.display()))?;
    host_rollout(&args).with_context(|| format!("hosting the rollout of {}", path.display()))
}

/// The arguments in `path`, one per line; blank lines and lines starting with `#` are skipped.
pub fn read_args_file(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Reads the dispatch settings of `convoy serve --dispatch-args FILE` (arguments of `convoy
/// rollout run` shared by every approved request) once, when the server starts, into the
/// typed spec every approved request's run is made from (the server fills in the cache,
/// release, plan, rollout id, requester and approvers), so that a mistake shows when the
/// server starts, not at 2 a.m.
pub fn read_dispatch_args(path: &Path) -> Result<RunArgs> {
    let words = read_args_file(path)?;
    for owned in [
        "--db",
        "--release",
        "--plan",
        "--rollout-id",
        "--operator",
        "--approve",
        "--resume",
    ] {
        if words
            .iter()
            .any(|w| w == owned || w.starts_with(&format!("{owned}=")))
        {
            anyhow::bail!(
                "{}: {owned} is set by the server for each approved request; remove it",
                path.display()
            );
        }
    }
    let mut words = words;
    // The release is the request's; a placeholder until then.
    words.extend(["--release".to_owned(), "-".to_owned()]);
    parse_run_args(words)
        .with_context(|| format!("{}: the arguments of convoy rollout run", path.display()))
}
