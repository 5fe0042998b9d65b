//! Engine runs: the typed run spec ([`RunArgs`]: what `convoy rollout run` parses its arguments
//! into, and what `convoy serve` and the console fill in for an approved request), and
//! [`engine_options`], which verifies the release, reads or makes the plan and turns a spec into
//! the engine's options. Every front end that starts an engine goes through here.
//!
//! The spec carries clap's derive so that the command line, the server's `--dispatch-args`
//! file and the defaults have one definition; nothing past parsing sees arguments: a run the
//! server or the console starts is a spec with fields set, never words written and parsed back.
//!
//! Deliberately not here: running the engine (`crate::engine::run_with`), printing reports.

use anyhow::{Context, Result, anyhow, bail};
use convoy_core::gates::GatePolicy;
use convoy_core::plan::{self, PlanInput, PlanningPolicy};
use convoy_core::rollout::{ChangePath, WaveSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::engine::{self, EngineControl, EngineOptions, StartMode};
use crate::link::mqtt::{LinkConfig, MqttAuth};
use crate::link::protocol::Topics;
use crate::store::Store;

/// `--mqtt-username` and `--mqtt-password-file`, shared by the engine, the simulator and the
/// console.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct MqttAuthArgs {
    /// The broker username (with `convoy broker mosquitto-config`: convoy-engine for the engine,
    /// convoy-console for the console, convoy-fleet-sim for the simulator).
    #[arg(long, value_name = "NAME")]
    pub mqtt_username: Option<String>,
    /// A file whose first line is the broker password (default: $CONVOY_MQTT_PASSWORD). Never on
    /// the command line, where `ps` would show it.
    #[arg(long, value_name = "FILE", requires = "mqtt_username")]
    pub mqtt_password_file: Option<PathBuf>,
}

impl MqttAuthArgs {
    pub fn auth(&self) -> Result<MqttAuth> {
        MqttAuth::from_flags(
            self.mqtt_username.as_deref(),
            self.mqtt_password_file.as_deref(),
        )
    }
}

