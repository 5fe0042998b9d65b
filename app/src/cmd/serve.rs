//! `convoy serve`: run the authenticated JSON API on a cache, and manage its API tokens.
//!
//! The server itself is `crate::serve`; this module parses arguments, runs it until Ctrl-C, and
//! makes, lists and revokes tokens (each change audited as the local operator).

use anyhow::{Context, Result, bail};
use convoy_core::time::Timestamp;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::ops::tokens::{self as auth, Revoke, Role};
use crate::serve::{ServeConfig, Server};
use crate::store::{self, Store, audit::operator_actor};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<ServeCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum ServeCommand {
    /// Make, list and revoke API tokens.
    Token(TokenArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long, alias = "db")]
    pub cache: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Largest request body accepted, in bytes (larger gets 413).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Requests per second per token, sustained (more gets 429).
    #[arg(long, default_value_t = 50.0)]
    pub rate_per_sec: f64,
    /// Requests per token allowed in a burst before the rate applies.
    #[arg(long, default_value_t = 100)]
    pub rate_burst: u32,
    /// Connections served at once; more clients wait to be accepted.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Connections served at once from one client address (an IPv4 address or an IPv6 /64);
    /// more get 503 (plain HTTP) or a closed socket (TLS). Default: a quarter of
    /// --max-connections. Raise it when clients share an address (a NAT or a reverse proxy).
    #[arg(long, value_name = "N")]
    pub max_connections_per_client: Option<usize>,
    /// Seconds a client has to send a whole request head; also the longest a keep-alive
    /// connection may stay idle.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds a client has to finish the TLS handshake.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub tls_handshake_timeout_secs: u64,
    /// Event streams (GET /api/v1/events) open at once on one token; more get 429.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_streams_per_token: usize,
    /// Event streams open at once in all; more get 503. Must be below --max-connections.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_streams: usize,
    /// Host the engine run described by this file (the arguments of `convoy rollout run`, one
    /// per line; add `--resume` to continue an unfinished rollout), so that
    /// `POST /api/v1/rollouts/{id}/pause|resume|rollback|override|abort` can steer it; a paused
    /// run waits for the API. Repeat for several rollouts.
    #[arg(long, value_name = "ARGS_FILE")]
    pub host_rollout: Vec<PathBuf>,
    /// Trusted keys that releases requested over the API must verify against (default:
    /// $CONVOY_TRUST, else `trust/` beside the cache).
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// Dispatch approved rollout requests: this file holds the arguments of `convoy rollout
    /// run` every approved request runs with (one per line: `--broker URL`, TLS files,
    /// `--time-scale`, ...); the server adds the cache, the release, the frozen plan, the
    /// rollout id, the requester and the approvers. Without it, approved requests wait.
    #[arg(long, value_name = "ARGS_FILE")]
    pub dispatch_args: Option<PathBuf>,
    /// Send the cache's alerts (gate stops, rollbacks, aborts, completions, stopped engines,
    /// requests waiting for approval) through the channels of this file (docs/ALERTS.md).
    #[arg(long, value_name = "FILE")]
    pub alerts: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token for an operator (created with the role, or given it) and print it once.
    /// A token made here, on the server's host, is its operator's own for the two-person rule;
    /// one made over the API belongs to the admin who made it (docs/SERVE.md).
    Add(TokenAddArgs),
    /// List tokens (ids, operators, roles; never the tokens).
    List(TokenListArgs),
    /// Revoke one token by id, or every token of an operator.
    Revoke(TokenRevokeArgs),
}

#[derive(clap::Args, Debug)]
pub struct TokenAddArgs {
    /// The cache file.
    #[arg(long, alias = "db")]
    pub cache: Option<PathBuf>,
    #[arg(long)]
    pub operator: String,
    #[arg(long, value_enum)]
    pub role: Role,
}

#[derive(clap::Args, Debug)]
pub struct TokenListArgs {
    /// The cache file.
    #[arg(long, alias = "db")]
    pub cache: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct TokenRevokeArgs {
    /// The cache file.
    #[arg(long, alias = "db")]
    pub cache: Option<PathBuf>,
    /// The token id (`token list` shows it).
    #[arg(
        long,
        conflicts_with = "operator",
        required_unless_present = "operator"
    )]
    pub id: Option<String>,
    /// Revoke every live token of this operator.
    #[arg(long)]
    pub operator: Option<String>,
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        Some(ServeCommand::Token(t)) => match &t.command {
            TokenCommand::Add(a) => token_add(a),
            TokenCommand::List(a) => token_list(a),
            TokenCommand::Revoke(a) => token_revoke(a),
        },
        None => serve(&args.run),
    }
}

