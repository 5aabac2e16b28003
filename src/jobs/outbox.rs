//! The outbox relay: moves `mail_outbox` rows into the Redis queue.
//!
//! A Redis push cannot join a PostgreSQL transaction, so the transaction that creates a
//! verification writes an outbox row instead, and this relay pushes it afterwards, in two
//! places on purpose:
//! - `serve` pushes right after the commit ([`Relay::kick`]), so mail goes out promptly. It is
//!   best effort and off the request path: a failure is logged and left to the sweep.
//! - `tally worker` sweeps ([`sweep`]) every `TALLY_OUTBOX_SWEEP_INTERVAL_MS` for rows that
//!   are due: never pushed (Redis was down, `serve` died, the row came from `tally admin`),
//!   scheduled for a retry, or pushed but not finished within their lease (a job lost with
//!   Redis or with a killed worker). The sweep lives in the worker because it is the process
//!   that exists to move mail, and it runs there exactly as long as anything can consume the
//!   queue; `serve` replicas scale with traffic and keep only the loops their calls need (the
//!   hold sweeper, the audit writer, the rates poller, the metrics sampler), none of them mail.
//!
//! Rows are locked with `FOR UPDATE SKIP LOCKED`, so any number of relays and sweeps run side
//! by side without pushing one row twice at once. Pushing a row twice over time is harmless:
//! the worker sends at most once per outbox row (see [`super::worker`]).

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tracing::Instrument as _;
use uuid::Uuid;

use super::{
    JobMetrics, MailJob,
    queue::{self, MailStorage},
};
use crate::store;

/// Outbox ids waiting for the post-commit push; when full, new ids are left to the sweep.
pub const RELAY_CHANNEL_CAPACITY: usize = 1_024;
/// Rows one sweep pushes at most; the next sweep takes the rest.
pub const SWEEP_BATCH_MAX: i64 = 500;

/// The post-commit push of `serve`: a bounded channel into one background task.
#[derive(Clone)]
pub struct Relay {
    tx: mpsc::Sender<Uuid>,
}

impl Relay {
    /// Starts the background task; it ends when every `Relay` clone is dropped.
    pub fn spawn(pool: PgPool, mut storage: MailStorage, lease: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<Uuid>(RELAY_CHANNEL_CAPACITY);
        tokio::spawn(async move {
            while let Some(outbox_id) = rx.recv().await {
                match relay_one(&pool, &mut storage, outbox_id, lease).await {
                    Ok(_) => {}
                    Err(err) => tracing::warn!(
                        outbox.id = %outbox_id,
                        error = format!("{err:#}"),
                        "mail relay failed; the outbox sweep will queue it"
                    ),
                }
            }
        });
        Relay { tx }
    }

    /// Asks for an immediate push of a committed outbox row. Never blocks.
    pub fn kick(&self, outbox_id: Uuid) {
        if self.tx.try_send(outbox_id).is_err() {
            tracing::warn!(outbox.id = %outbox_id, "mail relay busy; the outbox sweep will queue it");
        }
    }
}

/// Pushes one outbox row if it is due and unclaimed; returns whether it pushed.
pub async fn relay_one(
    pool: &PgPool,
    storage: &mut MailStorage,
    outbox_id: Uuid,
    lease: Duration,
) -> anyhow::Result<bool> {
    let mut tx = crate::db::begin(pool).await?;
    let Some(row) = store::mail::lock_due(&mut tx, outbox_id).await? else {
        return Ok(false);
    };
    push_row(&mut tx, storage, &row, lease).await?;
    tx.commit().await?;
    Ok(true)
}

/// Pushes every due row (up to [`SWEEP_BATCH_MAX`]); returns how many it pushed. Rows pushed
/// before a failure stay marked; the rest wait for the next sweep.
pub async fn sweep(
    pool: &PgPool,
    storage: &mut MailStorage,
    lease: Duration,
    metrics: &JobMetrics,
) -> anyhow::Result<usize> {
    let mut tx = crate::db::begin(pool).await?;
    let rows = store::mail::lock_due_batch(&mut tx, SWEEP_BATCH_MAX).await?;
    let mut pushed = 0;
    let mut failure = None;
    for row in &rows {
        match push_row(&mut tx, storage, row, lease).await {
            Ok(()) => {
                pushed += 1;
                JobMetrics::count(&metrics.relayed);
                ::metrics::counter!("tally_mail_outbox_relayed_total").increment(1);
            }
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    tx.commit().await?;
    match failure {
        Some(err) => Err(err.context(format!("pushed {pushed} of {} due mails", rows.len()))),
        None => Ok(pushed),
    }
}

async fn push_row(
    conn: &mut sqlx::PgConnection,
    storage: &mut MailStorage,
    row: &store::mail::OutboxRow,
    lease: Duration,
) -> anyhow::Result<()> {
    let job: MailJob = serde_json::from_value(row.payload.clone())
        .map_err(|err| anyhow::anyhow!("outbox row {} has an unknown payload: {err}", row.id))?;
    let span = tracing::info_span!(
        "outbox.relay",
        otel.kind = "producer",
        outbox.id = %row.id,
        verification.id = %row.verification_id,
    );
    // The push belongs to the trace of the call that owed the mail, like the job itself.
    let MailJob::VerificationMailV1 { traceparent, .. } = &job;
    crate::telemetry::continue_trace_from(&span, traceparent.as_deref());
    async {
        queue::push(storage, job).await?;
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        store::mail::mark_relayed(conn, row.id, lease_ms).await?;
        tracing::debug!(outbox.id = %row.id, verification.id = %row.verification_id, "mail queued");
        Ok(())
    }
    .instrument(span)
    .await
}
