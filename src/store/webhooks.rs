//! Queries on `webhooks` and `webhook_dead_letters`.

use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct WebhookRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub account_id: Option<Uuid>,
    pub secret: String,
    pub delivered_through: i64,
    pub attempts: i32,
    pub next_attempt_at: OffsetDateTime,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
}

macro_rules! webhook_columns {
    () => {
        "id, owner_id, url, event_types, account_id, secret, delivered_through, attempts, \
         next_attempt_at, last_error, created_at"
    };
}

pub struct NewWebhook<'a> {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub url: &'a str,
    pub event_types: &'a [String],
    pub account_id: Option<Uuid>,
    pub secret: &'a str,
}

/// Stores a webhook that delivers the events after the newest one committed now.
pub async fn insert(conn: &mut PgConnection, w: NewWebhook<'_>) -> Result<WebhookRow> {
    Ok(sqlx::query_as::<_, WebhookRow>(concat!(
        "INSERT INTO webhooks (id, owner_id, url, event_types, account_id, secret, \
           delivered_through) \
         VALUES ($1, $2, $3, $4, $5, $6, \
           (SELECT COALESCE(max(sequence), 0) FROM ledger_events)) RETURNING ",
        webhook_columns!()
    ))
    .bind(w.id)
    .bind(w.owner_id)
    .bind(w.url)
    .bind(w.event_types)
    .bind(w.account_id)
    .bind(w.secret)
    .fetch_one(conn)
    .await?)
}

pub async fn count_owned(conn: &mut PgConnection, owner_id: Uuid) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM webhooks WHERE owner_id = $1")
            .bind(owner_id)
            .fetch_one(conn)
            .await?,
    )
}

/// The webhooks of `owner_id`, oldest first.
pub async fn owned(conn: &mut PgConnection, owner_id: Uuid) -> Result<Vec<WebhookRow>> {
    Ok(sqlx::query_as::<_, WebhookRow>(concat!(
        "SELECT ",
        webhook_columns!(),
        " FROM webhooks WHERE owner_id = $1 ORDER BY created_at, id"
    ))
    .bind(owner_id)
    .fetch_all(conn)
    .await?)
}

/// Deletes `id` if `owner_id` owns it; whether it did.
pub async fn delete_owned(conn: &mut PgConnection, id: Uuid, owner_id: Uuid) -> Result<bool> {
    let deleted = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND owner_id = $2")
        .bind(id)
        .bind(owner_id)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Locks one webhook that is due and has events after its cursor (another worker's are
/// skipped), for this transaction.
pub async fn lock_due(conn: &mut PgConnection) -> Result<Option<WebhookRow>> {
    Ok(sqlx::query_as::<_, WebhookRow>(concat!(
        "SELECT ",
        webhook_columns!(),
        " FROM webhooks WHERE next_attempt_at <= now() \
           AND delivered_through < (SELECT COALESCE(max(sequence), 0) FROM ledger_events) \
         ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    ))
    .fetch_optional(conn)
    .await?)
}

/// The next event was delivered, or none after the cursor was the webhook's: moves on.
pub async fn advance(conn: &mut PgConnection, id: Uuid, through: i64) -> Result<()> {
    sqlx::query(
        "UPDATE webhooks SET delivered_through = $2, attempts = 0, next_attempt_at = now(), \
           last_error = NULL WHERE id = $1",
    )
    .bind(id)
    .bind(through)
    .execute(conn)
    .await?;
    Ok(())
}

/// An attempt at the next event failed: try again at `next_attempt_at`.
pub async fn failed(
    conn: &mut PgConnection,
    id: Uuid,
    attempts: i32,
    next_attempt_at: OffsetDateTime,
    error: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE webhooks SET attempts = $2, next_attempt_at = $3, last_error = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(attempts)
    .bind(next_attempt_at)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// The event `sequence` failed every attempt: a dead letter, and the webhook moves past it.
pub async fn dead_letter(
    conn: &mut PgConnection,
    id: Uuid,
    sequence: i64,
    attempts: i32,
    error: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO webhook_dead_letters (id, webhook_id, sequence, attempts, last_error) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (webhook_id, sequence) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(id)
    .bind(sequence)
    .bind(attempts)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE webhooks SET delivered_through = $2, attempts = 0, next_attempt_at = now(), \
           last_error = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(sequence)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct DeadLetterRow {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub url: String,
    pub sequence: i64,
    pub attempts: i32,
    pub last_error: String,
    pub dead_at: OffsetDateTime,
    pub requeued_at: Option<OffsetDateTime>,
    pub delivered_at: Option<OffsetDateTime>,
}

/// Dead letters, newest first: those not requeued, or with `all` every one.
pub async fn dead_letters(
    conn: &mut PgConnection,
    all: bool,
    limit: i64,
) -> Result<Vec<DeadLetterRow>> {
    Ok(sqlx::query_as::<_, DeadLetterRow>(
        "SELECT d.id, d.webhook_id, w.url, d.sequence, d.attempts, d.last_error, d.dead_at, \
           d.requeued_at, d.delivered_at \
         FROM webhook_dead_letters d JOIN webhooks w ON w.id = d.webhook_id \
         WHERE $1 OR d.requeued_at IS NULL ORDER BY d.dead_at DESC, d.id LIMIT $2",
    )
    .bind(all)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Marks a dead letter for one more delivery; whether there was one waiting.
pub async fn requeue(conn: &mut PgConnection, id: Uuid) -> Result<bool> {
    let updated = sqlx::query(
        "UPDATE webhook_dead_letters SET requeued_at = now() \
         WHERE id = $1 AND requeued_at IS NULL",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Locks one requeued dead letter not delivered yet, with its webhook.
pub async fn lock_requeued(conn: &mut PgConnection) -> Result<Option<(Uuid, i64, WebhookRow)>> {
    let Some((letter, webhook_id, sequence)): Option<(Uuid, Uuid, i64)> = sqlx::query_as(
        "SELECT id, webhook_id, sequence FROM webhook_dead_letters \
         WHERE requeued_at IS NOT NULL AND delivered_at IS NULL \
         ORDER BY requeued_at LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let webhook = sqlx::query_as::<_, WebhookRow>(concat!(
        "SELECT ",
        webhook_columns!(),
        " FROM webhooks WHERE id = $1"
    ))
    .bind(webhook_id)
    .fetch_one(conn)
    .await?;
    Ok(Some((letter, sequence, webhook)))
}

pub async fn mark_redelivered(conn: &mut PgConnection, letter: Uuid) -> Result<()> {
    sqlx::query("UPDATE webhook_dead_letters SET delivered_at = now() WHERE id = $1")
        .bind(letter)
        .execute(conn)
        .await?;
    Ok(())
}

/// A requeued dead letter failed again: it waits for another requeue.
pub async fn unrequeue(conn: &mut PgConnection, letter: Uuid, error: &str) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_dead_letters SET requeued_at = NULL, attempts = attempts + 1, \
           last_error = $2, dead_at = now() WHERE id = $1",
    )
    .bind(letter)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}
