//! A simulated device: one per-device state machine that behaves like a fleet device taking an
//! over-the-air update.
//!
//! [`SimDevice`] is driven by [`SimDevice::handle_command`] (an offer, rollback or cancel, by
//! command id) and [`SimDevice::handle_tick`] (simulated time passing), and reports what it would
//! publish through [`SimDevice::poll_message`]: retained status snapshots, telemetry events and
//! command acks, as core types (the app turns them into wire payloads).
//!
//! It applies the device-side rules of [`crate::manifest`] (signature, key, expiry, hardware,
//! downgrade, artifact hash and length), keeps A/B slots, models the download by bytes and the
//! link bandwidth of its connectivity (outages such as tunnels pause it; it resumes from the bytes
//! already held), installs into the inactive slot, reboots, watches a health window and reverts to
//! the previous slot on a boot failure or crash loop. Baseline noise (crashes, reboots, outages,
//! battery) and injected [`Faults`] come from a [`SeededRng`] derived from the seed and device
//! index, so the same seed gives the same event sequence.
//!
//! It deliberately does no I/O and moves no real bytes: the artifact download is modelled by
//! length and bandwidth, and the "received" digest is the signed one unless a fault corrupts it.

pub mod faults;
#[cfg(test)]
mod tests;

pub use faults::{Fault, FaultEffect, FaultError, Faults};

use crate::fleet::{Connectivity, Device, GeoPoint, PowerState, Slot, SmallMap};
use crate::manifest::{ArtifactDigest, Attack, DeviceMemory, TrustedKeys, VerifiedManifest};
use crate::rng::SeededRng;
use crate::time::Timestamp;
use crate::version::Version;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

/// Where the device is in taking an update (mirrors the protocol's `update.state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpdatePhase {
    Idle,
    Offered,
    Downloading,
    Verified,
    Installing,
    /// Covers the reboot and the health window that follows it.
    Rebooting,
    Confirmed,
    Failed,
    Reverted,
}

/// The update part of a status snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateInfo {
    pub phase: UpdatePhase,
    pub release_id: Option<String>,
    pub command_id: Option<String>,
    pub progress_pct: Option<u8>,
    pub reason: Option<String>,
}

/// Everything a device reports in its retained status.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusSnapshot {
    pub active_slot: Slot,
    pub components: SmallMap<Version>,
    pub update: UpdateInfo,
    pub battery_pct: Option<u8>,
    pub power: PowerState,
    pub connectivity: Connectivity,
    pub metered: bool,
    pub free_storage_bytes: u64,
    pub position: GeoPoint,
}

/// One telemetry event (mirrors the protocol's `event.kind`s the simulator emits).
#[derive(Clone, Debug, PartialEq)]
pub enum SimEvent {
    Heartbeat {
        uptime_secs: u64,
    },
    Crash {
        process: String,
    },
    Boot {
        slot: Slot,
        ok: bool,
    },
    Battery {
        pct: u8,
    },
    Reconnect {
        offline_secs: u64,
        ok: bool,
    },
    UpdateProgress {
        release_id: String,
        phase: UpdatePhase,
        bytes_done: u64,
        bytes_total: u64,
    },
}

/// What the device did with a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    Accepted,
    /// Refused; the reason starts with the attack name when a manifest check failed.
    Rejected {
        reason: String,
        attack: Option<Attack>,
    },
    /// This command id was already handled: no second effect.
    Duplicate,
}

/// One thing the device publishes, stamped with the simulated time it happened.
#[derive(Clone, Debug, PartialEq)]
pub enum SimMessage {
    Status {
        ts: Timestamp,
        status: StatusSnapshot,
    },
    Telemetry {
        ts: Timestamp,
        seq: u64,
        event: SimEvent,
    },
    Ack {
        ts: Timestamp,
        command_id: String,
        outcome: AckOutcome,
    },
}

/// What the console asks a simulated device to do.
#[derive(Clone, Debug, PartialEq)]
pub enum SimCommand {
    /// Install a release; `manifest_bytes` is the signed manifest as received.
    Offer {
        release_id: String,
        manifest_bytes: Vec<u8>,
    },
    /// Go back to the previous slot.
    RollBack { release_id: String, reason: String },
    /// Stop an offer that has not been installed yet.
    Cancel { release_id: String },
}

