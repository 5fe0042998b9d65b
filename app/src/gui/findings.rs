//! Finding intake and scoring: a form for one finding, its CVSS vector scored and explained as
//! it is typed, the risk scorecard against the loaded fleet (every line with its source, the
//! tier and the recommendation), saving the finding with its scorecard to the cache, the
//! findings already stored, and the affected devices made into a cohort on the map.
//!
//! The scoring is `convoy_core::{cvss, risk}` with the policy of the view's editor (the
//! built-in one until a policy is applied or loaded), as `convoy score finding [--policy]`
//! does; storing is `store::query::record_finding`, the code behind
//! `POST /findings`. Turning the form into a [`Finding`] and picking the affected devices are
//! plain functions with their own tests; the view only draws.
//!
//! A stored finding can be opened back into the form. Scoring runs on a scoring worker thread
//! with its own copy of the fleet as loaded (made once per load, when the view first
//! shows it; status from the link after that does not change the copy); the cache is read and
//! written on another worker thread. Only parsing the CVSS vector runs on the UI thread.

use anyhow::{Context, Result};
use convoy_core::cvss::Cvss;
use convoy_core::fleet::Fleet;
use convoy_core::requirement::Requirement;
use convoy_core::risk::{
    self, Affected, Anomaly, Classification, Exploitation, Finding, Layer, Rollback, Scorecard,
    ScoringPolicy,
};
use convoy_core::time::Timestamp;
use egui::RichText;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use crate::gui::app::UiCommand;
use crate::gui::tokens;
use crate::gui::view::{Commands, ViewContext, text_row};
use crate::gui::worker::FleetWorker;
use crate::store::Store;
use crate::store::query::FindingRow;

/// The actor the audit log records for findings saved from the console (which has no operator
/// login yet).
pub const CONSOLE_ACTOR: &str = "console";

/// The form as typed. Lists are comma-separated; version requirements are separated by `;`
/// (a requirement such as `hw_rev in B,C` holds commas itself).
#[derive(Debug, Clone, PartialEq)]
pub struct FindingForm {
    pub id: String,
    pub title: String,
    pub classification: Classification,
    pub cvss: String,
    pub public_poc: bool,
    pub exploited: bool,
    pub remote: bool,
    pub models: String,
    pub hw_revs: String,
    /// Affected versions: component requirements such as `firmware>=2.3.0; firmware<2.4.0`.
    pub versions: String,
    pub device_ids: String,
    pub regulatory: String,
    pub contractual: String,
    pub ab_slot: bool,
    pub layer: Layer,
    /// Anomaly rate and its baseline, events per 1,000 device-days; both empty for none.
    pub anomaly_rate: String,
    pub anomaly_baseline: String,
}

impl Default for FindingForm {
    fn default() -> Self {
        let rollback = Rollback::default();
        Self {
            id: String::new(),
            title: String::new(),
            classification: Classification::Security,
            cvss: String::new(),
            public_poc: false,
            exploited: false,
            remote: false,
            models: String::new(),
            hw_revs: String::new(),
            versions: String::new(),
            device_ids: String::new(),
            regulatory: String::new(),
            contractual: String::new(),
            ab_slot: rollback.ab_slot,
            layer: rollback.layer,
            anomaly_rate: String::new(),
            anomaly_baseline: String::new(),
        }
    }
}

/// The form that describes `finding` (the inverse of [`build_finding`]).
pub fn form_of(finding: &Finding) -> FindingForm {
    let join = |items: &[String]| items.join(", ");
    let rate = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    FindingForm {
        id: finding.id.clone(),
        title: finding.title.clone(),
        classification: finding.classification,
        cvss: finding.cvss.as_ref().map(Cvss::vector).unwrap_or_default(),
        public_poc: finding.exploitation.public_poc,
        exploited: finding.exploitation.active,
        remote: finding.remote,
        models: join(&finding.affected.models),
        hw_revs: join(&finding.affected.hw_revs),
        versions: finding
            .affected
            .requires
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
        device_ids: join(&finding.affected.device_ids),
        regulatory: finding.regulatory_impact.clone().unwrap_or_default(),
        contractual: finding.contractual_impact.clone().unwrap_or_default(),
        ab_slot: finding.rollback.ab_slot,
        layer: finding.rollback.layer,
        anomaly_rate: rate(finding.anomaly.map(|a| a.rate_per_1000_device_days)),
        anomaly_baseline: rate(finding.anomaly.map(|a| a.baseline_per_1000_device_days)),
    }
}

/// A form field that cannot become part of a finding, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's label in the form.
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The CVSS vector field as scored while it is typed.
#[derive(Debug, Clone, PartialEq)]
pub enum CvssPreview {
    /// Nothing typed: the finding has no CVSS vector.
    Absent,
    /// `headline` is `CVSS 3.1 base score 9.8 (Critical)`; `explain` one line per metric.
    Valid {
        cvss: Cvss,
        headline: String,
        explain: Vec<String>,
    },
    /// Why the vector is invalid; the message names the bad part or metric.
    Invalid(String),
}

