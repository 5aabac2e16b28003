//! Queries on `exchange_rates` and `quotes`.

use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

/// One pair's rate as stored (`rate` as numeric's own text: exact).
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct RateRow {
    pub base_currency: String,
    pub quote_currency: String,
    pub rate: String,
    pub spread_bps: i32,
    pub version: i64,
    pub updated_at: OffsetDateTime,
}

/// The columns of a [`RateRow`] (a macro, so queries stay `&'static str`).
macro_rules! rate_columns {
    () => {
        "base_currency, quote_currency, rate::text AS rate, spread_bps, version, updated_at"
    };
}

/// Sets a pair's rate and spread with the next version, replacing its earlier rate.
pub async fn upsert_rate(
    conn: &mut PgConnection,
    base: &str,
    quote: &str,
    rate: &str,
    spread_bps: i32,
    set_by: Uuid,
) -> Result<RateRow> {
    Ok(sqlx::query_as::<_, RateRow>(concat!(
        "INSERT INTO exchange_rates (base_currency, quote_currency, rate, spread_bps, version, \
             set_by) \
         VALUES ($1, $2, $3::numeric, $4, nextval('exchange_rates_version'), $5) \
         ON CONFLICT (base_currency, quote_currency) DO UPDATE SET rate = EXCLUDED.rate, \
             spread_bps = EXCLUDED.spread_bps, version = EXCLUDED.version, \
             set_by = EXCLUDED.set_by, updated_at = now() \
         RETURNING ",
        rate_columns!()
    ))
    .bind(base)
    .bind(quote)
    .bind(rate)
    .bind(spread_bps)
    .bind(set_by)
    .fetch_one(conn)
    .await?)
}

/// Every pair's rate.
pub async fn rates(conn: &mut PgConnection) -> Result<Vec<RateRow>> {
    Ok(sqlx::query_as::<_, RateRow>(concat!(
        "SELECT ",
        rate_columns!(),
        " FROM exchange_rates ORDER BY base_currency, quote_currency"
    ))
    .fetch_all(conn)
    .await?)
}

/// The rate that prices `from` into `to`: the pair as named (`true`), else the pair the other
/// way round (`false`).
pub async fn rate_between(
    conn: &mut PgConnection,
    from: &str,
    to: &str,
) -> Result<Option<(RateRow, bool)>> {
    let row = sqlx::query_as::<_, RateRow>(concat!(
        "SELECT ",
        rate_columns!(),
        " FROM exchange_rates \
         WHERE (base_currency, quote_currency) IN (($1, $2), ($2, $1)) \
         ORDER BY base_currency = $1 DESC LIMIT 1"
    ))
    .bind(from)
    .bind(to)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| {
        let direct = row.base_currency == from;
        (row, direct)
    }))
}

#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct QuoteRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub from_currency: String,
    pub to_currency: String,
    pub from_amount: i64,
    pub to_amount: i64,
    pub rate: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// The columns of a [`QuoteRow`].
macro_rules! quote_columns {
    () => {
        "id, owner_id, from_currency, to_currency, from_amount, to_amount, rate, created_at, \
         expires_at"
    };
}

/// A new quote, living `ttl_ms` from the database's now.
#[derive(Debug, Clone)]
pub struct NewQuote<'a> {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub from_currency: &'a str,
    pub to_currency: &'a str,
    pub from_amount: i64,
    pub to_amount: i64,
    pub rate: &'a str,
    pub ttl_ms: i64,
}

pub async fn insert_quote(conn: &mut PgConnection, quote: &NewQuote<'_>) -> Result<QuoteRow> {
    Ok(sqlx::query_as::<_, QuoteRow>(concat!(
        "INSERT INTO quotes (id, owner_id, from_currency, to_currency, from_amount, to_amount, \
             rate, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $8 * interval '1 millisecond') \
         RETURNING ",
        quote_columns!()
    ))
    .bind(quote.id)
    .bind(quote.owner_id)
    .bind(quote.from_currency)
    .bind(quote.to_currency)
    .bind(quote.from_amount)
    .bind(quote.to_amount)
    .bind(quote.rate)
    .bind(quote.ttl_ms)
    .fetch_one(conn)
    .await?)
}

/// A quote as a conversion's batch reads it, locked.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct QuoteState {
    pub id: Uuid,
    pub owner_id: Uuid,
    /// Past `expires_at` by the database's clock.
    pub expired: bool,
    /// The conversion that used it.
    pub conversion_id: Option<Uuid>,
}

/// Locks the quotes `ids` (in id order, like accounts) and reads their state.
pub async fn lock_quotes(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<QuoteState>> {
    Ok(sqlx::query_as::<_, QuoteState>(
        "SELECT id, owner_id, expires_at <= now() AS expired, conversion_id FROM quotes \
         WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

/// Marks each quote used by its conversion (only a quote no conversion used yet).
pub async fn mark_used(conn: &mut PgConnection, claims: &[(Uuid, Uuid)]) -> Result<()> {
    if claims.is_empty() {
        return Ok(());
    }
    let quotes: Vec<Uuid> = claims.iter().map(|(quote, _)| *quote).collect();
    let conversions: Vec<Uuid> = claims.iter().map(|(_, conversion)| *conversion).collect();
    sqlx::query(
        "UPDATE quotes SET conversion_id = c.conversion_id \
         FROM UNNEST($1::uuid[], $2::uuid[]) AS c(quote_id, conversion_id) \
         WHERE quotes.id = c.quote_id AND quotes.conversion_id IS NULL",
    )
    .bind(quotes)
    .bind(conversions)
    .execute(conn)
    .await?;
    Ok(())
}

/// A quote of `owner`, if it exists.
pub async fn quote_of(conn: &mut PgConnection, id: Uuid, owner: Uuid) -> Result<Option<QuoteRow>> {
    Ok(sqlx::query_as::<_, QuoteRow>(concat!(
        "SELECT ",
        quote_columns!(),
        " FROM quotes WHERE id = $1 AND owner_id = $2"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(conn)
    .await?)
}
