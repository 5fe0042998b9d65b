//! `convoy request`: rollout requests in a cache from the command line (the same rules as the
//! server's `POST /api/v1/rollouts` and the console's Approvals view, `ops::requests`): make
//! one (naming the finding it remediates, its shape and its pre-deployment checklist), list
//! them, show one, and change the shape of one before any decision (issue 20).
//!
//! Requests made here are by operator name (`--operator`, else $CONVOY_OPERATOR or $USER), as
//! in a console; approvals go through the server or the console.

use anyhow::{Context, Result, bail};
use convoy_core::risk::Checklist;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::ops::requests::{self, NewRequest, Refusal, RequestView, Who};
use crate::store::{self, Store};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: RequestCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum RequestCommand {
    /// Request a rollout of a release in the cache (planned here, or from a saved plan).
    Create(Box<CreateArgs>),
    /// List the requests in the cache, newest first.
    List {
        #[command(flatten)]
        cache: CacheArgs,
        /// Print JSON (the API's request views) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one request: its waves, finding, shape, checklist and decisions.
    Show {
        /// The rollout id of the request.
        rollout_id: String,
        #[command(flatten)]
        cache: CacheArgs,
        /// Print JSON (the API's request view) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change a request's shape before any decision (e.g. a deferred one to `standard`).
    Shape {
        /// The rollout id of the request.
        rollout_id: String,
        /// `accelerated`, `standard` or `deferred` (`emergency` only on the emergency path).
        #[arg(long)]
        shape: String,
        /// Who changes it (default: $CONVOY_OPERATOR, else $USER).
        #[arg(long)]
        operator: Option<String>,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

#[derive(clap::Args, Debug)]
pub struct CacheArgs {
    /// The cache file (default: $CONVOY_DB, else $XDG_DATA_HOME/convoy/convoy.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The release to roll out (stored in the cache by `convoy release create`); with
    /// `--plan`, optional (the plan's).
    #[arg(long, default_value = "")]
    pub release: String,
    /// A plan saved in the cache (`convoy plan --save`, the console's planner) to freeze
    /// instead of planning here.
    #[arg(long)]
    pub plan: Option<String>,
    /// The rollout id (default: `RELEASE-YYYYMMDDTHHMMSSZ`).
    #[arg(long)]
    pub rollout_id: Option<String>,
    /// `standard` or `emergency` (default: the shape's).
    #[arg(long)]
    pub path: Option<String>,
    /// Emergency path: who authorises the break-glass (not the requester).
    #[arg(long)]
    pub authoriser: Option<String>,
    /// Emergency path: why it cannot wait (incident, CVE, measurements).
    #[arg(long)]
    pub evidence: Option<String>,
    /// The finding this rollout remediates (scored in the cache): its tier proposes the shape.
    #[arg(long)]
    pub finding: Option<String>,
    /// `emergency`, `accelerated`, `standard` or `deferred` (default: what the finding's tier
    /// proposes).
    #[arg(long)]
    pub shape: Option<String>,
    /// Checklist: who owns the rollout until it is closed.
    #[arg(long)]
    pub owner: Option<String>,
    /// Checklist: the regression test that shows the fix.
    #[arg(long)]
    pub regression_test: Option<String>,
    /// Checklist: how the rollout is undone if it goes wrong.
    #[arg(long)]
    pub rollback_readiness: Option<String>,
    /// Checklist: what support has been told.
    #[arg(long)]
    pub support_brief: Option<String>,
    /// When planning here: a release stored in the cache that devices behind the release's
    /// requirements install first (repeatable; the planner's catalog). They are planned in
    /// `after-prerequisites-N` waves and offered their chain, in order, before the release.
    #[arg(long = "prerequisite", value_name = "RELEASE")]
    pub prerequisites: Vec<String>,
    /// Seed of the canary and wave order when planning here.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Policy file whose `"planning"` section plans the rollout here (default: the defaults).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// The trust directory the release must verify against (default: $CONVOY_TRUST, else
    /// `trust/` beside the cache).
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// Who requests (default: $CONVOY_OPERATOR, else $USER).
    #[arg(long)]
    pub operator: Option<String>,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Print the request as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The operator named, else the environment's.
fn operator(named: Option<&str>) -> String {
    named.map_or_else(
        || {
            store::audit::operator_actor()
                .trim_start_matches("operator:")
                .to_owned()
        },
        |n| n.trim().to_owned(),
    )
}

fn refused(r: Refusal) -> anyhow::Error {
    match r {
        Refusal::Field { field, message } => anyhow::anyhow!("refused: {field}: {message}"),
        Refusal::Forbidden(m) | Refusal::NotFound(m) | Refusal::Conflict(m) => {
            anyhow::anyhow!("refused: {m}")
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        RequestCommand::Create(c) => create(c),
        RequestCommand::List { cache, json } => {
            let store = Store::open_existing(&store::resolve_path(cache.db.as_deref())?)?;
            let views: Vec<RequestView> = requests::list(&store)?
                .iter()
                .map(requests::Request::view)
                .collect();
            if *json {
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else if views.is_empty() {
                println!("no rollout request in the cache");
            } else {
                for v in &views {
                    print!("{}", list_line(v));
                }
            }
            Ok(())
        }
        RequestCommand::Show {
            rollout_id,
            cache,
            json,
        } => {
            let store = Store::open_existing(&store::resolve_path(cache.db.as_deref())?)?;
            let Some(request) = requests::load(&store, rollout_id)? else {
                bail!("no rollout request {rollout_id} in the cache");
            };
            let view = request.view();
            if *json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", show_text(&view));
            }
            Ok(())
        }
        RequestCommand::Shape {
            rollout_id,
            shape,
            operator: named,
            cache,
        } => {
            let store = Store::open_existing(&store::resolve_path(cache.db.as_deref())?)?;
            let name = operator(named.as_deref());
            let changed = requests::change_shape(
                &store,
                rollout_id,
                &Who::named(&name),
                shape,
                &format!("operator:{name}"),
                crate::now(),
            )?
            .map_err(refused)?;
            print!("{}", show_text(&changed.view()));
            Ok(())
        }
    }
}

fn create(c: &CreateArgs) -> Result<()> {
    let db = store::resolve_path(c.cache.db.as_deref())?;
    let store = Store::open_existing(&db)?;
    let trust_dir = crate::ops::settings::trust_dir(c.trust.as_deref(), &db);
    let trust = crate::keys::load_trust(&trust_dir)
        .with_context(|| format!("loading the trusted keys from {}", trust_dir.display()))?;
    let checklist = Checklist {
        owner: c.owner.clone().unwrap_or_default(),
        regression_test: c.regression_test.clone().unwrap_or_default(),
        rollback_readiness: c.rollback_readiness.clone().unwrap_or_default(),
        support_brief: c.support_brief.clone().unwrap_or_default(),
    };
    let new = NewRequest {
        release_id: c.release.clone(),
        rollout_id: c.rollout_id.clone(),
        path: c.path.clone(),
        authoriser: c.authoriser.clone(),
        evidence: c.evidence.clone(),
        waves: None,
        prerequisite_waves: None,
        prerequisites: Some(c.prerequisites.clone()).filter(|p| !p.is_empty()),
        seed: c.seed,
        finding_id: c.finding.clone(),
        shape: c.shape.clone(),
        checklist: Some(checklist).filter(|c| !c.is_empty()),
    };
    let name = operator(c.operator.as_deref());
    let who = Who::named(&name);
    let actor = format!("operator:{name}");
    let now = crate::now();
    let made = if let Some(plan_id) = &c.plan {
        requests::create_from_plan(&store, &trust, plan_id, new, &who, &actor, now)?
    } else {
        if c.release.is_empty() {
            bail!("--release: which release to roll out (or --plan, a saved plan)");
        }
        let planning = match &c.policy {
            Some(p) => crate::ops::plans::read_section(p, "planning")
                .with_context(|| format!("reading the policy {}", p.display()))?,
            None => convoy_core::plan::PlanningPolicy::default(),
        };
        requests::create(&store, &trust, &planning, &new, &who, &actor, now)?
    }
    .map_err(refused)?;
    let view = made.view();
    if c.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", show_text(&view));
    }
    Ok(())
}

/// One line per request for `convoy request list`.
fn list_line(v: &RequestView) -> String {
    let mut s = format!(
        "{}  release {}  {} path  {}  {} devices",
        v.rollout_id, v.release_id, v.path, v.status, v.devices
    );
    if let Some(f) = &v.finding_id {
        let _ = write!(s, "  finding {f}");
    }
    if let Some(shape) = v.shape {
        let _ = write!(s, "  shape {shape}");
    }
    let _ = write!(
        s,
        "  checklist {}",
        if v.checklist_missing.is_empty() {
            "complete".to_owned()
        } else {
            format!("missing {}", v.checklist_missing.join(", "))
        }
    );
    s.push('\n');
    s
}

/// A request for people (`convoy request show`).
pub fn show_text(v: &RequestView) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Rollout {} of release {} ({} path), requested by {} at {}",
        v.rollout_id, v.release_id, v.path, v.requested_by, v.requested_at
    );
    let _ = writeln!(s, "Status: {}; needs {}", v.status, v.needs);
    if let (Some(a), Some(e)) = (&v.authoriser, &v.evidence) {
        let _ = writeln!(s, "Break-glass authoriser: {a}; evidence: {e}");
    }
    if let Some(f) = &v.finding_id {
        let tier = v
            .finding_tier
            .map_or_else(String::new, |t| format!(" (tier {t})"));
        let _ = writeln!(s, "Remediates finding {f}{tier}");
    }
    match (v.proposed_shape, v.shape) {
        (Some(p), Some(c)) if p == c => {
            let _ = writeln!(s, "Shape: {c}, as the finding's tier proposes");
        }
        (Some(p), Some(c)) => {
            let _ = writeln!(
                s,
                "Shape: {c}; the finding's tier proposed {p}; changed by {}",
                v.shape_changed_by.as_deref().unwrap_or("the requester")
            );
        }
        (None, Some(c)) => {
            let _ = writeln!(s, "Shape: {c}");
        }
        _ => {}
    }
    if let Some(why) = &v.deferred {
        let _ = writeln!(s, "Deferred: {why}");
    }
    if let Some(b) = &v.boot_critical {
        let _ = writeln!(s, "Stricter plan and gates: {b}");
    }
    let _ = writeln!(s, "Waves ({} devices):", v.devices);
    for w in &v.waves {
        let chain = if w.prerequisites.is_empty() {
            String::new()
        } else {
            format!("  installs first: {}", w.prerequisites.join(" -> "))
        };
        let _ = writeln!(
            s,
            "  {:<22} {:>7} devices  soak {}{chain}",
            w.name,
            w.devices,
            crate::ops::plans::duration_text(u64::try_from(w.soak_secs).unwrap_or(0))
        );
    }
    if !v.prerequisite_releases.is_empty() {
        let _ = writeln!(
            s,
            "Prerequisite releases (manifests pinned, dispatched with the rollout): {}",
            v.prerequisite_releases.join(", ")
        );
    }
    match &v.checklist {
        Some(c) => {
            let _ = writeln!(s, "Pre-deployment checklist:");
            for (item, text) in c.items() {
                let text = if text.is_empty() { "(missing)" } else { text };
                let _ = writeln!(s, "  {item}: {text}");
            }
        }
        None => {
            let _ = writeln!(s, "Pre-deployment checklist: none");
        }
    }
    for d in &v.decisions {
        let comment = if d.comment.is_empty() {
            String::new()
        } else {
            format!(": {}", d.comment)
        };
        let _ = writeln!(s, "  {} {} at {}{comment}", d.operator, d.decision, d.time);
    }
    s
}