/// The typed run spec of one engine run: what `convoy rollout run` parses its arguments into,
/// and what `convoy serve` and the console fill in for an approved request (never by writing
/// arguments and parsing them back).
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Send alerts (gate stops, rollbacks, the end of the run) through the channels of this
    /// file while the rollout runs (docs/ALERTS.md).
    #[arg(long)]
    pub alerts: Option<PathBuf>,
    /// Answer `GET /metrics` (Prometheus text format) on this address while the rollout runs:
    /// messages in and rejected by reason, commands, disconnects, gate looks and decisions,
    /// devices by wave and state (docs/ALERTS.md). No authentication: bind it to the loopback
    /// or a network only the scraper reaches.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The MQTT broker, e.g. mqtt://127.0.0.1:1883 or mqtts://broker:8883.
    #[arg(long)]
    pub broker: String,
    /// The signed release manifest.
    #[arg(long)]
    pub release: PathBuf,
    /// A signed manifest of a prerequisite release (repeatable; docs/ENGINE.md, "Prerequisite
    /// chains"): verified like --release. When the engine plans here, these are the catalog:
    /// devices that need them first are planned in `after-prerequisites-N` waves and offered
    /// each release of their chain, confirmed in order, before the target. A resumed run needs
    /// them again for the chains in its log.
    #[arg(long = "prerequisite-manifest", value_name = "FILE")]
    pub prerequisite_manifests: Vec<PathBuf>,
    /// The release's artifact: checked against the manifest (length and SHA-256) before anything
    /// is sent.
    #[arg(long)]
    pub artifact: Vec<PathBuf>,
    /// The trusted keys (a trust directory or a key directory); default: $CONVOY_TRUST, else
    /// `trust/` beside the cache file.
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// A plan: the JSON of `convoy plan --json` (its `rollout_waves` and `gates`), or
    /// `{"waves": [{"name", "device_ids", "soak_secs"}], "gates": {...}}`. Without it the
    /// engine plans from the cache's fleet.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Policy file (`"planning"` and `"gates"` sections) used when planning here; a schedule in
    /// its planning section (rate, windows, blackouts, exceptions, bandwidth cap) also paces
    /// the offers.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Seed of the canary and wave order when planning here.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated seconds per wall second (match `convoy sim --time-scale`).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The rollout id (default: RELEASE-YYYYMMDDTHHMMSSZ).
    #[arg(long)]
    pub rollout_id: Option<String>,
    /// The operator requesting the rollout (default: $CONVOY_OPERATOR, else $USER).
    #[arg(long)]
    pub operator: Option<String>,
    /// An approver (repeat for each). With none, the rollout runs on the single-operator path:
    /// the requester approves alone, and every record says so.
    #[arg(long = "approve")]
    pub approvers: Vec<String>,
    /// Emergency path: the named authoriser (must be among the approvers) ...
    #[arg(long, requires = "evidence")]
    pub emergency_authoriser: Option<String>,
    /// ... and why it cannot wait (incident id, CVE, measurements).
    #[arg(long)]
    pub evidence: Option<String>,
    /// Topic prefix.
    #[arg(long, default_value = "convoy/v1")]
    pub prefix: String,
    /// Give up after this many wall seconds.
    #[arg(long)]
    pub max_wall_secs: Option<f64>,
    /// Simulated seconds per health sample (default: the gates' evaluation interval).
    #[arg(long)]
    pub sample_secs: Option<i64>,
    /// The longest gap between two of a device's messages (by its own clock) that still counts
    /// as exposure for the health gates; a longer gap (an outage, lost messages) counts as
    /// neither healthy nor sick. Set it above the devices' heartbeat interval.
    #[arg(long, default_value_t = crate::engine::health::DEFAULT_MAX_GAP_SECS)]
    pub max_report_gap_secs: i64,
    /// TLS: CA certificate of the broker (PEM), for mqtts://.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// TLS client certificate (PEM).
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// TLS client key (PEM).
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    #[command(flatten)]
    pub mqtt_auth: MqttAuthArgs,
    /// Continue the rollout `--rollout-id` that an earlier run of this cache started and that
    /// did not end (stopped, timed out, crashed or left paused): rebuilt from the cache's log,
    /// its unacknowledged commands resent with their ids, on the first run's clock. The waves,
    /// gates, change path and approvals come from the log; --plan, --policy, --seed, --approve
    /// and the emergency options are ignored.
    #[arg(long, requires = "rollout_id")]
    pub resume: bool,
    /// Serve devices that speak hawkBit's Direct Device Integration API at this address too
    /// (docs/DDI.md): a device tagged `link=ddi`, given a target token, or that polls, is
    /// offered the release over DDI when its wave opens, and its feedback counts in the gates.
    /// Every --artifact of the release is needed, in the manifest's order.
    #[arg(long)]
    pub ddi_listen: Option<std::net::SocketAddr>,
    /// Address of the DDI artifact server (default: the DDI address, any free port).
    #[arg(long, requires = "ddi_listen")]
    pub ddi_artifact_listen: Option<std::net::SocketAddr>,
    /// The DDI artifact server's URL as devices reach it (needed when listening on 0.0.0.0).
    #[arg(long, requires = "ddi_listen")]
    pub ddi_artifact_url: Option<String>,
    /// The tenant in every DDI path.
    #[arg(long, default_value = "DEFAULT", requires = "ddi_listen")]
    pub ddi_tenant: String,
    /// A file holding the token every DDI device may use (`GatewayToken`).
    #[arg(long, requires = "ddi_listen")]
    pub ddi_gateway_token_file: Option<PathBuf>,
    /// A CSV file of `controller_id,token` lines: per-device DDI tokens (`TargetToken`).
    #[arg(long, requires = "ddi_listen")]
    pub ddi_target_tokens: Option<PathBuf>,
    /// The polling interval DDI devices are told, in seconds (wall time).
    #[arg(long, default_value_t = 300, requires = "ddi_listen")]
    pub ddi_sleep_secs: u64,
    /// The DDI chunk part (software module type) devices see.
    #[arg(long, default_value = "firmware", requires = "ddi_listen")]
    pub ddi_part: String,
    /// PEM certificate chain for TLS on the DDI endpoint (with --ddi-tls-key).
    #[arg(long, requires_all = ["ddi_listen", "ddi_tls_key"])]
    pub ddi_tls_cert: Option<PathBuf>,
    #[arg(long, requires_all = ["ddi_listen", "ddi_tls_cert"])]
    pub ddi_tls_key: Option<PathBuf>,
    /// The DDI endpoint's URL as devices reach it, e.g. https://ddi.example.com: the links in
    /// answers start with it, never with the request's Host header. Default:
    /// http(s)://DDI_LISTEN (needed when listening on 0.0.0.0).
    #[arg(long, value_name = "URL", requires = "ddi_listen")]
    pub ddi_public_url: Option<String>,
    /// Connections served at once by the DDI endpoint.
    #[arg(long, default_value_t = 1024, requires = "ddi_listen")]
    pub ddi_max_connections: usize,
    /// Connections at once from one client address on the DDI endpoint; more are refused.
    /// Default: a quarter of --ddi-max-connections.
    #[arg(long, value_name = "N", requires = "ddi_listen")]
    pub ddi_max_connections_per_client: Option<usize>,
    /// Seconds a DDI client has to send a whole request head (and to finish a TLS handshake).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10,
        requires = "ddi_listen"
    )]
    pub ddi_header_timeout_secs: u64,
}

