//! Releases: the signed manifests in the cache (and in a directory, if one is given), each with
//! its signature state checked against a trust directory as a device would check it, and a
//! form that hashes an artifact (picked with a file dialog or typed; hashed with a progress
//! bar), signs a manifest with a key unlocked by its passphrase, verifies it, writes the
//! manifest file and stores it in the cache.
//!
//! Every step is the code `convoy release create` and `convoy release verify` run
//! (`ops::releases::{hash_file_with_progress, release_spec, sign_release, verify_file}` and
//! `store::releases::record_release`); this module turns the form into their inputs, runs them on worker threads
//! that report through bounded channels, and draws. The passphrase lives in the form only until
//! signing starts, is never logged or persisted, and is wiped after use.
//!
//! The planner view lists the same manifests through [`list_with_releases`], which hands it the
//! release of each valid manifest and nothing for the others.
//!
//! A release signed by a key the trust directory does not trust (a first-run user's own key)
//! offers "Trust this key…": the key directory's public key is read, its id and fingerprint
//! are shown for confirmation, and only then is it written into the trust directory
//! (`ops::settings::trust_key`) and the list checked again.
//!
//! Deliberately not here: several artifacts per release, signed rollbacks, and TUF export (all
//! on the command line).

use anyhow::{Context, Result, anyhow};
use convoy_core::manifest::{self, Attack, TrustedKeys};
use convoy_core::release::ReleaseSpec;
use convoy_core::requirement::Requirement;
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use egui::RichText;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use zeroize::Zeroizing;

use crate::gui::app::UiCommand;
use crate::gui::findings::{CONSOLE_ACTOR, FieldError};
use crate::gui::tokens;
use crate::gui::view::{Commands, secret_row, text_row};
use crate::keys;
use crate::ops::releases::{self as ops, ReleaseFields};
use crate::store::Store;
use crate::store::releases::{record_release, stored_manifests};

/// Progress messages the hashing worker may queue before the UI takes them; when the queue is
/// full the worker drops the message rather than wait (each carries the running total).
const PROGRESS_QUEUE: usize = 16;

/// The create form as typed. Lists are comma-separated; requirements are separated by `;`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReleaseForm {
    pub artifact: String,
    /// Default: the hardware ids and the version.
    pub id: String,
    pub version: String,
    pub counter: String,
    pub hardware: String,
    pub requires: String,
    /// RFC 3339 or a duration from now (`30d`, `12h`).
    pub expires: String,
    pub key_dir: String,
    /// Held only until signing starts.
    pub passphrase: String,
    /// Where to write the manifest; default `<release id>.manifest.json` beside the artifact.
    pub out: String,
}

/// What the form asks for, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    pub artifact: PathBuf,
    pub fields: ReleaseFields,
    pub key_dir: PathBuf,
    pub out: Option<PathBuf>,
}

