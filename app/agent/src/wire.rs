//! The agent's side of protocol v1 (docs/PROTOCOL.md): commands in, checked for this device, and
//! the status, telemetry and ack payloads out, built from `convoy_devlink::protocol`'s types so
//! the console reads them exactly as it reads the simulator's.
//!
//! Deliberately not here: I/O and decisions.

use anyhow::{Context, Result, bail};
use convoy_core::time::Timestamp;
use convoy_devlink::protocol::{
    AckResult, Command, CommandAck, CommandAction, PROTOCOL_VERSION, Telemetry, TelemetryEvent,
    TopicKind, Topics, is_valid_id,
};

/// A command for this device, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming {
    pub command_id: String,
    pub action: Action,
}

/// What a command asks.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// The manifest exactly as it stands in the command's bytes: the device verifies what it
    /// received, so a manifest with a key twice is refused by the core's strict reading.
    Offer {
        release_id: String,
        manifest: String,
    },
    RollBack {
        release_id: String,
        reason: String,
    },
    Cancel {
        release_id: String,
    },
}

/// Decodes a command received on `topic` for `device_id`: the topic must be this device's
/// command topic, the payload's device and protocol version must match, ids must be valid.
pub fn decode_command(
    topics: &Topics,
    device_id: &str,
    topic: &str,
    payload: &[u8],
) -> Result<Incoming> {
    match topics.parse(topic) {
        Some(TopicKind::Command { device_id: d }) if d == device_id => {}
        _ => bail!("{topic} is not this device's command topic"),
    }
    if payload.len() > convoy_devlink::protocol::MAX_PAYLOAD_BYTES {
        bail!(
            "the command on {topic} is {} bytes, over the protocol's limit",
            payload.len()
        );
    }
    let command: Command = serde_json::from_slice(payload)
        .with_context(|| format!("decoding the command on {topic}"))?;
    if command.v != PROTOCOL_VERSION {
        bail!(
            "command {} has protocol version {}, this agent speaks {PROTOCOL_VERSION}",
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
    if !is_valid_id(&command.command_id) {
        bail!("a command on {topic} has an invalid command_id");
    }
    let action = match command.action {
        CommandAction::Offer { release_id, .. } => Action::Offer {
            release_id,
            manifest: offered_manifest(payload)
                .with_context(|| format!("reading the offered manifest on {topic}"))?,
        },
        CommandAction::RollBack { release_id, reason } => Action::RollBack { release_id, reason },
        CommandAction::Cancel { release_id } => Action::Cancel { release_id },
    };
    let release_id = match &action {
        Action::Offer { release_id, .. }
        | Action::RollBack { release_id, .. }
        | Action::Cancel { release_id } => release_id,
    };
    if !is_valid_id(release_id) {
        bail!("command {} has an invalid release_id", command.command_id);
    }
    Ok(Incoming {
        command_id: command.command_id,
        action,
    })
}

fn offered_manifest(payload: &[u8]) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        action: RawAction<'a>,
    }
    #[derive(serde::Deserialize)]
    struct RawAction<'a> {
        #[serde(borrow)]
        manifest: &'a serde_json::value::RawValue,
    }
    let raw: Raw<'_> = serde_json::from_slice(payload)?;
    Ok(raw.action.manifest.get().to_owned())
}

/// An ack payload. Reasons are cut to 1,000 characters (the console refuses more than 1,024 bytes).
pub fn ack(
    device_id: &str,
    command_id: &str,
    ts: Timestamp,
    result: AckResult,
    reason: Option<&str>,
) -> Vec<u8> {
    let payload = CommandAck {
        v: PROTOCOL_VERSION,
        device_id: device_id.to_owned(),
        command_id: command_id.to_owned(),
        ts,
        result,
        reason: reason.map(|r| cut(r, 1000)),
    };
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// A telemetry payload.
pub fn telemetry(device_id: &str, ts: Timestamp, seq: u64, event: TelemetryEvent) -> Vec<u8> {
    let payload = Telemetry {
        v: PROTOCOL_VERSION,
        device_id: device_id.to_owned(),
        ts,
        seq,
        event,
    };
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// `s` cut to at most `max` characters.
pub fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(device: &str, command_id: &str, action: &serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "v": 1, "command_id": command_id, "device_id": device, "issued_at": 1_795_392_000,
            "action": action
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn commands_are_checked_for_this_device() {
        let topics = Topics::default_prefix();
        let topic = topics.commands("CV1");
        let offer = serde_json::json!({"kind": "offer", "release_id": "fw-2.5.0", "manifest": {"signed": {"a": 1}, "signatures": []}});
        let ok =
            decode_command(&topics, "CV1", &topic, &command("CV1", "c-1", &offer)).expect("valid");
        assert_eq!(ok.command_id, "c-1");
        let Action::Offer { manifest, .. } = ok.action else {
            panic!("an offer");
        };
        assert_eq!(manifest, r#"{"signatures":[],"signed":{"a":1}}"#);
        let cancel = serde_json::json!({"kind": "cancel", "release_id": "fw-2.5.0"});
        for (topic, payload, needle) in [
            (
                topics.commands("CV2"),
                command("CV1", "c-1", &cancel),
                "not this device's",
            ),
            (
                topic.clone(),
                command("CV2", "c-1", &cancel),
                "names device CV2",
            ),
            (
                topic.clone(),
                command("CV1", "c 1", &cancel),
                "invalid command_id",
            ),
            (topic.clone(), b"{".to_vec(), "decoding"),
        ] {
            let err = format!(
                "{:#}",
                decode_command(&topics, "CV1", &topic, &payload).expect_err(needle)
            );
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
    }

    #[test]
    fn payloads_decode_as_the_console_decodes_them() {
        let topics = Topics::default_prefix();
        let now = Timestamp::from_secs(1_795_392_000);
        let t = telemetry(
            "CV1",
            now,
            3,
            TelemetryEvent::Crash {
                process: "app.service".into(),
            },
        );
        let inbound =
            convoy_devlink::protocol::decode_inbound(&topics, &topics.telemetry("CV1"), &t, now);
        assert!(inbound.is_ok(), "{inbound:?}");
        let long = "x".repeat(5000);
        let a = ack("CV1", "c-1", now, AckResult::Rejected, Some(&long));
        let inbound =
            convoy_devlink::protocol::decode_inbound(&topics, &topics.acks("CV1"), &a, now);
        assert!(inbound.is_ok(), "{inbound:?}");
    }
}
