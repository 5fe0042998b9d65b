//! One module per top-level subcommand. Each exposes `Args` (clap) and `run(&Args)`.

pub mod alerts;
pub mod artifacts;
pub mod audit;
pub mod broker;
pub mod cohort;
pub mod ddi;
pub mod fleet;
pub mod gui;
pub mod key;
pub mod metrics;
pub mod plan;
pub mod release;
pub mod request;
pub mod rollout;
pub mod score;
pub mod serve;
pub mod signals;
pub mod sim;
pub mod telemetry;
