//! `tally worker` configuration: the mail transport, retry and queue settings.

use std::{net::SocketAddr, path::PathBuf, str::FromStr as _, time::Duration};

use clap::Args;

use super::{
    ConfigError, DatabaseArgs, DatabaseSettings, Environment, FeedArgs, QueueArgs, QueueSettings,
    config_error,
};

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub feed: FeedArgs,
    /// SMTP server: smtp://host:port (plain), smtp://host:port?tls=required (STARTTLS) or
    /// smtps://host:port (TLS), with user:password@ for credentials. Unset in development:
    /// mail is written as .eml files to TALLY_MAIL_DIR.
    #[arg(
        long,
        env = "SMTP_URL",
        value_name = "SMTP_URL",
        hide_env_values = true
    )]
    pub smtp_url: Option<String>,
    /// Sender of verification mail.
    #[arg(
        long,
        env = "TALLY_MAIL_FROM",
        value_name = "TALLY_MAIL_FROM",
        default_value = "tally <no-reply@tally.localhost>"
    )]
    pub mail_from: String,
    /// Public base URL of the HTTP API; mailed links point at {this}/v1/verify_email.
    #[arg(
        long,
        env = "TALLY_PUBLIC_URL",
        value_name = "TALLY_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub public_url: String,
    /// What the mailed link opens: `api` ({public}/v1/verify_email?..., which verifies and
    /// answers JSON) or `console` ({public}/console/#/verify?..., the web console's page, which
    /// calls the API; the code travels in the fragment, which no server sees).
    #[arg(long, env = "TALLY_MAIL_LINK", value_name = "TALLY_MAIL_LINK", value_enum,
          default_value_t = MailLink::Api)]
    pub mail_link: MailLink,
    /// Folder for .eml files when SMTP_URL is unset (development only).
    #[arg(
        long,
        env = "TALLY_MAIL_DIR",
        value_name = "TALLY_MAIL_DIR",
        default_value = ".dev-mail"
    )]
    pub mail_dir: PathBuf,
    /// Limit on one SMTP conversation, in milliseconds.
    #[arg(long, env = "TALLY_SMTP_TIMEOUT_MS", value_name = "TALLY_SMTP_TIMEOUT_MS",
          default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub smtp_timeout_ms: u64,
    /// How often an idle worker asks Redis for jobs, in milliseconds. (apalis' Redis backend
    /// looks for new jobs on its heartbeat, so this is the heartbeat interval.)
    #[arg(long, env = "TALLY_QUEUE_POLL_MS", value_name = "TALLY_QUEUE_POLL_MS",
          default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub queue_poll_ms: u64,
    /// Jobs processed at once.
    #[arg(long, env = "TALLY_WORKER_CONCURRENCY", value_name = "TALLY_WORKER_CONCURRENCY",
          default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub worker_concurrency: u64,
    /// Delivery attempts per mail before it becomes a dead letter.
    #[arg(long, env = "TALLY_MAIL_ATTEMPTS_MAX", value_name = "TALLY_MAIL_ATTEMPTS_MAX",
          default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub mail_attempts_max: u32,
    /// Wait before the first retry, in milliseconds; doubles with every further failure.
    #[arg(long, env = "TALLY_MAIL_BACKOFF_BASE_MS", value_name = "TALLY_MAIL_BACKOFF_BASE_MS",
          default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub mail_backoff_base_ms: u64,
    /// Longest wait between retries, in milliseconds.
    #[arg(long, env = "TALLY_MAIL_BACKOFF_MAX_MS", value_name = "TALLY_MAIL_BACKOFF_MAX_MS",
          default_value_t = 900_000, value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    pub mail_backoff_max_ms: u64,
    /// How often the outbox is swept for mail not yet (or no longer) queued, in milliseconds.
    #[arg(long, env = "TALLY_OUTBOX_SWEEP_INTERVAL_MS",
          value_name = "TALLY_OUTBOX_SWEEP_INTERVAL_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub outbox_sweep_interval_ms: u64,
    /// Days the audit trail keeps an event; the worker deletes older ones about hourly.
    #[arg(long, env = "TALLY_AUDIT_RETENTION_DAYS", value_name = "TALLY_AUDIT_RETENTION_DAYS",
          default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=3_650))]
    pub audit_retention_days: u64,
    /// Attempts at delivering one event to a webhook before it is dead-lettered.
    #[arg(long, env = "TALLY_WEBHOOK_ATTEMPTS_MAX", value_name = "TALLY_WEBHOOK_ATTEMPTS_MAX",
          default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_attempts_max: u32,
    /// Wait before a webhook's second attempt, in milliseconds; doubles per attempt (full
    /// jitter) up to TALLY_WEBHOOK_BACKOFF_MAX_MS.
    #[arg(long, env = "TALLY_WEBHOOK_BACKOFF_BASE_MS", value_name = "TALLY_WEBHOOK_BACKOFF_BASE_MS",
          default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub webhook_backoff_base_ms: u64,
    #[arg(long, env = "TALLY_WEBHOOK_BACKOFF_MAX_MS", value_name = "TALLY_WEBHOOK_BACKOFF_MAX_MS",
          default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub webhook_backoff_max_ms: u64,
    /// One webhook delivery's whole HTTP exchange, in milliseconds.
    #[arg(long, env = "TALLY_WEBHOOK_TIMEOUT_MS", value_name = "TALLY_WEBHOOK_TIMEOUT_MS",
          default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub webhook_timeout_ms: u64,
    /// Webhook endpoints delivered to at once (each holds a database connection meanwhile).
    #[arg(long, env = "TALLY_WEBHOOK_CONCURRENCY", value_name = "TALLY_WEBHOOK_CONCURRENCY",
          default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub webhook_concurrency: u32,
    /// On SIGTERM, how long jobs in flight may take to finish before the process exits.
    #[arg(long, env = "TALLY_SHUTDOWN_DRAIN_SECS", value_name = "TALLY_SHUTDOWN_DRAIN_SECS",
          default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub shutdown_drain_secs: u64,
    /// Address of the worker's Prometheus `/metrics` listener (the worker serves nothing
    /// else).
    #[arg(
        long,
        env = "TALLY_WORKER_METRICS_ADDR",
        value_name = "TALLY_WORKER_METRICS_ADDR",
        default_value = "0.0.0.0:9091"
    )]
    pub metrics_addr: SocketAddr,
}

