//! The planner: a verified release planned against the loaded fleet before anything is sent.
//! Eligibility by verdict with its reasons and prerequisite chains, the canary with its stratum
//! coverage, editable waves (size or share, soak), rate limit, maintenance windows, bandwidth
//! cap and data price, the waves' timing, bytes and cost as the core computes them, the gates
//! the plan carries, the plan as a timeline, and the canary, a wave or a reason's devices made a
//! cohort on the map. The plan is stored in the cache (audited) or exported as the JSON that
//! `convoy rollout run --plan FILE` reads.
//!
//! A wave may be a saved cohort of the cache or a fleet search (issue 19): the form offers the
//! cache's saved cohorts, listed on a thread with how many of the loaded fleet's devices each
//! matches now, and a policy file whose waves name `cohort:NAME` is filled from the cache when it
//! is loaded (`ops::cohorts::fill_policy`), as `convoy plan --db` does; an unknown name is an
//! error naming it.
//!
//! Planning is `convoy_core::plan::plan`, as `convoy plan` runs it (`ops::plans` holds the JSON
//! and the policy's sections, `store::plans` the saved plans); only a manifest that verifies against the trust directory
//! gives a release to plan ([`crate::gui::releases::list_with_releases`]). Planning runs on the
//! `convoy-planner` thread with the console's shared copy of the fleet; an edit re-plans after
//! a short pause in typing, and the previous plan stays on screen until the new one lands.
//! Files and the cache are read and written on their own threads.
//!
//! Deliberately not here: approval and dispatch (nothing is sent from this view), editing the
//! gates (they are read from the policy file, or the defaults), editing blackouts, exceptions,
//! criticality and strata (the policy file's), and colouring the map by wave (a wave becomes a
//! cohort instead).
//!
//! Three files: this one holds the view's state ([`PlannerState`]), its workers and what a plan
//! is made from and gives; `planner/form.rs` the editable policy as typed and its validation;
//! `planner/view.rs` the drawing.

use anyhow::{Context, Result};
use convoy_core::fleet::Fleet;
use convoy_core::gates::GatePolicy;
use convoy_core::plan::{self, Plan, PlanInput, PlanningPolicy, Status};
use convoy_core::release::ReleaseSpec;
use convoy_core::requirement::RequirementKind;
use convoy_core::time::Timestamp;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crate::gui::findings::CONSOLE_ACTOR;
use crate::gui::releases::{ListSources, ListedManifest};
use crate::gui::worker::FleetWorker;
use crate::ops::plans as ops;
use crate::store::Store;

/// How long the form must stay unchanged before an edit is planned (on the system clock; a
/// fixed clock plans at once, so tests are deterministic).
mod form;
mod view;

pub use form::{
    FormError, PolicyForm, RateForm, WaveChoice, WaveForm, apply_form, cohort_term, form_of,
    parse_windows, saved_name_of,
};
pub use view::planner_ui;

const DEBOUNCE: Duration = Duration::from_millis(400);

/// The words for a verdict.
pub fn status_label(status: Status) -> &'static str {
    match status {
        Status::EligibleNow => "eligible now",
        Status::AfterConditions => "after conditions",
        Status::AfterPrerequisites => "after prerequisites",
        Status::Installed => "already installed",
        Status::Never => "never",
    }
}

/// What a plan is made from besides the fleet and the release: the catalog of prerequisite
/// releases, the planning policy and the gates, as read from files (or the CLI's defaults).
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub catalog: Arc<Vec<ReleaseSpec>>,
    pub policy: PlanningPolicy,
    pub gates: GatePolicy,
    /// Where they came from, in words.
    pub source: String,
}

