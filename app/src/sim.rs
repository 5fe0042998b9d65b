//! The simulated fleet on the wire: every device of a fleet as a [`SimDevice`], driven by
//! commands received over MQTT and by a simulated clock, publishing its status, telemetry and
//! acks in the protocol of `docs/PROTOCOL.md`.
//!
//! One MQTT connection carries the whole simulated fleet: it subscribes to
//! `{prefix}/devices/+/commands` and publishes on each device's own topics. Real devices would
//! each hold their own connection; for the console the traffic is the same, and one connection
//! lets a laptop simulate thousands of devices.
//!
//! Simulated time is `start + elapsed wall time × time_scale`. The artifact download is modelled
//! by length and bandwidth in the core ([`convoy_core::devsim`]); no artifact bytes are fetched
//! over HTTP.

use anyhow::{Context, Result, bail};
use convoy_core::devsim::{
    AckOutcome, Faults, SimCommand, SimConfig, SimDevice, SimEvent, SimMessage, StatusSnapshot,
    UpdatePhase,
};
use convoy_core::fleet::Fleet;
use convoy_core::manifest::TrustedKeys;
use convoy_core::time::Timestamp;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::link::mqtt::{self, LinkConfig, LinkEvent, LinkHandle, Role};
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
    pub ticks: u64,
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
        CommandAction::Offer {
            release_id,
            manifest,
        } => SimCommand::Offer {
            release_id,
            manifest_bytes: serde_json::to_vec(&manifest)
                .context("re-encoding the offered manifest")?,
        },
        CommandAction::RollBack { release_id, reason } => {
            SimCommand::RollBack { release_id, reason }
        }
        CommandAction::Cancel { release_id } => SimCommand::Cancel { release_id },
    };
    Ok((device_id, command.command_id, sim))
}

async fn publish_all(link: &LinkHandle, out: &mut Vec<(String, Vec<u8>, bool)>) -> Result<u64> {
    let n = out.len() as u64;
    for (topic, payload, retain) in out.drain(..) {
        link.publish(topic, payload, retain).await?;
    }
    Ok(n)
}

/// Runs the simulated fleet until `stop` fires (or, with `None`, for ever).
pub async fn run(
    options: SimOptions,
    mut stop: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<SimSummary> {
    if !(options.time_scale.is_finite() && options.time_scale > 0.0) {
        bail!(
            "--time-scale must be a positive number, got {}",
            options.time_scale
        );
    }
    let topics = options.topics.clone();
    let filter = format!("{}/devices/+/commands", topics.prefix());
    let (mut link, mut rx): (LinkHandle, mpsc::Receiver<LinkEvent>) = mqtt::spawn(
        &LinkConfig::new(&options.broker_url, &options.client_id),
        topics.clone(),
        &Role::Filters(vec![filter]),
    )?;
    link.wait_connected(Duration::from_secs(30)).await?;
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
            _ = interval.tick() => {
                let now = fleet.now();
                fleet.tick(now);
                summary.ticks += 1;
            }
            event = rx.recv() => {
                let Some(event) = event else {
                    bail!("the MQTT link task stopped");
                };
                if let LinkEvent::Raw { topic, payload } = event {
                    let now = fleet.now();
                    match decode_command(&topics, &topic, &payload) {
                        Ok((device_id, command_id, command)) => {
                            if fleet.command(now, &device_id, &command_id, command) {
                                summary.commands += 1;
                            } else {
                                summary.bad_commands += 1;
                                eprintln!("sim: command {command_id} for unknown device {device_id}");
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
        summary.published += publish_all(&link, &mut out).await?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (`fuzz/corpus/sim_command/regression-invalid-command-id`): a command
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
