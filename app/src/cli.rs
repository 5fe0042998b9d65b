//! The command line: parses arguments and hands each subcommand to its module in `cmd/`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

use crate::cmd;

/// Convoy: plan, sign, dispatch and gate over-the-air rollouts to vehicle and IoT fleets.
#[derive(Parser, Debug)]
#[command(name = "convoy", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate, import and export fleets.
    Fleet(cmd::fleet::Args),
    /// Run the embedded MQTT broker (for demos and single-machine use).
    Broker(cmd::broker::Args),
    /// Score CVSS vectors and findings: points, tier and recommendation.
    Score(cmd::score::Args),
    /// Generate signing keys; rotate and revoke trusted keys.
    Key(cmd::key::Args),
    /// Sign, verify and publish (TUF) release manifests.
    Release(cmd::release::Args),
    /// Plan a rollout: eligibility, prerequisite chains, canary, waves, schedule, bandwidth.
    Plan(cmd::plan::Args),
    /// Verify and list the hash-chained audit log.
    Audit(cmd::audit::Args),
    /// Alerts: check the channels file, send a test alert, deliver, show channel health.
    Alerts(cmd::alerts::Args),
    /// Saved cohorts: named fleet searches that pick up new devices (`cohort:NAME`).
    Cohort(cmd::cohort::Args),
    /// Import support tickets and customer reports per device (the support-contacts gate).
    Signals(cmd::signals::Args),
    /// Ingest telemetry samples into the cache.
    Telemetry(cmd::telemetry::Args),
    /// Rollout records: export timelines.
    Rollout(cmd::rollout::Args),
    /// Rollout requests: make one (naming the finding it remediates), list, show, change shape.
    Request(cmd::request::Args),
    /// Rollout metrics: time to remediate (from each finding's detection), recover, lead time.
    Metrics(cmd::metrics::Args),
    /// Run every device of a fleet as a simulated device over MQTT.
    Sim(cmd::sim::Args),
    /// Open the desktop console (the default with no arguments: a live demo).
    Gui(cmd::gui::Args),
    /// Serve release artifacts over HTTP with range requests; fetch one with resume.
    Artifacts(cmd::artifacts::Args),
    /// Serve the cache over an authenticated HTTP JSON API; manage its API tokens.
    Serve(cmd::serve::Args),
    /// Serve a signed release to devices that speak hawkBit's DDI API (hawkBit-compatible).
    Ddi(cmd::ddi::Args),
}

/// Runs the command line and returns the process exit code. Errors are printed once, here,
/// with their whole chain of causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => cmd::gui::run_default(),
        Some(Command::Fleet(args)) => cmd::fleet::run(&args),
        Some(Command::Broker(args)) => cmd::broker::run(&args),
        Some(Command::Score(args)) => cmd::score::run(&args),
        Some(Command::Key(args)) => cmd::key::run(&args),
        Some(Command::Release(args)) => cmd::release::run(&args),
        Some(Command::Plan(args)) => cmd::plan::run(&args),
        Some(Command::Audit(args)) => cmd::audit::run(&args),
        Some(Command::Alerts(args)) => cmd::alerts::run(&args),
        Some(Command::Cohort(args)) => cmd::cohort::run(&args),
        Some(Command::Signals(args)) => cmd::signals::run(&args),
        Some(Command::Telemetry(args)) => cmd::telemetry::run(&args),
        Some(Command::Rollout(args)) => cmd::rollout::run(&args),
        Some(Command::Request(args)) => cmd::request::run(&args),
        Some(Command::Metrics(args)) => cmd::metrics::run(&args),
        Some(Command::Sim(args)) => cmd::sim::run(&args),
        Some(Command::Gui(args)) => cmd::gui::run(&args),
        Some(Command::Artifacts(args)) => cmd::artifacts::run(&args),
        Some(Command::Serve(args)) => cmd::serve::run(&args),
        Some(Command::Ddi(args)) => cmd::ddi::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
