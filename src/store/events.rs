//! Queries on `ledger_events` (the change feed) and `ledger_event_cursors`.

use sqlx::{
    FromRow, PgConnection, Postgres,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef},
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    accounts::Position,
    transfers::{Status, text_enum},
};
use crate::error::Result;

text_enum! {
    /// `ledger_events.type`: what happened (the names the feed publishes).
    pub enum EventType {
        /// A transfer was recorded: succeeded, failed, or a hold now pending.
        TransferCreated => "transfer.created",
        /// A hold was posted (all or part of it).
        TransferPosted => "transfer.posted",
        /// A hold was voided.
        TransferVoided => "transfer.voided",
        /// A hold reached its timeout unposted.
        TransferExpired => "transfer.expired",
        AccountOpened => "account.opened",
        AccountClosed => "account.closed",
        /// A balance monitor's condition came to hold.
        BalanceMonitorTriggered => "balance_monitor.triggered",
    }
}

/// An event to write, in the transaction of the change it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventType,
    /// A transfer event's source, or an account event's account.
    pub account_id: Uuid,
    pub account: Position,
    /// A transfer event's destination and its position.
    pub counterparty: Option<(Uuid, Position)>,
    /// A transfer event's transfer, with its status and posted amount right after the event.
    pub transfer: Option<(Uuid, Status, Option<i64>)>,
    /// A monitor event's monitor.
    pub monitor: Option<Uuid>,
}

impl NewEvent {
    pub fn account(kind: EventType, account_id: Uuid, position: Position) -> Self {
        Self {
            kind,
            account_id,
            account: position,
            counterparty: None,
            transfer: None,
            monitor: None,
        }
    }
}

#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct EventRow {
    pub sequence: i64,
    #[sqlx(rename = "type")]
    pub kind: EventType,
    pub occurred_at: OffsetDateTime,
    pub account_id: Uuid,
    pub counterparty_id: Option<Uuid>,
    pub transfer_id: Option<Uuid>,
    pub status: Option<Status>,
    pub posted_amount: Option<i64>,
    pub account_balance: i64,
    pub account_pending_debits: i64,
    pub account_pending_credits: i64,
    pub counterparty_balance: Option<i64>,
    pub counterparty_pending_debits: Option<i64>,
    pub counterparty_pending_credits: Option<i64>,
    pub monitor_id: Option<Uuid>,
}

macro_rules! event_columns {
    () => {
        "sequence, type, occurred_at, account_id, counterparty_id, transfer_id, status, \
         posted_amount, account_balance, account_pending_debits, account_pending_credits, \
         counterparty_balance, counterparty_pending_debits, counterparty_pending_credits, \
         monitor_id"
    };
}

/// Takes `ledger_writer`, which every writer of `ledger_events` holds (see the migration):
/// account opening and closing call it first, before any row lock, as the engine's batches do.
pub async fn lock_writer(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("LOCK TABLE ledger_writer IN EXCLUSIVE MODE")
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes `events` in order (their sequences ascend in that order). The caller holds
/// `ledger_writer`.
pub async fn insert_many(conn: &mut PgConnection, events: &[NewEvent]) -> Result<()> {
    let writes = super::batch::Writes {
        events,
        ..Default::default()
    };
    super::batch::write(conn, writes).await.map(|_| ())
}

/// Events after `after`, oldest first, at most `limit`.
pub async fn after(conn: &mut PgConnection, after: i64, limit: i64) -> Result<Vec<EventRow>> {
    Ok(sqlx::query_as::<_, EventRow>(concat!(
        "SELECT ",
        event_columns!(),
        " FROM ledger_events WHERE sequence > $1 ORDER BY sequence LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The events of one account after `after`, oldest first, at most `limit`: two ordered index
/// scans (one per side) rather than an `OR`.
pub async fn after_for_account(
    conn: &mut PgConnection,
    account_id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<EventRow>> {
    Ok(sqlx::query_as::<_, EventRow>(concat!(
        "SELECT * FROM ((SELECT ",
        event_columns!(),
        " FROM ledger_events WHERE account_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3) \
         UNION ALL (SELECT ",
        event_columns!(),
        " FROM ledger_events WHERE counterparty_id = $1 AND sequence > $2 \
           ORDER BY sequence LIMIT $3)) e ORDER BY sequence LIMIT $3"
    ))
    .bind(account_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The newest sequence taken (committed or not; 0 before the first event).
pub async fn last_sequence(conn: &mut PgConnection) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(max(sequence), 0) FROM ledger_events")
            .fetch_one(conn)
            .await?,
    )
}

/// How far the relay `name` has published (0 when it never has).
pub async fn cursor(conn: &mut PgConnection, name: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE((SELECT published_through FROM ledger_event_cursors WHERE name = $1), 0)",
    )
    .bind(name)
    .fetch_one(conn)
    .await?)
}

/// The events after the cursor of relay `name`, oldest first, at most `limit`, with the
/// cursor's row locked for this transaction; none when another relay holds it (relays take
/// turns rather than wait) or when the row is missing ([`create_cursor`]). One statement: a
/// relay runs this every round, busy or not.
pub async fn lock_cursor_and_read(
    conn: &mut PgConnection,
    name: &str,
    limit: i64,
) -> Result<Vec<EventRow>> {
    Ok(sqlx::query_as::<_, EventRow>(concat!(
        "SELECT ",
        event_columns!(),
        " FROM ledger_events WHERE sequence > (SELECT published_through \
           FROM ledger_event_cursors WHERE name = $1 FOR UPDATE SKIP LOCKED) \
         ORDER BY sequence LIMIT $2"
    ))
    .bind(name)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Creates the cursor of relay `name` at 0 unless it exists.
pub async fn create_cursor(conn: &mut PgConnection, name: &str) -> Result<()> {
    sqlx::query("INSERT INTO ledger_event_cursors (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves the relay `name` forward to `through` (never back: relays of several replicas race).
pub async fn advance_cursor(conn: &mut PgConnection, name: &str, through: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO ledger_event_cursors (name, published_through) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET published_through = \
           GREATEST(ledger_event_cursors.published_through, EXCLUDED.published_through)",
    )
    .bind(name)
    .bind(through)
    .execute(conn)
    .await?;
    Ok(())
}