fn field(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

fn required<'a>(name: &'static str, text: &'a str) -> Result<&'a str, FieldError> {
    let t = text.trim();
    if t.is_empty() {
        Err(field(name, "required"))
    } else {
        Ok(t)
    }
}

/// Parses the form (everything but the passphrase) at `now`, or names the first bad field.
pub fn parse_form(form: &ReleaseForm, now: Timestamp) -> Result<CreateRequest, FieldError> {
    let artifact = PathBuf::from(required("Artifact", &form.artifact)?);
    let version: Version = required("Version", &form.version)?
        .parse()
        .map_err(|e| field("Version", format!("{e}")))?;
    let counter: u64 = required("Counter", &form.counter)?.parse().map_err(|_| {
        field(
            "Counter",
            "must be a whole number (the monotonic release counter)",
        )
    })?;
    let hardware: Vec<String> = form
        .hardware
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if hardware.is_empty() {
        return Err(field("Hardware ids", "name at least one device model"));
    }
    let requires = form
        .requires
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|r| {
            r.parse::<Requirement>()
                .map_err(|e| field("Requires", e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let expires = ops::parse_expires(required("Expires", &form.expires)?, now)
        .map_err(|e| field("Expires", format!("{e:#}")))?;
    if expires <= now {
        return Err(field(
            "Expires",
            format!("{expires} is not after now ({now})"),
        ));
    }
    let id = form.id.trim();
    if !id.is_empty() && !convoy_core::release::is_valid_id(id) {
        return Err(field(
            "Release id",
            "use 1 to 128 letters, digits, '-', '_', '.' or ':'",
        ));
    }
    Ok(CreateRequest {
        artifact,
        fields: ReleaseFields {
            id: (!id.is_empty()).then(|| id.to_owned()),
            version,
            counter,
            hardware,
            requires,
            provides: Vec::new(),
            expires,
        },
        key_dir: PathBuf::from(required("Key directory", &form.key_dir)?),
        out: (!form.out.trim().is_empty()).then(|| PathBuf::from(form.out.trim())),
    })
}

/// A signed release, as the worker made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub release_id: String,
    pub manifest_path: PathBuf,
    pub key_id: String,
    pub length_bytes: u64,
    pub sha256: String,
    /// Where it was stored, or why it was not.
    pub stored: Result<(), String>,
}

/// What the signing worker reports.
#[derive(Debug)]
pub enum SignEvent {
    /// Bytes of the artifact hashed so far.
    Hashed {
        done_bytes: u64,
    },
    /// Hashing finished; unlocking the key and signing.
    Signing,
    Done(Result<Created, String>),
}

/// Hashes, signs, verifies, writes and stores one release: the worker's job.
fn create_release(
    request: &CreateRequest,
    passphrase: &str,
    cache: Option<&Path>,
    now: Timestamp,
    report: &mut dyn FnMut(SignEvent),
) -> Result<Created> {
    let digest = ops::hash_file_with_progress(&request.artifact, &mut |done_bytes| {
        report(SignEvent::Hashed { done_bytes });
    })?;
    report(SignEvent::Signing);
    let (length_bytes, sha256) = (digest.length_bytes, digest.sha256.clone());
    let spec = ops::release_spec(
        &request.fields,
        vec![ops::artifact_of(digest.clone(), None)],
        now,
    )?;
    let manifest = ops::sign_release(spec, None, &request.key_dir, passphrase, now)?;
    let release_id = manifest.signed.release.id.clone();
    let out = request.out.clone().unwrap_or_else(|| {
        request
            .artifact
            .with_file_name(format!("{release_id}.manifest.json"))
    });
    ops::write_manifest(&out, &manifest)?;
    // Verify what is on disk, with the artifact, as `convoy release verify` would.
    let trust = TrustedKeys::from_keys([&keys::load_public(&request.key_dir)?]);
    let verified = ops::verify_file(&out, &trust, now)?;
    verified.check_artifact(&digest).map_err(|r| {
        anyhow!(
            "artifact {} rejected ({}): {r}",
            request.artifact.display(),
            r.attack()
        )
    })?;
    let stored = match cache {
        None => Err("no fleet cache is open".to_owned()),
        Some(cache) => Store::open_existing(cache)
            .and_then(|store| record_release(&store, &manifest, CONSOLE_ACTOR, now))
            .map(|_| ())
            .map_err(|e| format!("{e:#}")),
    };
    Ok(Created {
        release_id,
        manifest_path: out,
        key_id: manifest.signed.key_id.to_string(),
        length_bytes,
        sha256,
        stored,
    })
}

/// A manifest's signature state, checked as a device checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureState {
    /// Signed by a trusted key over exactly these bytes, and not expired.
    Valid,
    /// Changed after signing, or malformed; the text says what.
    Tampered(String),
    /// Past its expiry.
    Expired(String),
    /// Signed by a key the trust directory does not trust, or revoked.
    UntrustedKey(String),
    /// Refused for another reason (too large).
    Rejected(String),
    /// Not checked: there is no usable trust directory; the text says why.
    NotChecked(String),
}

impl SignatureState {
    /// Whether a release in this state may be offered to devices (chosen for a plan).
    pub fn offerable(&self) -> bool {
        *self == SignatureState::Valid
    }

    pub fn label(&self) -> &'static str {
        match self {
            SignatureState::Valid => "valid",
            SignatureState::Tampered(_) => "tampered",
            SignatureState::Expired(_) => "expired",
            SignatureState::UntrustedKey(_) => "untrusted key",
            SignatureState::Rejected(_) => "rejected",
            SignatureState::NotChecked(_) => "not checked",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            SignatureState::Valid => "",
            SignatureState::Tampered(t)
            | SignatureState::Expired(t)
            | SignatureState::UntrustedKey(t)
            | SignatureState::Rejected(t)
            | SignatureState::NotChecked(t) => t,
        }
    }
}

/// Checks manifest bytes against `trust` (or says why there is none) at `now`.
pub fn check_manifest(
    bytes: &[u8],
    trust: Result<&TrustedKeys, &str>,
    now: Timestamp,
) -> SignatureState {
    check_and_read(bytes, trust, now).0
}

/// As [`check_manifest`], with the release a valid manifest signs: only a manifest that
/// verifies gives one (the planner plans nothing else).
fn check_and_read(
    bytes: &[u8],
    trust: Result<&TrustedKeys, &str>,
    now: Timestamp,
) -> (SignatureState, Option<ReleaseSpec>) {
    let trust = match trust {
        Ok(t) => t,
        Err(why) => return (SignatureState::NotChecked(why.to_owned()), None),
    };
    match manifest::verify(bytes, trust, now) {
        Ok(verified) => (SignatureState::Valid, Some(verified.spec().clone())),
        Err(r) => {
            let text = r.to_string();
            let state = match r.attack() {
                Attack::Tampered => SignatureState::Tampered(text),
                Attack::Expired => SignatureState::Expired(text),
                Attack::WrongKey => SignatureState::UntrustedKey(text),
                _ => SignatureState::Rejected(text),
            };
            (state, None)
        }
    }
}

/// One manifest in the list: what it says (read leniently, so a tampered one still shows its
/// claims) and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedManifest {
    /// `cache` or the file's path.
    pub source: String,
    pub release_id: String,
    pub version: String,
    pub counter: String,
    pub hardware: String,
    pub expires: String,
    pub key_id: String,
    pub state: SignatureState,
}