/// Scores and explains a CVSS vector as typed.
pub fn cvss_preview(text: &str) -> CvssPreview {
    if text.trim().is_empty() {
        return CvssPreview::Absent;
    }
    match Cvss::parse(text.trim()) {
        Ok(cvss) => CvssPreview::Valid {
            headline: crate::ops::findings::cvss_headline(&cvss),
            explain: cvss.explain(),
            cvss,
        },
        Err(e) => CvssPreview::Invalid(e.to_string()),
    }
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn optional(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn rate(field: &'static str, text: &str) -> Result<f64, FieldError> {
    text.trim().parse::<f64>().map_err(|_| FieldError {
        field,
        message: format!(
            "{:?} is not a number of events per 1,000 device-days",
            text.trim()
        ),
    })
}

/// The finding the form describes, or the first field that cannot be used. The finding is
/// also checked as the scorer checks it ([`Finding::validate`]).
pub fn build_finding(form: &FindingForm) -> Result<Finding, FieldError> {
    let cvss = match cvss_preview(&form.cvss) {
        CvssPreview::Absent => None,
        CvssPreview::Valid { cvss, .. } => Some(cvss),
        CvssPreview::Invalid(message) => {
            return Err(FieldError {
                field: "CVSS vector",
                message,
            });
        }
    };
    let requires = form
        .versions
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|r| {
            r.parse::<Requirement>().map_err(|e| FieldError {
                field: "Affected versions",
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let anomaly = match (form.anomaly_rate.trim(), form.anomaly_baseline.trim()) {
        ("", "") => None,
        (r, b) => Some(Anomaly {
            rate_per_1000_device_days: rate("Anomaly rate", r)?,
            baseline_per_1000_device_days: rate("Anomaly baseline", b)?,
        }),
    };
    let finding = Finding {
        id: form.id.trim().to_owned(),
        title: form.title.trim().to_owned(),
        classification: form.classification,
        cvss,
        exploitation: Exploitation {
            public_poc: form.public_poc,
            active: form.exploited,
        },
        remote: form.remote,
        affected: Affected {
            models: list(&form.models),
            hw_revs: list(&form.hw_revs),
            requires,
            device_ids: list(&form.device_ids),
        },
        regulatory_impact: optional(&form.regulatory),
        contractual_impact: optional(&form.contractual),
        rollback: Rollback {
            ab_slot: form.ab_slot,
            layer: form.layer,
        },
        anomaly,
        // The console's form has no detection time yet (issue 20): the file's or the API's.
        detected_at: None,
    };
    finding.validate().map_err(|e| FieldError {
        field: match &e {
            risk::RiskError::InvalidFinding { field, .. } => field_label(field),
            _ => "Finding",
        },
        message: e.to_string(),
    })?;
    Ok(finding)
}

/// The form's label for a field the scorer names.
fn field_label(field: &str) -> &'static str {
    match field {
        "id" => "Finding id",
        "affected" => "Affected devices",
        "affected.requires" => "Affected versions",
        f if f.starts_with("anomaly") => "Anomaly rate",
        _ => "Finding",
    }
}

/// The fleet indices of the devices `finding` affects, ascending.
pub fn affected_devices(finding: &Finding, fleet: &Fleet) -> Vec<u32> {
    let matcher = finding.matcher();
    fleet
        .devices
        .iter()
        .enumerate()
        .filter(|(_, d)| matcher.matches(d))
        .map(|(i, _)| i as u32)
        .collect()
}

/// The form scored against the fleet: the finding, its scorecard and the fleet indices of the
/// devices it affects (ascending), or the first field that stops scoring.
pub type Scored = Result<(Finding, Scorecard, Vec<u32>), FieldError>;

/// Scores the form against `fleet` with `policy` at `now`.
pub fn evaluate(
    form: &FindingForm,
    fleet: &Fleet,
    policy: &ScoringPolicy,
    now: Timestamp,
) -> Scored {
    let finding = build_finding(form)?;
    let card = risk::score(&finding, fleet, policy, now).map_err(|e| FieldError {
        field: "Finding",
        message: e.to_string(),
    })?;
    let affected = affected_devices(&finding, fleet);
    Ok((finding, card, affected))
}

/// Scoring is one pass over the fleet (about 0.8 s at 1,000,000 devices in a release build,
/// docs/BENCHMARKS.md), so it runs on the `convoy-scoring` thread, never on the UI thread. It
/// keeps its own copy of the fleet and scores only the newest form when several are queued.
type Scorer = FleetWorker<ScoreJob, Scored>;

/// What the scoring worker is asked: the form, the policy, and the time to score at.
type ScoreJob = (Box<FindingForm>, Arc<ScoringPolicy>, Timestamp);

fn spawn_scorer(ctx: &egui::Context) -> std::io::Result<Scorer> {
    FleetWorker::spawn(
        "convoy-scoring",
        ctx,
        |(form, policy, now): ScoreJob, fleet| evaluate(&form, fleet, &policy, now),
    )
}

/// The scoring policy the view scores with, and its editor: the policy's `scoring` section as
/// JSON, applied only when it parses and validates (a mistake names the field and the policy in
/// use stays), loaded from or saved to a policy file. Every scorecard records the digest of the
/// policy that made it ([`ScoringPolicy::digest`]).
#[derive(Debug)]
pub struct PolicyEditor {
    /// The policy in use; changed only through [`PolicyEditor::apply`], `load` and `reset`,
    /// which keep its digest.
    pub policy: Arc<ScoringPolicy>,
    /// `policy`'s digest, computed once per change rather than every frame.
    digest: String,
    /// Where the policy in use came from, in words.
    pub source: String,
    /// The JSON being edited.
    pub text: String,
    /// The policy file path typed for loading and saving.
    pub path: String,
    /// The last action's outcome.
    pub message: Option<Result<String, String>>,
}

impl Default for PolicyEditor {
    fn default() -> Self {
        let policy = ScoringPolicy::default();
        Self {
            text: policy_json(&policy),
            digest: policy.digest(),
            policy: Arc::new(policy),
            source: "built-in".to_owned(),
            path: String::new(),
            message: None,
        }
    }
}

/// The policy as the editor shows it: pretty JSON.
fn policy_json(policy: &ScoringPolicy) -> String {
    serde_json::to_string_pretty(policy).unwrap_or_default()
}

/// Parses and checks the editor's JSON: the error names the field (`tiers.tier0_min_points`)
/// or the line and column of a syntax error.
pub fn parse_policy_text(text: &str) -> Result<ScoringPolicy, String> {
    convoy_core::strict_json::check(text.as_bytes()).map_err(|e| e.to_string())?;
    let mut de = serde_json::Deserializer::from_str(text);
    let policy: ScoringPolicy = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("{}", e.inner())
        } else {
            format!("{path}: {}", e.inner())
        }
    })?;
    policy.validate().map_err(|e| e.to_string())?;
    Ok(policy)
}

/// Writes `policy` as the `scoring` section of the policy file at `path`, keeping its other
/// sections (planning, gates) if the file exists; written beside it and renamed into place, so
/// a failure leaves the old file whole.
pub fn save_policy_file(path: &std::path::Path, policy: &ScoringPolicy) -> Result<()> {
    let mut object = match std::fs::read_to_string(path) {
        Ok(text) => match convoy_core::strict_json::from_str::<serde_json::Value>(&text)
            .with_context(|| format!("{} is not JSON; not overwritten", path.display()))?
        {
            serde_json::Value::Object(o) => o,
            _ => anyhow::bail!(
                "{} is not a JSON object of policy sections; not overwritten",
                path.display()
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    object.insert("scoring".to_owned(), serde_json::to_value(policy)?);
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(object))? + "\n";
    crate::files::write_file(path, text.as_bytes(), crate::files::FileMode::Public)
}

impl PolicyEditor {
    /// The digest of the policy in use ([`ScoringPolicy::digest`]).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    fn use_policy(&mut self, policy: ScoringPolicy) {
        self.digest = policy.digest();
        self.policy = Arc::new(policy);
    }

    /// Applies the editor's JSON; the policy in use changes only if it is valid.
    pub fn apply(&mut self) {
        match parse_policy_text(&self.text) {
            Ok(p) => {
                self.use_policy(p);
                let digest = self.digest.clone();
                self.source = if digest == ScoringPolicy::default().digest() {
                    "built-in".to_owned()
                } else {
                    "edited in the console".to_owned()
                };
                self.message = Some(Ok(format!("Applied: policy {digest}")));
            }
            Err(e) => self.message = Some(Err(format!("Not applied: {e}"))),
        }
    }

    /// Loads the `scoring` section of the policy file at `path` (as `convoy score finding
    /// --policy` reads it).
    pub fn load(&mut self) {
        let path = std::path::PathBuf::from(self.path.trim());
        match crate::ops::findings::load_policy(&path) {
            Ok(p) => {
                self.text = policy_json(&p);
                self.use_policy(p);
                self.message = Some(Ok(format!(
                    "Loaded {} (policy {})",
                    path.display(),
                    self.digest
                )));
                self.source = path.display().to_string();
            }
            Err(e) => self.message = Some(Err(format!("Not loaded: {e:#}"))),
        }
    }

    /// Saves the policy in use to the file at `path`.
    pub fn save(&mut self) {
        let path = std::path::PathBuf::from(self.path.trim());
        self.message = Some(
            save_policy_file(&path, &self.policy)
                .map(|()| format!("Saved policy {} to {}", self.digest, path.display()))
                .map_err(|e| format!("Not saved: {e:#}")),
        );
    }

    /// Back to the built-in policy.
    pub fn reset(&mut self) {
        *self = Self {
            path: std::mem::take(&mut self.path),
            message: Some(Ok("Back to the built-in policy".to_owned())),
            ..Self::default()
        };
    }
}

/// What the cache worker reports.
#[derive(Debug)]
enum Reply {
    Saved {
        id: String,
        rows: Vec<FindingRow>,
    },
    Listed(Vec<FindingRow>),
    /// A stored finding, read back to fill the form.
    Opened(Box<Finding>),
    SaveFailed(String),
    OpenFailed(String),
    ListFailed(String),
}

/// The findings view's state, for the session.
#[derive(Debug, Default)]
pub struct FindingsState {
    pub form: FindingForm,
    /// The CVSS field as last previewed (parsing a vector is cheap: it runs as it is typed).
    cvss_for: Option<String>,
    pub cvss: Option<CvssPreview>,
    scorer: Option<Scorer>,
    /// Why the scoring worker is not running, if its thread could not start.
    scorer_error: Option<String>,
    /// Whether the scoring worker has the fleet as last loaded.
    fleet_sent: bool,
    /// The form and policy (by digest) last sent to the scoring worker, and their number.
    sent: Option<(FindingForm, String, u64)>,
    /// The scoring policy and its editor.
    pub policy: PolicyEditor,
    /// The scoring worker's newest answer and the number of the form it scored.
    pub scored: Option<(u64, Scored)>,
    /// The findings in the cache, as last read; `None` until the first read answers.
    pub stored: Option<Result<Vec<FindingRow>, String>>,
    /// The last save's outcome, shown under the button.
    pub saved: Option<Result<String, String>>,
    worker: Option<Receiver<Reply>>,
    /// Whether the list was asked for since the view opened.
    listed: bool,
}

/// What the findings view asks the console for; each starts the view's cache worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingsCommand {
    /// Read the stored findings again.
    Reload,
    /// Read this stored finding into the form.
    Open(String),
    /// Store the finding and the scorecard shown (the form's, scored) in the cache.
    Save,
    /// Load the scoring policy from the policy file typed in the editor.
    LoadPolicy,
    /// Save the scoring policy in use to the policy file typed in the editor.
    SavePolicy,
}

impl FindingsState {
    /// Does what the view asked for, on the state's cache worker: `cache` is the fleet cache.
    pub fn apply(
        &mut self,
        ctx: &egui::Context,
        command: FindingsCommand,
        cache: Option<PathBuf>,
        now: Timestamp,
    ) {
        match command {
            FindingsCommand::Reload => self.refresh(ctx, cache),
            FindingsCommand::Open(id) => self.open(ctx, cache, id),
            // A small file, read or written on the UI thread as the view did before (not on a
            // worker yet).
            FindingsCommand::LoadPolicy => self.policy.load(),
            FindingsCommand::SavePolicy => self.policy.save(),
            FindingsCommand::Save => {
                // The scorecard the view showed: commands apply before the workers' answers
                // are taken, so it is still the one on screen.
                let Some((_, Ok((finding, card, _)))) = &self.scored else {
                    return;
                };
                let (finding, card) = (finding.clone(), card.clone());
                self.save(ctx, cache, &finding, &card, now);
            }
        }
    }

    /// What the console does before the view draws: lists the stored findings the first time,
    /// and sends the scoring worker the fleet (`fleet`, the console's shared copy) and a changed
    /// form.
    pub fn prepare(
        &mut self,
        ctx: &egui::Context,
        cache: Option<PathBuf>,
        fleet: Option<Arc<Fleet>>,
        now: Timestamp,
    ) {
        if !self.listed && !self.busy() {
            self.refresh(ctx, cache);
        }
        if let Some(fleet) = fleet {
            self.sync_scoring(ctx, fleet, now);
        }
    }

    /// A new fleet was loaded: the scoring worker needs a copy of it, and old scores are void.
    pub fn fleet_reloaded(&mut self) {
        self.fleet_sent = false;
        self.sent = None;
        self.scored = None;
    }

    /// Whether the scorecard shown is for the form as it is now.
    pub fn score_is_current(&self) -> bool {
        matches!((&self.sent, &self.scored), (Some((form, digest, sent)), Some((seq, _)))
            if sent == seq && *form == self.form && *digest == self.policy.digest())
    }

    /// Sends the scoring worker the fleet (once per load: a copy, the one fleet-sized step of
    /// this view on the UI thread) and the form when it changed; takes its answers.
    fn sync_scoring(&mut self, ctx: &egui::Context, fleet: Arc<Fleet>, now: Timestamp) {
        if self.cvss_for.as_deref() != Some(self.form.cvss.as_str()) {
            self.cvss = Some(cvss_preview(&self.form.cvss));
            self.cvss_for = Some(self.form.cvss.clone());
        }
        if self.scorer.is_none() && self.scorer_error.is_none() {
            match spawn_scorer(ctx) {
                Ok(s) => self.scorer = Some(s),
                Err(e) => {
                    self.scorer_error = Some(format!("could not start the scoring thread: {e}"));
                }
            }
        }
        let Some(scorer) = &self.scorer else {
            return;
        };
        for answer in scorer.answers() {
            self.scored = Some(answer);
        }
        if !self.fleet_sent {
            if !scorer.send_fleet(fleet) {
                return;
            }
            self.fleet_sent = true;
        }
        let digest = self.policy.digest();
        if self
            .sent
            .as_ref()
            .is_none_or(|(form, d, _)| *form != self.form || d != digest)
        {
            let seq = self.sent.as_ref().map_or(1, |(_, _, seq)| seq + 1);
            let job = (
                Box::new(self.form.clone()),
                Arc::clone(&self.policy.policy),
                now,
            );
            // A full queue is tried again next frame.
            if scorer.send(seq, job) {
                self.sent = Some((self.form.clone(), digest.to_owned(), seq));
            }
        }
    }

    /// Whether the cache worker is busy.
    pub fn busy(&self) -> bool {
        self.worker.is_some()
    }

    /// Takes the cache worker's answer, if it has one.
    pub fn poll(&mut self) {
        let Some(rx) = &self.worker else {
            return;
        };
        let reply = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => {
                Reply::ListFailed("the findings worker stopped without an answer".into())
            }
        };
        self.worker = None;
        match reply {
            Reply::Saved { id, rows } => {
                self.saved = Some(Ok(format!("Saved finding {id} with its scorecard")));
                self.stored = Some(Ok(rows));
            }
            Reply::Listed(rows) => self.stored = Some(Ok(rows)),
            Reply::Opened(finding) => {
                self.form = form_of(&finding);
                self.saved = Some(Ok(format!("Opened finding {} from the cache", finding.id)));
            }
            Reply::SaveFailed(why) => self.saved = Some(Err(format!("Could not save: {why}"))),
            Reply::OpenFailed(why) => self.saved = Some(Err(format!("Could not open: {why}"))),
            Reply::ListFailed(why) => self.stored = Some(Err(why)),
        }
    }

    /// Runs `job` on a worker thread; an error becomes `failed(why)`.
    fn spawn(
        &mut self,
        ctx: &egui::Context,
        failed: fn(String) -> Reply,
        job: impl FnOnce() -> Result<Reply> + Send + 'static,
    ) {
        let started = crate::gui::worker::spawn_job(ctx, "convoy-findings", move || {
            job().unwrap_or_else(|e| failed(format!("{e:#}")))
        });
        match started {
            Ok(rx) => self.worker = Some(rx),
            Err(e) => {
                self.saved = Some(Err(format!(
                    "Could not start the findings worker thread: {e}"
                )));
            }
        }
    }

    /// Reads the stored findings on the worker.
    fn refresh(&mut self, ctx: &egui::Context, cache: Option<PathBuf>) {
        self.listed = true;
        let Some(cache) = cache else {
            self.stored = Some(Err("no fleet cache is open".into()));
            return;
        };
        self.spawn(ctx, Reply::ListFailed, move || {
            let store = open_cache(&cache)?;
            Ok(Reply::Listed(crate::store::query::findings(&store)?))
        });
    }

    /// Reads the stored finding `id` on the worker and fills the form with it.
    fn open(&mut self, ctx: &egui::Context, cache: Option<PathBuf>, id: String) {
        let Some(cache) = cache else {
            return;
        };
        self.spawn(ctx, Reply::OpenFailed, move || {
            let store = open_cache(&cache)?;
            let record = crate::store::query::finding(&store, &id)?
                .with_context(|| format!("finding {id} is no longer in the cache"))?;
            let finding: Finding = serde_json::from_value(record.finding)
                .with_context(|| format!("reading stored finding {id}"))?;
            Ok(Reply::Opened(Box::new(finding)))
        });
    }

    /// Stores `finding` with `card` on the worker, then reads the list back.
    fn save(
        &mut self,
        ctx: &egui::Context,
        cache: Option<PathBuf>,
        finding: &Finding,
        card: &Scorecard,
        now: Timestamp,
    ) {
        let Some(cache) = cache else {
            self.saved = Some(Err(
                "Could not save: no fleet cache is open to save into".into()
            ));
            return;
        };
        let id = finding.id.clone();
        let finding = serde_json::to_value(finding);
        let card = serde_json::to_value(card);
        self.saved = None;
        self.spawn(ctx, Reply::SaveFailed, move || {
            let (finding, card) = (finding?, card?);
            let store = open_cache(&cache)?;
            crate::store::query::record_finding(&store, &finding, &id, &card, CONSOLE_ACTOR, now)
                .with_context(|| format!("saving finding {id} to {}", cache.display()))?;
            Ok(Reply::Saved {
                id,
                rows: crate::store::query::findings(&store)?,
            })
        });
    }
}

