//! The agent's run loop: one device on the wire, taking updates as the simulator's devices do
//! (`convoy::sim`, `convoy_core::devsim`) but with real bytes, real installers and real health.
//!
//! An offer is checked with the core's device rules (`DeviceMemory::check_offer`: signature by a
//! trusted key, expiry, the offer's release, hardware, anti-rollback), acked, downloaded with the
//! resumable client into `STATE_DIR/downloads/`, checked against the signed digests, installed
//! through the installer into the other slot, and booted (the configured reboot command, or at
//! once). The health window then watches the health sources; the new slot is confirmed through the
//! installer once the window passes with the link up, and reverted through it when a unit keeps
//! restarting, core dumps appear, or the link does not come back in time. Every step is saved to
//! `state.json` before it is reported, so a restart (or a reboot) anywhere continues from there.
//!
//! It reports the states, acks and telemetry events of docs/PROTOCOL.md, the same messages the
//! simulator sends, so the engine's gates judge it as they judge simulated devices.
//! Deliberately not here: parsing the configuration (`config.rs`), the installers' commands
//! (`installer.rs`), reading health sources (`health.rs`).

use anyhow::{Context, Result, bail};
use convoy_core::fleet::PowerState;
use convoy_core::manifest::{ArtifactDigest, DeviceMemory, TrustedKeys, VerifiedManifest};
use convoy_core::release::Artifact;
use convoy_devlink::http::{Progress, RetryPolicy, download_with_retries, range};
use convoy_devlink::mqtt::{self, LinkConfig, LinkEvent, LinkHandle, Role};
use convoy_devlink::protocol::{
    AckResult, DeviceStatus, PROTOCOL_VERSION, TelemetryEvent, Topics, UpdateState, UpdateStatus,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::health::{self, Reading};
use crate::installer::{self, Installer, Operation};
use crate::outbox::{Kind, Outbox, Pending};
use crate::state::{self, AgentState, Job, Phase, SlotImage};
use crate::wire::{self, Action, Incoming};

/// What background work reports back to the loop.
#[derive(Debug)]
enum Done {
    Progress {
        release_id: String,
        done: u64,
    },
    Downloaded {
        release_id: String,
        result: Result<(Vec<PathBuf>, Vec<ArtifactDigest>), String>,
    },
    Installed {
        release_id: String,
        result: Result<(), String>,
    },
}

/// The running agent.
pub struct Agent {
    config: Config,
    topics: Topics,
    trust: TrustedKeys,
    installer: Installer,
    state: AgentState,
    outbox: Outbox,
    link: LinkHandle,
    connected: bool,
    offline_since: Option<Instant>,
    /// Seconds offline at each failed reconnect attempt of the current outage (the first ten).
    failed_attempts: Vec<u64>,
    connected_since_boot: bool,
    reading: Reading,
    started: Instant,
    rebooting_since: Option<Instant>,
    next_sample: Instant,
    next_heartbeat: Instant,
    next_status: Instant,
    work: Option<tokio::task::JoinHandle<()>>,
    done_tx: mpsc::Sender<Done>,
}

/// Loads the state, or makes the first one from the configuration and the installer.
pub fn initial_state(config: &Config, installer: &Installer) -> Result<AgentState> {
    if let Some(s) = state::load(&config.state.dir)? {
        return Ok(s);
    }
    let slot = installer
        .current_slot()
        .or(config.device.active_slot)
        .unwrap_or(convoy_core::fleet::Slot::A);
    Ok(AgentState::fresh(
        DeviceMemory::new(
            config.device.hardware_id.clone(),
            config.device.installed_counter,
        ),
        slot,
        config.initial_components(),
    ))
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<()> {
    let dir = config.state.dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let trust = crate::trust::load(&config.trust.dir)?;
    let installer = Installer::new(config.installer.clone());
    let mut state = initial_state(&config, &installer)?;
    installer.prepare(state.active_slot)?;
    // Sequence numbers handed out after the last save are unknown: continue well above them.
    state.seq += 1000;
    state::save(&dir, &state)?;
    let outbox = Outbox::open(&dir, config.state.outbox_max_messages)?;
    let topics = Topics::new(&config.broker.prefix)?;
    let mut link_config = LinkConfig::new(&config.broker.url, &config.device.id);
    link_config.keep_alive_secs = config.broker.keep_alive_secs;
    link_config.ca_file.clone_from(&config.broker.ca_file);
    link_config
        .client_cert_file
        .clone_from(&config.broker.client_cert_file);
    link_config
        .client_key_file
        .clone_from(&config.broker.client_key_file);
    link_config.inbound_capacity = 64;
    // The broker keeps commands sent while the device is away (a reboot, a tunnel).
    link_config.persistent_session = true;
    let (link, mut link_rx) = mqtt::spawn(
        &link_config,
        topics.clone(),
        &Role::Filters(vec![topics.commands(&config.device.id)]),
    )?;
    let (done_tx, mut done_rx) = mpsc::channel(64);
    let (metric_tx, mut metric_rx) = mpsc::channel::<(String, f64)>(1024);
    if let Some(socket) = config
        .health
        .metrics
        .as_ref()
        .and_then(|m| m.socket.clone())
    {
        listen_metrics(&socket, metric_tx)?;
    }
    let (reading, problems) = health::read(&config.health);
    for p in problems {
        eprintln!("convoy-agent: health source: {p}");
    }
    let now = Instant::now();
    let mut agent = Agent {
        config,
        topics,
        trust,
        installer,
        state,
        outbox,
        link,
        connected: false,
        offline_since: None,
        failed_attempts: Vec::new(),
        connected_since_boot: false,
        reading,
        started: now,
        rebooting_since: None,
        next_sample: now,
        next_heartbeat: now,
        next_status: now,
        work: None,
        done_tx,
    };
    agent.resume().await?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            event = link_rx.recv() => {
                let Some(event) = event else { bail!("the MQTT link task stopped") };
                agent.on_link(event).await?;
            }
            Some(done) = done_rx.recv() => agent.on_done(done).await?,
            Some((name, value)) = metric_rx.recv() => {
                agent.event(TelemetryEvent::Metric { name, value }).await;
            }
            _ = tick.tick() => agent.on_tick().await?,
        }
    }
    agent.save()?;
    eprintln!(
        "convoy-agent: stopped; state saved in {}",
        agent.config.state.dir.display()
    );
    Ok(())
}