fn describe(
    source: String,
    fallback_id: &str,
    bytes: &[u8],
    state: SignatureState,
) -> ListedManifest {
    // For display only (the state comes from `verify`); a document with two readings shows none.
    let doc: serde_json::Value = convoy_core::strict_json::from_slice(bytes).unwrap_or_default();
    let signed = &doc["signed"];
    let release = &signed["release"];
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "?".to_owned(),
        other => other.to_string(),
    };
    let hardware = release["hardware"].as_array().map_or_else(
        || "?".to_owned(),
        |a| {
            a.iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    let expires = release["expires"].as_i64().map_or_else(
        || text(&release["expires"]),
        |s| Timestamp::from_secs(s).to_string(),
    );
    ListedManifest {
        source,
        release_id: release["id"]
            .as_str()
            .map_or_else(|| fallback_id.to_owned(), str::to_owned),
        version: text(&release["version"]),
        counter: text(&release["counter"]),
        hardware,
        expires,
        key_id: text(&signed["key_id"]),
        state,
    }
}

/// Where the list reads manifests from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListSources {
    pub cache: Option<PathBuf>,
    /// A trust directory (keyset-N.json) or a key directory.
    pub trust_dir: Option<PathBuf>,
    /// A directory of manifest files (`*.json`), if given.
    pub manifest_dir: Option<PathBuf>,
}

/// Reads and checks every manifest: the cache's by release id, then the directory's by file
/// name. A source that cannot be read is an error; a manifest that does not verify is a row.
pub fn list_manifests(sources: &ListSources, now: Timestamp) -> Result<Vec<ListedManifest>> {
    Ok(list_with_releases(sources, now)?
        .into_iter()
        .map(|(row, _)| row)
        .collect())
}

/// As [`list_manifests`], each row with the release its manifest signs when (and only when)
/// the signature state is valid.
pub fn list_with_releases(
    sources: &ListSources,
    now: Timestamp,
) -> Result<Vec<(ListedManifest, Option<ReleaseSpec>)>> {
    let trust = match &sources.trust_dir {
        None => Err("no trust directory given".to_owned()),
        Some(dir) => keys::load_trust(dir).map_err(|e| format!("{e:#}")),
    };
    let trust_ref = trust.as_ref().map_err(String::as_str);
    let mut rows = Vec::new();
    if let Some(cache) = &sources.cache {
        let store = Store::open_existing(cache)
            .with_context(|| format!("opening the fleet cache {}", cache.display()))?;
        for m in stored_manifests(&store)? {
            let (state, spec) = check_and_read(&m.bytes, trust_ref, now);
            rows.push((
                describe("cache".into(), &m.release_id, &m.bytes, state),
                spec,
            ));
        }
    }
    if let Some(dir) = &sources.manifest_dir {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading the manifest directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for path in files {
            let bytes = ops::read_manifest(&path)?;
            let (state, spec) = check_and_read(&bytes, trust_ref, now);
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            rows.push((
                describe(path.display().to_string(), &name, &bytes, state),
                spec,
            ));
        }
    }
    Ok(rows)
}

/// The signing job as the view shows it.
#[derive(Debug)]
pub struct SignJob {
    rx: Receiver<SignEvent>,
    pub total_bytes: u64,
    pub done_bytes: u64,
    pub signing: bool,
}

/// What the releases view asks the console for; each starts a thread of the view's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleasesCommand {
    /// List and check the manifests again.
    CheckManifests,
    /// Open a file dialog for this field.
    Browse(Browse),
    /// Hash, sign, verify, write and store the release the form describes.
    Create,
    /// Read the public key of the key directory in [`ReleasesState::trust`], to confirm.
    ReadKeyToTrust,
    /// Write the confirmed key of [`ReleasesState::trust`] into the trust directory.
    TrustKey,
}

/// Trusting the key that signed an untrusted release: asked, read, confirmed, written.
#[derive(Debug, Default)]
pub struct TrustFlow {
    /// The key id the untrusted manifest names.
    pub key_id: String,
    /// The release it signed.
    pub release_id: String,
    /// The key directory holding its public key (the form's key directory when there is one).
    pub key_dir: String,
    /// The key as read from `key_dir`, or why it could not be.
    pub read: Option<Result<crate::ops::settings::KeyToTrust, String>>,
    read_rx: Option<Receiver<Result<crate::ops::settings::KeyToTrust, String>>>,
    write_rx: Option<Receiver<Result<String, String>>>,
    /// What trusting it wrote, or why nothing was.
    pub outcome: Option<Result<String, String>>,
}

