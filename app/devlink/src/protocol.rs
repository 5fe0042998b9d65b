//! Convoy's device protocol, version 1: topics under a configurable prefix and strictly
//! validated JSON payloads. `docs/PROTOCOL.md` documents every payload with an example.
//!
//! Everything inbound goes through [`decode_inbound`], which never panics: a payload that is
//! oversized, not UTF-8, not JSON, of an unknown protocol version, on an unknown topic, for a
//! different device than its topic names, or with an out-of-range field is turned into a
//! [`InboundRejection`] naming the reason and the device, which callers count in [`RejectionStats`].
//! This module does no I/O and keeps no connection state.

use convoy_core::fleet::{Connectivity, GeoPoint, PowerState, Slot, SmallMap};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The protocol version this build speaks; every payload carries it as `"v"`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Payloads larger than this are rejected unread (a manifest with a few artifacts fits easily).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
pub use convoy_core::release::{MAX_ID_LEN, is_valid_id};
/// Timestamps further than this in the future (clock skew) are rejected.
pub const MAX_CLOCK_SKEW_SECS: i64 = 24 * 3600;

/// Topic layout under a prefix such as `convoy/v1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

/// What a topic addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicKind {
    /// `{prefix}/devices/{id}/status`, retained, device → console.
    Status { device_id: String },
    /// `{prefix}/devices/{id}/telemetry`, device → console.
    Telemetry { device_id: String },
    /// `{prefix}/devices/{id}/acks`, device → console.
    Ack { device_id: String },
    /// `{prefix}/devices/{id}/commands`, console → device.
    Command { device_id: String },
    /// `{prefix}/releases/{id}/manifest`, retained, console → devices.
    Manifest { release_id: String },
}

/// A topic prefix that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid topic prefix {0:?}: use levels of letters, digits, '-', '_' or '.', separated by '/', e.g. convoy/v1"
)]
pub struct PrefixError(pub String);

impl Topics {
    /// The default prefix, `convoy/v1`.
    pub fn default_prefix() -> Self {
        Self {
            prefix: format!("convoy/v{PROTOCOL_VERSION}"),
        }
    }

    pub fn new(prefix: &str) -> Result<Self, PrefixError> {
        let ok = !prefix.is_empty() && prefix.split('/').all(is_valid_id);
        if ok {
            Ok(Self {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(PrefixError(prefix.to_owned()))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn status(&self, device_id: &str) -> String {
        format!("{}/devices/{device_id}/status", self.prefix)
    }

    pub fn telemetry(&self, device_id: &str) -> String {
        format!("{}/devices/{device_id}/telemetry", self.prefix)
    }

    pub fn acks(&self, device_id: &str) -> String {
        format!("{}/devices/{device_id}/acks", self.prefix)
    }

    pub fn commands(&self, device_id: &str) -> String {
        format!("{}/devices/{device_id}/commands", self.prefix)
    }

    pub fn manifest(&self, release_id: &str) -> String {
        format!("{}/releases/{release_id}/manifest", self.prefix)
    }

    /// The filters a console subscribes to: every device's status, telemetry and acks.
    pub fn console_subscriptions(&self) -> [String; 3] {
        ["status", "telemetry", "acks"].map(|leaf| format!("{}/devices/+/{leaf}", self.prefix))
    }

    /// The filters a device subscribes to: its commands and every release manifest.
    pub fn device_subscriptions(&self, device_id: &str) -> [String; 2] {
        [
            self.commands(device_id),
            format!("{}/releases/+/manifest", self.prefix),
        ]
    }

    /// Parses a topic under this prefix; ids in topics must be valid ids.
    pub fn parse(&self, topic: &str) -> Option<TopicKind> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["devices", id, leaf] if is_valid_id(id) => {
                let device_id = (*id).to_owned();
                match *leaf {
                    "status" => Some(TopicKind::Status { device_id }),
                    "telemetry" => Some(TopicKind::Telemetry { device_id }),
                    "acks" => Some(TopicKind::Ack { device_id }),
                    "commands" => Some(TopicKind::Command { device_id }),
                    _ => None,
                }
            }
            ["releases", id, "manifest"] if is_valid_id(id) => Some(TopicKind::Manifest {
                release_id: (*id).to_owned(),
            }),
            _ => None,
        }
    }
}

/// Where a device is in taking an update, as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Idle,
    Offered,
    Downloading,
    Verified,
    Installing,
    Rebooting,
    /// Booted the new slot and passed its health check.
    Confirmed,
    Failed,
    /// Went back to the previous slot (health check failed or rollback ordered).
    Reverted,
}

/// The update part of a status report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateStatus {
    pub state: UpdateState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_pct: Option<u8>,
    /// Why it failed or reverted, in the device's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `…/status`: the device's whole state, published retained on every change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceStatus {
    pub v: u32,
    pub device_id: String,
    pub ts: Timestamp,
    pub active_slot: Slot,
    pub components: SmallMap<Version>,
    pub update: UpdateStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<u8>,
    pub power: PowerState,
    pub connectivity: Connectivity,
    pub metered: bool,
    pub free_storage_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<GeoPoint>,
}

