//! Queries on `transfers` and `entries`.

use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct TransferRow {
    pub id: Uuid,
    pub seq: i64,
    pub kind: String,
    pub requested_by: Uuid,
    pub from_account_id: Uuid,
    pub to_account_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub memo: String,
    pub fingerprint: Vec<u8>,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, FromRow)]
pub struct EntryRow {
    pub id: Uuid,
    pub seq: i64,
    pub account_id: Uuid,
    pub transfer_id: Uuid,
    pub amount: i64,
    pub balance_after: i64,
    pub created_at: OffsetDateTime,
}

macro_rules! transfer_columns {
    () => {
        "id, seq, kind, requested_by, from_account_id, to_account_id, amount, currency, status, \
         failure_reason, memo, fingerprint, created_at"
    };
}

pub struct NewTransfer<'a> {
    pub id: Uuid,
    pub kind: &'a str,
    pub requested_by: Uuid,
    pub from_account_id: Uuid,
    pub to_account_id: Uuid,
    pub amount: i64,
    pub currency: &'a str,
    pub status: &'a str,
    pub failure_reason: Option<&'a str>,
    pub memo: &'a str,
    pub fingerprint: &'a [u8],
}

pub async fn by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<TransferRow>> {
    Ok(sqlx::query_as::<_, TransferRow>(concat!(
        "SELECT ",
        transfer_columns!(),
        " FROM transfers WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Inserts a transfer and returns it as stored. A concurrent insert of the same id surfaces as
/// a unique violation (or a serialization failure), which the engine retries as a replay.
pub async fn insert(conn: &mut PgConnection, t: NewTransfer<'_>) -> Result<TransferRow> {
    sqlx::query_as::<_, TransferRow>(concat!(
        "INSERT INTO transfers (id, kind, requested_by, from_account_id, to_account_id, amount, \
         currency, status, failure_reason, memo, fingerprint) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ",
        transfer_columns!()
    ))
    .bind(t.id)
    .bind(t.kind)
    .bind(t.requested_by)
    .bind(t.from_account_id)
    .bind(t.to_account_id)
    .bind(t.amount)
    .bind(t.currency)
    .bind(t.status)
    .bind(t.failure_reason)
    .bind(t.memo)
    .bind(t.fingerprint)
    .fetch_one(conn)
    .await
    .map_err(|err| match super::violated_constraint(&err) {
        // Another transaction inserted this id first: retrying turns this into a replay.
        Some("transfers_pkey") => Error::Conflict(err),
        _ => err.into(),
    })
}

pub async fn insert_entry(
    conn: &mut PgConnection,
    account_id: Uuid,
    transfer_id: Uuid,
    amount: i64,
    balance_after: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO entries (id, account_id, transfer_id, amount, balance_after) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(account_id)
    .bind(transfer_id)
    .bind(amount)
    .bind(balance_after)
    .execute(conn)
    .await?;
    Ok(())
}

/// Transfers touching `account_id` with `seq` below `before`, newest first. Two index scans
/// (one per side) rather than an `OR`, so each walks its index in order.
pub async fn page_for_account(
    conn: &mut PgConnection,
    account_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<TransferRow>> {
    Ok(sqlx::query_as::<_, TransferRow>(concat!(
        "SELECT * FROM (",
        "(SELECT ",
        transfer_columns!(),
        " FROM transfers WHERE from_account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3) ",
        "UNION ALL (SELECT ",
        transfer_columns!(),
        " FROM transfers WHERE to_account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3)",
        ") t ORDER BY seq DESC LIMIT $3"
    ))
    .bind(account_id)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Entries of `account_id` with `seq` below `before`, newest first.
pub async fn entries_page(
    conn: &mut PgConnection,
    account_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<EntryRow>> {
    Ok(sqlx::query_as::<_, EntryRow>(
        "SELECT id, seq, account_id, transfer_id, amount, balance_after, created_at \
         FROM entries WHERE account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
    )
    .bind(account_id)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(conn)
    .await?)
}