/// How mail leaves the worker.
#[derive(Debug, Clone)]
pub enum MailTransportSettings {
    /// The URL holds credentials: never print it.
    Smtp { url: String, timeout: Duration },
    /// Development: .eml files in this folder.
    Files(PathBuf),
}

/// Where the mailed verification link points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MailLink {
    /// The API's GET binding of VerifyEmail (JSON answer).
    Api,
    /// The web console's verify screen.
    Console,
}

#[derive(Debug, Clone)]
pub struct MailSettings {
    pub transport: MailTransportSettings,
    pub from: String,
    /// No trailing slash.
    pub public_url: String,
    pub link: MailLink,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub environment: Environment,
    pub database: DatabaseSettings,
    pub queue: QueueSettings,
    pub mail: MailSettings,
    pub queue_poll: Duration,
    pub concurrency: usize,
    pub attempts_max: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub sweep_interval: Duration,
    pub audit_retention: Duration,
    /// The change feed's Redis stream, and about how many events it keeps (the worker's sweep
    /// relays).
    pub events_stream: String,
    pub events_stream_max_len: u64,
    pub webhook_attempts_max: u32,
    pub webhook_backoff_base: Duration,
    pub webhook_backoff_max: Duration,
    pub webhook_timeout: Duration,
    pub webhook_concurrency: usize,
    pub webhook_allow_private: bool,
    pub shutdown_drain: Duration,
    pub metrics_addr: SocketAddr,
}

