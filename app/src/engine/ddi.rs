//! The engine's DDI link: devices that speak hawkBit's Direct Device Integration API take part in
//! the rollout's waves and gates beside the MQTT devices.
//!
//! The engine's shell runs a [`DdiHub`], its HTTP endpoint and an artifact server for the
//! release (`DdiLink`); the engine's state keeps the DDI bookkeeping ([`DdiState`]) and reaches
//! the hub's table of deployments only through a [`DdiPort`]. Which devices are DDI devices:
//! those tagged `link=ddi` in the fleet, those given a target token (`--ddi-target-tokens`),
//! and any device of the cache that polls the endpoint (with the gateway token), from its first
//! poll on. A DDI device is sent no MQTT command; a DDI device
//! that is only found out by its poll after its wave opened had an MQTT offer queued, which is
//! withdrawn (no longer resent).
//!
//! What the rollout decides becomes hub actions, and what the device reports becomes the same
//! device states an MQTT status carries, fed to the same state machine:
//!
//! - an offer (its wave opened) assigns the deployment; a device whose controller the hub does
//!   not know yet (it never polled) is assigned it at its first poll. No deployment is assigned
//!   while the rollout is paused or rolling back; those devices get theirs if it resumes;
//! - feedback `download`, `proceeding`, `scheduled`, `resumed` → downloading; `downloaded` →
//!   verified; `closed`+`success` → confirmed; `closed`+`failure` and `rejected` → failed (an
//!   install failure for the gates, as an MQTT device's); `canceled` → reverted;
//! - a cancel (a rollback of a device still before its install) becomes the DDI cancel action;
//!   the device's confirmation is a revert, its refusal is asked again like an MQTT cancel. A
//!   device that never fetched its deployment has it withdrawn and counts as reverted.
//!
//! - health telemetry a DDI device uploads (`POST …/telemetry`, Convoy's extension of DDI)
//!   goes through [`EngineState::handle_telemetry`] as an MQTT device's telemetry message does:
//!   its health window, the rate and mean gates, an alarm closing the window at once. The
//!   endpoint checks the device's timestamps against the run's clock ([`DdiLink::set_clock`]).
//!
//! Deliberately not here: rolling a DDI device that installed the release back to its previous
//! version (hawkBit does it by assigning the previous distribution set, which Convoy does not
//! hold); and counting polls as being heard (a DDI device is heard through its feedback and
//! telemetry).

use anyhow::{Result, bail};
use convoy_core::fleet::Fleet;
use convoy_core::rollout::{DeviceState, Phase};
use convoy_core::time::Timestamp;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

use super::state::{CmdKind, EngineState};
use crate::link::ddi::release::{ReleaseFiles, ServedRelease, serve_release};
use crate::link::ddi::wire::{Execution, Finished};
use crate::link::ddi::{DdiConfig, DdiDeployment, DdiEvent, DdiHub, DdiServer, HubConfig};
use crate::link::http::ArtifactServer;

/// The fleet tag that marks a device as a DDI device before it ever polls: `link=ddi`.
pub const DDI_TAG: (&str, &str) = ("link", "ddi");

/// How the engine serves DDI devices (`convoy rollout run --ddi-listen ...`).
#[derive(Clone)]
pub struct DdiLinkOptions {
    /// The DDI endpoint's address.
    pub listen: SocketAddr,
    /// The tenant in every DDI path.
    pub tenant: String,
    /// PEM certificate chain and key for TLS on the endpoint.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The artifact server's address (default: the endpoint's address, any free port).
    pub artifact_listen: Option<SocketAddr>,
    /// The artifact server's URL as devices reach it (needed when listening on 0.0.0.0).
    pub artifact_url: Option<String>,
    /// The token every device may use (`GatewayToken`).
    pub gateway_token: Option<String>,
    /// Per-device tokens (`TargetToken`): `(controller id, token)`.
    pub target_tokens: Vec<(String, String)>,
    /// The polling interval devices are told, in seconds.
    pub sleep_secs: u64,
    /// The DDI chunk part (software module type) devices see.
    pub part: String,
    /// The signed manifest file the release was read from (for the record: devices are served the
    /// canonical form of the verified manifest, never this file).
    pub manifest_file: PathBuf,
    /// The release's artifact files, in the manifest's order (checked against it already).
    pub artifact_files: Vec<PathBuf>,
    /// The endpoint's URL as devices reach it, which links in answers start with (`None`: the
    /// listen address; see `DdiConfig::public_url`).
    pub public_url: Option<String>,
    /// Connections at once, in all and from one client address (`None`: a quarter of all).
    pub max_connections: usize,
    pub max_connections_per_client: Option<usize>,
    /// Time to send a request head, and to finish a TLS handshake.
    pub header_timeout: std::time::Duration,
}

