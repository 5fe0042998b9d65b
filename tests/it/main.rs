//! End-to-end tests: the real `convoy` binary on real files.

mod crash;
mod fleet;
mod store;
