//! `tally serve`: its arguments and their validation into [`ServeSettings`].

use std::{net::SocketAddr, time::Duration};

use base64::Engine as _;
use clap::Args;

use crate::{
    app::ServeSettings,
    auth::{
        authenticator::AUTH_CACHE_TTL_MS_MAX, password::HASH_CONCURRENCY_MAX,
        token::TOKEN_KEY_BYTES,
    },
    config::{
        ConfigError, DatabaseArgs, Environment, FeedArgs, QueueArgs, TokenFormat, TokenKey,
        TokenSettings, config_error,
    },
};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address of the one listener for gRPC, gRPC-web and HTTP.
    #[arg(
        long,
        env = "TALLY_LISTEN_ADDR",
        value_name = "TALLY_LISTEN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen_addr: SocketAddr,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub feed: FeedArgs,
    /// How long a verification code stays valid, in seconds.
    #[arg(long, env = "TALLY_VERIFICATION_TTL_SECS", value_name = "TALLY_VERIFICATION_TTL_SECS",
          default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(60..=604_800))]
    pub verification_ttl_secs: u64,
    /// Apply pending migrations at start instead of refusing an unmigrated database.
    #[arg(long, env = "TALLY_MIGRATE", value_name = "TALLY_MIGRATE", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub migrate: bool,
    /// Access and refresh token format.
    #[arg(long, env = "TALLY_TOKEN_FORMAT", value_name = "TALLY_TOKEN_FORMAT", value_enum,
          default_value_t = TokenFormat::Paseto)]
    pub token_format: TokenFormat,
    /// Token key, base64 (standard or URL-safe alphabet): exactly 32 bytes for PASETO, at
    /// least 32 for JWT. Unset in development: an ephemeral key (tokens die with the process).
    #[arg(
        long,
        env = "TALLY_TOKEN_KEY",
        value_name = "TALLY_TOKEN_KEY",
        hide_env_values = true
    )]
    pub token_key: Option<String>,
    /// Token issuer (`iss`).
    #[arg(
        long,
        env = "TALLY_TOKEN_ISSUER",
        value_name = "TALLY_TOKEN_ISSUER",
        default_value = "tally"
    )]
    pub token_issuer: String,
    /// Token audience (`aud`).
    #[arg(
        long,
        env = "TALLY_TOKEN_AUDIENCE",
        value_name = "TALLY_TOKEN_AUDIENCE",
        default_value = "tally"
    )]
    pub token_audience: String,
    /// Access token lifetime in seconds.
    #[arg(long, env = "TALLY_ACCESS_TOKEN_TTL_SECS", value_name = "TALLY_ACCESS_TOKEN_TTL_SECS",
          default_value_t = 900, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub access_token_ttl_secs: u64,
    /// Refresh token (and session) lifetime in seconds.
    #[arg(long, env = "TALLY_REFRESH_TOKEN_TTL_SECS",
          value_name = "TALLY_REFRESH_TOKEN_TTL_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(60..=2_592_000))]
    pub refresh_token_ttl_secs: u64,
    /// Failed logins for one username from one client address, within the window, before
    /// further attempts for it from there are refused (other addresses are not affected).
    #[arg(long, env = "TALLY_LOGIN_FAILURES_MAX", value_name = "TALLY_LOGIN_FAILURES_MAX",
          default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub login_failures_max: u32,
    /// Failed logins from one client address, any username, within the window, before further
    /// logins from it are refused (a password spray over many usernames).
    #[arg(long, env = "TALLY_LOGIN_FAILURES_PER_ADDRESS_MAX",
          value_name = "TALLY_LOGIN_FAILURES_PER_ADDRESS_MAX", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub login_failures_per_address_max: u32,
    /// The login failure window in seconds.
    #[arg(long, env = "TALLY_LOGIN_FAILURE_WINDOW_SECS",
          value_name = "TALLY_LOGIN_FAILURE_WINDOW_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub login_failure_window_secs: u64,
    /// Password hashes (argon2id, 19 MiB each) running at once, process-wide; 0 = one per CPU.
    /// Sign-up, login and password changes wait for a turn.
    #[arg(long, env = "TALLY_HASH_CONCURRENCY_MAX", value_name = "TALLY_HASH_CONCURRENCY_MAX",
          default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=HASH_CONCURRENCY_MAX))]
    pub hash_concurrency_max: u32,
    /// How long a call waits for a hashing turn before it is answered UNAVAILABLE, in
    /// milliseconds.
    #[arg(long, env = "TALLY_HASH_WAIT_MS", value_name = "TALLY_HASH_WAIT_MS",
          default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=30_000))]
    pub hash_wait_ms: u64,
    /// How long a checked session (live or revoked, and its roles) is cached, in milliseconds.
    #[arg(long, env = "TALLY_AUTH_CACHE_TTL_MS", value_name = "TALLY_AUTH_CACHE_TTL_MS",
          default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(0..=AUTH_CACHE_TTL_MS_MAX))]
    pub auth_cache_ttl_ms: u64,
    /// Serve gRPC server reflection (v1 and v1alpha).
    #[arg(long, env = "TALLY_REFLECTION", value_name = "TALLY_REFLECTION", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub reflection: bool,
    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long = "max-message-bytes", env = "TALLY_MAX_MESSAGE_BYTES", value_name = "TALLY_MAX_MESSAGE_BYTES",
          default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(1_024..=67_108_864))]
    pub message_bytes_max: u64,
    /// Deadline of every call in milliseconds (a shorter client `grpc-timeout` wins).
    #[arg(long, env = "TALLY_REQUEST_TIMEOUT_MS", value_name = "TALLY_REQUEST_TIMEOUT_MS",
          default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub request_timeout_ms: u64,
    /// Calls of tally's services served at once across all connections; a call beyond it is
    /// shed at once with UNAVAILABLE (reason OVERLOADED, retry after 1 s). Health checks and
    /// /healthz, /readyz, /metrics do not count.
    #[arg(long, env = "TALLY_CONCURRENCY_MAX", value_name = "TALLY_CONCURRENCY_MAX",
          default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency_max: u64,
    /// How long a call's request message may take to arrive, in milliseconds; it takes none of
    /// the TALLY_CONCURRENCY_MAX slots until it has, and answers DEADLINE_EXCEEDED after this.
    #[arg(long, env = "TALLY_REQUEST_READ_TIMEOUT_MS",
          value_name = "TALLY_REQUEST_READ_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub request_read_timeout_ms: u64,
    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "TALLY_STREAMS_PER_CONNECTION_MAX",
          value_name = "TALLY_STREAMS_PER_CONNECTION_MAX", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub streams_per_connection_max: u32,
    /// Calls that hash a password or send mail (CreateUser, Login, RefreshSession, VerifyEmail,
    /// ResendVerification) per client address per minute (a burst of as many, then evenly).
    #[arg(long, env = "TALLY_RATE_AUTH_PER_MINUTE", value_name = "TALLY_RATE_AUTH_PER_MINUTE",
          default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_auth_per_minute: u32,
    /// Calls that change something, per signed-in user and per client address, per second.
    #[arg(long, env = "TALLY_RATE_WRITES_PER_SECOND",
          value_name = "TALLY_RATE_WRITES_PER_SECOND", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub rate_writes_per_second: u32,
    /// Comma-separated addresses or CIDR networks of proxies whose X-Forwarded-For names the
    /// client; empty: the connection's peer is always the client.
    #[arg(
        long,
        env = "TALLY_TRUSTED_PROXIES",
        value_name = "TALLY_TRUSTED_PROXIES",
        default_value = ""
    )]
    pub trusted_proxies: String,
    /// TCP connections one peer address may hold open at once; more are closed on accept.
    /// Behind a proxy, the proxy is the peer: size it for the proxy's pool.
    #[arg(long, env = "TALLY_CONNECTIONS_PER_PEER_MAX",
          value_name = "TALLY_CONNECTIONS_PER_PEER_MAX", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub connections_per_peer_max: u64,
    /// Currencies as CODE:EXPONENT pairs (exponent: minor units per major unit, as a power of
    /// ten). A stored currency's exponent can never change.
    #[arg(long, env = "TALLY_CURRENCIES", value_name = "TALLY_CURRENCIES",
          default_value = crate::ledger::currency::CURRENCIES_DEFAULT)]
    pub currencies: String,
    /// Accounts one owner may hold.
    #[arg(long, env = "TALLY_ACCOUNTS_PER_OWNER_MAX", value_name = "TALLY_ACCOUNTS_PER_OWNER_MAX",
          default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub accounts_per_owner_max: u32,
    /// Attempts of one transfer transaction (serialization failures and deadlocks are retried
    /// whole) before the call answers ABORTED.
    #[arg(long, env = "TALLY_TRANSFER_ATTEMPTS_MAX", value_name = "TALLY_TRANSFER_ATTEMPTS_MAX",
          default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub transfer_attempts_max: u32,
    /// Backoff before the first retry in milliseconds; doubles per attempt (full jitter), capped
    /// at 100 ms.
    #[arg(long, env = "TALLY_TRANSFER_RETRY_BACKOFF_MS",
          value_name = "TALLY_TRANSFER_RETRY_BACKOFF_MS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    pub transfer_retry_backoff_ms: u64,
    /// How often each server looks for overdue holds that no transfer touched, in milliseconds,
    /// and marks them expired. (An overdue hold never counts, sweep or not.)
    #[arg(long, env = "TALLY_HOLD_SWEEP_INTERVAL_MS",
          value_name = "TALLY_HOLD_SWEEP_INTERVAL_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub hold_sweep_interval_ms: u64,
    /// Write the change feed's events (on by default). Off, nothing is written for it: no
    /// watch, stream, webhook or monitor event sees anything, and `tally verify` reports the
    /// transfers without one. For measuring what the feed costs (`make bench`).
    #[arg(long, env = "TALLY_FEED_EVENTS", value_name = "TALLY_FEED_EVENTS", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub feed_events: bool,
    /// The spread of an exchange rate set without one, in basis points of the mid rate
    /// (50 = 0.5%).
    #[arg(long, env = "TALLY_EXCHANGE_SPREAD_BPS", value_name = "TALLY_EXCHANGE_SPREAD_BPS",
          default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=5_000))]
    pub exchange_spread_bps: u32,
    /// How long a quote holds, in milliseconds.
    #[arg(long, env = "TALLY_QUOTE_TTL_MS", value_name = "TALLY_QUOTE_TTL_MS",
          default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
    pub quote_ttl_ms: u64,
    /// How often each server reads the exchange rates set on other servers, in milliseconds
    /// (the most a watcher elsewhere lags behind a change).
    #[arg(long, env = "TALLY_RATES_POLL_MS", value_name = "TALLY_RATES_POLL_MS",
          default_value_t = 200, value_parser = clap::value_parser!(u64).range(20..=60_000))]
    pub rates_poll_ms: u64,
    /// How often each server looks for change-feed events other servers committed, in
    /// milliseconds (the most a watch elsewhere lags behind a commit; this server's own commits
    /// reach its watches at once).
    #[arg(long, env = "TALLY_FEED_POLL_MS", value_name = "TALLY_FEED_POLL_MS",
          default_value_t = 50, value_parser = clap::value_parser!(u64).range(5..=60_000))]
    pub feed_poll_ms: u64,
    /// A live stream with nothing to send sends an empty message this often, in milliseconds
    /// (so clients and proxies can tell a quiet stream from a dead one).
    #[arg(long, env = "TALLY_STREAM_HEARTBEAT_MS", value_name = "TALLY_STREAM_HEARTBEAT_MS",
          default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub stream_heartbeat_ms: u64,
    /// Live streams (watches) one user may hold at once on one server.
    #[arg(long, env = "TALLY_STREAMS_PER_USER_MAX", value_name = "TALLY_STREAMS_PER_USER_MAX",
          default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub streams_per_user_max: u32,
    /// Origins browsers may call from (CORS), comma-separated: exact origins such as
    /// `https://app.example.com`, or `*` for any. Empty (the default) allows none.
    #[arg(
        long,
        env = "TALLY_CORS_ALLOWED_ORIGINS",
        value_name = "TALLY_CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub cors_allowed_origins: Vec<String>,
    /// On SIGTERM, how long in-flight calls may take to finish before the process exits.
    #[arg(long, env = "TALLY_SHUTDOWN_DRAIN_SECS", value_name = "TALLY_SHUTDOWN_DRAIN_SECS",
          default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub shutdown_drain_secs: u64,
}