/// Listens on a Unix socket for `NAME VALUE` lines from the device's software.
fn listen_metrics(path: &Path, tx: mpsc::Sender<(String, f64)>) -> Result<()> {
    use tokio::io::AsyncBufReadExt;
    // A socket file left by an earlier run would make bind fail.
    if std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    }) {
        std::fs::remove_file(path)
            .with_context(|| format!("removing the old socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("listening on the metrics socket {}", path.display()))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, say: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stream.take(1024 * 1024)).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match health::parse_metric(line.trim()) {
                        // A full channel drops the sample: metrics must never stall the agent.
                        Ok(m) => {
                            let _ = tx.try_send(m);
                        }
                        Err(e) => eprintln!("convoy-agent: metrics socket: {e}"),
                    }
                }
            });
        }
    });
    Ok(())
}

impl Agent {
    fn id(&self) -> &str {
        &self.config.device.id
    }

    fn save(&self) -> Result<()> {
        state::save(&self.config.state.dir, &self.state)
    }

    /// Continues whatever update the previous run left.
    async fn resume(&mut self) -> Result<()> {
        let Some(job) = self.state.job.clone() else {
            self.send_status().await;
            return Ok(());
        };
        eprintln!(
            "convoy-agent: resuming release {} in phase {:?}",
            job.release_id, job.phase
        );
        match job.phase {
            Phase::Offered | Phase::Downloading | Phase::Verified => match self.verified(&job) {
                Ok(_) => {
                    self.send_status().await;
                    self.start_download().await?;
                }
                Err(reason) => self.fail(reason).await?,
            },
            Phase::Installing => {
                self.send_status().await;
                self.start_install(&job);
            }
            // The reboot happened (this is the new boot), or the agent restarted mid-window.
            Phase::Rebooting | Phase::Booted => self.boot().await?,
        }
        Ok(())
    }

    /// The job's manifest, verified again now (keys, expiry, hardware, anti-rollback).
    fn verified(&self, job: &Job) -> Result<VerifiedManifest, String> {
        self.state
            .memory
            .check_offer(
                &job.release_id,
                job.manifest.as_bytes(),
                &self.trust,
                convoy_devlink::now(),
            )
            .map_err(|r| r.to_string())
    }

    // ----- sending -----

    async fn send(&mut self, kind: Kind, topic: String, payload: Vec<u8>) {
        if self.connected {
            let sent = match kind {
                Kind::Telemetry => {
                    self.link
                        .publish_telemetry(topic.clone(), payload.clone())
                        .await
                }
                Kind::Status => {
                    self.link
                        .publish(topic.clone(), payload.clone(), true)
                        .await
                }
                Kind::Ack => {
                    self.link
                        .publish(topic.clone(), payload.clone(), false)
                        .await
                }
            };
            if sent.is_ok() {
                return;
            }
        }
        let message = Pending {
            kind,
            topic,
            payload: String::from_utf8_lossy(&payload).into_owned(),
        };
        let before = self.outbox.dropped;
        if let Err(e) = self.outbox.push(message) {
            eprintln!("convoy-agent: keeping a message for later: {e:#}");
        }
        if self.outbox.dropped > before {
            eprintln!(
                "convoy-agent: the outbox is full ({} messages): dropped the oldest ({} dropped since start)",
                self.config.state.outbox_max_messages, self.outbox.dropped
            );
        }
    }

    async fn event(&mut self, event: TelemetryEvent) {
        self.state.seq += 1;
        let payload = wire::telemetry(self.id(), convoy_devlink::now(), self.state.seq, event);
        let topic = self.topics.telemetry(self.id());
        self.send(Kind::Telemetry, topic, payload).await;
    }

    async fn ack(&mut self, command_id: &str, result: AckResult, reason: Option<&str>) {
        let payload = wire::ack(self.id(), command_id, convoy_devlink::now(), result, reason);
        let topic = self.topics.acks(self.id());
        self.send(Kind::Ack, topic, payload).await;
    }