fn open_cache(cache: &std::path::Path) -> Result<Store> {
    Store::open_existing(cache)
        .with_context(|| format!("opening the fleet cache {}", cache.display()))
}

/// The scoring policy's editor, folded by default.
fn policy_ui(editor: &mut PolicyEditor, ui: &mut egui::Ui, commands: &mut Vec<UiCommand>) {
    egui::CollapsingHeader::new(format!(
        "Scoring policy: {} ({})",
        editor.source,
        editor.digest()
    ))
    .id_salt("scoring-policy")
    .show(ui, |ui| {
        ui.label(
            RichText::new(
                "The weights and tier thresholds every finding is scored with (docs/RISK.md). Edit the JSON and apply it: a mistake names the field and the policy in use stays. Each scorecard records the policy's digest.",
            )
            .color(tokens::MUTED),
        );
        let l = ui.label("Policy JSON");
        ui.add(
            egui::TextEdit::multiline(&mut editor.text)
                .code_editor()
                .desired_rows(12)
                .desired_width(f32::INFINITY),
        )
        .labelled_by(l.id);
        ui.horizontal(|ui| {
            if ui.button("Apply policy").clicked() {
                editor.apply();
            }
            if ui.button("Reset to built-in").clicked() {
                editor.reset();
            }
        });
        ui.horizontal(|ui| {
            let l = ui.label("Policy file:");
            ui.add(
                egui::TextEdit::singleline(&mut editor.path)
                    .hint_text("policy.json (its \"scoring\" section)")
                    .desired_width(320.0),
            )
            .labelled_by(l.id);
            let has_path = !editor.path.trim().is_empty();
            if ui
                .add_enabled(has_path, egui::Button::new("Load policy"))
                .clicked()
            {
                commands.push(UiCommand::Findings(FindingsCommand::LoadPolicy));
            }
            if ui
                .add_enabled(has_path, egui::Button::new("Save policy"))
                .on_hover_text("Writes the policy in use as the file's \"scoring\" section, keeping its other sections")
                .clicked()
            {
                commands.push(UiCommand::Findings(FindingsCommand::SavePolicy));
            }
        });
        match &editor.message {
            Some(Ok(m)) => {
                ui.colored_label(tokens::OK, m);
            }
            Some(Err(m)) => {
                ui.colored_label(tokens::BAD, m);
            }
            None => {}
        }
    });
}