impl RunArgs {
    /// A spec with every default of `convoy rollout run`, the broker `broker` and the release
    /// manifest `release` (the defaults have one source: the argument definitions above).
    pub fn with_defaults(broker: &str, release: &Path) -> Result<Self> {
        let mut spec = parse_run_args(["--broker", broker, "--release", "-"])?;
        release.clone_into(&mut spec.release);
        Ok(spec)
    }
}

/// `RunArgs` on its own, for [`parse_run_args`].
#[derive(clap::Parser, Debug)]
#[command(name = "convoy rollout run", no_binary_name = true)]
struct RunOnly {
    #[command(flatten)]
    args: RunArgs,
}

/// Parses the arguments of `convoy rollout run` (without the command words), for a caller
/// that hosts the engine itself (`convoy serve`, tests).
pub fn parse_run_args<I, T>(args: I) -> Result<RunArgs>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser as _;
    RunOnly::try_parse_from(args)
        .map(|r| r.args)
        .map_err(|e| anyhow!("{e}"))
}

fn operator_name(arg: Option<&str>) -> String {
    arg.map(str::to_owned)
        .or_else(|| std::env::var("CONVOY_OPERATOR").ok())
        .or_else(|| std::env::var("USER").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "operator".to_owned())
}

/// Waves and gates from a plan file (see [`RunArgs::plan`]): its `rollout_waves` only (the
/// prerequisite waves need their chains: [`read_plan_with_chains`]).
pub fn read_plan(path: &Path) -> Result<(Vec<WaveSpec>, Option<GatePolicy>)> {
    let (mut waves, chains, gates) = read_plan_with_chains(path)?;
    // Without their chains, the prerequisite waves would be offered the target directly.
    if let Some(first) = chains.first() {
        waves.truncate(first.wave);
    }
    Ok((waves, gates))
}

