//! The approvals view: the console's local path from a saved plan to a dispatched rollout.
//! A plan the planner saved is requested as a rollout on the standard path (two approvals by
//! distinct operators other than the requester) or the emergency path (break-glass: a named
//! authoriser, not the requester, with evidence, plus one more approval); requests are listed
//! with what each still needs; a named operator approves or rejects; an approved request is
//! dispatched.
//!
//! The rules are the server's: every step goes through [`crate::ops::requests`] (`create`,
//! `list`, `decide`, `host`), which checks the release's signature against the trust
//! directory, freezes the plan with the manifest's hash, refuses self-approval and repeated
//! approvers with [`convoy_core::rollout::approvals_satisfy`], and audits each step. All SQL,
//! signature checks and engine starts run on `convoy-approvals` threads, never on the UI
//! thread.
//!
//! Local approvals are by name, not authenticated: on one workstation the operator field says
//! who acts (prefilled from `$CONVOY_OPERATOR`, else `$USER`), and anyone at the keyboard can
//! type another name. The server's approvals (`convoy serve`) are by token; the view says so.
//!
//! Dispatch: with an in-process engine target ([`LocalDispatch`], the demo's embedded broker and
//! engines) the approved request runs here with [`crate::ops::requests::host`] and its
//! control handle is registered so that the rollout monitor can steer it. Without one the view
//! says plainly that `convoy serve --dispatch-args` dispatches approved requests, and the
//! request stays recorded as approved.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};

use anyhow::{Context, Result};
use convoy_core::time::Timestamp;
use egui::RichText;

use crate::gui::app::UiCommand;
use crate::gui::backend::{BrokerKind, LinkStatus};
use crate::gui::steer::LocalEngines;
use crate::gui::tokens;
use crate::gui::view::{Commands, ViewContext};
use crate::ops::hosting::HostedRun;
use crate::ops::requests::{self, NewRequest, Refusal, RequestView, SavedPlan, Verdict};
use crate::store::Store;
use convoy_core::risk::{Checklist, Shape};

/// How the console acts in the audit trail when it records a local request or decision: the
/// operator's name follows.
const ACTOR_PREFIX: &str = "console-operator:";

/// Where this console can run an approved request itself: its in-process engines (registered
/// runs are steerable from the rollout monitor) and the broker they talk to.
#[derive(Clone, Debug)]
pub struct LocalDispatch {
    pub engines: LocalEngines,
    /// The broker the engine dispatches over (the demo's embedded one).
    pub broker_url: String,
    /// Simulated seconds per wall second: the devices' (the demo's time scale).
    pub time_scale: f64,
}

impl LocalDispatch {
    /// The dispatch target of a backend: its in-process engines and its embedded broker (the
    /// demo's), at the devices' `time_scale`; `None` for a console with no engine of its own or
    /// whose broker another process runs (a cache only, an external broker, a server). What
    /// `ConsoleApp::new` sets [`ApprovalsState::local`] from.
    pub fn for_backend(
        engines: Option<&LocalEngines>,
        broker: &BrokerKind,
        time_scale: f64,
    ) -> Option<Self> {
        match (engines, broker) {
            (Some(engines), BrokerKind::Embedded(url)) => Some(Self {
                engines: engines.clone(),
                broker_url: url.clone(),
                time_scale,
            }),
            _ => None,
        }
    }
}

/// A request as the list shows it.
#[derive(Clone, Debug)]
pub struct Listed {
    pub view: RequestView,
    /// Events its rollout has in the timeline: more than none means it was dispatched.
    pub timeline_events: i64,
}

/// What the cache holds for this view.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub plans: Vec<SavedPlan>,
    /// Saved plans that could not be read, one line each naming the plan.
    pub unreadable: Vec<String>,
    pub requests: Vec<Listed>,
}

/// An answer from a worker thread.
enum Reply {
    Listed(Result<Listing, String>),
    Done(Result<String, String>),
    /// A decision was recorded (or refused): a recorded one's comment is cleared.
    Decided(Result<String, String>),
    Dispatched(Result<(String, HostedRun), String>),
}

/// What the approvals view asks the console for; each starts a thread of the view's own state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalsCommand {
    /// Read the saved plans and requests again.
    Reload,
    /// Request the chosen plan as the operator, on the path chosen.
    Request,
    /// Record the operator's decision (with the comment typed) on this request.
    Decide { rollout_id: String, approve: bool },
    /// Dispatch this approved request to the console's own engine.
    Dispatch(String),
}

