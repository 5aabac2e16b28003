//! API tests: the real application (the same composition root as `tally serve`) on port 0,
//! a fresh PostgreSQL database per test, the generated tonic clients over real sockets.
//!
//! One test binary with modules (rather than one binary per file) keeps link time down.

// Test helpers unwrap too: a panic is how a test reports (Cargo.toml denies it in the code).
#![allow(clippy::unwrap_used)]

mod abuse;
mod audit;
mod authz;
mod cli;
mod console;
mod docs;
mod exchange;
mod faults;
mod feed;
mod gateway;
mod helpers;
mod holds;
mod ledger;
mod ledger_access;
mod ledger_batch;
mod mail_harness;
mod migrations;
mod schema;
mod server;
mod sessions;
mod telemetry;
mod tokens;
mod users;
mod verification;
mod webhooks;