/// [`read_plan`], with the plan's prerequisite waves (`prerequisite_waves`, which `convoy plan
/// --json` writes) appended after its other waves and their chains.
pub fn read_plan_with_chains(
    path: &Path,
) -> Result<(
    Vec<WaveSpec>,
    Vec<convoy_core::rollout::WaveChain>,
    Option<GatePolicy>,
)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut value: serde_json::Value = convoy_core::strict_json::from_str(&text)
        .with_context(|| format!("parsing {}", path.display()))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| anyhow!("{}: a plan is a JSON object", path.display()))?;
    let waves = obj
        .remove("rollout_waves")
        .or_else(|| obj.remove("waves"))
        .ok_or_else(|| {
            anyhow!(
                "{}: no \"rollout_waves\" or \"waves\" in the plan",
                path.display()
            )
        })?;
    let mut waves: Vec<WaveSpec> = serde_json::from_value(waves).with_context(|| {
        format!(
            "{}: the waves must be [{{\"name\", \"device_ids\", \"soak_secs\"}}]",
            path.display()
        )
    })?;
    let mut chains = Vec::new();
    if let Some(extra) = obj.remove("prerequisite_waves") {
        let extra: Vec<super::plans::PrerequisiteWave> = serde_json::from_value(extra)
            .with_context(|| {
                format!(
                    "{}: the prerequisite waves must be [{{\"name\", \"device_ids\", \"soak_secs\", \"prerequisites\"}}]",
                    path.display()
                )
            })?;
        for w in extra {
            waves.push(w.wave());
            chains.push(convoy_core::rollout::WaveChain {
                wave: waves.len() - 1,
                releases: w.prerequisites,
            });
        }
    }
    let gates = match obj.remove("gates") {
        Some(g) => Some(
            serde_json::from_value::<GatePolicy>(g)
                .with_context(|| format!("{}: the \"gates\" section", path.display()))?,
        ),
        None => None,
    };
    Ok((waves, chains, gates))
}

