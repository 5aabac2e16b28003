//! tally: a gRPC-first money ledger service.
//!
//! The binary (`src/main.rs`) parses configuration and calls into this library; the
//! integration tests start the very same [`app::Application`] on port 0, so they exercise
//! the real wiring.

pub mod api;
pub mod app;
mod architecture;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod error;
pub mod exchange;
pub mod feed;
pub mod gateway;
pub mod identity;
pub mod jobs;
pub mod ledger;
pub mod limits;
pub mod proto;
pub mod relay;
pub mod service;
pub mod store;
pub mod streams;
pub mod telemetry;
pub mod validate;
pub mod webhooks;
