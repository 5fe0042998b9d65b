//! The shapes of `convoy serve`'s JSON API that travel both ways: what the server's handlers
//! write and what the remote console (`crate::remote`) reads, declared once.
//!
//! Each type derives both `Serialize` and `Deserialize`, so the server and its client cannot
//! drift apart: a field renamed here is renamed for both, and the tests below pin the bytes the
//! server sent before this module existed.
//! Field order is part of the contract: serde writes fields in declaration order, and some of
//! these answers were written with `serde_json::json!` (keys sorted), so those types list their
//! fields alphabetically.
//!
//! The store does not return these types: it returns its own rows (`store::query::RolloutRow`,
//! `store::query::LogPage`, `store::Event`), and the server converts them here with the `From`
//! impls of `serve`.
//! The store sits below the link (tidy's "store/ sits below everything but core"), and a row
//! shaped by a table should be free to change without changing what the API promises
//! (docs/openapi.yaml); the conversion is field by field, and a wire change is a change of this
//! file only.
//!
//! Deliberately not here: the HTTP side (status codes, routing: `serve/api.rs`; error bodies are
//! [`super::http::json`]'s, which [`ErrorBody`] reads), and the answers only the server writes
//! and no client of this crate reads yet (device pages, the fleet summary, findings, requests,
//! tokens, metrics), which still serialize the server's and the store's own types.

use convoy_core::rollout::{Phase, RolloutEvent};
use convoy_core::time::Timestamp;
use serde::{Deserialize, Serialize};

/// The prefix of every API path.
pub const PREFIX: &str = "/api/v1";

/// `GET /whoami`: the operator behind the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub operator: String,
    /// `viewer`, `dispatcher`, `approver` or `admin`.
    pub role: String,
    pub token_id: String,
}

/// One rollout of `GET /rollouts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRow {
    pub rollout_id: String,
    pub events: u64,
    /// Unix seconds of the first and the newest event (simulated time for sped-up runs).
    pub first_time: i64,
    pub last_time: i64,
    /// The newest event's kind, e.g. `rollout.completed` or `rollout.paused`.
    pub last_kind: String,
    pub release_id: Option<String>,
}

/// `GET /rollouts/{id}/timeline?after=SEQ`: a rollout's timeline events after a seq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    pub events: Vec<TimelineEvent>,
    pub rollout_id: String,
}

/// One event of a timeline (fields in alphabetical order: the answer was written through
/// `serde_json::Value`, which sorts keys).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// Why: the gate, the operator, or the metric that triggered it.
    pub cause: String,
    /// `wave.started`, `gate.hold`, `rollout.paused`, ...
    pub kind: String,
    /// Details as compact JSON, in a string.
    pub payload: String,
    pub rollout_id: String,
    /// 1, 2, 3, ... within the rollout.
    pub seq: i64,
    /// RFC 3339.
    #[serde(with = "rfc3339")]
    pub time: Timestamp,
}

/// `GET /rollouts/{id}/log?after=SEQ&limit=N`: one page of a rollout's replayable log.
/// The server passes the logged events on as it stored them (`serde_json::Value`); the console
/// reads them as the core's events ([`LogPageIn`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogPage<E = serde_json::Value> {
    pub rollout_id: String,
    /// The seq of the first event of the page (the log's seqs run from 0 without gaps).
    pub first_seq: i64,
    /// The engine's core events as it logged them.
    pub events: Vec<E>,
    /// Whether events follow this page: ask again with `after` = the page's last seq.
    pub more: bool,
}

/// A log page as the console reads it: every event must be a core event.
pub type LogPageIn = LogPage<RolloutEvent>;

/// Which devices a rollback covers, as `POST /rollouts/{id}/rollback` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollBackScope {
    /// The wave that is running, soaking or paused now (the default).
    CurrentWave,
    /// Every device of the rollout that was offered the release.
    All,
}

/// The body of `POST /rollouts/{id}/{pause|resume|rollback|override|abort|exclude|continue}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlBody {
    pub reason: String,
    /// Only for `rollback`: `current_wave` (the default) or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RollBackScope>,
    /// Only for `exclude`, and required there: which devices to take out of the rest of the
    /// rollout (a fleet search such as `model:T300 hw_rev:C` or `stratum:T300/C`, or device ids
    /// separated by spaces or commas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// The answer to a control command: the rollout's phase after the engine applied it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlAnswer {
    /// The command's name, as in the path.
    pub command: String,
    /// Written with its keys sorted, as `serde_json::Value` wrote it before.
    #[serde(serialize_with = "sorted_keys")]
    pub phase: Phase,
    pub rollout_id: String,
}

/// An error answer as a client reads it (`super::http::json::error_response` writes it).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// The request field at fault, when one was.
    pub field: Option<String>,
}