impl std::fmt::Debug for DdiLinkOptions {
    // Tokens stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DdiLinkOptions")
            .field("listen", &self.listen)
            .field("tenant", &self.tenant)
            .field("tls", &self.tls)
            .field("artifact_listen", &self.artifact_listen)
            .field("artifact_url", &self.artifact_url)
            .field(
                "gateway_token",
                &self.gateway_token.as_ref().map(|_| "<redacted>"),
            )
            .field("target_tokens", &self.target_tokens.len())
            .field("sleep_secs", &self.sleep_secs)
            .field("part", &self.part)
            .field("public_url", &self.public_url)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_client",
                &self.max_connections_per_client,
            )
            .field("header_timeout", &self.header_timeout)
            .field("manifest_file", &self.manifest_file)
            .field("artifact_files", &self.artifact_files)
            .finish()
    }
}

/// What the DDI link did, in the engine's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DdiReport {
    /// The endpoint's base URL (devices poll `{url}/{tenant}/controller/v1/{id}`).
    pub url: String,
    /// Devices of the rollout known as DDI devices at the end.
    pub devices: u32,
    /// Controllers that polled for the first time in this run.
    pub registered: u64,
    pub polls: u64,
    /// Deployments assigned (one per device offered over DDI, again after a restart).
    pub assigned: u64,
    pub feedback: u64,
    /// Cancels the devices confirmed, and refused.
    pub canceled: u64,
    pub cancel_refused: u64,
    /// Offers withdrawn before the device fetched them (a cancel with nothing to stop).
    pub withdrawn: u64,
    /// MQTT offers no longer sent because the device turned out to be a DDI device.
    pub mqtt_offers_withdrawn: u64,
    /// Devices that installed the release and were to roll back: not possible over DDI.
    pub rollbacks_unsupported: u64,
    /// Controllers that polled and are not devices of the cache (nothing offered).
    pub unknown_controllers: Vec<String>,
    pub unauthorized: u64,
    pub bad_requests: u64,
    /// Requests refused with 503 because the engine was behind.
    pub busy: u64,
    /// Telemetry uploads (`POST …/telemetry`), taken or refused, and the events taken from
    /// devices of the rollout (fed to their health windows as MQTT telemetry is).
    pub telemetry_uploads: u64,
    pub telemetry_events: u64,
    /// Artifact server answers: whole files (200) and resumed ranges (206).
    pub downloads_full: u64,
    pub downloads_resumed: u64,
}

/// The action slot of a device whose deployment was withdrawn before it fetched it (the hub's
/// action ids start at 1).
const WITHDRAWN: u64 = 0;

/// What the engine's state asks of the DDI hub: an in-memory table of controllers and their
/// deployments, which the endpoint serves on the devices' polls. A trait so that the state
/// stays free of the hub's locks and the endpoint, and its tests need no HTTP.
pub trait DdiPort {
    /// Whether the hub knows the controller (it polled, or was given a token).
    fn knows(&self, device_id: &str) -> bool;
    /// Assigns the release's deployment to the controller; the hub's action id.
    fn assign(&self, device_id: &str) -> Result<u64>;
    /// Asks the controller to stop `action`; the cancel action's id.
    fn cancel(&self, device_id: &str, action: u64) -> Result<u64>;
    /// The release the deployment carries.
    fn release_id(&self) -> &str;
}

