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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub cnt: u32,
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
    /// The action id; newer clients leave it out (the path names the action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub status: FeedbackStatus,
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
}
