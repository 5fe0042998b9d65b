//! The DDI hub: which controller (device) has which action, what each one last reported, and
//! the events a rollout engine consumes.
//!
//! The hub is the DDI counterpart of the MQTT outbox and inbound queue: a caller assigns a
//! deployment to a controller ([`DdiHub::assign`]) or cancels it ([`DdiHub::cancel`]); devices
//! find out on their next poll, fetch the deployment, download, and report feedback, which the
//! hub validates against the action's state and turns into [`DdiEvent`]s on a bounded channel.
//! A state change and its event go together: when the channel is full the request is refused
//! with 503 and the device reports again later, so nothing a device said is applied without
//! reaching the consumer, and memory stays bounded.
//!
//! Deliberately not here: persistence (the consumer records events in the cache), gates, and
//! more than one open action per controller (hawkBit's default; multi-assignment is off).

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

use super::wire::{
    self, ConfigData, ConfigMode, Execution, Feedback, FeedbackStatus, Finished, HandlingType,
    MAX_TELEMETRY_EVENTS, MaintenanceWindow, TelemetryEntry, TelemetryUpload,
};
use crate::link::protocol::{
    MAX_CLOCK_SKEW_SECS, MAX_ID_LEN, PROTOCOL_VERSION, Telemetry, TelemetryEvent, is_valid_id,
};
use convoy_core::time::Timestamp;
use std::time::Instant;

/// One file of a deployment, with the digests DDI clients check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DdiArtifact {
    pub filename: String,
    pub size_bytes: u64,
    pub sha1_hex: String,
    pub md5_hex: String,
    pub sha256_hex: String,
    /// Where devices download it (the artifact server, a CDN, ...); must honour `Range`.
    pub url: String,
}

impl DdiArtifact {
    /// Reads `path` once and computes its three digests.
    pub fn from_file(path: &Path, filename: &str, url: &str) -> Result<Self> {
        let mut file =
            File::open(path).with_context(|| format!("opening artifact {}", path.display()))?;
        let mut sha1 = sha1::Sha1::default();
        let mut md5 = md5::Md5::default();
        let mut sha256 = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size_bytes = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading artifact {}", path.display()))?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            sha1::Digest::update(&mut sha1, chunk);
            md5::Digest::update(&mut md5, chunk);
            sha256.update(chunk);
            size_bytes += n as u64;
        }
        Ok(Self {
            filename: filename.to_owned(),
            size_bytes,
            sha1_hex: hex::encode(sha1::Digest::finalize(sha1)),
            md5_hex: hex::encode(md5::Digest::finalize(md5)),
            sha256_hex: hex::encode(sha256.finalize()),
            url: url.to_owned(),
        })
    }
}

/// What a controller is asked to install: one software module (DDI chunk) of a release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DdiDeployment {
    /// The Convoy release id, carried back in events.
    pub release_id: String,
    /// The DDI chunk's `part` (module type), e.g. `firmware` or `os`.
    pub part: String,
    pub name: String,
    pub version: String,
    pub artifacts: Vec<DdiArtifact>,
    /// Key/value pairs devices see as chunk metadata (e.g. the signed manifest's URL).
    pub metadata: Vec<(String, String)>,
    pub download: HandlingType,
    pub update: HandlingType,
    pub maintenance_window: Option<MaintenanceWindow>,
}

/// How an action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Stopped: the device confirmed a cancel, or reported the deployment as canceled.
    Canceled,
    /// The device declined the deployment.
    Rejected,
}

/// Where an action stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionState {
    Open,
    /// A cancel was asked for (with its own id) and the device has not confirmed it yet.
    Canceling {
        cancel_id: u64,
    },
    Closed(Outcome),
}

/// What the hub tells its consumer.
#[derive(Clone, Debug, PartialEq)]
pub enum DdiEvent {
    /// A controller polled for the first time (created with the gateway token).
    Registered { controller: String },
    /// Feedback on a deployment; `closed` set when it ended the action.
    Feedback {
        controller: String,
        action_id: u64,
        release_id: String,
        status: FeedbackStatus,
        closed: Option<Outcome>,
    },
    /// The device's answer to a cancel: `stopped` when the action is now canceled, false when
    /// the device refused the cancel (the action is open again).
    CancelFeedback {
        controller: String,
        action_id: u64,
        cancel_id: u64,
        status: FeedbackStatus,
        stopped: bool,
    },
    /// Attributes the device uploaded.
    ConfigData {
        controller: String,
        mode: ConfigMode,
        data: BTreeMap<String, String>,
    },
    /// Health telemetry the device uploaded (`POST …/telemetry`), checked as the MQTT link
    /// checks a telemetry message, as the protocol v1 messages an MQTT device would have sent:
    /// `device_id` is the controller, `seq` counts the controller's events in this hub.
    Telemetry {
        controller: String,
        messages: Vec<Telemetry>,
    },
}

