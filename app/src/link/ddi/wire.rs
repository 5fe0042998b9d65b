//! The JSON shapes of Eclipse hawkBit's Direct Device Integration (DDI) API v1, as devices
//! (rauc-hawkbit-updater, SWUpdate's suricatta, the crates.io `hawkbit` client) send and expect
//! them.
//!
//! Outgoing types serialize to exactly the field names of the DDI reference (`_links`,
//! `deploymentBase`, `maintenanceWindow`, `download-http`, ...). Incoming types are strict where
//! a device's answer drives a decision (`status.execution`, `status.result.finished`) and lenient
//! where hawkBit itself is (unknown extra fields are ignored, `id` and `time` may be absent, a
//! null `mode`), so that every DDI client in the field is understood.
//!
//! Not here: the DDI confirmation flow (`confirmationBase`), installed-base queries and the
//! download of MD5 checksum files; docs/DDI.md lists what is served.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A hypermedia link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Href {
    pub href: String,
}

/// The answer to a poll of the controller base resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollReply {
    pub config: PollConfig,
    #[serde(
        rename = "_links",
        skip_serializing_if = "PollLinks::is_empty",
        default
    )]
    pub links: PollLinks,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollConfig {
    pub polling: Polling,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Polling {
    /// `HH:MM:SS`.
    pub sleep: String,
}

/// What the device should fetch next; absent links mean nothing to do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollLinks {
    #[serde(rename = "deploymentBase", skip_serializing_if = "Option::is_none")]
    pub deployment_base: Option<Href>,
    #[serde(rename = "cancelAction", skip_serializing_if = "Option::is_none")]
    pub cancel_action: Option<Href>,
    #[serde(rename = "configData", skip_serializing_if = "Option::is_none")]
    pub config_data: Option<Href>,
}

impl PollLinks {
    fn is_empty(&self) -> bool {
        self.deployment_base.is_none() && self.cancel_action.is_none() && self.config_data.is_none()
    }
}

/// `HH:MM:SS` for a polling interval (hours may exceed 23; capped at 99:59:59).
pub fn format_sleep(secs: u64) -> String {
    let secs = secs.min(99 * 3600 + 59 * 60 + 59);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// How the device should handle a step of a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandlingType {
    Skip,
    Attempt,
    Forced,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaintenanceWindow {
    Available,
    Unavailable,
}

/// The deployment base resource of one action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentBase {
    /// The action id, as a string (as hawkBit sends it).
    pub id: String,
    pub deployment: Deployment,
    #[serde(rename = "actionHistory", skip_serializing_if = "Option::is_none")]
    pub action_history: Option<ActionHistory>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub download: HandlingType,
    pub update: HandlingType,
    #[serde(rename = "maintenanceWindow", skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,
    pub chunks: Vec<Chunk>,
}

/// One software module of a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The module type, e.g. `os`, `bApp`, `firmware`.
    pub part: String,
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<Metadata>,
    pub artifacts: Vec<Artifact>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub filename: String,
    pub hashes: Hashes,
    pub size: u64,
    #[serde(rename = "_links")]
    pub links: ArtifactLinks,
}

/// Lowercase hex digests; DDI clients expect all three.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashes {
    pub sha1: String,
    pub md5: String,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactLinks {
    #[serde(rename = "download-http", skip_serializing_if = "Option::is_none")]
    pub download_http: Option<Href>,
    #[serde(rename = "download", skip_serializing_if = "Option::is_none")]
    pub download_https: Option<Href>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionHistory {
    pub status: String,
    #[serde(default)]
    pub messages: Vec<String>,
}

/// The cancel action resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    pub id: String,
    #[serde(rename = "cancelAction")]
    pub cancel_action: StopId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopId {
    #[serde(rename = "stopId")]
    pub stop_id: String,
}

/// What a device reports about an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    Closed,
    Proceeding,
    Canceled,
    Scheduled,
    Rejected,
    Resumed,
    Downloaded,
    Download,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finished {
    Success,
    Failure,
    None,
}

/// Progress of an action: `cnt` of `of` steps. Either may be left out, and hawkBit's own
/// documented feedback sends `"progress": {}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    #[serde(default)]
    pub cnt: u32,
    #[serde(default)]
    pub of: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackResult {
    pub finished: Finished,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackStatus {
    pub execution: Execution,
    pub result: FeedbackResult,
    #[serde(default)]
    pub details: Vec<String>,
    /// A device-specific status code (newer hawkBit servers accept it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
}

/// A feedback body, for a deployment or a cancel action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    /// The action id; newer clients leave it out (the path names the action), older ones
    /// send it as a string or, as hawkBit's own documentation does, as a number.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_number"
    )]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub status: FeedbackStatus,
}

/// An optional id given as a JSON string or a whole number.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Id>::deserialize(d)?.map(|id| match id {
        Id::Text(t) => t,
        Id::Number(n) => n.to_string(),
    }))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigMode {
    Merge,
    Replace,
    Remove,
}

/// A configuration data upload: the device's attributes (`HwRevision`, serial number, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigData {
    #[serde(default)]
    pub mode: Option<ConfigMode>,
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<FeedbackStatus>,
}

