//! The planner: a verified release planned against the loaded fleet before anything is sent.
//! Eligibility by verdict with its reasons and prerequisite chains, the canary with its stratum
//! coverage, editable waves (size or share, soak), rate limit, maintenance windows, bandwidth
//! cap and data price, the waves' timing, bytes and cost as the core computes them, the gates
//! the plan carries, the plan as a timeline, and the canary, a wave or a reason's devices made a
//! cohort on the map. The plan is stored in the cache (audited) or exported as the JSON that
//! `convoy rollout run --plan FILE` reads.
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

use anyhow::{Context, Result};
use convoy_core::fleet::Fleet;
use convoy_core::gates::GatePolicy;
use convoy_core::plan::policy::{Cohort, LocalTime, MaintenanceWindow, RateLimit, WaveSpec};
use convoy_core::plan::{self, Coverage, Plan, PlanInput, PlanningPolicy, Status};
use convoy_core::release::ReleaseSpec;
use convoy_core::requirement::RequirementKind;
use convoy_core::time::Timestamp;
use egui::RichText;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crate::gui::app::{ConsoleApp, UiCommand};
use crate::gui::findings::CONSOLE_ACTOR;
use crate::gui::releases::{ListSources, ListedManifest, SignatureState};
use crate::gui::tokens;
use crate::gui::view::{text_row, text_row_sized};
use crate::gui::worker::FleetWorker;
use crate::ops::plans as ops;
use crate::store::Store;

/// How long the form must stay unchanged before an edit is planned (on the system clock; a
/// fixed clock plans at once, so tests are deterministic).
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
/// sections as `convoy plan --catalog --policy` does; empty means none and the defaults.
pub fn load_inputs(catalog: &str, policy: &str) -> Result<Inputs> {
    let mut releases = Vec::new();
    let catalog_paths = paths(catalog);
    for path in &catalog_paths {
        releases.extend(
            ops::read_catalog(path)
                .with_context(|| format!("reading the catalog {}", path.display()))?,
        );
    }
    let policy_path = policy.trim();
    let (planning, gates, from) = if policy_path.is_empty() {
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

/// One wave of the policy as typed.
#[derive(Debug, Clone, PartialEq)]
pub struct WaveForm {
    pub name: String,
    pub cohort: Cohort,
    /// Empty: no limit.
    pub max_devices: String,
    /// For a percent cohort only.
    pub pct: String,
    /// Empty: one operating cycle.
    pub soak_hours: String,
}

/// The rate limit as typed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RateForm {
    pub exponential: bool,
    /// Constant rate, or the ramp's start.
    pub per_minute: String,
    pub factor: String,
    pub every_devices: String,
    pub max_per_minute: String,
}

/// The editable part of the planning policy, as typed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyForm {
    pub canary_size: String,
    pub seed: String,
    pub waves: Vec<WaveForm>,
    pub rate: RateForm,
    /// `22:00-06:00` for every region, or `eu-central 01:00-05:00; * 22:00-06:00`; empty: any
    /// time.
    pub windows: String,
    /// GB (10^9 bytes) per UTC clock hour; empty: no cap.
    pub cap_gb_per_hour: String,
    pub price_per_gb: String,
}

fn number_text(x: f64) -> String {
    // Whole numbers without a fraction, others as short as they round-trip.
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// The form for `policy` and `seed`.
pub fn form_of(policy: &PlanningPolicy, seed: u64) -> PolicyForm {
    let rate = match &policy.rate {
        RateLimit::Constant { per_minute } => RateForm {
            exponential: false,
            per_minute: per_minute.to_string(),
            factor: "2".into(),
            every_devices: "1000".into(),
            max_per_minute: per_minute.to_string(),
        },
        RateLimit::Exponential {
            start_per_minute,
            factor,
            every_devices,
            max_per_minute,
        } => RateForm {
            exponential: true,
            per_minute: start_per_minute.to_string(),
            factor: number_text(*factor),
            every_devices: every_devices.to_string(),
            max_per_minute: max_per_minute.to_string(),
        },
    };
    PolicyForm {
        canary_size: policy.canary.size.to_string(),
        seed: seed.to_string(),
        waves: policy
            .waves
            .iter()
            .map(|w| WaveForm {
                name: w.name.clone(),
                pct: match w.cohort {
                    Cohort::Percent { pct } => number_text(pct),
                    _ => String::new(),
                },
                cohort: w.cohort.clone(),
                max_devices: w.max_devices.map(|n| n.to_string()).unwrap_or_default(),
                soak_hours: w
                    .soak_secs
                    .map(|s| number_text(s as f64 / 3600.0))
                    .unwrap_or_default(),
            })
            .collect(),
        rate,
        windows: policy
            .windows
            .iter()
            .map(|w| format!("{} {}-{}", w.region, w.start, w.end))
            .collect::<Vec<_>>()
            .join("; "),
        cap_gb_per_hour: policy
            .bandwidth_cap_bytes_per_hour
            .map(|b| number_text(b as f64 / 1e9))
            .unwrap_or_default(),
        price_per_gb: number_text(policy.data_price_per_gb),
    }
}

/// A field of the planner's form that cannot become part of the policy, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError {
    /// The field's name in the form (wave fields are named after their wave).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> FormError {
    FormError {
        field: field.into(),
        message: message.into(),
    }
}