fn paths(text: &str) -> Vec<PathBuf> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Reads the catalog files (comma-separated) and the policy file's `"planning"` and `"gates"`
/// sections as `convoy plan --catalog --policy --db` does; empty means none and the defaults.
/// A wave that names a saved cohort (`cohort:NAME`) gets its search from the fleet cache
/// `cache` now; an unknown name, or no cache, is an error naming the wave and the cohort.
pub fn load_inputs(catalog: &str, policy: &str, cache: Option<&Path>) -> Result<Inputs> {
    let mut releases = Vec::new();
    let catalog_paths = paths(catalog);
    for path in &catalog_paths {
        releases.extend(
            ops::read_catalog(path)
                .with_context(|| format!("reading the catalog {}", path.display()))?,
        );
    }
    let policy_path = policy.trim();
    let (mut planning, gates, from) = if policy_path.is_empty() {
        (
            PlanningPolicy::default(),
            GatePolicy::default(),
            "the built-in planning policy and gates".to_owned(),
        )
    } else {
        let path = Path::new(policy_path);
        let read = |section| format!("reading the \"{section}\" section of {}", path.display());
        (
            ops::read_section(path, "planning").with_context(|| read("planning"))?,
            ops::read_section(path, "gates").with_context(|| read("gates"))?,
            format!("the policy file {}", path.display()),
        )
    };
    if crate::ops::cohorts::policy_needs_cache(&planning) {
        let Some(cache) = cache else {
            anyhow::bail!(
                "a wave of {from} names a saved cohort, and no fleet cache is open to read it from"
            );
        };
        let store = Store::open_existing(cache).with_context(|| {
            format!(
                "a wave of {from} names a saved cohort: opening the cache {}",
                cache.display()
            )
        })?;
        crate::ops::cohorts::fill_policy(&store, &mut planning).with_context(|| {
            format!(
                "reading the saved cohorts {from} names from the cache {}",
                cache.display()
            )
        })?;
    }
    planning
        .validate()
        .with_context(|| format!("checking {from}"))?;
    let source = format!(
        "{from}; {} catalog release(s){}",
        releases.len(),
        if catalog_paths.is_empty() {
            String::new()
        } else {
            format!(
                " from {}",
                catalog_paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    Ok(Inputs {
        catalog: Arc::new(releases),
        policy: planning,
        gates,
        source,
    })
}

/// The fleet indices behind each row of `plan.eligibility.by_reason`, in the same order: what
/// "show on map" makes a cohort of. One pass over the verdicts, on the planning worker.
pub fn reason_devices(plan: &Plan, release: &ReleaseSpec) -> Vec<Vec<u32>> {
    let rows = &plan.eligibility.by_reason;
    let index: HashMap<(Status, String), usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.status, r.reason.clone()), i))
        .collect();
    let row = |status: Status, text: String| index.get(&(status, text)).copied();
    let never: Vec<Option<usize>> = plan
        .never_reasons
        .iter()
        .map(|r| row(Status::Never, r.clone()))
        .collect();
    let chains: Vec<Option<usize>> = plan
        .chain_ids
        .iter()
        .map(|c| {
            row(
                Status::AfterPrerequisites,
                format!("needs {} first", c.join(" then ")),
            )
        })
        .collect();
    let conditions: Vec<Option<usize>> = release
        .requires
        .iter()
        .take(64)
        .map(|req| {
            if req.kind() == RequirementKind::Condition {
                row(
                    Status::AfterConditions,
                    format!("{req} unmet ({})", plan::eligibility::condition_hint(req)),
                )
            } else {
                None
            }
        })
        .collect();
    let mut out = vec![Vec::new(); rows.len()];
    for (i, v) in plan.devices.iter().enumerate() {
        let i = i as u32;
        match v.status {
            Status::Never => {
                if let Some(Some(r)) = never.get(v.detail as usize) {
                    out[*r].push(i);
                }
            }
            Status::AfterPrerequisites => {
                if let Some(Some(r)) = chains.get(v.detail as usize) {
                    out[*r].push(i);
                }
            }
            Status::AfterConditions => {
                let mut bits = v.unmet_conditions;
                while bits != 0 {
                    let k = bits.trailing_zeros() as usize;
                    if let Some(Some(r)) = conditions.get(k) {
                        out[*r].push(i);
                    }
                    bits &= bits - 1;
                }
            }
            Status::EligibleNow | Status::Installed => {}
        }
    }
    out
}

/// One wave on the timeline, in hours after the plan's start.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineBar {
    pub name: String,
    pub devices: usize,
    /// First and last offer; `None` when nothing of the wave was scheduled.
    pub offer_hours: Option<(f64, f64)>,
    /// When the soak ends.
    pub soak_end_hours: Option<f64>,
    pub unscheduled: u64,
}

/// The plan's waves on a time axis (hours after `plan.now`), in plan order.
pub fn timeline(plan: &Plan) -> Vec<TimelineBar> {
    let hours = |t: Timestamp| t.secs_since(plan.now) as f64 / 3600.0;
    plan.waves
        .iter()
        .map(|w| {
            let offer = w
                .timing
                .first_offer
                .zip(w.timing.last_offer)
                .map(|(a, b)| (hours(a), hours(b)));
            let soak_end = w.soak_end.map(hours).or_else(|| {
                w.timing
                    .last_offer
                    .map(|t| hours(t.plus_secs(i64::try_from(w.soak_secs).unwrap_or(i64::MAX / 2))))
            });
            TimelineBar {
                name: w.name.clone(),
                devices: w.size,
                offer_hours: offer,
                soak_end_hours: soak_end,
                unscheduled: w.timing.unscheduled,
            }
        })
        .collect()
}

/// A plan as the view shows it.
#[derive(Debug)]
pub struct Planned {
    pub release_id: String,
    pub plan: Plan,
    pub gates: GatePolicy,
    pub gate_notes: Vec<String>,
    /// Per row of `plan.eligibility.by_reason`, its devices.
    pub reason_devices: Vec<Vec<u32>>,
    pub timeline: Vec<TimelineBar>,
    /// The JSON `convoy plan --json` prints for the same inputs (what is saved and exported).
    pub json: Arc<serde_json::Value>,
    /// How long planning took on the worker.
    pub compute: Duration,
}