    fn status(&self) -> DeviceStatus {
        let free = self
            .reading
            .free_storage_bytes
            .or_else(|| health::free_bytes(&self.config.state.dir).ok())
            .unwrap_or(0);
        DeviceStatus {
            v: PROTOCOL_VERSION,
            device_id: self.id().to_owned(),
            ts: convoy_devlink::now(),
            active_slot: self.state.active_slot,
            components: self.state.components.clone(),
            update: self.state.update_status(),
            battery_pct: self.reading.battery_pct,
            power: self.reading.power.unwrap_or(PowerState::Mains),
            connectivity: self.config.device.connectivity,
            metered: self.config.device.metered,
            free_storage_bytes: free,
            position: self.config.device.position,
        }
    }

    async fn send_status(&mut self) {
        let payload = serde_json::to_vec(&self.status()).unwrap_or_default();
        let topic = self.topics.status(self.id());
        self.send(Kind::Status, topic, payload).await;
        self.next_status =
            Instant::now() + Duration::from_secs(self.config.health.status_every_secs);
    }

    async fn progress(&mut self) {
        if let Some(job) = &self.state.job {
            let event = TelemetryEvent::UpdateProgress {
                release_id: job.release_id.clone(),
                state: job.phase.wire(),
                bytes_done: job.bytes_done.min(job.bytes_total),
                bytes_total: job.bytes_total,
            };
            self.event(event).await;
        }
    }

    /// Saves, then reports the new state: what was reported is always what a restart resumes.
    async fn commit(&mut self) -> Result<()> {
        self.save()?;
        self.send_status().await;
        Ok(())
    }

    // ----- the link -----

    async fn on_link(&mut self, event: LinkEvent) -> Result<()> {
        match event {
            LinkEvent::Connected => {
                self.connected = true;
                self.connected_since_boot = true;
                // What was kept while offline goes first, oldest first. A kept status is older
                // than the fresh one sent below, and a status is retained: sent after the fresh
                // one it would leave the broker (and the console) with a stale state, so it is
                // dropped here.
                if !self.outbox.is_empty() {
                    eprintln!(
                        "convoy-agent: connected; sending {} message(s) kept while offline",
                        self.outbox.len()
                    );
                }
                let pending: Vec<Pending> = self
                    .outbox
                    .take_all()?
                    .into_iter()
                    .filter(|m| m.kind != Kind::Status)
                    .collect();
                let mut left = Vec::new();
                for (i, m) in pending.iter().enumerate() {
                    let payload = m.payload.clone().into_bytes();
                    let sent = match m.kind {
                        Kind::Telemetry => {
                            self.link.publish_telemetry(m.topic.clone(), payload).await
                        }
                        Kind::Status | Kind::Ack => {
                            self.link.publish(m.topic.clone(), payload, false).await
                        }
                    };
                    if sent.is_err() {
                        left = pending[i..].to_vec();
                        break;
                    }
                }
                if !left.is_empty() {
                    self.outbox.requeue_front(left)?;
                }
                // Then the outage itself: failed attempts as they happened (the reconnect-failure
                // gate counts them), and the reconnect.
                for offline_secs in std::mem::take(&mut self.failed_attempts) {
                    self.event(TelemetryEvent::Reconnect {
                        offline_secs,
                        ok: false,
                    })
                    .await;
                }
                if let Some(since) = self.offline_since.take() {
                    let offline_secs = since.elapsed().as_secs();
                    self.event(TelemetryEvent::Reconnect {
                        offline_secs,
                        ok: true,
                    })
                    .await;
                }
                // The whole state last, on every session: a broker without persistence lost the
                // retained copy, and it supersedes any status kept while offline.
                self.send_status().await;
            }
            LinkEvent::Disconnected(why) => {
                if self.connected {
                    eprintln!("convoy-agent: lost the broker: {why}");
                    self.offline_since = Some(Instant::now());
                } else {
                    // A failed attempt: of a reconnect, or of the first connection after a start
                    // (a reboot into a release whose network does not come up counts too).
                    let since = *self.offline_since.get_or_insert(self.started);
                    if self.failed_attempts.len() < 10 {
                        self.failed_attempts.push(since.elapsed().as_secs());
                    }
                }
                self.connected = false;
            }
            LinkEvent::Raw { topic, payload } => {
                match wire::decode_command(&self.topics, &self.config.device.id, &topic, &payload) {
                    Ok(command) => self.on_command(command).await?,
                    Err(e) => eprintln!("convoy-agent: ignored a command: {e:#}"),
                }
            }
            LinkEvent::Inbound(_) | LinkEvent::Rejected(_) => {}
        }
        Ok(())
    }

