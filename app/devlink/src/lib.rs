//! `convoy_devlink`: the part of Convoy's link that a device needs, shared by the console's
//! package (`convoy`) and the device agent (`convoy_agent`).
//!
//! - [`protocol`]: protocol v1, topics and strictly validated JSON payloads.
//! - [`mqtt`]: the MQTT connection task (TLS, client certificates, reconnects, back-pressure).
//! - [`http`]: the resumable artifact download and the pure range rules it shares with the
//!   artifact server.
//!
//! Deliberately not here: servers (the artifact server, the DDI endpoint, `convoy serve`), the
//! embedded broker and the ACL proxy, SQL and the GUI. A device builds this package and the
//! core, nothing that pulls in egui, rusqlite or axum; `convoy` re-exports these modules under
//! their old paths (`convoy::link::protocol`, `convoy::link::mqtt`, `convoy::link::http::client`).

pub mod http;
pub mod mqtt;
pub mod protocol;

/// The current wall-clock time as a core timestamp (whole seconds since the Unix epoch): the
/// one place this package reads the clock, for the link's skew check.
pub fn now() -> convoy_core::time::Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    convoy_core::time::Timestamp::from_secs(secs)
}