/// The releases view's state, for the session.
#[derive(Debug, Default)]
pub struct ReleasesState {
    pub form: ReleaseForm,
    pub trust_dir: String,
    pub manifest_dir: String,
    pub job: Option<SignJob>,
    /// The last signing's outcome, and the artifact size it hashed.
    pub created: Option<Result<Created, String>>,
    pub hashed_bytes: Option<(u64, u64)>,
    pub list: Option<Result<Vec<ListedManifest>, String>>,
    list_rx: Option<Receiver<Result<Vec<ListedManifest>, String>>>,
    listed: bool,
    /// An open file dialog (on its own thread: rfd's dialogs block) and the field it fills.
    browse: Option<(Browse, Receiver<Option<PathBuf>>)>,
    /// Why the last dialog gave no path, shown beside the buttons.
    pub browse_note: Option<String>,
    /// Trusting an untrusted release's key, while it is asked.
    pub trust: Option<TrustFlow>,
}

/// What a file dialog picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Browse {
    Artifact,
    KeyDir,
}

impl ReleasesState {
    /// Takes the workers' reports.
    pub fn poll(&mut self) {
        if let Some(job) = &mut self.job {
            loop {
                match job.rx.try_recv() {
                    Ok(SignEvent::Hashed { done_bytes }) => job.done_bytes = done_bytes,
                    Ok(SignEvent::Signing) => job.signing = true,
                    Ok(SignEvent::Done(result)) => {
                        if let Ok(c) = &result {
                            self.hashed_bytes = Some((c.length_bytes, job.total_bytes));
                        }
                        self.created = Some(result);
                        self.job = None;
                        // The new release shows in the list.
                        self.listed = false;
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.created =
                            Some(Err("the signing worker stopped without an answer".into()));
                        self.job = None;
                        break;
                    }
                }
            }
        }
        if let Some((target, rx)) = &self.browse {
            let picked = match rx.try_recv() {
                Ok(p) => Some(p),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(None),
            };
            if let Some(picked) = picked {
                match (picked, *target) {
                    (Some(path), Browse::Artifact) => {
                        self.form.artifact = path.display().to_string();
                    }
                    (Some(path), Browse::KeyDir) => self.form.key_dir = path.display().to_string(),
                    (None, _) => {
                        self.browse_note = Some(
                            "No file chosen (cancelled, or no file dialog on this desktop: type the path)"
                                .into(),
                        );
                    }
                }
                self.browse = None;
            }
        }
        if let Some(flow) = &mut self.trust {
            if let Some(rx) = &flow.read_rx {
                match rx.try_recv() {
                    Ok(read) => {
                        flow.read = Some(read);
                        flow.read_rx = None;
                    }
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => {
                        flow.read = Some(Err("the key reader stopped without an answer".into()));
                        flow.read_rx = None;
                    }
                }
            }
            if let Some(rx) = &flow.write_rx {
                let outcome = match rx.try_recv() {
                    Ok(outcome) => Some(outcome),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => {
                        Some(Err("the key writer stopped without an answer".into()))
                    }
                };
                if let Some(outcome) = outcome {
                    if outcome.is_ok() {
                        // Checked again against the trust directory that now holds the key.
                        self.listed = false;
                    }
                    flow.outcome = Some(outcome);
                    flow.write_rx = None;
                }
            }
        }
        if let Some(rx) = &self.list_rx {
            match rx.try_recv() {
                Ok(list) => {
                    self.list = Some(list);
                    self.list_rx = None;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    self.list = Some(Err("the listing worker stopped without an answer".into()));
                    self.list_rx = None;
                }
            }
        }
    }

    /// Does what the view asked for, on the state's threads: `cache` is the fleet cache.
    pub fn apply(
        &mut self,
        ctx: &egui::Context,
        command: ReleasesCommand,
        cache: Option<PathBuf>,
        now: Timestamp,
    ) {
        match command {
            ReleasesCommand::CheckManifests => self.refresh(ctx, cache, now),
            ReleasesCommand::Browse(target) => self.browse(ctx, target),
            ReleasesCommand::Create => self.start(ctx, cache, now),
            ReleasesCommand::ReadKeyToTrust => self.read_key_to_trust(ctx),
            ReleasesCommand::TrustKey => self.trust_key(ctx),
        }
    }

    /// Reads the public key of the trust flow's key directory on a worker thread.
    fn read_key_to_trust(&mut self, ctx: &egui::Context) {
        let Some(flow) = &mut self.trust else {
            return;
        };
        flow.read = None;
        flow.outcome = None;
        let dir = PathBuf::from(flow.key_dir.trim());
        let started = crate::gui::worker::spawn_job(ctx, "convoy-trust-key", move || {
            crate::ops::settings::key_to_trust(&dir).map_err(|e| format!("{e:#}"))
        });
        match started {
            Ok(rx) => flow.read_rx = Some(rx),
            Err(e) => flow.read = Some(Err(format!("could not start the key reader: {e}"))),
        }
    }

