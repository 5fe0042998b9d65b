//! `convoy rollout`: run a rollout headless (`run`), export a rollout's timeline
//! (`timeline`), and draft its communication from the record (`comms`).
//!
//! `run` reads the files, verifies the release, plans (or reads a plan) and hands everything to
//! [`crate::engine`], which drives the rollout over MQTT (and DDI, with `--ddi-listen`) and
//! writes the cache.

use anyhow::{Context, Result, bail};
use convoy_core::rollout::ChangePath;
use std::fmt::Write as _;

use crate::engine::{self, EngineReport, StartMode};
use std::io::Write;
use std::path::PathBuf;

use crate::store::events::{TimelineFormat, write_timeline};
use crate::store::{self, Store};

pub use crate::ops::runs::{RunArgs, engine_options, parse_run_args, read_plan};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: RolloutCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum RolloutCommand {
    /// Export a rollout's timeline (every event with its cause) as CSV, JSON or Markdown.
    Timeline(TimelineArgs),
    /// Run a rollout headless: plan, dispatch wave by wave over MQTT, gate on live telemetry,
    /// pause or roll back by itself, and print a final report. Exit code 0: completed; 3: stopped
    /// by a gate (paused or rolled back) or aborted; 4: timed out or interrupted. With
    /// --resume, continue a rollout an earlier run left unfinished.
    Run(Box<RunArgs>),
    /// Draft the communication about a rollout from its record, as Markdown: internal (gate
    /// evidence, rollback triggers, chronology), customer (impact, action, resolution),
    /// regulator (chronology, affected population, corrective evidence), or a support decision
    /// tree. Facts only: what the record cannot know is left as a marked `[to fill: ...]` gap.
    Comms(CommsArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CommsAudience {
    Internal,
    Customer,
    Regulator,
    /// A support decision tree for the symptoms the record shows.
    Support,
}

#[derive(clap::Args, Debug)]
pub struct CommsArgs {
    /// The rollout id.
    #[arg(long)]
    pub rollout: String,
    #[arg(long, value_enum)]
    pub audience: CommsAudience,
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Write the draft to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct TimelineArgs {
    /// The rollout id.
    #[arg(long)]
    pub rollout: String,
    #[arg(long, value_enum)]
    pub format: TimelineFormat,
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        RolloutCommand::Timeline(a) => timeline(a),
        RolloutCommand::Run(a) => run_rollout(a),
        RolloutCommand::Comms(a) => comms(a),
    }
}

fn comms(args: &CommsArgs) -> Result<()> {
    use convoy_core::comms::{self, Audience};
    let db = store::resolve_path(args.db.as_deref())?;
    let store = Store::open_existing(&db)?;
    let (story, _) = crate::ops::reports::read_story(&store, &args.rollout)
        .with_context(|| format!("in {}", db.display()))?;
    let text = match args.audience {
        CommsAudience::Internal => comms::draft(&story, Audience::Internal),
        CommsAudience::Customer => comms::draft(&story, Audience::Customer),
        CommsAudience::Regulator => comms::draft(&story, Audience::Regulator),
        CommsAudience::Support => comms::support_tree(&story),
    };
    if let Some(path) = &args.out {
        return crate::fleet_io::write_atomically(path, |w| {
            w.write_all(text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))
        });
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to standard output")
}

fn timeline(args: &TimelineArgs) -> Result<()> {
    let db = store::resolve_path(args.db.as_deref())?;
    let store = Store::open_existing(&db)?;
    let events = store.timeline(&args.rollout)?;
    if events.is_empty() {
        bail!("no events for rollout {} in {}", args.rollout, db.display());
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write_timeline(&mut out, &events, args.format)?;
    out.flush().context("writing to standard output")
}

fn run_rollout(args: &RunArgs) -> Result<()> {
    let (options, mut control) = engine_options(args)?;
    let live: Option<engine::LiveReport> =
        args.metrics_listen.map(|_| engine::LiveReport::default());
    control.live.clone_from(&live);
    // The alerts run beside the engine on their own thread and connection; a configuration
    // that does not read stops the run before it starts.
    let alerts = match &args.alerts {
        Some(path) => {
            let config = crate::alerts::AlertsConfig::load(path)?;
            let db = store::resolve_path(args.db.as_deref())?;
            Some(crate::alerts::deliver::spawn(db, config, None)?)
        }
        None => None,
    };
    if control.start == StartMode::Resume {
        eprintln!(
            "rollout {}: resuming release {} from the cache over {}",
            options.rollout_id,
            options.manifest.release_id(),
            options.link.url,
        );
    } else {
        eprintln!(
            "rollout {}: release {} to {} device(s) in {} wave(s) over {} (time scale {})",
            options.rollout_id,
            options.manifest.release_id(),
            options
                .waves
                .iter()
                .map(|w| w.device_ids.len())
                .sum::<usize>(),
            options.waves.len(),
            options.link.url,
            options.time_scale
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let metrics_listen = args.metrics_listen;
    let report = runtime.block_on(async move {
        // The metrics endpoint runs beside the engine and stops with it.
        let (_metrics_stop, metrics_stop_rx) = tokio::sync::watch::channel(false);
        if let (Some(addr), Some(live)) = (metrics_listen, live) {
            serve_metrics(addr, live, metrics_stop_rx).await?;
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop_tx.send(());
            }
        });
        engine::run_with(options, control, Some(stop_rx)).await
    });
    // The run's last alerts (its stop, its end) leave before the process does.
    if let Some(alerts) = alerts {
        alerts.finish(std::time::Duration::from_secs(20));
    }
    let report = report?;
    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&report).context("encoding the report")?;
        s.push('\n');
        s
    } else {
        render_report(&report)
    };
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    lock.write_all(out.as_bytes())
        .and_then(|()| lock.flush())
        .context("writing the report")?;
    drop(lock);
    let code = report.final_state.exit_code();
    if code != 0 {
        std::process::exit(i32::from(code));
    }
    Ok(())
}

/// Serves the live report as `GET /metrics` on `addr` (through the one accept loop, with small
/// connection limits) until `stop` changes or is dropped.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    live: engine::LiveReport,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    use crate::link::http::accept::{self, Accept, AcceptCounters, Limits};
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen {addr}: cannot listen there"))?;
    let router = axum::Router::new().route(
        "/metrics",
        get(move || {
            let live = live.clone();
            async move {
                let text = live
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_ref()
                    .map(engine::metrics::exposition)
                    .unwrap_or_default();
                (
                    [(axum::http::header::CONTENT_TYPE, crate::prom::CONTENT_TYPE)],
                    text,
                )
            }
        }),
    );
    let accept = Accept {
        tls: None,
        limits: Limits {
            max_connections: 16,
            max_per_client: 4,
            header_timeout: std::time::Duration::from_secs(10),
            tls_handshake_timeout: std::time::Duration::from_secs(10),
        },
        counters: std::sync::Arc::new(AcceptCounters::default()),
        server: "convoy rollout run --metrics-listen",
    };
    eprintln!(
        "metrics: http://{}/metrics",
        listener.local_addr().map_or(addr, |a| a)
    );
    tokio::spawn(accept::serve(
        listener,
        router,
        accept,
        stop,
        std::convert::identity,
    ));
    Ok(())
}

