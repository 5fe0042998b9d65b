//! One module per top-level subcommand. Each exposes `Args` (clap) and `run(&Args)`.

pub mod audit;
pub mod fleet;
pub mod rollout;
pub mod telemetry;