/// Everything one plan is computed from.
struct PlanJob {
    release: Arc<ReleaseSpec>,
    inputs: Arc<Inputs>,
    policy: PlanningPolicy,
    seed: u64,
    now: Timestamp,
}

/// Plans `job` on `fleet`: the planner, then what the view needs from it.
fn run_plan(job: &PlanJob, fleet: &Fleet) -> Result<Planned> {
    let started = Instant::now();
    // A bootloader or modem release is planned with stricter defaults (issue 20), shown first.
    let (policy, gates, boot) =
        ops::for_release(&job.release, job.policy.clone(), job.inputs.gates.clone());
    let plan = plan::plan(&PlanInput {
        fleet,
        release: &job.release,
        catalog: &job.inputs.catalog,
        now: job.now,
        seed: job.seed,
        policy: &policy,
    })
    .with_context(|| format!("planning release {}", job.release.id))?;
    let mut gate_notes = boot
        .as_ref()
        .map(ops::boot_critical_lines)
        .unwrap_or_default();
    gate_notes.extend(ops::gate_notes(&policy, &gates));
    let mut json = ops::plan_json(&plan, fleet, &gates, &gate_notes)?;
    ops::annotate_boot_critical(&mut json, boot.as_ref())?;
    Ok(Planned {
        release_id: job.release.id.clone(),
        reason_devices: reason_devices(&plan, &job.release),
        timeline: timeline(&plan),
        plan,
        gates,
        gate_notes,
        json: Arc::new(json),
        compute: started.elapsed(),
    })
}

/// The `convoy-planner` thread: keeps the fleet it was sent and plans only the newest job when
/// several are queued (about as long as `convoy plan` on the same fleet).
type PlanWorker = FleetWorker<Box<PlanJob>, Result<Planned, String>>;

fn spawn_plan_worker(ctx: &egui::Context) -> std::io::Result<PlanWorker> {
    FleetWorker::spawn("convoy-planner", ctx, |job: Box<PlanJob>, fleet| {
        run_plan(&job, fleet).map_err(|e| format!("{e:#}"))
    })
}

/// A release the list offers: its row, and the release when its manifest is valid.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub row: ListedManifest,
    pub release: Option<Arc<ReleaseSpec>>,
}

/// A saved cohort the form offers as a wave.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedChoice {
    pub name: String,
    pub query: String,
    /// Devices of the loaded fleet it matches now, or why its search does not read.
    pub devices: Result<usize, String>,
}

impl SavedChoice {
    /// `NAME (N devices)`: how the form lists it.
    pub fn label(&self) -> String {
        match &self.devices {
            Ok(n) => format!("{} ({n} devices)", self.name),
            Err(_) => format!("{} (does not read)", self.name),
        }
    }
}

/// The cache's saved cohorts with how many devices of `fleet` each matches (on a thread).
fn list_saved(cache: &Path, fleet: &Fleet) -> Result<Vec<SavedChoice>> {
    let store = Store::open_existing(cache)
        .with_context(|| format!("opening the fleet cache {}", cache.display()))?;
    let table = crate::ops::cohorts::lookup_table(&store)?;
    Ok(table
        .iter()
        .map(|(name, query)| SavedChoice {
            name: name.clone(),
            query: query.clone(),
            devices: convoy_core::search::Query::parse_with(query, &|n| table.get(n).cloned())
                .map(|q| {
                    fleet
                        .devices
                        .iter()
                        .filter(|d| q.matches(d, &|_| None))
                        .count()
                })
                .map_err(|e| e.to_string()),
        })
        .collect())
}

/// What the file and cache threads answer.
#[derive(Debug)]
enum Reply {
    Listed(Result<Vec<Candidate>, String>),
    Cohorts(Result<Vec<SavedChoice>, String>),
    Loaded(Result<Box<Inputs>, String>),
    Saved(Result<String, String>),
    Picked(Option<PathBuf>),
}