impl ServeArgs {
    /// Validates the arguments into settings. Rules that span variables live here.
    pub fn settings(&self, environment: Environment) -> Result<ServeSettings, ConfigError> {
        Ok(ServeSettings {
            cors_allowed_origins: cors_origins(&self.cors_allowed_origins)?,
            environment,
            database: self.database.settings()?,
            listen_addr: self.listen_addr,
            queue: self.queue.settings()?,
            verification_ttl: Duration::from_secs(self.verification_ttl_secs),
            migrate: self.migrate,
            tokens: self.tokens(environment)?,
            login_failures_max: self.login_failures_max,
            login_failures_per_address_max: self.login_failures_per_address_max,
            login_failure_window: Duration::from_secs(self.login_failure_window_secs),
            hash_concurrency_max: match self.hash_concurrency_max {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n as usize,
            },
            hash_wait: Duration::from_millis(self.hash_wait_ms),
            auth_cache_ttl: Duration::from_millis(self.auth_cache_ttl_ms),
            reflection: self.reflection,
            message_bytes_max: usize::try_from(self.message_bytes_max)
                .map_err(|_| config_error("TALLY_MAX_MESSAGE_BYTES", "too large"))?,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            concurrency_max: usize::try_from(self.concurrency_max)
                .map_err(|_| config_error("TALLY_CONCURRENCY_MAX", "too large"))?,
            request_read_timeout: Duration::from_millis(self.request_read_timeout_ms),
            streams_per_connection_max: self.streams_per_connection_max,
            connections_per_peer_max: usize::try_from(self.connections_per_peer_max)
                .map_err(|_| config_error("TALLY_CONNECTIONS_PER_PEER_MAX", "too large"))?,
            rates: crate::limits::RateSettings {
                auth_per_minute: std::num::NonZeroU32::new(self.rate_auth_per_minute)
                    .ok_or_else(|| config_error("TALLY_RATE_AUTH_PER_MINUTE", "must be > 0"))?,
                writes_per_second: std::num::NonZeroU32::new(self.rate_writes_per_second)
                    .ok_or_else(|| config_error("TALLY_RATE_WRITES_PER_SECOND", "must be > 0"))?,
                trusted_proxies: crate::limits::TrustedProxies::parse(&self.trusted_proxies)
                    .map_err(|message| config_error("TALLY_TRUSTED_PROXIES", message))?,
            },
            shutdown_drain: Duration::from_secs(self.shutdown_drain_secs),
            ledger: crate::ledger::LedgerSettings {
                currencies: crate::ledger::Currencies::parse(&self.currencies)
                    .map_err(|message| config_error("TALLY_CURRENCIES", message))?,
                accounts_per_owner_max: self.accounts_per_owner_max,
                transfer_attempts_max: self.transfer_attempts_max,
                retry_backoff_base: Duration::from_millis(self.transfer_retry_backoff_ms),
                retry_backoff_max: crate::ledger::TRANSFER_RETRY_BACKOFF_MAX,
                hold_sweep_interval: Duration::from_millis(self.hold_sweep_interval_ms),
                feed_events: self.feed_events,
            },
            feed_poll_interval: Duration::from_millis(self.feed_poll_ms),
            feed_stream: self.feed.events_stream.clone(),
            events_stream_max_len: self.feed.events_stream_maxlen,
            webhook_allow_private: self.feed.webhook_allow_private,
            exchange: crate::exchange::ExchangeSettings {
                spread_bps_default: self.exchange_spread_bps,
                quote_ttl: Duration::from_millis(self.quote_ttl_ms),
                rates_poll_interval: Duration::from_millis(self.rates_poll_ms),
                heartbeat_interval: Duration::from_millis(self.stream_heartbeat_ms),
                // At most 1,000.
                streams_per_user_max: self.streams_per_user_max as usize,
            },
        })
    }