/// Draws the findings view.
pub fn findings_ui(
    state: &mut FindingsState,
    cx: &ViewContext<'_>,
    out: &mut Commands,
    ui: &mut egui::Ui,
) {
    let mut commands = Vec::new();
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.heading("Findings");
        ui.label(
            RichText::new(format!(
                "Describe a defect; it is scored against the loaded fleet as you type, with the {} scoring policy ({}).",
                state.policy.source,
                state.policy.digest()
            ))
            .color(tokens::MUTED),
        );
        ui.add_space(6.0);
        policy_ui(&mut state.policy, ui, &mut commands);
        ui.add_space(6.0);
        form_ui(&mut state.form, ui);
        ui.add_space(8.0);
        let busy = state.busy();
        let current = state.score_is_current();
        if let Some(cvss) = &state.cvss {
            cvss_ui(cvss, ui);
            ui.add_space(8.0);
        }
        if let Some(why) = &state.scorer_error {
            ui.colored_label(tokens::BAD, why);
        }
        match &state.scored {
            None => {
                ui.horizontal(|ui| {
                    ui.add(egui::Spinner::new());
                    ui.label("Scoring against the fleet…");
                });
            }
            Some((_, Ok((finding, card, affected)))) => {
                if !current {
                    ui.horizontal(|ui| {
                        ui.add(egui::Spinner::new());
                        ui.label("Scoring the changed form; the scorecard below is for the previous one.");
                    });
                }
                scorecard_ui(card, &state.policy, ui);
                ui.add_space(6.0);
                ui.horizontal(|ui| {
                    if ui
                        .add_enabled(!busy && current, egui::Button::new("Save finding"))
                        .on_hover_text("Store the finding and this scorecard in the cache")
                        .clicked()
                    {
                        commands.push(UiCommand::Findings(FindingsCommand::Save));
                    }
                    if busy {
                        ui.add(egui::Spinner::new());
                    }
                    if ui
                        .add_enabled(
                            current && !affected.is_empty(),
                            egui::Button::new("Show affected devices on map"),
                        )
                        .on_hover_text(
                            "Make the affected devices a cohort, ring them on the map and show it",
                        )
                        .clicked()
                        && let Some(model) = cx.model
                        && let Some((lat, lon)) = centre(model.fleet.devices.base(), affected)
                    {
                        commands.push(UiCommand::CreateCohort {
                            name: format!("Affected by {}", finding.id),
                            devices: affected.clone(),
                        });
                        // Centring alone left the 1,171 devices to be found by eye (issue 19).
                        commands.push(UiCommand::Map(crate::gui::map::MapCommand::Highlight {
                            name: format!("devices affected by {}", finding.id),
                            devices: affected.clone(),
                        }));
                        commands.push(UiCommand::FocusMap {
                            lat,
                            lon,
                            zoom: 4.0,
                        });
                    }
                });
            }
            Some((_, Err(e))) => {
                ui.colored_label(tokens::BAD, format!("Cannot score yet: {e}"));
            }
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
        ui.separator();
        stored_ui(state, ui, &mut commands);
    });
    out.extend(commands);
}

