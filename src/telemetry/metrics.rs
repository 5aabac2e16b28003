//! Prometheus metrics: one recorder per process, rendered at `/metrics`.
//!
//! The code counts with the `metrics` crate's macros; [`install`] puts the Prometheus
//! recorder behind them once per process (tests start many apps in one process, so the
//! handle lives in a `OnceLock` and every app renders from it). Gauges that describe shared
//! state (the database pool, the outbox, the Redis queue) are sampled by [`spawn_sampler`]
//! on a fixed interval with bounded queries, not on every scrape, so a scrape storm cannot
//! load PostgreSQL or Redis.
//!
//! Series (see the README's Telemetry section and deploy/grafana/tally.json):
//! - `tally_rpc_requests_total{method,code}`, `tally_rpc_duration_seconds{method}` (histogram)
//! - `tally_transfers_total{kind,outcome}`, `tally_transfer_retries_total`,
//!   `tally_transfer_aborts_total`, `tally_transfer_batch_postings` and
//!   `tally_transfer_queue_wait_seconds` (histograms of the group-commit engine),
//!   `tally_holds_expired_total`
//! - `tally_db_pool_connections{state="in_use"|"idle"|"waiting"}`, `tally_db_pool_connections_max`
//!   (`waiting` is kept live by `db::acquire`/`db::begin`, not sampled)
//! - `tally_mail_outbox_backlog`, `tally_mail_queue_depth`
//! - `tally_mail_jobs_total{outcome}`, `tally_mail_outbox_relayed_total`
//! - `tally_rate_limited_total{budget}`, `tally_rpc_shed_total`, `tally_rpc_read_timeouts_total`,
//!   `tally_connections_refused_total`, `tally_password_hashes_total`,
//!   `tally_password_hash_rejected_total` (what the limits in `crate::limits` and the hashing
//!   pool turned away, and the hashes that ran)
//! - `tally_audit_events_written_total`, `tally_audit_events_dropped_total` (the audit trail)
//! - `tally_gateway_query_parameters_ignored_total` (HTTP JSON query parameters naming no field)

use std::{sync::OnceLock, time::Duration};

use axum::http::{StatusCode, header::CONTENT_TYPE};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::config::QueueSettings;

/// How often the sampled gauges are refreshed.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
/// One sample's queries give up after this long; the gauge keeps its last value.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
/// The outbox backlog is counted up to this many rows: enough to see trouble, cheap to ask.
pub const OUTBOX_BACKLOG_COUNT_MAX: i64 = 100_000;
/// Latency buckets of `tally_rpc_duration_seconds`, in seconds.
const RPC_DURATION_BUCKETS_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of `tally_transfer_batch_postings`: postings per batch transaction, up to the
/// engine's batch limit.
const BATCH_POSTINGS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8189.0,
];
/// Buckets of `tally_transfer_queue_wait_seconds`, in seconds.
const QUEUE_WAIT_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("tally_rpc_duration_seconds".to_owned()),
                RPC_DURATION_BUCKETS_SECONDS,
            )
            .expect("the bucket list is not empty")
            .set_buckets_for_metric(
                Matcher::Full("tally_transfer_batch_postings".to_owned()),
                BATCH_POSTINGS_BUCKETS,
            )
            .expect("the bucket list is not empty")
            .set_buckets_for_metric(
                Matcher::Full("tally_transfer_queue_wait_seconds".to_owned()),
                QUEUE_WAIT_BUCKETS_SECONDS,
            )
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        describe();
        handle
    })
}

/// What a described metric is, for `describe`.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    HistogramSeconds,
}