fn serve(args: &RunArgs) -> Result<()> {
    let cache = store::resolve_path(args.cache.as_deref())?;
    let mut config = ServeConfig::new(cache.clone(), args.listen);
    config.tls = args.tls_cert.clone().zip(args.tls_key.clone());
    config.max_body_bytes = args.max_body_bytes;
    config.rate_per_sec = args.rate_per_sec;
    config.rate_burst = args.rate_burst;
    config.max_connections = args.max_connections;
    config.max_connections_per_client = args.max_connections_per_client;
    config.header_read_timeout = std::time::Duration::from_secs(args.header_timeout_secs);
    config.tls_handshake_timeout = std::time::Duration::from_secs(args.tls_handshake_timeout_secs);
    config.max_streams_per_token = args.max_streams_per_token;
    config.max_streams = args.max_streams;
    config.trust.clone_from(&args.trust);
    if let Some(path) = &args.dispatch_args {
        config.dispatch = Some(crate::ops::hosting::read_dispatch_args(path)?);
    }
    let mut hosted = Vec::new();
    for path in &args.host_rollout {
        let run = crate::ops::hosting::host_rollout_file(path)?;
        eprintln!("hosting rollout {} ({})", run.rollout_id(), path.display());
        config.controls.push(run.control.clone());
        hosted.push(run);
    }
    let alerts = match &args.alerts {
        Some(path) => {
            let alerts = crate::alerts::AlertsConfig::load(path)?;
            eprintln!(
                "alerts: {} channel(s) from {}",
                alerts.channels.len(),
                path.display()
            );
            Some(crate::alerts::deliver::spawn(cache.clone(), alerts, None)?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("serve")
        .build()
        .context("starting the tokio runtime")?;
    let dispatched = runtime.block_on(async move {
        let server = Server::start(config).await?;
        let shown = cache.display().to_string();
        let live = tokio::task::spawn_blocking(move || -> Result<usize> {
            let store = Store::open_existing(&cache)?;
            Ok(auth::list_tokens(&store)?
                .iter()
                .filter(|t| t.revoked.is_none())
                .count())
        })
        .await
        .context("counting tokens")??;
        println!(
            "serving {} on {} ({live} live token{}); Ctrl-C stops",
            shown,
            server.base_url(),
            if live == 1 { "" } else { "s" }
        );
        if live == 0 {
            eprintln!(
                "note: no token yet; every request gets 401 until `convoy serve token add` makes one"
            );
        }
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        println!("stopping");
        let dispatched = server.take_runs();
        server.shutdown().await;
        Ok::<_, anyhow::Error>(dispatched)
    })?;
    hosted.extend(dispatched);
    // Hosted runs stop as `convoy rollout run` does on Ctrl-C: resumable with --resume.
    for run in hosted {
        let id = run.rollout_id().to_owned();
        match run.stop() {
            Ok(report) => println!("rollout {id}: {:?}", report.final_state),
            Err(e) => eprintln!("rollout {id}: the engine run failed: {e:#}"),
        }
    }
    // The stopped runs' last alerts leave before the process does.
    if let Some(alerts) = alerts {
        alerts.finish(std::time::Duration::from_secs(10));
    }
    Ok(())
}

fn open(cache: Option<&std::path::Path>) -> Result<Store> {
    let path = store::resolve_path(cache)?;
    Store::open_existing(&path)
}

fn token_add(args: &TokenAddArgs) -> Result<()> {
    let store = open(args.cache.as_deref())?;
    let t = auth::add_token(
        &store,
        &args.operator,
        args.role,
        &operator_actor(),
        crate::now(),
    )?;
    eprintln!(
        "token {} for operator {} ({}); it is shown only now, the cache keeps its SHA-256:",
        t.id,
        args.operator,
        args.role.as_str()
    );
    println!("{}", t.token);
    Ok(())
}

fn token_list(args: &TokenListArgs) -> Result<()> {
    let store = open(args.cache.as_deref())?;
    let tokens = auth::list_tokens(&store)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tokens)?);
        return Ok(());
    }
    println!(
        "{:<12}  {:<20}  {:<10}  {:<20}  {:<20}  revoked",
        "id", "operator", "role", "created", "created by"
    );
    for t in &tokens {
        println!(
            "{:<12}  {:<20}  {:<10}  {:<20}  {:<20}  {}",
            t.id,
            t.operator,
            t.role,
            Timestamp::from_secs(t.created).to_rfc3339(),
            t.created_by.as_deref().unwrap_or("unknown"),
            t.revoked
                .map_or_else(|| "-".to_owned(), |s| Timestamp::from_secs(s).to_rfc3339())
        );
    }
    Ok(())
}

fn token_revoke(args: &TokenRevokeArgs) -> Result<()> {
    let store = open(args.cache.as_deref())?;
    let which = match (&args.id, &args.operator) {
        (Some(id), None) => Revoke::Id(id),
        (None, Some(op)) => Revoke::Operator(op),
        _ => bail!("give exactly one of --id and --operator"),
    };
    let ids = auth::revoke_tokens(&store, &which, &operator_actor(), crate::now())?;
    println!("revoked {}", ids.join(", "));
    Ok(())
}