fn parse_num<T: std::str::FromStr>(field: &str, text: &str, what: &str) -> Result<T, FormError> {
    text.trim()
        .parse()
        .map_err(|_| bad(field, format!("must be {what}, not {:?}", text.trim())))
}

fn parse_optional<T: std::str::FromStr>(
    field: &str,
    text: &str,
    what: &str,
) -> Result<Option<T>, FormError> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        parse_num(field, text, what).map(Some)
    }
}

/// Parses maintenance windows: entries separated by `;`, each `[REGION] HH:MM-HH:MM` (no region
/// means `*`, every region without its own).
pub fn parse_windows(text: &str) -> Result<Vec<MaintenanceWindow>, FormError> {
    const FIELD: &str = "Maintenance windows";
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let (region, range) = match entry.rsplit_once(char::is_whitespace) {
                Some((region, range)) => (region.trim(), range),
                None => ("*", entry),
            };
            let (start, end) = range.split_once('-').ok_or_else(|| {
                bad(
                    FIELD,
                    format!("{entry:?} is not [REGION] HH:MM-HH:MM (e.g. 22:00-06:00)"),
                )
            })?;
            let time = |t: &str| t.parse::<LocalTime>().map_err(|e| bad(FIELD, e));
            Ok(MaintenanceWindow {
                region: region.to_owned(),
                start: time(start)?,
                end: time(end)?,
            })
        })
        .collect()
}