impl DeviceStatus {
    /// Copies what the device reports about itself onto the fleet's record of it: components,
    /// slot, power, link, storage, and the position when it sent one. Update state and
    /// `last_seen` are the caller's: the engine and the console keep them differently.
    pub fn apply_to(&self, device: &mut convoy_core::fleet::Device) {
        device.components.clone_from(&self.components);
        device.active_slot = self.active_slot;
        device.battery_pct = self.battery_pct;
        device.power = self.power;
        device.connectivity = self.connectivity;
        device.metered = self.metered;
        device.free_storage_bytes = self.free_storage_bytes;
        if let Some(p) = self.position {
            device.position = p;
        }
    }

    /// What this report would change in the fleet's record of the device's software: each
    /// component whose version differs (added, changed or gone) and the active slot, each with
    /// its old and new value; `None` when it changes neither. The engine records it as a
    /// `status.changed` device event, so the history shows which report rewrote what.
    pub fn software_change(
        &self,
        device: &convoy_core::fleet::Device,
    ) -> Option<serde_json::Value> {
        let mut components = serde_json::Map::new();
        for (name, old) in device.components.iter() {
            let new = self.components.get(name);
            if new != Some(old) {
                components.insert(
                    name.to_owned().to_string(),
                    serde_json::json!({ "old": old, "new": new }),
                );
            }
        }
        for (name, new) in self.components.iter() {
            if device.components.get(name).is_none() {
                components.insert(
                    name.to_owned().to_string(),
                    serde_json::json!({ "old": null, "new": new }),
                );
            }
        }
        let slot_changed = device.active_slot != self.active_slot;
        if components.is_empty() && !slot_changed {
            return None;
        }
        let mut change = serde_json::Map::new();
        if !components.is_empty() {
            change.insert("components".into(), components.into());
        }
        if slot_changed {
            change.insert(
                "active_slot".into(),
                serde_json::json!({ "old": device.active_slot, "new": self.active_slot }),
            );
        }
        change.insert("reported_at".into(), serde_json::json!(self.ts));
        Some(change.into())
    }
}

/// One telemetry event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TelemetryEvent {
    /// The device is alive.
    Heartbeat { uptime_secs: u64 },
    /// A process crashed.
    Crash { process: String },
    /// The device booted; `ok` is false when the boot health check failed.
    Boot { slot: Slot, ok: bool },
    /// Battery level sample.
    Battery { pct: u8 },
    /// A reconnect after an outage; `ok` is false when a reconnect attempt failed.
    Reconnect { offline_secs: u64, ok: bool },
    /// Download or install progress of an update.
    UpdateProgress {
        release_id: String,
        state: UpdateState,
        bytes_done: u64,
        bytes_total: u64,
    },
    /// A user-defined metric sample.
    Metric { name: String, value: f64 },
}

/// `…/telemetry`: one event with a per-device sequence number (for loss and duplicate detection).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    pub v: u32,
    pub device_id: String,
    pub ts: Timestamp,
    pub seq: u64,
    pub event: TelemetryEvent,
}

/// What a device did with a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckResult {
    /// Received and accepted; work is under way.
    Accepted,
    /// Refused (e.g. the manifest failed verification); `reason` says why.
    Rejected,
    /// Already applied under this command id: a redelivery, ignored.
    Duplicate,
}