/// Everything `convoy rollout run` hands the engine: reads and verifies the release and its
/// artifacts, plans (unless resuming), and settles the change path. The control has no
/// operator channel; a host that wants one sets [`EngineControl::commands`].
pub fn engine_options(args: &RunArgs) -> Result<(EngineOptions, EngineControl)> {
    let db = crate::store::resolve_path(args.db.as_deref())?;
    if !db.exists() {
        bail!(
            "no cache at {}: import a fleet first (convoy fleet import FILE --db {})",
            db.display(),
            db.display()
        );
    }
    let start = crate::now();
    let trust_path = crate::ops::settings::trust_dir(args.trust.as_deref(), &db);
    let trust = crate::keys::load_trust(&trust_path).with_context(|| {
        format!(
            "loading the trusted keys from {} (pass --trust DIR)",
            trust_path.display()
        )
    })?;
    let manifest = super::releases::verify_file(&args.release, &trust, start)?;
    for path in &args.artifact {
        let mut digest = super::releases::hash_file(path)?;
        if let [only] = manifest.spec().artifacts.as_slice() {
            digest.name.clone_from(&only.name);
        }
        manifest
            .check_artifact(&digest)
            .map_err(|r| anyhow!("artifact {} rejected ({}): {r}", path.display(), r.attack()))?;
    }
    let mut prerequisites = engine::chain::Prerequisites::default();
    for path in &args.prerequisite_manifests {
        let m = super::releases::verify_file(path, &trust, start)
            .with_context(|| format!("prerequisite manifest {}", path.display()))?;
        if m.release_id() == manifest.release_id() {
            bail!(
                "prerequisite manifest {} is the target release {} itself",
                path.display(),
                m.release_id()
            );
        }
        prerequisites.manifests.push(m);
    }
    let (planning, gates): (PlanningPolicy, GatePolicy) = match &args.policy {
        Some(p) => (
            super::plans::read_section(p, "planning")?,
            super::plans::read_section(p, "gates")?,
        ),
        None => (PlanningPolicy::default(), GatePolicy::default()),
    };
    // When the engine plans here, a release that installs a boot-critical component (a
    // bootloader, a modem) gets the stricter defaults `convoy plan` shows (docs/PLANNING.md);
    // a plan file carries its own gates, and a resumed rollout its log's.
    let (planning, mut gates) = if args.resume || args.plan.is_some() {
        (planning, gates)
    } else {
        let (planning, gates, _) = super::plans::for_release(manifest.spec(), planning, gates);
        (planning, gates)
    };
    let waves = if args.resume {
        // The log has the waves; planning again could pick other devices.
        Vec::new()
    } else if let Some(path) = &args.plan {
        let (waves, chains, plan_gates) = read_plan_with_chains(path)?;
        if let Some(g) = plan_gates {
            gates = g;
        }
        // A chain naming a release without a verified manifest refuses the run (set_chains).
        prerequisites.chains = chains;
        waves
    } else {
        let store = Store::open_existing(&db)?;
        let fleet = store.load_fleet()?;
        let catalog: Vec<convoy_core::release::ReleaseSpec> = prerequisites
            .manifests
            .iter()
            .map(|m| m.spec().clone())
            .collect();
        // Waves that name saved cohorts take their queries from this cache.
        let mut filled = planning.clone();
        super::cohorts::fill_policy(&store, &mut filled)?;
        let plan = plan::plan(&PlanInput {
            fleet: &fleet,
            release: manifest.spec(),
            catalog: &catalog,
            now: start,
            seed: args.seed,
            policy: &filled,
        })
        .with_context(|| format!("planning release {}", manifest.release_id()))?;
        // Devices behind get their prerequisite chains (none without a catalog).
        let (waves, chains) = convoy_core::rollout::chain::waves_with_chains(&plan, &fleet);
        prerequisites.chains = chains;
        waves
    };
    if waves.is_empty() && !args.resume {
        bail!(
            "no device of the cache is eligible for release {} now: nothing to roll out (see convoy plan for the reasons)",
            manifest.release_id()
        );
    }
    let requested_by = operator_name(args.operator.as_deref());
    let mut approvers = args.approvers.clone();
    let path = match (&args.emergency_authoriser, &args.evidence) {
        (Some(authoriser), Some(evidence)) => ChangePath::Emergency {
            authoriser: authoriser.clone(),
            evidence: evidence.clone(),
            rollback_window_secs: gates.rollback_window_secs,
        },
        _ if approvers.is_empty() => {
            approvers.push(requested_by.clone());
            ChangePath::SingleOperator
        }
        _ => ChangePath::Standard,
    };
    let rollout_id = args.rollout_id.clone().unwrap_or_else(|| {
        let t = start.to_rfc3339().replace(['-', ':'], "");
        format!("{}-{t}", manifest.release_id())
    });
    let topics =
        Topics::new(&args.prefix).map_err(|e| anyhow!("invalid topic prefix {:?}", e.0))?;
    // One client id per rollout, not per run: a resumed run takes the session (and the acks
    // queued in it) back, and dead runs do not pile up sessions at the broker (docs/ENGINE.md).
    let client_id = engine_client_id(&Store::open_existing(&db)?, &rollout_id)?;
    let mut link = LinkConfig::new(&args.broker, &client_id);
    link.auth = args.mqtt_auth.auth()?;
    link.ca_file.clone_from(&args.ca_file);
    link.client_cert_file.clone_from(&args.client_cert);
    link.client_key_file.clone_from(&args.client_key);
    link.time_scale = args.time_scale;
    // A policy that sets a schedule (rate, windows, blackouts, cap) paces the engine's offers
    // as `convoy plan` simulated them (docs/ENGINE.md, "Offer schedule").
    let paced = match &args.policy {
        Some(p) if !args.resume => super::plans::names_a_schedule(p)?,
        _ => false,
    };
    let schedule = paced.then(|| {
        convoy_core::plan::pacing::OfferSchedule::from_policy(
            &planning,
            manifest.spec().download_bytes(),
        )
    });
    let sample_period_secs = args.sample_secs.unwrap_or(gates.evaluate_every_secs).max(1);
    let options = EngineOptions {
        db,
        link,
        topics,
        manifest,
        rollout_id,
        waves,
        gates,
        path,
        requested_by,
        approvers,
        time_scale: args.time_scale,
        start,
        sample_period_secs,
        max_report_gap_secs: args.max_report_gap_secs,
        max_wall: args
            .max_wall_secs
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64),
        resend_after: Duration::from_secs(5),
    };
    let ddi = match args.ddi_listen {
        Some(listen) => Some(ddi_options(args, listen, &options)?),
        None => None,
    };
    let control = EngineControl {
        ddi,
        start: if args.resume {
            StartMode::Resume
        } else {
            StartMode::New
        },
        started_by: Some(operator_name(args.operator.as_deref())),
        schedule,
        prerequisites,
        ..EngineControl::default()
    };
    Ok((options, control))
}