/// The planner view's state, for the session.
#[derive(Debug, Default)]
pub struct PlannerState {
    pub trust_dir: String,
    pub manifest_dir: String,
    pub catalog: String,
    pub policy_file: String,
    /// Whether the trust directory was filled in from the releases view or the cache.
    prefilled: bool,
    pub releases: Option<Result<Vec<Candidate>, String>>,
    listing: Option<Receiver<Reply>>,
    listed: bool,
    /// The release chosen (only ever a valid one) and where its manifest came from.
    pub chosen: Option<(Arc<ReleaseSpec>, String)>,
    pub inputs: Arc<Inputs>,
    inputs_loaded: bool,
    /// Why the files could not be read, if they could not.
    pub inputs_error: Option<String>,
    loading: Option<Receiver<Reply>>,
    pub form: PolicyForm,
    /// Why the form cannot be planned, if it cannot.
    pub form_error: Option<FormError>,
    /// The cache's saved cohorts the form offers as waves; `None` until first read.
    pub saved_cohorts: Option<Result<Vec<SavedChoice>, String>>,
    /// Their searches by name, what a wave's `cohort:NAME` reads when it is planned.
    saved_table: BTreeMap<String, String>,
    /// Whether the saved cohorts were read (or are being read) for this fleet.
    cohorts_requested: bool,
    cohorts_listing: Option<Receiver<Reply>>,
    worker: Option<PlanWorker>,
    worker_error: Option<String>,
    fleet_sent: bool,
    /// The number of the last plan job (never reused, so an old answer never looks current).
    last_seq: u64,
    /// What was last sent to the planner (release id, form) and its number.
    sent: Option<(String, PolicyForm, u64)>,
    /// The form or release changed at this instant and has not been sent yet.
    /// The form and release as last seen changed from what was sent, and since when they have
    /// stayed so: a plan is asked for once they stayed unchanged for the debounce.
    pending: Option<(PolicyForm, String, Instant)>,
    /// The newest plan and the number of the job it answers.
    pub planned: Option<(u64, Result<Planned, String>)>,
    pub plan_file: String,
    saving: Option<Receiver<Reply>>,
    browsing: Option<Receiver<Reply>>,
    /// The last save or export, or why it failed.
    pub saved: Option<Result<String, String>>,
}

/// What the planner view asks the console for; each starts a thread of the view's own state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannerCommand {
    /// Read the manifests again and check their signatures.
    CheckReleases,
    /// Read the catalog and policy files (and the saved cohorts again).
    LoadInputs,
    /// Read the cache's saved cohorts again.
    ReloadCohorts,
    /// Store the current plan in the cache (audited).
    Save,
    /// Write the current plan's JSON to the plan file.
    Export,
    /// Pick the plan file with a save dialog proposing this file name.
    Browse(String),
}

impl PlannerState {
    /// Does what the view asked for, on the state's threads: `cache` is the fleet cache.
    pub fn apply(
        &mut self,
        ctx: &egui::Context,
        command: PlannerCommand,
        cache: Option<PathBuf>,
        now: Timestamp,
    ) {
        match command {
            PlannerCommand::CheckReleases => self.refresh(ctx, cache, now),
            PlannerCommand::LoadInputs => {
                self.cohorts_requested = false;
                self.load(ctx, cache);
            }
            PlannerCommand::ReloadCohorts => self.cohorts_requested = false,
            PlannerCommand::Save => self.save(ctx, cache, now),
            PlannerCommand::Export => self.export(ctx),
            PlannerCommand::Browse(name) => self.browse(ctx, name),
        }
    }

    /// Whether the view needs the console's copy of the fleet: planning (a release is chosen
    /// and this load's fleet has not gone to the planner yet), or counting the saved cohorts'
    /// devices (not yet read for this fleet).
    pub fn wants_fleet(&self) -> bool {
        (self.chosen.is_some() && !self.fleet_sent) || !self.cohorts_requested
    }

    /// What the console does before the view draws: lists the releases the first time, and
    /// sends the planner the fleet (`fleet`, when [`Self::wants_fleet`]) and a changed form once
    /// the typing has paused (only while the clock runs: a fixed clock plans at once).
    pub fn prepare(
        &mut self,
        ctx: &egui::Context,
        cache: Option<PathBuf>,
        fleet: Option<Arc<Fleet>>,
        now: Timestamp,
        clock_runs: bool,
    ) {
        let debounce = if clock_runs { DEBOUNCE } else { Duration::ZERO };
        if !self.listed && self.listing.is_none() {
            self.refresh(ctx, cache.clone(), now);
        }
        if !self.cohorts_requested && self.cohorts_listing.is_none() {
            self.list_cohorts(ctx, cache, fleet.clone());
        }
        self.sync(ctx, fleet, now, debounce);
    }

    /// Fills in the directories the first time the view shows: the releases view's, else the
    /// trust directory beside the `cache` (where `convoy rollout run` looks by default). The
    /// console calls it, so that the view never reads another view's state.
    pub fn prefill(
        &mut self,
        cache: Option<&Path>,
        releases_trust: &str,
        releases_manifests: &str,
    ) {
        if self.prefilled {
            return;
        }
        self.prefilled = true;
        if self.trust_dir.is_empty() {
            self.trust_dir = if releases_trust.trim().is_empty() {
                cache
                    .map(|c| {
                        crate::ops::settings::default_trust_dir(c)
                            .display()
                            .to_string()
                    })
                    .unwrap_or_default()
            } else {
                releases_trust.to_owned()
            };
        }
        if self.manifest_dir.is_empty() {
            releases_manifests.clone_into(&mut self.manifest_dir);
        }
    }