/// The hub of a running endpoint, with the deployment of this run's release.
struct HubPort {
    hub: Arc<DdiHub>,
    deployment: Arc<DdiDeployment>,
}

impl DdiPort for HubPort {
    fn knows(&self, device_id: &str) -> bool {
        self.hub.controller(device_id).is_some()
    }

    fn assign(&self, device_id: &str) -> Result<u64> {
        self.hub.assign(device_id, Arc::clone(&self.deployment))
    }

    fn cancel(&self, device_id: &str, action: u64) -> Result<u64> {
        self.hub.cancel(device_id, action)
    }

    fn release_id(&self) -> &str {
        &self.deployment.release_id
    }
}

/// The running DDI side of an engine: the endpoint and the artifact server (the shell's).
pub(super) struct DdiLink {
    hub: Arc<DdiHub>,
    server: DdiServer,
    artifacts: ArtifactServer,
    /// Holds the canonical manifest the artifact server serves.
    _manifest_dir: tempfile::TempDir,
}

/// The DDI side's bookkeeping in the engine's state.
pub struct DdiState {
    port: Box<dyn DdiPort>,
    /// Whether fleet device `i` is a DDI device.
    is_ddi: Vec<bool>,
    /// The hub action of fleet device `i` in this run (kept after it closes, so a device is
    /// assigned the release once per run).
    action: Vec<Option<u64>>,
    /// The counters of the report (the endpoint's own are added by [`DdiLink::report`]).
    report: DdiReport,
}

impl DdiState {
    /// The bookkeeping of `devices` fleet devices, those of `is_ddi` known as DDI devices up
    /// front, over `port`.
    pub fn new(port: Box<dyn DdiPort>, is_ddi: Vec<bool>, url: String) -> Self {
        let n = is_ddi.len();
        Self {
            port,
            is_ddi,
            action: vec![None; n],
            report: DdiReport {
                url,
                ..DdiReport::default()
            },
        }
    }

    pub(super) fn is_ddi(&self, i: usize) -> bool {
        self.is_ddi.get(i).copied().unwrap_or(false)
    }

    /// The report's counters so far, with the rollout's devices known as DDI devices.
    pub(super) fn counters(&self, in_rollout: &[bool]) -> DdiReport {
        let devices = self
            .is_ddi
            .iter()
            .zip(in_rollout)
            .filter(|(d, r)| **d && **r)
            .count();
        DdiReport {
            devices: u32::try_from(devices).unwrap_or(u32::MAX),
            ..self.report.clone()
        }
    }
}

/// The device state a DDI feedback stands for, `None` when it says nothing of the update.
pub fn feedback_state(execution: Execution, finished: Finished) -> Option<DeviceState> {
    Some(match (execution, finished) {
        (Execution::Closed, Finished::Success) => DeviceState::Healthy,
        (Execution::Closed, Finished::Failure) | (Execution::Rejected, _) => DeviceState::Failed,
        (Execution::Closed, Finished::None) => return None,
        (Execution::Canceled, _) => DeviceState::Reverted,
        (Execution::Downloaded, _) => DeviceState::Verified,
        (
            Execution::Download | Execution::Proceeding | Execution::Scheduled | Execution::Resumed,
            _,
        ) => DeviceState::Downloading,
    })
}