    /// The token settings; production refuses to run without a configured key.
    fn tokens(&self, environment: Environment) -> Result<TokenSettings, ConfigError> {
        let key = match &self.token_key {
            Some(encoded) => TokenKey::Configured(decode_token_key(encoded, self.token_format)?),
            None if environment == Environment::Production => {
                return Err(config_error(
                    "TALLY_TOKEN_KEY",
                    "is required when TALLY_ENV=production (generate one with `openssl rand \
                     -base64 32`)",
                ));
            }
            None => TokenKey::Ephemeral(rand::random::<[u8; TOKEN_KEY_BYTES]>().to_vec()),
        };
        for (variable, value) in [
            ("TALLY_TOKEN_ISSUER", &self.token_issuer),
            ("TALLY_TOKEN_AUDIENCE", &self.token_audience),
        ] {
            if value.trim().is_empty() || value.len() > 256 {
                return Err(config_error(variable, "must be 1 to 256 characters"));
            }
        }
        if self.refresh_token_ttl_secs <= self.access_token_ttl_secs {
            return Err(config_error(
                "TALLY_REFRESH_TOKEN_TTL_SECS",
                "must be longer than TALLY_ACCESS_TOKEN_TTL_SECS",
            ));
        }
        Ok(TokenSettings {
            format: self.token_format,
            key,
            issuer: self.token_issuer.clone(),
            audience: self.token_audience.clone(),
            access_ttl: Duration::from_secs(self.access_token_ttl_secs),
            refresh_ttl: Duration::from_secs(self.refresh_token_ttl_secs),
        })
    }
}

