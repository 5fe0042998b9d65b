//! The simulated fleet on the wire: every device of a fleet as a [`SimDevice`], driven by
//! commands received over MQTT and by a simulated clock, publishing its status, telemetry and
//! acks in the protocol of `docs/PROTOCOL.md`.
//!
//! One MQTT connection carries the whole simulated fleet: it subscribes to
//! `{prefix}/devices/+/commands` and publishes on each device's own topics. Real devices would
//! each hold their own connection; for the console the traffic is the same, and one connection
//! lets a laptop simulate thousands of devices.
//!
//! Simulated time is `start + elapsed wall time × time_scale`. Each device's download is modelled
//! by length and bandwidth in the core ([`convoy_core::devsim`]). With [`ArtifactFetch`]
//! (`convoy sim --fetch-artifacts DIR`), the simulator also really fetches each offered release's
//! artifacts once per process over HTTP, resuming and checking length and SHA-256 against the
//! verified manifest, and holds the offers of that release until they are in; if the fetch fails,
//! the offers are rejected with the reason. Devices still model their own progress: the bytes
//! are fetched once for the whole simulated fleet, not once per device.

use anyhow::{Context, Result, bail};
use convoy_core::devsim::{
    AckOutcome, Faults, SimCommand, SimConfig, SimDevice, SimEvent, SimMessage, StatusSnapshot,
    UpdatePhase,
};
use convoy_core::fleet::Fleet;
use convoy_core::manifest::TrustedKeys;
use convoy_core::manifest::{self as signing};
use convoy_core::release::Artifact;
use convoy_core::time::Timestamp;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::link::http::{RetryPolicy, download_with_retries, range};

use crate::link::mqtt::{self, LinkConfig, LinkEvent, LinkHandle, LinkState, Role};
use crate::link::protocol::{
    AckResult, Command, CommandAck, CommandAction, DeviceStatus, PROTOCOL_VERSION, Telemetry,
    TelemetryEvent, TopicKind, Topics, UpdateState, UpdateStatus, is_valid_id,
};

/// How to run a simulated fleet.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub broker_url: String,
    pub client_id: String,
    pub topics: Topics,
    pub fleet: Fleet,
    pub faults: Faults,
    pub trust: TrustedKeys,
    pub seed: u64,
    /// Simulated seconds per wall second.
    pub time_scale: f64,
    /// Wall time between clock ticks.
    pub tick: Duration,
    pub config: SimConfig,
    /// The simulated start time.
    pub start: Timestamp,
}

/// What a run did, counted over its whole life.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimSummary {
    pub devices: usize,
    pub commands: u64,
    /// Commands that were not valid (bad JSON, unknown device, topic mismatch).
    pub bad_commands: u64,
    pub published: u64,
    /// Messages dropped while the broker was unreachable.
    pub dropped_offline: u64,
    pub ticks: u64,
    /// Ticks that took a second of wall time or more (the process was short of CPU).
    pub slow_ticks: u64,
}

/// The fleet of simulated devices and the simulated clock, without the network (so the benchmark
/// can drive it alone).
pub struct SimFleet {
    devices: Vec<SimDevice>,
    start: Timestamp,
    time_scale: f64,
    began: Instant,
}

