//! `convoy gui --server URL`: the console attached to a `convoy serve` over its API, with a local
//! copy of what the views read, so that every view works unchanged on the copy and, when the
//! link drops, the console keeps showing the last known state and says how old it is.
//!
//! Three parts, each on its own thread or task:
//! - the mirror (`convoy-remote-sync`): a sync pass copies the server's fleet
//!   (`GET /fleet/export`), the timelines of its newest rollouts (`GET /rollouts`, then
//!   `GET /rollouts/{id}/timeline?after=SEQ`) and their engine logs
//!   (`GET /rollouts/{id}/log?after=SEQ`, for the health plots) into the copy, a fleet cache
//!   like any other. The history worker of [`Backend::parts`] reads the copy as it reads a local
//!   cache; the mirror also sends the rollout board itself after a pass that changed something,
//!   so a war-room wall follows the server within a second rather than the worker's poll.
//! - the wake-up (a task reading `GET /events`, the server-sent events): every event wakes the
//!   mirror; without the stream the mirror polls every [`RemoteOptions::poll`].
//! - steering ([`RemoteSteer`]): the console's operator commands become
//!   `POST /rollouts/{id}/{command}` with the token; the server's engine applies them and the
//!   timeline event comes back through the mirror like any other.
//!
//! Offline: a call that gets no answer marks the link down (the status bar says
//! `server ... unreachable; showing the copy of HH:MM UTC`), the mirror retries every
//! [`RETRY`], and operator commands are judged by whether they are safe to apply late:
//! - a pause is queued: applied late, it only holds a rollout that is still running (a rollout
//!   that ended meanwhile refuses it with 409, which the console reports); it is undone by a
//!   resume, and it is the command that limits the damage of a bad release;
//! - resume, roll back, override and abort are refused: each acts on a state this console can
//!   no longer see (a resume or an override lets a release spread that a gate or a colleague
//!   may have stopped since; an abort and a rollback cannot be undone); approvals are not sent
//!   by this console at all. The refusal says so and suggests queueing a pause.
//!
//! The queue is kept in a file beside the copy (`COPY.remote.json`, with the time of the last
//! complete sync), written before the command is answered, so a crash or a restart loses no
//! queued pause; it is sent, oldest first, as soon as the server answers again, and each answer
//! is reported as the command's own would be.
//!
//! Deliberately not here: device histories and telemetry rollups of the server (the device
//! view shows what the copy holds: nothing for a device until a history endpoint is mirrored),
//! the audit trail, requests and approvals.

use anyhow::{Context, Result, bail};
use convoy_core::fleet::Fleet;
use convoy_core::rollout::series::HealthSeries;
use convoy_core::rollout::{Phase, RolloutEvent};
use convoy_core::time::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::backend::{
    Backend, BackendEvent, BrokerKind, LinkStatus, MAX_HEALTH_LOG_ROWS, ROLLOUT_LIMIT, Reporter,
    RolloutBoard, read_rollouts,
};
use super::steer::{Steer, phase_words};
use crate::engine::control::{OperatorCommand, RollBackScope};
use crate::store::Store;

/// How often an unreachable server is tried again.
pub const RETRY: Duration = Duration::from_secs(2);
/// The shortest time between two sync passes: a busy event stream wakes the mirror far more
/// often than the views need.
pub const MIN_PASS: Duration = Duration::from_millis(400);
/// How often the fleet is fetched again while connected (and at every reconnection): the
/// whole fleet is one request, so not on every event, and a fleet that changed reloads the
/// views (which forgets the selected device), so not often.
pub const FLEET_REFRESH: Duration = Duration::from_mins(5);
/// The longest wait for an ordinary answer, and for the whole fleet.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const FLEET_TIMEOUT: Duration = Duration::from_mins(5);
/// Log events asked for per page.
const LOG_PAGE: usize = 5_000;

/// How to attach to a server.
#[derive(Clone)]
pub struct RemoteOptions {
    /// The server's base URL, e.g. `https://convoy.example.org:8443` (no `/api/v1`).
    pub server: String,
    /// The API token (from `--token-file` or `$CONVOY_TOKEN`).
    pub token: String,
    /// The local copy (a fleet cache file), see [`default_copy_path`].
    pub copy: PathBuf,
    /// A PEM certificate to trust besides the system's (a server with a self-signed one).
    pub ca_cert: Option<PathBuf>,
    /// How often the mirror syncs when the event stream is silent or down.
    pub poll: Duration,
}

impl std::fmt::Debug for RemoteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteOptions")
            .field("server", &self.server)
            .field("token", &"(hidden)")
            .field("copy", &self.copy)
            .field("ca_cert", &self.ca_cert)
            .field("poll", &self.poll)
            .finish()
    }
}

impl RemoteOptions {
    /// Options with the default poll, checking the URL: `http://` or `https://`, a host, no
    /// path beyond `/`.
    pub fn new(server: &str, token: String, copy: PathBuf) -> Result<Self> {
        Ok(Self {
            server: normalise_server(server)?,
            token,
            copy,
            ca_cert: None,
            poll: Duration::from_secs(5),
        })
    }
}

/// The server URL without a trailing `/`; an error names what is wrong with it.
pub fn normalise_server(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .with_context(|| format!("the server URL {url:?} must start with http:// or https://"))?;
    if rest.is_empty() || rest.contains('/') || rest.contains('?') {
        bail!(
            "the server URL {url:?} must be the server's address only, e.g. https://host:8443 \
             (the console adds /api/v1)"
        );
    }
    Ok(url.to_owned())
}

/// The default copy of `server`: `$XDG_DATA_HOME/convoy/servers/HOST_PORT.db`, else
/// `~/.local/share/convoy/servers/HOST_PORT.db`, else under the temporary directory.
pub fn default_copy_path(server: &str) -> PathBuf {
    let authority = server
        .split_once("://")
        .map_or(server, |(_, rest)| rest)
        .trim_end_matches('/');
    let name: String = authority
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local").join("share"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("convoy")
        .join("servers")
        .join(format!("{name}.db"))
}