/// Writes `value` as `serde_json::Value` would (object keys sorted), so an answer once built
/// with `serde_json::json!` keeps its bytes.
fn sorted_keys<T: Serialize, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(value)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

/// RFC 3339 text for a [`Timestamp`], both ways.
mod rfc3339 {
    use convoy_core::time::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's `with` passes a reference.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;

    /// `value` written by the wire type equals `before` (the bytes the server wrote before this
    /// module, with `serde_json::json!` or its own struct) and reads back equal.
    fn check<T>(value: &T, before: &str)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let bytes = serde_json::to_string(value).expect("serialize");
        assert_eq!(bytes, before, "the bytes on the wire changed");
        let back: T = serde_json::from_str(&bytes).expect("read back");
        assert_eq!(&back, value);
    }

    #[test]
    fn every_shape_round_trips_and_keeps_the_bytes_the_server_wrote_before() {
        check(
            &WhoAmI {
                operator: "ana".into(),
                role: "dispatcher".into(),
                token_id: "t1".into(),
            },
            &serde_json::json!({"operator": "ana", "role": "dispatcher", "token_id": "t1"})
                .to_string(),
        );
        check(
            &RolloutRow {
                rollout_id: "r1".into(),
                events: 3,
                first_time: 1_800_000_000,
                last_time: 1_800_000_060,
                last_kind: "wave.started".into(),
                release_id: None,
            },
            r#"{"rollout_id":"r1","events":3,"first_time":1800000000,"last_time":1800000060,"last_kind":"wave.started","release_id":null}"#,
        );
        let event = TimelineEvent {
            cause: "timer".into(),
            kind: "rollout.created".into(),
            payload: "{\"w\":1}".into(),
            rollout_id: "r1".into(),
            seq: 1,
            time: Timestamp::from_secs(1_800_000_000),
        };
        // The server wrote `store::Event` (fields in another order) inside `json!`.
        let event_value = serde_json::json!({"rollout_id": "r1", "seq": 1,
            "time": "2027-01-15T08:00:00Z", "kind": "rollout.created", "cause": "timer",
            "payload": "{\"w\":1}"});
        check(&event, &event_value.to_string());
        check(
            &Timeline {
                events: vec![event],
                rollout_id: "r1".into(),
            },
            &serde_json::json!({"rollout_id": "r1", "events": [event_value]}).to_string(),
        );
        check(
            &LogPage {
                rollout_id: "r1".into(),
                first_seq: 3,
                events: vec![serde_json::json!({"n": 3})],
                more: false,
            },
            r#"{"rollout_id":"r1","first_seq":3,"events":[{"n":3}],"more":false}"#,
        );
        let phase = Phase::Paused {
            wave: 0,
            reason: "depot closed".into(),
            by_gate: false,
            rolled_back: false,
            soak_until: None,
        };
        check(
            &ControlAnswer {
                command: "pause".into(),
                phase: phase.clone(),
                rollout_id: "r1".into(),
            },
            &serde_json::json!({"rollout_id": "r1", "command": "pause", "phase": phase})
                .to_string(),
        );
        check(
            &ControlBody {
                reason: "depot closed".into(),
                scope: None,
                selector: None,
            },
            r#"{"reason":"depot closed"}"#,
        );
        check(
            &ControlBody {
                reason: "bad canary".into(),
                scope: Some(RollBackScope::All),
                selector: None,
            },
            r#"{"reason":"bad canary","scope":"all"}"#,
        );
        check(
            &ControlBody {
                reason: "rev C vans crash".into(),
                scope: None,
                selector: Some("model:T300 hw_rev:C".into()),
            },
            r#"{"reason":"rev C vans crash","selector":"model:T300 hw_rev:C"}"#,
        );
    }

    #[test]
    fn a_bad_time_or_an_unknown_control_field_is_refused_naming_it() {
        let bad = r#"{"rollout_id":"r1","seq":1,"time":"yesterday","kind":"k","cause":"c","payload":"{}"}"#;
        let err = serde_json::from_str::<TimelineEvent>(bad).expect_err("a bad time");
        assert!(err.to_string().contains("yesterday"), "{err}");
        let err = serde_json::from_str::<ControlBody>(r#"{"reason":"x","why":"y"}"#)
            .expect_err("an unknown field");
        assert!(err.to_string().contains("why"), "{err}");
        let err = serde_json::from_str::<ControlBody>(r#"{"reason":"x","scope":"some"}"#)
            .expect_err("an unknown scope");
        assert!(err.to_string().contains("some"), "{err}");
    }
}

/// The body of `POST /rollouts/{id}/shape` (issue 20): the request's new shape, `emergency`,
/// `accelerated`, `standard` or `deferred`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapeBody {
    pub shape: String,
}
