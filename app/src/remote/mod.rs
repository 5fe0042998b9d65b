//! `remote`: the console's side of a `convoy serve` (`convoy gui --server URL`): its API
//! client, and a local copy of what the views read, so that every view works unchanged on the
//! copy and, when the link drops, the console keeps showing the last known state and says how
//! old it is.
//!
//! Its rooms: `client` (the HTTP client and its errors), `mirror` (the copy and the wake-up),
//! `queue` (the pauses kept while offline), `steer` (operator commands through the API).
//! Three parts run, each on its own thread or task:
//! - the mirror (`convoy-remote-sync`): a sync pass copies the server's fleet
//!   (`GET /fleet/export`), the timelines of its newest rollouts (`GET /rollouts`, then
//!   `GET /rollouts/{id}/timeline?after=SEQ`) and their engine logs
//!   (`GET /rollouts/{id}/log?after=SEQ`, for the health plots) into the copy, a fleet cache
//!   like any other. The console's history worker reads the copy as it reads a local cache;
//!   the mirror also tells the console after a pass that changed something
//!   ([`Observer::copy_changed`]), so a war-room wall follows the server within a second
//!   rather than at the worker's next poll.
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
//! the audit trail, requests and approvals; and anything of egui: this module does not import
//! the console (`gui/remote.rs` wires it to the console's backend, and tidy checks it), so a
//! client other than the desktop console can use it.

use anyhow::{Context, Result, bail};
use convoy_core::fleet::Fleet;
use convoy_core::time::Timestamp;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::engine::control::OperatorCommand;
use crate::store::Store;

pub mod client;
pub mod mirror;
pub mod queue;
pub mod steer;

pub use client::{CallError, parse_answer};
pub use mirror::{apply_log, apply_timeline};
pub use queue::{CopyState, QueuedPause};
pub use steer::{RemoteCommands, RemoteSteer, Steer, phase_words};

use client::Endpoint;

/// How often an unreachable server is tried again.
pub const RETRY: Duration = Duration::from_secs(2);
/// The shortest time between two sync passes: a busy event stream wakes the mirror far more
/// often than the views need.
pub const MIN_PASS: Duration = Duration::from_millis(400);
/// How often the fleet is fetched again while connected (and at every reconnection): the
/// whole fleet is one request, so not on every event, and a fleet that changed reloads the
/// views (which forgets the selected device), so not often.
pub const FLEET_REFRESH: Duration = Duration::from_mins(5);
/// The most rollouts copied: the newest, as many as the console's war room reads
/// (`gui::backend::ROLLOUT_LIMIT`, checked equal by a test there).
pub const ROLLOUTS_COPIED: usize = 20;

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
pub(crate) fn clock_words(t: Timestamp) -> String {
    let day = t.secs().rem_euclid(86_400);
    format!("{:02}:{:02} UTC", day / 3600, day % 3600 / 60)
}

/// The link to the server as the status bar shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkWords {
    /// Before the first answer.
    Connecting,
    Connected,
    /// No answer; the text says why, how old the copy is and what is queued.
    Unreachable(String),
}

/// What the remote parts tell the console, which shows them.
#[derive(Debug)]
pub enum RemoteEvent {
    /// A step of starting up, for the progress line (empty when done).
    Stage(String),
    /// The fleet of the copy: at start, and whenever the server's fleet changed.
    FleetLoaded {
        fleet: Fleet,
        copy: PathBuf,
    },
    Link(LinkWords),
    /// Who runs the rollouts and what is queued, in words for the nav.
    Engine(String),
    /// The answer to an operator command (sent from the queue, or by [`RemoteSteer`] for a
    /// caller that is not the console's own steering thread).
    Steered {
        rollout_id: String,
        operator: String,
        command: OperatorCommand,
        result: Result<String, String>,
    },
    /// Something failed; the text says what and where.
    Failed(String),
}

/// The console the remote parts report to (`gui/remote.rs` implements it for the desktop
/// console). Both calls come from the mirror's or the steering's thread and may block briefly.
pub trait Observer: Send + Sync {
    /// Shows `event`; false when the console has gone (the mirror then stops).
    fn report(&self, event: RemoteEvent) -> bool;

    /// The copy changed (or was opened): read from it what the views show; false when the
    /// console has gone.
    fn copy_changed(&self, copy: &Store) -> bool;
}

