//! The link between the console and the devices: the wire protocol (MQTT topics and JSON
//! payloads), with strict validation of everything that comes in.
//!
//! Only this module knows topic layouts and payload shapes; it converts them into
//! `convoy_core` types at the edge. `broker` embeds rumqttd; `mqtt` is the client connection.
//! The HTTP artifact server, the simulated fleet and the headless engine that drive them are not
//! built yet (issue #6).

pub mod broker;
pub mod mqtt;
pub mod protocol;