    async fn on_command(&mut self, command: Incoming) -> Result<()> {
        let id = command.command_id.clone();
        if !self.state.remember_command(&id) {
            self.ack(&id, AckResult::Duplicate, None).await;
            return Ok(());
        }
        let outcome = match command.action {
            Action::Offer {
                release_id,
                manifest,
            } => self.offer(&id, &release_id, manifest).await?,
            Action::RollBack { release_id, reason } => self.roll_back(&release_id, &reason).await?,
            Action::Cancel { release_id } => self.cancel(&release_id).await?,
        };
        self.save()?;
        match outcome {
            Ok(()) => self.ack(&id, AckResult::Accepted, None).await,
            Err(reason) => {
                eprintln!("convoy-agent: refused command {id}: {reason}");
                self.ack(&id, AckResult::Rejected, Some(&reason)).await;
            }
        }
        // An accepted offer starts its download after its ack, as the console expects.
        if self
            .state
            .job
            .as_ref()
            .is_some_and(|j| j.command_id == id && j.phase == Phase::Offered)
        {
            self.start_download().await?;
        }
        Ok(())
    }

    async fn offer(
        &mut self,
        command_id: &str,
        release_id: &str,
        manifest: String,
    ) -> Result<Result<(), String>> {
        if let Some(job) = &self.state.job {
            return Ok(Err(format!(
                "busy: release {} is {:?}",
                job.release_id, job.phase
            )));
        }
        let now = convoy_devlink::now();
        let verified =
            match self
                .state
                .memory
                .check_offer(release_id, manifest.as_bytes(), &self.trust, now)
            {
                Ok(v) => v,
                Err(rejection) => return Ok(Err(rejection.to_string())),
            };
        let spec = verified.spec();
        let bytes_total = spec.download_bytes();
        let free = health::free_bytes(&self.config.state.dir).unwrap_or(u64::MAX);
        if bytes_total > free {
            return Ok(Err(format!(
                "no space: release {release_id} needs {bytes_total} bytes, {free} free"
            )));
        }
        // Both name paths under the state directory: `..` is a valid id but no directory name.
        if !is_plain_name(release_id) {
            return Ok(Err(format!(
                "release id {release_id:?} is not a directory name"
            )));
        }
        for a in &spec.artifacts {
            if !is_plain_name(&a.name) {
                return Ok(Err(format!(
                    "artifact name {:?} of release {release_id} is not a file name",
                    a.name
                )));
            }
        }
        self.state.job = Some(Job {
            command_id: command_id.to_owned(),
            release_id: release_id.to_owned(),
            manifest,
            version: spec.version,
            counter: spec.counter,
            provides: spec.provides.clone(),
            artifacts: spec.artifacts.clone(),
            phase: Phase::Offered,
            bytes_done: 0,
            bytes_total,
            booted_at: None,
            baseline_restarts: 0,
            baseline_cores: 0,
            delivered: Vec::new(),
        });
        self.commit().await?;
        Ok(Ok(()))
    }

    async fn roll_back(&mut self, release_id: &str, reason: &str) -> Result<Result<(), String>> {
        match self.state.job.as_ref().map(|j| j.phase) {
            Some(Phase::Rebooting | Phase::Booted) => {
                self.revert(format!("rollback ordered: {reason}")).await?;
                Ok(Ok(()))
            }
            Some(_) => Ok(Err(
                "cannot roll back while an update is being downloaded or installed".to_owned(),
            )),
            None if self.state.previous.is_none() => Ok(Err(format!(
                "no previous release in slot {}",
                self.state.active_slot.other()
            ))),
            None => {
                let command_id = self.state.last_update.command_id.clone();
                self.revert_installed(
                    command_id,
                    release_id,
                    format!("rollback ordered: {reason}"),
                )
                .await?;
                Ok(Ok(()))
            }
        }
    }

    async fn cancel(&mut self, release_id: &str) -> Result<Result<(), String>> {
        match &self.state.job {
            Some(job)
                if job.release_id == release_id
                    && matches!(
                        job.phase,
                        Phase::Offered | Phase::Downloading | Phase::Verified
                    ) =>
            {
                if let Some(work) = self.work.take() {
                    work.abort();
                }
                let command_id = job.command_id.clone();
                self.state.job = None;
                self.state.last_update = UpdateStatus {
                    state: UpdateState::Idle,
                    release_id: Some(release_id.to_owned()),
                    command_id: Some(command_id),
                    progress_pct: None,
                    reason: Some("cancelled".to_owned()),
                };
                self.commit().await?;
                Ok(Ok(()))
            }
            _ => Ok(Err(format!(
                "no update of release {release_id} that can still be cancelled"
            ))),
        }
    }

    // ----- the update's steps -----

    async fn start_download(&mut self) -> Result<()> {
        let Some(job) = self.state.job.as_mut() else {
            return Ok(());
        };
        job.phase = Phase::Downloading;
        let release_id = job.release_id.clone();
        let artifacts = job.artifacts.clone();
        self.commit().await?;
        self.progress().await;
        let dir = self.config.state.dir.join("downloads").join(&release_id);
        let base = self.config.update.artifact_base_url.clone();
        let retry = RetryPolicy {
            attempts: self.config.update.download_attempts,
            backoff: Duration::from_secs(2),
        };
        let tx = self.done_tx.clone();
        self.work = Some(tokio::spawn(async move {
            let result = fetch(&dir, base.as_deref(), &artifacts, retry, &tx, &release_id).await;
            let _ = tx.send(Done::Downloaded { release_id, result }).await;
        }));
        Ok(())
    }