/// Every metric tally records, with the help text `/metrics` prints for it.
const DESCRIPTIONS: &[(Kind, &str, &str)] = &[
    (
        Kind::Counter,
        "tally_rpc_requests_total",
        "Calls by gRPC method and status code (gRPC, gRPC-web and HTTP JSON)",
    ),
    (
        Kind::HistogramSeconds,
        "tally_rpc_duration_seconds",
        "Call latency by gRPC method, until the last byte of the answer",
    ),
    (
        Kind::Counter,
        "tally_audit_events_written_total",
        "Audit events written to audit_events",
    ),
    (
        Kind::Counter,
        "tally_audit_events_dropped_total",
        "Audit events dropped: the writer's queue was full or its insert failed",
    ),
    (
        Kind::Counter,
        "tally_rate_limited_total",
        "Calls refused RATE_LIMITED, by budget (auth per address, write per user and address)",
    ),
    (
        Kind::Counter,
        "tally_holds_expired_total",
        "Holds marked expired, by a batch that touched their accounts or by the sweeper",
    ),
    (
        Kind::Counter,
        "tally_rpc_shed_total",
        "Calls shed with UNAVAILABLE because every TALLY_CONCURRENCY_MAX slot was taken",
    ),
    (
        Kind::Counter,
        "tally_rpc_read_timeouts_total",
        "Calls whose request message did not arrive within TALLY_REQUEST_READ_TIMEOUT_MS",
    ),
    (
        Kind::Counter,
        "tally_connections_refused_total",
        "Connections closed on accept: their peer held TALLY_CONNECTIONS_PER_PEER_MAX already",
    ),
    (
        Kind::Counter,
        "tally_password_hashes_total",
        "Password hashes and checks started (argon2id, 19 MiB each)",
    ),
    (
        Kind::Counter,
        "tally_password_hash_rejected_total",
        "Calls answered UNAVAILABLE: no password hashing turn within TALLY_HASH_WAIT_MS",
    ),
    (
        Kind::Counter,
        "tally_transfers_total",
        "Transfers, deposits and withdrawals by outcome",
    ),
    (
        Kind::Counter,
        "tally_transfer_retries_total",
        "Transfer batch transactions retried after a serialization failure or deadlock",
    ),
    (
        Kind::Counter,
        "tally_transfer_aborts_total",
        "Postings whose batch ran out of retries (answered ABORTED)",
    ),
    (
        Kind::Histogram,
        "tally_transfer_batch_postings",
        "Postings applied by one group-commit transaction",
    ),
    (
        Kind::HistogramSeconds,
        "tally_transfer_queue_wait_seconds",
        "Time a submission waited in the engine's queue before its batch began",
    ),
    (
        Kind::Gauge,
        "tally_db_pool_connections",
        "PostgreSQL pool connections by state (in_use, idle), and callers waiting for one (waiting)",
    ),
    (
        Kind::Gauge,
        "tally_db_pool_connections_max",
        "PostgreSQL pool size limit",
    ),
    (
        Kind::Gauge,
        "tally_mail_outbox_backlog",
        "Mail owed but not yet sent (mail_outbox rows, counted up to a bound)",
    ),
    (
        Kind::Gauge,
        "tally_mail_queue_depth",
        "Jobs waiting in the Redis mail queue",
    ),
    (
        Kind::Counter,
        "tally_mail_jobs_total",
        "Mail jobs by outcome",
    ),
    (
        Kind::Counter,
        "tally_mail_outbox_relayed_total",
        "Outbox rows pushed to the Redis queue",
    ),
    (
        Kind::Counter,
        "tally_gateway_query_parameters_ignored_total",
        "HTTP JSON query parameters ignored because they name no field of the request",
    ),
];

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    for &(kind, name, help) in DESCRIPTIONS {
        match kind {
            Kind::Counter => describe_counter!(name, help),
            Kind::Gauge => describe_gauge!(name, help),
            Kind::Histogram => describe_histogram!(name, help),
            Kind::HistogramSeconds => describe_histogram!(name, Unit::Seconds, help),
        }
    }
}

/// The `GET /metrics` handler: Prometheus text format.
pub async fn render() -> (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
) {
    let handle = install();
    handle.run_upkeep();
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
}

/// Samples the pool, outbox and queue gauges every [`SAMPLE_INTERVAL`] until `stop` turns
/// true. `queue` is `None` where no Redis queue is configured.
pub fn spawn_sampler(
    pool: PgPool,
    pool_max: u32,
    queue: Option<QueueSettings>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    install();
    let redis = queue.and_then(|q| {
        redis::Client::open(q.redis_url.as_str())
            .ok()
            .map(|client| (client, q.queue))
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            sample_pool(&pool, pool_max);
            if let Ok(Ok(backlog)) =
                tokio::time::timeout(SAMPLE_TIMEOUT, outbox_backlog(&pool)).await
            {
                metrics::gauge!("tally_mail_outbox_backlog").set(backlog as f64);
            }
            if let Some((client, queue)) = &redis {
                match tokio::time::timeout(SAMPLE_TIMEOUT, queue_depth(client, &mut conn, queue))
                    .await
                {
                    Ok(Ok(depth)) => metrics::gauge!("tally_mail_queue_depth").set(depth as f64),
                    Ok(Err(err)) => {
                        conn = None;
                        tracing::debug!(error = %err, "sampling the mail queue depth failed");
                    }
                    Err(_) => conn = None,
                }
            }
        }
    })
}

fn sample_pool(pool: &PgPool, pool_max: u32) {
    let size = pool.size();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
    metrics::gauge!("tally_db_pool_connections", "state" => "in_use").set(f64::from(size - idle));
    metrics::gauge!("tally_db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("tally_db_pool_connections_max").set(f64::from(pool_max));
}

async fn outbox_backlog(pool: &PgPool) -> sqlx::Result<i64> {
    // Bounded: counts at most OUTBOX_BACKLOG_COUNT_MAX rows however large the table grows.
    sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM mail_outbox LIMIT $1) AS owed")
        .bind(OUTBOX_BACKLOG_COUNT_MAX)
        .fetch_one(pool)
        .await
}

/// Jobs waiting in apalis' Redis storage: its active (ready) list plus its scheduled set.
async fn queue_depth(
    client: &redis::Client,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    queue: &str,
) -> redis::RedisResult<u64> {
    if conn.is_none() {
        *conn = Some(client.get_multiplexed_async_connection().await?);
    }
    let Some(conn) = conn.as_mut() else {
        return Ok(0);
    };
    // apalis names its keys; ask its config rather than repeating the format.
    let config = apalis_redis::Config::default().queue(queue);
    let (active, scheduled): (u64, u64) = redis::pipe()
        .llen(config.active_jobs_list())
        .zcard(config.scheduled_jobs_set())
        .query_async(conn)
        .await?;
    Ok(active + scheduled)
}
