//! `tally worker`: drains the mail queue with bounded concurrency, retries with exponential
//! backoff up to a bounded number of attempts, dead-letters the rest, and on shutdown stops
//! taking jobs and gives the ones in flight a bounded time to finish.
//!
//! One mail per verification: a job locks its verification row (`FOR NO KEY UPDATE`) and its
//! outbox row, mints the code, sends, and deletes the outbox row in that one transaction. A
//! second delivery of the same job waits for the lock and then finds no outbox row, so it is
//! dropped. A failed send rolls back, counts an attempt in a transaction of its own, and leaves
//! the retry to the outbox sweep at `now + backoff(attempts)`; so attempt counts and backoff
//! survive restarts and Redis loss.
//!
//! Sending and committing cannot be one atomic step: if the database connection dies after
//! the SMTP server took the mail, the transaction rolls back and the job is retried, so that
//! user gets a second mail. Every code minted is therefore remembered (its hash, in
//! `verification_codes`) in a transaction of its own *before* the send, and every one works:
//! a duplicate is harmless, never a mail with a dead code. At least once, then, and exactly
//! once unless the connection dies in that window.
//!
//! The code is minted here, at send time, rather than with the verification: so the plain
//! secret is never at rest anywhere (not in PostgreSQL, not in the outbox, not in Redis),
//! only in the mail. PostgreSQL keeps its SHA-256.
//!
//! The worker serves Prometheus `/metrics` on its own small listener
//! (`TALLY_WORKER_METRICS_ADDR`): it has no other HTTP surface, and the job counters and
//! queue figures live in this process.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use apalis::prelude::{BoxDynError, Data, WorkerBuilder, WorkerBuilderExt as _};
use apalis_core::backend::Vacuum as _;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::Instrument as _;
use uuid::Uuid;

use super::{
    JobMetrics, JobMetricsSnapshot, MailJob,
    mail::{Mailer, VerificationMail},
    outbox,
    queue::{self, MailStorage},
};
use crate::{config::WorkerSettings, db, store, telemetry};

/// Bytes of randomness in a verification code.
pub const CODE_BYTES: usize = 32;
/// After the queue consumer fails (Redis gone), wait this long before starting it again.
const CONSUMER_RESTART_DELAY: Duration = Duration::from_secs(1);
/// apalis keeps every finished job's data in Redis; the sweeper deletes what finished more
/// than [`FINISHED_JOBS_KEPT`] ago, once per [`VACUUM_INTERVAL`], so Redis does not grow
/// with every mail ever sent.
const VACUUM_INTERVAL: Duration = Duration::from_secs(600);
/// How often audit events past `TALLY_AUDIT_RETENTION_DAYS` are deleted, and in what chunks
/// (each its own statement, so no one delete holds locks long).
pub const AUDIT_PRUNE_INTERVAL: Duration = Duration::from_secs(3_600);
const AUDIT_PRUNE_CHUNK: i64 = 10_000;
const FINISHED_JOBS_KEPT: Duration = Duration::from_secs(3_600);

/// Everything a job needs, shared by the jobs in flight.
struct JobContext {
    pool: PgPool,
    mailer: Mailer,
    settings: WorkerSettings,
    metrics: Arc<JobMetrics>,
}

/// A built, not yet running worker.
pub struct Worker {
    context: Arc<JobContext>,
    storage: MailStorage,
    metrics_listener: std::net::TcpListener,
}

/// What became of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Sent,
    Dropped(&'static str),
    Retry,
    Dead,
}

impl Worker {
    /// Connects to the database (which must be migrated) and prepares the mail transport.
    pub async fn build(settings: WorkerSettings) -> anyhow::Result<Self> {
        let pool = db::connect(&settings.database).await?;
        db::ensure_migrated(&pool).await?;
        Self::build_with_pool(settings, pool)
    }

