//! `convoy_core`: the pure logic of Convoy.
//!
//! This crate holds everything a rollout decision depends on — the fleet model, CVSS and risk
//! scoring, eligibility and planning, health gates, the rollout state machine, and signed release
//! manifests — as deterministic functions and state machines.
//!
//! It deliberately has no I/O: no GUI, no async runtime, no SQL, no sockets, no clock and no
//! random source. Callers pass `now` (a [`time::Timestamp`]) and seeds in, and act on what comes
//! out, so the same inputs always give the same decisions and every rollout can be replayed.

pub mod alerts;
pub mod canonical_json;
pub mod cluster;
pub mod comms;
pub mod cvss;
pub mod devsim;
pub mod fasthash;
pub mod fleet;
pub mod gates;
pub mod manifest;
pub mod metrics;
pub mod plan;
pub mod release;
pub mod requirement;
pub mod risk;
pub mod rng;
pub mod rollout;
pub mod search;
pub mod strict_json;
pub mod sym;
pub mod synth;
pub mod time;
pub mod tuf;
pub mod version;
