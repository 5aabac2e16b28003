//! Queries on `balance_monitors`.

use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct MonitorRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub created_by: Uuid,
    /// `above` or `below`.
    pub condition: String,
    pub threshold: i64,
    pub triggered: bool,
    pub created_at: OffsetDateTime,
}

macro_rules! monitor_columns {
    () => {
        "id, account_id, created_by, condition, threshold, triggered, created_at"
    };
}

pub async fn insert(conn: &mut PgConnection, row: &MonitorRow) -> Result<MonitorRow> {
    Ok(sqlx::query_as::<_, MonitorRow>(concat!(
        "INSERT INTO balance_monitors (id, account_id, created_by, condition, threshold, \
           triggered) VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        monitor_columns!()
    ))
    .bind(row.id)
    .bind(row.account_id)
    .bind(row.created_by)
    .bind(&row.condition)
    .bind(row.threshold)
    .bind(row.triggered)
    .fetch_one(conn)
    .await?)
}

pub async fn count_for_account(conn: &mut PgConnection, account_id: Uuid) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM balance_monitors WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(conn)
            .await?,
    )
}

/// The monitors of an account, oldest first.
pub async fn for_account(conn: &mut PgConnection, account_id: Uuid) -> Result<Vec<MonitorRow>> {
    Ok(sqlx::query_as::<_, MonitorRow>(concat!(
        "SELECT ",
        monitor_columns!(),
        " FROM balance_monitors WHERE account_id = $1 ORDER BY id"
    ))
    .bind(account_id)
    .fetch_all(conn)
    .await?)
}

/// The monitors among `ids` (missing ones are left out).
pub async fn by_ids(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<MonitorRow>> {
    Ok(sqlx::query_as::<_, MonitorRow>(concat!(
        "SELECT ",
        monitor_columns!(),
        " FROM balance_monitors WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM balance_monitors WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes the monitors' states a batch changed (its accounts are locked).
pub async fn set_triggered(conn: &mut PgConnection, changes: &[(Uuid, bool)]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = changes.iter().map(|c| c.0).collect();
    let triggered: Vec<bool> = changes.iter().map(|c| c.1).collect();
    sqlx::query(
        "UPDATE balance_monitors m SET triggered = v.triggered \
         FROM UNNEST($1::uuid[], $2::bool[]) AS v(id, triggered) WHERE m.id = v.id",
    )
    .bind(ids)
    .bind(triggered)
    .execute(conn)
    .await?;
    Ok(())
}
