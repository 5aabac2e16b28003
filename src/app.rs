//! The composition root: builds every component from validated settings and serves them on
//! one listener. `main` runs it; every integration test runs it on port 0 with a fresh
//! database, so tests exercise the real wiring.
//!
//! One listener carries gRPC over h2c, gRPC-web (HTTP/1.1 or h2), HTTP JSON (the gateway layer)
//! and plain HTTP (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`), and the web console
//! (`/console`) and API explorer (`/docs`) embedded in the binary. Limits are explicit: message
//! size, per-call deadline, calls in flight, streams per connection, and a bounded drain on
//! shutdown.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{extract::State, http::StatusCode, routing::get};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic::{server::NamedService, service::Routes, transport::server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::Layer;

use crate::{
    api::ApiState,
    audit::{AuditSink, rpc::RpcLayer},
    auth::{
        Authenticator,
        layer::AuthLayer,
        password,
        policy::{Access, METHOD_POLICIES},
        token,
    },
    console::{Console, ConsoleLayer, ConsoleOptions},
    db,
    exchange::Exchange,
    feed::{Feed, FeedSettings},
    gateway::{ApiInfo, Gateway, GatewayLayer, GatewayOptions},
    identity::{Identity, IdentitySettings},
    jobs::{self, outbox::Relay},
    ledger::Ledger,
    limits::{self, OverloadLayer, RateLimitLayer},
    proto::{
        self,
        tally_v1::{
            account_service_server::AccountServiceServer, audit_service_server::AuditServiceServer,
            event_service_server::EventServiceServer,
            exchange_service_server::ExchangeServiceServer, role_service_server::RoleServiceServer,
            session_service_server::SessionServiceServer,
            transfer_service_server::TransferServiceServer, user_service_server::UserServiceServer,
            webhook_service_server::WebhookServiceServer,
        },
    },
    relay::{self, RelaySettings},
    streams::StreamSlots,
    telemetry,
    webhooks::Webhooks,
};

/// `/readyz` gives the database this long to answer before calling the server unready.
const READINESS_DB_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 keepalive pings find dead peers so their streams do not pin capacity forever.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for gRPC frame headers (5 bytes a message) and base64 padding beside the largest
/// message, in the bound on a request body.
const REQUEST_FRAMING_BYTES: usize = 1024;

/// Everything `tally serve` runs with, validated (by `cli::serve` from flags and environment,
/// or built by tests).
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub environment: crate::config::Environment,
    pub database: crate::config::DatabaseSettings,
    pub listen_addr: std::net::SocketAddr,
    pub queue: crate::config::QueueSettings,
    pub verification_ttl: Duration,
    pub migrate: bool,
    pub tokens: crate::config::TokenSettings,
    pub login_failures_max: u32,
    pub login_failures_per_address_max: u32,
    pub login_failure_window: Duration,
    /// Password hashes at once (TALLY_HASH_CONCURRENCY_MAX, resolved: never 0).
    pub hash_concurrency_max: usize,
    pub hash_wait: Duration,
    pub auth_cache_ttl: Duration,
    pub reflection: bool,
    pub message_bytes_max: usize,
    pub request_timeout: Duration,
    pub concurrency_max: usize,
    pub request_read_timeout: Duration,
    pub streams_per_connection_max: u32,
    pub connections_per_peer_max: usize,
    pub rates: crate::limits::RateSettings,
    pub shutdown_drain: Duration,
    pub ledger: crate::ledger::LedgerSettings,
    pub exchange: crate::exchange::ExchangeSettings,
    /// How often the change feed's tail (and its Redis relay) look for events other replicas
    /// committed.
    pub feed_poll_interval: Duration,
    /// The change feed's Redis stream, and about how many events it keeps.
    pub feed_stream: String,
    pub events_stream_max_len: u64,
    /// Whether webhooks may point at private addresses.
    pub webhook_allow_private: bool,
    /// Origins allowed by CORS; `*` alone means any. Empty: none.
    pub cors_allowed_origins: Vec<String>,
}