impl DdiLink {
    /// Starts the artifact server and the endpoint, and marks the devices known up front.
    pub(super) async fn start(
        opts: &DdiLinkOptions,
        fleet: &Fleet,
        manifest: &convoy_core::manifest::VerifiedManifest,
    ) -> Result<(Self, DdiState, mpsc::Receiver<DdiEvent>)> {
        if opts.gateway_token.is_none() && opts.target_tokens.is_empty() {
            bail!(
                "DDI devices could not authenticate: pass --ddi-gateway-token-file FILE or --ddi-target-tokens CSV"
            );
        }
        let ServedRelease {
            artifacts,
            deployment,
            manifest_dir,
            ..
        } = serve_release(&ReleaseFiles {
            spec: manifest.spec(),
            manifest,
            artifacts: &opts.artifact_files,
            artifact_listen: opts
                .artifact_listen
                .unwrap_or_else(|| SocketAddr::new(opts.listen.ip(), 0)),
            artifact_url: opts.artifact_url.as_deref(),
            part: &opts.part,
        })
        .await?;
        let (hub, events) = DdiHub::new(HubConfig {
            sleep_secs: opts.sleep_secs,
            gateway_token: opts.gateway_token.clone(),
            telemetry: true,
            ..HubConfig::default()
        });
        let mut is_ddi: Vec<bool> = fleet
            .devices
            .iter()
            .map(|d| d.tag(DDI_TAG.0) == Some(DDI_TAG.1))
            .collect();
        for (id, token) in &opts.target_tokens {
            hub.register(id, Some(token))?;
            if let Ok(i) = fleet.devices.binary_search_by(|d| d.id.as_str().cmp(id)) {
                is_ddi[i] = true;
            }
        }
        let mut config = DdiConfig::new(opts.listen);
        config.tenant.clone_from(&opts.tenant);
        config.tls.clone_from(&opts.tls);
        config.public_url.clone_from(&opts.public_url);
        config.max_connections = opts.max_connections;
        config.max_connections_per_client = opts.max_connections_per_client;
        config.header_read_timeout = opts.header_timeout;
        config.tls_handshake_timeout = opts.header_timeout;
        let server = match DdiServer::start(config, Arc::clone(&hub)).await {
            Ok(s) => s,
            Err(e) => {
                artifacts.shutdown().await;
                return Err(e);
            }
        };
        let url = server.base_url();
        Ok((
            Self {
                hub: Arc::clone(&hub),
                server,
                artifacts,
                _manifest_dir: manifest_dir,
            },
            DdiState::new(Box::new(HubPort { hub, deployment }), is_ddi, url),
            events,
        ))
    }

    /// Runs the endpoint's clock, which device timestamps in telemetry are checked against, as
    /// the run's clock runs: from `now` at `scale` simulated seconds per wall second.
    pub(super) fn set_clock(&self, now: Timestamp, scale: f64) {
        self.hub.set_clock(now, scale);
    }

    /// The report: the state's counters with the endpoint's.
    pub(super) fn report(&self, counters: DdiReport) -> DdiReport {
        let stats = self.server.stats();
        let files = self.artifacts.stats();
        DdiReport {
            polls: stats.polls,
            unauthorized: stats.unauthorized,
            bad_requests: stats.bad_request,
            busy: stats.busy,
            telemetry_uploads: stats.telemetry,
            downloads_full: files.full,
            downloads_resumed: files.partial,
            ..counters
        }
    }

    pub(super) async fn shutdown(self) {
        self.server.shutdown().await;
        self.artifacts.shutdown().await;
    }
}

impl EngineState {
    /// The DDI report's counters, when the run serves DDI devices.
    pub fn ddi_counters(&self) -> Option<DdiReport> {
        self.ddi.as_ref().map(|d| d.counters(&self.in_rollout))
    }

    pub(super) fn ddi_device(&self, i: usize) -> bool {
        self.ddi.as_ref().is_some_and(|l| l.is_ddi(i))
    }

    /// Splits devices of a decision into those reached over MQTT and the DDI devices (by fleet
    /// index).
    pub(super) fn split_ddi(&self, device_ids: &[String]) -> (Vec<String>, Vec<usize>) {
        if self.ddi.is_none() {
            return (device_ids.to_vec(), Vec::new());
        }
        let mut mqtt = Vec::with_capacity(device_ids.len());
        let mut ddi = Vec::new();
        for id in device_ids {
            match self.index(id) {
                Some(i) if self.ddi_device(i) => ddi.push(i),
                _ => mqtt.push(id.clone()),
            }
        }
        (mqtt, ddi)
    }

