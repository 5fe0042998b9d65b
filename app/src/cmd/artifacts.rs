//! `convoy artifacts serve|fetch`: serve release artifacts over HTTP with range requests (depot
//! mode), and fetch one with resume and hash checking, as a device would.
//!
//! The server and client live in [`crate::link::http`]; this module reads arguments, prints,
//! and runs the tokio runtime.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::link::http::{
    ArtifactServer, Content, FetchError, Progress, RetryPolicy, ServerConfig, download_with_retries,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: ArtifactsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ArtifactsCommand {
    /// Serve the files of a directory (or the given files) over HTTP with range requests.
    Serve(ServeArgs),
    /// Download an artifact, resuming an interrupted download, and check its length and SHA-256.
    Fetch(FetchArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Serve every file under this directory at its relative path.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    pub dir: Option<PathBuf>,
    /// Serve this file at /NAME (repeatable), instead of a directory.
    #[arg(long, value_name = "FILE")]
    pub file: Vec<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:8080 for the depot's LAN (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Connections served at once; more clients wait to be accepted.
    #[arg(long, default_value_t = 64)]
    pub max_connections: usize,
    /// Connections served at once from one client address (an IPv4 address or an IPv6 /64);
    /// more get 503. Default: a quarter of --max-connections. Raise it when devices share an
    /// address (a depot's NAT).
    #[arg(long, value_name = "N")]
    pub max_connections_per_client: Option<usize>,
    /// Seconds a client has to send a whole request head; also the longest a keep-alive
    /// connection may stay idle.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
}

#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// The artifact's URL, http://HOST[:PORT]/PATH.
    pub url: String,
    /// Where to put it; the download goes to FILE.part until it is complete and checked.
    #[arg(long)]
    pub out: PathBuf,
    /// The expected SHA-256 (64 hex digits), e.g. from the signed manifest.
    #[arg(long)]
    pub sha256: String,
    /// The expected length in bytes.
    #[arg(long)]
    pub length: u64,
    /// Attempts in all; each retry resumes where the last one broke off.
    #[arg(long, default_value_t = 8)]
    pub attempts: u32,
}

pub fn run(args: &Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("convoy-http")
        .build()
        .context("starting the tokio runtime")?;
    match &args.command {
        ArtifactsCommand::Serve(a) => runtime.block_on(serve(a)),
        ArtifactsCommand::Fetch(a) => runtime.block_on(fetch(a)),
    }
}

async fn serve(args: &ServeArgs) -> Result<()> {
    let (content, from) = if let Some(dir) = &args.dir {
        (Content::Dir(dir.clone()), dir.display().to_string())
    } else {
        let mut files = BTreeMap::new();
        for path in &args.file {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{} has no usable file name", path.display()))?
                .to_owned();
            if files.insert(name.clone(), path.clone()).is_some() {
                bail!("two files are named {name}: each is served at /{name}");
            }
        }
        (Content::Files(files), format!("{} files", args.file.len()))
    };
    let mut config = ServerConfig::new(args.listen);
    config.max_connections = args.max_connections;
    config.max_connections_per_client = args.max_connections_per_client;
    config.header_read_timeout = Duration::from_secs(args.header_timeout_secs);
    let server = ArtifactServer::start(content, config)
        .await
        .context("starting the artifact server")?;
    let catalog = server.catalog().await?;
    // The first line is machine-readable: scripts and tests read the address from it.
    println!("listening on http://{}/", server.addr());
    println!("serving {} artifacts from {from}:", catalog.len());
    for entry in &catalog {
        println!(
            "  {}  {:>12} bytes  sha256 {}",
            server.url_of(&entry.name),
            entry.length_bytes,
            entry.sha256
        );
    }
    std::io::stdout().flush().context("writing to stdout")?;
    eprintln!("stop with Ctrl-C");
    // Serves until the process is stopped.
    std::future::pending::<()>().await;
    Ok(())
}

async fn fetch(args: &FetchArgs) -> Result<()> {
    let mut last_decile = None;
    let mut progress = |p: Progress| {
        let decile = (p.done_bytes * 10).checked_div(p.total_bytes).unwrap_or(10);
        if last_decile != Some(decile) {
            last_decile = Some(decile);
            eprintln!(
                "{} / {} bytes ({}%)",
                p.done_bytes,
                p.total_bytes,
                decile * 10
            );
        }
    };
    let mut on_retry = |e: &FetchError| eprintln!("retrying: {e}");
    let policy = RetryPolicy {
        attempts: args.attempts,
        backoff: Duration::from_millis(500),
    };
    let (report, attempts) = download_with_retries(
        &args.url,
        &args.out,
        args.length,
        &args.sha256,
        policy,
        &mut progress,
        &mut on_retry,
    )
    .await
    .with_context(|| format!("fetching {}", args.url))?;
    println!(
        "{}: {} bytes, sha256 {} verified ({} attempts{}{})",
        args.out.display(),
        args.length,
        report.sha256,
        attempts,
        if report.resumed_from_bytes > 0 {
            format!(", resumed from byte {}", report.resumed_from_bytes)
        } else {
            String::new()
        },
        if report.restarted {
            ", restarted: the server's file changed"
        } else {
            ""
        }
    );
    Ok(())
}