/// Timings and baseline noise rates of the simulated devices. Rates are per simulated hour.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub heartbeat_secs: i64,
    /// The longest a device goes without publishing its whole status while online (a status
    /// heartbeat, 0 for none): a status lost on the way is repaired within this time, since
    /// nothing else would ever send it again (see `docs/PROTOCOL.md`, `DeviceStatus`).
    pub status_every_secs: i64,
    pub install_secs: i64,
    pub reboot_secs: i64,
    /// After booting a new slot, the device confirms it only if it stays healthy this long.
    pub health_window_secs: i64,
    /// Crashes within the health window that count as a crash loop.
    pub crash_loop_crashes: u32,
    /// Seconds between crashes of a crash-looping firmware.
    pub crash_loop_interval_secs: i64,
    /// A stalled download is given up after this long without progress.
    pub stall_timeout_secs: i64,
    /// Baseline crash rate of a healthy device.
    pub crash_per_hour: f64,
    /// Baseline unplanned reboots.
    pub reboot_per_hour: f64,
    /// Battery drain while on battery, and charge rate while charging.
    pub battery_drain_pct_per_hour: f64,
    pub battery_charge_pct_per_hour: f64,
    /// Below this battery level a device on battery defers downloads and installs.
    pub low_battery_pct: f64,
    /// Chance per hour that a device on low battery is plugged in.
    pub plug_in_per_hour: f64,
    /// Multiplies the outage rates of [`outages_per_hour`] (0 turns outages off).
    pub outage_factor: f64,
    /// Longest simulated step taken inside one tick (events are resolved at this granularity).
    pub max_step_secs: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 300,
            status_every_secs: 3600,
            install_secs: 90,
            reboot_secs: 45,
            health_window_secs: 600,
            crash_loop_crashes: 3,
            crash_loop_interval_secs: 60,
            stall_timeout_secs: 1800,
            crash_per_hour: 0.01,
            reboot_per_hour: 0.002,
            battery_drain_pct_per_hour: 1.5,
            battery_charge_pct_per_hour: 20.0,
            low_battery_pct: 20.0,
            plug_in_per_hour: 0.3,
            outage_factor: 1.0,
            max_step_secs: 5,
        }
    }
}

/// Link bandwidth by connectivity, bytes per second (a typical sustained rate, not a peak).
pub const fn bandwidth_bytes_per_sec(c: Connectivity) -> u64 {
    match c {
        Connectivity::Ethernet => 12_000_000,
        Connectivity::Wifi => 3_000_000,
        Connectivity::Cellular => 600_000,
        Connectivity::Roaming => 120_000,
    }
}

/// Outages (tunnels, dead spots, network drops) per hour by connectivity.
const fn outages_per_hour(c: Connectivity) -> f64 {
    match c {
        Connectivity::Ethernet => 0.01,
        Connectivity::Wifi => 0.1,
        Connectivity::Cellular => 0.6,
        Connectivity::Roaming => 1.0,
    }
}

/// Processes a baseline crash names.
const PROCESSES: [&str; 4] = ["telemetryd", "gps", "modem-manager", "ui"];

/// The update a device is working on.
#[derive(Clone, Debug)]
struct Job {
    command_id: String,
    manifest: VerifiedManifest,
    phase: UpdatePhase,
    bytes_total: u64,
    bytes_done: u64,
    /// When the current phase's work ends (install, reboot, health window).
    phase_until: Timestamp,
    /// Effects rolled for this release on this device when it was offered.
    effects: Vec<FaultEffect>,
    /// Last time the download made progress (for the stall timeout).
    last_progress: Timestamp,
    /// Whether the new slot has booted (then `phase_until` is the end of the health window).
    booted: bool,
    crashes_in_window: u32,
    next_crash: Timestamp,
    last_reported_pct: u8,
    /// Whether the device has had a link since the new slot booted: without one by the end of
    /// the health window it reverts (the A/B rule: an update that cuts the device off from the
    /// server is not confirmed).
    link_since_boot: bool,
}

impl Job {
    fn has(&self, name: &str) -> bool {
        self.effects.iter().any(|e| e.name() == name)
    }
}

/// What the inactive slot holds: the release the device ran before its last slot switch.
#[derive(Clone, Debug)]
struct SlotImage {
    components: SmallMap<Version>,
    counter: u64,
}