    /// Carries out a decision's command for DDI devices, after the decision was written.
    pub(super) fn ddi_dispatch(&mut self, now: Timestamp, devices: &[usize], kind: CmdKind) {
        for &i in devices {
            match kind {
                CmdKind::Offer => {
                    let id = self.fleet.devices[i].id.clone();
                    self.device_event(&id, now, "offer", serde_json::json!({"via": "ddi"}));
                    self.ddi_assign(now, i);
                }
                CmdKind::Cancel => self.ddi_cancel(now, i),
                CmdKind::RollBack => {
                    let installed = self
                        .rollout
                        .device_state(&self.fleet.devices[i].id)
                        .is_some_and(DeviceState::runs_new_version);
                    if installed {
                        self.ddi_rollback_unsupported(now, i);
                    } else {
                        self.ddi_cancel(now, i);
                    }
                }
            }
        }
    }

    /// A device that installed the release cannot be rolled back over DDI: recorded once, and
    /// not asked again (the silence limit releases the rollout from waiting on it).
    fn ddi_rollback_unsupported(&mut self, now: Timestamp, i: usize) {
        let id = self.fleet.devices[i].id.clone();
        self.rollback_in_flight[i] = true;
        if let Some(l) = self.ddi.as_mut() {
            l.report.rollbacks_unsupported += 1;
        }
        self.device_event(
            &id,
            now,
            "ddi.rollback_unsupported",
            serde_json::json!({"reason": "a DDI device is rolled back by assigning its previous release, which this engine does not hold"}),
        );
    }

    /// Gives DDI device `i` its deployment if its wave is open, the rollout is running, and the
    /// hub knows the controller (else at its first poll).
    pub(super) fn ddi_assign(&mut self, now: Timestamp, i: usize) {
        if !matches!(
            self.rollout.phase(),
            Phase::Running { .. } | Phase::Soaking { .. }
        ) || self.rollback_wanted[i]
        {
            return;
        }
        let id = self.fleet.devices[i].id.clone();
        if !self
            .rollout
            .device_state(&id)
            .is_some_and(DeviceState::is_in_flight)
        {
            return;
        }
        let Some(link) = self.ddi.as_mut() else {
            return;
        };
        if !link.is_ddi(i) || link.action[i].is_some() || !link.port.knows(&id) {
            return;
        }
        // A device behind, in a chain wave (docs/ENGINE.md): never the target over DDI.
        if self.chain_holds_target(&id) {
            return;
        }
        let Some(link) = self.ddi.as_mut() else {
            return;
        };
        match link.port.assign(&id) {
            Ok(action) => {
                link.action[i] = Some(action);
                link.report.assigned += 1;
                let release = link.port.release_id().to_owned();
                self.device_event(
                    &id,
                    now,
                    "ddi.assigned",
                    serde_json::json!({"action": action, "release": release}),
                );
            }
            Err(e) => self.notes.push(format!(
                "{now}: could not assign the release to {id}: {e:#}"
            )),
        }
    }

    /// Assigns the deployment to every DDI device that waits for one (after a resume, or a
    /// device whose offer came while the hub did not know it).
    pub(super) fn ddi_assign_waiting(&mut self, now: Timestamp) {
        let Some(link) = self.ddi.as_ref() else {
            return;
        };
        let waiting: Vec<usize> = (0..link.is_ddi.len())
            .filter(|&i| link.is_ddi[i] && link.action[i].is_none() && self.in_rollout[i])
            .collect();
        for i in waiting {
            self.ddi_assign(now, i);
        }
    }