    fn start_install(&mut self, job: &Job) {
        let ctx = self.context(job, self.state.active_slot.other(), self.state.active_slot);
        let installer = self.installer.clone();
        let tx = self.done_tx.clone();
        let release_id = job.release_id.clone();
        self.work = Some(tokio::spawn(async move {
            let result =
                tokio::task::spawn_blocking(move || installer.run(Operation::Install, &ctx))
                    .await
                    .map_err(|e| format!("the install task failed: {e}"))
                    .and_then(|r| r.map_err(|e| format!("install failed: {e:#}")));
            let _ = tx.send(Done::Installed { release_id, result }).await;
        }));
    }

    fn context(
        &self,
        job: &Job,
        slot: convoy_core::fleet::Slot,
        previous: convoy_core::fleet::Slot,
    ) -> installer::Context {
        let dir = self
            .config
            .state
            .dir
            .join("downloads")
            .join(&job.release_id);
        installer::Context {
            device_id: self.id().to_owned(),
            release_id: job.release_id.clone(),
            version: job.version.to_string(),
            artifacts: job.artifacts.iter().map(|a| dir.join(&a.name)).collect(),
            slot,
            previous_slot: previous,
        }
    }

    async fn on_done(&mut self, done: Done) -> Result<()> {
        let current = self.state.job.as_ref().map(|j| j.release_id.clone());
        match done {
            Done::Progress { release_id, done } if current.as_deref() == Some(&release_id) => {
                let Some(job) = self.state.job.as_mut() else {
                    return Ok(());
                };
                let before = job.progress_pct();
                job.bytes_done = done;
                let after = job.progress_pct();
                if after / 10 > before / 10 {
                    self.send_status().await;
                    self.progress().await;
                }
            }
            Done::Downloaded { release_id, result } if current.as_deref() == Some(&release_id) => {
                self.work = None;
                match result {
                    Ok((_, delivered)) => self.downloaded(delivered).await?,
                    Err(reason) => self.fail(reason).await?,
                }
            }
            Done::Installed { release_id, result } if current.as_deref() == Some(&release_id) => {
                self.work = None;
                match result {
                    Ok(()) => self.installed().await?,
                    Err(reason) => self.fail(reason).await?,
                }
            }
            // Work of a job that was cancelled meanwhile.
            _ => {}
        }
        Ok(())
    }

    async fn downloaded(&mut self, delivered: Vec<ArtifactDigest>) -> Result<()> {
        let Some(job) = self.state.job.clone() else {
            return Ok(());
        };
        let verified = match self.verified(&job) {
            Ok(v) => v,
            Err(reason) => return self.fail(reason).await,
        };
        if let Err(rejection) = verified.check_artifacts(&delivered) {
            return self.fail(rejection.to_string()).await;
        }
        if let Some(job) = self.state.job.as_mut() {
            job.delivered = delivered;
            job.bytes_done = job.bytes_total;
            job.phase = Phase::Verified;
        }
        self.commit().await?;
        self.progress().await;
        if let Some(job) = self.state.job.as_mut() {
            job.phase = Phase::Installing;
        }
        self.commit().await?;
        let Some(job) = self.state.job.clone() else {
            return Ok(());
        };
        self.start_install(&job);
        Ok(())
    }

    async fn installed(&mut self) -> Result<()> {
        let Some(job) = self.state.job.clone() else {
            return Ok(());
        };
        let verified = match self.verified(&job) {
            Ok(v) => v,
            Err(reason) => return self.fail(reason).await,
        };
        let before = SlotImage {
            slot: self.state.active_slot,
            components: self.state.components.clone(),
            counter: self.state.memory.installed_counter,
        };
        if let Err(rejection) =
            self.state
                .memory
                .install(&verified, &job.delivered, convoy_devlink::now())
        {
            return self.fail(rejection.to_string()).await;
        }
        self.state.previous = Some(before);
        self.state.active_slot = self.state.active_slot.other();
        for (component, version) in job.provides.iter() {
            self.state.components.insert(component, *version);
        }
        if let Some(j) = self.state.job.as_mut() {
            j.phase = Phase::Rebooting;
        }
        self.commit().await?;
        // Only the running release's download is worth keeping; the previous ones go.
        remove_other_downloads(&self.config.state.dir.join("downloads"), &job.release_id);
        match self.config.update.reboot_command.clone() {
            Some(argv) => {
                eprintln!(
                    "convoy-agent: installed {}; rebooting: {}",
                    job.release_id,
                    argv.join(" ")
                );
                self.rebooting_since = Some(Instant::now());
                if let Err(e) = run_command(argv).await {
                    eprintln!("convoy-agent: the reboot command failed: {e:#}");
                }
                Ok(())
            }
            None => self.boot().await,
        }
    }