impl SimFleet {
    /// Every device of `fleet`, ordered by id; the `i`-th device draws from stream `i` of `seed`.
    pub fn new(
        fleet: &Fleet,
        faults: Faults,
        trust: TrustedKeys,
        seed: u64,
        config: &SimConfig,
        start: Timestamp,
        time_scale: f64,
    ) -> Self {
        let trust = Arc::new(trust);
        let faults = Arc::new(faults);
        // By id, as `Fleet::new` keeps them, so lookups can binary-search and device `i` is the
        // same device whoever built the fleet.
        let mut sorted: Vec<&convoy_core::fleet::Device> = fleet.devices.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        let devices = sorted
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                SimDevice::new(
                    d.clone(),
                    i as u64,
                    seed,
                    Arc::clone(&trust),
                    Arc::clone(&faults),
                    config.clone(),
                    start,
                )
            })
            .collect();
        Self {
            devices,
            start,
            time_scale,
            began: Instant::now(),
        }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The simulated time now: start + elapsed wall time × time scale.
    #[allow(clippy::cast_possible_truncation)]
    pub fn now(&self) -> Timestamp {
        let elapsed = self.began.elapsed().as_secs_f64() * self.time_scale;
        Timestamp::from_secs(self.start.secs() + elapsed as i64)
    }

    /// Advances every device to `now`.
    pub fn tick(&mut self, now: Timestamp) {
        for d in &mut self.devices {
            d.handle_tick(now);
        }
    }

    /// Whether a device of this id is simulated.
    pub fn has_device(&self, device_id: &str) -> bool {
        self.devices
            .binary_search_by(|d| d.id().cmp(device_id))
            .is_ok()
    }

    /// Hands a command to its device; false if no such device.
    pub fn command(
        &mut self,
        now: Timestamp,
        device_id: &str,
        command_id: &str,
        command: SimCommand,
    ) -> bool {
        match self
            .devices
            .binary_search_by(|d| d.id().cmp(device_id))
            .ok()
        {
            Some(i) => {
                self.devices[i].handle_command(now, command_id, command);
                true
            }
            None => false,
        }
    }

    /// The current status of every online device, as a device publishes it after (re)connecting:
    /// a broker that restarted without persistence has lost the retained copies, and the console
    /// catches up from these.
    pub fn statuses(
        &self,
        now: Timestamp,
        topics: &Topics,
        out: &mut Vec<(String, Vec<u8>, bool)>,
    ) {
        for d in self.devices.iter().filter(|d| d.is_online()) {
            out.push(encode(
                topics,
                d.id(),
                SimMessage::Status {
                    ts: now,
                    status: d.status(),
                },
            ));
        }
    }

    /// Everything the devices have to publish, as (topic, payload, retained), device by device.
    pub fn drain(&mut self, topics: &Topics, out: &mut Vec<(String, Vec<u8>, bool)>) {
        for d in &mut self.devices {
            let id = d.id().to_owned();
            while let Some(m) = d.poll_message() {
                out.push(encode(topics, &id, m));
            }
        }
    }
}

/// Turns a simulated device's message into its topic and wire payload.
pub fn encode(topics: &Topics, device_id: &str, message: SimMessage) -> (String, Vec<u8>, bool) {
    match message {
        SimMessage::Status { ts, status } => {
            let payload = device_status(device_id, ts, status);
            (
                topics.status(device_id),
                serde_json::to_vec(&payload).unwrap_or_default(),
                true,
            )
        }
        SimMessage::Telemetry { ts, seq, event } => {
            let payload = Telemetry {
                v: PROTOCOL_VERSION,
                device_id: device_id.to_owned(),
                ts,
                seq,
                event: telemetry_event(event),
            };
            (
                topics.telemetry(device_id),
                serde_json::to_vec(&payload).unwrap_or_default(),
                false,
            )
        }
        SimMessage::Ack {
            ts,
            command_id,
            outcome,
        } => {
            let (result, reason) = match outcome {
                AckOutcome::Accepted => (AckResult::Accepted, None),
                AckOutcome::Rejected { reason, .. } => (AckResult::Rejected, Some(reason)),
                AckOutcome::Duplicate => (AckResult::Duplicate, None),
            };
            let payload = CommandAck {
                v: PROTOCOL_VERSION,
                device_id: device_id.to_owned(),
                command_id,
                ts,
                result,
                reason,
            };
            (
                topics.acks(device_id),
                serde_json::to_vec(&payload).unwrap_or_default(),
                false,
            )
        }
    }
}

fn update_state(phase: UpdatePhase) -> UpdateState {
    match phase {
        UpdatePhase::Idle => UpdateState::Idle,
        UpdatePhase::Offered => UpdateState::Offered,
        UpdatePhase::Downloading => UpdateState::Downloading,
        UpdatePhase::Verified => UpdateState::Verified,
        UpdatePhase::Installing => UpdateState::Installing,
        UpdatePhase::Rebooting => UpdateState::Rebooting,
        UpdatePhase::Confirmed => UpdateState::Confirmed,
        UpdatePhase::Failed => UpdateState::Failed,
        UpdatePhase::Reverted => UpdateState::Reverted,
    }
}