    /// DDI devices in flight (and not silent) that have no deployment: offered by the rollout,
    /// held back by a pause, so they will not move until it resumes.
    pub(super) fn ddi_waiting_in_flight(&self) -> u32 {
        let Some(link) = self.ddi.as_ref() else {
            return 0;
        };
        let s = self.rollout.state();
        let waiting = (0..link.is_ddi.len())
            .filter(|&i| link.is_ddi[i] && link.action[i].is_none() && self.in_rollout[i])
            .filter(|&i| {
                s.device_ids
                    .binary_search(&self.fleet.devices[i].id)
                    .ok()
                    .and_then(|r| s.devices.get(r))
                    .is_some_and(|slot| slot.state.is_in_flight() && !slot.silent)
            })
            .count();
        u32::try_from(waiting).unwrap_or(u32::MAX)
    }

    /// Asks DDI device `i` to stop its deployment; one that never fetched it has it withdrawn.
    fn ddi_cancel(&mut self, now: Timestamp, i: usize) {
        let id = self.fleet.devices[i].id.clone();
        let Some(link) = self.ddi.as_mut() else {
            return;
        };
        if let Some(action) = link.action[i] {
            // An action that is closed already fails to cancel: the device's last feedback
            // says where it is.
            if let Ok(cancel) = link.port.cancel(&id, action) {
                self.rollback_in_flight[i] = true;
                self.device_event(
                    &id,
                    now,
                    "cancel",
                    serde_json::json!({"via": "ddi", "action": action, "cancel": cancel}),
                );
            }
            return;
        }
        // Nothing reached the device: it never left its previous version. The action slot is
        // taken so that the release is not assigned later in this run.
        link.action[i] = Some(WITHDRAWN);
        link.report.withdrawn += 1;
        self.device_event(
            &id,
            now,
            "cancelled",
            serde_json::json!({"via": "ddi", "reason": "withdrawn before the device fetched it"}),
        );
        self.report(now, i, DeviceState::Reverted);
    }

    /// One event of the hub.
    pub fn handle_ddi_event(&mut self, now: Timestamp, event: DdiEvent) {
        match event {
            DdiEvent::Registered { controller } => self.on_ddi_registered(now, &controller),
            DdiEvent::Feedback {
                controller,
                action_id,
                release_id,
                status,
                closed,
            } => {
                let Some(i) = self.index(&controller) else {
                    return;
                };
                if let Some(l) = self.ddi.as_mut() {
                    l.report.feedback += 1;
                }
                self.device_event(
                    &controller,
                    now,
                    "ddi.feedback",
                    serde_json::json!({
                        "action": action_id, "release": release_id,
                        "execution": status.execution, "finished": status.result.finished,
                        "progress": status.result.progress, "details": status.details,
                        "closed": closed.is_some(),
                    }),
                );
                {
                    let d = &mut self.fleet.devices[i];
                    d.last_seen = now;
                }
                self.last_status[i] = Some(now);
                self.mark_dirty(i);
                if release_id != self.config.release_id.as_str() || !self.in_rollout[i] {
                    return;
                }
                let Some(state) = feedback_state(status.execution, status.result.finished) else {
                    return;
                };
                let current = self.rollout.device_state(&controller);
                if state == DeviceState::Failed && current != Some(DeviceState::Failed) {
                    let d = &mut self.fleet.devices[i];
                    d.failed_update_attempts = d.failed_update_attempts.saturating_add(1);
                }
                if matches!(state, DeviceState::Failed | DeviceState::Reverted)
                    && current != Some(state)
                    && !status.details.is_empty()
                {
                    self.device_event(
                        &controller,
                        now,
                        "update.reason",
                        serde_json::json!({
                            "state": super::state::state_name(state),
                            "reason": status.details.join("; "),
                        }),
                    );
                }
                self.report(now, i, state);
            }
            DdiEvent::CancelFeedback {
                controller,
                action_id,
                cancel_id,
                status,
                stopped,
            } => {
                let Some(i) = self.index(&controller) else {
                    return;
                };
                self.rollback_in_flight[i] = false;
                self.last_status[i] = Some(now);
                if stopped {
                    if let Some(l) = self.ddi.as_mut() {
                        l.report.canceled += 1;
                    }
                    self.device_event(
                        &controller,
                        now,
                        "cancelled",
                        serde_json::json!({"via": "ddi", "action": action_id, "cancel": cancel_id, "details": status.details}),
                    );
                    self.report(now, i, DeviceState::Reverted);
                } else {
                    // Asked again with the next rollback retry, as an MQTT refusal is.
                    if let Some(l) = self.ddi.as_mut() {
                        l.report.cancel_refused += 1;
                    }
                    self.device_event(
                        &controller,
                        now,
                        "command.rejected",
                        serde_json::json!({"via": "ddi", "action": action_id, "cancel": cancel_id, "reason": status.details.join("; ")}),
                    );
                }
            }
            DdiEvent::ConfigData {
                controller, data, ..
            } => {
                if self.index(&controller).is_some() {
                    self.device_event(&controller, now, "ddi.attributes", serde_json::json!(data));
                }
            }
            DdiEvent::Telemetry {
                controller,
                messages,
            } => {
                // Exactly the path of an MQTT device's telemetry: its health window, and an
                // alarm closes the window at once.
                if self.index(&controller).is_some_and(|i| self.in_rollout[i])
                    && let Some(l) = self.ddi.as_mut()
                {
                    l.report.telemetry_events += messages.len() as u64;
                }
                for t in &messages {
                    self.handle_telemetry(now, t);
                }
            }
        }
    }

