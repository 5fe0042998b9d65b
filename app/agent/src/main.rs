//! `convoy-agent`: the Convoy device agent (docs/AGENT.md).
//!
//! `convoy-agent --config FILE` runs the agent; `convoy-agent --check --config FILE` validates
//! the configuration, loads the trust directory, and says what the installer and each health
//! source see now, without connecting to the broker or changing anything.
//!
//! The agent is its own package so that a device builds only the core (`convoy_core`) and the
//! device-facing link (`convoy_devlink`): no console, no server, no SQLite.

mod agent;
mod config;
mod health;
mod installer;
mod outbox;
mod state;
mod trust;
mod wire;

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// The Convoy device agent: takes signed releases from a Convoy rollout over MQTT, installs
/// them, and confirms or reverts them after a health window.
#[derive(Parser, Debug)]
#[command(name = "convoy-agent", version)]
struct Args {
    /// The configuration file (TOML; docs/AGENT.md, packaging/agent/agent.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Check the configuration and show what each health source sees, then exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.check {
        check(&args.config)
    } else {
        run(&args.config).map(|()| true)
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("convoy-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> Result<()> {
    let config = config::Config::load(path)?;
    // One thread: a device agent waits on the network almost all the time. Installers, health
    // commands and hashing run on tokio's blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(agent::run(config))
}

/// `--check`: prints one line per thing checked; false when something is wrong.
fn check(path: &std::path::Path) -> Result<bool> {
    let config = config::Config::load(path)?;
    let mut ok = true;
    let mut problem = |what: String| {
        println!("PROBLEM {what}");
        ok = false;
    };
    println!(
        "configuration {}: device {} (hardware {})",
        path.display(),
        config.device.id,
        config.device.hardware_id
    );
    println!(
        "broker: {} (prefix {})",
        config.broker.url, config.broker.prefix
    );
    for (key, file) in [
        ("broker.ca_file", &config.broker.ca_file),
        ("broker.client_cert_file", &config.broker.client_cert_file),
        ("broker.client_key_file", &config.broker.client_key_file),
    ] {
        if let Some(f) = file
            && let Err(e) = std::fs::File::open(f)
        {
            problem(format!("{key} {}: {e}", f.display()));
        }
    }
    match trust::load(&config.trust.dir) {
        Ok(keys) => {
            let ids: Vec<String> = keys.key_ids().map(ToString::to_string).collect();
            println!(
                "trust: {} key(s) in {}: {}",
                ids.len(),
                config.trust.dir.display(),
                ids.join(", ")
            );
        }
        Err(e) => problem(format!("trust: {e:#}")),
    }
    let installer = installer::Installer::new(config.installer.clone());
    match &config.installer {
        config::InstallerConfig::Directory { root } => println!(
            "installer: directory {} (current slot: {})",
            root.display(),
            installer
                .current_slot()
                .map_or_else(|| "not set up yet".to_owned(), |s| s.to_string())
        ),
        config::InstallerConfig::Command { program }
        | config::InstallerConfig::Swupdate { program, .. }
        | config::InstallerConfig::Rauc { program } => match find_program(program) {
            Some(found) => println!("installer: {} ({})", installer.kind(), found.display()),
            None => problem(format!(
                "installer: {} program {} is not found",
                installer.kind(),
                program.display()
            )),
        },
    }
    match agent::initial_state(&config, &installer) {
        Ok(s) => {
            let job = s.job.as_ref().map_or_else(
                || "no update under way".to_owned(),
                |j| format!("release {} in phase {:?}", j.release_id, j.phase),
            );
            println!(
                "state: {}: slot {}, release counter {}, {job}",
                config.state.dir.display(),
                s.active_slot,
                s.memory.installed_counter
            );
        }
        Err(e) => problem(format!("state: {e:#}")),
    }
    let (reading, problems) = health::read(&config.health);
    for (unit, count) in config.health.units.iter().zip(&reading.unit_restarts) {
        if let Some(n) = count {
            println!("health: unit {}: {n} restart(s)", unit.name);
        }
    }
    if let Some(c) = &config.health.core_dumps
        && let Some(files) = &reading.core_dumps
    {
        println!(
            "health: core dumps in {}: {} file(s)",
            c.dir.display(),
            files.len()
        );
    }
    if let Some(p) = &config.health.power_supply {
        println!(
            "health: power supply {}: battery {}, power {}",
            p.root.display(),
            reading
                .battery_pct
                .map_or_else(|| "none".to_owned(), |b| format!("{b}%")),
            reading.power.map_or_else(
                || "unknown (reported as mains)".to_owned(),
                |p| p.to_string()
            )
        );
    }
    if let (Some(s), Some(free)) = (&config.health.storage, reading.free_storage_bytes) {
        println!("health: storage {}: {free} bytes free", s.path.display());
    }
    if let Some(m) = &config.health.metrics {
        if let Some(file) = &m.file {
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    let (metrics, bad) = health::parse_metrics(&text);
                    println!(
                        "health: metrics file {}: {} metric(s)",
                        file.display(),
                        metrics.len()
                    );
                    for b in bad {
                        problem(format!("metrics file {}: {b}", file.display()));
                    }
                }
                Err(e) => println!(
                    "health: metrics file {}: not readable yet ({e})",
                    file.display()
                ),
            }
        }
        if let Some(socket) = &m.socket {
            println!(
                "health: metrics socket {} (opened when the agent runs)",
                socket.display()
            );
        }
    }
    println!("health: the link's reconnects are reported by the running agent");
    for p in problems {
        problem(format!("health: {p}"));
    }
    Ok(ok)
}

/// `program` itself if it has a directory part, else the first match on `$PATH`.
fn find_program(program: &std::path::Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
