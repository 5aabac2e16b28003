//! Configuration shared by the processes: the flag groups (each flag with an environment twin
//! whose name is also the value name, so a bad value names its variable), the validated
//! settings they turn into, and [`ConfigError`]. A leaf: it imports no other tally module. The
//! command line itself (`tally serve`, `worker`, …) is `crate::cli`.

use std::time::Duration;

use clap::{Args, ValueEnum};

mod tokens;
mod worker;

pub use tokens::{TokenFormat, TokenKey, TokenSettings};
pub use worker::{MailLink, MailSettings, MailTransportSettings, WorkerArgs, WorkerSettings};

/// Default PostgreSQL URL: the local server on its standard port.
pub const DATABASE_URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/tally";
/// Default Redis URL: the local server on its standard port.
pub const REDIS_URL_DEFAULT: &str = "redis://127.0.0.1:6379";

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Deployment environment. `production` refuses development defaults such as an
    /// ephemeral token key, and logs JSON.
    #[arg(long = "env", env = "TALLY_ENV", value_name = "TALLY_ENV", value_enum,
          default_value_t = Environment::Development, global = true)]
    pub environment: Environment,
    /// Log format; defaults to JSON in production and text elsewhere.
    #[arg(
        long,
        env = "TALLY_LOG_FORMAT",
        value_name = "TALLY_LOG_FORMAT",
        value_enum,
        global = true
    )]
    pub log_format: Option<LogFormat>,
    /// OTLP/gRPC endpoint of an OpenTelemetry collector (e.g. http://otel-collector:4317).
    /// Unset: no traces are exported.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "OTEL_EXPORTER_OTLP_ENDPOINT",
        global = true
    )]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL", hide_env_values = true,
          default_value = DATABASE_URL_DEFAULT)]
    pub database_url: String,
    /// Maximum connections in the pool.
    #[arg(long = "db-max-connections", env = "TALLY_DB_MAX_CONNECTIONS", value_name = "TALLY_DB_MAX_CONNECTIONS",
          default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub db_connections_max: u32,
    /// How long a call may wait for a pooled connection, in milliseconds.
    #[arg(long, env = "TALLY_DB_ACQUIRE_TIMEOUT_MS", value_name = "TALLY_DB_ACQUIRE_TIMEOUT_MS",
          default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub db_acquire_timeout_ms: u64,
}

/// Where the mail job queue lives; `serve` pushes to it and `worker` drains it.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// Redis URL for the mail job queue.
    #[arg(long, env = "REDIS_URL", value_name = "REDIS_URL", hide_env_values = true,
          default_value = REDIS_URL_DEFAULT)]
    pub redis_url: String,
    /// Name of the mail queue in Redis. Pinned (not derived from a Rust type path) so a
    /// rename in the code cannot orphan queued jobs; distinct names let environments share
    /// one Redis.
    #[arg(long, env = "TALLY_MAIL_QUEUE", value_name = "TALLY_MAIL_QUEUE",
          default_value = MAIL_QUEUE_DEFAULT)]
    pub mail_queue: String,
    /// A queued mail not finished within this many seconds is queued again (a job lost with
    /// Redis or a killed worker); must exceed TALLY_SMTP_TIMEOUT_MS.
    #[arg(long, env = "TALLY_OUTBOX_LEASE_SECS", value_name = "TALLY_OUTBOX_LEASE_SECS",
          default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub outbox_lease_secs: u64,
}

/// The change feed's Redis stream (see `relay`); `serve` relays to it and `worker` sweeps.
#[derive(Debug, Clone, Args)]
pub struct FeedArgs {
    /// The change feed's Redis stream. Pinned (the `v1` is the payload's version); distinct
    /// names let environments share one Redis.
    #[arg(long, env = "TALLY_EVENTS_STREAM", value_name = "TALLY_EVENTS_STREAM",
          default_value = EVENTS_STREAM_DEFAULT)]
    pub events_stream: String,
    /// About how many events the change feed's Redis stream keeps (`XADD … MAXLEN ~`): a
    /// consumer further behind reads the rest with WatchAccount, from the database.
    #[arg(long, env = "TALLY_EVENTS_STREAM_MAXLEN", value_name = "TALLY_EVENTS_STREAM_MAXLEN",
          default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1_000..=1_000_000_000))]
    pub events_stream_maxlen: u64,
    /// Let webhooks point at private, loopback and link-local addresses (development and
    /// tests; never where the worker can reach internal services).
    #[arg(long, env = "TALLY_WEBHOOK_ALLOW_PRIVATE", value_name = "TALLY_WEBHOOK_ALLOW_PRIVATE",
          default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,
}

/// The change feed's stream unless told otherwise.
pub const EVENTS_STREAM_DEFAULT: &str = "tally:events:v1";

/// The queue every deployment uses unless told otherwise.
pub const MAIL_QUEUE_DEFAULT: &str = "tally:mail:v1";

/// A configuration value that failed validation; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

pub fn config_error(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        message: message.into(),
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: String,
    pub connections_max: u32,
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub redis_url: String,
    pub queue: String,
    /// How long a pushed mail may stay unfinished before the sweep pushes it again.
    pub lease: Duration,
}

impl QueueArgs {
    pub fn settings(&self) -> Result<QueueSettings, ConfigError> {
        if !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://")) {
            return Err(config_error(
                "REDIS_URL",
                "must be a redis:// or rediss:// URL",
            ));
        }
        let queue = self.mail_queue.trim();
        if queue.is_empty()
            || queue.len() > 128
            || !queue
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.'))
        {
            return Err(config_error(
                "TALLY_MAIL_QUEUE",
                "must be 1 to 128 characters of letters, digits, ':', '_', '-' and '.'",
            ));
        }
        Ok(QueueSettings {
            redis_url: self.redis_url.clone(),
            queue: queue.to_owned(),
            lease: Duration::from_secs(self.outbox_lease_secs),
        })
    }
}

impl DatabaseArgs {
    pub fn settings(&self) -> Result<DatabaseSettings, ConfigError> {
        if !(self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(config_error(
                "DATABASE_URL",
                "must be a postgres:// or postgresql:// URL",
            ));
        }
        Ok(DatabaseSettings {
            url: self.database_url.clone(),
            connections_max: self.db_connections_max,
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
        })
    }
}
