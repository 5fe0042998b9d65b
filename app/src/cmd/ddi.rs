//! `convoy ddi serve`: offer one signed release to devices that speak hawkBit's Direct Device
//! Integration API (rauc-hawkbit-updater, SWUpdate's suricatta, the `hawkbit` crate), from a
//! depot laptop or a server, with no hawkBit and no uplink.
//!
//! It verifies the manifest against the trust directory and the artifact against the manifest
//! before serving anything, offers the release to the devices of the cache that are eligible for
//! it now (the planner's eligibility rules), serves the artifact with byte ranges (interrupted
//! downloads resume), and records what each device reports as device events in the cache.
//!
//! Not here: waves and gates. Every eligible device that polls is offered the release at once;
//! for waves and gates, run the rollout engine with its DDI link (`convoy rollout run
//! --ddi-listen`, docs/DDI.md).

use crate::ops::settings::{read_gateway_token, read_target_tokens};
use anyhow::{Context, Result, anyhow, bail};
use convoy_core::plan::eligibility::{self, Status};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::link::ddi::release::{ReleaseFiles, ServedRelease, serve_release};
use crate::link::ddi::wire::{Execution, Finished};
use crate::link::ddi::{DdiConfig, DdiEvent, DdiHub, DdiServer, HubConfig};
use crate::store::audit::{AuditEntry, operator_actor};
use crate::store::{self, Store};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: DdiCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum DdiCommand {
    /// Serve a signed release to DDI devices until Ctrl-C (or --max-wall-secs), recording
    /// their feedback in the cache.
    Serve(Box<ServeArgs>),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// The signed release manifest.
    #[arg(long)]
    pub release: PathBuf,
    /// The release's artifact files, in the manifest's order; each is checked (length and
    /// SHA-256) against the manifest before it is served.
    #[arg(long, required = true)]
    pub artifact: Vec<PathBuf>,
    /// Trust directory (default: $CONVOY_TRUST, else `trust/` beside the cache).
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// Address of the DDI endpoint.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the artifact server (default: the endpoint's address, any free port).
    #[arg(long)]
    pub artifact_listen: Option<SocketAddr>,
    /// The artifact server's URL as devices reach it, e.g. http://192.168.1.10:8081 (needed
    /// when listening on 0.0.0.0).
    #[arg(long)]
    pub artifact_url: Option<String>,
    /// The tenant in every DDI path.
    #[arg(long, default_value = "DEFAULT")]
    pub tenant: String,
    /// A file holding the gateway token every device may use (`GatewayToken`).
    #[arg(long)]
    pub gateway_token_file: Option<PathBuf>,
    /// A CSV file of `controller_id,token` lines: per-device tokens (`TargetToken`).
    #[arg(long)]
    pub target_tokens: Option<PathBuf>,
    /// The polling interval devices are told, in seconds.
    #[arg(long, default_value_t = 300)]
    pub sleep_secs: u64,
    /// The DDI chunk part (software module type) devices see.
    #[arg(long, default_value = "firmware")]
    pub part: String,
    /// PEM certificate chain for TLS on the DDI endpoint (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The endpoint's URL as devices reach it, e.g. https://ddi.example.com: the links in
    /// answers (deploymentBase, cancelAction, configData) start with it, never with the
    /// request's Host header. Default: http(s)://LISTEN (needed when listening on 0.0.0.0).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Connections served at once by the DDI endpoint; more devices wait to be accepted.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Connections at once from one client address (an IPv4 address or an IPv6 /64); more get
    /// 503 (plain HTTP) or a closed socket (TLS). Default: a quarter of --max-connections.
    /// Raise it when devices share an address (a carrier's NAT).
    #[arg(long, value_name = "N")]
    pub max_connections_per_client: Option<usize>,
    /// Seconds a client has to send a whole request head; also the longest a keep-alive
    /// connection may stay idle.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds a client has to finish the TLS handshake.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub tls_handshake_timeout_secs: u64,
    /// Stop after this many seconds (for scripts and tests); default: run until Ctrl-C.
    #[arg(long)]
    pub max_wall_secs: Option<u64>,
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        DdiCommand::Serve(a) => serve(a),
    }
}

/// Device event kind for a DDI feedback.
fn feedback_kind(execution: Execution, finished: Finished) -> &'static str {
    match (execution, finished) {
        (Execution::Closed, Finished::Success) => "installed",
        (Execution::Closed, _) => "failed",
        (Execution::Download, _) => "downloading",
        (Execution::Downloaded, _) => "downloaded",
        (Execution::Proceeding, _) => "ddi.proceeding",
        (Execution::Scheduled, _) => "ddi.scheduled",
        (Execution::Resumed, _) => "ddi.resumed",
        (Execution::Canceled, _) => "canceled",
        (Execution::Rejected, _) => "rejected",
    }
}

#[derive(Default)]
struct Tally {
    controllers: BTreeSet<String>,
    offered: usize,
    outcomes: BTreeMap<&'static str, usize>,
    not_in_cache: BTreeSet<String>,
}

