//! `convoy alerts`: check an alerts configuration, send a test alert, run the deliverer on
//! its own, show the channels' health.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use convoy_core::alerts::{Alert, AlertKind, Severity};
use std::path::PathBuf;
use std::time::Duration;

use crate::alerts::deliver::{self, Deliverer, wall_ms};
use crate::alerts::{AlertsConfig, Target, feed};
use crate::store::{self, Store};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: AlertsCommand,
}

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    /// Read an alerts configuration and say what each channel is, or what is wrong.
    Check(ConfigArgs),
    /// Send a test alert to every channel (or one) now, through the outbox, and report.
    Test(TestArgs),
    /// Watch the cache and deliver its alerts (for a host with no server running).
    Run(RunArgs),
    /// Each channel's alerts: pending, sent, the last error.
    Status(DbArgs),
}

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// The alerts configuration (TOML, docs/ALERTS.md).
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct DbArgs {
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub db: DbArgs,
    /// Only this channel.
    #[arg(long)]
    pub channel: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub db: DbArgs,
    /// One pass of the feed and the deliverer, then exit.
    #[arg(long)]
    pub once: bool,
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        AlertsCommand::Check(a) => check(a),
        AlertsCommand::Test(a) => test(a),
        AlertsCommand::Run(a) => run_deliverer(a),
        AlertsCommand::Status(a) => status(a),
    }
}

fn check(args: &ConfigArgs) -> Result<()> {
    let config = AlertsConfig::load(&args.config)?;
    if config.channels.is_empty() {
        println!(
            "{}: no channels: nothing will be sent",
            args.config.display()
        );
        return Ok(());
    }
    for c in &config.channels {
        let to = match &c.target {
            Target::Webhook(w) => format!(
                "{} ({:?} body, {})",
                redact(&w.url),
                w.format,
                if w.secret_file.is_some() {
                    "signed"
                } else {
                    "NOT signed: no secret_file"
                }
            ),
            Target::Email(e) => format!(
                "{}:{} ({:?}) from {} to {}",
                e.server,
                e.port,
                e.tls,
                e.from,
                e.to.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Target::Desktop => "the console's desktop notifications".to_owned(),
        };
        println!(
            "{}: {} to {to}; at most {} a minute; events: {}",
            c.name,
            c.target.kind_name(),
            c.max_per_minute,
            c.kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        // Secrets are read now, so a missing or unsafe one shows before an alert needs it.
        let secret = match &c.target {
            Target::Webhook(w) => w.secret_file.as_ref(),
            Target::Email(e) => e.password_file.as_ref(),
            Target::Desktop => None,
        };
        if let Some(path) = secret {
            crate::alerts::read_secret(path).with_context(|| format!("channel `{}`", c.name))?;
        }
    }
    Ok(())
}

/// A URL without its path and query (a Slack webhook's path is its secret).
fn redact(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    let scheme = url.split_once("://").map_or("http", |(s, _)| s);
    format!("{scheme}://{host}/…")
}

fn test(args: &TestArgs) -> Result<()> {
    let config = AlertsConfig::load(&args.config.config)?;
    let names: Vec<String> = match &args.channel {
        Some(n) => {
            if config.channel(n).is_none() {
                bail!("no channel `{n}` in {}", args.config.config.display());
            }
            vec![n.clone()]
        }
        None => config.channels.iter().map(|c| c.name.clone()).collect(),
    };
    let db = store::resolve_path(args.db.db.as_deref())?;
    let mut store = Store::open(&db)?;
    let now = wall_ms();
    let alert = Alert {
        incident: format!("test/{now}"),
        kind: AlertKind::Test,
        severity: Severity::Info,
        rollout_id: "test".into(),
        at: convoy_core::time::Timestamp::from_secs(now / 1_000),
        title: "Convoy test alert".into(),
        summary: "This is a test of the alert channel: if you read it, alerts reach you.".into(),
        evidence: Vec::new(),
        resolves: true,
    };
    for n in &names {
        feed::enqueue_test(&mut store, n, &alert, now)?;
    }
    let deliverer = Deliverer::new(config, None)?;
    let done = deliverer.pass(&mut store, now)?;
    deliverer.release(&store);
    let mut failed = false;
    for row in store
        .alerts(None)?
        .iter()
        .filter(|r| r.incident == alert.incident)
    {
        match (&row.sent_ms, &row.last_error) {
            (Some(_), _) => println!("{}: sent", row.channel),
            (None, Some(e)) => {
                failed = true;
                println!(
                    "{}: FAILED: {e} (kept in the outbox; retried by the next deliverer)",
                    row.channel
                );
            }
            (None, None) => {
                failed = true;
                println!(
                    "{}: not sent (another process delivers this channel, or it is the console's desktop)",
                    row.channel
                );
            }
        }
    }
    if failed || done.sent < names.len() {
        bail!("{} of {} test alerts sent", done.sent, names.len());
    }
    Ok(())
}

fn run_deliverer(args: &RunArgs) -> Result<()> {
    let config = AlertsConfig::load(&args.config.config)?;
    let db = store::resolve_path(args.db.db.as_deref())?;
    if args.once {
        let mut store = Store::open_existing(&db)?;
        let deliverer = Deliverer::new(config, None)?;
        let now = wall_ms();
        let fed = feed::pass(&mut store, deliverer.config(), now)?;
        let done = deliverer.pass(&mut store, now)?;
        deliverer.release(&store);
        println!(
            "read {} timeline entries; {} alerts, {} enqueued ({} duplicates); sent {}, failed {}, deferred {}",
            fed.entries_read,
            fed.alerts,
            fed.enqueued.queued,
            fed.enqueued.duplicates,
            done.sent,
            done.failed,
            done.deferred
        );
        return Ok(());
    }
    eprintln!(
        "delivering the alerts of {} through {} channel(s); Ctrl-C stops",
        db.display(),
        config.channels.len()
    );
    let handle = deliver::spawn(db, config, None)?;
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc_channel(tx)?;
    let _ = rx.recv();
    handle.finish(Duration::from_secs(5));
    Ok(())
}

/// Sends on `tx` when the process gets Ctrl-C (SIGINT) or SIGTERM.
fn ctrlc_channel(tx: std::sync::mpsc::Sender<()>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal runtime")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
            });
            let _ = tx.send(());
        })
        .context("starting the signal thread")?;
    Ok(())
}

fn status(args: &DbArgs) -> Result<()> {
    let db = store::resolve_path(args.db.as_deref())?;
    let store = Store::open_existing(&db)?;
    let health = store.alert_health()?;
    if health.is_empty() {
        println!("no alerts in {}", db.display());
    }
    let now = wall_ms();
    for h in health {
        let oldest = h
            .oldest_pending_ms
            .map(|t| format!(", oldest waiting {} s", (now - t) / 1_000))
            .unwrap_or_default();
        println!(
            "{}: {} pending{oldest}, {} sent{}",
            h.channel,
            h.pending,
            h.sent,
            h.last_error
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