/// What the mirror, the steering and the status bar share.
pub(crate) struct Shared {
    endpoint: Endpoint,
    copy: PathBuf,
    state: Mutex<LinkMemory>,
    /// Set once the console exists: queueing a pause updates the status bar at once.
    observer: OnceLock<Arc<dyn Observer>>,
    /// Wakes the mirror (a queued pause, an event on the stream).
    wake: Mutex<std::sync::mpsc::Sender<()>>,
    /// Held while the copy's state file is written: the steering and mirror threads both save
    /// it, and a save must write the newest state, whole.
    saving: Mutex<()>,
}

struct LinkMemory {
    /// Whether the last call got an answer; `None` before the first.
    up: Option<bool>,
    /// Why the last call got none.
    why_down: String,
    copy: CopyState,
    /// `operator (role)` from `GET /whoami`.
    who: Option<String>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, LinkMemory> {
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
    fn link_status(&self) -> LinkWords {
        let s = self.lock();
        match s.up {
            None => LinkWords::Connecting,
            Some(true) => LinkWords::Connected,
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
                LinkWords::Unreachable(format!(
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

    /// Shows `event` on the console; false when it has gone (or before it exists).
    fn report(&self, event: RemoteEvent) -> bool {
        self.observer.get().is_some_and(|o| o.report(event))
    }

    /// Tells the console the copy changed; false when it has gone (or before it exists).
    fn copy_changed(&self, copy: &Store) -> bool {
        self.observer.get().is_some_and(|o| o.copy_changed(copy))
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
            self.report(RemoteEvent::Link(self.link_status()));
            self.report(RemoteEvent::Engine(self.engine_note()));
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

/// A console's attachment to a server, opened but not started: the copy and its state file
/// are ready, nothing has talked to the server yet.
pub struct Remote {
    shared: Arc<Shared>,
    steer: Arc<RemoteSteer>,
    wake: std::sync::mpsc::Receiver<()>,
    poll: Duration,
}

impl Remote {
    /// Opens the copy of `options`. Fails only on local problems: a copy that cannot be opened
    /// or belongs to another server, an unreadable `--ca-cert`. An unreachable server is not an
    /// error: the console opens on the copy and says so.
    pub fn open(options: &RemoteOptions) -> Result<Self> {
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
        // The copy exists before the console's history worker first reads it.
        drop(Store::open(&options.copy)?);
        let (wake_tx, wake_rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            endpoint,
            copy: options.copy.clone(),
            state: Mutex::new(LinkMemory {
                up: None,
                why_down: String::new(),
                copy: copy_state,
                who: None,
            }),
            observer: OnceLock::new(),
            wake: Mutex::new(wake_tx),
            saving: Mutex::new(()),
        });
        let steer = Arc::new(RemoteSteer::new(Arc::clone(&shared)));
        Ok(Self {
            shared,
            steer,
            wake: wake_rx,
            poll: options.poll,
        })
    }

    /// The steering through the server's API (queueing pauses while it is unreachable). The
    /// mirror runs while someone holds it: the console's steering does, until it closes.
    pub fn steer(&self) -> Arc<RemoteSteer> {
        Arc::clone(&self.steer)
    }

    /// Starts reporting to `observer`: the link's state and the engine note at once, the event
    /// stream followed on `runtime`, and the mirror thread (`convoy-remote-sync`), which stops
    /// when the steering is dropped or the observer says the console has gone.
    pub fn start(
        self,
        observer: Arc<dyn Observer>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<()> {
        let Self {
            shared,
            steer,
            wake,
            poll,
        } = self;
        let _ = shared.observer.set(observer);
        shared.report(RemoteEvent::Link(LinkWords::Connecting));
        shared.report(RemoteEvent::Engine(shared.engine_note()));
        runtime.spawn(mirror::follow_events(
            shared.endpoint.clone(),
            Arc::downgrade(&shared),
        ));
        let owner = Arc::downgrade(&steer);
        drop(steer);
        std::thread::Builder::new()
            .name("convoy-remote-sync".into())
            .spawn(move || {
                if let Err(e) = mirror::run_mirror(&shared, &owner, &wake, poll) {
                    shared.report(RemoteEvent::Failed(format!(
                        "the copy of {} stopped: {e:#}",
                        shared.endpoint.server
                    )));
                }
            })
            .context("starting the mirror thread")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(client::segment("r 1/x"), "r%201%2Fx");
        assert_eq!(
            clock_words(Timestamp::from_secs(1_800_000_000)),
            "08:00 UTC"
        );
    }
}