/// What the approvals view keeps between frames.
#[derive(Debug, Default)]
pub struct ApprovalsState {
    /// Set when this console has engines of its own and a broker (the demo); `None`: approved
    /// requests are dispatched by a server.
    pub local: Option<LocalDispatch>,
    /// Who acts: requests and decisions are recorded under this name.
    pub operator: String,
    /// The trust directory the release is checked against (keyset-N.json or a key directory).
    pub trust_dir: String,
    prefilled: bool,
    /// The saved plans and requests, as last read.
    pub listing: Option<Result<Listing, String>>,
    list_rx: Option<Receiver<Reply>>,
    /// The plan chosen for a new request.
    pub plan: Option<String>,
    pub emergency: bool,
    pub authoriser: String,
    pub evidence: String,
    /// The finding the new request remediates (empty: none), the shape chosen (empty: what
    /// the finding's tier proposes) and its pre-deployment checklist (issue 20).
    pub finding_id: String,
    pub shape: String,
    pub checklist: Checklist,
    /// The new request's rollout id (empty: `RELEASE-YYYYMMDDTHHMMSSZ`).
    pub rollout_id: String,
    /// An approval's comment or a rejection's reason.
    pub comment: String,
    action_rx: Option<Receiver<Reply>>,
    /// What the last action did, or why it was refused.
    pub note: Option<Result<String, String>>,
    /// Runs this console dispatched, kept so that they are not stopped.
    runs: Vec<HostedRun>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reply::Listed(_) => "Listed",
            Reply::Done(_) => "Done",
            Reply::Decided(_) => "Decided",
            Reply::Dispatched(_) => "Dispatched",
        })
    }
}

/// Runs `job` on a `convoy-approvals` thread; its answer arrives on the returned channel.
fn spawn(
    ctx: &egui::Context,
    job: impl FnOnce() -> Reply + Send + 'static,
) -> Result<Receiver<Reply>, String> {
    crate::gui::worker::spawn_job(ctx, "convoy-approvals", job)
        .map_err(|e| format!("could not start the approvals thread: {e}"))
}

/// A refusal in words.
pub fn refusal_words(r: &Refusal) -> String {
    match r {
        Refusal::Field { field, message } => format!("{field}: {message}"),
        Refusal::Forbidden(m) | Refusal::NotFound(m) | Refusal::Conflict(m) => m.clone(),
    }
}

fn open_store(cache: &Path) -> Result<Store> {
    Store::open_existing(cache)
        .with_context(|| format!("opening the fleet cache {}", cache.display()))
}

/// Reads the saved plans and the requests with how far each got.
pub fn read_listing(cache: &Path) -> Result<Listing> {
    let store = open_store(cache)?;
    let (plans, unreadable) = requests::saved_plans(&store)?;
    let mut listed = Vec::new();
    for request in requests::list(&store)? {
        let timeline_events = store.timeline_len(&request.record.rollout_id)?;
        listed.push(Listed {
            view: request.view(),
            timeline_events,
        });
    }
    Ok(Listing {
        plans,
        unreadable,
        requests: listed,
    })
}

/// What the form asks for a new request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestForm {
    pub plan_id: String,
    pub rollout_id: String,
    pub emergency: bool,
    pub authoriser: String,
    pub evidence: String,
    pub finding_id: String,
    pub shape: String,
    pub checklist: Checklist,
}

/// Records a request for a saved plan as `operator`, the release checked against `trust_dir`.
pub fn request_plan(
    cache: &Path,
    trust_dir: &Path,
    form: &RequestForm,
    operator: &str,
    now: Timestamp,
) -> Result<Result<String, String>> {
    let trust = crate::keys::load_trust(trust_dir)
        .with_context(|| format!("reading the trust directory {}", trust_dir.display()))?;
    let store = open_store(cache)?;
    let new = NewRequest {
        release_id: String::new(),
        rollout_id: Some(form.rollout_id.trim().to_owned()).filter(|s| !s.is_empty()),
        path: Some(
            if form.emergency {
                "emergency"
            } else {
                "standard"
            }
            .to_owned(),
        ),
        authoriser: form.emergency.then(|| form.authoriser.trim().to_owned()),
        evidence: form.emergency.then(|| form.evidence.trim().to_owned()),
        waves: None,
        prerequisite_waves: None,
        prerequisites: None,
        seed: None,
        finding_id: Some(form.finding_id.trim().to_owned()).filter(|s| !s.is_empty()),
        shape: Some(form.shape.trim().to_owned()).filter(|s| !s.is_empty()),
        checklist: Some(form.checklist.clone()).filter(|c| !c.is_empty()),
    };
    let actor = format!("{ACTOR_PREFIX}{operator}");
    Ok(
        match requests::create_from_plan(
            &store,
            &trust,
            &form.plan_id,
            new,
            &requests::Who::named(operator),
            &actor,
            now,
        )? {
            Ok(r) => Ok(format!(
                "{operator} requested rollout {} of release {} from plan {}: it needs {}",
                r.record.rollout_id,
                r.record.release_id,
                form.plan_id,
                r.needs()
            )),
            Err(refusal) => Err(format!("Not requested: {}", refusal_words(&refusal))),
        },
    )
}

