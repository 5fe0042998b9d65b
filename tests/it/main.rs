//! End-to-end tests: the real `convoy` binary on real files.

mod fleet;
mod store;