    /// A controller's first poll in this run: a device of the rollout becomes a DDI device
    /// (its MQTT offer, if any, is withdrawn) and gets its deployment if its wave is open.
    fn on_ddi_registered(&mut self, now: Timestamp, controller: &str) {
        let Some(i) = self.index(controller) else {
            if let Some(l) = self.ddi.as_mut() {
                l.report.registered += 1;
                if !l.report.unknown_controllers.iter().any(|c| c == controller)
                    && l.report.unknown_controllers.len() < 100
                {
                    l.report.unknown_controllers.push(controller.to_owned());
                }
            }
            return;
        };
        let newly = match self.ddi.as_mut() {
            Some(l) => {
                l.report.registered += 1;
                let newly = !l.is_ddi[i];
                l.is_ddi[i] = true;
                newly
            }
            None => return,
        };
        if !self.in_rollout[i] {
            self.device_event(
                controller,
                now,
                "ddi.not_offered",
                serde_json::json!({"release": self.config.release_id.as_str(), "reason": format!("not a device of rollout {}", self.config.rollout_id)}),
            );
            return;
        }
        if newly {
            let stale: Vec<String> = self
                .awaiting
                .iter()
                .filter(|(_, a)| a.device == i && a.kind == CmdKind::Offer)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &stale {
                self.awaiting.remove(id);
            }
            if let Some(l) = self.ddi.as_mut() {
                l.report.mqtt_offers_withdrawn += stale.len() as u64;
            }
            self.device_event(
                controller,
                now,
                "ddi.registered",
                serde_json::json!({"mqtt_offers_withdrawn": stale}),
            );
        }
        self.ddi_assign(now, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_maps_to_the_states_an_mqtt_status_carries() {
        let check = |e, f, want: Option<DeviceState>| {
            assert_eq!(feedback_state(e, f), want, "{e:?} {f:?}");
        };
        check(
            Execution::Proceeding,
            Finished::None,
            Some(DeviceState::Downloading),
        );
        check(
            Execution::Download,
            Finished::None,
            Some(DeviceState::Downloading),
        );
        check(
            Execution::Downloaded,
            Finished::None,
            Some(DeviceState::Verified),
        );
        check(
            Execution::Closed,
            Finished::Success,
            Some(DeviceState::Healthy),
        );
        check(
            Execution::Closed,
            Finished::Failure,
            Some(DeviceState::Failed),
        );
        check(
            Execution::Rejected,
            Finished::None,
            Some(DeviceState::Failed),
        );
        check(
            Execution::Canceled,
            Finished::None,
            Some(DeviceState::Reverted),
        );
        check(Execution::Closed, Finished::None, None);
    }
}
