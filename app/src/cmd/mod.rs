//! One module per top-level subcommand. Each exposes `Args` (clap) and `run(&Args)`.

pub mod fleet;
pub mod plan;