/// A built, bound, not yet serving application.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    routes: Routes,
    health: HealthReporter,
    draining: Arc<AtomicBool>,
    settings: ServeSettings,
    pool: PgPool,
    authenticator: Arc<Authenticator>,
    gateway: Arc<Gateway>,
    console: Arc<Console>,
    exchange: Arc<Exchange>,
    feed: Arc<Feed>,
    /// The ledger's commit signal, which wakes the Redis relay.
    commits: tokio::sync::watch::Receiver<u64>,
}

#[derive(Clone)]
struct HttpState {
    pool: PgPool,
    draining: Arc<AtomicBool>,
}

impl Application {
    /// Connects to the database, checks (or applies) migrations, binds the listener.
    pub async fn build(settings: ServeSettings) -> anyhow::Result<Self> {
        let pool = db::connect(&settings.database).await?;
        if settings.migrate {
            db::migrate_up(&pool).await?;
        } else {
            db::ensure_migrated(&pool).await?;
        }
        Self::build_with_pool(settings, pool).await
    }

    /// Like [`Application::build`] with a pool the caller made (tests share theirs).
    pub async fn build_with_pool(settings: ServeSettings, pool: PgPool) -> anyhow::Result<Self> {
        telemetry::metrics::install();
        if let crate::config::TokenKey::Ephemeral(_) = settings.tokens.key {
            tracing::warn!(
                "TALLY_TOKEN_KEY is not set: using an ephemeral key; tokens die with this \
                 process and other replicas reject them"
            );
        }
        let codec = token::codec(&settings.tokens)?;
        let authenticator = Arc::new(Authenticator::new(
            codec,
            pool.clone(),
            settings.auth_cache_ttl,
        ));
        let identity = identity(&settings, &pool, &authenticator)?;
        let ledger = Arc::new(Ledger::new(pool.clone(), settings.ledger.clone()));
        ledger.bootstrap().await?;
        // One bound on each user's live streams, whichever they watch.
        let streams = StreamSlots::new(settings.exchange.streams_per_user_max);
        let exchange = Arc::new(Exchange::new(
            pool.clone(),
            ledger.clone(),
            settings.exchange.clone(),
            streams.clone(),
        ));
        let commits = ledger.commits();
        let feed = Arc::new(Feed::spawn(
            pool.clone(),
            ledger.clone(),
            FeedSettings {
                poll_interval: settings.feed_poll_interval,
                heartbeat_interval: settings.exchange.heartbeat_interval,
            },
            streams,
        ));
        exchange.bootstrap().await?;
        // The first unknown-user login must not pay for computing the dummy hash.
        tokio::task::spawn_blocking(password::warm_up).await?;

        let webhooks = Arc::new(Webhooks::new(
            pool.clone(),
            ledger.clone(),
            settings.webhook_allow_private,
        ));
        let state = ApiState {
            identity,
            ledger,
            exchange: exchange.clone(),
            feed: feed.clone(),
            webhooks,
            message_bytes_max: settings.message_bytes_max,
            pool: pool.clone(),
        };
        let draining = Arc::new(AtomicBool::new(false));
        let (health, health_service) = tonic_health::server::health_reporter();
        let max = settings.message_bytes_max;

        let http = axum::Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(telemetry::metrics::render))
            .with_state(HttpState {
                pool: pool.clone(),
                draining: draining.clone(),
            });
        let mut routes = grpc_routes(http, health_service, &state, max);
        if settings.reflection {
            let web = tonic_web::GrpcWebLayer::new();
            routes = routes
                .add_service(web.layer(reflection().build_v1()?))
                .add_service(web.layer(reflection().build_v1alpha()?));
        }
        announce(&health, ServingStatus::Serving).await;