/// The engine's MQTT client id for a rollout: the same for every run of it, and unguessable
/// (`convoy-engine-{rollout}-{128 random bits}`), since a client that knows it could knock the
/// engine off a broker that does not bind client ids to users (stock Mosquitto). Drawn by the
/// first run and kept in the cache's settings (`engine.client_id.{rollout}`), so `--resume`
/// takes the same session back.
pub fn engine_client_id(store: &Store, rollout_id: &str) -> Result<String> {
    let key = format!("engine.client_id.{rollout_id}");
    if let Some(id) = store.setting(&key)? {
        return Ok(id);
    }
    let id = format!(
        "convoy-engine-{rollout_id}-{}",
        crate::link::acl::random_client_suffix()?
    );
    store.set_setting(&key, &id)?;
    Ok(id)
}

/// The DDI link's options from `--ddi-*`; the files are read (and the tokens checked) here.
fn ddi_options(
    args: &RunArgs,
    listen: std::net::SocketAddr,
    options: &EngineOptions,
) -> Result<engine::ddi::DdiLinkOptions> {
    let wanted = options.manifest.spec().artifacts.len();
    if args.artifact.len() != wanted {
        bail!(
            "DDI devices download the release's files: release {} has {wanted} artifact(s); pass each with --artifact, in the manifest's order ({} given)",
            options.manifest.release_id(),
            args.artifact.len()
        );
    }
    let gateway_token = args
        .ddi_gateway_token_file
        .as_deref()
        .map(super::settings::read_gateway_token)
        .transpose()?;
    let target_tokens = match &args.ddi_target_tokens {
        Some(p) => super::settings::read_target_tokens(p)?,
        None => Vec::new(),
    };
    if gateway_token.is_none() && target_tokens.is_empty() {
        bail!(
            "DDI devices could not authenticate: pass --ddi-gateway-token-file FILE or --ddi-target-tokens CSV"
        );
    }
    Ok(engine::ddi::DdiLinkOptions {
        listen,
        tenant: args.ddi_tenant.clone(),
        tls: args.ddi_tls_cert.clone().zip(args.ddi_tls_key.clone()),
        artifact_listen: args.ddi_artifact_listen,
        artifact_url: args.ddi_artifact_url.clone(),
        gateway_token,
        target_tokens,
        sleep_secs: args.ddi_sleep_secs,
        part: args.ddi_part.clone(),
        manifest_file: args.release.clone(),
        artifact_files: args.artifact.clone(),
        public_url: args.ddi_public_url.clone(),
        max_connections: args.ddi_max_connections,
        max_connections_per_client: args.ddi_max_connections_per_client,
        header_timeout: std::time::Duration::from_secs(args.ddi_header_timeout_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_client_id_is_random_and_kept_for_resume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("cache.db");
        let first = engine_client_id(&Store::open(&db).expect("store"), "r1").expect("id");
        let hex = first
            .strip_prefix("convoy-engine-r1-")
            .expect("the rollout in the id");
        assert_eq!(hex.len(), 32, "{first}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
        // A resumed run (a new process, a new connection to the cache) gets the same id.
        let again = engine_client_id(&Store::open_existing(&db).expect("store"), "r1").expect("id");
        assert_eq!(first, again);
        // Another rollout draws its own.
        let other = engine_client_id(&Store::open_existing(&db).expect("store"), "r2").expect("id");
        assert!(other.starts_with("convoy-engine-r2-"), "{other}");
        let fresh_dir = tempfile::tempdir().expect("tempdir");
        let fresh = engine_client_id(
            &Store::open(&fresh_dir.path().join("cache.db")).expect("store"),
            "r1",
        )
        .expect("id");
        assert_ne!(first, fresh, "the same rollout id in another cache");
    }
}