fn device_status(device_id: &str, ts: Timestamp, s: StatusSnapshot) -> DeviceStatus {
    DeviceStatus {
        v: PROTOCOL_VERSION,
        device_id: device_id.to_owned(),
        ts,
        active_slot: s.active_slot,
        components: s.components,
        update: UpdateStatus {
            state: update_state(s.update.phase),
            release_id: s.update.release_id,
            command_id: s.update.command_id,
            progress_pct: s.update.progress_pct,
            reason: s.update.reason,
        },
        battery_pct: s.battery_pct,
        power: s.power,
        connectivity: s.connectivity,
        metered: s.metered,
        free_storage_bytes: s.free_storage_bytes,
        position: Some(s.position),
    }
}

fn telemetry_event(event: SimEvent) -> TelemetryEvent {
    match event {
        SimEvent::Heartbeat { uptime_secs } => TelemetryEvent::Heartbeat { uptime_secs },
        SimEvent::Crash { process } => TelemetryEvent::Crash { process },
        SimEvent::Boot { slot, ok } => TelemetryEvent::Boot { slot, ok },
        SimEvent::Battery { pct } => TelemetryEvent::Battery { pct },
        SimEvent::Reconnect { offline_secs, ok } => TelemetryEvent::Reconnect { offline_secs, ok },
        SimEvent::UpdateProgress {
            release_id,
            phase,
            bytes_done,
            bytes_total,
        } => TelemetryEvent::UpdateProgress {
            release_id,
            state: update_state(phase),
            bytes_done,
            bytes_total,
        },
    }
}

/// Decodes a command received on `topic`: the topic's device must be the payload's, the
/// protocol version must match.
pub fn decode_command(
    topics: &Topics,
    topic: &str,
    payload: &[u8],
) -> Result<(String, String, SimCommand)> {
    let Some(TopicKind::Command { device_id }) = topics.parse(topic) else {
        bail!("{topic} is not a device command topic");
    };
    let command: Command = serde_json::from_slice(payload)
        .with_context(|| format!("decoding the command on {topic}"))?;
    if command.v != PROTOCOL_VERSION {
        bail!(
            "command {} on {topic} has protocol version {}, expected {PROTOCOL_VERSION}",
            command.command_id,
            command.v
        );
    }
    if command.device_id != device_id {
        bail!(
            "command {} names device {} but arrived on the topic of {device_id}",
            command.command_id,
            command.device_id
        );
    }
    // Ids travel back in acks and statuses, where the console rejects invalid ones: a command
    // with one could never be acknowledged, so it is refused here (found by fuzzing).
    if !is_valid_id(&command.command_id) {
        bail!(
            "command on {topic} has an invalid command_id {:?}",
            command.command_id.chars().take(64).collect::<String>()
        );
    }
    let release_id = match &command.action {
        CommandAction::Offer { release_id, .. }
        | CommandAction::RollBack { release_id, .. }
        | CommandAction::Cancel { release_id } => release_id,
    };
    if !is_valid_id(release_id) {
        bail!(
            "command {} has an invalid release_id {:?}",
            command.command_id,
            release_id.chars().take(64).collect::<String>()
        );
    }
    let sim = match command.action {
        CommandAction::Offer { release_id, .. } => SimCommand::Offer {
            release_id,
            manifest_bytes: offered_manifest_bytes(payload)
                .with_context(|| format!("decoding the offered manifest on {topic}"))?,
        },
        CommandAction::RollBack { release_id, reason } => {
            SimCommand::RollBack { release_id, reason }
        }
        CommandAction::Cancel { release_id } => SimCommand::Cancel { release_id },
    };
    Ok((device_id, command.command_id, sim))
}