/// `HH:MM UTC` of `t`.
fn clock_words(t: Timestamp) -> String {
    let day = t.secs().rem_euclid(86_400);
    format!("{:02}:{:02} UTC", day / 3600, day % 3600 / 60)
}

/// Percent-encodes one path segment (a rollout id).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Why a call to the server failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No answer: refused, unresolvable, TLS failure, timeout. `maybe_sent`: the request may
    /// have reached the server (it timed out after sending), so its effect is unknown.
    Unreachable { why: String, maybe_sent: bool },
    /// The server answered with an error status; the message is its `error` (and `field`).
    Refused { status: u16, message: String },
    /// The server answered something this console cannot read; the text names the endpoint
    /// and the field.
    Malformed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable { why, .. } => write!(f, "{why}"),
            Self::Refused { status, message } => write!(f, "{message} (HTTP {status})"),
            Self::Malformed(text) => write!(f, "{text}"),
        }
    }
}

/// Parses the answer of `endpoint`; an error names the endpoint and the field at fault
/// (its path, e.g. `events[2].time`).
pub fn parse_answer<T: DeserializeOwned>(endpoint: &str, bytes: &[u8]) -> Result<T, CallError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path.is_empty() || path == "." {
            "the answer".to_owned()
        } else {
            format!("field {path}")
        };
        CallError::Malformed(format!(
            "{endpoint}: the server's answer is not what this console reads, at {at}: {}",
            e.inner()
        ))
    })?;
    de.end().map_err(|e| {
        CallError::Malformed(format!("{endpoint}: the server's answer is not JSON: {e}"))
    })?;
    Ok(value)
}

/// An HTTP client of the API, with its own single-threaded runtime (each thread that calls the
/// server has one: a pooled connection belongs to the runtime that opened it).
struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// The parts every client of one server shares: its address, the token, the trusted
/// certificate.
#[derive(Clone)]
struct Endpoint {
    server: String,
    token: String,
    ca_pem: Option<Vec<u8>>,
}

impl Endpoint {
    fn client(&self) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // The event stream sends a keep-alive every 15 s: longer silence is a lost link.
            .read_timeout(Duration::from_secs(45))
            .user_agent(concat!("convoy-console/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &self.ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .context("reading the --ca-cert certificate (PEM)")?;
            builder = builder.add_root_certificate(cert);
        }
        builder.build().context("building the HTTP client")
    }

    fn api(&self) -> Result<Api> {
        Ok(Api {
            base: format!("{}{}", self.server, crate::serve::api::PREFIX),
            token: self.token.clone(),
            client: self.client()?,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime of the server's client")?,
        })
    }
}

impl Api {
    fn endpoint_name(method: &str, path: &str) -> String {
        format!("{method} {}{path}", crate::serve::api::PREFIX)
    }

    /// `GET path` (under `/api/v1`): the answer's bytes.
    fn get(&self, path: &str, timeout: Duration) -> Result<Vec<u8>, CallError> {
        let request = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(timeout);
        self.call(&Self::endpoint_name("GET", path), request)
    }

    /// `POST path` with a JSON body: the answer's bytes.
    fn post(&self, path: &str, body: &serde_json::Value) -> Result<Vec<u8>, CallError> {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(CALL_TIMEOUT);
        self.call(&Self::endpoint_name("POST", path), request)
    }

    fn call(&self, endpoint: &str, request: reqwest::RequestBuilder) -> Result<Vec<u8>, CallError> {
        #[derive(Deserialize)]
        struct ErrorBody {
            error: String,
            field: Option<String>,
        }
        self.runtime.block_on(async {
            let response = request
                .send()
                .await
                .map_err(|e| unreachable(endpoint, &e))?;
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| unreachable(endpoint, &e))?;
            if status.is_success() {
                return Ok(bytes.to_vec());
            }
            // `convoy serve` answers none of these itself: they come from a proxy in front of
            // it whose server is down or not answering, which is the server being unreachable.
            if matches!(status.as_u16(), 502..=504) {
                return Err(CallError::Unreachable {
                    why: format!(
                        "{endpoint} answered {status} from a proxy: the server behind it is not answering"
                    ),
                    maybe_sent: true,
                });
            }
            let message = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(ErrorBody {
                    error,
                    field: Some(field),
                }) => format!("{error} (field {field})"),
                Ok(ErrorBody { error, field: None }) => error,
                Err(_) => format!(
                    "{endpoint} answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
            };
            Err(CallError::Refused {
                status: status.as_u16(),
                message,
            })
        })
    }
}

fn unreachable(endpoint: &str, e: &reqwest::Error) -> CallError {
    use std::error::Error as _;
    let mut why = format!("{endpoint}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(why, ": {s}");
        source = s.source();
    }
    CallError::Unreachable {
        why,
        maybe_sent: !e.is_connect(),
    }
}

/// A pause waiting for the server, as kept in `COPY.remote.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedPause {
    pub rollout_id: String,
    /// The console's operator who asked (the server records the token's operator).
    pub operator: String,
    pub reason: String,
    /// Unix seconds.
    pub queued_at: i64,
}

/// The file beside the copy: which server it copies, when it was last in step, what waits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CopyState {
    pub server: String,
    /// Unix seconds of the last complete sync pass.
    pub synced_at: Option<i64>,
    pub queued: Vec<QueuedPause>,
}

impl CopyState {
    /// The state file of `copy`.
    pub fn path(copy: &Path) -> PathBuf {
        let mut p = copy.as_os_str().to_owned();
        p.push(".remote.json");
        PathBuf::from(p)
    }