/// Why a device request was refused; the server maps each to an HTTP status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DdiError {
    /// 401: no or wrong token for this controller.
    #[error(
        "authentication required: send `Authorization: TargetToken <token>` or `GatewayToken <token>`"
    )]
    Unauthorized,
    /// 404: unknown controller or action (or one of another controller).
    #[error("{0}")]
    NotFound(String),
    /// 410: feedback for an action that is already closed.
    #[error("{0}")]
    Gone(String),
    /// 400: the body contradicts the action (the field at fault is named).
    #[error("{message}")]
    BadField { field: String, message: String },
    /// 503: the consumer is behind; report again later.
    #[error("the server is busy; report again later")]
    Busy,
}

/// Settings of a hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// The polling interval devices are told.
    pub sleep_secs: u64,
    /// Events waiting for the consumer before devices get 503.
    pub events_capacity: usize,
    /// A token every controller may use (`GatewayToken`); controllers that poll with it are
    /// created on first contact.
    pub gateway_token: Option<String>,
    /// Ask each controller for its attributes until it has sent them once.
    pub request_config: bool,
    /// Take health telemetry (`POST …/telemetry`): on when a consumer judges it (the rollout
    /// engine's gates); off, the route answers 404 saying so.
    pub telemetry: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            sleep_secs: 300,
            events_capacity: 4096,
            gateway_token: None,
            request_config: true,
            telemetry: false,
        }
    }
}

#[derive(Clone, Debug)]
struct Action {
    deployment: Arc<DdiDeployment>,
    state: ActionState,
    last_status: Option<FeedbackStatus>,
}

#[derive(Clone, Debug, Default)]
struct Controller {
    token_sha256: Option<[u8; 32]>,
    polls: u64,
    attributes: BTreeMap<String, String>,
    config_received: bool,
    actions: BTreeMap<u64, Action>,
    /// Telemetry events taken from this controller (the `seq` of the next one).
    telemetry_seq: u64,
}

impl Controller {
    /// The action that is not closed, if any (at most one).
    fn active(&self) -> Option<(u64, &Action)> {
        self.actions
            .iter()
            .find(|(_, a)| !matches!(a.state, ActionState::Closed(_)))
            .map(|(id, a)| (*id, a))
    }
}

/// A read-only view of one controller, for tests, the console and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerView {
    pub id: String,
    pub polls: u64,
    pub attributes: BTreeMap<String, String>,
    /// Every action by id: its release, state and last reported execution.
    pub actions: Vec<ActionView>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionView {
    pub id: u64,
    pub release_id: String,
    pub state: ActionState,
    pub last_execution: Option<Execution>,
    pub last_details: Vec<String>,
}

/// What a poll tells the device to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollWork {
    pub deployment: Option<u64>,
    pub cancel: Option<u64>,
    pub config: bool,
}

/// The hub; share it as `Arc<DdiHub>` between the server and the consumer.
#[derive(Debug)]
pub struct DdiHub {
    config: HubConfig,
    gateway_sha256: Option<[u8; 32]>,
    state: Mutex<State>,
    events: mpsc::Sender<DdiEvent>,
    clock: Mutex<HubClock>,
}

/// The time device timestamps are checked against: the wall clock, or the run clock of a
/// sped-up rollout ([`DdiHub::set_clock`]), as the MQTT link's clock runs.
#[derive(Clone, Copy, Debug)]
struct HubClock {
    start: Timestamp,
    began: Instant,
    scale: f64,
}

impl HubClock {
    fn now(&self) -> Timestamp {
        let secs = self.began.elapsed().as_secs_f64() * self.scale;
        Timestamp(self.start.0.saturating_add(secs as i64))
    }
}

#[derive(Debug, Default)]
struct State {
    controllers: BTreeMap<String, Controller>,
    next_id: u64,
}

impl State {
    fn action(&self, controller: &str, action_id: u64) -> Result<&Action, DdiError> {
        self.controllers
            .get(controller)
            .and_then(|c| c.actions.get(&action_id))
            .ok_or_else(|| no_action(controller, action_id))
    }

    fn action_mut(&mut self, controller: &str, action_id: u64) -> Result<&mut Action, DdiError> {
        self.controllers
            .get_mut(controller)
            .and_then(|c| c.actions.get_mut(&action_id))
            .ok_or_else(|| no_action(controller, action_id))
    }
}