fn render_report(r: &EngineReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "rollout {} of release {}: {:?}",
        r.rollout_id, r.release_id, r.final_state
    );
    let _ = writeln!(s, "  phase: {:?}", r.phase);
    let path = match &r.change_path {
        ChangePath::Standard => "standard".to_owned(),
        ChangePath::Emergency {
            authoriser,
            evidence,
            ..
        } => {
            format!("emergency (authoriser {authoriser}: {evidence})")
        }
        ChangePath::SingleOperator => "single operator (no separate approval)".to_owned(),
    };
    let _ = writeln!(
        s,
        "  requested by {} on the {path} path; approved by {}",
        r.requested_by,
        r.approvals.join(", ")
    );
    let _ = writeln!(
        s,
        "  simulated {} to {} ({:.1} s wall)",
        r.started_at, r.ended_at, r.wall_secs
    );
    let _ = writeln!(
        s,
        "  {:<12} {:>7} {:>7} {:>9} {:>6} {:>8} {:>9} {:>6}",
        "wave", "devices", "offered", "confirmed", "failed", "reverted", "in flight", "silent"
    );
    for w in &r.waves {
        let _ = writeln!(
            s,
            "  {:<12} {:>7} {:>7} {:>9} {:>6} {:>8} {:>9} {:>6}",
            w.name, w.devices, w.offered, w.confirmed, w.failed, w.reverted, w.in_flight, w.silent
        );
    }
    let _ = writeln!(
        s,
        "  gate looks passed: {}; decisions: {}",
        r.gate_looks_passed,
        r.gate_decisions.len()
    );
    for d in &r.gate_decisions {
        let _ = writeln!(s, "    {} {}: {:?}", d.at, d.wave, d.outcome);
        if let Some(findings) = d.evidence.get("findings").and_then(|f| f.as_array()) {
            for f in findings.iter().take(8) {
                let _ = writeln!(s, "      {f}");
            }
        }
    }
    if !r.unsettled.is_empty() {
        let _ = writeln!(
            s,
            "  {} device(s) not settled (offered, not confirmed, failed nor reverted):",
            r.unsettled.len()
        );
        for u in r.unsettled.iter().take(20) {
            let _ = writeln!(
                s,
                "    {} ({}): {:?}{}",
                u.device_id,
                u.wave,
                u.last_state,
                if u.silent { ", silent" } else { "" }
            );
        }
    }
    let l = &r.link;
    let _ = writeln!(
        s,
        "  link: {} status, {} telemetry, {} acks; commands {} sent, {} resent, {} acked, {} refused by devices; {} disconnect(s); {} message(s) rejected",
        l.status_messages,
        l.telemetry_messages,
        l.acks,
        l.commands_sent,
        l.commands_resent,
        l.commands_acked,
        l.commands_rejected_by_devices,
        l.disconnects,
        l.rejected.values().sum::<u64>()
    );
    if let Some(d) = &r.ddi {
        let _ = writeln!(
            s,
            "  ddi ({}): {} device(s), {} polls, {} assigned, {} feedback, {} canceled, {} withdrawn; {} unauthorized, {} bad request(s), {} busy",
            d.url,
            d.devices,
            d.polls,
            d.assigned,
            d.feedback,
            d.canceled,
            d.withdrawn,
            d.unauthorized,
            d.bad_requests,
            d.busy
        );
    }
    if r.stale_outbox_commands > 0 {
        let _ = writeln!(
            s,
            "  {} unacknowledged command(s) of other rollouts are in the outbox (not sent)",
            r.stale_outbox_commands
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "  note: {n}");
    }
    s
}