    /// Like [`Worker::build`] with a pool the caller made (tests share theirs).
    pub fn build_with_pool(settings: WorkerSettings, pool: PgPool) -> anyhow::Result<Self> {
        telemetry::metrics::install();
        let mailer = Mailer::new(&settings.mail)?;
        // Bound now, so a taken port fails the start and tests can learn the real port.
        let metrics_listener =
            std::net::TcpListener::bind(settings.metrics_addr).with_context(|| {
                format!(
                    "TALLY_WORKER_METRICS_ADDR: binding {}",
                    settings.metrics_addr
                )
            })?;
        metrics_listener.set_nonblocking(true)?;
        let storage = queue::storage(&settings.queue, settings.concurrency, settings.queue_poll)?;
        Ok(Worker {
            context: Arc::new(JobContext {
                pool,
                mailer,
                settings,
                metrics: Arc::new(JobMetrics::default()),
            }),
            storage,
            metrics_listener,
        })
    }

    pub fn metrics(&self) -> Arc<JobMetrics> {
        self.context.metrics.clone()
    }

    /// The bound address of the `/metrics` listener.
    pub fn metrics_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.metrics_listener.local_addr()?)
    }

    /// Consumes the queue and sweeps the outbox until `shutdown` resolves; then stops taking
    pub fn pool(&self) -> &PgPool {
        &self.context.pool
    }

    pub fn settings(&self) -> &WorkerSettings {
        &self.context.settings
    }

    /// jobs, lets the ones in flight finish within `shutdown_drain`, and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Worker {
            context,
            storage,
            metrics_listener,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let metrics_server = serve_metrics(
            tokio::net::TcpListener::from_std(metrics_listener)?,
            stop_rx.clone(),
        );
        let sampler = telemetry::metrics::spawn_sampler(
            context.pool.clone(),
            context.settings.database.connections_max,
            Some(context.settings.queue.clone()),
            stop_rx.clone(),
        );
        let sweeper = tokio::spawn(sweep_loop(
            context.clone(),
            storage.clone(),
            stop_rx.clone(),
        ));
        let consumer = tokio::spawn(consume_loop(context.clone(), storage, stop_rx));
        tracing::info!(
            queue = %context.settings.queue.queue,
            concurrency = context.settings.concurrency,
            "worker started"
        );
        shutdown.await;
        tracing::info!(
            drain_secs = context.settings.shutdown_drain.as_secs(),
            "worker stopping: no new jobs, finishing the ones in flight"
        );
        let _ = stop_tx.send(true);
        let (consumer_abort, sweeper_abort) = (consumer.abort_handle(), sweeper.abort_handle());
        let drained = tokio::time::timeout(context.settings.shutdown_drain, async {
            let _ = consumer.await;
            let _ = sweeper.await;
        })
        .await;
        if drained.is_err() {
            // Their transactions roll back and their outbox rows stay; the sweep queues them
            // again when the lease runs out.
            tracing::warn!("drain time exceeded; abandoning the jobs still in flight");
            consumer_abort.abort();
            sweeper_abort.abort();
        }
        let _ = sampler.await;
        let _ = metrics_server.await;
        let JobMetricsSnapshot {
            sent,
            dropped,
            retried,
            dead,
            relayed,
        } = context.metrics.snapshot();
        tracing::info!(sent, dropped, retried, dead, relayed, "worker stopped");
        Ok(())
    }
}