/// One simulated device. See the module docs.
#[derive(Debug)]
pub struct SimDevice {
    device: Device,
    state: DeviceMemory,
    trust: Arc<TrustedKeys>,
    faults: Arc<Faults>,
    config: SimConfig,
    rng: SeededRng,
    seen_commands: BTreeSet<String>,
    job: Option<Job>,
    /// The last update's outcome, kept for the status after the job ends.
    last_update: UpdateInfo,
    /// Faults of the running release that act after install (battery drain, reconnects).
    running_effects: Vec<FaultEffect>,
    previous: Option<SlotImage>,
    battery_level_pct: Option<f64>,
    offline_until: Option<Timestamp>,
    offline_since: Timestamp,
    /// Commands that arrived while offline; applied on reconnect, in arrival order.
    pending_commands: VecDeque<(String, SimCommand)>,
    outbox: VecDeque<SimMessage>,
    seq: u64,
    clock: Timestamp,
    booted_at: Timestamp,
    next_heartbeat: Timestamp,
    /// When the status is published again if nothing changes before (see
    /// [`SimConfig::status_every_secs`]).
    next_status: Timestamp,
}

impl SimDevice {
    /// A device as the fleet describes it, at simulated time `now`. `index` selects its random
    /// stream: `SeededRng::derive(seed, index)`. Its installed release counter starts at 0 (no
    /// signed install yet). It queues its first status at once.
    pub fn new(
        device: Device,
        index: u64,
        seed: u64,
        trust: Arc<TrustedKeys>,
        faults: Arc<Faults>,
        config: SimConfig,
        now: Timestamp,
    ) -> Self {
        let state = DeviceMemory::new(device.model.clone(), 0);
        let battery_level_pct = device.battery_pct.map(f64::from);
        let mut sim = Self {
            device,
            state,
            trust,
            faults,
            config,
            rng: SeededRng::derive(seed, index),
            seen_commands: BTreeSet::new(),
            job: None,
            last_update: UpdateInfo {
                phase: UpdatePhase::Idle,
                release_id: None,
                command_id: None,
                progress_pct: None,
                reason: None,
            },
            running_effects: Vec::new(),
            previous: None,
            battery_level_pct,
            offline_until: None,
            offline_since: now,
            pending_commands: VecDeque::new(),
            outbox: VecDeque::new(),
            seq: 0,
            clock: now,
            booted_at: now,
            next_heartbeat: now,
            next_status: now,
        };
        sim.next_heartbeat = Timestamp(now.0 + sim.jitter(sim.config.heartbeat_secs));
        sim.push_status();
        // Spread by index rather than by a random draw (the seeded streams stay as they were),
        // so a fleet that started together does not republish in one burst.
        if sim.config.status_every_secs > 0 {
            let every = sim.config.status_every_secs.unsigned_abs();
            let offset = index.wrapping_mul(7919) % every;
            sim.next_status = Timestamp(
                sim.next_status
                    .0
                    .saturating_sub(i64::try_from(offset).unwrap_or(0)),
            );
        }
        sim
    }

