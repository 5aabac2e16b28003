//! Queries on `currencies` and `accounts`.

use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

/// The owner name shown for system accounts (a reserved username).
pub const SYSTEM_OWNER: &str = "system";

#[derive(Debug, Clone, FromRow)]
pub struct AccountRow {
    pub id: Uuid,
    pub owner_id: Option<Uuid>,
    /// The owner's username, or `system`.
    pub owner: String,
    pub is_system: bool,
    pub name: String,
    pub currency: String,
    pub balance: i64,
    pub pending_debits: i64,
    pub pending_credits: i64,
    pub overdraft_limit: i64,
    pub closed_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// What a batch writes back for an account that moved: its balance and its live holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub balance: i64,
    pub pending_debits: i64,
    pub pending_credits: i64,
}

/// An account row under a `FOR NO KEY UPDATE` lock, as the transfer engine needs it.
#[derive(Debug, Clone, Default, FromRow)]
pub struct LockedAccount {
    pub id: Uuid,
    pub owner_id: Option<Uuid>,
    pub is_system: bool,
    /// The currency's liquidity account: the counterparty of conversions, never negative.
    pub is_liquidity: bool,
    pub currency: String,
    pub balance: i64,
    pub pending_debits: i64,
    pub pending_credits: i64,
    pub overdraft_limit: i64,
    pub closed: bool,
    /// The account's balance monitors, by id: one entry per monitor in each list.
    pub monitor_ids: Vec<Uuid>,
    pub monitor_above: Vec<bool>,
    pub monitor_thresholds: Vec<i64>,
    pub monitor_triggered: Vec<bool>,
}

/// A balance monitor as the transfer engine evaluates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorState {
    pub id: Uuid,
    /// ABOVE (the balance exceeds the threshold) or BELOW (it is under it).
    pub above: bool,
    pub threshold: i64,
    /// Whether the condition held after the account's last change.
    pub triggered: bool,
}

impl MonitorState {
    pub fn holds(&self, balance: i64) -> bool {
        if self.above {
            balance > self.threshold
        } else {
            balance < self.threshold
        }
    }
}

impl LockedAccount {
    pub fn monitors(&self) -> Vec<MonitorState> {
        (0..self.monitor_ids.len())
            .map(|i| MonitorState {
                id: self.monitor_ids[i],
                above: self.monitor_above[i],
                threshold: self.monitor_thresholds[i],
                triggered: self.monitor_triggered[i],
            })
            .collect()
    }
}

/// The locked columns, and the account's monitors gathered into lists by one lateral read
/// (an index probe per account; only the account rows are locked, `FOR … OF a`).
macro_rules! locked_columns {
    () => {
        "SELECT a.id, a.owner_id, a.is_system, a.is_liquidity, a.currency, a.balance, \
         a.pending_debits, a.pending_credits, a.overdraft_limit, a.closed_at IS NOT NULL AS closed, \
         COALESCE(m.ids, '{}') AS monitor_ids, COALESCE(m.above, '{}') AS monitor_above, \
         COALESCE(m.thresholds, '{}') AS monitor_thresholds, \
         COALESCE(m.triggered, '{}') AS monitor_triggered \
         FROM accounts a LEFT JOIN LATERAL (SELECT array_agg(id ORDER BY id) AS ids, \
           array_agg(condition = 'above' ORDER BY id) AS above, \
           array_agg(threshold ORDER BY id) AS thresholds, \
           array_agg(triggered ORDER BY id) AS triggered \
           FROM balance_monitors WHERE account_id = a.id) m ON true "
    };
}

macro_rules! select_account {
    () => {
        "SELECT a.id, a.owner_id, COALESCE(u.username, 'system') AS owner, a.is_system, a.name, \
         a.currency, a.balance, a.pending_debits, a.pending_credits, a.overdraft_limit, \
         a.closed_at, a.created_at, a.updated_at \
         FROM accounts a LEFT JOIN users u ON u.id = a.owner_id "
    };
}

/// Stores `code` if new; returns the exponent stored for it (which may differ).
pub async fn ensure_currency(conn: &mut PgConnection, code: &str, exponent: i16) -> Result<i16> {
    sqlx::query("INSERT INTO currencies (code, exponent) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(code)
        .bind(exponent)
        .execute(&mut *conn)
        .await?;
    Ok(
        sqlx::query_scalar("SELECT exponent FROM currencies WHERE code = $1")
            .bind(code)
            .fetch_one(conn)
            .await?,
    )
}

/// The accounts owned by nobody that every currency has one of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HouseAccount {
    /// The counterparty of deposits and withdrawals; may go negative.
    System,
    /// The counterparty of conversions; never negative.
    Liquidity,
}