/// The mean position of `devices`, or `None` if there are none (or they are not in `fleet`).
pub(crate) fn centre(fleet: &Fleet, devices: &[u32]) -> Option<(f64, f64)> {
    if devices.is_empty() {
        return None;
    }
    let (mut lat, mut lon) = (0.0, 0.0);
    for &i in devices {
        let p = fleet.devices.get(i as usize)?.position;
        lat += p.lat;
        lon += p.lon;
    }
    let n = devices.len() as f64;
    Some((lat / n, lon / n))
}

fn form_ui(form: &mut FindingForm, ui: &mut egui::Ui) {
    egui::Grid::new("finding-form")
        .num_columns(2)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            text_row(
                ui,
                "Finding id",
                &mut form.id,
                "e.g. CVE-2026-1234 or a ticket",
            );
            text_row(ui, "Title", &mut form.title, "what is wrong, in a line");
            let l = ui.label("Classification");
            egui::ComboBox::from_id_salt("finding-classification")
                .selected_text(form.classification.as_str())
                .show_ui(ui, |ui| {
                    for c in [
                        Classification::Security,
                        Classification::Stability,
                        Classification::Compliance,
                        Classification::Performance,
                        Classification::Cosmetic,
                    ] {
                        ui.selectable_value(&mut form.classification, c, c.as_str());
                    }
                })
                .response
                .labelled_by(l.id);
            ui.end_row();
            text_row(
                ui,
                "CVSS vector",
                &mut form.cvss,
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H (empty: none)",
            );
            ui.label("Exploitation");
            ui.horizontal(|ui| {
                ui.checkbox(&mut form.public_poc, "Public proof of concept");
                ui.checkbox(&mut form.exploited, "Exploited in the wild");
                ui.checkbox(&mut form.remote, "Reachable remotely");
            });
            ui.end_row();
            text_row(
                ui,
                "Affected models",
                &mut form.models,
                "T300, T500 (empty: any)",
            );
            text_row(
                ui,
                "Affected hw revs",
                &mut form.hw_revs,
                "B, C (empty: any)",
            );
            text_row(
                ui,
                "Affected versions",
                &mut form.versions,
                "firmware>=2.3.0; firmware<2.4.0 (separated by ;)",
            );
            text_row(
                ui,
                "Affected device ids",
                &mut form.device_ids,
                "(empty: any)",
            );
            text_row(
                ui,
                "Regulatory impact",
                &mut form.regulatory,
                "the regulation breached, if any",
            );
            text_row(
                ui,
                "Contractual impact",
                &mut form.contractual,
                "the contract or SLA breached, if any",
            );
            ui.label("Rollback");
            ui.horizontal(|ui| {
                ui.checkbox(&mut form.ab_slot, "A/B slot (reverts on its own)");
                egui::ComboBox::from_label("layer")
                    .selected_text(form.layer.as_str())
                    .show_ui(ui, |ui| {
                        for l in [Layer::Application, Layer::Bootloader, Layer::Modem] {
                            ui.selectable_value(&mut form.layer, l, l.as_str());
                        }
                    });
            });
            ui.end_row();
            text_row(
                ui,
                "Anomaly rate",
                &mut form.anomaly_rate,
                "events per 1,000 device-days among affected (empty: none)",
            );
            text_row(
                ui,
                "Anomaly baseline",
                &mut form.anomaly_baseline,
                "the same signal on unaffected devices",
            );
        });
}