    /// The new slot runs: the health window starts now (or goes on, after a restart inside it).
    async fn boot(&mut self) -> Result<()> {
        self.rebooting_since = None;
        self.connected_since_boot = self.connected;
        let (reading, _) = self.read_health().await;
        self.reading = reading;
        let slot = self.state.active_slot;
        let now = convoy_devlink::now();
        let restarts = self.reading.total_restarts();
        let cores = self.reading.core_count();
        let Some(job) = self.state.job.as_mut() else {
            return Ok(());
        };
        if job.phase == Phase::Rebooting {
            job.phase = Phase::Booted;
            job.booted_at = Some(now);
            job.baseline_restarts = restarts;
            job.baseline_cores = cores;
        } else {
            // A restart inside the window: counters that restarted with the machine (systemd's
            // NRestarts) start again from what they read now; the window keeps its start.
            job.baseline_restarts = job.baseline_restarts.min(restarts);
            job.baseline_cores = job.baseline_cores.min(cores);
        }
        self.save()?;
        self.event(TelemetryEvent::Boot { slot, ok: true }).await;
        self.send_status().await;
        Ok(())
    }

    /// Ends the job as failed; the running slot is untouched.
    async fn fail(&mut self, reason: String) -> Result<()> {
        let Some(job) = self.state.job.take() else {
            return Ok(());
        };
        eprintln!("convoy-agent: release {} failed: {reason}", job.release_id);
        self.state.last_update = UpdateStatus {
            state: UpdateState::Failed,
            release_id: Some(job.release_id.clone()),
            command_id: Some(job.command_id.clone()),
            progress_pct: Some(job.progress_pct()),
            reason: Some(wire::cut(&reason, 1000)),
        };
        self.commit().await
    }

    /// Reverts the job's new slot (health failed, the link stayed away, or a rollback order).
    async fn revert(&mut self, reason: String) -> Result<()> {
        let Some(job) = self.state.job.clone() else {
            return Ok(());
        };
        self.revert_installed(Some(job.command_id.clone()), &job.release_id, reason)
            .await
    }

    /// Goes back to the previous slot through the installer.
    async fn revert_installed(
        &mut self,
        command_id: Option<String>,
        release_id: &str,
        reason: String,
    ) -> Result<()> {
        let Some(previous) = self.state.previous.clone() else {
            return self.fail(format!("{reason}; nothing to revert to")).await;
        };
        eprintln!("convoy-agent: reverting release {release_id}: {reason}");
        let job = self.state.job.clone();
        let ctx = installer::Context {
            device_id: self.id().to_owned(),
            release_id: release_id.to_owned(),
            version: job
                .as_ref()
                .map(|j| j.version.to_string())
                .unwrap_or_default(),
            artifacts: Vec::new(),
            slot: self.state.active_slot,
            previous_slot: previous.slot,
        };
        let installer = self.installer.clone();
        let result = tokio::task::spawn_blocking(move || installer.run(Operation::Revert, &ctx))
            .await
            .map_err(|e| anyhow::anyhow!("the revert task failed: {e}"))
            .and_then(|r| r);
        if let Err(e) = result {
            // The device could not go back: say so, with both reasons, and keep what runs.
            self.state.job = None;
            self.state.last_update = UpdateStatus {
                state: UpdateState::Failed,
                release_id: Some(release_id.to_owned()),
                command_id,
                progress_pct: None,
                reason: Some(wire::cut(
                    &format!("{reason}; the revert failed: {e:#}"),
                    1000,
                )),
            };
            return self.commit().await;
        }
        self.state.active_slot = previous.slot;
        self.state.components = previous.components;
        self.state.memory.installed_counter = previous.counter;
        self.state.previous = None;
        self.state.job = None;
        self.state.last_update = UpdateStatus {
            state: UpdateState::Reverted,
            release_id: Some(release_id.to_owned()),
            command_id,
            progress_pct: None,
            reason: Some(wire::cut(&reason, 1000)),
        };
        self.save()?;
        let slot = self.state.active_slot;
        self.event(TelemetryEvent::Boot { slot, ok: true }).await;
        self.send_status().await;
        if self.installer.reboots()
            && let Some(argv) = self.config.update.reboot_command.clone()
        {
            eprintln!(
                "convoy-agent: rebooting into slot {slot}: {}",
                argv.join(" ")
            );
            if let Err(e) = run_command(argv).await {
                eprintln!("convoy-agent: the reboot command failed: {e:#}");
            }
        }
        Ok(())
    }

    async fn confirm(&mut self) -> Result<()> {
        let Some(job) = self.state.job.clone() else {
            return Ok(());
        };
        let ctx = self.context(&job, self.state.active_slot, self.state.active_slot.other());
        let installer = self.installer.clone();
        let result = tokio::task::spawn_blocking(move || installer.run(Operation::Confirm, &ctx))
            .await
            .map_err(|e| anyhow::anyhow!("the confirm task failed: {e}"))
            .and_then(|r| r);
        if let Err(e) = result {
            return self.revert(format!("confirm failed: {e:#}")).await;
        }
        eprintln!(
            "convoy-agent: confirmed release {} in slot {}",
            job.release_id, self.state.active_slot
        );
        self.state.job = None;
        self.state.last_update = UpdateStatus {
            state: UpdateState::Confirmed,
            release_id: Some(job.release_id),
            command_id: Some(job.command_id),
            progress_pct: Some(100),
            reason: None,
        };
        self.commit().await
    }

    // ----- time passing -----