/// The offered manifest exactly as it stands in the command's bytes. The device verifies what
/// it received: a manifest with a key twice is refused by the device's own rules (and acked as
/// rejected), where re-encoding the parsed value would have kept one reading and hidden the other.
fn offered_manifest_bytes(payload: &[u8]) -> Result<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct RawCommand<'a> {
        #[serde(borrow)]
        action: RawAction<'a>,
    }
    #[derive(serde::Deserialize)]
    struct RawAction<'a> {
        #[serde(borrow)]
        manifest: &'a serde_json::value::RawValue,
    }
    let raw: RawCommand<'_> = serde_json::from_slice(payload)?;
    Ok(raw.action.manifest.get().as_bytes().to_vec())
}

async fn publish_all(link: &LinkHandle, out: &mut Vec<(String, Vec<u8>, bool)>) -> Result<u64> {
    let n = out.len() as u64;
    for (topic, payload, retain) in out.drain(..) {
        if topic.ends_with("/telemetry") {
            link.publish_telemetry(topic, payload).await?;
        } else {
            link.publish(topic, payload, retain).await?;
        }
    }
    Ok(n)
}

/// Runs the simulated fleet until `stop` fires (or, with `None`, for ever).
pub async fn run(
    options: SimOptions,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<SimSummary> {
    run_with_fetch(options, None, stop)
        .await
        .map(|(summary, _)| summary)
}

/// Fetching real artifacts over HTTP for a simulated fleet, once per release.
#[derive(Clone, Debug)]
pub struct ArtifactFetch {
    /// Where fetched artifacts are kept, as `DIR/RELEASE_ID/ARTIFACT_NAME` (part files resume
    /// from here across runs).
    pub dir: PathBuf,
    /// The base for artifact URLs in manifests that are not `http://` URLs themselves.
    pub base_url: Option<String>,
    pub retry: RetryPolicy,
}

/// What the artifact fetching did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchSummary {
    /// Releases whose artifacts were all fetched and checked.
    pub releases_fetched: u64,
    pub releases_failed: u64,
    /// Total length of the artifacts fetched (each counted once, however many resumptions).
    pub bytes_fetched: u64,
    /// Offers that waited for their release's artifacts.
    pub offers_held: u64,
    /// Offers rejected because their release's artifacts could not be fetched or checked.
    pub offers_refused: u64,
}

/// A command waiting for its release's artifacts.
struct Held {
    device_id: String,
    command_id: String,
    command: SimCommand,
}

enum ReleaseArtifacts {
    Fetching(Vec<Held>),
    Ready,
    Failed(String),
}

/// What to do with a command now.
enum Admission {
    Deliver(SimCommand),
    Held,
    Refuse(String),
}

/// Holds offers until their release's artifacts are fetched and checked.
struct ArtifactGate {
    config: ArtifactFetch,
    trust: TrustedKeys,
    releases: HashMap<String, ReleaseArtifacts>,
    done: mpsc::Sender<(String, Result<u64, String>)>,
    summary: FetchSummary,
}

impl ArtifactGate {
    fn admit(
        &mut self,
        now: Timestamp,
        device_id: &str,
        command_id: &str,
        command: SimCommand,
    ) -> Admission {
        let SimCommand::Offer {
            release_id,
            manifest_bytes,
        } = &command
        else {
            // A rollback or cancel overtakes an offer of the same release still waiting.
            let release = match &command {
                SimCommand::RollBack { release_id, .. } | SimCommand::Cancel { release_id } => {
                    release_id
                }
                SimCommand::Offer { .. } => return Admission::Deliver(command),
            };
            if let Some(ReleaseArtifacts::Fetching(held)) = self.releases.get_mut(release) {
                held.retain(|h| h.device_id != device_id);
            }
            return Admission::Deliver(command);
        };
        // Only a manifest the devices would accept names artifacts worth fetching; any other
        // offer goes to the device, which rejects it with the attack it names.
        let Ok(verified) = signing::verify(manifest_bytes, &self.trust, now) else {
            return Admission::Deliver(command);
        };
        if verified.release_id() != release_id {
            return Admission::Deliver(command);
        }
        match self.releases.get_mut(release_id) {
            Some(ReleaseArtifacts::Ready) => Admission::Deliver(command),
            Some(ReleaseArtifacts::Failed(reason)) => {
                self.summary.offers_refused += 1;
                Admission::Refuse(reason.clone())
            }
            Some(ReleaseArtifacts::Fetching(held)) => {
                self.summary.offers_held += 1;
                held.push(Held {
                    device_id: device_id.to_owned(),
                    command_id: command_id.to_owned(),
                    command,
                });
                Admission::Held
            }
            None => {
                let release_id = release_id.clone();
                let artifacts = verified.spec().artifacts.clone();
                let config = self.config.clone();
                let done = self.done.clone();
                let id = release_id.clone();
                tokio::spawn(async move {
                    let result = fetch_release(&config, &id, &artifacts).await;
                    // The run loop may have stopped; then nobody waits for the result.
                    let _ = done.send((id, result)).await;
                });
                self.summary.offers_held += 1;
                self.releases.insert(
                    release_id,
                    ReleaseArtifacts::Fetching(vec![Held {
                        device_id: device_id.to_owned(),
                        command_id: command_id.to_owned(),
                        command,
                    }]),
                );
                Admission::Held
            }
        }
    }