    /// Writes the confirmed key into the trust directory on a worker thread.
    fn trust_key(&mut self, ctx: &egui::Context) {
        let trust_dir = PathBuf::from(self.trust_dir.trim());
        let Some(flow) = &mut self.trust else {
            return;
        };
        let Some(Ok(key)) = &flow.read else {
            flow.outcome = Some(Err("read the key first".into()));
            return;
        };
        if self.trust_dir.trim().is_empty() {
            flow.outcome = Some(Err(
                "no trust directory: fill in Trust directory above".into()
            ));
            return;
        }
        let (key_dir, id) = (key.key_dir.clone(), key.id.clone());
        let started = crate::gui::worker::spawn_job(ctx, "convoy-trust-key", move || {
            crate::ops::settings::trust_key(&trust_dir, &key_dir, &id).map_err(|e| format!("{e:#}"))
        });
        match started {
            Ok(rx) => flow.write_rx = Some(rx),
            Err(e) => flow.outcome = Some(Err(format!("could not start the key writer: {e}"))),
        }
    }

    /// What the console does before the view draws: lists the manifests the first time.
    pub fn prepare(&mut self, ctx: &egui::Context, cache: Option<PathBuf>, now: Timestamp) {
        if !self.listed && self.list_rx.is_none() {
            // The first listing checks against the trust directory beside the cache, the one
            // `convoy rollout run` and the planner use: an empty field showed the demo's own
            // release as "not checked" (issue 19).
            if self.trust_dir.trim().is_empty()
                && let Some(c) = &cache
            {
                self.trust_dir = crate::ops::settings::default_trust_dir(c)
                    .display()
                    .to_string();
            }
            self.refresh(ctx, cache, now);
        }
    }

    fn sources(&self, cache: Option<PathBuf>) -> ListSources {
        let dir = |s: &str| (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()));
        ListSources {
            cache,
            trust_dir: dir(&self.trust_dir),
            manifest_dir: dir(&self.manifest_dir),
        }
    }

    /// Lists and checks the manifests on a worker thread.
    fn refresh(&mut self, ctx: &egui::Context, cache: Option<PathBuf>, now: Timestamp) {
        self.listed = true;
        let sources = self.sources(cache);
        let started = crate::gui::worker::spawn_job(ctx, "convoy-releases", move || {
            list_manifests(&sources, now).map_err(|e| format!("{e:#}"))
        });
        match started {
            Ok(rx) => self.list_rx = Some(rx),
            Err(e) => self.list = Some(Err(format!("could not start the listing thread: {e}"))),
        }
    }

    /// Opens a file dialog on its own thread; [`Self::poll`] fills the field when it answers.
    fn browse(&mut self, ctx: &egui::Context, target: Browse) {
        self.browse_note = None;
        let started = crate::gui::worker::spawn_job(ctx, "convoy-file-dialog", move || {
            let dialog = rfd::FileDialog::new();
            match target {
                Browse::Artifact => dialog.set_title("Artifact to sign").pick_file(),
                Browse::KeyDir => dialog.set_title("Signing key directory").pick_folder(),
            }
        });
        match started {
            Ok(rx) => self.browse = Some((target, rx)),
            Err(e) => self.browse_note = Some(format!("could not open a file dialog: {e}")),
        }
    }

    /// Starts hashing and signing on a worker thread; the passphrase leaves the form.
    fn start(&mut self, ctx: &egui::Context, cache: Option<PathBuf>, now: Timestamp) {
        let request = match parse_form(&self.form, now) {
            Ok(r) => r,
            Err(e) => {
                self.created = Some(Err(e.to_string()));
                return;
            }
        };
        let total_bytes = match std::fs::metadata(&request.artifact) {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => {
                self.created = Some(Err(format!(
                    "Artifact: {} is not a file",
                    request.artifact.display()
                )));
                return;
            }
            Err(e) => {
                self.created = Some(Err(format!(
                    "Artifact: cannot read {}: {e}",
                    request.artifact.display()
                )));
                return;
            }
        };
        let passphrase = Zeroizing::new(std::mem::take(&mut self.form.passphrase));
        let (tx, rx): (SyncSender<SignEvent>, _) = std::sync::mpsc::sync_channel(PROGRESS_QUEUE);
        let ctx = ctx.clone();
        let started = std::thread::Builder::new()
            .name("convoy-release-sign".into())
            .spawn(move || {
                let mut report = |event: SignEvent| {
                    // Progress never waits for the UI: a full queue drops a running total that
                    // the next message supersedes.
                    match tx.try_send(event) {
                        Ok(()) | Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
                    }
                    ctx.request_repaint();
                };
                let result =
                    create_release(&request, &passphrase, cache.as_deref(), now, &mut report)
                        .map_err(|e| format!("{e:#}"));
                drop(passphrase);
                // The outcome must arrive: wait for room rather than drop it.
                let _ = tx.send(SignEvent::Done(result));
                ctx.request_repaint();
            });
        match started {
            Ok(_) => {
                self.created = None;
                self.hashed_bytes = None;
                self.job = Some(SignJob {
                    rx,
                    total_bytes,
                    done_bytes: 0,
                    signing: false,
                });
            }
            Err(e) => self.created = Some(Err(format!("could not start the signing thread: {e}"))),
        }
    }
}