    async fn on_tick(&mut self) -> Result<()> {
        let now = Instant::now();
        if now >= self.next_sample {
            self.next_sample = now + Duration::from_secs(self.config.health.sample_secs);
            self.sample().await;
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + Duration::from_secs(self.config.health.heartbeat_secs);
            let uptime_secs =
                system_uptime_secs().unwrap_or_else(|| self.started.elapsed().as_secs());
            self.event(TelemetryEvent::Heartbeat { uptime_secs }).await;
            self.read_metrics_file().await;
            // Sequence numbers move on with every event; a heartbeat's save keeps the gap small.
            self.save()?;
        }
        if now >= self.next_status {
            self.send_status().await;
        }
        self.judge_health().await
    }

    /// Reads the health sources on the blocking pool: a unit's count command (`systemctl`) may
    /// take a while, and the loop must keep serving the link meanwhile.
    async fn read_health(&self) -> (Reading, Vec<String>) {
        let config = self.config.health.clone();
        tokio::task::spawn_blocking(move || health::read(&config))
            .await
            .unwrap_or_else(|e| {
                (
                    Reading::default(),
                    vec![format!("the health task failed: {e}")],
                )
            })
    }

    /// Reads the health sources and sends what changed as telemetry.
    async fn sample(&mut self) {
        let (reading, problems) = self.read_health().await;
        for p in problems {
            eprintln!("convoy-agent: health source: {p}");
        }
        let before = std::mem::replace(&mut self.reading, reading);
        let mut events = Vec::new();
        for (i, unit) in self.config.health.units.iter().enumerate() {
            let (Some(Some(old)), Some(Some(new))) = (
                before.unit_restarts.get(i),
                self.reading.unit_restarts.get(i),
            ) else {
                continue;
            };
            // Bounded: a counter that jumps (or a unit restarted thousands of times while the agent
            // was away) must not flood the link.
            for _ in 0..new.saturating_sub(*old).min(100) {
                events.push(TelemetryEvent::Crash {
                    process: wire::cut(&unit.name, convoy_core::release::MAX_ID_LEN),
                });
            }
        }
        if let (Some(old), Some(new)) = (&before.core_dumps, &self.reading.core_dumps) {
            for file in new.difference(old).take(100) {
                events.push(TelemetryEvent::Crash {
                    process: health::core_process(file),
                });
            }
        }
        if let Some(pct) = self.reading.battery_pct
            && before.battery_pct != Some(pct)
        {
            events.push(TelemetryEvent::Battery { pct });
        }
        let power_changed = before.power != self.reading.power;
        for e in events {
            self.event(e).await;
        }
        if power_changed {
            self.send_status().await;
        }
    }

    async fn read_metrics_file(&mut self) {
        let Some(path) = self
            .config
            .health
            .metrics
            .as_ref()
            .and_then(|m| m.file.clone())
        else {
            return;
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // No file yet: the device's software has not written one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                eprintln!("convoy-agent: metrics file {}: {e}", path.display());
                return;
            }
        };
        let (metrics, problems) = health::parse_metrics(&text);
        for p in problems {
            eprintln!("convoy-agent: metrics file {}: {p}", path.display());
        }
        for (name, value) in metrics.into_iter().take(100) {
            self.event(TelemetryEvent::Metric { name, value }).await;
        }
    }

    /// The health window: revert on failure, confirm once it has passed with the link up.
    async fn judge_health(&mut self) -> Result<()> {
        let Some(job) = self.state.job.clone() else {
            return Ok(());
        };
        let update = &self.config.update;
        if job.phase == Phase::Rebooting {
            if let Some(since) = self.rebooting_since
                && since.elapsed() >= Duration::from_secs(update.link_deadline_secs)
            {
                return self
                    .revert(format!(
                        "the reboot into slot {} did not happen within {} s",
                        self.state.active_slot, update.link_deadline_secs
                    ))
                    .await;
            }
            return Ok(());
        }
        if job.phase != Phase::Booted {
            return Ok(());
        }
        let Some(booted_at) = job.booted_at else {
            return Ok(());
        };
        let h = &self.config.health;
        let restarts = self
            .reading
            .total_restarts()
            .saturating_sub(job.baseline_restarts);
        if !h.units.is_empty() && h.max_unit_restarts > 0 && restarts >= h.max_unit_restarts {
            let names: Vec<&str> = h.units.iter().map(|u| u.name.as_str()).collect();
            let window = update.health_window_secs;
            return self
                .revert(format!(
                    "unit restarts: {} restarted {restarts} times within the {window} s health window",
                    names.join(", ")
                ))
                .await;
        }
        let cores = self.reading.core_count().saturating_sub(job.baseline_cores);
        if h.core_dumps.is_some() && h.max_core_dumps > 0 && cores >= h.max_core_dumps {
            return self
                .revert(format!("core dumps: {cores} new within the health window"))
                .await;
        }
        let elapsed = convoy_devlink::now().secs_since(booted_at).max(0) as u64;
        if !self.connected_since_boot && elapsed >= update.link_deadline_secs {
            return self
                .revert(format!(
                    "the link did not come back within {} s of the boot",
                    update.link_deadline_secs
                ))
                .await;
        }
        if elapsed >= update.health_window_secs && self.connected {
            return self.confirm().await;
        }
        Ok(())
    }
}