/// Records `operator`'s decision on `rollout_id`.
pub fn decide(
    cache: &Path,
    rollout_id: &str,
    operator: &str,
    verdict: &Verdict,
    now: Timestamp,
) -> Result<Result<String, String>> {
    let store = open_store(cache)?;
    let actor = format!("{ACTOR_PREFIX}{operator}");
    Ok(
        match requests::decide(
            &store,
            rollout_id,
            &requests::Who::named(operator),
            verdict,
            &actor,
            now,
        )? {
            Ok(r) => {
                let word = match verdict {
                    Verdict::Approve { .. } => "approved",
                    Verdict::Reject { .. } => "rejected",
                };
                Ok(format!(
                    "{operator} {word} rollout {rollout_id}: it needs {}",
                    r.needs()
                ))
            }
            Err(refusal) => Err(format!("Refused: {}", refusal_words(&refusal))),
        },
    )
}

/// Starts the engine run of the approved request `rollout_id` in this process over `local`'s
/// broker and registers its control handle with `local`'s engines.
pub fn dispatch(
    cache: &Path,
    trust_dir: &Path,
    rollout_id: &str,
    local: &LocalDispatch,
) -> Result<(String, HostedRun)> {
    let store = open_store(cache)?;
    let request = requests::load(&store, rollout_id)?
        .with_context(|| format!("no rollout request {rollout_id} in the cache"))?;
    if !request.approved() {
        anyhow::bail!(
            "rollout {rollout_id} is not approved: it needs {}; nothing dispatched",
            request.needs()
        );
    }
    let started = store.rollout_started(rollout_id)?;
    if started {
        anyhow::bail!(
            "rollout {rollout_id} was dispatched already (its timeline has events); continue an unfinished one with `convoy rollout run --resume`"
        );
    }
    let mut base = crate::ops::runs::RunArgs::with_defaults(&local.broker_url, Path::new("-"))?;
    base.time_scale = local.time_scale;
    let run = requests::host(&store, &request, cache, trust_dir, &base, false)
        .with_context(|| format!("dispatching rollout {rollout_id}"))?;
    local.engines.register(run.control.clone());
    Ok((
        format!(
            "Dispatched rollout {rollout_id} to the engine in this console over {}: every offer is written to the outbox first and sent from there; while the link is down offers wait in the outbox (the status bar counts them) and go out when it is back. Steer it from the rollout monitor.",
            local.broker_url
        ),
        run,
    ))
}

impl ApprovalsState {
    /// Fills in the operator and the trust directory the first time the view shows with a
    /// fleet `cache` known (it loads on a background thread): the planner's trust directory,
    /// else the releases view's, else the default beside the cache
    /// ([`crate::ops::settings::default_trust_dir`], where `convoy rollout run` looks). The
    /// console calls it, so that the view never reads another view's state. Returns whether it
    /// filled in (then the console lists the requests).
    pub fn prefill(&mut self, cache: &Path, planner_trust: &str, releases_trust: &str) -> bool {
        if self.prefilled {
            return false;
        }
        self.prefilled = true;
        if self.operator.is_empty() {
            self.operator = crate::gui::steer::operator_name();
        }
        if self.trust_dir.is_empty() {
            self.trust_dir = if !planner_trust.trim().is_empty() {
                planner_trust.to_owned()
            } else if !releases_trust.trim().is_empty() {
                releases_trust.to_owned()
            } else {
                crate::ops::settings::default_trust_dir(cache)
                    .display()
                    .to_string()
            };
        }
        true
    }

    /// Does what the view asked for, on the state's threads: `cache` is the fleet cache.
    pub fn apply(
        &mut self,
        ctx: &egui::Context,
        command: ApprovalsCommand,
        cache: Option<PathBuf>,
        now: Timestamp,
    ) {
        match command {
            ApprovalsCommand::Reload => self.refresh(ctx, cache.as_deref()),
            ApprovalsCommand::Request => self.request(ctx, cache, now),
            ApprovalsCommand::Decide {
                rollout_id,
                approve,
            } => self.decide(ctx, cache, &rollout_id, approve, now),
            ApprovalsCommand::Dispatch(rollout_id) => self.dispatch(ctx, cache, &rollout_id),
        }
    }

    /// Takes in what the worker threads answered (then lists again). The console calls it
    /// every frame the view shows.
    pub fn poll(&mut self, ctx: &egui::Context, cache: Option<&Path>) {
        if let Some(rx) = &self.list_rx {
            match rx.try_recv() {
                Ok(Reply::Listed(l)) => {
                    self.listing = Some(l);
                    self.list_rx = None;
                }
                Ok(_) | Err(TryRecvError::Disconnected) => {
                    self.listing =
                        Some(Err("the approvals thread stopped without answering".into()));
                    self.list_rx = None;
                }
                Err(TryRecvError::Empty) => {}
            }
        }
        let answer = match &self.action_rx {
            Some(rx) => match rx.try_recv() {
                Ok(a) => Some(a),
                Err(TryRecvError::Disconnected) => Some(Reply::Done(Err(
                    "the approvals thread stopped without answering".into(),
                ))),
                Err(TryRecvError::Empty) => None,
            },
            None => None,
        };
        if let Some(answer) = answer {
            self.action_rx = None;
            match answer {
                Reply::Done(note) => self.note = Some(note),
                Reply::Decided(note) => {
                    if note.is_ok() {
                        self.comment.clear();
                    }
                    self.note = Some(note);
                }
                Reply::Dispatched(Ok((note, run))) => {
                    self.note = Some(Ok(note));
                    self.runs.push(run);
                }
                Reply::Dispatched(Err(why)) => self.note = Some(Err(why)),
                Reply::Listed(l) => self.listing = Some(l),
            }
            // Whatever happened, the list shows the cache as it is now.
            self.refresh(ctx, cache);
        }
    }

