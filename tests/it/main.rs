//! End-to-end tests: the real `convoy` binary on real files.

mod console;
mod crash;
mod ddi;
mod engine;
mod engine_lease;
mod fleet;
mod http;
mod keys;
mod mqtt;
mod plan;
mod release;
mod score;
mod serve;
mod sim;
mod store;
mod tuf;
mod two_person;