fn cvss_ui(preview: &CvssPreview, ui: &mut egui::Ui) {
    match preview {
        CvssPreview::Absent => {
            ui.label(
                RichText::new("No CVSS vector: the finding scores without one.")
                    .color(tokens::MUTED),
            );
        }
        CvssPreview::Valid {
            headline, explain, ..
        } => {
            ui.label(RichText::new(headline).strong());
            for line in explain {
                ui.label(RichText::new(line).monospace());
            }
        }
        CvssPreview::Invalid(why) => {
            ui.colored_label(tokens::BAD, format!("Invalid CVSS vector: {why}"));
        }
    }
}

fn scorecard_ui(card: &Scorecard, policy: &PolicyEditor, ui: &mut egui::Ui) {
    ui.label(RichText::new("Scorecard").strong());
    egui::Grid::new("finding-scorecard")
        .num_columns(3)
        .striped(true)
        .spacing([12.0, 3.0])
        .show(ui, |ui| {
            ui.label(RichText::new("points").strong());
            ui.label(RichText::new("source").strong());
            ui.label(RichText::new("detail").strong());
            ui.end_row();
            for line in &card.lines {
                ui.label(RichText::new(format!("{:.1}", line.points)).monospace());
                ui.label(line.source);
                ui.label(&line.detail);
                ui.end_row();
            }
        });
    // The policy's source is known only while it is the one in use.
    let source = if card.policy_digest == policy.digest() {
        format!(", {}", policy.source)
    } else {
        String::new()
    };
    ui.label(format!(
        "Total {:.1} points = severity {:.1} × exposure {:.3} (scoring policy {}, format {}{source})",
        card.points,
        card.severity_points,
        card.exposure_multiplier,
        card.policy_digest,
        card.policy_version
    ));
    let tier_color = match card.tier.number() {
        0 => tokens::BAD,
        1 => tokens::WARN,
        _ => tokens::OK,
    };
    ui.label(
        RichText::new(format!("Tier {}", card.tier))
            .color(tier_color)
            .strong(),
    );
    ui.label(RichText::new(format!("Recommendation: {}", card.recommendation)).strong());
    ui.label(format!("Reason: {}", card.reason));
    ui.label(crate::ops::findings::blast_radius_summary(
        &card.blast_radius,
    ));
}