    /// Reads the saved plans and requests again, on a thread.
    pub fn refresh(&mut self, ctx: &egui::Context, cache: Option<&Path>) {
        let Some(cache) = cache.map(Path::to_path_buf) else {
            self.listing = Some(Err("No fleet cache is open: no plans or requests".into()));
            return;
        };
        match spawn(ctx, move || {
            Reply::Listed(read_listing(&cache).map_err(|e| format!("{e:#}")))
        }) {
            Ok(rx) => self.list_rx = Some(rx),
            Err(why) => self.listing = Some(Err(why)),
        }
    }

    /// Whether an action is on its way.
    pub fn busy(&self) -> bool {
        self.action_rx.is_some()
    }

    fn act(&mut self, ctx: &egui::Context, job: impl FnOnce() -> Reply + Send + 'static) {
        self.note = None;
        match spawn(ctx, job) {
            Ok(rx) => self.action_rx = Some(rx),
            Err(why) => self.note = Some(Err(why)),
        }
    }

    fn operator(&self) -> Result<String, String> {
        let name = self.operator.trim();
        if name.is_empty() {
            Err("Operator: required (who requests or approves)".into())
        } else {
            Ok(name.to_owned())
        }
    }

    /// Requests the chosen plan, on a thread.
    fn request(&mut self, ctx: &egui::Context, cache: Option<PathBuf>, now: Timestamp) {
        let checked = (|| {
            let operator = self.operator()?;
            let cache = cache.ok_or("No fleet cache is open")?;
            let plan_id = self.plan.clone().ok_or("Choose a saved plan first")?;
            let trust = self.trust_dir.trim();
            if trust.is_empty() {
                return Err(
                    "Trust directory: required (the keys the release is checked against)"
                        .to_owned(),
                );
            }
            Ok((operator, cache, plan_id, PathBuf::from(trust)))
        })();
        let (operator, cache, plan_id, trust) = match checked {
            Ok(c) => c,
            Err(why) => {
                self.note = Some(Err(why));
                return;
            }
        };
        let form = RequestForm {
            plan_id,
            rollout_id: self.rollout_id.clone(),
            emergency: self.emergency,
            authoriser: self.authoriser.clone(),
            evidence: self.evidence.clone(),
            finding_id: self.finding_id.clone(),
            shape: self.shape.clone(),
            checklist: self.checklist.clone(),
        };
        self.act(ctx, move || {
            Reply::Done(
                request_plan(&cache, &trust, &form, &operator, now)
                    .unwrap_or_else(|e| Err(format!("Could not request: {e:#}"))),
            )
        });
    }

    /// Records the operator's decision on `rollout_id`, on a thread.
    fn decide(
        &mut self,
        ctx: &egui::Context,
        cache: Option<PathBuf>,
        rollout_id: &str,
        approve: bool,
        now: Timestamp,
    ) {
        let operator = match self.operator() {
            Ok(o) => o,
            Err(why) => {
                self.note = Some(Err(why));
                return;
            }
        };
        let Some(cache) = cache else {
            self.note = Some(Err("No fleet cache is open".into()));
            return;
        };
        let comment = self.comment.trim().to_owned();
        let verdict = if approve {
            Verdict::Approve { comment }
        } else {
            Verdict::Reject { reason: comment }
        };
        let id = rollout_id.to_owned();
        self.act(ctx, move || {
            Reply::Decided(
                decide(&cache, &id, &operator, &verdict, now)
                    .unwrap_or_else(|e| Err(format!("Could not record the decision: {e:#}"))),
            )
        });
    }

    /// Dispatches the approved `rollout_id` to this console's engines, on a thread.
    fn dispatch(&mut self, ctx: &egui::Context, cache: Option<PathBuf>, rollout_id: &str) {
        let Some(local) = self.local.clone() else {
            self.note = Some(Err(NO_ENGINE.to_owned()));
            return;
        };
        let Some(cache) = cache else {
            self.note = Some(Err("No fleet cache is open".into()));
            return;
        };
        let trust = PathBuf::from(self.trust_dir.trim());
        let id = rollout_id.to_owned();
        self.act(ctx, move || {
            Reply::Dispatched(
                dispatch(&cache, &trust, &id, &local).map_err(|e| format!("Not dispatched: {e:#}")),
            )
        });
    }

