//! `convoy`: everything of Convoy that does I/O.
//!
//! The command line, file formats, the SQLite cache, signing keys on disk, and (as they land)
//! the MQTT/HTTP link, the fleet simulator, the headless engine and the egui console. All
//! decisions are made by `convoy_core`; this crate converts files, wire messages and SQL rows
//! into core types at the edge, feeds them in, and carries out what comes back.

pub mod alerts;
pub mod cli;
pub mod cmd;
pub mod csv_safe;
pub mod engine;
pub mod files;
pub mod fleet_io;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod gui;
pub mod keys;
pub mod link;
pub mod ops;
pub mod prom;
pub mod remote;
pub mod serve;
pub mod sim;
pub mod store;

/// The current wall-clock time: the one place the app reads the clock for the core.
pub fn now() -> convoy_core::time::Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    convoy_core::time::Timestamp::from_secs(secs)
}
