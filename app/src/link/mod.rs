//! The link between the console and the devices: the wire protocol (MQTT topics and JSON
//! payloads), with strict validation of everything that comes in, and artifacts over HTTP.
//!
//! Only this module knows topic layouts and payload shapes; it converts them into
//! `convoy_core` types at the edge. `broker` embeds rumqttd; `mqtt` is the client connection;
//! `http` serves and fetches artifacts with range requests; `ddi` is the hawkBit-compatible
//! device endpoint over HTTP. The headless engine (`crate::engine`) drives the MQTT link.

pub mod acl;
pub mod acl_proxy;
pub mod api_wire;
pub mod broker;
pub mod ddi;
pub mod http;
// The device-facing parts live in `convoy_devlink` (shared with the device agent); they keep
// their paths here so the rest of `convoy` is unchanged.
pub use convoy_devlink::{mqtt, protocol};