    /// Stops the runs this console dispatched (as Ctrl-C stops `convoy rollout run`:
    /// resumable with `--resume`) and returns each one's id and outcome in words.
    pub fn stop_runs(&mut self) -> Vec<(String, Result<String, String>)> {
        std::mem::take(&mut self.runs)
            .into_iter()
            .map(|run| {
                let id = run.rollout_id().to_owned();
                let outcome = run
                    .stop()
                    .map(|report| report.final_state.words().to_owned())
                    .map_err(|e| format!("{e:#}"));
                (id, outcome)
            })
            .collect()
    }

    /// Whether this console dispatched `rollout_id` in this session (its engine may not have
    /// written its timeline yet).
    pub fn dispatched_here(&self, rollout_id: &str) -> bool {
        self.runs.iter().any(|r| r.rollout_id() == rollout_id)
    }

    /// How many runs this console dispatched and holds.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}

/// Why this console does not dispatch: it has no engine of its own.
pub const NO_ENGINE: &str = "This console has no engine of its own: approved requests are dispatched by `convoy serve --dispatch-args FILE` on this cache (the server starts every approved request it holds), or with `convoy rollout run --plan`. The request stays recorded as approved.";

/// The lines a request shows about its finding, shape, boot-critical defaults and checklist
/// (issue 20).
pub fn remediation_lines(r: &RequestView) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(f) = &r.finding_id {
        let tier = r
            .finding_tier
            .map_or_else(String::new, |t| format!(" (tier {t})"));
        let shape = match (r.proposed_shape, r.shape) {
            (Some(p), Some(c)) if p == c => format!("shape {c}, as its tier proposes"),
            (Some(p), Some(c)) => format!(
                "its tier proposed {p}; {} chose {c}",
                r.shape_changed_by.as_deref().unwrap_or("the requester")
            ),
            _ => String::new(),
        };
        out.push(format!("Remediates finding {f}{tier} · {shape}"));
    } else if let Some(s) = r.shape {
        out.push(format!("Shape {s}"));
    }
    if let Some(b) = &r.boot_critical {
        out.push(format!("Stricter plan and gates ({b})"));
    }
    match &r.checklist {
        Some(c) => {
            for (item, text) in c.items() {
                let text = if text.is_empty() { "(missing)" } else { text };
                out.push(format!("Checklist · {}: {text}", item.replace('_', " ")));
            }
        }
        None => out.push("Checklist: none".to_owned()),
    }
    out
}

/// Why `operator` cannot approve `request` now, if they cannot.
pub fn cannot_approve(request: &RequestView, operator: &str) -> Option<String> {
    if request.status != "awaiting_approval" {
        return Some(format!(
            "{} is {}",
            request.rollout_id,
            request.status.replace('_', " ")
        ));
    }
    let person = crate::ops::tokens::person_key(operator);
    if person == crate::ops::tokens::person_key(&request.requested_by) {
        return Some(format!(
            "{operator} requested {} and cannot approve it: nobody approves their own request",
            request.rollout_id
        ));
    }
    if request
        .decisions
        .iter()
        .any(|d| d.decision == "approve" && crate::ops::tokens::person_key(&d.operator) == person)
    {
        return Some(format!(
            "{operator} has approved {} already: approvals must come from distinct operators",
            request.rollout_id
        ));
    }
    None
}

/// Draws the view.
pub fn approvals_ui(
    state: &mut ApprovalsState,
    cx: &ViewContext<'_>,
    out: &mut Commands,
    ui: &mut egui::Ui,
) {
    // A console on a server works on a copy the server never reads: a request or an approval
    // made here would mean nothing there.
    if let crate::gui::backend::BrokerKind::Server(server) = cx.broker {
        ui.heading("Approvals");
        ui.label(format!(
            "This console is attached to {server}: rollout requests and approvals are made on the server, \
             by token (`POST {server}/api/v1/rollouts`, `/rollouts/ID/approve`; docs/SERVE.md). \
             Approving from a console attached to a server is not built yet."
        ));
        return;
    }
    let mut commands = Vec::new();

    ui.heading("Approvals");
    ui.label(
        "A saved plan of a verified release becomes a rollout request; distinct named operators \
         approve it; an approved request is dispatched. Nothing is dispatched without an \
         approved request for a signed release.",
    );
    ui.colored_label(
        tokens::WARN,
        "Local approvals prove nothing about who approved: a name typed here is not an \
         identity, so one person can type two names (the audit trail records them as typed; \
         names differing only by case count as one). They record intent, not a two-person \
         rule. That needs `convoy serve`, with one token per person made on its host \
         (`convoy serve token add`; docs/SERVE.md).",
    );
    ui.add_space(8.0);
    egui::Grid::new("approvals-who")
        .num_columns(2)
        .show(ui, |ui| {
            let l = ui.label("Operator");
            ui.add(
                egui::TextEdit::singleline(&mut state.operator)
                    .hint_text("who requests or approves")
                    .desired_width(220.0),
            )
            .labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Trust directory");
            ui.add(
                egui::TextEdit::singleline(&mut state.trust_dir)
                    .hint_text("keyset-N.json or a key directory")
                    .desired_width(420.0),
            )
            .labelled_by(l.id);
            ui.end_row();
        });
    ui.horizontal(|ui| {
        if ui.button("Reload requests").clicked() {
            commands.push(UiCommand::Approvals(ApprovalsCommand::Reload));
        }
        if state.busy() || state.list_rx.is_some() {
            ui.spinner();
        }
    });
    match &state.note {
        Some(Ok(note)) => {
            ui.colored_label(tokens::OK, note);
        }
        Some(Err(why)) => {
            ui.colored_label(tokens::BAD, why);
        }
        None => {}
    }
    ui.separator();
    let listing = match &state.listing {
        None if cx.cache.is_none() => {
            ui.label("Waiting for the fleet cache to load…");
            None
        }
        None => {
            ui.label("reading the cache…");
            None
        }
        Some(Err(why)) => {
            ui.colored_label(tokens::BAD, why.clone());
            None
        }
        Some(Ok(l)) => Some(l.clone()),
    };
    if let Some(listing) = listing {
        egui::ScrollArea::vertical()
            .id_salt("approvals-scroll")
            .auto_shrink([false, false])
            .show(ui, |ui| {
                request_form_ui(state, ui, &listing, &mut commands);
                ui.separator();
                requests_ui(state, ui, &listing, cx.link, &mut commands);
            });
    }
    out.extend(commands);
}