fn stored_ui(state: &FindingsState, ui: &mut egui::Ui, commands: &mut Vec<UiCommand>) {
    let busy = state.busy();
    let mut open = None;
    ui.horizontal(|ui| {
        ui.label(RichText::new("Stored findings").strong());
        if ui
            .add_enabled(!busy, egui::Button::new("Reload findings"))
            .clicked()
        {
            commands.push(UiCommand::Findings(FindingsCommand::Reload));
        }
    });
    match &state.stored {
        None => {
            ui.label("Reading the cache…");
        }
        Some(Err(why)) => {
            ui.colored_label(tokens::BAD, format!("Could not read the findings: {why}"));
        }
        Some(Ok(rows)) if rows.is_empty() => {
            ui.label(RichText::new("None stored yet.").color(tokens::MUTED));
        }
        Some(Ok(rows)) => {
            egui::Grid::new("stored-findings")
                .num_columns(5)
                .striped(true)
                .spacing([12.0, 3.0])
                .show(ui, |ui| {
                    for h in ["finding", "title", "points", "tier", ""] {
                        ui.label(RichText::new(h).strong());
                    }
                    ui.end_row();
                    for row in rows {
                        ui.label(&row.id);
                        ui.label(&row.title);
                        ui.label(row.points.map_or("-".to_owned(), |p| format!("{p:.1}")));
                        ui.label(
                            row.tier
                                .as_ref()
                                .and_then(serde_json::Value::as_u64)
                                .map_or("-".to_owned(), |t| {
                                    risk::Tier::from_number(t.min(3) as u8).to_string()
                                }),
                        );
                        if ui
                            .add_enabled(!busy, egui::Button::new(format!("Open {}", row.id)))
                            .on_hover_text("Load this finding into the form to rescore it")
                            .clicked()
                        {
                            open = Some(row.id.clone());
                        }
                        ui.end_row();
                    }
                });
        }
    }
    if let Some(id) = open {
        commands.push(UiCommand::Findings(FindingsCommand::Open(id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_core::synth::{SynthOptions, generate};

    const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn form() -> FindingForm {
        FindingForm {
            id: "CVE-2026-0001".into(),
            title: "telematics auth bypass".into(),
            cvss: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H".into(),
            models: "T300".into(),
            ..FindingForm::default()
        }
    }

    #[test]
    fn a_valid_vector_is_scored_and_explained_metric_by_metric() {
        let CvssPreview::Valid {
            headline, explain, ..
        } = cvss_preview(" CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H ")
        else {
            panic!("valid vector");
        };
        assert_eq!(headline, "CVSS 3.1 base score 9.8 (Critical)");
        assert!(explain.iter().any(|l| l.contains("AV:N")), "{explain:?}");
    }

    #[test]
    fn a_bad_metric_value_is_named() {
        let CvssPreview::Invalid(why) =
            cvss_preview("CVSS:3.1/AV:Q/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H")
        else {
            panic!("invalid vector");
        };
        assert!(why.contains("\"AV\"") && why.contains("\"Q\""), "{why}");
        let err = build_finding(&FindingForm {
            cvss: "CVSS:3.1/AV:Q".into(),
            ..form()
        })
        .expect_err("bad vector");
        assert_eq!(err.field, "CVSS vector");
    }

    #[test]
    fn the_form_becomes_the_finding_the_cli_reads() {
        let f = build_finding(&FindingForm {
            versions: "firmware>=2.3.0; hw_rev in B,C".into(),
            device_ids: "a, b,,".into(),
            anomaly_rate: "4".into(),
            anomaly_baseline: "1".into(),
            exploited: true,
            ..form()
        })
        .expect("valid form");
        assert_eq!(f.affected.models, ["T300"]);
        assert_eq!(f.affected.device_ids, ["a", "b"]);
        assert_eq!(f.affected.requires.len(), 2);
        assert_eq!(f.affected.requires[1].to_string(), "hw_rev in B,C");
        assert!(f.exploitation.active && !f.exploitation.public_poc);
        assert_eq!(f.anomaly.map(|a| a.rate_per_1000_device_days), Some(4.0));
        // The same finding as JSON, the way `convoy score finding` reads it, is equal.
        let back: Finding =
            serde_json::from_str(&serde_json::to_string(&f).expect("json")).expect("reads");
        assert_eq!(back, f);
    }

    #[test]
    fn a_finding_fills_the_form_that_builds_it_again() {
        let f = build_finding(&FindingForm {
            versions: "firmware>=2.3.0; hw_rev in B,C".into(),
            hw_revs: "B, C".into(),
            regulatory: "MDR".into(),
            anomaly_rate: "4.5".into(),
            anomaly_baseline: "1".into(),
            public_poc: true,
            ab_slot: false,
            layer: Layer::Bootloader,
            ..form()
        })
        .expect("valid form");
        assert_eq!(build_finding(&form_of(&f)), Ok(f));
    }

    #[test]
    fn form_errors_name_the_field() {
        let none = FindingForm {
            models: String::new(),
            ..form()
        };
        assert_eq!(
            build_finding(&none).expect_err("no affected").field,
            "Affected devices"
        );
        let transient = FindingForm {
            versions: "battery>=20".into(),
            ..form()
        };
        assert_eq!(
            build_finding(&transient).expect_err("condition").field,
            "Affected versions"
        );
        let rate = FindingForm {
            anomaly_rate: "lots".into(),
            ..form()
        };
        assert_eq!(
            build_finding(&rate).expect_err("rate").field,
            "Anomaly rate"
        );
    }

    #[test]
    fn affected_devices_are_those_the_scorer_counts_in_fleet_order() {
        let fleet = generate(&SynthOptions {
            devices: 300,
            seed: 3,
            now: NOW,
        });
        let (finding, card, devices) =
            evaluate(&form(), &fleet, &ScoringPolicy::default(), NOW).expect("scores");
        assert_eq!(devices, affected_devices(&finding, &fleet));
        assert_eq!(devices.len(), card.affected_devices);
        assert!(devices.windows(2).all(|w| w[0] < w[1]));
        assert!(
            devices
                .iter()
                .all(|&i| fleet.devices[i as usize].model == "T300")
        );
        let t300 = fleet.devices.iter().filter(|d| d.model == "T300").count();
        assert_eq!(devices.len(), t300);
    }

    #[test]
    fn a_policy_edit_names_its_field_and_a_policy_file_keeps_its_other_sections() {
        let built_in = ScoringPolicy::default();
        let text = policy_json(&built_in);
        assert_eq!(
            parse_policy_text(&text).expect("valid").digest(),
            built_in.digest()
        );
        let err = parse_policy_text(&text.replacen("\"version\": 1", "\"version\": 7", 1))
            .expect_err("unsupported version");
        assert!(err.contains('7'), "{err}");
        let err = parse_policy_text("{ not json").expect_err("syntax");
        assert!(err.contains("line 1"), "{err}");
        let mut negative = serde_json::to_value(&built_in).expect("json");
        negative["remote_points"] = serde_json::json!(-3.0);
        let err = parse_policy_text(&negative.to_string()).expect_err("negative weight");
        assert!(err.contains("remote_points"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("policy.json");
        std::fs::write(&file, r#"{"gates": {"x": 1}}"#).expect("write");
        save_policy_file(&file, &built_in).expect("saved");
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
        assert_eq!(back["gates"]["x"], 1);
        assert_eq!(
            crate::ops::findings::load_policy(&file)
                .expect("loads")
                .digest(),
            built_in.digest()
        );
        // A file that is not an object of sections is never overwritten.
        std::fs::write(&file, "[1, 2]").expect("write");
        let err = save_policy_file(&file, &built_in).expect_err("refused");
        assert!(format!("{err:#}").contains("not overwritten"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "[1, 2]");
    }
}