    /// A new fleet was loaded: the planner needs its copy, and old plans refer to old indices.
    pub fn fleet_reloaded(&mut self) {
        self.fleet_sent = false;
        self.cohorts_requested = false;
        self.sent = None;
        self.planned = None;
    }

    /// Whether the plan shown is for the release and form as they are now.
    pub fn plan_is_current(&self) -> bool {
        match (&self.sent, &self.planned, &self.chosen) {
            (Some((id, form, sent)), Some((seq, _)), Some((release, _))) => {
                sent == seq && *form == self.form && *id == release.id
            }
            _ => false,
        }
    }

    /// Whether a plan was asked for and has not been answered.
    pub fn planning(&self) -> bool {
        match (&self.sent, &self.planned) {
            (Some((_, _, sent)), Some((seq, _))) => seq < sent,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Takes the threads' answers.
    pub fn poll(&mut self) {
        if let Some(worker) = &self.worker {
            for answer in worker.answers() {
                self.planned = Some(answer);
            }
        }
        for slot in [
            &mut self.listing,
            &mut self.cohorts_listing,
            &mut self.loading,
            &mut self.saving,
            &mut self.browsing,
        ] {
            let Some(rx) = slot else {
                continue;
            };
            let reply = match rx.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Empty) => continue,
                Err(TryRecvError::Disconnected) => {
                    Reply::Saved(Err("a planner worker stopped without an answer".into()))
                }
            };
            *slot = None;
            match reply {
                Reply::Listed(list) => self.releases = Some(list),
                Reply::Cohorts(list) => {
                    let table: BTreeMap<String, String> = list
                        .iter()
                        .flatten()
                        .map(|c| (c.name.clone(), c.query.clone()))
                        .collect();
                    if table != self.saved_table {
                        // A wave naming one may now mean other devices: plan again.
                        self.saved_table = table;
                        if self
                            .form
                            .waves
                            .iter()
                            .any(|w| w.choice != WaveChoice::Policy)
                        {
                            self.sent = None;
                            self.pending = None;
                        }
                    }
                    self.saved_cohorts = Some(list);
                }
                Reply::Loaded(Ok(inputs)) => {
                    let seed = self.form.seed.trim().parse().unwrap_or(1);
                    self.form = form_of(&inputs.policy, seed);
                    self.inputs = Arc::from(inputs);
                    self.inputs_error = None;
                    // The same form may now mean another policy: plan again.
                    self.sent = None;
                    self.pending = None;
                }
                Reply::Loaded(Err(why)) => self.inputs_error = Some(why),
                Reply::Saved(result) => self.saved = Some(result),
                Reply::Picked(Some(path)) => self.plan_file = path.display().to_string(),
                Reply::Picked(None) => {
                    self.saved = Some(Err(
                        "No file chosen (cancelled, or no file dialog on this desktop: type the path)"
                            .into(),
                    ));
                }
            }
        }
    }

    fn spawn(
        ctx: &egui::Context,
        name: &str,
        job: impl FnOnce() -> Reply + Send + 'static,
    ) -> Result<Receiver<Reply>, String> {
        crate::gui::worker::spawn_job(ctx, name, job)
            .map_err(|e| format!("could not start the {name} thread: {e}"))
    }