impl WorkerArgs {
    pub fn settings(&self, environment: Environment) -> Result<WorkerSettings, ConfigError> {
        let database = self.database.settings()?;
        let queue = self.queue.settings()?;
        let smtp_timeout = Duration::from_millis(self.smtp_timeout_ms);
        let transport = match &self.smtp_url {
            Some(url) if url.starts_with("smtp://") || url.starts_with("smtps://") => {
                MailTransportSettings::Smtp {
                    url: url.clone(),
                    timeout: smtp_timeout,
                }
            }
            Some(_) => {
                return Err(config_error(
                    "SMTP_URL",
                    "must be an smtp:// or smtps:// URL",
                ));
            }
            None if environment == Environment::Production => {
                return Err(config_error(
                    "SMTP_URL",
                    "is required when TALLY_ENV=production (.eml files are for development)",
                ));
            }
            None => MailTransportSettings::Files(self.mail_dir.clone()),
        };
        lettre::message::Mailbox::from_str(&self.mail_from).map_err(|err| {
            config_error("TALLY_MAIL_FROM", format!("is not a mail address: {err}"))
        })?;
        let public_url = self.public_url.trim_end_matches('/');
        if !(public_url.starts_with("http://") || public_url.starts_with("https://"))
            || public_url.contains(['?', '#', ' '])
        {
            return Err(config_error(
                "TALLY_PUBLIC_URL",
                "must be an http:// or https:// URL without query or fragment",
            ));
        }
        if self.mail_backoff_max_ms < self.mail_backoff_base_ms {
            return Err(config_error(
                "TALLY_MAIL_BACKOFF_MAX_MS",
                "must be at least TALLY_MAIL_BACKOFF_BASE_MS",
            ));
        }
        if queue.lease <= smtp_timeout {
            return Err(config_error(
                "TALLY_OUTBOX_LEASE_SECS",
                "must be longer than TALLY_SMTP_TIMEOUT_MS",
            ));
        }
        Ok(WorkerSettings {
            environment,
            database,
            queue,
            mail: MailSettings {
                transport,
                from: self.mail_from.clone(),
                public_url: public_url.to_owned(),
                link: self.mail_link,
            },
            queue_poll: Duration::from_millis(self.queue_poll_ms),
            concurrency: usize::try_from(self.worker_concurrency)
                .map_err(|_| config_error("TALLY_WORKER_CONCURRENCY", "too large"))?,
            attempts_max: self.mail_attempts_max,
            backoff_base: Duration::from_millis(self.mail_backoff_base_ms),
            backoff_max: Duration::from_millis(self.mail_backoff_max_ms),
            sweep_interval: Duration::from_millis(self.outbox_sweep_interval_ms),
            audit_retention: Duration::from_secs(self.audit_retention_days * 86_400),
            events_stream: self.feed.events_stream.clone(),
            events_stream_max_len: self.feed.events_stream_maxlen,
            webhook_attempts_max: self.webhook_attempts_max,
            webhook_backoff_base: Duration::from_millis(self.webhook_backoff_base_ms),
            webhook_backoff_max: Duration::from_millis(self.webhook_backoff_max_ms),
            webhook_timeout: Duration::from_millis(self.webhook_timeout_ms),
            // At most 64.
            webhook_concurrency: self.webhook_concurrency as usize,
            webhook_allow_private: self.feed.webhook_allow_private,
            shutdown_drain: Duration::from_secs(self.shutdown_drain_secs),
            metrics_addr: self.metrics_addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn worker_args(extra: &[&str]) -> WorkerArgs {
        let mut argv = vec!["tally", "worker"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Worker(args) => *args,
            other => panic!("unexpected command {other:?}"),
        }
    }

    #[test]
    fn a_production_worker_without_smtp_is_refused_naming_the_variable() {
        let err = worker_args(&[])
            .settings(Environment::Production)
            .expect_err("must refuse");
        assert_eq!(err.variable, "SMTP_URL");
        let dev = worker_args(&[]).settings(Environment::Development).unwrap();
        assert!(matches!(
            dev.mail.transport,
            MailTransportSettings::Files(_)
        ));
    }

    #[test]
    fn worker_settings_name_the_variable_they_refuse() {
        for (flags, variable) in [
            (&["--smtp-url", "http://mail"][..], "SMTP_URL"),
            (&["--mail-from", "not an address"][..], "TALLY_MAIL_FROM"),
            (&["--public-url", "ftp://x"][..], "TALLY_PUBLIC_URL"),
            (&["--mail-queue", "has space"][..], "TALLY_MAIL_QUEUE"),
            (
                &[
                    "--mail-backoff-base-ms",
                    "5000",
                    "--mail-backoff-max-ms",
                    "100",
                ][..],
                "TALLY_MAIL_BACKOFF_MAX_MS",
            ),
            (&["--outbox-lease-secs", "5"][..], "TALLY_OUTBOX_LEASE_SECS"),
        ] {
            let err = worker_args(flags)
                .settings(Environment::Development)
                .expect_err("must refuse");
            assert_eq!(err.variable, variable, "{flags:?}");
        }
    }
}