        let gateway = Arc::new(Gateway::new(
            proto::FILE_DESCRIPTOR_SET,
            GatewayOptions {
                body_bytes_max: max,
                body_read_timeout: settings.request_read_timeout,
                cors_allowed_origins: settings.cors_allowed_origins.clone(),
                info: api_info(),
            },
        )?);
        tracing::debug!(routes = gateway.route_count(), "http json gateway ready");
        let console = Arc::new(Console::new(&ConsoleOptions {
            environment: match settings.environment {
                crate::config::Environment::Development => "development",
                crate::config::Environment::Production => "production",
            }
            .to_owned(),
            currencies: settings
                .ledger
                .currencies
                .iter()
                .map(|(code, exponent)| (code.to_owned(), exponent))
                .collect(),
        }));

        let listener = TcpListener::bind(settings.listen_addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            routes,
            health,
            draining,
            settings,
            pool,
            authenticator,
            gateway,
            console,
            exchange,
            feed,
            commits,
        })
    }

    /// The bound address (the real port when the settings asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `shutdown` resolves, then: health goes NOT_SERVING and `/readyz` 503, the
    /// listener closes, in-flight calls get `shutdown_drain` to finish, and the function
    /// returns `Ok` either way (a drain cut short is logged).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            routes,
            health,
            draining,
            settings,
            authenticator,
            gateway,
            console,
            pool,
            exchange,
            feed,
            commits,
            ..
        } = self;
        let (relay_stop, relay_stopping) = tokio::sync::watch::channel(false);
        let relay = tokio::spawn(relay::run(
            pool.clone(),
            RelaySettings {
                redis_url: settings.queue.redis_url.clone(),
                stream: settings.feed_stream.clone(),
                stream_max_len: settings.events_stream_max_len,
                interval: settings.feed_poll_interval,
            },
            Some(commits),
            relay_stopping,
        ));
        // Started here, on the serving runtime; it stops when the server's layers are dropped.
        let audit = AuditSink::spawn(pool.clone());
        let incoming = limits::cap_per_peer(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            settings.connections_per_peer_max,
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .max_concurrent_streams(settings.streams_per_connection_max)
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
            // Outermost first: the console's and the explorer's files are answered before
            // anything else (they are files, not calls: no slot, no audit, no auth); then JSON
            // calls are transcoded into gRPC calls, then every call's
            // message is read and the call takes a slot or is shed, then it is authenticated,
            // so all transports share limits and auth.
            .layer(ConsoleLayer::new(console))
            .layer(GatewayLayer::new(gateway))
            // Inside the gateway, so JSON calls are measured as the gRPC calls they become.
            .layer(RpcLayer::with_audit(audit))
            .layer(OverloadLayer::new(
                settings.concurrency_max,
                settings.request_read_timeout,
                // A gRPC-web text body is base64: 4/3 of the message, plus its frame headers.
                settings.message_bytes_max / 3 * 4 + REQUEST_FRAMING_BYTES,
                // The deadline of every call (tonic's own timeout would answer CANCELLED).
                settings.request_timeout,
            ))
            .layer(AuthLayer::new(authenticator))
            // Inside auth: write budgets are per signed-in user.
            .layer(RateLimitLayer::new(&settings.rates))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            });
        let mut server = tokio::spawn(server);
        tracing::info!(addr = %settings.listen_addr, "serving");
        let (sampler_stop, sampler_stopped) = tokio::sync::watch::channel(false);
        let sampler = telemetry::metrics::spawn_sampler(
            pool.clone(),
            settings.database.connections_max,
            Some(settings.queue.clone()),
            sampler_stopped,
        );

        tokio::select! {
            joined = &mut server => {
                // The server stopped without being asked: report why.
                joined??;
                return Ok(());
            }
            () = shutdown => {}
        }
        tracing::info!(
            drain_secs = settings.shutdown_drain.as_secs(),
            "shutting down"
        );
        draining.store(true, Ordering::Relaxed);
        announce(&health, ServingStatus::NotServing).await;
        // Live streams end now, cleanly, rather than hold the drain until its deadline.
        exchange.stop_streams();
        feed.stop_streams();
        // The relay finishes its round (what it leaves, the next relay publishes).
        let _ = relay_stop.send(true);
        let _ = tokio::time::timeout(settings.shutdown_drain, relay).await;
        let _ = stop_tx.send(());
        let _ = sampler_stop.send(true);
        let _ = sampler.await;
        drain(server, settings.shutdown_drain).await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Waits for the stopped server's calls in flight, at most `within`: tonic's graceful shutdown