    /// Reads the state of `copy` (a fresh one if there is none); refuses a copy of another
    /// server, so that its queued pauses and its rollouts never mix with this one's.
    pub fn load(copy: &Path, server: &str) -> Result<Self> {
        let path = Self::path(copy);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Self>(&bytes)
                .with_context(|| format!("reading the console's copy state {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self {
                server: server.to_owned(),
                ..Self::default()
            },
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if state.server != server {
            bail!(
                "{} is the copy of the server {}, not of {server}: give another --db",
                copy.display(),
                state.server
            );
        }
        Ok(state)
    }

    /// Writes the state atomically (a crash leaves the old file or the new one).
    pub fn save(&self, copy: &Path) -> Result<()> {
        let path = Self::path(copy);
        crate::fleet_io::write_atomically(&path, |out| {
            serde_json::to_writer_pretty(&mut *out, self)?;
            Ok(())
        })
        .with_context(|| format!("writing the console's copy state {}", path.display()))
    }
}

/// What the mirror, the steering and the status bar share.
struct Shared {
    endpoint: Endpoint,
    copy: PathBuf,
    state: Mutex<LinkState>,
    /// Set once the backend exists: queueing a pause updates the status bar at once.
    reporter: OnceLock<Reporter>,
    /// Wakes the mirror (a queued pause, an event on the stream).
    wake: Mutex<std::sync::mpsc::Sender<()>>,
    /// Held while the copy's state file is written: the steering and mirror threads both save
    /// it, and a save must write the newest state, whole.
    saving: Mutex<()>,
}

struct LinkState {
    /// Whether the last call got an answer; `None` before the first.
    up: Option<bool>,
    /// Why the last call got none.
    why_down: String,
    copy: CopyState,
    /// `operator (role)` from `GET /whoami`.
    who: Option<String>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        let _ = self
            .wake
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(());
    }