/// Creates the `kind` account of `currency` unless one exists (replicas may race here).
pub async fn ensure_house_account(
    conn: &mut PgConnection,
    currency: &str,
    kind: HouseAccount,
) -> Result<()> {
    let (is_system, is_liquidity, name) = match kind {
        HouseAccount::System => (true, false, format!("{currency} system account")),
        HouseAccount::Liquidity => (false, true, format!("{currency} liquidity")),
    };
    sqlx::query(
        "INSERT INTO accounts (id, owner_id, is_system, is_liquidity, name, currency) \
         VALUES ($1, NULL, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(is_system)
    .bind(is_liquidity)
    .bind(name)
    .bind(currency)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every `kind` account, by currency (they never change once created).
pub async fn house_accounts(
    conn: &mut PgConnection,
    kind: HouseAccount,
) -> Result<Vec<(String, Uuid)>> {
    let query = match kind {
        HouseAccount::System => "SELECT currency, id FROM accounts WHERE is_system",
        HouseAccount::Liquidity => "SELECT currency, id FROM accounts WHERE is_liquidity",
    };
    Ok(sqlx::query_as(query).fetch_all(conn).await?)
}

pub async fn system_account_id(conn: &mut PgConnection, currency: &str) -> Result<Option<Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM accounts WHERE currency = $1 AND is_system")
            .bind(currency)
            .fetch_optional(conn)
            .await?,
    )
}

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    owner_id: Uuid,
    name: &str,
    currency: &str,
    overdraft_limit: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO accounts (id, owner_id, name, currency, overdraft_limit) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(owner_id)
    .bind(name)
    .bind(currency)
    .bind(overdraft_limit)
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks one account for a change of its settings (the transfer engine's batches take the same
/// row lock, so a change and a batch never interleave).
pub async fn lock_one(conn: &mut PgConnection, id: Uuid) -> Result<Option<LockedAccount>> {
    Ok(sqlx::query_as::<_, LockedAccount>(concat!(
        locked_columns!(),
        "WHERE a.id = $1 FOR NO KEY UPDATE OF a"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Sets an account's overdraft limit, and its name when `name` is given (else it keeps the one
/// it has under the row lock, so a concurrent rename is not undone).
pub async fn update_settings(
    conn: &mut PgConnection,
    id: Uuid,
    name: Option<&str>,
    overdraft_limit: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE accounts SET name = COALESCE($2, name), overdraft_limit = $3, updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(name)
    .bind(overdraft_limit)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks an account closed (the caller checked, under its row lock, that it is empty).
pub async fn close(conn: &mut PgConnection, id: Uuid) -> Result<()> {
    sqlx::query("UPDATE accounts SET closed_at = now(), updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn count_owned(conn: &mut PgConnection, owner_id: Uuid) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM accounts WHERE owner_id = $1")
            .bind(owner_id)
            .fetch_one(conn)
            .await?,
    )
}

pub async fn by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<AccountRow>> {
    Ok(
        sqlx::query_as::<_, AccountRow>(concat!(select_account!(), "WHERE a.id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

/// The accounts among `ids` (any order; missing ones are left out).
pub async fn by_ids(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<AccountRow>> {
    Ok(
        sqlx::query_as::<_, AccountRow>(concat!(select_account!(), "WHERE a.id = ANY($1)"))
            .bind(ids)
            .fetch_all(conn)
            .await?,
    )
}

/// The accounts of `owner_id` after `after` (by id), oldest first.
pub async fn page_owned(
    conn: &mut PgConnection,
    owner_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AccountRow>> {
    Ok(sqlx::query_as::<_, AccountRow>(concat!(
        select_account!(),
        "WHERE a.owner_id = $1 AND ($2::uuid IS NULL OR a.id > $2) ORDER BY a.id LIMIT $3"
    ))
    .bind(owner_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Locks the given accounts in ascending id order (the one lock order every transfer uses, so
/// two transfers over the same pair cannot deadlock). `FOR NO KEY UPDATE` rather than
/// `FOR UPDATE`: it does not conflict with the key-share locks that inserting entries and
/// transfers (foreign keys to these rows) takes.
pub async fn lock(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<LockedAccount>> {
    Ok(sqlx::query_as::<_, LockedAccount>(concat!(
        locked_columns!(),
        "WHERE a.id = ANY($1) ORDER BY a.id FOR NO KEY UPDATE OF a"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

/// The balances of `owner`'s accounts summed by currency (as text: a sum may pass `bigint`).
pub async fn balances_by_currency(
    conn: &mut PgConnection,
    owner: Uuid,
) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT currency, sum(balance)::text FROM accounts WHERE owner_id = $1 \
         GROUP BY currency ORDER BY currency",
    )
    .bind(owner)
    .fetch_all(conn)
    .await?)
}
