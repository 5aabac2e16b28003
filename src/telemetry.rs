//! Logging: `tracing` to stderr, text for people or JSON for log pipelines, filtered by
//! `RUST_LOG` (default `info,sqlx=warn`).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{Environment, GlobalArgs, LogFormat};

pub fn init(global: &GlobalArgs) {
    let format = global.log_format.unwrap_or(match global.environment {
        Environment::Production => LogFormat::Json,
        Environment::Development => LogFormat::Text,
    });
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    // `try_init`: tests may have installed a subscriber already.
    let _ = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
}