/// waits for every connection without limit.
async fn drain(
    mut server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    within: Duration,
) -> anyhow::Result<()> {
    match tokio::time::timeout(within, &mut server).await {
        Ok(joined) => joined??,
        Err(_) => {
            tracing::warn!("drain time exceeded; abandoning the calls still in flight");
            server.abort();
        }
    }
    Ok(())
}

/// The identity domain, with its mail relay (pushes to the Redis queue only).
fn identity(
    settings: &ServeSettings,
    pool: &PgPool,
    authenticator: &Arc<Authenticator>,
) -> anyhow::Result<Arc<Identity>> {
    Ok(Arc::new(Identity::new(
        pool.clone(),
        authenticator.clone(),
        IdentitySettings {
            access_ttl: settings.tokens.access_ttl,
            refresh_ttl: settings.tokens.refresh_ttl,
            login_failures_max: settings.login_failures_max,
            login_failures_per_address_max: settings.login_failures_per_address_max,
            login_failure_window: settings.login_failure_window,
            verification_ttl: settings.verification_ttl,
            hash_concurrency_max: settings.hash_concurrency_max,
            hash_wait: settings.hash_wait,
        },
        Some(Relay::spawn(
            pool.clone(),
            jobs::queue::storage(&settings.queue, 1, jobs::queue::PUSH_ONLY_HEARTBEAT)?,
            settings.queue.lease,
        )),
    )))
}

/// The plain HTTP routes, health and every tally service, each behind gRPC-web and the
/// message-size limit `max` both ways.
fn grpc_routes(
    http: axum::Router,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    state: &ApiState,
    max: usize,
) -> Routes {
    // GrpcWebLayer goes on each gRPC service, not the whole server: on the server it would
    // answer 400 to every plain HTTP/1.1 request.
    let web = tonic_web::GrpcWebLayer::new();
    macro_rules! limited {
        ($server:ident) => {
            web.layer(
                $server::new(state.clone())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
        };
    }
    Routes::from(http)
        .add_service(web.layer(health))
        .add_service(limited!(UserServiceServer))
        .add_service(limited!(SessionServiceServer))
        .add_service(limited!(RoleServiceServer))
        .add_service(limited!(AccountServiceServer))
        .add_service(limited!(TransferServiceServer))
        .add_service(limited!(AuditServiceServer))
        .add_service(limited!(ExchangeServiceServer))
        .add_service(limited!(EventServiceServer))
        .add_service(limited!(WebhookServiceServer))
}

/// What health answers for the whole server (`""`), the health service and each tally service.
/// The health service's own status is liveness (the process works): it stays SERVING while the
/// others go NOT_SERVING at shutdown (readiness), so a draining replica leaves the load balancer
/// without being restarted mid-drain.
async fn announce(health: &HealthReporter, status: ServingStatus) {
    let health_service = <tonic_health::pb::health_server::HealthServer<()> as NamedService>::NAME;
    if status == ServingStatus::Serving {
        health.set_service_status(health_service, status).await;
    }
    for name in [""].iter().chain(proto::TALLY_SERVICES) {
        health.set_service_status(*name, status).await;
    }
}

/// What `/openapi.json` says about tally as a whole.
fn api_info() -> ApiInfo {
    ApiInfo {
        title: "tally".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        description: "A gRPC-first money ledger. Every RPC of tally.v1 is also served as HTTP \
                      JSON (proto3 JSON mapping); errors are {code, message, details} with the \
                      gRPC code number."
            .to_owned(),
        public_methods: METHOD_POLICIES
            .iter()
            .filter(|(_, access)| *access == Access::Public)
            .map(|(path, _)| (*path).to_owned())
            .collect(),
    }
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Ready when not draining and the database answers quickly.
async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    let ping = tokio::time::timeout(
        READINESS_DB_TIMEOUT,
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await;
    match ping {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}