/// `…/acks`: a device's answer to a command, by command id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandAck {
    pub v: u32,
    pub device_id: String,
    pub command_id: String,
    pub ts: Timestamp,
    pub result: AckResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the console asks a device to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommandAction {
    /// Install a release: the signed manifest travels with the offer, and the device verifies it
    /// with its own trusted keys before downloading anything.
    Offer {
        release_id: String,
        manifest: serde_json::Value,
    },
    /// Go back to the previous slot.
    RollBack { release_id: String, reason: String },
    /// Stop an offer that has not been installed yet.
    Cancel { release_id: String },
}

/// `…/commands`: published with QoS 1; devices apply each `command_id` at most once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub v: u32,
    pub command_id: String,
    pub device_id: String,
    pub issued_at: Timestamp,
    pub action: CommandAction,
}

/// A validated inbound message.
#[derive(Clone, Debug, PartialEq)]
pub enum Inbound {
    Status(DeviceStatus),
    Telemetry(Telemetry),
    Ack(CommandAck),
}

impl Inbound {
    pub fn device_id(&self) -> &str {
        match self {
            Inbound::Status(s) => &s.device_id,
            Inbound::Telemetry(t) => &t.device_id,
            Inbound::Ack(a) => &a.device_id,
        }
    }
}

/// Why an inbound message was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    Oversize,
    NotUtf8,
    MalformedJson,
    UnknownVersion,
    UnknownTopic,
    /// The payload's `device_id` is not the device its topic names (spoofing or a bug).
    DeviceMismatch,
    /// The JSON has the wrong shape: a missing, unknown or mistyped field.
    InvalidShape,
    /// A field is well-typed but out of range (battery 140 %, a timestamp a week ahead).
    InvalidValue,
}

impl RejectReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::Oversize => "oversize",
            RejectReason::NotUtf8 => "not_utf8",
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::UnknownVersion => "unknown_version",
            RejectReason::UnknownTopic => "unknown_topic",
            RejectReason::DeviceMismatch => "device_mismatch",
            RejectReason::InvalidShape => "invalid_shape",
            RejectReason::InvalidValue => "invalid_value",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected inbound message: why, from which device (when the topic names one), and detail
/// naming the field or part that was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rejected message on {topic:?} ({reason}): {detail}")]
pub struct InboundRejection {
    pub reason: RejectReason,
    pub topic: String,
    pub device_id: Option<String>,
    pub detail: String,
}

