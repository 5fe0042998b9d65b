//! End-to-end tests: the real `convoy` binary on real files.

mod agent;
mod alerts;
mod broker_acl;
mod comms;
mod console;
mod crash;
mod ddi;
mod dupkeys;
mod engine;
mod engine_lease;
mod fleet;
mod flood;
mod http;
mod inventory;
mod keys;
mod metrics;
mod mqtt;
mod plan;
mod release;
mod score;
mod serve;
mod sim;
mod store;
mod tidy;
mod tuf;
mod two_person;
