//! One module per top-level subcommand. Each exposes `Args` (clap) and `run(&Args)`.

pub mod broker;
pub mod fleet;
pub mod key;
pub mod release;
pub mod score;
pub mod sim;