/// `3.0 MiB` and the like.
pub fn bytes_text(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// Draws the releases view.
pub fn releases_ui(state: &mut ReleasesState, out: &mut Commands, ui: &mut egui::Ui) {
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.heading("Releases");
        ui.label(
            RichText::new(
                "Signed manifests, checked against the trust directory as a device checks them. Only valid ones may be offered.",
            )
            .color(tokens::MUTED),
        );
        ui.add_space(6.0);
        egui::Grid::new("release-sources")
            .num_columns(2)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                text_row(ui, "Trust directory", &mut state.trust_dir, "keyset-N.json directory or a key directory");
                text_row(ui, "Manifest directory", &mut state.manifest_dir, "also list the *.json manifests here (optional)");
            });
        ui.horizontal(|ui| {
            if ui
                .add_enabled(state.list_rx.is_none(), egui::Button::new("Check manifests"))
                .clicked()
            {
                out.send(UiCommand::Releases(ReleasesCommand::CheckManifests));
            }
            if state.list_rx.is_some() {
                ui.add(egui::Spinner::new());
            }
        });
        list_ui(state, out, ui);
        trust_ui(state, out, ui);
        ui.separator();
        ui.label(RichText::new("Create a release").strong());
        create_ui(state, ui, out);
    });
}

fn list_ui(state: &mut ReleasesState, out: &mut Commands, ui: &mut egui::Ui) {
    let mut ask: Option<(String, String)> = None;
    match &state.list {
        None => {
            ui.label("Reading the manifests…");
        }
        Some(Err(why)) => {
            ui.colored_label(tokens::BAD, format!("Could not list the manifests: {why}"));
        }
        Some(Ok(rows)) if rows.is_empty() => {
            ui.label(RichText::new("No manifests in the cache yet.").color(tokens::MUTED));
        }
        Some(Ok(rows)) => {
            egui::Grid::new("release-list")
                .num_columns(8)
                .striped(true)
                .spacing([12.0, 3.0])
                .show(ui, |ui| {
                    for h in [
                        "release",
                        "version",
                        "counter",
                        "hardware",
                        "expires",
                        "key",
                        "signature",
                        "source",
                    ] {
                        ui.label(RichText::new(h).strong());
                    }
                    ui.end_row();
                    for row in rows {
                        ui.label(&row.release_id);
                        ui.label(&row.version);
                        ui.label(&row.counter);
                        ui.label(&row.hardware);
                        ui.label(&row.expires);
                        ui.label(RichText::new(&row.key_id).monospace());
                        let color = match row.state {
                            SignatureState::Valid => tokens::OK,
                            SignatureState::NotChecked(_) => tokens::WARN,
                            _ => tokens::BAD,
                        };
                        let r = ui.label(RichText::new(row.state.label()).color(color).strong());
                        if !row.state.detail().is_empty() {
                            r.on_hover_text(row.state.detail());
                        }
                        ui.label(&row.source);
                        ui.end_row();
                    }
                });
            let refused: Vec<&ListedManifest> =
                rows.iter().filter(|r| !r.state.offerable()).collect();
            for r in refused {
                ui.colored_label(
                    tokens::BAD,
                    format!(
                        "{} ({}) is {} and is never offered: {}",
                        r.release_id,
                        r.source,
                        r.state.label(),
                        r.state.detail()
                    ),
                );
                let asked = state.trust.as_ref().is_some_and(|t| t.key_id == r.key_id);
                if matches!(r.state, SignatureState::UntrustedKey(_))
                    && !asked
                    && ask.is_none()
                    && ui
                        .button("Trust this key…")
                        .on_hover_text(format!(
                            "Trust key {} in the trust directory, after confirming its fingerprint",
                            r.key_id
                        ))
                        .clicked()
                {
                    ask = Some((r.key_id.clone(), r.release_id.clone()));
                }
            }
        }
    }
    if let Some((key_id, release_id)) = ask {
        let key_dir = state.form.key_dir.trim().to_owned();
        let known = !key_dir.is_empty();
        state.trust = Some(TrustFlow {
            key_id,
            release_id,
            key_dir,
            ..TrustFlow::default()
        });
        if known {
            out.send(UiCommand::Releases(ReleasesCommand::ReadKeyToTrust));
        }
    }
}

