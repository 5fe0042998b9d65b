//! End-to-end tests: the real `convoy` binary on real files.

mod fleet;
mod mqtt;
mod release;
mod score;
mod sim;
mod tuf;