    /// Lists and checks the manifests on a thread.
    fn refresh(&mut self, ctx: &egui::Context, cache: Option<PathBuf>, now: Timestamp) {
        self.listed = true;
        let dir = |s: &str| (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()));
        let sources = ListSources {
            cache,
            trust_dir: dir(&self.trust_dir),
            manifest_dir: dir(&self.manifest_dir),
        };
        match Self::spawn(ctx, "convoy-planner-releases", move || {
            Reply::Listed(
                crate::gui::releases::list_with_releases(&sources, now)
                    .map(|rows| {
                        rows.into_iter()
                            .map(|(row, release)| Candidate {
                                row,
                                release: release.map(Arc::new),
                            })
                            .collect()
                    })
                    .map_err(|e| format!("{e:#}")),
            )
        }) {
            Ok(rx) => self.listing = Some(rx),
            Err(why) => self.releases = Some(Err(why)),
        }
    }

    /// Reads the cache's saved cohorts, and counts their devices in `fleet`, on a thread.
    fn list_cohorts(
        &mut self,
        ctx: &egui::Context,
        cache: Option<PathBuf>,
        fleet: Option<Arc<Fleet>>,
    ) {
        let Some(cache) = cache else {
            self.cohorts_requested = true;
            self.saved_cohorts = Some(Err(
                "no fleet cache is open (saved cohorts are kept in the cache)".into(),
            ));
            return;
        };
        // The counts need the fleet: wait for it (the console sends it while `wants_fleet`).
        let Some(fleet) = fleet else {
            return;
        };
        self.cohorts_requested = true;
        match Self::spawn(ctx, "convoy-planner-cohorts", move || {
            Reply::Cohorts(list_saved(&cache, &fleet).map_err(|e| format!("{e:#}")))
        }) {
            Ok(rx) => self.cohorts_listing = Some(rx),
            Err(why) => self.saved_cohorts = Some(Err(why)),
        }
    }

    /// Reads the catalog and policy files on a thread (a wave's saved cohorts from `cache`).
    fn load(&mut self, ctx: &egui::Context, cache: Option<PathBuf>) {
        let (catalog, policy) = (self.catalog.clone(), self.policy_file.clone());
        self.inputs_error = None;
        match Self::spawn(ctx, "convoy-planner-files", move || {
            Reply::Loaded(
                load_inputs(&catalog, &policy, cache.as_deref())
                    .map(Box::new)
                    .map_err(|e| format!("{e:#}")),
            )
        }) {
            Ok(rx) => self.loading = Some(rx),
            Err(why) => self.inputs_error = Some(why),
        }
    }

    /// Chooses a release to plan; only a valid manifest's release can be chosen.
    pub fn choose(&mut self, candidate: &Candidate) {
        if let Some(release) = &candidate.release {
            self.chosen = Some((release.clone(), candidate.row.source.clone()));
            self.pending = None;
        }
    }

    /// Sends the planner the fleet once per load, and the release and form once they changed
    /// and the typing has paused (`debounce`); parses the form (a few strings) on the way.
    fn sync(
        &mut self,
        ctx: &egui::Context,
        fleet: Option<Arc<Fleet>>,
        now: Timestamp,
        debounce: Duration,
    ) {
        if !self.inputs_loaded {
            // The CLI's defaults, until files are loaded: no catalog, the built-in policy.
            self.inputs_loaded = true;
            self.inputs = Arc::new(Inputs {
                source: "the built-in planning policy and gates; no catalog".into(),
                ..Inputs::default()
            });
            self.form = form_of(&self.inputs.policy, 1);
        }
        let Some((release, _)) = &self.chosen else {
            return;
        };
        if self.worker.is_none() && self.worker_error.is_none() {
            match spawn_plan_worker(ctx) {
                Ok(w) => self.worker = Some(w),
                Err(e) => {
                    self.worker_error = Some(format!("could not start the planner thread: {e}"));
                }
            }
        }
        let Some(worker) = &self.worker else {
            return;
        };
        if !self.fleet_sent {
            let Some(fleet) = fleet else {
                return;
            };
            if !worker.send_fleet(fleet) {
                return;
            }
            self.fleet_sent = true;
        }
        let unchanged = self
            .sent
            .as_ref()
            .is_some_and(|(id, form, _)| *id == release.id && *form == self.form);
        if unchanged {
            self.pending = None;
            self.form_error = None;
            return;
        }
        let (policy, seed) = match apply_form(&self.form, &self.inputs.policy, &self.saved_table) {
            Ok(p) => {
                self.form_error = None;
                p
            }
            Err(e) => {
                self.form_error = Some(e);
                return;
            }
        };
        // Every keystroke restarts the wait.
        let since = match &self.pending {
            Some((form, id, since)) if *form == self.form && *id == release.id => *since,
            _ => {
                let now = Instant::now();
                self.pending = Some((self.form.clone(), release.id.clone(), now));
                now
            }
        };
        let waited = since.elapsed();
        if waited < debounce {
            ctx.request_repaint_after(debounce.saturating_sub(waited));
            return;
        }
        let seq = self.last_seq + 1;
        let job = PlanJob {
            release: release.clone(),
            inputs: self.inputs.clone(),
            policy,
            seed,
            now,
        };
        // A full queue is tried again next frame.
        if worker.send(seq, Box::new(job)) {
            self.sent = Some((release.id.clone(), self.form.clone(), seq));
            self.last_seq = seq;
            self.pending = None;
        }
    }

    /// Stores the current plan in the cache with an audit entry, on a thread.
    fn save(&mut self, ctx: &egui::Context, cache: Option<PathBuf>, now: Timestamp) {
        let Some((_, Ok(planned))) = &self.planned else {
            return;
        };
        let Some(cache) = cache else {
            self.saved = Some(Err("Could not save: no fleet cache is open".into()));
            return;
        };
        let plan_id = plan_id(&planned.release_id, now);
        let release_id = planned.release_id.clone();
        let json = planned.json.clone();
        self.saved = None;
        match Self::spawn(ctx, "convoy-plan-save", move || {
            let result = Store::open_existing(&cache)
                .with_context(|| format!("opening the fleet cache {}", cache.display()))
                .and_then(|store| {
                    crate::store::plans::record_plan(
                        &store,
                        &plan_id,
                        &release_id,
                        &json,
                        CONSOLE_ACTOR,
                        now,
                    )
                })
                .map(|seq| format!("Saved plan {plan_id} in the cache (audit entry {seq})"))
                .map_err(|e| format!("Could not save the plan: {e:#}"));
            Reply::Saved(result)
        }) {
            Ok(rx) => self.saving = Some(rx),
            Err(why) => self.saved = Some(Err(why)),
        }
    }

    /// Writes the current plan's JSON to the plan file, on a thread.
    fn export(&mut self, ctx: &egui::Context) {
        let Some((_, Ok(planned))) = &self.planned else {
            return;
        };
        let path = self.plan_file.trim();
        if path.is_empty() {
            self.saved = Some(Err("Plan file: required (type a path or Browse…)".into()));
            return;
        }
        let path = PathBuf::from(path);
        let json = planned.json.clone();
        self.saved = None;
        match Self::spawn(ctx, "convoy-plan-save", move || {
            let result = serde_json::to_vec_pretty(&*json)
                .context("serialising the plan")
                .and_then(|mut bytes| {
                    bytes.push(b'\n');
                    crate::keys::write_file(&path, &bytes, crate::keys::FileMode::Public)
                        .with_context(|| format!("writing the plan to {}", path.display()))
                })
                .map(|()| {
                    format!(
                        "Wrote {}: run `convoy rollout run --plan {} --release MANIFEST --artifact FILE` to dispatch it",
                        path.display(),
                        path.display()
                    )
                })
                .map_err(|e| format!("Could not export the plan: {e:#}"));
            Reply::Saved(result)
        }) {
            Ok(rx) => self.saving = Some(rx),
            Err(why) => self.saved = Some(Err(why)),
        }
    }

    /// Opens a save dialog on its own thread (rfd's dialogs block).
    fn browse(&mut self, ctx: &egui::Context, default_name: String) {
        match Self::spawn(ctx, "convoy-file-dialog", move || {
            Reply::Picked(
                rfd::FileDialog::new()
                    .set_title("Export the plan")
                    .set_file_name(default_name)
                    .save_file(),
            )
        }) {
            Ok(rx) => self.browsing = Some(rx),
            Err(why) => self.saved = Some(Err(why)),
        }
    }
}