fn request_form_ui(
    state: &mut ApprovalsState,
    ui: &mut egui::Ui,
    listing: &Listing,
    commands: &mut Vec<UiCommand>,
) {
    ui.strong("Request a rollout from a saved plan");
    if listing.plans.is_empty() {
        ui.label("No saved plan in the cache: plan a verified release in the Planner and save it.");
    }
    for p in &listing.plans {
        let chains = if p.prerequisite_waves.is_empty() {
            String::new()
        } else {
            format!(" ({} with prerequisites)", p.prerequisite_waves.len())
        };
        let text = format!(
            "{} · release {} · {} devices in {} waves{chains} · saved {}",
            p.plan_id,
            p.release_id,
            p.devices(),
            p.waves.len() + p.prerequisite_waves.len(),
            p.created.to_rfc3339()
        );
        let selected = state.plan.as_deref() == Some(p.plan_id.as_str());
        if ui.selectable_label(selected, text).clicked() {
            state.plan = Some(p.plan_id.clone());
        }
    }
    for u in &listing.unreadable {
        ui.colored_label(tokens::WARN, u);
    }
    ui.horizontal(|ui| {
        ui.radio_value(&mut state.emergency, false, "Standard path")
            .on_hover_text("Two approvals by distinct people other than the requester");
        ui.radio_value(&mut state.emergency, true, "Emergency path (break-glass)")
            .on_hover_text(
                "A named authoriser (not the requester) approves, plus one more operator",
            );
    });
    egui::Grid::new("approvals-form")
        .num_columns(2)
        .show(ui, |ui| {
            let l = ui.label("Rollout id");
            ui.add(
                egui::TextEdit::singleline(&mut state.rollout_id)
                    .hint_text("default: RELEASE-YYYYMMDDTHHMMSSZ")
                    .desired_width(320.0),
            )
            .labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Remediates finding");
            ui.add(
                egui::TextEdit::singleline(&mut state.finding_id)
                    .hint_text("a scored finding's id: its tier proposes the shape (optional)")
                    .desired_width(320.0),
            )
            .labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Shape");
            egui::ComboBox::from_id_salt("approvals-shape")
                .selected_text(if state.shape.is_empty() {
                    "as the finding's tier proposes"
                } else {
                    state.shape.as_str()
                })
                .show_ui(ui, |ui| {
                    ui.selectable_value(
                        &mut state.shape,
                        String::new(),
                        "as the finding's tier proposes",
                    );
                    for s in Shape::ALL {
                        ui.selectable_value(&mut state.shape, s.as_str().to_owned(), s.as_str())
                            .on_hover_text(s.words());
                    }
                })
                .response
                .labelled_by(l.id);
            ui.end_row();
            if state.emergency {
                let l = ui.label("Authoriser");
                ui.add(
                    egui::TextEdit::singleline(&mut state.authoriser)
                        .hint_text("who authorises the break-glass (not you)")
                        .desired_width(320.0),
                )
                .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Evidence");
                ui.add(
                    egui::TextEdit::multiline(&mut state.evidence)
                        .hint_text("why it cannot wait: incident id, CVE, measurements")
                        .desired_rows(2)
                        .desired_width(420.0),
                )
                .labelled_by(l.id);
                ui.end_row();
            }
            let c = &mut state.checklist;
            for (label, text, hint) in [
                (
                    "Owner",
                    &mut c.owner,
                    "who owns the rollout until it is closed",
                ),
                (
                    "Regression test",
                    &mut c.regression_test,
                    "the test that shows the fix: id, CI run, ticket",
                ),
                (
                    "Rollback readiness",
                    &mut c.rollback_readiness,
                    "how it is undone: A/B revert, rollback release, technicians",
                ),
                (
                    "Support brief",
                    &mut c.support_brief,
                    "what support has been told",
                ),
            ] {
                let l = ui.label(label);
                ui.add(
                    egui::TextEdit::singleline(text)
                        .hint_text(format!(
                            "{hint}{}",
                            if state.emergency {
                                " (required on the emergency path)"
                            } else {
                                ""
                            }
                        ))
                        .desired_width(420.0),
                )
                .labelled_by(l.id);
                ui.end_row();
            }
        });
    let can = state.plan.is_some() && !state.busy();
    if ui
        .add_enabled(can, egui::Button::new("Request rollout"))
        .on_disabled_hover_text("Choose a saved plan first")
        .clicked()
    {
        commands.push(UiCommand::Approvals(ApprovalsCommand::Request));
    }
}