/// Checks each CORS origin: `*`, or `scheme://host[:port]` with no path.
fn cors_origins(raw: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut origins = Vec::new();
    for origin in raw.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        let valid = origin == "*"
            || origin.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "http" | "https")
                    && !rest.is_empty()
                    && !rest.contains(['/', '?', '#', ' ', '*'])
            });
        if !valid {
            return Err(config_error(
                "TALLY_CORS_ALLOWED_ORIGINS",
                format!("`{origin}` is not `*` or an origin like https://app.example.com"),
            ));
        }
        origins.push(origin.to_owned());
    }
    Ok(origins)
}

fn decode_token_key(encoded: &str, format: TokenFormat) -> Result<Vec<u8>, ConfigError> {
    let trimmed = encoded.trim();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let key = engines
        .iter()
        .find_map(|engine| engine.decode(trimmed).ok())
        .ok_or_else(|| config_error("TALLY_TOKEN_KEY", "is not valid base64"))?;
    match format {
        TokenFormat::Paseto if key.len() != TOKEN_KEY_BYTES => Err(config_error(
            "TALLY_TOKEN_KEY",
            format!(
                "must decode to exactly {TOKEN_KEY_BYTES} bytes for TALLY_TOKEN_FORMAT=paseto \
                 (got {})",
                key.len()
            ),
        )),
        TokenFormat::Jwt if key.len() < TOKEN_KEY_BYTES => Err(config_error(
            "TALLY_TOKEN_KEY",
            format!(
                "must decode to at least {TOKEN_KEY_BYTES} bytes for TALLY_TOKEN_FORMAT=jwt \
                 (got {})",
                key.len()
            ),
        )),
        _ => Ok(key),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn serve_args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["tally", "serve"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Serve(args) => *args,
            other => panic!("unexpected command {other:?}"),
        }
    }

    #[test]
    fn production_without_a_token_key_is_refused_naming_the_variable() {
        let err = serve_args(&[])
            .settings(Environment::Production)
            .expect_err("must refuse");
        assert_eq!(err.variable, "TALLY_TOKEN_KEY");
    }

    #[test]
    fn development_without_a_token_key_gets_an_ephemeral_one() {
        let settings = serve_args(&[]).settings(Environment::Development).unwrap();
        assert!(matches!(settings.tokens.key, TokenKey::Ephemeral(ref k) if k.len() == 32));
    }

    #[test]
    fn a_short_paseto_key_is_refused() {
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let err = serve_args(&["--token-key", &short])
            .settings(Environment::Development)
            .expect_err("must refuse");
        assert_eq!(err.variable, "TALLY_TOKEN_KEY");
        assert!(err.to_string().contains("exactly 32 bytes"), "{err}");
    }

    #[test]
    fn a_long_jwt_secret_is_accepted_but_a_short_one_is_not() {
        let long = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 48]);
        let ok = serve_args(&["--token-format", "jwt", "--token-key", &long])
            .settings(Environment::Production)
            .unwrap();
        assert_eq!(ok.tokens.key.bytes().len(), 48);
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 31]);
        assert!(
            serve_args(&["--token-format", "jwt", "--token-key", &short])
                .settings(Environment::Production)
                .is_err()
        );
    }

    #[test]
    fn a_bad_number_names_the_environment_variable() {
        let err = Cli::try_parse_from(["tally", "serve", "--request-timeout-ms", "5"])
            .expect_err("out of range");
        assert!(
            err.to_string().contains("TALLY_REQUEST_TIMEOUT_MS"),
            "{err}"
        );
    }

    #[test]
    fn a_refresh_lifetime_shorter_than_the_access_lifetime_is_refused() {
        let err = serve_args(&[
            "--access-token-ttl-secs",
            "3600",
            "--refresh-token-ttl-secs",
            "600",
        ])
        .settings(Environment::Development)
        .expect_err("must refuse");
        assert_eq!(err.variable, "TALLY_REFRESH_TOKEN_TTL_SECS");
    }

    #[test]
    fn cors_allows_nothing_by_default_and_checks_each_origin() {
        let settings = serve_args(&[]).settings(Environment::Production);
        assert!(
            settings.is_err(),
            "production needs a key; checked separately"
        );
        let none = serve_args(&[]).settings(Environment::Development).unwrap();
        assert!(none.cors_allowed_origins.is_empty());
        let two = serve_args(&["--cors-allowed-origins", "https://a.example,http://b:8080"])
            .settings(Environment::Development)
            .unwrap();
        assert_eq!(
            two.cors_allowed_origins,
            ["https://a.example", "http://b:8080"]
        );
        let err = serve_args(&["--cors-allowed-origins", "https://a.example/path"])
            .settings(Environment::Development)
            .expect_err("a path is not an origin");
        assert_eq!(err.variable, "TALLY_CORS_ALLOWED_ORIGINS");
    }

    #[test]
    fn key_material_is_never_printed() {
        let key = TokenKey::Configured(b"super secret key material 123456".to_vec());
        assert!(!format!("{key:?}").contains("secret"));
    }
}