/// Runs the apalis consumer, restarting it after a failure (such as Redis going away) until
/// asked to stop. A stop lets apalis finish the jobs it is running.
async fn consume_loop(
    context: Arc<JobContext>,
    storage: MailStorage,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let name = format!("tally-worker-{}", Uuid::now_v7());
        let worker = WorkerBuilder::new(name)
            .backend(storage.clone())
            .data(context.clone())
            .concurrency(context.settings.concurrency)
            .build(handle);
        let mut stopped = stop.clone();
        let result = worker
            .run_until(async move {
                let _ = stopped.wait_for(|s| *s).await;
                Ok::<(), std::io::Error>(())
            })
            .await;
        if *stop.borrow() {
            return;
        }
        if let Err(err) = result {
            tracing::warn!(error = %err, "mail queue consumer failed; restarting");
        }
        tokio::select! {
            () = tokio::time::sleep(CONSUMER_RESTART_DELAY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Pushes due outbox rows every `sweep_interval` (and vacuums finished jobs out of Redis now
/// and then) until asked to stop.
async fn sweep_loop(
    context: Arc<JobContext>,
    mut storage: MailStorage,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(context.settings.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_vacuum: Option<tokio::time::Instant> = None;
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match outbox::sweep(
            &context.pool,
            &mut storage,
            context.settings.queue.lease,
            &context.metrics,
        )
        .await
        {
            Ok(0) => {}
            Ok(pushed) => tracing::info!(pushed, "outbox sweep queued mail"),
            Err(err) => tracing::warn!(error = format!("{err:#}"), "outbox sweep failed"),
        }
        if last_prune.is_none_or(|at| at.elapsed() >= AUDIT_PRUNE_INTERVAL) {
            last_prune = Some(tokio::time::Instant::now());
            match prune_audit(&context.pool, context.settings.audit_retention).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "audit events past retention deleted"),
                Err(err) => tracing::warn!(error = format!("{err:#}"), "audit pruning failed"),
            }
        }
        if last_vacuum.is_none_or(|at| at.elapsed() >= VACUUM_INTERVAL) {
            last_vacuum = Some(tokio::time::Instant::now());
            match storage.vacuum_before(FINISHED_JOBS_KEPT).await {
                Ok(removed) => tracing::debug!(removed, "finished jobs vacuumed from Redis"),
                Err(err) => tracing::warn!(error = %err, "vacuuming finished jobs failed"),
            }
        }
    }
}

/// Deletes audit events older than `retention`, a chunk at a time; returns how many went.
pub async fn prune_audit(pool: &sqlx::PgPool, retention: Duration) -> crate::error::Result<u64> {
    let cutoff = time::OffsetDateTime::now_utc() - retention;
    let mut deleted = 0;
    loop {
        let mut conn = crate::db::acquire(pool).await?;
        let n = crate::store::audit::prune(&mut conn, cutoff, AUDIT_PRUNE_CHUNK).await?;
        deleted += n;
        if n < AUDIT_PRUNE_CHUNK as u64 {
            return Ok(deleted);
        }
    }
}

/// Serves `GET /metrics` (and nothing else) until `stop` turns true.
fn serve_metrics(
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route("/metrics", axum::routing::get(telemetry::metrics::render));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(err) = served {
            tracing::warn!(error = %err, "the worker's metrics listener failed");
        }
    })
}

/// The apalis handler. Only a broken database makes it fail; delivery failures are recorded
/// in the outbox and retried from there.
async fn handle(job: MailJob, context: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    let MailJob::VerificationMailV1 {
        verification_id,
        traceparent,
    } = job;
    let span = tracing::info_span!(
        "mail.job",
        otel.kind = "consumer",
        job.kind = "verification_mail.v1",
        verification.id = %verification_id,
        outcome = tracing::field::Empty,
    );
    // The job continues the trace of the call that owed the mail.
    telemetry::continue_trace_from(&span, traceparent.as_deref());
    let outcome = deliver(&context, verification_id)
        .instrument(span.clone())
        .await
        .map_err(|err| {
            let _entered = span.enter();
            tracing::error!(verification.id = %verification_id, error = format!("{err:#}"), "mail job failed");
            metrics::counter!("tally_mail_jobs_total", "outcome" => "failed").increment(1);
            span.record("outcome", "failed");
            BoxDynError::from(err)
        })?;
    let metrics = &context.metrics;
    let label = match outcome {
        Outcome::Sent => {
            JobMetrics::count(&metrics.sent);
            "sent"
        }
        Outcome::Dropped(why) => {
            JobMetrics::count(&metrics.dropped);
            let _entered = span.enter();
            tracing::info!(verification.id = %verification_id, reason = why, "mail job dropped");
            "dropped"
        }
        Outcome::Retry => {
            JobMetrics::count(&metrics.retried);
            "retried"
        }
        Outcome::Dead => {
            JobMetrics::count(&metrics.dead);
            "dead"
        }
    };
    span.record("outcome", label);
    metrics::counter!("tally_mail_jobs_total", "outcome" => label).increment(1);
    Ok(())
}