fn requests_ui(
    state: &mut ApprovalsState,
    ui: &mut egui::Ui,
    listing: &Listing,
    link: &LinkStatus,
    commands: &mut Vec<UiCommand>,
) {
    ui.strong("Rollout requests");
    if listing.requests.is_empty() {
        ui.label("No rollout request in the cache.");
        return;
    }
    ui.horizontal(|ui| {
        let l = ui.label("Comment or reason");
        ui.add(
            egui::TextEdit::singleline(&mut state.comment)
                .hint_text("an approval's comment; a rejection's reason (required)")
                .desired_width(420.0),
        )
        .labelled_by(l.id);
    });
    let operator = state.operator.trim().to_owned();
    for listed in &listing.requests {
        let r = &listed.view;
        ui.add_space(6.0);
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.label(RichText::new(&r.rollout_id).strong());
            ui.label(format!(
                "release {} · {} path · requested by {} at {} · {} devices in {} waves",
                r.release_id,
                r.path,
                r.requested_by,
                r.requested_at,
                r.devices,
                r.waves.len()
            ));
            if let (Some(a), Some(e)) = (&r.authoriser, &r.evidence) {
                ui.label(format!("Break-glass authoriser: {a} · evidence: {e}"));
            }
            // Prerequisite chains (issue 20): what devices behind install before the release.
            for w in r.waves.iter().filter(|w| !w.prerequisites.is_empty()) {
                ui.label(format!(
                    "Wave {}: {} devices install {} first, then the release",
                    w.name,
                    w.devices,
                    w.prerequisites.join(" -> ")
                ));
            }
            for line in remediation_lines(r) {
                ui.label(line);
            }
            if let Some(why) = &r.deferred {
                ui.colored_label(tokens::WARN, why);
            }
            for d in &r.decisions {
                let word = if d.decision == "approve" {
                    "approved"
                } else {
                    "rejected"
                };
                let comment = if d.comment.is_empty() {
                    String::new()
                } else {
                    format!(": {}", d.comment)
                };
                ui.label(format!("{} {word} at {}{comment}", d.operator, d.time));
            }
            let (color, status) = match r.status {
                "approved" => (tokens::OK, "approved"),
                "rejected" => (tokens::BAD, "rejected"),
                _ => (tokens::WARN, "awaiting approval"),
            };
            ui.colored_label(color, format!("{}: {status}", r.rollout_id));
            ui.label(format!("{} needs {}", r.rollout_id, r.needs));
            let why_not = cannot_approve(r, &operator);
            if let Some(why) = why_not.as_ref().filter(|_| r.status == "awaiting_approval") {
                ui.colored_label(tokens::WARN, why);
            }
            ui.horizontal(|ui| {
                let awaiting = r.status == "awaiting_approval" && !state.busy();
                if ui
                    .add_enabled(
                        awaiting && why_not.is_none(),
                        egui::Button::new(format!("Approve {}", r.rollout_id)),
                    )
                    .on_disabled_hover_text(why_not.clone().unwrap_or_default())
                    .clicked()
                {
                    commands.push(UiCommand::Approvals(ApprovalsCommand::Decide {
                        rollout_id: r.rollout_id.clone(),
                        approve: true,
                    }));
                }
                if ui
                    .add_enabled(awaiting, egui::Button::new(format!("Reject {}", r.rollout_id)))
                    .clicked()
                {
                    commands.push(UiCommand::Approvals(ApprovalsCommand::Decide {
                        rollout_id: r.rollout_id.clone(),
                        approve: false,
                    }));
                }
                if r.status == "approved" {
                    let dispatched =
                        listed.timeline_events > 0 || state.dispatched_here(&r.rollout_id);
                    let enabled = state.local.is_some()
                        && !dispatched
                        && !state.busy()
                        && r.deferred.is_none();
                    let why = if dispatched {
                        format!("{} was dispatched", r.rollout_id)
                    } else if let Some(why) = &r.deferred {
                        why.clone()
                    } else {
                        NO_ENGINE.to_owned()
                    };
                    if ui
                        .add_enabled(enabled, egui::Button::new(format!("Dispatch {}", r.rollout_id)))
                        .on_disabled_hover_text(why)
                        .clicked()
                    {
                        commands.push(UiCommand::Approvals(ApprovalsCommand::Dispatch(
                            r.rollout_id.clone(),
                        )));
                    }
                }
            });
            if r.status == "approved" {
                if listed.timeline_events > 0 {
                    ui.label(format!(
                        "{} is dispatched: {} events in its timeline (Reports, War room)",
                        r.rollout_id, listed.timeline_events
                    ));
                } else if state.dispatched_here(&r.rollout_id) {
                    ui.label(format!(
                        "{} is dispatched: its engine runs in this console (Reload requests to see its timeline)",
                        r.rollout_id
                    ));
                } else if let Some(local) = &state.local {
                    ui.label(format!(
                        "Ready to dispatch to the engine in this console over {}",
                        local.broker_url
                    ));
                    if *link != LinkStatus::Connected {
                        ui.colored_label(
                            tokens::WARN,
                            "The console's link is not connected: a dispatched rollout's offers wait in the outbox until the broker is reachable.",
                        );
                    }
                } else {
                    ui.colored_label(tokens::WARN, NO_ENGINE);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::requests::Decision;

    fn view(requested_by: &str, status: &'static str, approvers: &[&str]) -> RequestView {
        RequestView {
            rollout_id: "ro-1".into(),
            release_id: "r-1".into(),
            requested_by: requested_by.into(),
            requested_at: "2027-01-15T08:00:00Z".into(),
            path: "standard",
            authoriser: None,
            evidence: None,
            devices: 3,
            waves: Vec::new(),
            prerequisite_releases: Vec::new(),
            decisions: approvers
                .iter()
                .map(|a| Decision {
                    operator: (*a).into(),
                    time: "2027-01-15T09:00:00Z".into(),
                    decision: "approve".into(),
                    comment: String::new(),
                })
                .collect(),
            status,
            needs: String::new(),
            finding_id: None,
            finding_tier: None,
            proposed_shape: None,
            shape: None,
            shape_changed_by: None,
            checklist: None,
            checklist_missing: Vec::new(),
            boot_critical: None,
            deferred: None,
        }
    }

    #[test]
    fn a_request_shows_its_finding_shape_change_and_checklist() {
        let mut r = view("ana", "awaiting_approval", &[]);
        assert_eq!(remediation_lines(&r), ["Checklist: none"]);
        r.finding_id = Some("SEC-1".into());
        r.finding_tier = Some(1);
        r.proposed_shape = Some("accelerated");
        r.shape = Some("standard");
        r.shape_changed_by = Some("ana".into());
        r.boot_critical = Some("boot-critical: bootloader".into());
        r.checklist = Some(Checklist {
            owner: "ana".into(),
            regression_test: "CI 1".into(),
            ..Checklist::default()
        });
        let lines = remediation_lines(&r);
        assert_eq!(
            lines[0],
            "Remediates finding SEC-1 (tier 1) · its tier proposed accelerated; ana chose standard"
        );
        assert_eq!(
            lines[1],
            "Stricter plan and gates (boot-critical: bootloader)"
        );
        assert!(lines.contains(&"Checklist · regression test: CI 1".to_owned()));
        assert!(lines.contains(&"Checklist · support brief: (missing)".to_owned()));
    }

    #[test]
    fn the_view_says_why_an_operator_cannot_approve() {
        let open = view("ana", "awaiting_approval", &["ben"]);
        assert!(
            cannot_approve(&open, "ana")
                .expect("own request")
                .contains("nobody approves their own request")
        );
        assert!(
            cannot_approve(&open, "ben")
                .expect("twice")
                .contains("distinct operators")
        );
        assert_eq!(cannot_approve(&open, "cleo"), None);
        let done = view("ana", "approved", &["ben", "cleo"]);
        assert_eq!(
            cannot_approve(&done, "dan").as_deref(),
            Some("ro-1 is approved")
        );
    }

    #[test]
    fn only_in_process_engines_with_an_embedded_broker_dispatch_here() {
        let engines = LocalEngines::default();
        let embedded = BrokerKind::Embedded("mqtt://127.0.0.1:1883".into());
        let local = LocalDispatch::for_backend(Some(&engines), &embedded, 60.0)
            .expect("the demo dispatches here");
        assert_eq!(local.broker_url, "mqtt://127.0.0.1:1883");
        assert_eq!(local.time_scale, 60.0);
        assert!(LocalDispatch::for_backend(None, &embedded, 60.0).is_none());
        for broker in [
            BrokerKind::None,
            BrokerKind::External("mqtt://fleet:1883".into()),
        ] {
            assert!(LocalDispatch::for_backend(Some(&engines), &broker, 1.0).is_none());
        }
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(
            refusal_words(&Refusal::Field {
                field: "authoriser".into(),
                message: "an emergency request names its authoriser".into()
            }),
            "authoriser: an emergency request names its authoriser"
        );
        assert_eq!(refusal_words(&Refusal::Forbidden("no".into())), "no");
    }
}