    /// Sets the installed release counter (a device that already took signed releases).
    #[must_use]
    pub fn with_installed_counter(mut self, counter: u64) -> Self {
        self.state.installed_counter = counter;
        self
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn id(&self) -> &str {
        &self.device.id
    }

    /// The installed release counter the device enforces against downgrades.
    pub fn installed_counter(&self) -> u64 {
        self.state.installed_counter
    }

    pub fn is_online(&self) -> bool {
        self.offline_until.is_none()
    }

    /// Bytes of the current download held so far.
    pub fn bytes_done(&self) -> Option<u64> {
        self.job.as_ref().map(|j| j.bytes_done)
    }

    /// Current update phase.
    pub fn phase(&self) -> UpdatePhase {
        self.job
            .as_ref()
            .map_or(self.last_update.phase, |j| j.phase)
    }

    /// Takes the device offline from `now` until `until` (a tunnel); downloads pause and
    /// messages wait in the outbox. Used by tests and by the outage noise.
    pub fn go_offline(&mut self, now: Timestamp, until: Timestamp) {
        if self.offline_until.is_none() {
            self.offline_since = now;
        }
        self.offline_until = Some(until.max(self.offline_until.unwrap_or(until)));
    }

    /// The next message the device publishes, oldest first. Nothing comes out while it is
    /// offline: it keeps its messages until it reconnects, as a real device buffers them.
    pub fn poll_message(&mut self) -> Option<SimMessage> {
        if self.offline_until.is_some() {
            return None;
        }
        self.outbox.pop_front()
    }

    /// A command from the console. Each command id takes effect at most once: a redelivery is
    /// acked as [`AckOutcome::Duplicate`]. A command that arrives while the device is offline is
    /// applied when it reconnects (the broker would hold it for the session).
    pub fn handle_command(&mut self, now: Timestamp, command_id: &str, command: SimCommand) {
        self.advance(now);
        if self.offline_until.is_some() {
            self.pending_commands
                .push_back((command_id.to_owned(), command));
            return;
        }
        self.apply_command(command_id, command);
    }

    /// Simulated time passes up to `now`; the device works through what happens in between in
    /// steps of at most `max_step_secs`.
    pub fn handle_tick(&mut self, now: Timestamp) {
        self.advance(now);
    }

    fn advance(&mut self, now: Timestamp) {
        let step = self.config.max_step_secs.max(1);
        while self.clock < now {
            let next = Timestamp((self.clock.0 + step).min(now.0));
            let dt = next.0 - self.clock.0;
            self.clock = next;
            self.step(dt);
        }
    }

    fn apply_command(&mut self, command_id: &str, command: SimCommand) {
        let now = self.clock;
        if !self.seen_commands.insert(command_id.to_owned()) {
            self.push_ack(command_id, AckOutcome::Duplicate);
            return;
        }
        let outcome = match command {
            SimCommand::Offer {
                release_id,
                manifest_bytes,
            } => self.offer(command_id, &release_id, &manifest_bytes, now),
            SimCommand::RollBack { release_id, reason } => self.roll_back(&release_id, &reason),
            SimCommand::Cancel { release_id } => self.cancel(&release_id),
        };
        self.push_ack(command_id, outcome);
    }

    fn offer(
        &mut self,
        command_id: &str,
        release_id: &str,
        manifest_bytes: &[u8],
        now: Timestamp,
    ) -> AckOutcome {
        if let Some(job) = &self.job {
            return AckOutcome::Rejected {
                reason: format!(
                    "busy: release {} is {:?}",
                    job.manifest.release_id(),
                    job.phase
                ),
                attack: None,
            };
        }
        let manifest = match self
            .state
            .check_offer(release_id, manifest_bytes, &self.trust, now)
        {
            Ok(m) => m,
            Err(rejection) => {
                return AckOutcome::Rejected {
                    reason: rejection.to_string(),
                    attack: Some(rejection.attack()),
                };
            }
        };
        let bytes_total = manifest.spec().download_bytes();
        if bytes_total > self.device.free_storage_bytes {
            return AckOutcome::Rejected {
                reason: format!(
                    "no space: release {release_id} needs {bytes_total} bytes, {} free",
                    self.device.free_storage_bytes
                ),
                attack: None,
            };
        }
        // Which faults fire is decided once per offer, so a device's fate is reproducible.
        let version = manifest.spec().version;
        let candidates: Vec<(FaultEffect, f64)> = self
            .faults
            .for_device(&version, &self.device)
            .map(|f| (f.effect, f.probability))
            .collect();
        let effects = candidates
            .into_iter()
            .filter(|(_, p)| self.rng.chance(*p))
            .map(|(e, _)| e)
            .collect();
        self.job = Some(Job {
            command_id: command_id.to_owned(),
            manifest,
            phase: UpdatePhase::Offered,
            bytes_total,
            bytes_done: 0,
            phase_until: now,
            effects,
            last_progress: now,
            booted: false,
            crashes_in_window: 0,
            next_crash: now,
            last_reported_pct: 0,
            link_since_boot: false,
        });
        self.push_status();
        AckOutcome::Accepted
    }

    fn roll_back(&mut self, release_id: &str, reason: &str) -> AckOutcome {
        if let Some(job) = &self.job
            && job.phase == UpdatePhase::Rebooting
        {
            let command_id = job.command_id.clone();
            self.revert(
                &command_id,
                release_id,
                format!("rollback ordered: {reason}"),
            );
            return AckOutcome::Accepted;
        }
        if self.job.is_some() {
            return AckOutcome::Rejected {
                reason: "cannot roll back while an update is being downloaded or installed"
                    .to_owned(),
                attack: None,
            };
        }
        if self.previous.is_none() {
            return AckOutcome::Rejected {
                reason: format!(
                    "no previous release in slot {}",
                    self.device.active_slot.other()
                ),
                attack: None,
            };
        }
        let command_id = self.last_update.command_id.clone().unwrap_or_default();
        self.revert(
            &command_id,
            release_id,
            format!("rollback ordered: {reason}"),
        );
        AckOutcome::Accepted
    }

    fn cancel(&mut self, release_id: &str) -> AckOutcome {
        match &self.job {
            Some(job)
                if job.manifest.release_id() == release_id
                    && matches!(
                        job.phase,
                        UpdatePhase::Offered | UpdatePhase::Downloading | UpdatePhase::Verified
                    ) =>
            {
                let command_id = job.command_id.clone();
                self.job = None;
                self.last_update = UpdateInfo {
                    phase: UpdatePhase::Idle,
                    release_id: Some(release_id.to_owned()),
                    command_id: Some(command_id),
                    progress_pct: None,
                    reason: Some("cancelled".to_owned()),
                };
                self.push_status();
                AckOutcome::Accepted
            }
            _ => AckOutcome::Rejected {
                reason: format!("no update of release {release_id} that can still be cancelled"),
                attack: None,
            },
        }
    }

    /// A uniformly jittered interval around `secs` (±20%), at least 1 s.
    fn jitter(&mut self, secs: i64) -> i64 {
        let spread = secs / 5;
        (secs + self.rng.range_inclusive(-spread, spread)).max(1)
    }

    fn per_step_chance(rate_per_hour: f64, dt: i64) -> f64 {
        (rate_per_hour * dt as f64 / 3600.0).min(1.0)
    }

    fn low_battery(&self) -> bool {
        self.device.power == PowerState::Battery
            && self
                .battery_level_pct
                .is_some_and(|b| b < self.config.low_battery_pct)
    }

    fn step(&mut self, dt: i64) {
        let now = self.clock;
        self.step_battery(dt);
        // Connectivity: outages begin and end. A step that began offline moves no bytes.
        let was_online = self.offline_until.is_none();
        if let Some(until) = self.offline_until {
            if now >= until {
                self.reconnect(now);
            }
        } else {
            let rate = outages_per_hour(self.device.connectivity) * self.config.outage_factor;
            let p = Self::per_step_chance(rate, dt);
            if self.rng.chance(p) {
                let secs = self.rng.range_inclusive(20, 600);
                self.go_offline(now, Timestamp(now.0 + secs));
            }
        }
        let online = was_online && self.offline_until.is_none();
        self.step_job(dt, online);
        // Baseline noise of a running device (the health window has its own crash model).
        if self
            .rng
            .chance(Self::per_step_chance(self.config.crash_per_hour, dt))
        {
            let process = PROCESSES[self.rng.below(PROCESSES.len() as u64) as usize];
            self.push_event(SimEvent::Crash {
                process: process.to_owned(),
            });
        }
        if self
            .rng
            .chance(Self::per_step_chance(self.config.reboot_per_hour, dt))
            && self.job.is_none()
        {
            self.booted_at = now;
            self.push_event(SimEvent::Boot {
                slot: self.device.active_slot,
                ok: true,
            });
        }
        if now >= self.next_heartbeat {
            let uptime_secs = u64::try_from(now.0 - self.booted_at.0).unwrap_or(0);
            self.push_event(SimEvent::Heartbeat { uptime_secs });
            self.next_heartbeat = Timestamp(now.0 + self.jitter(self.config.heartbeat_secs));
        }
        // The status heartbeat: a status that never reached the console (dropped while the
        // broker was away, or a retained copy a broker did not deliver to a late subscriber) is
        // otherwise never sent again once the device has nothing new to say, and the console
        // would wait for it for ever. Offline, the reconnect publishes the status anyway.
        if self.config.status_every_secs > 0
            && self.offline_until.is_none()
            && now >= self.next_status
        {
            self.push_status();
        }
    }

    fn step_battery(&mut self, dt: i64) {
        let Some(level) = self.battery_level_pct else {
            return;
        };
        let hours = dt as f64 / 3600.0;
        let before = level.floor();
        let mut level = level;
        match self.device.power {
            PowerState::Battery => {
                let extra: f64 = self
                    .running_effects
                    .iter()
                    .map(|e| match e {
                        FaultEffect::BatteryDrain { pct_per_hour } => *pct_per_hour,
                        _ => 0.0,
                    })
                    .sum();
                let noise = self.rng.normal(1.0, 0.1).max(0.0);
                level -= (self.config.battery_drain_pct_per_hour * noise + extra) * hours;
                if level < self.config.low_battery_pct
                    && self
                        .rng
                        .chance(Self::per_step_chance(self.config.plug_in_per_hour, dt))
                {
                    self.device.power = PowerState::Charging;
                }
            }
            PowerState::Charging => {
                level += self.config.battery_charge_pct_per_hour * hours;
                if level >= 100.0 {
                    self.device.power = PowerState::Battery;
                }
            }
            PowerState::Mains => {}
        }
        let level = level.clamp(0.0, 100.0);
        self.battery_level_pct = Some(level);
        if level.floor() != before {
            self.push_event(SimEvent::Battery {
                pct: battery_pct(level),
            });
        }
    }

    fn reconnect(&mut self, now: Timestamp) {
        let offline_secs = u64::try_from(now.0 - self.offline_since.0).unwrap_or(0);
        let failing = self
            .running_effects
            .contains(&FaultEffect::ReconnectFailure);
        if failing && self.rng.chance(0.8) {
            // The attempt fails; the device retries later. The failure is reported on the
            // next successful reconnect, since it cannot publish while offline.
            let retry = self.rng.range_inclusive(60, 300);
            self.offline_until = Some(Timestamp(now.0 + retry));
            let seq = self.next_seq();
            self.outbox.push_back(SimMessage::Telemetry {
                ts: now,
                seq,
                event: SimEvent::Reconnect {
                    offline_secs,
                    ok: false,
                },
            });
            return;
        }
        self.offline_until = None;
        if let Some(job) = self.job.as_mut()
            && job.booted
        {
            job.link_since_boot = true;
        }
        self.push_event(SimEvent::Reconnect {
            offline_secs,
            ok: true,
        });
        // As a real device does on every new session: its whole state again, so a console
        // that lost messages while the device (or the broker) was away catches up.
        self.push_status();
        while let Some((id, command)) = self.pending_commands.pop_front() {
            self.apply_command(&id, command);
        }
    }

    #[allow(clippy::too_many_lines)]
    fn step_job(&mut self, dt: i64, online: bool) {
        let now = self.clock;
        let low_battery = self.low_battery();
        let bandwidth = bandwidth_bytes_per_sec(self.device.connectivity);
        let Some(job) = self.job.as_mut() else {
            return;
        };
        match job.phase {
            UpdatePhase::Offered => {
                if online && !low_battery {
                    job.phase = UpdatePhase::Downloading;
                    job.last_progress = now;
                    self.push_status();
                    self.push_progress();
                }
            }
            UpdatePhase::Downloading => {
                let stalled = job.has("download_stall") && job.bytes_done * 2 >= job.bytes_total;
                if online && !stalled {
                    let gained = bandwidth.saturating_mul(u64::try_from(dt).unwrap_or(0));
                    job.bytes_done = (job.bytes_done + gained).min(job.bytes_total);
                    job.last_progress = now;
                }
                if stalled && now.0 - job.last_progress.0 >= self.config.stall_timeout_secs {
                    self.finish_download(true);
                    return;
                }
                let Some(job) = self.job.as_mut() else {
                    return;
                };
                if job.bytes_done >= job.bytes_total {
                    self.finish_download(false);
                    return;
                }
                let pct = progress_pct(job.bytes_done, job.bytes_total);
                if pct >= job.last_reported_pct.saturating_add(10) {
                    job.last_reported_pct = pct - pct % 10;
                    self.push_status();
                    self.push_progress();
                }
            }
            UpdatePhase::Verified => {
                if !low_battery {
                    job.phase = UpdatePhase::Installing;
                    job.phase_until = Timestamp(now.0 + self.config.install_secs);
                    self.push_status();
                }
            }
            UpdatePhase::Installing => {
                if now >= job.phase_until {
                    self.finish_install();
                }
            }
            UpdatePhase::Rebooting => self.step_health(now),
            UpdatePhase::Idle
            | UpdatePhase::Confirmed
            | UpdatePhase::Failed
            | UpdatePhase::Reverted => {}
        }
    }

    /// The download is over: check what was received against the signed digests.
    fn finish_download(&mut self, stalled: bool) {
        let Some(job) = self.job.as_mut() else {
            return;
        };
        let delivered = delivered_digests(&job.manifest, stalled.then_some(job.bytes_done));
        match job.manifest.check_artifacts(&delivered) {
            Ok(()) => {
                job.phase = UpdatePhase::Verified;
                self.push_status();
                self.push_progress();
            }
            Err(rejection) => {
                let reason = if stalled {
                    format!("download stalled, then {rejection}")
                } else {
                    rejection.to_string()
                };
                self.fail(reason);
            }
        }
    }

    fn finish_install(&mut self) {
        let now = self.clock;
        let Some(job) = self.job.as_ref() else {
            return;
        };
        if job.has("install_failure") {
            let slot = self.device.active_slot.other();
            self.fail(format!(
                "install failed: writing slot {slot} did not verify"
            ));
            return;
        }
        let manifest = job.manifest.clone();
        let delivered = delivered_digests(&manifest, None);
        let before = SlotImage {
            components: self.device.components.clone(),
            counter: self.state.installed_counter,
        };
        if let Err(rejection) = self.state.install(&manifest, &delivered, now) {
            self.fail(rejection.to_string());
            return;
        }
        self.previous = Some(before);
        self.device.active_slot = self.device.active_slot.other();
        for (component, version) in manifest.spec().provides.iter() {
            self.device.components.insert(component, *version);
        }
        let reboot_until = Timestamp(now.0 + self.config.reboot_secs);
        if let Some(job) = self.job.as_mut() {
            job.phase = UpdatePhase::Rebooting;
            job.phase_until = reboot_until;
            job.booted = false;
            job.crashes_in_window = 0;
        }
        self.push_status();
    }

    /// The reboot, then the health window: the device confirms the new slot only if it boots
    /// and stays up without a crash loop until the window ends.
    fn step_health(&mut self, now: Timestamp) {
        let Some(job) = self.job.as_mut() else {
            return;
        };
        let release_id = job.manifest.release_id().to_owned();
        let command_id = job.command_id.clone();
        if !job.booted {
            // phase_until is the end of the reboot: the new slot boots, or fails its boot check.
            if now < job.phase_until {
                return;
            }
            let slot = self.device.active_slot;
            if job.has("boot_failure") {
                self.push_event(SimEvent::Boot { slot, ok: false });
                self.revert(
                    &command_id,
                    &release_id,
                    format!("boot failure: slot {slot} failed its boot health check"),
                );
                return;
            }
            job.booted = true;
            job.phase_until = Timestamp(now.0 + self.config.health_window_secs);
            job.link_since_boot = self.offline_until.is_none();
            if job.has("link_loss") {
                // The modem of the new slot never registers: offline until the slot changes.
                job.link_since_boot = false;
                if self.offline_until.is_none() {
                    self.offline_since = now;
                }
                self.offline_until = Some(Timestamp(i64::MAX / 2));
            }
            job.next_crash = if job.has("crash_loop") {
                Timestamp(now.0 + self.config.crash_loop_interval_secs)
            } else {
                Timestamp(i64::MAX)
            };
            self.booted_at = now;
            self.push_event(SimEvent::Boot { slot, ok: true });
            return;
        }
        // Inside the health window: phase_until is its end.
        if now >= job.next_crash {
            job.crashes_in_window += 1;
            job.next_crash = Timestamp(now.0 + self.config.crash_loop_interval_secs);
            let crashes = job.crashes_in_window;
            self.push_event(SimEvent::Crash {
                process: "firmware".to_owned(),
            });
            if crashes >= self.config.crash_loop_crashes {
                let window = self.config.health_window_secs;
                self.revert(
                    &command_id,
                    &release_id,
                    format!(
                        "crash loop: firmware crashed {crashes} times within the {window} s health window"
                    ),
                );
            }
            return;
        }
        if now >= job.phase_until && !job.link_since_boot {
            let window = self.config.health_window_secs;
            let link_lost = job.has("link_loss");
            self.revert(
                &command_id,
                &release_id,
                format!(
                    "link lost after the update: no connection within the {window} s health window"
                ),
            );
            if link_lost {
                // Back on the previous slot, its modem registers again.
                self.offline_until = Some(Timestamp(now.0 + 30));
            }
            return;
        }
        if now >= job.phase_until {
            let effects = job.effects.clone();
            self.job = None;
            self.running_effects = effects;
            self.last_update = UpdateInfo {
                phase: UpdatePhase::Confirmed,
                release_id: Some(release_id),
                command_id: Some(command_id),
                progress_pct: Some(100),
                reason: None,
            };
            self.push_status();
        }
    }

    /// Switches back to the previous slot and its release.
    fn revert(&mut self, command_id: &str, release_id: &str, reason: String) {
        if let Some(previous) = self.previous.take() {
            self.device.active_slot = self.device.active_slot.other();
            self.device.components = previous.components;
            self.state.installed_counter = previous.counter;
            self.booted_at = self.clock;
            self.push_event(SimEvent::Boot {
                slot: self.device.active_slot,
                ok: true,
            });
        }
        self.job = None;
        self.running_effects.clear();
        self.last_update = UpdateInfo {
            phase: UpdatePhase::Reverted,
            release_id: Some(release_id.to_owned()),
            command_id: Some(command_id.to_owned()),
            progress_pct: None,
            reason: Some(reason),
        };
        self.push_status();
    }

    fn fail(&mut self, reason: String) {
        let Some(job) = self.job.take() else {
            return;
        };
        self.last_update = UpdateInfo {
            phase: UpdatePhase::Failed,
            release_id: Some(job.manifest.release_id().to_owned()),
            command_id: Some(job.command_id),
            progress_pct: Some(progress_pct(job.bytes_done, job.bytes_total)),
            reason: Some(reason),
        };
        self.push_status();
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn push_event(&mut self, event: SimEvent) {
        let seq = self.next_seq();
        self.outbox.push_back(SimMessage::Telemetry {
            ts: self.clock,
            seq,
            event,
        });
    }

    fn push_progress(&mut self) {
        if let Some(job) = &self.job {
            let event = SimEvent::UpdateProgress {
                release_id: job.manifest.release_id().to_owned(),
                phase: job.phase,
                bytes_done: job.bytes_done,
                bytes_total: job.bytes_total,
            };
            self.push_event(event);
        }
    }

    fn push_ack(&mut self, command_id: &str, outcome: AckOutcome) {
        self.outbox.push_back(SimMessage::Ack {
            ts: self.clock,
            command_id: command_id.to_owned(),
            outcome,
        });
    }

    /// The status as it would be published now.
    pub fn status(&self) -> StatusSnapshot {
        let update = match &self.job {
            Some(job) => UpdateInfo {
                phase: job.phase,
                release_id: Some(job.manifest.release_id().to_owned()),
                command_id: Some(job.command_id.clone()),
                progress_pct: Some(progress_pct(job.bytes_done, job.bytes_total)),
                reason: None,
            },
            None => self.last_update.clone(),
        };
        StatusSnapshot {
            active_slot: self.device.active_slot,
            components: self.device.components.clone(),
            update,
            battery_pct: self.battery_level_pct.map(battery_pct),
            power: self.device.power,
            connectivity: self.device.connectivity,
            metered: self.device.metered,
            free_storage_bytes: self.device.free_storage_bytes,
            position: self.device.position,
        }
    }

    fn push_status(&mut self) {
        let status = self.status();
        self.outbox.push_back(SimMessage::Status {
            ts: self.clock,
            status,
        });
        self.next_status = Timestamp(self.clock.0.saturating_add(self.config.status_every_secs));
    }
}

/// What the device measured while receiving the artifacts: the signed digests, or, for a download
/// cut short at `truncated_at` bytes, the first artifact short by what is missing.
fn delivered_digests(
    manifest: &VerifiedManifest,
    truncated_at: Option<u64>,
) -> Vec<ArtifactDigest> {
    let mut remaining = truncated_at;
    manifest
        .spec()
        .artifacts
        .iter()
        .map(|a| {
            let length_bytes = match remaining.as_mut() {
                Some(r) => {
                    let got = (*r).min(a.length_bytes);
                    *r -= got;
                    got
                }
                None => a.length_bytes,
            };
            let sha256 = if length_bytes == a.length_bytes {
                a.sha256.clone()
            } else {
                // A short file hashes to something else; any other 64 hex digits stand for it.
                "0".repeat(64)
            };
            ArtifactDigest {
                name: a.name.clone(),
                length_bytes,
                sha256,
            }
        })
        .collect()
}

fn progress_pct(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 100;
    }
    u8::try_from(done.min(total) * 100 / total).unwrap_or(100)
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn battery_pct(level: f64) -> u8 {
    level.clamp(0.0, 100.0).round() as u8
}