    /// The status bar's words for the link now.
    fn link_status(&self) -> LinkStatus {
        let s = self.lock();
        match s.up {
            None => LinkStatus::Connecting,
            Some(true) => LinkStatus::Connected,
            Some(false) => {
                let copy = s.copy.synced_at.map_or_else(
                    || "no copy yet".to_owned(),
                    |t| {
                        format!(
                            "showing the copy of {}",
                            clock_words(Timestamp::from_secs(t))
                        )
                    },
                );
                let queued = match s.copy.queued.len() {
                    0 => String::new(),
                    n => format!(
                        "; {n} pause{} queued ({})",
                        if n == 1 { "" } else { "s" },
                        s.copy
                            .queued
                            .iter()
                            .map(|q| q.rollout_id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                LinkStatus::Reconnecting(format!(
                    "server {} unreachable, {copy}{queued}: {}",
                    self.endpoint.server, s.why_down
                ))
            }
        }
    }

    /// The nav's line about who runs the rollouts.
    fn engine_note(&self) -> String {
        let s = self.lock();
        let who = s
            .who
            .as_deref()
            .map_or_else(String::new, |w| format!(" as {w}"));
        let queued = match s.copy.queued.len() {
            0 => String::new(),
            n => format!(
                " {n} queued pause{} waiting.",
                if n == 1 { "" } else { "s" }
            ),
        };
        format!(
            "Attached to the server {}{who}: it runs the rollouts; pause, resume, roll back, \
             override and abort go through its API. While it is unreachable only a pause is \
             queued.{queued}",
            self.endpoint.server
        )
    }

    fn report(&self, event: BackendEvent) {
        if let Some(r) = self.reporter.get() {
            r.blocking(event);
        }
    }

    /// Records the outcome of a call: the link's state changes are reported.
    fn saw(&self, result: &Result<Vec<u8>, CallError>) {
        let changed = {
            let mut s = self.lock();
            let before = s.up;
            if let Err(CallError::Unreachable { why, .. }) = result {
                s.up = Some(false);
                let changed = s.why_down != *why || before != Some(false);
                s.why_down.clone_from(why);
                changed
            } else {
                s.up = Some(true);
                before != Some(true)
            }
        };
        if changed {
            self.report(BackendEvent::Link(self.link_status()));
            self.report(BackendEvent::Engine(self.engine_note()));
        }
    }

    fn save_copy_state(&self) -> Result<()> {
        // The state is read under the save lock, so the last save to finish writes the newest
        // state, and two saves never share the temporary file.
        let _saving = self.saving.lock().unwrap_or_else(PoisonError::into_inner);
        let state = self.lock().copy.clone();
        state.save(&self.copy)
    }
}

/// Steering through the server's API, queueing pauses while it is unreachable.
pub struct RemoteSteer {
    shared: Arc<Shared>,
    /// The steering thread's client, made on its first command.
    api: Mutex<Option<Api>>,
}

impl RemoteSteer {
    fn with_api<T>(&self, f: impl FnOnce(&Api) -> T) -> Result<T, String> {
        let mut api = self.api.lock().unwrap_or_else(PoisonError::into_inner);
        if api.is_none() {
            *api = Some(self.shared.endpoint.api().map_err(|e| format!("{e:#}"))?);
        }
        api.as_ref()
            .map(f)
            .ok_or_else(|| "no client for the server".to_owned())
    }

    /// What to do with `command` while the server is unreachable.
    fn offline(
        &self,
        rollout_id: &str,
        operator: &str,
        command: &OperatorCommand,
        maybe_sent: bool,
    ) -> Result<String, String> {
        let name = command.name();
        let server = &self.shared.endpoint.server;
        if let OperatorCommand::Pause { reason } = command {
            let now = crate::now();
            {
                let mut s = self.shared.lock();
                // One pause per rollout is enough: the first one queued is sent, and this one
                // is answered with it rather than dropped without a word.
                if let Some(q) = s.copy.queued.iter().find(|q| q.rollout_id == rollout_id) {
                    return Ok(format!(
                        "already queued: a pause of {rollout_id} by {} at {} ({}) is sent as soon as the server {server} answers",
                        q.operator,
                        clock_words(Timestamp::from_secs(q.queued_at)),
                        q.reason
                    ));
                }
                s.copy.queued.push(QueuedPause {
                    rollout_id: rollout_id.to_owned(),
                    operator: operator.to_owned(),
                    reason: reason.clone(),
                    queued_at: now.secs(),
                });
            }
            self.shared.save_copy_state().map_err(|e| {
                format!(
                    "the server {server} is unreachable and the pause could not be queued: {e:#}"
                )
            })?;
            self.shared
                .report(BackendEvent::Link(self.shared.link_status()));
            self.shared
                .report(BackendEvent::Engine(self.shared.engine_note()));
            self.shared.wake();
            return Ok(format!(
                "queued: the server {server} is unreachable; the pause of {rollout_id} is sent \
                 as soon as it answers (kept in the console's copy, it survives a restart)"
            ));
        }
        let unknown = if maybe_sent {
            " The server did not answer in time: it may have applied the command; check the \
             rollout when it is back."
        } else {
            ""
        };
        Err(format!(
            "the server {server} is unreachable, and a {name} is not queued: applied later it \
             would act on a state this console cannot see (only a pause is queued; it is safe \
             late and can be resumed). Pause now and {name} when the server is back.{unknown}"
        ))
    }
}

/// The body of a control command.
fn control_body(command: &OperatorCommand) -> serde_json::Value {
    let mut body = serde_json::json!({ "reason": command.reason() });
    if let OperatorCommand::RollBack { scope, .. } = command {
        body["scope"] = serde_json::Value::String(
            match scope {
                RollBackScope::CurrentWave => "current_wave",
                RollBackScope::All => "all",
            }
            .to_owned(),
        );
    }
    body
}

/// The answer of a control command: the rollout's phase afterwards.
#[derive(Deserialize)]
struct ControlAnswer {
    phase: Phase,
}

/// Sends one command; the answer in the console's words.
fn send_command(
    api: &Api,
    shared: &Shared,
    rollout_id: &str,
    command: &OperatorCommand,
) -> Result<String, CallError> {
    let path = format!("/rollouts/{}/{}", segment(rollout_id), command.name());
    let result = api.post(&path, &control_body(command));
    shared.saw(&result);
    let bytes = result?;
    let answer: ControlAnswer = parse_answer(&Api::endpoint_name("POST", &path), &bytes)?;
    Ok(format!(
        "{rollout_id} is now {}",
        phase_words(&answer.phase)
    ))
}

impl Steer for RemoteSteer {
    fn can_steer(&self, _rollout_id: &str) -> Result<(), String> {
        // Every command is sent, queued (a pause, offline) or refused with the reason: the
        // server decides which rollouts it runs, and says so (404) for one it does not.
        Ok(())
    }

    fn steer(
        &self,
        rollout_id: &str,
        operator: &str,
        command: &OperatorCommand,
    ) -> Result<String, String> {
        let answer = self.with_api(|api| send_command(api, &self.shared, rollout_id, command))?;
        match answer {
            Ok(words) => Ok(words),
            Err(CallError::Unreachable { maybe_sent, .. }) => {
                self.offline(rollout_id, operator, command, maybe_sent)
            }
            Err(CallError::Refused { status, message }) => Err(format!(
                "the server refused the {} of {rollout_id} (HTTP {status}): {message}",
                command.name()
            )),
            Err(e @ CallError::Malformed(_)) => Err(e.to_string()),
        }
    }
}

/// One rollout as `GET /rollouts` lists it (the fields the mirror reads).
#[derive(Deserialize)]
struct RolloutRowIn {
    rollout_id: String,
    events: i64,
    last_time: i64,
}

#[derive(Deserialize)]
struct TimelineIn {
    rollout_id: String,
    events: Vec<EventIn>,
}

#[derive(Deserialize)]
struct EventIn {
    seq: i64,
    time: String,
    kind: String,
    cause: String,
    payload: String,
}

#[derive(Deserialize)]
struct LogPageIn {
    rollout_id: String,
    first_seq: i64,
    events: Vec<RolloutEvent>,
    more: bool,
}

#[derive(Deserialize)]
struct WhoAmI {
    operator: String,
    role: String,
}

/// The newest seq of `rollout_id`'s timeline in the copy (0 when none).
fn copy_timeline_seq(store: &Store, rollout_id: &str) -> Result<i64, String> {
    store
        .newest_timeline_seq(rollout_id)
        .map_err(|e| format!("the copy: {e:#}"))
}

/// The length of `rollout_id`'s log in the copy (its seqs run from 0 without gaps).
fn copy_log_len(store: &Store, rollout_id: &str) -> Result<i64, String> {
    store
        .rollout_log_len(rollout_id)
        .map_err(|e| format!("the copy: {e:#}"))
}

/// Adds the events of a timeline answer (`GET /rollouts/{rollout_id}/timeline?after=SEQ`) to
/// the copy, in one transaction, after checking all of them: they must be this rollout's, follow
/// the copy's newest seq without a gap, and have readable times. Returns how many were added.
/// A bad answer changes nothing and the error names the endpoint and the field.
pub fn apply_timeline(
    store: &mut Store,
    rollout_id: &str,
    endpoint: &str,
    bytes: &[u8],
) -> Result<usize, CallError> {
    let answer: TimelineIn = parse_answer(endpoint, bytes)?;
    let bad = |text: String| CallError::Malformed(format!("{endpoint}: {text}"));
    if answer.rollout_id != rollout_id {
        return Err(bad(format!(
            "field rollout_id is {:?}, not the rollout asked for ({rollout_id})",
            answer.rollout_id
        )));
    }
    let newest = copy_timeline_seq(store, rollout_id).map_err(CallError::Malformed)?;
    let mut rows = Vec::new();
    for (i, e) in answer.events.iter().enumerate() {
        if e.seq <= newest {
            continue; // Already in the copy (an answer to an older `after`).
        }
        let expected = newest + 1 + i64::try_from(rows.len()).unwrap_or(i64::MAX);
        if e.seq != expected {
            return Err(bad(format!(
                "field events[{i}].seq is {}, but the copy expects {expected} (a gap)",
                e.seq
            )));
        }
        let time = Timestamp::parse_rfc3339(&e.time)
            .map_err(|err| bad(format!("field events[{i}].time: {err}")))?;
        rows.push((e, time));
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let events: Vec<crate::store::Event> = rows
        .iter()
        .map(|(e, time)| crate::store::Event {
            rollout_id: rollout_id.to_owned(),
            seq: e.seq,
            time: *time,
            kind: e.kind.clone(),
            cause: e.cause.clone(),
            payload: e.payload.clone(),
        })
        .collect();
    store
        .copy_timeline_events(rollout_id, &events)
        .map_err(|e| {
            CallError::Malformed(format!(
                "writing the timeline of {rollout_id} to the copy {}: {e:#}",
                store.path().display()
            ))
        })?;
    Ok(rows.len())
}

/// Adds one page of a log answer (`GET /rollouts/{rollout_id}/log?after=SEQ`) to the copy, in
/// one transaction, after checking that it is this rollout's and starts where the copy's log
/// ends. Returns (events added, whether more follow). A bad answer changes nothing.
pub fn apply_log(
    store: &mut Store,
    rollout_id: &str,
    endpoint: &str,
    bytes: &[u8],
) -> Result<(usize, bool), CallError> {
    let answer: LogPageIn = parse_answer(endpoint, bytes)?;
    let bad = |text: String| CallError::Malformed(format!("{endpoint}: {text}"));
    if answer.rollout_id != rollout_id {
        return Err(bad(format!(
            "field rollout_id is {:?}, not the rollout asked for ({rollout_id})",
            answer.rollout_id
        )));
    }
    let len = copy_log_len(store, rollout_id).map_err(CallError::Malformed)?;
    if answer.first_seq != len {
        return Err(bad(format!(
            "field first_seq is {}, but the copy's log of {rollout_id} ends before {len}",
            answer.first_seq
        )));
    }
    let first = usize::try_from(len).unwrap_or(0);
    store
        .append_rollout_log(rollout_id, first, &answer.events)
        .map_err(|e| {
            CallError::Malformed(format!(
                "writing the log of {rollout_id} to the copy {}: {e:#}",
                store.path().display()
            ))
        })?;
    Ok((answer.events.len(), answer.more))
}

/// The mirror's memory between passes.
#[derive(Default)]
struct Mirror {
    /// A hash of the fleet the copy holds (as `GET /fleet/export` writes it).
    fleet_hash: Option<u64>,
    fleet_at: Option<Instant>,
    /// Rollouts whose log was read this session, and whether they had ended then.
    logs_read: HashMap<String, bool>,
    health: HashMap<String, (i64, Arc<HealthSeries>)>,
    /// The last failure reported, so that a failure repeated every pass is reported once.
    last_failure: Option<String>,
    /// The rollouts the last pass could not copy, as reported.
    skipped: Option<String>,
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The fleet the copy holds, and its hash as the server would write it.
fn copy_fleet(store: &Store) -> Result<(Fleet, u64)> {
    let fleet = store.load_fleet()?;
    let mut bytes = Vec::new();
    crate::fleet_io::write_json(&mut bytes, &fleet)?;
    Ok((fleet, hash_bytes(&bytes)))
}

/// The board of the copy, with health series recomputed where a log grew.
fn board(store: &Store, mirror: &mut Mirror) -> Result<RolloutBoard, String> {
    let mut board = read_rollouts(store).map_err(|e| format!("{e:#}"))?;
    for story in &board.rollouts {
        let id = &story.rollout_id;
        let rows = copy_log_len(store, id)?;
        if rows == 0 || rows > MAX_HEALTH_LOG_ROWS {
            continue;
        }
        let series = match mirror.health.get(id) {
            Some((n, s)) if *n == rows => Arc::clone(s),
            _ => match store.rollout_log(id) {
                Ok(log) => {
                    let s = Arc::new(convoy_core::rollout::series::health_series(&log));
                    mirror.health.insert(id.clone(), (rows, Arc::clone(&s)));
                    s
                }
                Err(e) => {
                    board
                        .unreadable
                        .push(format!("the health log of {id}: {e:#}"));
                    continue;
                }
            },
        };
        board.health.insert(id.clone(), series);
    }
    Ok(board)
}

/// One sync pass: the rollouts list (which tells whether the server answers), the queued
/// pauses, the fleet when due, the new timeline events and log pages. True if the copy changed.
fn sync_pass(
    api: &Api,
    shared: &Shared,
    store: &mut Store,
    mirror: &mut Mirror,
    reporter: &Reporter,
) -> Result<bool, CallError> {
    let list = api.get("/rollouts", CALL_TIMEOUT);
    shared.saw(&list);
    let list: Vec<RolloutRowIn> = parse_answer("GET /api/v1/rollouts", &list?)?;
    let unknown_who = shared.lock().who.is_none();
    if unknown_who
        && let Ok(bytes) = api.get("/whoami", CALL_TIMEOUT)
        && let Ok(w) = parse_answer::<WhoAmI>("GET /api/v1/whoami", &bytes)
    {
        shared.lock().who = Some(format!("{} ({})", w.operator, w.role));
        reporter.blocking(BackendEvent::Engine(shared.engine_note()));
    }
    send_queued(api, shared, reporter)?;
    let mut changed = false;
    let fleet_due = mirror
        .fleet_at
        .is_none_or(|at| at.elapsed() >= FLEET_REFRESH);
    if fleet_due {
        let endpoint = "GET /api/v1/fleet/export";
        let bytes = api.get("/fleet/export", FLEET_TIMEOUT);
        shared.saw(&bytes);
        let bytes = bytes?;
        let hash = hash_bytes(&bytes);
        if mirror.fleet_hash != Some(hash) {
            let fleet: Fleet = parse_answer(endpoint, &bytes)?;
            store.replace_fleet(&fleet, None).map_err(|e| {
                CallError::Malformed(format!(
                    "writing the server's fleet to the copy {}: {e:#}",
                    store.path().display()
                ))
            })?;
            mirror.fleet_hash = Some(hash);
            reporter.blocking(BackendEvent::FleetLoaded {
                fleet,
                cache: shared.copy.clone(),
            });
            reporter.blocking(BackendEvent::Stage(String::new()));
        }
        mirror.fleet_at = Some(Instant::now());
    }
    let mut newest = list;
    newest.sort_by(|a, b| {
        b.last_time
            .cmp(&a.last_time)
            .then(a.rollout_id.cmp(&b.rollout_id))
    });
    newest.truncate(ROLLOUT_LIMIT);
    // A rollout that cannot be copied is skipped with its reason; the others are copied, and
    // only an unreachable server ends the pass.
    let mut skipped: Vec<String> = Vec::new();
    for row in &newest {
        let id = &row.rollout_id;
        let copied = (|| -> Result<bool, CallError> {
            let have = copy_timeline_seq(store, id).map_err(CallError::Malformed)?;
            if row.events <= have {
                return Ok(false);
            }
            let path = format!("/rollouts/{}/timeline?after={have}", segment(id));
            let bytes = api.get(&path, CALL_TIMEOUT);
            shared.saw(&bytes);
            let added = apply_timeline(store, id, &Api::endpoint_name("GET", &path), &bytes?)?;
            Ok(added > 0)
        })();
        match copied {
            Ok(added) => changed |= added,
            Err(e @ CallError::Unreachable { .. }) => return Err(e),
            Err(e) => skipped.push(format!("the timeline of {id}: {e}")),
        }
    }
    // Logs: of every rollout still running, and once per session of one that ended (its last
    // samples may have come while this console was away).
    let ended: HashMap<String, bool> = read_rollouts(store)
        .map(|b| {
            b.rollouts
                .into_iter()
                .map(|s| (s.rollout_id, s.ending.is_some()))
                .collect()
        })
        .unwrap_or_default();
    for row in &newest {
        let id = &row.rollout_id;
        let is_ended = ended.get(id).copied().unwrap_or(false);
        if mirror.logs_read.get(id) == Some(&true) {
            continue;
        }
        let copied = (|| -> Result<bool, CallError> {
            let mut changed = false;
            loop {
                let len = copy_log_len(store, id).map_err(CallError::Malformed)?;
                let path = if len == 0 {
                    format!("/rollouts/{}/log?limit={LOG_PAGE}", segment(id))
                } else {
                    format!(
                        "/rollouts/{}/log?after={}&limit={LOG_PAGE}",
                        segment(id),
                        len - 1
                    )
                };
                let bytes = api.get(&path, CALL_TIMEOUT);
                shared.saw(&bytes);
                let (added, more) = match bytes {
                    Ok(bytes) => apply_log(store, id, &Api::endpoint_name("GET", &path), &bytes)?,
                    // A rollout with no log on the server (recorded by hand, or before schema v6).
                    Err(CallError::Refused { status: 404, .. }) => (0, false),
                    Err(e) => return Err(e),
                };
                changed |= added > 0;
                if !more {
                    break;
                }
            }
            Ok(changed)
        })();
        match copied {
            Ok(added) => {
                changed |= added;
                mirror.logs_read.insert(id.clone(), is_ended);
            }
            Err(e @ CallError::Unreachable { .. }) => return Err(e),
            Err(e) => skipped.push(format!("the engine log of {id}: {e}")),
        }
    }
    if skipped.is_empty() {
        mirror.skipped = None;
    } else {
        let words = format!(
            "the copy of {} is not complete: {}",
            shared.endpoint.server,
            skipped.join("; ")
        );
        // Reported once, not at every pass.
        if mirror.skipped.as_deref() != Some(words.as_str()) {
            reporter.blocking(BackendEvent::Failed(words.clone()));
            mirror.skipped = Some(words);
        }
    }
    Ok(changed)
}

/// Sends the queued pauses, oldest first; each answer is reported as the command's own would
/// be. Stops at the first that gets no answer (it stays queued).
fn send_queued(api: &Api, shared: &Shared, reporter: &Reporter) -> Result<(), CallError> {
    loop {
        let Some(next) = shared.lock().copy.queued.first().cloned() else {
            return Ok(());
        };
        let command = OperatorCommand::Pause {
            reason: format!(
                "{} (queued offline at {} by {})",
                next.reason,
                clock_words(Timestamp::from_secs(next.queued_at)),
                next.operator
            ),
        };
        let result = match send_command(api, shared, &next.rollout_id, &command) {
            Ok(words) => Ok(format!("sent after the link returned: {words}")),
            Err(e @ CallError::Unreachable { .. }) => return Err(e),
            Err(e) => Err(format!(
                "the pause of {} queued at {} was refused by the server: {e}",
                next.rollout_id,
                clock_words(Timestamp::from_secs(next.queued_at))
            )),
        };
        {
            let mut s = shared.lock();
            if s.copy.queued.first() == Some(&next) {
                s.copy.queued.remove(0);
            }
        }
        if let Err(e) = shared.save_copy_state() {
            reporter.blocking(BackendEvent::Failed(format!("{e:#}")));
        }
        reporter.blocking(BackendEvent::Steered {
            rollout_id: next.rollout_id,
            operator: next.operator,
            command,
            result,
        });
        reporter.blocking(BackendEvent::Engine(shared.engine_note()));
    }
}

/// The mirror thread: the copy first (offline it is all there is), then sync passes, woken by
/// the event stream or the poll, until the console goes away.
fn run_mirror(
    shared: &Arc<Shared>,
    owner: &Weak<RemoteSteer>,
    wake: &std::sync::mpsc::Receiver<()>,
    poll: Duration,
    reporter: &Reporter,
) -> Result<()> {
    let api = shared.endpoint.api()?;
    let mut store = Store::open(&shared.copy)?;
    let mut mirror = Mirror::default();
    let (fleet, hash) = copy_fleet(&store)
        .with_context(|| format!("loading the copy {}", shared.copy.display()))?;
    let synced = shared.lock().copy.synced_at.is_some();
    if synced || !fleet.devices.is_empty() {
        mirror.fleet_hash = Some(hash);
        reporter.blocking(BackendEvent::FleetLoaded {
            fleet,
            cache: shared.copy.clone(),
        });
        reporter.blocking(BackendEvent::Stage(String::new()));
        if let Ok(b) = board(&store, &mut mirror) {
            reporter.blocking(BackendEvent::Rollouts(Ok(b)));
        }
    } else {
        reporter.blocking(BackendEvent::Stage(format!(
            "fetching the fleet from {}",
            shared.endpoint.server
        )));
    }
    loop {
        if owner.upgrade().is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let outcome = sync_pass(&api, shared, &mut store, &mut mirror, reporter);
        let up = match outcome {
            Ok(changed) => {
                mirror.last_failure = None;
                let now = crate::now().secs();
                // Saved when its minute changes: the status bar says HH:MM.
                let minute_changed = {
                    let mut s = shared.lock();
                    let before = s.copy.synced_at.replace(now);
                    before.is_none_or(|b| b / 60 != now / 60)
                };
                if minute_changed && let Err(e) = shared.save_copy_state() {
                    reporter.blocking(BackendEvent::Failed(format!("{e:#}")));
                }
                if changed && !reporter.blocking(BackendEvent::Rollouts(board(&store, &mut mirror)))
                {
                    return Ok(());
                }
                true
            }
            Err(CallError::Unreachable { .. }) => {
                // Reconnecting fetches the fleet again: it may have changed meanwhile.
                mirror.fleet_at = None;
                false
            }
            Err(e) => {
                let text = format!("syncing the copy from {}: {e}", shared.endpoint.server);
                if mirror.last_failure.as_ref() != Some(&text) {
                    mirror.last_failure = Some(text.clone());
                    if !reporter.blocking(BackendEvent::Failed(text)) {
                        return Ok(());
                    }
                }
                true
            }
        };
        let wait = if up { poll } else { RETRY };
        match wake.recv_timeout(wait) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
        }
        // A burst of events is one pass.
        std::thread::sleep(MIN_PASS.saturating_sub(started.elapsed()));
        while wake.try_recv().is_ok() {}
    }
}

/// Reads `GET /events` and wakes the mirror on every event (and on every (re)connection, so
/// that what happened while the stream was down is fetched), reconnecting after [`RETRY`].
async fn follow_events(endpoint: Endpoint, shared: Weak<Shared>) {
    let Ok(client) = endpoint.client() else {
        return; // The mirror reports the same error and polls.
    };
    let url = format!("{}{}/events", endpoint.server, crate::serve::api::PREFIX);
    loop {
        let Some(s) = shared.upgrade() else { return };
        drop(s);
        if let Ok(mut response) = client.get(&url).bearer_auth(&endpoint.token).send().await
            && response.status().is_success()
        {
            while let Ok(Some(chunk)) = response.chunk().await {
                let Some(s) = shared.upgrade() else { return };
                // Keep-alive comments alone are not news.
                let text = String::from_utf8_lossy(&chunk);
                if text.contains("event:") || text.contains(": connected") {
                    s.wake();
                }
            }
        }
        if let Some(s) = shared.upgrade() {
            s.wake();
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// The remote console's steering for a caller other than its UI (a test or a script driving a
/// console): the same [`RemoteSteer`] as [`Backend::steer`] uses, and the answer is reported to
/// the console as [`BackendEvent::Steered`] as that one's is.
#[derive(Clone)]
pub struct RemoteCommands {
    steer: Arc<RemoteSteer>,
}

impl RemoteCommands {
    /// Applies `command` (or queues it, or refuses it: see the module's documentation) and
    /// waits for the answer, which the console also gets.
    pub fn steer(
        &self,
        rollout_id: &str,
        operator: &str,
        command: OperatorCommand,
    ) -> Result<String, String> {
        let result = self.steer.steer(rollout_id, operator, &command);
        self.steer.shared.report(BackendEvent::Steered {
            rollout_id: rollout_id.to_owned(),
            operator: operator.to_owned(),
            command,
            result: result.clone(),
        });
        result
    }
}

impl Backend {
    /// [`Backend::remote`], with a second way into its steering ([`RemoteCommands`]).
    pub fn remote_with_commands(options: &RemoteOptions) -> Result<(Self, RemoteCommands)> {
        let (backend, steer) = Self::remote_parts(options)?;
        Ok((backend, RemoteCommands { steer }))
    }

    /// The console attached to the server of `options`: its views read the local copy, which a
    /// mirror thread keeps in step with the server; commands go to the server's API (see the
    /// module's documentation for what happens offline). Fails only on local problems: a copy
    /// that cannot be opened or belongs to another server, an unreadable `--ca-cert`. An
    /// unreachable server is not an error: the console opens on the copy and says so.
    pub fn remote(options: &RemoteOptions) -> Result<Self> {
        Self::remote_parts(options).map(|(backend, _)| backend)
    }

    fn remote_parts(options: &RemoteOptions) -> Result<(Self, Arc<RemoteSteer>)> {
        let server = normalise_server(&options.server)?;
        let ca_pem = match &options.ca_cert {
            Some(p) => Some(
                std::fs::read(p)
                    .with_context(|| format!("reading the --ca-cert file {}", p.display()))?,
            ),
            None => None,
        };
        let endpoint = Endpoint {
            server: server.clone(),
            token: options.token.clone(),
            ca_pem,
        };
        endpoint.client()?;
        if let Some(dir) = options.copy.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the directory of the copy {}", dir.display()))?;
        }
        let copy_state = CopyState::load(&options.copy, &server)?;
        // The copy exists before the history worker first reads it.
        drop(Store::open(&options.copy)?);
        let (wake_tx, wake_rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            endpoint: endpoint.clone(),
            copy: options.copy.clone(),
            state: Mutex::new(LinkState {
                up: None,
                why_down: String::new(),
                copy: copy_state,
                who: None,
            }),
            reporter: OnceLock::new(),
            wake: Mutex::new(wake_tx),
            saving: Mutex::new(()),
        });
        let steer = Arc::new(RemoteSteer {
            shared: Arc::clone(&shared),
            api: Mutex::new(None),
        });
        let owner = Arc::downgrade(&steer);
        let (backend, reporter, handle) = Self::parts(
            BrokerKind::Server(options.server.clone()),
            false,
            &options.copy,
            Arc::clone(&steer) as Arc<dyn Steer>,
        )?;
        let _ = shared.reporter.set(reporter.clone());
        reporter.blocking(BackendEvent::Link(LinkStatus::Connecting));
        reporter.blocking(BackendEvent::Engine(shared.engine_note()));
        handle.spawn(follow_events(endpoint, Arc::downgrade(&shared)));
        let poll = options.poll;
        std::thread::Builder::new()
            .name("convoy-remote-sync".into())
            .spawn(move || {
                if let Err(e) = run_mirror(&shared, &owner, &wake_rx, poll, &reporter) {
                    reporter.blocking(BackendEvent::Failed(format!(
                        "the copy of {} stopped: {e:#}",
                        shared.endpoint.server
                    )));
                }
            })
            .context("starting the mirror thread")?;
        Ok((backend, steer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(&dir.path().join("copy.db")).expect("a new copy");
        (dir, store)
    }

    fn timeline_rows(store: &Store) -> Vec<(i64, String)> {
        store
            .timeline("r1")
            .expect("timeline")
            .into_iter()
            .map(|e| (e.seq, e.kind))
            .collect()
    }

    const EP: &str = "GET /api/v1/rollouts/r1/timeline?after=0";

    fn event(seq: i64, time: &str, kind: &str) -> serde_json::Value {
        serde_json::json!({"rollout_id": "r1", "seq": seq, "time": time, "kind": kind,
            "cause": "timer", "payload": "{}"})
    }

    #[test]
    fn a_timeline_is_added_in_order_and_a_repeated_answer_adds_nothing() {
        let (_dir, mut store) = copy();
        let body = serde_json::json!({"rollout_id": "r1", "events": [
            event(1, "2027-01-15T08:00:00Z", "rollout.created"),
            event(2, "2027-01-15T08:01:00Z", "wave.started"),
        ]})
        .to_string();
        assert_eq!(
            apply_timeline(&mut store, "r1", EP, body.as_bytes()).expect("applied"),
            2
        );
        assert_eq!(
            apply_timeline(&mut store, "r1", EP, body.as_bytes()).expect("again"),
            0
        );
        assert_eq!(
            timeline_rows(&store),
            vec![
                (1, "rollout.created".to_owned()),
                (2, "wave.started".to_owned())
            ]
        );
    }

    /// A malformed answer is an error naming the endpoint and the field, and the copy keeps
    /// what it had: nothing of the bad answer is written, not even its good events.
    #[test]
    fn a_malformed_answer_names_the_endpoint_and_field_and_leaves_the_copy_as_it_was() {
        let (_dir, mut store) = copy();
        let good = serde_json::json!({"rollout_id": "r1", "events": [
            event(1, "2027-01-15T08:00:00Z", "rollout.created"),
        ]})
        .to_string();
        apply_timeline(&mut store, "r1", EP, good.as_bytes()).expect("applied");
        let before = timeline_rows(&store);
        let check = |store: &mut Store, body: &str, words: &[&str]| {
            let err = apply_timeline(store, "r1", EP, body.as_bytes()).expect_err(body);
            let text = err.to_string();
            assert!(matches!(err, CallError::Malformed(_)), "{err:?}");
            for w in words {
                assert!(text.contains(w), "{w:?} in {text:?}");
            }
        };
        // A bad time after a good event: the good one is not written either.
        let bad_time = serde_json::json!({"rollout_id": "r1", "events": [
            event(2, "2027-01-15T08:01:00Z", "wave.started"),
            event(3, "yesterday", "wave.done"),
        ]})
        .to_string();
        check(&mut store, &bad_time, &[EP, "events[1].time"]);
        // A field of the wrong type, a missing field, a gap, another rollout, not JSON.
        check(
            &mut store,
            r#"{"rollout_id": "r1", "events": [{"seq": "two"}]}"#,
            &[EP, "events[0].seq"],
        );
        check(
            &mut store,
            r#"{"rollout_id": "r1", "events": [{"seq": 2, "time": "2027-01-15T08:01:00Z", "kind": "k", "cause": "c"}]}"#,
            &[EP, "events[0]", "payload"],
        );
        let gap = serde_json::json!({"rollout_id": "r1", "events": [
            event(4, "2027-01-15T08:01:00Z", "wave.started"),
        ]})
        .to_string();
        check(&mut store, &gap, &[EP, "events[0].seq", "gap"]);
        let other = serde_json::json!({"rollout_id": "r2", "events": []}).to_string();
        check(&mut store, &other, &[EP, "rollout_id"]);
        check(
            &mut store,
            "<html>502 Bad Gateway</html>",
            &[EP, "the answer"],
        );
        assert_eq!(timeline_rows(&store), before);

        // The log: a page that does not start where the copy's log ends, an event that is not
        // an engine event.
        let log_ep = "GET /api/v1/rollouts/r1/log";
        let err = apply_log(
            &mut store,
            "r1",
            log_ep,
            br#"{"rollout_id": "r1", "first_seq": 5, "events": [], "more": false}"#,
        )
        .expect_err("a gap");
        assert!(err.to_string().contains("first_seq"), "{err}");
        let err = apply_log(
            &mut store,
            "r1",
            log_ep,
            br#"{"rollout_id": "r1", "first_seq": 0, "events": [{"nonsense": 1}], "more": false}"#,
        )
        .expect_err("not an event");
        assert!(
            err.to_string().contains(log_ep) && err.to_string().contains("events[0]"),
            "{err}"
        );
        assert_eq!(copy_log_len(&store, "r1").expect("log"), 0);
    }

    #[test]
    fn a_copy_of_one_server_is_not_used_for_another_and_keeps_its_queue() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let copy = dir.path().join("copy.db");
        let mut state = CopyState::load(&copy, "http://127.0.0.1:1").expect("fresh");
        state.queued.push(QueuedPause {
            rollout_id: "r1".into(),
            operator: "ana".into(),
            reason: "depot flooded".into(),
            queued_at: 1_800_000_000,
        });
        state.save(&copy).expect("saved");
        assert_eq!(
            CopyState::load(&copy, "http://127.0.0.1:1").expect("again"),
            state
        );
        let err = CopyState::load(&copy, "http://127.0.0.1:2").expect_err("another server");
        assert!(err.to_string().contains("http://127.0.0.1:1"), "{err}");
    }

    #[test]
    fn server_urls_and_copy_names() {
        assert_eq!(
            normalise_server("https://h:8443/").expect("ok"),
            "https://h:8443"
        );
        assert!(normalise_server("h:8443").is_err());
        assert!(normalise_server("http://h/api/v1").is_err());
        let p = default_copy_path("https://fleet.example.org:8443");
        assert!(
            p.ends_with("convoy/servers/fleet.example.org_8443.db"),
            "{}",
            p.display()
        );
        assert_eq!(segment("r 1/x"), "r%201%2Fx");
        assert_eq!(
            clock_words(Timestamp::from_secs(1_800_000_000)),
            "08:00 UTC"
        );
    }
}