/// Validates and decodes one inbound message. `now` bounds timestamps (clock skew).
pub fn decode_inbound(
    topics: &Topics,
    topic: &str,
    payload: &[u8],
    now: Timestamp,
) -> Result<Inbound, InboundRejection> {
    let kind = topics.parse(topic);
    let device_id = match &kind {
        Some(
            TopicKind::Status { device_id }
            | TopicKind::Telemetry { device_id }
            | TopicKind::Ack { device_id }
            | TopicKind::Command { device_id },
        ) => Some(device_id.clone()),
        _ => None,
    };
    let reject = |reason: RejectReason, detail: String| InboundRejection {
        reason,
        topic: truncate(topic, 200),
        device_id: device_id.clone(),
        detail,
    };
    let Some(
        kind @ (TopicKind::Status { .. } | TopicKind::Telemetry { .. } | TopicKind::Ack { .. }),
    ) = kind
    else {
        return Err(reject(
            RejectReason::UnknownTopic,
            "not a device status, telemetry or ack topic".into(),
        ));
    };
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(reject(
            RejectReason::Oversize,
            format!("{} bytes, limit {MAX_PAYLOAD_BYTES}", payload.len()),
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        reject(
            RejectReason::NotUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let value: serde_json::Value = convoy_core::strict_json::from_str(text)
        .map_err(|e| reject(RejectReason::MalformedJson, e.to_string()))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(reject(
                RejectReason::UnknownVersion,
                format!("protocol version {v}, this console speaks {PROTOCOL_VERSION}"),
            ));
        }
        None => {
            return Err(reject(
                RejectReason::InvalidShape,
                "missing or non-numeric field `v`".into(),
            ));
        }
    }
    let shape = |e: serde_json::Error| reject(RejectReason::InvalidShape, e.to_string());
    let inbound = match kind {
        TopicKind::Status { .. } => Inbound::Status(serde_json::from_value(value).map_err(shape)?),
        TopicKind::Telemetry { .. } => {
            Inbound::Telemetry(serde_json::from_value(value).map_err(shape)?)
        }
        _ => Inbound::Ack(serde_json::from_value(value).map_err(shape)?),
    };
    if Some(inbound.device_id()) != device_id.as_deref() {
        return Err(reject(
            RejectReason::DeviceMismatch,
            format!(
                "payload device_id {:?} on the topic of another device",
                truncate(inbound.device_id(), 64)
            ),
        ));
    }
    check_values(&inbound, now).map_err(|detail| reject(RejectReason::InvalidValue, detail))?;
    Ok(inbound)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn check_values(inbound: &Inbound, now: Timestamp) -> Result<(), String> {
    let check_ts = |field: &str, ts: Timestamp| {
        if ts.secs() < 0 || ts.secs_since(now) > MAX_CLOCK_SKEW_SECS {
            Err(format!(
                "field `{field}`: timestamp {} is out of range",
                ts.secs()
            ))
        } else {
            Ok(())
        }
    };
    let check_pct = |field: &str, pct: Option<u8>| match pct {
        Some(p) if p > 100 => Err(format!("field `{field}`: {p} is over 100")),
        _ => Ok(()),
    };
    let check_id = |field: &str, id: &str| {
        if is_valid_id(id) {
            Ok(())
        } else {
            Err(format!(
                "field `{field}`: invalid id {:?}",
                truncate(id, 64)
            ))
        }
    };
    match inbound {
        Inbound::Status(s) => {
            check_ts("ts", s.ts)?;
            check_pct("battery_pct", s.battery_pct)?;
            check_pct("update.progress_pct", s.update.progress_pct)?;
            if let Some(id) = &s.update.release_id {
                check_id("update.release_id", id)?;
            }
            if let Some(id) = &s.update.command_id {
                check_id("update.command_id", id)?;
            }
            if let Some(p) = s.position
                && !((-90.0..=90.0).contains(&p.lat) && (-180.0..=180.0).contains(&p.lon))
            {
                return Err(format!(
                    "field `position`: ({}, {}) is not a coordinate",
                    p.lat, p.lon
                ));
            }
            if s.components.len() > 32 {
                return Err(format!(
                    "field `components`: {} entries, limit 32",
                    s.components.len()
                ));
            }
            for (name, _) in s.components.iter() {
                check_id("components", name)?;
            }
        }
        Inbound::Telemetry(t) => {
            check_ts("ts", t.ts)?;
            match &t.event {
                TelemetryEvent::Battery { pct } => check_pct("event.pct", Some(*pct))?,
                TelemetryEvent::UpdateProgress {
                    release_id,
                    bytes_done,
                    bytes_total,
                    ..
                } => {
                    check_id("event.release_id", release_id)?;
                    if bytes_done > bytes_total {
                        return Err(format!(
                            "field `event.bytes_done`: {bytes_done} exceeds bytes_total {bytes_total}"
                        ));
                    }
                }
                TelemetryEvent::Metric { name, value } => {
                    check_id("event.name", name)?;
                    if !value.is_finite() {
                        return Err("field `event.value`: not a finite number".into());
                    }
                }
                TelemetryEvent::Crash { process } => {
                    if process.is_empty() || process.len() > MAX_ID_LEN {
                        return Err("field `event.process`: empty or longer than 128 bytes".into());
                    }
                }
                TelemetryEvent::Heartbeat { .. }
                | TelemetryEvent::Boot { .. }
                | TelemetryEvent::Reconnect { .. } => {}
            }
        }
        Inbound::Ack(a) => {
            check_ts("ts", a.ts)?;
            check_id("command_id", &a.command_id)?;
            if a.reason.as_ref().is_some_and(|r| r.len() > 1024) {
                return Err("field `reason`: longer than 1024 bytes".into());
            }
        }
    }
    Ok(())
}

/// Counts of rejected messages per reason and per device, bounded in memory: past
/// `max_devices` distinct devices, further devices are counted under `other_devices`, so a flood
/// of messages with made-up ids cannot grow it without limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RejectionStats {
    pub total: u64,
    pub by_reason: BTreeMap<RejectReason, u64>,
    pub by_device: BTreeMap<String, u64>,
    pub other_devices: u64,
    /// The most recent rejection, to show.
    pub last: Option<String>,
    max_devices: usize,
}

impl RejectionStats {
    pub fn new(max_devices: usize) -> Self {
        Self {
            max_devices,
            ..Self::default()
        }
    }

    pub fn record(&mut self, rejection: &InboundRejection) {
        self.total += 1;
        *self.by_reason.entry(rejection.reason).or_default() += 1;
        match &rejection.device_id {
            Some(id)
                if self.by_device.contains_key(id) || self.by_device.len() < self.max_devices =>
            {
                *self.by_device.entry(id.clone()).or_default() += 1;
            }
            _ => self.other_devices += 1,
        }
        self.last = Some(rejection.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

    fn topics() -> Topics {
        Topics::default_prefix()
    }

    fn status_json(device: &str) -> serde_json::Value {
        serde_json::json!({
            "v": 1, "device_id": device, "ts": NOW.secs() - 5, "active_slot": "a",
            "components": {"firmware": "2.4.0", "bootloader": "2.0.1"},
            "update": {"state": "downloading", "release_id": "t300-fw-2.5.0", "command_id": "c-1", "progress_pct": 40},
            "battery_pct": 81, "power": "charging", "connectivity": "cellular", "metered": true,
            "free_storage_bytes": 500_000_000_u64, "position": {"lat": 52.5, "lon": 13.4}
        })
    }

    fn decode(topic: &str, payload: &serde_json::Value) -> Result<Inbound, InboundRejection> {
        decode_inbound(&topics(), topic, payload.to_string().as_bytes(), NOW)
    }

    #[test]
    fn topics_round_trip() {
        let t = topics();
        assert_eq!(
            t.parse(&t.status("CV0000001")),
            Some(TopicKind::Status {
                device_id: "CV0000001".into()
            })
        );
        assert_eq!(
            t.parse(&t.manifest("r-1")),
            Some(TopicKind::Manifest {
                release_id: "r-1".into()
            })
        );
        assert_eq!(t.parse("convoy/v1/devices/+/status"), None);
        assert_eq!(t.parse("convoy/v1/devices/a/b/status"), None);
        assert_eq!(t.parse("other/v1/devices/a/status"), None);
        assert!(Topics::new("fleet/eu/v1").is_ok());
        assert!(Topics::new("fleet/#").is_err());
        assert!(Topics::new("fleet//v1").is_err());
    }

    #[test]
    fn valid_messages_decode() {
        let t = topics();
        let Inbound::Status(s) = decode(&t.status("CV1"), &status_json("CV1")).expect("status")
        else {
            panic!("not a status");
        };
        assert_eq!(s.components.get("firmware"), Some(&Version::new(2, 4, 0)));
        assert_eq!(s.update.state, UpdateState::Downloading);
        let tel = serde_json::json!({"v": 1, "device_id": "CV1", "ts": NOW.secs(), "seq": 9,
            "event": {"kind": "reconnect", "offline_secs": 120, "ok": true}});
        assert!(matches!(
            decode(&t.telemetry("CV1"), &tel),
            Ok(Inbound::Telemetry(_))
        ));
        let ack = serde_json::json!({"v": 1, "device_id": "CV1", "command_id": "c-1", "ts": NOW.secs(), "result": "duplicate"});
        assert!(matches!(decode(&t.acks("CV1"), &ack), Ok(Inbound::Ack(_))));
    }

    #[test]
    fn bad_messages_are_rejected_with_reason_and_detail() {
        let t = topics();
        let status = t.status("CV1");
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = status_json("CV1");
            f(&mut v);
            v
        };
        let cases: Vec<(String, Vec<u8>, RejectReason, &str)> = vec![
            (
                status.clone(),
                vec![b'{'; MAX_PAYLOAD_BYTES + 1],
                RejectReason::Oversize,
                "limit",
            ),
            (
                status.clone(),
                vec![0xff, 0xfe],
                RejectReason::NotUtf8,
                "byte 0",
            ),
            (
                status.clone(),
                b"{\"v\":1,".to_vec(),
                RejectReason::MalformedJson,
                "EOF",
            ),
            (
                status.clone(),
                with(&|v| v["v"] = 2.into()).to_string().into_bytes(),
                RejectReason::UnknownVersion,
                "version 2",
            ),
            (
                status.clone(),
                with(&|v| {
                    v.as_object_mut().map(|o| o.remove("v"));
                })
                .to_string()
                .into_bytes(),
                RejectReason::InvalidShape,
                "`v`",
            ),
            (
                status.clone(),
                with(&|v| v["power"] = "solar".into())
                    .to_string()
                    .into_bytes(),
                RejectReason::InvalidShape,
                "power_state",
            ),
            (
                status.clone(),
                with(&|v| v["extra"] = 1.into()).to_string().into_bytes(),
                RejectReason::InvalidShape,
                "extra",
            ),
            (
                status.clone(),
                with(&|v| v["battery_pct"] = 140.into())
                    .to_string()
                    .into_bytes(),
                RejectReason::InvalidValue,
                "battery_pct",
            ),
            (
                status.clone(),
                with(&|v| v["ts"] = (NOW.secs() + 7 * 86_400).into())
                    .to_string()
                    .into_bytes(),
                RejectReason::InvalidValue,
                "`ts`",
            ),
            (
                status.clone(),
                with(&|v| v["components"]["firmware"] = "2.x".into())
                    .to_string()
                    .into_bytes(),
                RejectReason::InvalidShape,
                "2.x",
            ),
            (
                t.status("CV2"),
                status_json("CV1").to_string().into_bytes(),
                RejectReason::DeviceMismatch,
                "CV1",
            ),
            (
                "convoy/v1/devices/CV1/secrets".into(),
                b"{}".to_vec(),
                RejectReason::UnknownTopic,
                "status",
            ),
            (
                t.commands("CV1"),
                b"{}".to_vec(),
                RejectReason::UnknownTopic,
                "status",
            ),
        ];
        for (topic, payload, reason, needle) in cases {
            let err = decode_inbound(&t, &topic, &payload, NOW).expect_err(needle);
            assert_eq!(err.reason, reason, "{err}");
            assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
        }
    }

    #[test]
    fn a_status_names_what_it_changes_in_the_record() {
        let t = topics();
        let Inbound::Status(s) = decode(&t.status("CV1"), &status_json("CV1")).expect("status")
        else {
            panic!("not a status");
        };
        let fleet = convoy_core::synth::generate(&convoy_core::synth::SynthOptions {
            devices: 1,
            seed: 3,
            now: NOW,
        });
        let mut device = fleet.devices[0].clone();
        device.components = SmallMap::default();
        s.apply_to(&mut device);
        assert_eq!(s.software_change(&device), None, "nothing changes");
        let mut newer = status_json("CV1");
        newer["components"] = serde_json::json!({"firmware": "2.5.0", "modem": "1.0.0"});
        newer["active_slot"] = "b".into();
        let Inbound::Status(n) = decode(&t.status("CV1"), &newer).expect("status") else {
            panic!("not a status");
        };
        let change = n.software_change(&device).expect("a change");
        assert_eq!(
            change["components"],
            serde_json::json!({
                "firmware": {"old": "2.4.0", "new": "2.5.0"},
                "bootloader": {"old": "2.0.1", "new": null},
                "modem": {"old": null, "new": "1.0.0"}
            })
        );
        assert_eq!(
            change["active_slot"],
            serde_json::json!({"old": "a", "new": "b"})
        );
        assert_eq!(change["reported_at"], NOW.secs() - 5);
    }

    #[test]
    fn commands_serialise_as_documented() {
        let cmd = Command {
            v: 1,
            command_id: "c-7".into(),
            device_id: "CV1".into(),
            issued_at: NOW,
            action: CommandAction::RollBack {
                release_id: "r-1".into(),
                reason: "gate crash_rate".into(),
            },
        };
        let json = serde_json::to_value(&cmd).expect("serialise");
        assert_eq!(json["action"]["kind"], "roll_back");
        let back: Command = serde_json::from_value(json).expect("parse");
        assert_eq!(back, cmd);
    }

    #[test]
    fn rejection_stats_stay_bounded() {
        let t = topics();
        let mut stats = RejectionStats::new(100);
        for i in 0..10_000 {
            let topic = t.status(&format!("spoof{i}"));
            let err = decode_inbound(&t, &topic, b"not json", NOW).expect_err("malformed");
            stats.record(&err);
        }
        assert_eq!(stats.total, 10_000);
        assert_eq!(stats.by_device.len(), 100);
        assert_eq!(stats.other_devices, 9_900);
        assert_eq!(
            stats.by_reason.get(&RejectReason::MalformedJson),
            Some(&10_000)
        );
    }
}