#[allow(clippy::too_many_lines)] // One straight sequence: check, set up, serve, record.
fn serve(a: &ServeArgs) -> Result<()> {
    let db = store::resolve_path(a.db.as_deref())?;
    if !db.exists() {
        bail!(
            "no cache at {}: import a fleet first (convoy fleet import FILE --db {})",
            db.display(),
            db.display()
        );
    }
    let now = crate::now();
    let trust_path = crate::ops::settings::trust_dir(a.trust.as_deref(), &db);
    let trust = crate::keys::load_trust(&trust_path).with_context(|| {
        format!(
            "loading the trusted keys from {} (pass --trust DIR)",
            trust_path.display()
        )
    })?;
    let manifest = crate::ops::releases::verify_file(&a.release, &trust, now)?;
    let spec = manifest.spec().clone();
    if a.artifact.len() != spec.artifacts.len() {
        bail!(
            "release {} has {} artifact(s); pass each with --artifact, in order ({} given)",
            spec.id,
            spec.artifacts.len(),
            a.artifact.len()
        );
    }
    for (path, expected) in a.artifact.iter().zip(&spec.artifacts) {
        let mut digest = crate::ops::releases::hash_file(path)?;
        digest.name.clone_from(&expected.name);
        manifest
            .check_artifact(&digest)
            .map_err(|r| anyhow!("artifact {} rejected ({}): {r}", path.display(), r.attack()))?;
    }
    let gateway = a
        .gateway_token_file
        .as_deref()
        .map(read_gateway_token)
        .transpose()?;
    let targets = match &a.target_tokens {
        Some(p) => read_target_tokens(p)?,
        None => Vec::new(),
    };
    if gateway.is_none() && targets.is_empty() {
        bail!(
            "devices could not authenticate: pass --gateway-token-file FILE or --target-tokens CSV"
        );
    }

    let mut store = Store::open_existing(&db)?;
    let fleet = store.load_fleet()?;
    let elig = eligibility::evaluate(&fleet, &spec, Vec::new());
    let mut eligible = BTreeSet::new();
    let mut ineligible: BTreeMap<String, String> = BTreeMap::new();
    // Devices that already reported this release installed (over DDI) are not offered it
    // again when serving restarts; the cache's component versions are not updated by DDI
    // feedback, so eligibility alone would offer it again.
    let installed = store.devices_with_release_event("installed", &spec.id)?;
    for (device, e) in fleet.devices.iter().zip(&elig.devices) {
        if installed.contains(&device.id) {
            ineligible.insert(device.id.clone(), format!("already installed {}", spec.id));
        } else if e.status == Status::EligibleNow {
            eligible.insert(device.id.clone());
        } else {
            let why = match e.status {
                Status::Never => elig
                    .reasons
                    .get(e.detail as usize)
                    .cloned()
                    .unwrap_or_else(|| "never eligible".into()),
                other => format!("{other:?}"),
            };
            ineligible.insert(device.id.clone(), why);
        }
    }
    store.append_audit(&AuditEntry {
        time: now,
        actor: operator_actor(),
        action: "ddi.serve".into(),
        payload: serde_json::json!({
            "release": spec.id,
            "counter": spec.counter,
            "eligible_now": eligible.len(),
            "target_tokens": targets.len(),
            "gateway_token": gateway.is_some(),
        }),
    })?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ddi")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let artifact_listen = a
            .artifact_listen
            .unwrap_or_else(|| SocketAddr::new(a.listen.ip(), 0));
        let ServedRelease {
            artifacts,
            base_url: base,
            deployment,
            manifest_dir: _served_manifest,
        } = serve_release(&ReleaseFiles {
            spec: &spec,
            manifest: &manifest,
            artifacts: &a.artifact,
            artifact_listen,
            artifact_url: a.artifact_url.as_deref(),
            part: &a.part,
        })
        .await?;
        let (hub, mut events) = DdiHub::new(HubConfig {
            sleep_secs: a.sleep_secs,
            gateway_token: gateway,
            ..HubConfig::default()
        });
        let mut tally = Tally::default();
        let offer = |store: &mut Store, tally: &mut Tally, controller: &str| -> Result<()> {
            if !eligible.contains(controller) {
                match ineligible.get(controller) {
                    Some(why) => {
                        store.append_device_event(
                            controller,
                            None,
                            crate::now(),
                            "ddi.not_offered",
                            &serde_json::json!({"release": spec.id, "reason": why}),
                        )?;
                    }
                    None => {
                        if tally.not_in_cache.insert(controller.to_owned()) {
                            eprintln!("note: {controller} polled but is not a device of the cache; nothing offered");
                        }
                    }
                }
                return Ok(());
            }
            let action = hub.assign(controller, Arc::clone(&deployment))?;
            tally.offered += 1;
            store.append_device_event(
                controller,
                None,
                crate::now(),
                "offered",
                &serde_json::json!({"release": spec.id, "via": "ddi", "action": action}),
            )?;
            Ok(())
        };
        for (id, token) in &targets {
            hub.register(id, Some(token))?;
            offer(&mut store, &mut tally, id)?;
        }
        let mut config = DdiConfig::new(a.listen);
        config.tenant.clone_from(&a.tenant);
        config.tls = a.tls_cert.clone().zip(a.tls_key.clone());
        config.public_url.clone_from(&a.public_url);
        config.max_connections = a.max_connections;
        config.max_connections_per_client = a.max_connections_per_client;
        config.header_read_timeout = Duration::from_secs(a.header_timeout_secs);
        config.tls_handshake_timeout = Duration::from_secs(a.tls_handshake_timeout_secs);
        let server = DdiServer::start(config, Arc::clone(&hub)).await?;
        println!(
            "serving release {} to DDI devices at {}/{}/controller/v1/{{controllerId}}; artifacts from {base}; {} device(s) eligible now, {} not; Ctrl-C stops",
            spec.id,
            server.public_url(),
            a.tenant,
            eligible.len(),
            ineligible.len()
        );
        let deadline = a.max_wall_secs.map(Duration::from_secs);
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        loop {
            let event = tokio::select! {
                r = tokio::signal::ctrl_c() => { r.context("waiting for Ctrl-C")?; break; }
                () = &mut sleep => break,
                e = events.recv() => match e { Some(e) => e, None => break },
            };
            // Small writes: recorded in place, each durable before the next is read.
            tokio::task::block_in_place(|| -> Result<()> {
                match event {
                    DdiEvent::Registered { controller } => {
                        tally.controllers.insert(controller.clone());
                        offer(&mut store, &mut tally, &controller)?;
                    }
                    DdiEvent::Feedback {
                        controller,
                        action_id,
                        release_id,
                        status,
                        closed,
                    } => {
                        let kind = feedback_kind(status.execution, status.result.finished);
                        if closed.is_some() {
                            *tally.outcomes.entry(kind).or_default() += 1;
                        }
                        store.append_device_event(
                            &controller,
                            None,
                            crate::now(),
                            kind,
                            &serde_json::json!({
                                "release": release_id, "via": "ddi", "action": action_id,
                                "execution": status.execution, "finished": status.result.finished,
                                "progress": status.result.progress, "details": status.details,
                            }),
                        )?;
                    }
                    DdiEvent::CancelFeedback {
                        controller,
                        action_id,
                        stopped,
                        status,
                        ..
                    } => {
                        if stopped {
                            *tally.outcomes.entry("canceled").or_default() += 1;
                        }
                        store.append_device_event(
                            &controller,
                            None,
                            crate::now(),
                            if stopped { "canceled" } else { "ddi.cancel_refused" },
                            &serde_json::json!({"action": action_id, "details": status.details}),
                        )?;
                    }
                    DdiEvent::ConfigData {
                        controller, data, ..
                    } => {
                        store.append_device_event(
                            &controller,
                            None,
                            crate::now(),
                            "ddi.attributes",
                            &serde_json::json!(data),
                        )?;
                    }
                    // Not taken here: this hub's telemetry is off (no gates to judge it).
                    DdiEvent::Telemetry { .. } => {}
                }
                Ok(())
            })?;
        }
        server.shutdown().await;
        artifacts.shutdown().await;
        let polled_targets = targets
            .iter()
            .filter(|(id, _)| hub.controller(id).is_some_and(|c| c.polls > 0))
            .count();
        let outcomes: Vec<String> = tally
            .outcomes
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        println!(
            "stopped: {} device(s) polled, {} offered, {}{}",
            tally.controllers.len() + polled_targets,
            tally.offered,
            if outcomes.is_empty() {
                "no outcome reported".to_owned()
            } else {
                outcomes.join(", ")
            },
            if tally.not_in_cache.is_empty() {
                String::new()
            } else {
                format!("; {} unknown device(s) polled", tally.not_in_cache.len())
            }
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_token_errors_name_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("tokens.csv");
        std::fs::write(
            &p,
            "# id,token\nvan-1,0123456789abcdef\nvan-2 0123456789abcdef\n",
        )
        .expect("write");
        let err = read_target_tokens(&p).expect_err("no comma").to_string();
        assert!(err.contains("line 3"), "{err}");
        std::fs::write(&p, "van-1,short\n").expect("write");
        let err = read_target_tokens(&p).expect_err("short").to_string();
        assert!(err.contains("line 1") && err.contains("16"), "{err}");
        std::fs::write(&p, "van-1,0123456789abcdef\nvan-1,0123456789abcdef\n").expect("write");
        let err = read_target_tokens(&p).expect_err("twice").to_string();
        assert!(err.contains("twice"), "{err}");
        std::fs::write(&p, "van-1, 0123456789abcdef \n\n").expect("write");
        assert_eq!(
            read_target_tokens(&p).expect("good"),
            [("van-1".to_owned(), "0123456789abcdef".to_owned())]
        );
    }
}
