//! Queries on `mail_outbox` (mail owed) and `mail_dead_letters` (mail given up on).

use serde_json::Value;
use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

/// `last_error` is cut to this many characters (mirrors the CHECK constraints).
pub const LAST_ERROR_CHARS_MAX: usize = 2_000;

#[derive(Debug, Clone, FromRow)]
pub struct OutboxRow {
    pub id: Uuid,
    pub verification_id: Uuid,
    pub payload: Value,
    pub attempts: i32,
}

#[derive(Debug, Clone, FromRow)]
pub struct DeadLetterRow {
    pub id: Uuid,
    pub verification_id: Uuid,
    pub email: String,
    pub attempts: i32,
    pub last_error: String,
    pub dead_at: OffsetDateTime,
    pub requeued_at: Option<OffsetDateTime>,
}

pub async fn insert_outbox(
    conn: &mut PgConnection,
    id: Uuid,
    verification_id: Uuid,
    payload: &Value,
) -> Result<()> {
    sqlx::query("INSERT INTO mail_outbox (id, verification_id, payload) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(verification_id)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// Locks one outbox row if it is due and nobody else holds it.
pub async fn lock_due(conn: &mut PgConnection, id: Uuid) -> Result<Option<OutboxRow>> {
    Ok(sqlx::query_as::<_, OutboxRow>(
        "SELECT id, verification_id, payload, attempts FROM mail_outbox \
         WHERE id = $1 AND next_attempt_at <= now() FOR UPDATE SKIP LOCKED",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Locks up to `limit` due rows, oldest first, skipping rows another relay holds.
pub async fn lock_due_batch(conn: &mut PgConnection, limit: i64) -> Result<Vec<OutboxRow>> {
    Ok(sqlx::query_as::<_, OutboxRow>(
        "SELECT id, verification_id, payload, attempts FROM mail_outbox \
         WHERE next_attempt_at <= now() ORDER BY next_attempt_at, id \
         LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Records a push to the queue and leases the row: if no worker finishes it within
/// `lease_ms`, the sweep pushes it again.
pub async fn mark_relayed(conn: &mut PgConnection, id: Uuid, lease_ms: i64) -> Result<()> {
    sqlx::query(
        "UPDATE mail_outbox SET relayed_at = now(), relay_count = relay_count + 1, \
         next_attempt_at = now() + make_interval(secs => $2::float8 / 1000) WHERE id = $1",
    )
    .bind(id)
    .bind(lease_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// The outbox row of a verification, locked (the worker holds the verification lock first).
pub async fn lock_by_verification(
    conn: &mut PgConnection,
    verification_id: Uuid,
) -> Result<Option<OutboxRow>> {
    Ok(sqlx::query_as::<_, OutboxRow>(
        "SELECT id, verification_id, payload, attempts FROM mail_outbox \
         WHERE verification_id = $1 FOR UPDATE",
    )
    .bind(verification_id)
    .fetch_optional(conn)
    .await?)
}

pub async fn delete_outbox(conn: &mut PgConnection, id: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM mail_outbox WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Counts a failed attempt and schedules the next one after `backoff_ms`.
pub async fn record_failure(
    conn: &mut PgConnection,
    id: Uuid,
    error: &str,
    backoff_ms: i64,
) -> Result<i32> {
    Ok(sqlx::query_scalar(
        "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $2, \
         next_attempt_at = now() + make_interval(secs => $3::float8 / 1000) \
         WHERE id = $1 RETURNING attempts",
    )
    .bind(id)
    .bind(truncate(error))
    .bind(backoff_ms)
    .fetch_one(conn)
    .await?)
}

/// Moves an outbox row to the dead letters.
pub async fn bury(
    conn: &mut PgConnection,
    row: &OutboxRow,
    attempts: i32,
    error: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO mail_dead_letters (id, verification_id, payload, attempts, last_error) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(row.verification_id)
    .bind(&row.payload)
    .bind(attempts)
    .bind(truncate(error))
    .execute(&mut *conn)
    .await?;
    delete_outbox(conn, row.id).await
}

/// Dead letters, newest first; `include_requeued` also lists those already put back.
pub async fn dead_letters(
    conn: &mut PgConnection,
    include_requeued: bool,
    limit: i64,
) -> Result<Vec<DeadLetterRow>> {
    Ok(sqlx::query_as::<_, DeadLetterRow>(
        "SELECT d.id, d.verification_id, v.email, d.attempts, d.last_error, d.dead_at, \
         d.requeued_at FROM mail_dead_letters d \
         JOIN email_verifications v ON v.id = d.verification_id \
         WHERE $1 OR d.requeued_at IS NULL ORDER BY d.dead_at DESC, d.id LIMIT $2",
    )
    .bind(include_requeued)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Puts a dead letter back into the outbox with a fresh attempt budget. Returns the new
/// outbox id, or `None` when there is no such dead letter or it was requeued already (or its
/// verification already has mail owed).
pub async fn requeue(conn: &mut PgConnection, dead_letter_id: Uuid) -> Result<Option<Uuid>> {
    let Some((verification_id, payload)) = sqlx::query_as::<_, (Uuid, Value)>(
        "UPDATE mail_dead_letters SET requeued_at = now() \
         WHERE id = $1 AND requeued_at IS NULL RETURNING verification_id, payload",
    )
    .bind(dead_letter_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let outbox_id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO mail_outbox (id, verification_id, payload) VALUES ($1, $2, $3) \
         ON CONFLICT (verification_id) DO NOTHING",
    )
    .bind(outbox_id)
    .bind(verification_id)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok((inserted.rows_affected() == 1).then_some(outbox_id))
}

fn truncate(error: &str) -> String {
    error.chars().take(LAST_ERROR_CHARS_MAX).collect()
}