/// `RELEASE-plan-YYYYMMDDTHHMMSSZ`: the id a plan is stored under.
pub fn plan_id(release_id: &str, now: Timestamp) -> String {
    let compact: String = now
        .to_rfc3339()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("{release_id}-plan-{compact}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_core::synth::{SynthOptions, generate};

    const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/releases")
            .join(name)
    }

    #[test]
    fn reasons_map_to_exactly_their_devices_and_the_timeline_follows_the_waves() {
        let fleet = generate(&SynthOptions {
            devices: 600,
            seed: 5,
            now: NOW,
        });
        let inputs =
            load_inputs(&fixture("catalog.json").display().to_string(), "", None).expect("inputs");
        let release: ReleaseSpec =
            serde_json::from_slice(&std::fs::read(fixture("t300-fw-2.5.0.json")).expect("fixture"))
                .expect("release");
        let job = PlanJob {
            release: Arc::new(release),
            inputs: Arc::new(inputs),
            policy: PlanningPolicy::default(),
            seed: 1,
            now: NOW,
        };
        let planned = run_plan(&job, &fleet).expect("plans");
        let rows = &planned.plan.eligibility.by_reason;
        assert!(rows.iter().any(|r| r.status == Status::Never));
        assert!(rows.iter().any(|r| r.status == Status::AfterPrerequisites));
        assert!(rows.iter().any(|r| r.status == Status::AfterConditions));
        assert_eq!(planned.reason_devices.len(), rows.len());
        for (r, devices) in rows.iter().zip(&planned.reason_devices) {
            assert_eq!(devices.len(), r.devices, "{}", r.reason);
            assert!(devices.windows(2).all(|w| w[0] < w[1]));
            for &i in devices {
                assert_eq!(planned.plan.devices[i as usize].status, r.status);
            }
        }
        assert_eq!(planned.timeline.len(), planned.plan.waves.len());
        let canary = &planned.timeline[0];
        let (from, to) = canary.offer_hours.expect("the canary is scheduled");
        assert!(0.0 <= from && from <= to);
        assert!(canary.soak_end_hours.expect("soak") >= to + 24.0 - 1e-9);
        // The JSON is the CLI's: its waves are what `convoy rollout run --plan` takes.
        assert_eq!(
            planned.json["rollout_waves"],
            serde_json::to_value(planned.plan.rollout_waves(&fleet)).expect("json")
        );
        assert_eq!(
            plan_id("t300-fw-2.5.0", NOW),
            "t300-fw-2.5.0-plan-20270115T080000Z"
        );
    }

    #[test]
    fn an_edit_is_planned_only_once_the_typing_pauses_and_the_old_plan_stays_until_then() {
        let ctx = egui::Context::default();
        let fleet = Arc::new(generate(&SynthOptions {
            devices: 200,
            seed: 5,
            now: NOW,
        }));
        let release: ReleaseSpec =
            serde_json::from_slice(&std::fs::read(fixture("t300-fw-2.5.0.json")).expect("fixture"))
                .expect("release");
        let mut state = PlannerState::default();
        let hour = Duration::from_hours(1);
        // No release chosen: nothing is planned, but the form holds the CLI's defaults.
        state.sync(&ctx, Some(fleet.clone()), NOW, Duration::ZERO);
        assert!(state.sent.is_none());
        assert_eq!(state.form, form_of(&PlanningPolicy::default(), 1));
        state.chosen = Some((Arc::new(release), "cache".into()));
        state.sync(&ctx, Some(fleet), NOW, hour);
        assert!(state.sent.is_none(), "waits for the typing to pause");
        state.sync(&ctx, None, NOW, Duration::ZERO);
        assert!(state.planning());
        let answer = state
            .worker
            .as_ref()
            .expect("worker")
            .wait(Duration::from_mins(2))
            .expect("answer");
        state.planned = Some(answer);
        assert!(state.plan_is_current());
        let Some((_, Ok(first))) = &state.planned else {
            panic!("no plan");
        };
        assert_eq!(first.plan.canary.target_size, 50);
        // An edit: the old plan stays, not current, until the pause.
        state.form.canary_size = "20".into();
        state.sync(&ctx, None, NOW, hour);
        assert!(!state.plan_is_current());
        assert!(!state.planning());
        assert!(state.planned.is_some());
        state.sync(&ctx, None, NOW, Duration::ZERO);
        let answer = state
            .worker
            .as_ref()
            .expect("worker")
            .wait(Duration::from_mins(2))
            .expect("answer");
        state.planned = Some(answer);
        assert!(state.plan_is_current());
        let Some((seq, Ok(second))) = &state.planned else {
            panic!("no plan");
        };
        assert_eq!(*seq, 2);
        assert_eq!(second.plan.canary.target_size, 20);
    }

    #[test]
    fn unreadable_inputs_name_the_file() {
        let e = load_inputs("/nonexistent/catalog.json", "", None).expect_err("missing");
        assert!(
            format!("{e:#}").contains("reading the catalog /nonexistent/catalog.json"),
            "{e:#}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("policy.json");
        std::fs::write(
            &p,
            r#"{"version": 1, "planning": {"canary": {"size": 0, "bogus": 1}}}"#,
        )
        .expect("write");
        let e = load_inputs("", &p.display().to_string(), None).expect_err("bad policy");
        assert!(format!("{e:#}").contains("\"planning\" section"), "{e:#}");
    }

    #[test]
    fn a_policy_files_saved_cohort_waves_are_read_from_the_cache_and_an_unknown_one_is_named() {
        use convoy_core::plan::policy::Cohort;
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("cache.db");
        let store = Store::open(&cache).expect("cache");
        crate::ops::cohorts::save(&store, "rev C vans", "model:T300 hw_rev:C", "dana", NOW)
            .expect("saved");
        let p = dir.path().join("policy.json");
        let write = |name: &str| {
            let doc = serde_json::json!({"version": 1, "planning": {"waves": [
                {"name": "canary", "cohort": {"kind": "canary"}},
                {"name": "vans", "cohort": {"kind": "query", "query": format!("cohort:\"{name}\"")}},
                {"name": "rest", "cohort": {"kind": "rest"}},
            ]}});
            std::fs::write(&p, serde_json::to_vec(&doc).expect("json")).expect("write");
        };
        write("rev C vans");
        let policy = p.display().to_string();
        let inputs = load_inputs("", &policy, Some(&cache)).expect("filled from the cache");
        assert_eq!(
            inputs.policy.waves[1].cohort,
            Cohort::Query {
                query: "cohort:\"rev C vans\"".into(),
                saved: [("rev C vans".to_owned(), "model:T300 hw_rev:C".to_owned())].into(),
            }
        );
        // The form offers it as the saved cohort it is.
        let form = form_of(&inputs.policy, 1);
        assert_eq!(form.waves[1].choice, WaveChoice::Saved("rev C vans".into()));
        let e = load_inputs("", &policy, None).expect_err("no cache");
        assert!(format!("{e:#}").contains("no fleet cache is open"), "{e:#}");
        write("pilots");
        let e = load_inputs("", &policy, Some(&cache)).expect_err("unknown cohort");
        let text = format!("{e:#}");
        assert!(
            text.contains("there is no saved cohort named \"pilots\""),
            "{text}"
        );
        assert!(text.contains("wave \"vans\""), "{text}");
        assert!(!text.contains("Some("), "{text}");
        // The listing the form offers, with each cohort's devices in the fleet.
        let fleet = generate(&SynthOptions {
            devices: 300,
            seed: 5,
            now: NOW,
        });
        let want = fleet
            .devices
            .iter()
            .filter(|d| &*d.model == "T300" && &*d.hw_rev == "C")
            .count();
        let listed = list_saved(&cache, &fleet).expect("listed");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].devices, Ok(want));
        assert_eq!(listed[0].label(), format!("rev C vans ({want} devices)"));
    }
}