/// The confirmation before a key is trusted: where its public key is, its id and
/// fingerprint, where it will be written; then what was written.
fn trust_ui(state: &mut ReleasesState, out: &mut Commands, ui: &mut egui::Ui) {
    let trust_dir = state.trust_dir.trim().to_owned();
    let Some(flow) = &mut state.trust else {
        return;
    };
    let mut cancel = false;
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.label(
            RichText::new(format!(
                "Trust the key that signed {}: {}",
                flow.release_id, flow.key_id
            ))
            .strong(),
        );
        egui::Grid::new("trust-key-form")
            .num_columns(2)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                text_row(
                    ui,
                    "Key directory to trust",
                    &mut flow.key_dir,
                    "the key directory holding its public.json",
                );
            });
        let busy = flow.read_rx.is_some() || flow.write_rx.is_some();
        ui.horizontal(|ui| {
            if ui
                .add_enabled(
                    !busy && !flow.key_dir.trim().is_empty(),
                    egui::Button::new("Read key"),
                )
                .clicked()
            {
                out.send(UiCommand::Releases(ReleasesCommand::ReadKeyToTrust));
            }
            if ui.button("Cancel").clicked() {
                cancel = true;
            }
            if busy {
                ui.add(egui::Spinner::new());
            }
        });
        match &flow.read {
            None => {}
            Some(Err(why)) => {
                ui.colored_label(tokens::BAD, format!("Could not read the key: {why}"));
            }
            Some(Ok(key)) if key.id != flow.key_id => {
                ui.colored_label(
                    tokens::BAD,
                    format!(
                        "The key in {} is {}, not {}, which signed {}: choose its key directory.",
                        key.key_dir.display(),
                        key.id,
                        flow.key_id,
                        flow.release_id
                    ),
                );
            }
            Some(Ok(key)) => {
                ui.label(RichText::new(format!("Key id: {}", key.id)).monospace());
                ui.label(
                    RichText::new(format!("Fingerprint (Ed25519 public key): {}", key.fingerprint))
                        .monospace(),
                );
                ui.label(format!(
                    "Compare the fingerprint with the key's owner before trusting it. It will be written to the trust directory {trust_dir}: every release this key signs then verifies here, in the planner and in `convoy rollout run` with that trust directory."
                ));
                if flow.outcome.is_none()
                    && ui
                        .add_enabled(!busy, egui::Button::new("Trust this key"))
                        .clicked()
                {
                    out.send(UiCommand::Releases(ReleasesCommand::TrustKey));
                }
            }
        }
        match &flow.outcome {
            Some(Ok(text)) => {
                ui.colored_label(tokens::OK, format!("{text}; the manifests are checked again."));
            }
            Some(Err(why)) => {
                ui.colored_label(tokens::BAD, format!("Not trusted: {why}"));
            }
            None => {}
        }
    });
    if cancel {
        state.trust = None;
    }
}