    /// Records a finished fetch and returns the commands it held, with the refusal reason if it
    /// failed.
    fn finished(
        &mut self,
        release_id: &str,
        result: Result<u64, String>,
    ) -> (Vec<Held>, Option<String>) {
        let state = match &result {
            Ok(bytes) => {
                self.summary.releases_fetched += 1;
                self.summary.bytes_fetched += bytes;
                ReleaseArtifacts::Ready
            }
            Err(reason) => {
                self.summary.releases_failed += 1;
                ReleaseArtifacts::Failed(reason.clone())
            }
        };
        let held = match self.releases.insert(release_id.to_owned(), state) {
            Some(ReleaseArtifacts::Fetching(held)) => held,
            _ => Vec::new(),
        };
        let refusal = result.err();
        if refusal.is_some() {
            self.summary.offers_refused += held.len() as u64;
        }
        (held, refusal)
    }
}

/// Whether `name` is usable as one file or directory name (no traversal, no separators).
fn is_plain_name(name: &str) -> bool {
    range::sanitize_path(&format!("/{}", range::encode_segment(name))).is_ok_and(|s| s.len() == 1)
}

/// The URL of an artifact: its own if it is an `http://` URL, else joined to the base.
fn artifact_url(base: Option<&str>, url: &str) -> Result<String, String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(url.to_owned());
    }
    let Some(base) = base else {
        return Err(format!(
            "artifact URL {url:?} is relative and no artifact base URL was given"
        ));
    };
    let path: Vec<String> = url
        .trim_start_matches('/')
        .split('/')
        .map(range::encode_segment)
        .collect();
    Ok(format!("{}/{}", base.trim_end_matches('/'), path.join("/")))
}

/// Whether `path` already holds the artifact (a complete, checked earlier fetch).
async fn already_fetched(path: &Path, artifact: &Artifact) -> bool {
    let path = path.to_owned();
    let expected = artifact.sha256.clone();
    let length = artifact.length_bytes;
    tokio::task::spawn_blocking(move || {
        let Ok(mut file) = std::fs::File::open(&path) else {
            return false;
        };
        file.metadata().is_ok_and(|m| m.len() == length)
            && crate::link::http::server::hash_reader(&mut file).is_ok_and(|h| h == expected)
    })
    .await
    .unwrap_or(false)
}

/// Fetches every artifact of a release into `DIR/RELEASE/NAME`; the bytes received, or why not.
async fn fetch_release(
    config: &ArtifactFetch,
    release_id: &str,
    artifacts: &[Artifact],
) -> Result<u64, String> {
    if !is_plain_name(release_id) {
        return Err(format!(
            "artifact fetch failed: release id {release_id:?} is not a directory name"
        ));
    }
    let dir = config.dir.join(release_id);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("artifact fetch failed: creating {}: {e}", dir.display()))?;
    let mut bytes = 0;
    for artifact in artifacts {
        if !is_plain_name(&artifact.name) {
            return Err(format!(
                "artifact fetch failed: artifact name {:?} is not a file name",
                artifact.name
            ));
        }
        let dest = dir.join(&artifact.name);
        if already_fetched(&dest, artifact).await {
            continue;
        }
        let url = artifact_url(config.base_url.as_deref(), &artifact.url)
            .map_err(|e| format!("artifact fetch failed: {e}"))?;
        download_with_retries(
            &url,
            &dest,
            artifact.length_bytes,
            &artifact.sha256,
            config.retry,
            &mut |_| {},
            &mut |e| eprintln!("sim: retrying {url}: {e}"),
        )
        .await
        .map_err(|e| format!("artifact fetch failed: {e}"))?;
        // Whole artifacts, however many attempts and resumptions it took.
        bytes += artifact.length_bytes;
    }
    Ok(bytes)
}