/// Events in one telemetry upload, at most.
pub const MAX_TELEMETRY_EVENTS: usize = 256;

/// `POST …/telemetry`, Convoy's extension of DDI (hawkBit has no such route): health events
/// of the device the path names, each the `event` object of protocol v1's telemetry message
/// (docs/PROTOCOL.md) with the device's own timestamp. Strict, unlike the DDI bodies above:
/// an unknown field (a `device_id` in particular: the path and the token name the device), a
/// duplicate key or a value out of range refuses the whole upload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryUpload {
    pub events: Vec<TelemetryEntry>,
}

/// One event of a [`TelemetryUpload`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryEntry {
    /// When the device saw it (Unix seconds, the device's clock).
    pub ts: convoy_core::time::Timestamp,
    pub event: crate::link::protocol::TelemetryEvent,
}

/// An error answer, shaped like hawkBit's (`errorCode`, `message`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "errorCode")]
    pub error_code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_is_hh_mm_ss() {
        assert_eq!(format_sleep(5), "00:00:05");
        assert_eq!(format_sleep(305), "00:05:05");
        assert_eq!(format_sleep(3905), "01:05:05");
        assert_eq!(format_sleep(1_000_000), "99:59:59");
    }

    #[test]
    fn poll_reply_without_work_has_no_links() {
        let reply = PollReply {
            config: PollConfig {
                polling: Polling {
                    sleep: format_sleep(60),
                },
            },
            links: PollLinks::default(),
        };
        let json = serde_json::to_string(&reply).expect("serializes");
        assert_eq!(json, r#"{"config":{"polling":{"sleep":"00:01:00"}}}"#);
    }

    #[test]
    fn feedback_as_the_hawkbit_client_sends_it_parses() {
        // The body the crates.io `hawkbit` client posts (with its `progress` left out).
        let body = r#"{"id":"7","status":{"execution":"proceeding","details":["Downloading"],
            "result":{"finished":"none"}}}"#;
        let fb: Feedback = serde_json::from_str(body).expect("parses");
        assert_eq!(fb.id.as_deref(), Some("7"));
        assert_eq!(fb.status.execution, Execution::Proceeding);
        assert_eq!(fb.status.result.finished, Finished::None);
        assert_eq!(fb.status.details, ["Downloading"]);
        let bad = r#"{"status":{"execution":"installing","result":{"finished":"none"}}}"#;
        let err = serde_json::from_str::<Feedback>(bad).expect_err("unknown execution");
        assert!(err.to_string().contains("installing"), "{err}");
    }

    #[test]
    fn config_data_accepts_a_null_mode() {
        let body = r#"{"status":{"execution":"closed","result":{"finished":"success"},"details":[]},
            "mode":null,"data":{"HwRevision":"1.0"}}"#;
        let cd: ConfigData = serde_json::from_str(body).expect("parses");
        assert_eq!(cd.mode, None);
        assert_eq!(cd.data["HwRevision"], "1.0");
    }

    /// The DDI model of `fixtures/ddi/ddi-model.json`: hawkBit's documented objects.
    fn model() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/ddi/ddi-model.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("the DDI model fixture"))
            .expect("the DDI model is JSON")
    }

    /// Every way `value` at `path` departs from the model's type `ty`.
    fn check(
        model: &serde_json::Value,
        ty: &str,
        value: &serde_json::Value,
        path: &str,
    ) -> Vec<String> {
        use serde_json::Value;
        if ty.contains('|') {
            let tries: Vec<Vec<String>> = ty
                .split('|')
                .map(|t| check(model, t, value, path))
                .collect();
            return if tries.iter().any(Vec::is_empty) {
                Vec::new()
            } else {
                tries.into_iter().flatten().collect()
            };
        }
        let wrong = || vec![format!("{path}: expected {ty}, got {value}")];
        if let Some(inner) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            return match value {
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .flat_map(|(i, v)| check(model, inner, v, &format!("{path}[{i}]")))
                    .collect(),
                _ => wrong(),
            };
        }
        if let Some(inner) = ty.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            return match value {
                Value::Object(map) => map
                    .iter()
                    .flat_map(|(k, v)| check(model, inner, v, &format!("{path}.{k}")))
                    .collect(),
                _ => wrong(),
            };
        }
        if let Some(allowed) = model["enum"][ty].as_array() {
            return if allowed.iter().any(|a| a == value) {
                Vec::new()
            } else {
                wrong()
            };
        }
        let ok = match ty {
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "sleep" => value.as_str().is_some_and(|t| {
                let parts: Vec<&str> = t.split(':').collect();
                parts.len() == 3
                    && parts
                        .iter()
                        .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
            }),
            _ => {
                let object = &model["objects"][ty];
                assert!(object.is_object(), "the model has no object {ty}");
                let Value::Object(map) = value else {
                    return wrong();
                };
                let mut problems = Vec::new();
                for (field, t) in object["required"].as_object().into_iter().flatten() {
                    match map.get(field) {
                        Some(v) => problems.extend(check(
                            model,
                            t.as_str().unwrap_or(""),
                            v,
                            &format!("{path}.{field}"),
                        )),
                        None => {
                            problems.push(format!("{path}: the required field {field} is missing"));
                        }
                    }
                }
                for (field, v) in map {
                    if object["required"].get(field).is_some() {
                        continue;
                    }
                    match object["optional"]
                        .get(field)
                        .and_then(serde_json::Value::as_str)
                    {
                        Some(t) => problems.extend(check(model, t, v, &format!("{path}.{field}"))),
                        None => problems.push(format!("{path}: {field} is not a field of {ty}")),
                    }
                }
                return problems;
            }
        };
        if ok { Vec::new() } else { wrong() }
    }

    fn href(path: &str) -> Href {
        Href {
            href: format!("https://depot.example:8443/DEFAULT/controller/v1/CV1/{path}"),
        }
    }

    #[test]
    fn what_convoy_serves_has_the_shape_of_hawkbits_ddi_objects() {
        let model = model();
        let poll = PollReply {
            config: PollConfig {
                polling: Polling {
                    sleep: format_sleep(300),
                },
            },
            links: PollLinks {
                deployment_base: Some(href("deploymentBase/7?c=1")),
                cancel_action: Some(href("cancelAction/8")),
                config_data: Some(href("configData")),
            },
        };
        let deployment = DeploymentBase {
            id: "7".into(),
            deployment: Deployment {
                download: HandlingType::Forced,
                update: HandlingType::Attempt,
                maintenance_window: Some(MaintenanceWindow::Available),
                chunks: vec![Chunk {
                    part: "firmware".into(),
                    name: "t300-fw".into(),
                    version: "2.5.0".into(),
                    metadata: vec![Metadata {
                        key: "release".into(),
                        value: "t300-fw-2.5.0".into(),
                    }],
                    artifacts: vec![Artifact {
                        filename: "t300-fw-2.5.0.img".into(),
                        hashes: Hashes {
                            sha1: "a".repeat(40),
                            md5: "b".repeat(32),
                            sha256: "c".repeat(64),
                        },
                        size: 4_000_000,
                        links: ArtifactLinks {
                            download_http: Some(href(
                                "softwaremodules/1/artifacts/t300-fw-2.5.0.img",
                            )),
                            download_https: Some(href(
                                "softwaremodules/1/artifacts/t300-fw-2.5.0.img",
                            )),
                        },
                    }],
                }],
            },
            action_history: Some(ActionHistory {
                status: "RUNNING".into(),
                messages: vec!["offered in wave canary".into()],
            }),
        };
        let cancel = CancelReply {
            id: "8".into(),
            cancel_action: StopId {
                stop_id: "7".into(),
            },
        };
        for (ty, value) in [
            ("ControllerBase", serde_json::to_value(&poll).expect("json")),
            (
                "DeploymentBase",
                serde_json::to_value(&deployment).expect("json"),
            ),
            ("Cancel", serde_json::to_value(&cancel).expect("json")),
        ] {
            let problems = check(&model, ty, &value, ty);
            assert!(problems.is_empty(), "{ty}: {problems:#?}\n{value:#}");
        }
        // The checker itself refuses what does not fit.
        let mut bad = serde_json::to_value(&deployment).expect("json");
        bad["deployment"]["download"] = "later".into();
        bad["deployment"]["chunks"][0]["artifacts"][0]["sizeBytes"] = 1.into();
        bad["deployment"]["chunks"][0]
            .as_object_mut()
            .expect("chunk")
            .remove("part");
        let problems = check(&model, "DeploymentBase", &bad, "DeploymentBase");
        assert_eq!(problems.len(), 3, "{problems:#?}");
        let bad_sleep = serde_json::json!({"config": {"polling": {"sleep": "5m"}}});
        assert_eq!(check(&model, "ControllerBase", &bad_sleep, "poll").len(), 1);
    }

    #[test]
    fn hawkbits_documented_feedback_and_config_data_bodies_parse() {
        let model = model();
        for example in model["examples"]["ActionFeedback"]
            .as_array()
            .expect("examples")
        {
            let problems = check(&model, "ActionFeedback", example, "feedback");
            assert!(problems.is_empty(), "the fixture's example: {problems:#?}");
            let fb: Feedback = serde_json::from_value(example.clone())
                .unwrap_or_else(|e| panic!("{example} does not parse: {e}"));
            assert_eq!(
                serde_json::to_value(fb.status.execution).expect("json"),
                example["status"]["execution"]
            );
        }
        // The documented example's numeric id and empty progress.
        let fb: Feedback =
            serde_json::from_value(model["examples"]["ActionFeedback"][0].clone()).expect("parses");
        assert_eq!(fb.id.as_deref(), Some("1"));
        assert_eq!(fb.status.result.progress, Some(Progress { cnt: 0, of: 0 }));
        for example in model["examples"]["ConfigData"]
            .as_array()
            .expect("examples")
        {
            assert!(check(&model, "ConfigData", example, "config").is_empty());
            let cd: ConfigData = serde_json::from_value(example.clone())
                .unwrap_or_else(|e| panic!("{example} does not parse: {e}"));
            assert!(!cd.data.is_empty());
        }
    }
}