/// The policy the form describes, on top of `base` (everything the form does not show comes
/// from it), and the seed; or the first bad field.
pub fn apply_form(
    form: &PolicyForm,
    base: &PlanningPolicy,
) -> Result<(PlanningPolicy, u64), FormError> {
    let mut policy = base.clone();
    policy.canary.size = parse_num("Canary size", &form.canary_size, "a whole number")?;
    let seed = parse_num("Seed", &form.seed, "a whole number")?;
    let mut waves = Vec::with_capacity(form.waves.len());
    for w in &form.waves {
        let cohort = match &w.cohort {
            Cohort::Percent { .. } => {
                let field = format!("{} percent", w.name);
                let pct: f64 = parse_num(&field, &w.pct, "a percentage")?;
                if !(pct > 0.0 && pct <= 100.0) {
                    return Err(bad(field, "must be above 0 and at most 100"));
                }
                Cohort::Percent { pct }
            }
            other => other.clone(),
        };
        let soak_hours: Option<f64> = parse_optional(
            &format!("{} soak hours", w.name),
            &w.soak_hours,
            "a number of hours",
        )?;
        if let Some(h) = soak_hours
            && !(0.0..=8760.0).contains(&h)
        {
            return Err(bad(
                format!("{} soak hours", w.name),
                "must be between 0 and 8760 (a year)",
            ));
        }
        waves.push(WaveSpec {
            name: w.name.clone(),
            cohort,
            max_devices: parse_optional(
                &format!("{} max devices", w.name),
                &w.max_devices,
                "a whole number",
            )?,
            soak_secs: soak_hours.map(|h| (h * 3600.0).round() as u64),
        });
    }
    policy.waves = waves;
    let r = &form.rate;
    let per_minute: u32 = parse_num(
        if r.exponential {
            "Start per minute"
        } else {
            "Devices per minute"
        },
        &r.per_minute,
        "a whole number",
    )?;
    policy.rate = if r.exponential {
        RateLimit::Exponential {
            start_per_minute: per_minute,
            factor: parse_num("Ramp factor", &r.factor, "a number")?,
            every_devices: parse_num("Ramp every devices", &r.every_devices, "a whole number")?,
            max_per_minute: parse_num("Max per minute", &r.max_per_minute, "a whole number")?,
        }
    } else {
        RateLimit::Constant { per_minute }
    };
    policy.windows = parse_windows(&form.windows)?;
    policy.bandwidth_cap_bytes_per_hour = parse_optional::<f64>(
        "Bandwidth cap (GB per hour)",
        &form.cap_gb_per_hour,
        "a number",
    )?
    .map(|gb| {
        if gb > 0.0 {
            Ok((gb * 1e9).round() as u64)
        } else {
            Err(bad("Bandwidth cap (GB per hour)", "must be above 0"))
        }
    })
    .transpose()?;
    policy.data_price_per_gb =
        parse_optional::<f64>("Data price per GB", &form.price_per_gb, "a number")?.unwrap_or(0.0);
    policy.validate().map_err(|e| match e {
        plan::PlanError::Policy { field, why } => bad(field, why),
        other => bad("Policy", other.to_string()),
    })?;
    Ok((policy, seed))
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
    let plan = plan::plan(&PlanInput {
        fleet,
        release: &job.release,
        catalog: &job.inputs.catalog,
        now: job.now,
        seed: job.seed,
        policy: &job.policy,
    })
    .with_context(|| format!("planning release {}", job.release.id))?;
    let gate_notes = ops::gate_notes(&job.policy, &job.inputs.gates);
    let json = ops::plan_json(&plan, fleet, &job.inputs.gates, &gate_notes)?;
    Ok(Planned {
        release_id: job.release.id.clone(),
        reason_devices: reason_devices(&plan, &job.release),
        timeline: timeline(&plan),
        plan,
        gates: job.inputs.gates.clone(),
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

/// What the file and cache threads answer.
#[derive(Debug)]
enum Reply {
    Listed(Result<Vec<Candidate>, String>),
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

impl PlannerState {
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
    pub fn refresh(&mut self, ctx: &egui::Context, cache: Option<PathBuf>, now: Timestamp) {
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

    /// Reads the catalog and policy files on a thread.
    pub fn load(&mut self, ctx: &egui::Context) {
        let (catalog, policy) = (self.catalog.clone(), self.policy_file.clone());
        self.inputs_error = None;
        match Self::spawn(ctx, "convoy-planner-files", move || {
            Reply::Loaded(
                load_inputs(&catalog, &policy)
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
        let (policy, seed) = match apply_form(&self.form, &self.inputs.policy) {
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

fn time_text(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), Timestamp::to_rfc3339)
}

/// A small text field named `name` for assistive technology and tests.
fn cell_edit(ui: &mut egui::Ui, value: &mut String, name: &str, hint: &str) {
    ui.add(
        egui::TextEdit::singleline(value)
            .hint_text(hint)
            .desired_width(90.0),
    )
    .accessible_name(name);
}

/// Draws the planner view.
pub fn planner_ui(app: &mut ConsoleApp, ui: &mut egui::Ui) {
    let ctx = ui.ctx().clone();
    let now = app.now();
    let cache = app.cache_path().map(Path::to_path_buf);
    let debounce = if app.clock_runs() {
        DEBOUNCE
    } else {
        Duration::ZERO
    };
    if !app.planner.listed && app.planner.listing.is_none() {
        app.planner.refresh(&ctx, cache.clone(), now);
    }
    let fleet = if app.planner.chosen.is_some() && !app.planner.fleet_sent {
        app.shared_fleet()
    } else {
        None
    };
    app.planner.sync(&ctx, fleet, now, debounce);
    let mut commands = Vec::new();
    let state = &mut app.planner;
    let fleet = app.model.as_ref().map(|m| &m.fleet);
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.heading("Planner");
        ui.label(
            RichText::new(
                "Plan a verified release against the loaded fleet: who is eligible and why, the canary and what it covers, the waves and when they run. Nothing is sent from here.",
            )
            .color(tokens::MUTED),
        );
        ui.colored_label(
            tokens::WARN,
            "Nothing is dispatched from here: save the plan and request it in Approvals (Ctrl+9), or export it for `convoy rollout run --plan FILE`.",
        );
        ui.add_space(6.0);
        release_ui(state, ui, &ctx, cache.clone(), now);
        ui.separator();
        inputs_ui(state, ui, &ctx);
        let Some((release, source)) = state.chosen.clone() else {
            ui.label(RichText::new("Choose a release with a valid signature to plan it.").color(tokens::MUTED));
            return;
        };
        ui.separator();
        ui.label(
            RichText::new(format!("Plan for {} (manifest from {source})", release.id))
                .strong()
                .size(16.0),
        )
        .on_hover_text(match &state.planned {
            Some((_, Ok(p))) => format!(
                "Last planned in {:.0} ms on the planner thread",
                p.compute.as_secs_f64() * 1000.0
            ),
            _ => "Not planned yet".to_owned(),
        });
        form_ui(state, ui);
        if let Some(why) = &state.worker_error {
            ui.colored_label(tokens::BAD, why);
        }
        if let Some(e) = &state.form_error {
            ui.colored_label(tokens::BAD, format!("Not planned: {e}"));
        }
        let current = state.plan_is_current();
        if state.planning() || (!current && state.form_error.is_none()) {
            ui.horizontal(|ui| {
                ui.add(egui::Spinner::new());
                ui.label(if state.planned.is_some() {
                    "Re-planning…; the plan below is for the previous inputs."
                } else {
                    "Planning…"
                });
            });
        }
        match &state.planned {
            None => {}
            Some((_, Err(why))) => {
                ui.colored_label(tokens::BAD, format!("Could not plan: {why}"));
            }
            Some((_, Ok(planned))) => {
                plan_ui(planned, fleet, ui, &mut commands);
                ui.separator();
                save_ui(state, ui, &ctx, cache.clone(), now, current);
            }
        }
    });
    for c in commands {
        app.send(c);
    }
}

fn release_ui(
    state: &mut PlannerState,
    ui: &mut egui::Ui,
    ctx: &egui::Context,
    cache: Option<PathBuf>,
    now: Timestamp,
) {
    ui.label(RichText::new("Release").strong());
    egui::Grid::new("planner-sources")
        .num_columns(2)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            text_row(
                ui,
                "Trust directory",
                &mut state.trust_dir,
                "keyset-N.json directory or a key directory",
            );
            text_row(
                ui,
                "Manifest directory",
                &mut state.manifest_dir,
                "also list the *.json manifests here (optional)",
            );
        });
    ui.horizontal(|ui| {
        if ui
            .add_enabled(state.listing.is_none(), egui::Button::new("Check releases"))
            .on_hover_text("Read the manifests again and check their signatures")
            .clicked()
        {
            state.refresh(ctx, cache, now);
        }
        if state.listing.is_some() {
            ui.add(egui::Spinner::new());
        }
    });
    let mut chosen = None;
    match &state.releases {
        None => {
            ui.label("Reading the manifests…");
        }
        Some(Err(why)) => {
            ui.colored_label(tokens::BAD, format!("Could not list the releases: {why}"));
        }
        Some(Ok(rows)) if rows.is_empty() => {
            ui.label(
                RichText::new("No manifests in the cache yet: sign one in Releases.")
                    .color(tokens::MUTED),
            );
        }
        Some(Ok(rows)) => {
            egui::Grid::new("planner-releases")
                .num_columns(6)
                .striped(true)
                .spacing([12.0, 3.0])
                .show(ui, |ui| {
                    for h in ["release", "version", "hardware", "signature", "source", ""] {
                        ui.label(RichText::new(h).strong());
                    }
                    ui.end_row();
                    for (i, c) in rows.iter().enumerate() {
                        let row = &c.row;
                        ui.label(&row.release_id);
                        ui.label(&row.version);
                        ui.label(&row.hardware);
                        let color = match row.state {
                            SignatureState::Valid => tokens::OK,
                            SignatureState::NotChecked(_) => tokens::WARN,
                            _ => tokens::BAD,
                        };
                        ui.label(RichText::new(row.state.label()).color(color).strong());
                        ui.label(&row.source);
                        if c.release.is_some() {
                            let selected = state
                                .chosen
                                .as_ref()
                                .is_some_and(|(r, s)| r.id == row.release_id && *s == row.source);
                            if ui
                                .add(egui::Button::selectable(
                                    selected,
                                    format!("Plan {}", row.release_id),
                                ))
                                .clicked()
                            {
                                chosen = Some(i);
                            }
                        } else {
                            ui.label(
                                RichText::new(format!("cannot be planned: {}", row.state.detail()))
                                    .color(tokens::BAD),
                            );
                        }
                        ui.end_row();
                    }
                });
        }
    }
    let pick = chosen.and_then(|i| match &state.releases {
        Some(Ok(rows)) => rows.get(i).cloned(),
        _ => None,
    });
    if let Some(c) = pick {
        state.choose(&c);
    }
}

fn inputs_ui(state: &mut PlannerState, ui: &mut egui::Ui, ctx: &egui::Context) {
    ui.label(RichText::new("Catalog and policy").strong());
    egui::Grid::new("planner-files")
        .num_columns(2)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            text_row(
                ui,
                "Catalog files",
                &mut state.catalog,
                "prerequisite releases: JSON files, comma-separated (optional)",
            );
            text_row(
                ui,
                "Policy file",
                &mut state.policy_file,
                "\"planning\" and \"gates\" sections (optional: the built-in policy)",
            );
        });
    ui.horizontal(|ui| {
        if ui
            .add_enabled(
                state.loading.is_none(),
                egui::Button::new("Load catalog and policy"),
            )
            .on_hover_text(
                "Read the files; the wave and schedule fields below are reset from the policy",
            )
            .clicked()
        {
            state.load(ctx);
        }
        if state.loading.is_some() {
            ui.add(egui::Spinner::new());
        }
        ui.label(RichText::new(format!("Using {}", state.inputs.source)).color(tokens::MUTED));
    });
    if let Some(why) = &state.inputs_error {
        ui.colored_label(tokens::BAD, format!("Could not load: {why}"));
    }
}

fn cohort_text(c: &Cohort) -> String {
    match c {
        Cohort::Canary => "the canary".into(),
        Cohort::Depot { id: Some(id) } => format!("depot {id}"),
        Cohort::Depot { id: None } => "the canary's main depot".into(),
        Cohort::Region { id: Some(id) } => format!("region {id}"),
        Cohort::Region { id: None } => "the canary's main region".into(),
        Cohort::Percent { .. } => "a share of the devices".into(),
        Cohort::Filter { attribute, values } => format!("{attribute} in {}", values.join(", ")),
        Cohort::Rest => "everyone left".into(),
    }
}

fn form_ui(state: &mut PlannerState, ui: &mut egui::Ui) {
    let f = &mut state.form;
    ui.label(RichText::new("Waves (edit to re-plan)").strong());
    egui::Grid::new("planner-wave-form")
        .num_columns(5)
        .striped(true)
        .spacing([12.0, 4.0])
        .show(ui, |ui| {
            for h in ["wave", "cohort", "max devices", "percent", "soak (hours)"] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for w in &mut f.waves {
                ui.label(&w.name);
                ui.label(cohort_text(&w.cohort));
                cell_edit(
                    ui,
                    &mut w.max_devices,
                    &format!("{} max devices", w.name),
                    "no limit",
                );
                if matches!(w.cohort, Cohort::Percent { .. }) {
                    cell_edit(ui, &mut w.pct, &format!("{} percent", w.name), "1-100");
                } else {
                    ui.label("");
                }
                cell_edit(
                    ui,
                    &mut w.soak_hours,
                    &format!("{} soak hours", w.name),
                    "1 cycle",
                );
                ui.end_row();
            }
        });
    ui.add_space(4.0);
    egui::Grid::new("planner-schedule-form")
        .num_columns(2)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            text_row_sized(ui, "Canary size", &mut f.canary_size, "devices", 120.0);
            text_row_sized(ui, "Seed", &mut f.seed, "canary and wave order", 120.0);
            ui.label("Rate limit");
            ui.horizontal(|ui| {
                ui.radio_value(&mut f.rate.exponential, false, "Constant");
                ui.radio_value(&mut f.rate.exponential, true, "Exponential ramp");
            });
            ui.end_row();
            let per_minute = if f.rate.exponential {
                "Start per minute"
            } else {
                "Devices per minute"
            };
            text_row_sized(ui, per_minute, &mut f.rate.per_minute, "devices", 120.0);
            if f.rate.exponential {
                text_row_sized(ui, "Ramp factor", &mut f.rate.factor, "e.g. 2", 120.0);
                text_row_sized(
                    ui,
                    "Ramp every devices",
                    &mut f.rate.every_devices,
                    "devices offered",
                    120.0,
                );
                text_row_sized(
                    ui,
                    "Max per minute",
                    &mut f.rate.max_per_minute,
                    "devices",
                    120.0,
                );
            }
            text_row(
                ui,
                "Maintenance windows",
                &mut f.windows,
                "any time; or 22:00-06:00, or eu-central 01:00-05:00; * 22:00-06:00",
            );
            text_row_sized(
                ui,
                "Bandwidth cap (GB per hour)",
                &mut f.cap_gb_per_hour,
                "no cap",
                120.0,
            );
            text_row_sized(
                ui,
                "Data price per GB",
                &mut f.price_per_gb,
                "on metered links",
                120.0,
            );
        });
}

fn show_button(
    ui: &mut egui::Ui,
    fleet: Option<&Fleet>,
    name: String,
    devices: &[u32],
    accessible: &str,
    commands: &mut Vec<UiCommand>,
) {
    if ui
        .add_enabled(!devices.is_empty(), egui::Button::new("Show on map"))
        .accessible_name(accessible)
        .on_hover_text("Make these devices a cohort and show the map")
        .clicked()
        && let Some(fleet) = fleet
        && let Some((lat, lon)) = crate::gui::findings::centre(fleet, devices)
    {
        commands.push(UiCommand::CreateCohort {
            name,
            devices: devices.to_vec(),
        });
        commands.push(UiCommand::FocusMap {
            lat,
            lon,
            zoom: 4.0,
        });
    }
}

fn plan_ui(
    planned: &Planned,
    fleet: Option<&Fleet>,
    ui: &mut egui::Ui,
    commands: &mut Vec<UiCommand>,
) {
    let plan = &planned.plan;
    eligibility_ui(planned, fleet, ui, commands);
    ui.separator();
    canary_ui(planned, fleet, ui, commands);
    ui.separator();
    waves_ui(planned, fleet, ui, commands);
    ui.separator();
    ui.label(RichText::new("Timeline").strong());
    ui.label(
        RichText::new(
            "Days from the plan's start. Solid: the wave's offers go out; light: its soak, after which the next wave may start if the gates agree.",
        )
        .color(tokens::MUTED),
    );
    timeline_ui(&planned.timeline, ui);
    ui.separator();
    gates_ui(planned, ui);
    if !plan.warnings.is_empty() {
        ui.separator();
        ui.label(RichText::new("Warnings").strong());
        for w in &plan.warnings {
            ui.colored_label(tokens::WARN, w);
        }
    }
}

fn eligibility_ui(
    planned: &Planned,
    fleet: Option<&Fleet>,
    ui: &mut egui::Ui,
    commands: &mut Vec<UiCommand>,
) {
    let plan = &planned.plan;
    let e = &plan.eligibility;
    ui.label(RichText::new("Eligibility").strong());
    ui.label(format!(
        "{} devices, {} of a model {} is built for",
        e.devices, e.targeted, plan.release
    ));
    egui::Grid::new("planner-status")
        .num_columns(2)
        .spacing([12.0, 2.0])
        .show(ui, |ui| {
            for c in &e.by_status {
                ui.label(status_label(c.status));
                ui.label(c.devices.to_string());
                ui.end_row();
            }
        });
    if e.eligible_now_offline > 0 {
        ui.label(format!(
            "{} eligible now are offline; they are offered the release when they return.",
            e.eligible_now_offline
        ));
    }
    ui.add_space(4.0);
    ui.label(RichText::new("Reasons").strong());
    egui::Grid::new("planner-reasons")
        .num_columns(4)
        .striped(true)
        .spacing([12.0, 3.0])
        .show(ui, |ui| {
            for h in ["verdict", "devices", "reason", ""] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for (r, devices) in e.by_reason.iter().zip(&planned.reason_devices) {
                ui.label(status_label(r.status));
                ui.label(r.devices.to_string());
                ui.label(&r.reason);
                show_button(
                    ui,
                    fleet,
                    format!("{}: {}", status_label(r.status), r.reason),
                    devices,
                    &format!("Show on map: {}", r.reason),
                    commands,
                );
                ui.end_row();
            }
        });
    ui.add_space(4.0);
    ui.label(RichText::new("Prerequisite chains").strong());
    if plan.chains.is_empty() {
        ui.label(
            RichText::new("none (a catalog of prerequisite releases gives chains)")
                .color(tokens::MUTED),
        );
    }
    for c in &plan.chains {
        ui.label(format!(
            "{} devices: {} -> {} ({} per device)",
            c.devices,
            c.releases.join(" -> "),
            plan.release,
            ops::bytes_text(c.bytes_per_device)
        ));
    }
}

fn canary_ui(
    planned: &Planned,
    fleet: Option<&Fleet>,
    ui: &mut egui::Ui,
    commands: &mut Vec<UiCommand>,
) {
    let k = &planned.plan.canary;
    ui.horizontal(|ui| {
        ui.label(RichText::new("Canary").strong());
        show_button(
            ui,
            fleet,
            format!("Canary of {}", planned.release_id),
            &k.devices,
            "Show the canary on the map",
            commands,
        );
    });
    ui.label(format!(
        "Canary: {} of {} asked, from {} candidates ({} critical at peak excluded, {} outside the canary depot); {} offline, {} far from their depot",
        k.devices.len(),
        k.target_size,
        k.candidates,
        k.excluded_critical_at_peak,
        k.excluded_outside_depot,
        k.offline,
        k.far_from_depot
    ));
    let poor = k
        .strata
        .iter()
        .filter(|s| matches!(s.coverage, Coverage::Missing(_) | Coverage::BelowFloor(_)))
        .count();
    let meaningful = k
        .strata
        .iter()
        .filter(|s| s.coverage != Coverage::NotRequired)
        .count();
    if poor > 0 {
        ui.colored_label(
            tokens::BAD,
            format!(
                "Coverage is poor: {poor} of {meaningful} meaningful strata are missing or below their floor; the canary cannot test them."
            ),
        );
    } else {
        ui.colored_label(
            tokens::OK,
            format!("Every one of the {meaningful} meaningful strata is represented."),
        );
    }
    egui::Grid::new("planner-coverage")
        .num_columns(7)
        .striped(true)
        .spacing([12.0, 2.0])
        .show(ui, |ui| {
            for h in [
                "stratum",
                "value",
                "devices",
                "share",
                "eligible now",
                "canary",
                "coverage",
            ] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for s in k
                .strata
                .iter()
                .filter(|s| s.coverage != Coverage::NotRequired)
            {
                ui.label(&s.attribute);
                ui.label(&s.value);
                ui.label(s.devices.to_string());
                ui.label(format!("{:.1}%", s.share_pct));
                ui.label(s.eligible_now.to_string());
                ui.label(s.canary.to_string());
                match &s.coverage {
                    Coverage::Represented => ui.colored_label(tokens::OK, "represented"),
                    Coverage::BelowFloor(why) => {
                        ui.colored_label(tokens::WARN, format!("below floor: {why}"))
                    }
                    Coverage::Missing(why) => {
                        ui.colored_label(tokens::BAD, format!("missing: {why}"))
                    }
                    Coverage::NotRequired => ui.label(""),
                };
                ui.end_row();
            }
        });
    let minor = k.strata.len() - meaningful;
    if minor > 0 {
        ui.label(
            RichText::new(format!(
                "{minor} strata below the meaningful share are not required (in the exported JSON)."
            ))
            .color(tokens::MUTED),
        );
    }
}

fn waves_ui(
    planned: &Planned,
    fleet: Option<&Fleet>,
    ui: &mut egui::Ui,
    commands: &mut Vec<UiCommand>,
) {
    let plan = &planned.plan;
    ui.label(RichText::new("Waves as planned").strong());
    egui::Grid::new("planner-waves")
        .num_columns(9)
        .striped(true)
        .spacing([12.0, 3.0])
        .show(ui, |ui| {
            for h in [
                "wave",
                "devices",
                "soak",
                "first offer",
                "last offer",
                "bytes",
                "data cost",
                "cohort",
                "",
            ] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for w in &plan.waves {
                ui.label(&w.name);
                ui.label(w.size.to_string());
                let soak = ui.label(ops::duration_text(w.soak_secs));
                if let Some(asked) = w.soak_raised_from_secs {
                    soak.on_hover_text(format!(
                        "raised from {} to one operating cycle",
                        ops::duration_text(asked)
                    ));
                }
                ui.label(time_text(w.timing.first_offer));
                ui.label(time_text(w.timing.last_offer));
                ui.label(ops::bytes_text(w.bytes));
                ui.label(format!("{:.2}", w.data_cost));
                // A prerequisite wave's cohort already names its chain.
                let mut cohort = w.cohort.clone();
                if w.waiting_on_conditions > 0 {
                    cohort = format!("{cohort} ({} wait on conditions)", w.waiting_on_conditions);
                }
                if w.timing.unscheduled > 0 {
                    cohort = format!(
                        "{cohort}; {} not scheduled within the horizon",
                        w.timing.unscheduled
                    );
                }
                ui.label(cohort);
                show_button(
                    ui,
                    fleet,
                    format!("Wave {} of {}", w.name, planned.release_id),
                    &w.devices,
                    &format!("Show wave {} on the map", w.name),
                    commands,
                );
                ui.end_row();
            }
        });
    let s = &plan.schedule;
    ui.add_space(4.0);
    ui.label(RichText::new("Schedule and bandwidth").strong());
    ui.label(format!("Rate: {}", ops::rate_text(&s.rate)));
    if s.windows.is_empty() {
        ui.label("Windows: any time");
    } else {
        ui.label(format!(
            "Windows: {} (local time)",
            s.windows
                .iter()
                .map(|w| format!("{} {}-{}", w.region, w.start, w.end))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    for b in &s.blackouts {
        ui.label(format!(
            "Blackout: {} {} to {} ({})",
            b.region, b.from, b.until, b.reason
        ));
    }
    for x in &s.exceptions {
        ui.label(format!(
            "Exception: {} {} to {} ({}): {} devices offered under it",
            x.region, x.from, x.until, x.reason, x.devices
        ));
    }
    ui.label(format!(
        "First offer {}, last offer {}",
        time_text(s.first_offer),
        time_text(s.last_offer)
    ));
    ui.label(format!(
        "Bandwidth: total {}, on metered links {} (data cost {:.2} at {:.2} per GB); peak {} per hour (cap {})",
        ops::bytes_text(s.total_bytes),
        ops::bytes_text(s.metered_bytes),
        s.data_cost,
        s.data_price_per_gb,
        ops::bytes_text(s.peak_bytes_per_hour),
        s.bandwidth_cap_bytes_per_hour
            .map_or_else(|| "none".to_owned(), ops::bytes_text)
    ));
}

/// The waves on a time axis: the offer period as a solid bar, the soak after it lighter.
fn timeline_ui(bars: &[TimelineBar], ui: &mut egui::Ui) {
    let end_hours = bars
        .iter()
        .filter_map(|b| b.soak_end_hours.or(b.offer_hours.map(|o| o.1)))
        .fold(1.0_f64, f64::max);
    let label_w = 170.0;
    let row_h = 22.0;
    let width = ui.available_width().clamp(400.0, 1200.0);
    let height = row_h * bars.len() as f32 + 26.0;
    let (rect, response) = ui.allocate_exact_size(egui::vec2(width, height), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    let text_color = ui.visuals().text_color();
    let plot_left = rect.left() + label_w;
    // Room on the right for the last tick's label.
    let plot_w = (rect.width() - label_w - 28.0).max(50.0);
    let x_of = |h: f64| plot_left + (h / end_hours) as f32 * plot_w;
    // Day ticks (or fewer for long plans).
    let days = (end_hours / 24.0).ceil().max(1.0);
    let step = (days / 10.0).ceil().max(1.0);
    let mut d = 0.0;
    while d <= days {
        let x = x_of(d * 24.0);
        if x <= rect.right() {
            painter.line_segment(
                [
                    egui::pos2(x, rect.top()),
                    egui::pos2(x, rect.bottom() - 18.0),
                ],
                egui::Stroke::new(1.0, tokens::MUTED.gamma_multiply(0.4)),
            );
            painter.text(
                egui::pos2(x, rect.bottom() - 2.0),
                egui::Align2::CENTER_BOTTOM,
                format!("day {d:.0}"),
                egui::FontId::proportional(11.0),
                tokens::MUTED,
            );
        }
        d += step;
    }
    for (i, b) in bars.iter().enumerate() {
        let y = rect.top() + i as f32 * row_h;
        painter.text(
            egui::pos2(rect.left(), y + row_h / 2.0),
            egui::Align2::LEFT_CENTER,
            format!("{} ({})", b.name, b.devices),
            egui::FontId::proportional(13.0),
            text_color,
        );
        let Some((from, to)) = b.offer_hours else {
            continue;
        };
        let bar = |a: f64, z: f64| {
            egui::Rect::from_min_max(
                egui::pos2(x_of(a), y + 4.0),
                egui::pos2(x_of(z).max(x_of(a) + 2.0), y + row_h - 4.0),
            )
        };
        if let Some(soak) = b.soak_end_hours {
            painter.rect_filled(bar(to, soak), 2.0, tokens::OK.gamma_multiply(0.35));
        }
        painter.rect_filled(bar(from, to), 2.0, tokens::OK);
    }
    let summary = bars
        .iter()
        .map(|b| match (b.offer_hours, b.soak_end_hours) {
            (Some((a, z)), Some(s)) => format!(
                "{}: offered from hour {a:.1} to {z:.1}, soaks until hour {s:.1}",
                b.name
            ),
            _ => format!("{}: not scheduled", b.name),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let response = response.on_hover_text(summary);
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Plan timeline"));
}

fn gates_ui(planned: &Planned, ui: &mut egui::Ui) {
    ui.label(RichText::new("Gates (read-only)").strong());
    ui.label(
        RichText::new(
            "From the policy file's \"gates\" section, or the defaults; edit them there. Each is judged against the not-yet-updated baseline (docs/GATES.md).",
        )
        .color(tokens::MUTED),
    );
    // The plan's JSON carries the gates already serialised (made on the planner thread).
    let Some(obj) = planned
        .json
        .get("gates")
        .and_then(serde_json::Value::as_object)
    else {
        return;
    };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    ui.horizontal_wrapped(|ui| {
        for (k, v) in obj.iter().filter(|(_, v)| !v.is_object() && !v.is_array()) {
            ui.label(format!("{k}: {}", text(v)));
            ui.separator();
        }
        if let Some(strata) = obj.get("stratify_by").and_then(serde_json::Value::as_array) {
            ui.label(format!(
                "stratify_by: {}",
                strata.iter().map(text).collect::<Vec<_>>().join(", ")
            ));
        }
    });
    egui::Grid::new("planner-gates")
        .num_columns(6)
        .striped(true)
        .spacing([12.0, 2.0])
        .show(ui, |ui| {
            for h in [
                "metric",
                "enabled",
                "max ratio",
                "min abs diff",
                "baseline ratio",
                "on fail",
            ] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for (k, g) in obj.iter().filter(|(_, v)| v.get("max_ratio").is_some()) {
                ui.label(k);
                for f in [
                    "enabled",
                    "max_ratio",
                    "min_abs_diff",
                    "baseline_ratio",
                    "on_fail",
                ] {
                    ui.label(text(&g[f]));
                }
                ui.end_row();
            }
        });
    for note in &planned.gate_notes {
        ui.colored_label(tokens::WARN, note);
    }
}

fn save_ui(
    state: &mut PlannerState,
    ui: &mut egui::Ui,
    ctx: &egui::Context,
    cache: Option<PathBuf>,
    now: Timestamp,
    current: bool,
) {
    ui.label(RichText::new("Save or export").strong());
    let busy = state.saving.is_some();
    let mut browse = None;
    let mut export = false;
    let mut save = false;
    ui.horizontal(|ui| {
        if ui
            .add_enabled(current && !busy, egui::Button::new("Save plan"))
            .on_hover_text("Store this plan in the cache with an audit entry; nothing is sent")
            .clicked()
        {
            save = true;
        }
        let l = ui.label("Plan file");
        ui.add(
            egui::TextEdit::singleline(&mut state.plan_file)
                .hint_text("where to write the plan JSON")
                .desired_width(360.0),
        )
        .labelled_by(l.id);
        if ui
            .add_enabled(state.browsing.is_none(), egui::Button::new("Browse…"))
            .on_hover_text("Pick the plan file with a save dialog")
            .clicked()
            && let Some((_, Ok(p))) = &state.planned
        {
            browse = Some(format!("{}.plan.json", p.release_id));
        }
        if ui
            .add_enabled(current && !busy, egui::Button::new("Export plan file"))
            .on_hover_text("Write the plan as `convoy plan --json` prints it, for `convoy rollout run --plan FILE`")
            .clicked()
        {
            export = true;
        }
        if busy {
            ui.add(egui::Spinner::new());
        }
    });
    if save {
        state.save(ctx, cache, now);
    }
    if export {
        state.export(ctx);
    }
    if let Some(name) = browse {
        state.browse(ctx, name);
    }
    match &state.saved {
        Some(Ok(text)) => {
            ui.colored_label(tokens::OK, text);
        }
        Some(Err(why)) => {
            ui.colored_label(tokens::BAD, why);
        }
        None => {}
    }
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
    fn the_default_form_gives_the_default_policy_back() {
        let policy = PlanningPolicy::default();
        let form = form_of(&policy, 7);
        let (back, seed) = apply_form(&form, &policy).expect("valid");
        assert_eq!(back, policy);
        assert_eq!(seed, 7);
    }

    #[test]
    fn edits_reach_the_policy_and_bad_fields_are_named() {
        let policy = PlanningPolicy::default();
        let mut form = form_of(&policy, 1);
        form.canary_size = "30".into();
        form.waves[1].max_devices = "200".into();
        form.waves[1].soak_hours = "48".into();
        let pct = form
            .waves
            .iter()
            .position(|w| matches!(w.cohort, Cohort::Percent { .. }))
            .expect("a percent wave");
        form.waves[pct].pct = "25".into();
        form.windows = "22:00-06:00; eu-central 01:00-05:00".into();
        form.rate.exponential = false;
        form.rate.per_minute = "40".into();
        form.cap_gb_per_hour = "2.5".into();
        form.price_per_gb = "0.8".into();
        let (p, _) = apply_form(&form, &policy).expect("valid");
        assert_eq!(p.canary.size, 30);
        assert_eq!(p.waves[1].max_devices, Some(200));
        assert_eq!(p.waves[1].soak_secs, Some(48 * 3600));
        assert_eq!(p.waves[pct].cohort, Cohort::Percent { pct: 25.0 });
        assert_eq!(p.rate, RateLimit::Constant { per_minute: 40 });
        assert_eq!(p.bandwidth_cap_bytes_per_hour, Some(2_500_000_000));
        assert_eq!(p.data_price_per_gb, 0.8);
        assert_eq!(p.windows.len(), 2);
        assert_eq!(p.windows[0].region, "*");
        assert_eq!(p.windows[1].region, "eu-central");
        assert_eq!(p.windows[1].start, LocalTime(60));
        // The form made from it reads the same.
        assert_eq!(
            form_of(&p, 1).windows,
            "* 22:00-06:00; eu-central 01:00-05:00"
        );
        let check = |edit: fn(&mut PolicyForm), field: &str| {
            let mut f = form_of(&policy, 1);
            edit(&mut f);
            let name = f.waves.get(1).map(|w| w.name.clone()).unwrap_or_default();
            let e = apply_form(&f, &policy).expect_err(field);
            assert_eq!(e.field, field.replace("WAVE", &name), "{e}");
        };
        check(|f| f.canary_size = "many".into(), "Canary size");
        check(|f| f.waves[1].max_devices = "-3".into(), "WAVE max devices");
        check(|f| f.waves[1].soak_hours = "9999".into(), "WAVE soak hours");
        check(|f| f.windows = "22:00".into(), "Maintenance windows");
        check(|f| f.windows = "25:00-06:00".into(), "Maintenance windows");
        check(
            |f| f.cap_gb_per_hour = "0".into(),
            "Bandwidth cap (GB per hour)",
        );
        check(
            |f| {
                f.rate.exponential = false;
                f.rate.per_minute = "fast".into();
            },
            "Devices per minute",
        );
        check(|f| f.rate.per_minute = "fast".into(), "Start per minute");
    }

    #[test]
    fn reasons_map_to_exactly_their_devices_and_the_timeline_follows_the_waves() {
        let fleet = generate(&SynthOptions {
            devices: 600,
            seed: 5,
            now: NOW,
        });
        let inputs =
            load_inputs(&fixture("catalog.json").display().to_string(), "").expect("inputs");
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
        let e = load_inputs("/nonexistent/catalog.json", "").expect_err("missing");
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
        let e = load_inputs("", &p.display().to_string()).expect_err("bad policy");
        assert!(format!("{e:#}").contains("\"planning\" section"), "{e:#}");
    }
}