fn create_ui(state: &mut ReleasesState, ui: &mut egui::Ui, out: &mut Commands) {
    let busy = state.job.is_some();
    let mut browse_key = false;
    ui.add_enabled_ui(!busy, |ui| {
        egui::Grid::new("release-form")
            .num_columns(2)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                let browsing = state.browse.is_some();
                let l = ui.label("Artifact");
                ui.horizontal(|ui| {
                    ui.add(
                        egui::TextEdit::singleline(&mut state.form.artifact)
                            .hint_text("path of the firmware image")
                            .desired_width(420.0),
                    )
                    .labelled_by(l.id);
                    if ui
                        .add_enabled(!browsing, egui::Button::new("Browse…"))
                        .on_hover_text("Pick the artifact with a file dialog")
                        .clicked()
                    {
                        out.send(UiCommand::Releases(ReleasesCommand::Browse(Browse::Artifact)));
                    }
                });
                ui.end_row();
                let f = &mut state.form;
                text_row(ui, "Version", &mut f.version, "e.g. 2.5.0");
                text_row(ui, "Counter", &mut f.counter, "monotonic release counter, e.g. 25");
                text_row(ui, "Hardware ids", &mut f.hardware, "T300, T500");
                text_row(ui, "Requires", &mut f.requires, "bootloader>=2.0; hw_rev in B, C (separated by ;)");
                text_row(ui, "Expires", &mut f.expires, "30d, 12h or 2027-01-01T00:00:00Z");
                text_row(ui, "Release id", &mut f.id, "default: hardware and version");
                let l = ui.label("Key directory");
                ui.horizontal(|ui| {
                    ui.add(
                        egui::TextEdit::singleline(&mut f.key_dir)
                            .hint_text("made by convoy key generate")
                            .desired_width(420.0),
                    )
                    .labelled_by(l.id);
                    if ui
                        .add_enabled(!browsing, egui::Button::new("Browse key…"))
                        .on_hover_text("Pick the key directory with a file dialog")
                        .clicked()
                    {
                        browse_key = true;
                    }
                });
                ui.end_row();
                secret_row(ui, "Passphrase", &mut f.passphrase, "the key's passphrase");
                text_row(ui, "Manifest file", &mut f.out, "default: <release id>.manifest.json beside the artifact");
            });
        if ui
            .button("Hash, sign and save")
            .on_hover_text("Hash the artifact, sign with the key, verify, write the manifest and store it in the cache")
            .clicked()
        {
            out.send(UiCommand::Releases(ReleasesCommand::Create));
        }
        if let Some(note) = &state.browse_note {
            ui.colored_label(tokens::WARN, note);
        }
    });
    if browse_key {
        out.send(UiCommand::Releases(ReleasesCommand::Browse(Browse::KeyDir)));
    }
    if let Some(job) = &state.job {
        let fraction = if job.total_bytes == 0 {
            1.0
        } else {
            job.done_bytes as f32 / job.total_bytes as f32
        };
        ui.add(
            egui::ProgressBar::new(fraction)
                .text(format!(
                    "Hashed {} of {}",
                    bytes_text(job.done_bytes),
                    bytes_text(job.total_bytes)
                ))
                .desired_width(420.0),
        );
        if job.signing {
            ui.horizontal(|ui| {
                ui.add(egui::Spinner::new());
                ui.label("Unlocking the key and signing…");
            });
        }
    }
    if let Some((done, total)) = state.hashed_bytes {
        ui.label(format!(
            "Hashed {} of {}",
            bytes_text(done),
            bytes_text(total)
        ));
    }
    match &state.created {
        Some(Ok(c)) => {
            ui.colored_label(
                tokens::OK,
                format!(
                    "Signed release {} with key {} and verified it; manifest written to {}",
                    c.release_id,
                    c.key_id,
                    c.manifest_path.display()
                ),
            );
            ui.label(RichText::new(format!("sha256 {}", c.sha256)).monospace());
            match &c.stored {
                Ok(()) => ui.label("Stored in the cache."),
                Err(why) => {
                    ui.colored_label(tokens::WARN, format!("Not stored in the cache: {why}"))
                }
            };
        }
        Some(Err(why)) => {
            ui.colored_label(tokens::BAD, format!("Could not create the release: {why}"));
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn form() -> ReleaseForm {
        ReleaseForm {
            artifact: "/tmp/fw.bin".into(),
            version: "2.5.0".into(),
            counter: "25".into(),
            hardware: "T300, T500".into(),
            requires: "bootloader>=2.0; hw_rev in B,C".into(),
            expires: "30d".into(),
            key_dir: "/tmp/key".into(),
            ..ReleaseForm::default()
        }
    }

    #[test]
    fn the_form_parses_into_the_fields_of_release_create() {
        let r = parse_form(&form(), NOW).expect("valid");
        assert_eq!(r.fields.hardware, ["T300", "T500"]);
        assert_eq!(r.fields.requires.len(), 2);
        assert_eq!(r.fields.counter, 25);
        assert_eq!(r.fields.expires, NOW.plus_secs(30 * 86_400));
        assert_eq!(r.fields.id, None);
        assert_eq!(r.out, None);
    }

    #[test]
    fn bad_fields_are_named() {
        let check = |f: ReleaseForm, name: &str| {
            assert_eq!(parse_form(&f, NOW).expect_err(name).field, name);
        };
        check(
            ReleaseForm {
                counter: "-1".into(),
                ..form()
            },
            "Counter",
        );
        check(
            ReleaseForm {
                hardware: " , ".into(),
                ..form()
            },
            "Hardware ids",
        );
        check(
            ReleaseForm {
                expires: "2020-01-01T00:00:00Z".into(),
                ..form()
            },
            "Expires",
        );
        check(
            ReleaseForm {
                requires: "bootloader>>2".into(),
                ..form()
            },
            "Requires",
        );
        check(
            ReleaseForm {
                id: "no spaces".into(),
                ..form()
            },
            "Release id",
        );
    }

    #[test]
    fn states_follow_the_attack_and_only_valid_is_offerable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_dir = dir.path().join("key");
        keys::generate(&key_dir, "gui test passphrase").expect("key");
        let other_dir = dir.path().join("other");
        keys::generate(&other_dir, "gui test passphrase").expect("key");
        let request = parse_form(
            &ReleaseForm {
                artifact: dir.path().join("fw.bin").display().to_string(),
                key_dir: key_dir.display().to_string(),
                ..form()
            },
            NOW,
        )
        .expect("valid");
        std::fs::write(&request.artifact, vec![7u8; 3 << 20]).expect("artifact");
        let mut progress = Vec::new();
        let created = create_release(&request, "gui test passphrase", None, NOW, &mut |e| {
            if let SignEvent::Hashed { done_bytes } = e {
                progress.push(done_bytes);
            }
        })
        .expect("created");
        assert_eq!(progress, [1 << 20, 2 << 20, 3 << 20]);
        assert_eq!(created.length_bytes, 3 << 20);
        assert_eq!(created.release_id, "t300_t500-2.5.0");
        assert!(created.stored.is_err());
        let bytes = std::fs::read(&created.manifest_path).expect("written");
        let trust = keys::load_trust(&key_dir).expect("trust");
        let other = keys::load_trust(&other_dir).expect("trust");
        let valid = check_manifest(&bytes, Ok(&trust), NOW);
        assert!(valid.offerable());
        let expired = check_manifest(&bytes, Ok(&trust), NOW.plus_secs(31 * 86_400));
        assert_eq!(expired.label(), "expired");
        assert_eq!(
            check_manifest(&bytes, Ok(&other), NOW).label(),
            "untrusted key"
        );
        let mut doc: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        doc["signed"]["release"]["counter"] = 26.into();
        let tampered = serde_json::to_vec_pretty(&doc).expect("json");
        let state = check_manifest(&tampered, Ok(&trust), NOW);
        assert_eq!(state.label(), "tampered", "{state:?}");
        assert!(!state.offerable());
        assert_eq!(
            check_manifest(b"{}", Err("no trust directory given"), NOW).label(),
            "not checked"
        );
    }
}