/// Whether `name` is one plain file name (no separators, no traversal).
fn is_plain_name(name: &str) -> bool {
    range::sanitize_path(&format!("/{}", range::encode_segment(name))).is_ok_and(|s| s.len() == 1)
}

/// The URL of an artifact: its own if it is an `http://` URL, else joined to the base.
pub fn artifact_url(base: Option<&str>, url: &str) -> Result<String, String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(url.to_owned());
    }
    let Some(base) = base else {
        return Err(format!(
            "artifact URL {url:?} is relative and update.artifact_base_url is not set"
        ));
    };
    let path: Vec<String> = url
        .trim_start_matches('/')
        .split('/')
        .map(range::encode_segment)
        .collect();
    Ok(format!("{}/{}", base.trim_end_matches('/'), path.join("/")))
}

/// Downloads every artifact of a release (resuming, checking length and SHA-256); skips one that
/// is already complete from an earlier run.
async fn fetch(
    dir: &Path,
    base: Option<&str>,
    artifacts: &[Artifact],
    retry: RetryPolicy,
    tx: &mpsc::Sender<Done>,
    release_id: &str,
) -> Result<(Vec<PathBuf>, Vec<ArtifactDigest>), String> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("download failed: creating {}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    let mut digests = Vec::new();
    let mut before = 0u64;
    for artifact in artifacts {
        let dest = dir.join(&artifact.name);
        let held = hash_file(&dest).await;
        let sha256 = match held {
            Some((len, sha)) if len == artifact.length_bytes && sha == artifact.sha256 => sha,
            _ => {
                let url = artifact_url(base, &artifact.url)
                    .map_err(|e| format!("download failed: {e}"))?;
                let offset = before;
                let progress_tx = tx.clone();
                let rid = release_id.to_owned();
                let mut on_progress = move |p: Progress| {
                    let _ = progress_tx.try_send(Done::Progress {
                        release_id: rid.clone(),
                        done: offset + p.done_bytes,
                    });
                };
                let (report, _) = download_with_retries(
                    &url,
                    &dest,
                    artifact.length_bytes,
                    &artifact.sha256,
                    retry,
                    &mut on_progress,
                    &mut |e| eprintln!("convoy-agent: retrying {url}: {e}"),
                )
                .await
                .map_err(|e| format!("download failed: {e}"))?;
                report.sha256
            }
        };
        before += artifact.length_bytes;
        digests.push(ArtifactDigest {
            name: artifact.name.clone(),
            length_bytes: artifact.length_bytes,
            sha256,
        });
        paths.push(dest);
    }
    Ok((paths, digests))
}

/// The length and SHA-256 of a file, if it exists.
async fn hash_file(path: &Path) -> Option<(u64, String)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use sha2::{Digest, Sha256};
        use std::io::Read;
        let mut file = std::fs::File::open(&path).ok()?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Some((len, hex::encode(hasher.finalize())))
    })
    .await
    .ok()
    .flatten()
}

/// Removes downloads of releases other than `keep`.
fn remove_other_downloads(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name() != keep
            && let Err(e) = std::fs::remove_dir_all(entry.path())
        {
            eprintln!("convoy-agent: removing {}: {e}", entry.path().display());
        }
    }
}

async fn run_command(argv: Vec<String>) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        let Some((program, args)) = argv.split_first() else {
            bail!("an empty command");
        };
        let status = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .status()
            .with_context(|| format!("running {program}"))?;
        if !status.success() {
            bail!("{} exited with {status}", argv.join(" "));
        }
        Ok(())
    })
    .await
    .context("the command task failed")?
}

/// Seconds since the machine booted (`/proc/uptime`), for heartbeats.
fn system_uptime_secs() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(secs as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_metrics_socket_passes_good_lines_on_and_replaces_a_stale_socket() {
        use tokio::io::AsyncWriteExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metrics.sock");
        // A socket file an earlier run left behind.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
        let (tx, mut rx) = mpsc::channel(8);
        listen_metrics(&path, tx).expect("listen");
        let mut stream = tokio::net::UnixStream::connect(&path)
            .await
            .expect("connect");
        stream
            .write_all(b"queue_depth 3\nnot a metric line\nlatency_ms 12.5\n")
            .await
            .expect("write");
        drop(stream);
        assert_eq!(rx.recv().await, Some(("queue_depth".to_owned(), 3.0)));
        assert_eq!(rx.recv().await, Some(("latency_ms".to_owned(), 12.5)));
    }

    #[test]
    fn names_under_the_state_directory_are_plain() {
        for ok in ["t300-fw-2.5.0", "app.sh", "fw_1.img"] {
            assert!(is_plain_name(ok), "{ok}");
        }
        for bad in ["..", ".", "a/b", "", "../x"] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }

    #[test]
    fn artifact_urls_are_their_own_or_joined_to_the_base() {
        assert_eq!(
            artifact_url(None, "http://depot:8080/a.img").expect("own"),
            "http://depot:8080/a.img"
        );
        assert_eq!(
            artifact_url(Some("http://depot:8080/"), "fw 2/a.img").expect("joined"),
            "http://depot:8080/fw%202/a.img"
        );
        let err = artifact_url(None, "a.img").expect_err("relative without a base");
        assert!(err.contains("artifact_base_url"), "{err}");
    }
}