/// A rejection the simulator answers on a device's behalf (the device never saw the offer).
fn refusal(
    topics: &Topics,
    device_id: &str,
    command_id: &str,
    ts: Timestamp,
    reason: &str,
) -> (String, Vec<u8>, bool) {
    let ack = CommandAck {
        v: PROTOCOL_VERSION,
        device_id: device_id.to_owned(),
        command_id: command_id.to_owned(),
        ts,
        result: AckResult::Rejected,
        // The console caps reasons at 1024 bytes.
        reason: Some(reason.chars().take(1000).collect()),
    };
    (
        topics.acks(device_id),
        serde_json::to_vec(&ack).unwrap_or_default(),
        false,
    )
}

/// [`run`], and with `fetch`, each offered release's artifacts fetched over HTTP before its
/// offers reach the devices.
pub async fn run_with_fetch(
    options: SimOptions,
    fetch: Option<ArtifactFetch>,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<(SimSummary, FetchSummary)> {
    run_as(options, mqtt::MqttAuth::default(), fetch, stop).await
}

/// [`run_with_fetch`], connecting to the broker as `auth` (the fleet simulator's identity, which
/// a broker with per-device ACLs must allow to speak for every device: test and demo only).
pub async fn run_as(
    options: SimOptions,
    auth: mqtt::MqttAuth,
    fetch: Option<ArtifactFetch>,
    mut stop: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<(SimSummary, FetchSummary)> {
    if !(options.time_scale.is_finite() && options.time_scale > 0.0) {
        bail!(
            "--time-scale must be a positive number, got {}",
            options.time_scale
        );
    }
    let topics = options.topics.clone();
    let filter = format!("{}/devices/+/commands", topics.prefix());
    let mut config = LinkConfig::new(&options.broker_url, &options.client_id);
    config.auth = auth;
    let (mut link, mut rx): (LinkHandle, mpsc::Receiver<LinkEvent>) =
        mqtt::spawn(&config, topics.clone(), &Role::Filters(vec![filter]))?;
    link.wait_connected(Duration::from_secs(30)).await?;
    // Kept open for the whole run, so the receiver below never reports a closed channel.
    let (done_tx, mut done_rx) = mpsc::channel(16);
    let mut gate = fetch.map(|config| ArtifactGate {
        config,
        trust: options.trust.clone(),
        releases: HashMap::new(),
        done: done_tx.clone(),
        summary: FetchSummary::default(),
    });
    let mut fleet = SimFleet::new(
        &options.fleet,
        options.faults,
        options.trust,
        options.seed,
        &options.config,
        options.start,
        options.time_scale,
    );
    let mut summary = SimSummary {
        devices: fleet.len(),
        ..SimSummary::default()
    };
    let mut out = Vec::new();
    fleet.drain(&topics, &mut out);
    summary.published += publish_all(&link, &mut out).await?;
    // `wait_connected` consumed nothing from `rx`: the first `Connected` event is still queued.
    let mut connects = 0u32;
    let mut interval = tokio::time::interval(options.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = async {
            match stop.as_mut() {
                Some(s) => {
                    let _ = s.await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = stopping => break,
            Some((release_id, result)) = done_rx.recv() => {
                let now = fleet.now();
                if let Some(g) = gate.as_mut() {
                    if let Err(reason) = &result {
                        eprintln!("sim: release {release_id}: {reason}");
                    }
                    let (held, refused) = g.finished(&release_id, result);
                    for h in held {
                        match &refused {
                            Some(reason) => {
                                out.push(refusal(&topics, &h.device_id, &h.command_id, now, reason));
                            }
                            None => {
                                fleet.command(now, &h.device_id, &h.command_id, h.command);
                            }
                        }
                    }
                }
            }
            _ = interval.tick() => {
                let now = fleet.now();
                let began = Instant::now();
                fleet.tick(now);
                summary.ticks += 1;
                // A starved process covers more simulated time per tick, which takes longer:
                // said in the log, since it delays every device's messages by as much.
                let took = began.elapsed();
                if took >= Duration::from_secs(1) {
                    summary.slow_ticks += 1;
                    eprintln!(
                        "sim: a tick up to {now} took {:.1} s of wall time (the process is short of CPU)",
                        took.as_secs_f64()
                    );
                }
            }
            event = rx.recv() => {
                let Some(event) = event else {
                    bail!("the MQTT link task stopped");
                };
                if event == LinkEvent::Connected {
                    connects += 1;
                    if connects > 1 {
                        let before = out.len();
                        fleet.statuses(fleet.now(), &topics, &mut out);
                        eprintln!(
                            "sim: reconnected to the broker; republishing the status of {} online device(s)",
                            out.len() - before
                        );
                    }
                }
                if let LinkEvent::Disconnected(why) = &event {
                    eprintln!("sim: lost the broker connection: {why}");
                }
                if let LinkEvent::Raw { topic, payload } = event {
                    let now = fleet.now();
                    match decode_command(&topics, &topic, &payload) {
                        Ok((device_id, command_id, _)) if !fleet.has_device(&device_id) => {
                            summary.bad_commands += 1;
                            eprintln!("sim: command {command_id} for unknown device {device_id}");
                        }
                        Ok((device_id, command_id, command)) => {
                            summary.commands += 1;
                            let admission = match gate.as_mut() {
                                Some(g) => g.admit(now, &device_id, &command_id, command),
                                None => Admission::Deliver(command),
                            };
                            match admission {
                                Admission::Deliver(command) => {
                                    fleet.command(now, &device_id, &command_id, command);
                                }
                                Admission::Held => {}
                                Admission::Refuse(reason) => {
                                    out.push(refusal(&topics, &device_id, &command_id, now, &reason));
                                }
                            }
                        }
                        Err(e) => {
                            summary.bad_commands += 1;
                            eprintln!("sim: ignored a command: {e:#}");
                        }
                    }
                }
            }
        }
        fleet.drain(&topics, &mut out);
        if link.state() == LinkState::Connected {
            summary.published += publish_all(&link, &mut out).await?;
        } else {
            // Like a device with a small buffer: while the broker is away, messages are dropped
            // rather than queued without bound; each device republishes its status on reconnect.
            summary.dropped_offline += out.len() as u64;
            out.clear();
        }
    }
    drop(done_tx);
    Ok((summary, gate.map(|g| g.summary).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (`fuzz/regressions/sim_command/invalid-command-id`): a command
    /// whose id the console would reject in the ack was accepted, and its ack then failed the
    /// console's validation.
    #[test]
    fn fuzz_regression_commands_with_invalid_ids_are_refused() {
        let topics = Topics::default_prefix();
        let topic = topics.commands("CV1");
        let command = |command_id: &str, release_id: &str| {
            serde_json::json!({
                "v": 1, "command_id": command_id, "device_id": "CV1", "issued_at": 1_795_392_000,
                "action": {"kind": "cancel", "release_id": release_id}
            })
            .to_string()
        };
        let ok = decode_command(&topics, &topic, command("c-3", "fw-9.0.0").as_bytes());
        assert!(ok.is_ok(), "{ok:?}");
        let err = decode_command(&topics, &topic, command("bytes=c-3", "fw-9.0.0").as_bytes())
            .expect_err("invalid command id");
        assert!(err.to_string().contains("invalid command_id"), "{err}");
        let err = decode_command(&topics, &topic, command("c-3", "fw/9").as_bytes())
            .expect_err("invalid release id");
        assert!(err.to_string().contains("invalid release_id"), "{err}");
    }
}