fn no_action(controller: &str, action_id: u64) -> DdiError {
    DdiError::NotFound(format!(
        "controller {controller:?} has no action {action_id}"
    ))
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Controller ids as hawkBit allows them: 1–64 characters of letters, digits, `-`, `_`, `.`,
/// `:`.
pub fn check_controller_id(id: &str) -> Result<(), DdiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(DdiError::NotFound(format!(
            "controller id {id:?} is not valid (1-64 letters, digits, '-', '_', '.', ':')"
        )))
    }
}

impl DdiHub {
    /// A hub and the receiving end of its events.
    pub fn new(config: HubConfig) -> (Arc<Self>, mpsc::Receiver<DdiEvent>) {
        let (tx, rx) = mpsc::channel(config.events_capacity.max(1));
        let hub = Self {
            gateway_sha256: config.gateway_token.as_deref().map(sha256),
            config,
            state: Mutex::new(State {
                controllers: BTreeMap::new(),
                next_id: 1,
            }),
            events: tx,
            clock: Mutex::new(HubClock {
                start: crate::now(),
                began: Instant::now(),
                scale: 1.0,
            }),
        };
        (Arc::new(hub), rx)
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Runs the hub's clock from `now` at `scale` simulated seconds per wall second (the
    /// engine's run clock, so a sped-up rollout's devices are not refused as clock skew).
    pub fn set_clock(&self, now: Timestamp, scale: f64) {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        *self.clock.lock().unwrap_or_else(PoisonError::into_inner) = HubClock {
            start: now,
            began: Instant::now(),
            scale,
        };
    }

    /// The hub's clock (see [`Self::set_clock`]).
    pub fn now(&self) -> Timestamp {
        self.clock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .now()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a controller with its own token (`TargetToken`), or none (then only the
    /// gateway token admits it). Registering again replaces the token.
    pub fn register(&self, controller: &str, target_token: Option<&str>) -> Result<()> {
        check_controller_id(controller).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut st = self.lock();
        let c = st.controllers.entry(controller.to_owned()).or_default();
        c.token_sha256 = target_token.map(sha256);
        Ok(())
    }

    /// Gives `controller` a deployment; it sees it on its next poll. Refused while the
    /// controller has an action that is not closed.
    pub fn assign(&self, controller: &str, deployment: Arc<DdiDeployment>) -> Result<u64> {
        if deployment.artifacts.is_empty() {
            bail!("a deployment needs at least one artifact");
        }
        let mut st = self.lock();
        let id = st.next_id;
        let Some(c) = st.controllers.get_mut(controller) else {
            bail!("no controller {controller:?}: register it first, or let it poll once");
        };
        if let Some((open, a)) = c.active() {
            bail!(
                "controller {controller:?} still has action {open} (release {}) open",
                a.deployment.release_id
            );
        }
        c.actions.insert(
            id,
            Action {
                deployment,
                state: ActionState::Open,
                last_status: None,
            },
        );
        st.next_id += 1;
        Ok(id)
    }

    /// Asks the controller to stop `action_id`; returns the cancel action's id.
    pub fn cancel(&self, controller: &str, action_id: u64) -> Result<u64> {
        let mut st = self.lock();
        let id = st.next_id;
        let action = st.action_mut(controller, action_id)?;
        match action.state {
            ActionState::Open => {}
            ActionState::Canceling { cancel_id } => return Ok(cancel_id),
            ActionState::Closed(outcome) => {
                bail!("action {action_id} is already closed ({outcome:?})")
            }
        }
        action.state = ActionState::Canceling { cancel_id: id };
        st.next_id += 1;
        Ok(id)
    }

    /// A view of one controller.
    pub fn controller(&self, controller: &str) -> Option<ControllerView> {
        let st = self.lock();
        let c = st.controllers.get(controller)?;
        Some(ControllerView {
            id: controller.to_owned(),
            polls: c.polls,
            attributes: c.attributes.clone(),
            actions: c
                .actions
                .iter()
                .map(|(id, a)| ActionView {
                    id: *id,
                    release_id: a.deployment.release_id.clone(),
                    state: a.state,
                    last_execution: a.last_status.as_ref().map(|s| s.execution),
                    last_details: a
                        .last_status
                        .as_ref()
                        .map(|s| s.details.clone())
                        .unwrap_or_default(),
                })
                .collect(),
        })
    }

    /// Checks the `Authorization` header for `controller`. With the gateway token an unknown
    /// controller is admitted (and created at its poll); with a target token it must be
    /// registered with that token.
    pub fn authorize(&self, controller: &str, authorization: Option<&str>) -> Result<(), DdiError> {
        let Some(header) = authorization else {
            return Err(DdiError::Unauthorized);
        };
        let (scheme, token) = header.split_once(' ').ok_or(DdiError::Unauthorized)?;
        let presented = sha256(token.trim());
        match scheme {
            "GatewayToken" if self.gateway_sha256 == Some(presented) => Ok(()),
            "TargetToken" => {
                let st = self.lock();
                match st.controllers.get(controller).and_then(|c| c.token_sha256) {
                    Some(t) if t == presented => Ok(()),
                    _ => Err(DdiError::Unauthorized),
                }
            }
            _ => Err(DdiError::Unauthorized),
        }
    }

    /// Checks the `Authorization` header for a request that names no controller: only the
    /// gateway token, which speaks for every controller, passes.
    pub fn authorize_gateway(&self, authorization: Option<&str>) -> Result<(), DdiError> {
        let (scheme, token) = authorization
            .and_then(|h| h.split_once(' '))
            .ok_or(DdiError::Unauthorized)?;
        if scheme == "GatewayToken" && self.gateway_sha256 == Some(sha256(token.trim())) {
            Ok(())
        } else {
            Err(DdiError::Unauthorized)
        }
    }

    /// Reserves room for one event; `None` when nobody listens (then no event is sent).
    fn reserve(&self) -> Result<Option<mpsc::Permit<'_, DdiEvent>>, DdiError> {
        match self.events.try_reserve() {
            Ok(p) => Ok(Some(p)),
            Err(mpsc::error::TrySendError::Full(())) => Err(DdiError::Busy),
            Err(mpsc::error::TrySendError::Closed(())) => Ok(None),
        }
    }

    /// A poll of the controller base: counts it, creates the controller on first contact and
    /// says what to fetch next.
    pub fn poll(&self, controller: &str) -> Result<PollWork, DdiError> {
        check_controller_id(controller)?;
        // Only a first poll makes an event; later polls are never refused for a busy consumer.
        let known = self.lock().controllers.contains_key(controller);
        let permit = if known { None } else { self.reserve()? };
        let mut st = self.lock();
        let created = !st.controllers.contains_key(controller);
        let c = st.controllers.entry(controller.to_owned()).or_default();
        c.polls += 1;
        let mut work = PollWork {
            deployment: None,
            cancel: None,
            config: self.config.request_config && !c.config_received,
        };
        if let Some((id, a)) = c.active() {
            match a.state {
                ActionState::Canceling { cancel_id } => work.cancel = Some(cancel_id),
                _ => work.deployment = Some(id),
            }
        }
        drop(st);
        if created && let Some(p) = permit {
            p.send(DdiEvent::Registered {
                controller: controller.to_owned(),
            });
        }
        Ok(work)
    }

    /// The deployment of an action that is open (or being canceled).
    pub fn deployment(
        &self,
        controller: &str,
        action_id: u64,
    ) -> Result<(Arc<DdiDeployment>, Option<FeedbackStatus>), DdiError> {
        let st = self.lock();
        let a = st.action(controller, action_id)?;
        Ok((Arc::clone(&a.deployment), a.last_status.clone()))
    }

    /// Feedback on a deployment.
    pub fn feedback(
        &self,
        controller: &str,
        action_id: u64,
        feedback: Feedback,
    ) -> Result<(), DdiError> {
        check_body_id(feedback.id.as_deref(), &[action_id])?;
        let status = feedback.status;
        let closed = match (status.execution, status.result.finished) {
            (Execution::Closed, Finished::Success) => Some(Outcome::Success),
            (Execution::Closed, Finished::Failure) => Some(Outcome::Failure),
            (Execution::Closed, Finished::None) => {
                return Err(DdiError::BadField {
                    field: "status.result.finished".into(),
                    message: "a closed action must finish with success or failure, not none".into(),
                });
            }
            (Execution::Canceled, _) => Some(Outcome::Canceled),
            (Execution::Rejected, _) => Some(Outcome::Rejected),
            _ => None,
        };
        let permit = self.reserve()?;
        let mut st = self.lock();
        let a = st.action_mut(controller, action_id)?;
        if let ActionState::Closed(outcome) = a.state {
            return Err(DdiError::Gone(format!(
                "action {action_id} is closed ({outcome:?}); feedback is no longer taken"
            )));
        }
        if let Some(outcome) = closed {
            a.state = ActionState::Closed(outcome);
        }
        a.last_status = Some(status.clone());
        let release_id = a.deployment.release_id.clone();
        drop(st);
        if let Some(p) = permit {
            p.send(DdiEvent::Feedback {
                controller: controller.to_owned(),
                action_id,
                release_id,
                status,
                closed,
            });
        }
        Ok(())
    }

    /// The action a cancel id stops.
    pub fn cancel_target(&self, controller: &str, cancel_id: u64) -> Result<u64, DdiError> {
        let st = self.lock();
        st.controllers
            .get(controller)
            .and_then(|c| {
                c.actions.iter().find_map(|(id, a)| {
                    (a.state == ActionState::Canceling { cancel_id }).then_some(*id)
                })
            })
            .ok_or_else(|| {
                DdiError::NotFound(format!(
                    "controller {controller:?} has no open cancel action {cancel_id}"
                ))
            })
    }

    /// The device's answer to a cancel action.
    pub fn cancel_feedback(
        &self,
        controller: &str,
        cancel_id: u64,
        feedback: Feedback,
    ) -> Result<(), DdiError> {
        let action_id = self.cancel_target(controller, cancel_id)?;
        // The crates.io `hawkbit` client sends the stopped action's id, others the cancel's.
        check_body_id(feedback.id.as_deref(), &[cancel_id, action_id])?;
        let status = feedback.status;
        let stopped = match (status.execution, status.result.finished) {
            (Execution::Closed, Finished::Success) | (Execution::Canceled, _) => Some(true),
            (Execution::Closed | Execution::Rejected, _) => Some(false),
            _ => None,
        };
        let permit = self.reserve()?;
        let mut st = self.lock();
        let a = st
            .action_mut(controller, action_id)
            .ok()
            .filter(|a| a.state == ActionState::Canceling { cancel_id })
            .ok_or_else(|| {
                DdiError::Gone(format!("cancel action {cancel_id} is no longer open"))
            })?;
        match stopped {
            Some(true) => a.state = ActionState::Closed(Outcome::Canceled),
            Some(false) => a.state = ActionState::Open,
            None => {}
        }
        drop(st);
        if let Some(p) = permit {
            p.send(DdiEvent::CancelFeedback {
                controller: controller.to_owned(),
                action_id,
                cancel_id,
                status,
                stopped: stopped == Some(true),
            });
        }
        Ok(())
    }

    /// Attributes uploaded by the device.
    pub fn config_data(&self, controller: &str, upload: ConfigData) -> Result<(), DdiError> {
        for (key, value) in &upload.data {
            if key.is_empty() || key.len() > 128 || value.len() > 512 {
                return Err(DdiError::BadField {
                    field: format!("data.{key}"),
                    message: "attribute keys must be 1-128 bytes and values at most 512".into(),
                });
            }
        }
        let mode = upload.mode.unwrap_or(ConfigMode::Merge);
        let permit = self.reserve()?;
        let mut st = self.lock();
        let c = st.controllers.get_mut(controller).ok_or_else(|| {
            DdiError::NotFound(format!("controller {controller:?} has never polled"))
        })?;
        match mode {
            ConfigMode::Merge => c.attributes.extend(upload.data.clone()),
            ConfigMode::Replace => c.attributes.clone_from(&upload.data),
            ConfigMode::Remove => {
                for k in upload.data.keys() {
                    c.attributes.remove(k);
                }
            }
        }
        c.config_received = true;
        drop(st);
        if let Some(p) = permit {
            p.send(DdiEvent::ConfigData {
                controller: controller.to_owned(),
                mode,
                data: upload.data,
            });
        }
        Ok(())
    }
}

impl DdiHub {
    /// Health telemetry uploaded by the device: every event is checked first (a single bad one
    /// refuses the upload, naming it), then all go to the consumer in one event. Returns how
    /// many were taken.
    pub fn telemetry(&self, controller: &str, upload: TelemetryUpload) -> Result<usize, DdiError> {
        if !self.config.telemetry {
            return Err(DdiError::NotFound(
                "this endpoint takes no telemetry: health telemetry is judged by a rollout's gates (convoy rollout run --ddi-listen)".into(),
            ));
        }
        let n = upload.events.len();
        if n == 0 || n > MAX_TELEMETRY_EVENTS {
            return Err(DdiError::BadField {
                field: "events".into(),
                message: format!("{n} events: send 1 to {MAX_TELEMETRY_EVENTS} per request"),
            });
        }
        let now = self.now();
        for (k, entry) in upload.events.iter().enumerate() {
            check_telemetry(entry, now).map_err(|(field, message)| DdiError::BadField {
                field: format!("events[{k}].{field}"),
                message,
            })?;
        }
        let permit = self.reserve()?;
        let mut st = self.lock();
        let c = st.controllers.get_mut(controller).ok_or_else(|| {
            DdiError::NotFound(format!(
                "controller {controller:?} has never polled: poll once before sending telemetry"
            ))
        })?;
        let first = c.telemetry_seq;
        c.telemetry_seq += n as u64;
        drop(st);
        let messages = upload
            .events
            .into_iter()
            .zip(first..)
            .map(|(TelemetryEntry { ts, event }, seq)| Telemetry {
                v: PROTOCOL_VERSION,
                device_id: controller.to_owned(),
                ts,
                seq,
                event,
            })
            .collect();
        if let Some(p) = permit {
            p.send(DdiEvent::Telemetry {
                controller: controller.to_owned(),
                messages,
            });
        }
        Ok(n)
    }
}

/// The checks the MQTT link makes of a telemetry message's values (docs/PROTOCOL.md), plus one
/// of its own: a metric's value must not be negative (a count or a level; the health windows
/// would ignore it). `Err((field, message))`.
fn check_telemetry(entry: &TelemetryEntry, now: Timestamp) -> Result<(), (String, String)> {
    let bad = |field: &str, message: String| Err((field.to_owned(), message));
    if entry.ts.secs() < 0 || entry.ts.secs_since(now) > MAX_CLOCK_SKEW_SECS {
        return bad(
            "ts",
            format!(
                "timestamp {} is out of range (before 1970, or more than {} h ahead of the server's clock, {})",
                entry.ts.secs(),
                MAX_CLOCK_SKEW_SECS / 3600,
                now.secs()
            ),
        );
    }
    match &entry.event {
        TelemetryEvent::Battery { pct } if *pct > 100 => {
            bad("event.pct", format!("{pct} is over 100"))
        }
        TelemetryEvent::UpdateProgress {
            release_id,
            bytes_done,
            bytes_total,
            ..
        } => {
            if !is_valid_id(release_id) {
                bad(
                    "event.release_id",
                    format!("invalid id {:?}", truncate(release_id)),
                )
            } else if bytes_done > bytes_total {
                bad(
                    "event.bytes_done",
                    format!("{bytes_done} exceeds bytes_total {bytes_total}"),
                )
            } else {
                Ok(())
            }
        }
        TelemetryEvent::Metric { name, value } => {
            if !is_valid_id(name) {
                bad(
                    "event.name",
                    format!("invalid metric name {:?}", truncate(name)),
                )
            } else if !value.is_finite() || *value < 0.0 {
                bad(
                    "event.value",
                    format!("{value} is not a finite number at least 0"),
                )
            } else {
                Ok(())
            }
        }
        TelemetryEvent::Crash { process } if process.is_empty() || process.len() > MAX_ID_LEN => {
            bad(
                "event.process",
                format!("empty or longer than {MAX_ID_LEN} bytes"),
            )
        }
        TelemetryEvent::Battery { .. }
        | TelemetryEvent::Crash { .. }
        | TelemetryEvent::Heartbeat { .. }
        | TelemetryEvent::Boot { .. }
        | TelemetryEvent::Reconnect { .. } => Ok(()),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A body's `id`, when present, must name the action of the path.
fn check_body_id(id: Option<&str>, allowed: &[u64]) -> Result<(), DdiError> {
    match id {
        None => Ok(()),
        Some(id) if id.parse::<u64>().is_ok_and(|n| allowed.contains(&n)) => Ok(()),
        Some(id) => Err(DdiError::BadField {
            field: "id".into(),
            message: format!("id {id:?} does not name the action of the request's path"),
        }),
    }
}

/// The deployment base body for an action.
pub fn deployment_body(
    action_id: u64,
    d: &DdiDeployment,
    last: Option<&FeedbackStatus>,
) -> wire::DeploymentBase {
    wire::DeploymentBase {
        id: action_id.to_string(),
        deployment: wire::Deployment {
            download: d.download,
            update: d.update,
            maintenance_window: d.maintenance_window,
            chunks: vec![wire::Chunk {
                part: d.part.clone(),
                name: d.name.clone(),
                version: d.version.clone(),
                metadata: d
                    .metadata
                    .iter()
                    .map(|(key, value)| wire::Metadata {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                artifacts: d
                    .artifacts
                    .iter()
                    .map(|a| {
                        let link = Some(wire::Href {
                            href: a.url.clone(),
                        });
                        let https = a.url.starts_with("https:");
                        wire::Artifact {
                            filename: a.filename.clone(),
                            hashes: wire::Hashes {
                                sha1: a.sha1_hex.clone(),
                                md5: a.md5_hex.clone(),
                                sha256: a.sha256_hex.clone(),
                            },
                            size: a.size_bytes,
                            links: wire::ArtifactLinks {
                                download_http: if https { None } else { link.clone() },
                                download_https: if https { link } else { None },
                            },
                        }
                    })
                    .collect(),
            }],
        },
        action_history: last.map(|s| wire::ActionHistory {
            status: format!("{:?}", s.execution).to_lowercase(),
            messages: s.details.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::ddi::wire::{FeedbackResult, Progress};

    fn deployment() -> Arc<DdiDeployment> {
        Arc::new(DdiDeployment {
            release_id: "fw-2.1.0".into(),
            part: "firmware".into(),
            name: "app".into(),
            version: "2.1.0".into(),
            artifacts: vec![DdiArtifact {
                filename: "app.bin".into(),
                size_bytes: 3,
                sha1_hex: "a".into(),
                md5_hex: "b".into(),
                sha256_hex: "c".into(),
                url: "http://127.0.0.1:1/app.bin".into(),
            }],
            metadata: vec![],
            download: HandlingType::Forced,
            update: HandlingType::Forced,
            maintenance_window: None,
        })
    }

    fn status(execution: Execution, finished: Finished) -> Feedback {
        Feedback {
            id: None,
            time: None,
            status: FeedbackStatus {
                execution,
                result: FeedbackResult {
                    finished,
                    progress: Some(Progress { cnt: 1, of: 2 }),
                },
                details: vec!["step".into()],
                code: None,
            },
        }
    }

    #[test]
    fn an_action_goes_from_poll_to_closed_and_every_step_is_an_event() {
        let (hub, mut rx) = DdiHub::new(HubConfig::default());
        let w = hub.poll("van-1").expect("poll");
        assert_eq!(
            w,
            PollWork {
                deployment: None,
                cancel: None,
                config: true
            }
        );
        assert_eq!(
            rx.try_recv().expect("event"),
            DdiEvent::Registered {
                controller: "van-1".into()
            }
        );
        let id = hub.assign("van-1", deployment()).expect("assign");
        assert!(
            hub.assign("van-1", deployment()).is_err(),
            "one open action"
        );
        assert_eq!(hub.poll("van-1").expect("poll").deployment, Some(id));
        hub.feedback("van-1", id, status(Execution::Proceeding, Finished::None))
            .expect("proceeding");
        hub.feedback("van-1", id, status(Execution::Closed, Finished::Success))
            .expect("closed");
        let err = hub
            .feedback("van-1", id, status(Execution::Proceeding, Finished::None))
            .expect_err("closed action");
        assert!(matches!(err, DdiError::Gone(_)), "{err:?}");
        assert_eq!(hub.poll("van-1").expect("poll").deployment, None);
        let kinds: Vec<Option<Outcome>> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| match e {
                DdiEvent::Feedback { closed, .. } => closed,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(kinds, [None, Some(Outcome::Success)]);
    }

    #[test]
    fn a_full_channel_refuses_feedback_without_applying_it() {
        let (hub, mut rx) = DdiHub::new(HubConfig {
            events_capacity: 1,
            ..HubConfig::default()
        });
        hub.poll("van-1").expect("poll"); // Registered fills the channel.
        let id = hub.assign("van-1", deployment()).expect("assign");
        let err = hub
            .feedback("van-1", id, status(Execution::Closed, Finished::Success))
            .expect_err("busy");
        assert_eq!(err, DdiError::Busy);
        let view = hub.controller("van-1").expect("known");
        assert_eq!(view.actions[0].state, ActionState::Open, "not applied");
        rx.try_recv().expect("registered");
        hub.feedback("van-1", id, status(Execution::Closed, Finished::Success))
            .expect("room again");
        assert_eq!(
            hub.controller("van-1").expect("known").actions[0].state,
            ActionState::Closed(Outcome::Success)
        );
    }

    #[test]
    fn contradicting_feedback_names_the_field() {
        let (hub, _rx) = DdiHub::new(HubConfig::default());
        hub.poll("van-1").expect("poll");
        let id = hub.assign("van-1", deployment()).expect("assign");
        let mut fb = status(Execution::Closed, Finished::None);
        let err = hub.feedback("van-1", id, fb.clone()).expect_err("none");
        assert!(
            matches!(&err, DdiError::BadField { field, .. } if field == "status.result.finished")
        );
        fb.status.result.finished = Finished::Success;
        fb.id = Some("999".into());
        let err = hub.feedback("van-1", id, fb).expect_err("wrong id");
        assert!(matches!(&err, DdiError::BadField { field, .. } if field == "id"));
        let err = hub
            .feedback("van-2", id, status(Execution::Proceeding, Finished::None))
            .expect_err("other controller");
        assert!(matches!(err, DdiError::NotFound(_)));
    }

    #[test]
    fn a_refused_cancel_reopens_the_action_and_a_confirmed_one_closes_it() {
        let (hub, _rx) = DdiHub::new(HubConfig::default());
        hub.poll("van-1").expect("poll");
        let id = hub.assign("van-1", deployment()).expect("assign");
        let cancel = hub.cancel("van-1", id).expect("cancel");
        let w = hub.poll("van-1").expect("poll");
        assert_eq!((w.deployment, w.cancel), (None, Some(cancel)));
        assert_eq!(hub.cancel_target("van-1", cancel), Ok(id));
        hub.cancel_feedback("van-1", cancel, status(Execution::Rejected, Finished::None))
            .expect("refused");
        assert_eq!(hub.poll("van-1").expect("poll").deployment, Some(id));
        let cancel = hub.cancel("van-1", id).expect("cancel again");
        let mut fb = status(Execution::Closed, Finished::Success);
        fb.id = Some(id.to_string()); // the stopped action's id, as the hawkbit crate sends it
        hub.cancel_feedback("van-1", cancel, fb).expect("stopped");
        assert_eq!(
            hub.controller("van-1").expect("known").actions[0].state,
            ActionState::Closed(Outcome::Canceled)
        );
    }

    #[test]
    fn telemetry_is_checked_numbered_per_controller_and_refused_whole() {
        let (hub, mut rx) = DdiHub::new(HubConfig {
            telemetry: true,
            ..HubConfig::default()
        });
        let now = Timestamp(1_800_000_000);
        hub.set_clock(now, 1.0);
        let entry = |ts: i64, event: TelemetryEvent| TelemetryEntry {
            ts: Timestamp(ts),
            event,
        };
        let beat = TelemetryEvent::Heartbeat { uptime_secs: 5 };
        let upload = |events: Vec<TelemetryEntry>| TelemetryUpload { events };
        let err = hub
            .telemetry("van-1", upload(vec![entry(now.0, beat.clone())]))
            .expect_err("never polled");
        assert!(matches!(err, DdiError::NotFound(_)), "{err:?}");
        hub.poll("van-1").expect("poll");
        rx.try_recv().expect("registered");
        for _ in 0..2 {
            assert_eq!(
                hub.telemetry(
                    "van-1",
                    upload(vec![
                        entry(now.0 - 60, beat.clone()),
                        entry(now.0, beat.clone())
                    ])
                ),
                Ok(2)
            );
        }
        let seqs: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
            .flat_map(|e| match e {
                DdiEvent::Telemetry { messages, .. } => messages.into_iter().map(|t| t.seq),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        let bad = [
            (entry(now.0 + 2 * 86_400, beat.clone()), "events[1].ts"),
            (
                entry(
                    now.0,
                    TelemetryEvent::Metric {
                        name: "m".into(),
                        value: -0.5,
                    },
                ),
                "events[1].event.value",
            ),
            (
                entry(
                    now.0,
                    TelemetryEvent::Metric {
                        name: "m".into(),
                        value: f64::INFINITY,
                    },
                ),
                "events[1].event.value",
            ),
            (
                entry(now.0, TelemetryEvent::Battery { pct: 101 }),
                "events[1].event.pct",
            ),
            (
                entry(
                    now.0,
                    TelemetryEvent::Crash {
                        process: String::new(),
                    },
                ),
                "events[1].event.process",
            ),
        ];
        for (e, field) in bad {
            let err = hub
                .telemetry("van-1", upload(vec![entry(now.0, beat.clone()), e]))
                .expect_err(field);
            assert!(
                matches!(&err, DdiError::BadField { field: f, .. } if f == field),
                "{err:?}"
            );
        }
        assert!(
            rx.try_recv().is_err(),
            "nothing of a refused upload is taken"
        );
        let (quiet, _rx) = DdiHub::new(HubConfig::default());
        quiet.poll("van-1").expect("poll");
        assert!(matches!(
            quiet.telemetry("van-1", upload(vec![entry(now.0, beat)])),
            Err(DdiError::NotFound(_))
        ));
    }

    #[test]
    fn tokens_admit_only_their_controller() {
        let (hub, _rx) = DdiHub::new(HubConfig {
            gateway_token: Some("gw-secret".into()),
            ..HubConfig::default()
        });
        hub.register("van-1", Some("t1")).expect("register");
        assert_eq!(hub.authorize("van-1", Some("TargetToken t1")), Ok(()));
        assert_eq!(
            hub.authorize("van-2", Some("TargetToken t1")),
            Err(DdiError::Unauthorized)
        );
        assert_eq!(
            hub.authorize("van-9", Some("GatewayToken gw-secret")),
            Ok(())
        );
        assert_eq!(
            hub.authorize("van-1", Some("GatewayToken nope")),
            Err(DdiError::Unauthorized)
        );
        assert_eq!(hub.authorize("van-1", None), Err(DdiError::Unauthorized));
        assert!(check_controller_id("../etc").is_err());
    }
}
