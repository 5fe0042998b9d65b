//! The link between the console and the devices: the wire protocol (MQTT topics and JSON
//! payloads), with strict validation of everything that comes in.
//!
//! Only this module knows topic layouts and payload shapes; it converts them into
//! `convoy_core` types at the edge. The MQTT client, the HTTP artifact server and the headless
//! engine that drive it are not built yet (issue #6).

pub mod protocol;