async fn deliver(context: &JobContext, verification_id: Uuid) -> anyhow::Result<Outcome> {
    let mut tx = crate::db::begin(&context.pool).await?;
    let Some(verification) = store::verifications::lock(&mut tx, verification_id).await? else {
        return Ok(Outcome::Dropped("verification deleted"));
    };
    let Some(owed) = store::mail::lock_by_verification(&mut tx, verification_id).await? else {
        return Ok(Outcome::Dropped("already handled"));
    };
    let unwanted = if verification.used_at.is_some() {
        Some("verification used")
    } else if verification.superseded_at.is_some() {
        Some("verification superseded")
    } else if verification.expires_at <= OffsetDateTime::now_utc() {
        Some("verification expired")
    } else if verification.mailed_at.is_some() {
        Some("already mailed")
    } else {
        None
    };
    if let Some(why) = unwanted {
        store::mail::delete_outbox(&mut tx, owed.id).await?;
        tx.commit().await?;
        return Ok(Outcome::Dropped(why));
    }
    let Some(user) = store::users::by_id(&mut tx, verification.user_id).await? else {
        return Ok(Outcome::Dropped("user deleted"));
    };

    let secret: [u8; CODE_BYTES] = rand::random();
    let code = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let code_hash = Sha256::digest(code.as_bytes());
    // Committed on its own before the send: if this transaction is lost after the SMTP server
    // took the mail, the retry mails another code, and this one still works.
    let mut own = crate::db::acquire(&context.pool).await?;
    store::verifications::remember_code(&mut own, verification_id, &code_hash).await?;
    drop(own);
    store::verifications::set_mailed(&mut tx, verification_id, &code_hash).await?;
    let message = context.mailer.compose(&VerificationMail {
        to: &verification.email,
        username: &user.username,
        verification_id,
        code: &code,
        expires_at: verification.expires_at,
    })?;
    match context.mailer.send(message).await {
        Ok(destination) => {
            store::mail::delete_outbox(&mut tx, owed.id).await?;
            tx.commit().await?;
            tracing::info!(
                verification.id = %verification_id,
                user.username = %user.username,
                to = %destination,
                "verification mail sent"
            );
            Ok(Outcome::Sent)
        }
        Err(err) => {
            tx.rollback().await?;
            record_failure(context, &owed, &format!("{err:#}")).await
        }
    }
}

/// Counts a failed attempt; schedules a retry or, after the last attempt, dead-letters.
async fn record_failure(
    context: &JobContext,
    owed: &store::mail::OutboxRow,
    error: &str,
) -> anyhow::Result<Outcome> {
    let settings = &context.settings;
    let attempts = u32::try_from(owed.attempts).unwrap_or(0).saturating_add(1);
    let backoff = backoff(settings.backoff_base, settings.backoff_max, attempts);
    let mut tx = crate::db::begin(&context.pool).await?;
    let backoff_ms = i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX);
    let recorded = store::mail::record_failure(&mut tx, owed.id, error, backoff_ms).await?;
    if u32::try_from(recorded).unwrap_or(u32::MAX) >= settings.attempts_max {
        store::mail::bury(&mut tx, owed, recorded, error).await?;
        tx.commit().await?;
        tracing::error!(
            verification.id = %owed.verification_id,
            attempts = recorded,
            error,
            "mail dead-lettered after its last attempt"
        );
        return Ok(Outcome::Dead);
    }
    tx.commit().await?;
    tracing::warn!(
        verification.id = %owed.verification_id,
        attempts = recorded,
        retry_in_ms = backoff_ms,
        error,
        "mail attempt failed; will retry"
    );
    Ok(Outcome::Retry)
}

/// `base * 2^(attempts - 1)`, capped at `max`.
pub fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(31);
    base.saturating_mul(1u32 << doublings).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_the_cap() {
        let base = Duration::from_secs(5);
        let max = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=6).map(|a| backoff(base, max, a).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(backoff(base, max, 1_000), max);
    }
}
