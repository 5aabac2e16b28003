//! A transfer batch's writes as one statement: the new transfers, the accounts' new positions,
//! the entries and the change-feed events, each a data-modifying `WITH` part of one `INSERT`.
//!
//! Why one statement: the batch runs under `ledger_writer`, so every other batch waits while it
//! runs, and each statement is a round trip (the server's parse, plan and execute, and a wake-up
//! of both processes) inside that wait. Four writes as one cost one round trip instead of four.
//! The parts see the same snapshot and touch different tables, so none depends on another's
//! result; the reference checks of transfers and entries (statement-level triggers, see the
//! migration `set_based_references`) run after the whole statement, when every part's rows are
//! there. The events keep their order: their part numbers them in the order given.

use sqlx::{Arguments as _, PgConnection, postgres::PgArguments};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    accounts::Position,
    events::NewEvent,
    transfers::{NewEntry, NewTransfer},
};
use crate::error::{Error, Result};

/// What one batch writes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Writes<'a> {
    pub transfers: &'a [NewTransfer],
    /// Every account the batch moved, with its position after the batch.
    pub positions: &'a [(Uuid, Position)],
    pub entries: &'a [NewEntry],
    /// In sequence order.
    pub events: &'a [NewEvent],
}

/// Writes `writes` with one statement (none when there is nothing to write); the transaction's
/// time, the new transfers' `created_at`, when there were any.
pub async fn write(conn: &mut PgConnection, writes: Writes<'_>) -> Result<Option<OffsetDateTime>> {
    let mut args = PgArguments::default();
    let mut parts: Vec<String> = Vec::with_capacity(4);
    if !writes.transfers.is_empty() {
        parts.push(transfers(&mut args, writes.transfers)?);
    }
    if !writes.positions.is_empty() {
        parts.push(positions(&mut args, writes.positions)?);
    }
    if !writes.entries.is_empty() {
        parts.push(entries(&mut args, writes.entries)?);
    }
    if !writes.events.is_empty() {
        parts.push(events(&mut args, writes.events)?);
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let with: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, part)| format!("w{i} AS ({part})"))
        .collect();
    // At most 15 shapes (which parts are there), so the connection's statement cache holds
    // each prepared once.
    let sql = format!("WITH {} SELECT now()", with.join(", "));
    let now: OffsetDateTime = sqlx::query_scalar_with(sqlx::AssertSqlSafe(sql), args)
        .fetch_one(conn)
        .await
        .map_err(|err| match super::violated_constraint(&err) {
            // Another transaction inserted one of these ids first: a retry turns it into a
            // replay.
            Some("transfers_pkey") => Error::Conflict(err),
            _ => err.into(),
        })?;
    Ok((!writes.transfers.is_empty()).then_some(now))
}

/// Binds `value` as the next parameter; its `$n`.
fn bind<'q, T>(args: &mut PgArguments, value: T) -> Result<String>
where
    T: sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + 'q,
{
    args.add(value)
        .map_err(|err| Error::internal(anyhow::anyhow!("binding a batch's parameter: {err}")))?;
    Ok(format!("${}", args.len()))
}

/// Binds one column of `rows` as an array, the next parameter; its `$n`.
fn column<'a, R, T>(args: &mut PgArguments, rows: &'a [R], f: impl Fn(&'a R) -> T) -> Result<String>
where
    Vec<T>: sqlx::Encode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + 'a,
{
    bind(args, rows.iter().map(f).collect::<Vec<T>>())
}

fn transfers(args: &mut PgArguments, rows: &[NewTransfer]) -> Result<String> {
    let p = [
        column(args, rows, |r| r.id)?,
        column(args, rows, |r| r.kind)?,
        column(args, rows, |r| r.requested_by)?,
        column(args, rows, |r| r.from_account_id)?,
        column(args, rows, |r| r.to_account_id)?,
        column(args, rows, |r| r.amount)?,
        column(args, rows, |r| r.currency.as_str())?,
        column(args, rows, |r| r.status)?,
        column(args, rows, |r| r.failure_reason)?,
        column(args, rows, |r| r.memo.as_str())?,
        column(args, rows, |r| &r.fingerprint[..])?,
        column(args, rows, |r| r.timeout_ms)?,
        column(args, rows, |r| r.posted_amount)?,
        column(args, rows, |r| r.reverses_transfer_id)?,
        column(args, rows, |r| r.reversed_amount)?,
    ];
    // A hold that was accepted (not FAILED) expires `timeout_ms` after the transaction's start,
    // which is also its `created_at`.
    Ok(format!(
        "INSERT INTO transfers (id, kind, requested_by, from_account_id, to_account_id, amount, \
           currency, status, failure_reason, memo, fingerprint, timeout_ms, expires_at, \
           posted_amount, reverses_transfer_id, reversed_amount) \
         SELECT id, kind, requested_by, from_account_id, to_account_id, amount, currency, \
           status, failure_reason, memo, fingerprint, timeout_ms, \
           CASE WHEN timeout_ms IS NOT NULL AND status <> 'failed' \
             THEN now() + timeout_ms * interval '1 millisecond' END, \
           posted_amount, reverses_transfer_id, reversed_amount \
         FROM UNNEST({}::uuid[], {}::text[], {}::uuid[], {}::uuid[], {}::uuid[], {}::int8[], \
           {}::text[], {}::text[], {}::text[], {}::text[], {}::bytea[], {}::int8[], \
           {}::int8[], {}::uuid[], {}::int8[]) WITH ORDINALITY \
           AS t(id, kind, requested_by, from_account_id, to_account_id, amount, currency, \
             status, failure_reason, memo, fingerprint, timeout_ms, posted_amount, \
             reverses_transfer_id, reversed_amount, n) \
         ORDER BY n",
        p[0],
        p[1],
        p[2],
        p[3],
        p[4],
        p[5],
        p[6],
        p[7],
        p[8],
        p[9],
        p[10],
        p[11],
        p[12],
        p[13],
        p[14]
    ))
}

fn positions(args: &mut PgArguments, positions: &[(Uuid, Position)]) -> Result<String> {
    let ids = column(args, positions, |(id, _)| *id)?;
    let balances = column(args, positions, |(_, p)| p.balance)?;
    let debits = column(args, positions, |(_, p)| p.pending_debits)?;
    let credits = column(args, positions, |(_, p)| p.pending_credits)?;
    Ok(format!(
        "UPDATE accounts SET balance = v.balance, pending_debits = v.debits, \
           pending_credits = v.credits, updated_at = now() \
         FROM UNNEST({ids}::uuid[], {balances}::int8[], {debits}::int8[], {credits}::int8[]) \
           AS v(id, balance, debits, credits) \
         WHERE accounts.id = v.id"
    ))
}

fn entries(args: &mut PgArguments, entries: &[NewEntry]) -> Result<String> {
    let ids = column(args, entries, |_| Uuid::now_v7())?;
    let accounts = column(args, entries, |e| e.account_id)?;
    let transfers = column(args, entries, |e| e.transfer_id)?;
    let amounts = column(args, entries, |e| e.amount)?;
    let balances = column(args, entries, |e| e.balance_after)?;
    // Ordered: `seq` is the order of application.
    Ok(format!(
        "INSERT INTO entries (id, account_id, transfer_id, amount, balance_after) \
         SELECT id, account_id, transfer_id, amount, balance_after \
         FROM UNNEST({ids}::uuid[], {accounts}::uuid[], {transfers}::uuid[], {amounts}::int8[], \
           {balances}::int8[]) \
           WITH ORDINALITY AS e(id, account_id, transfer_id, amount, balance_after, n) ORDER BY n"
    ))
}

fn events(args: &mut PgArguments, events: &[NewEvent]) -> Result<String> {
    let p = [
        column(args, events, |e| e.kind)?,
        column(args, events, |e| e.account_id)?,
        column(args, events, |e| e.counterparty.map(|c| c.0))?,
        column(args, events, |e| e.transfer.map(|t| t.0))?,
        column(args, events, |e| e.transfer.map(|t| t.1))?,
        column(args, events, |e| e.transfer.and_then(|t| t.2))?,
        column(args, events, |e| e.account.balance)?,
        column(args, events, |e| e.account.pending_debits)?,
        column(args, events, |e| e.account.pending_credits)?,
        column(args, events, |e| e.counterparty.map(|c| c.1.balance))?,
        column(args, events, |e| e.counterparty.map(|c| c.1.pending_debits))?,
        column(args, events, |e| {
            e.counterparty.map(|c| c.1.pending_credits)
        })?,
        column(args, events, |e| e.monitor)?,
    ];
    // Ordered: the identity numbers them as they come, and that order is the feed's.
    Ok(format!(
        "INSERT INTO ledger_events (type, account_id, counterparty_id, transfer_id, status, \
           posted_amount, account_balance, account_pending_debits, account_pending_credits, \
           counterparty_balance, counterparty_pending_debits, counterparty_pending_credits, \
           monitor_id) \
         SELECT type, account_id, counterparty_id, transfer_id, status, posted_amount, ab, apd, \
           apc, cb, cpd, cpc, monitor_id \
         FROM UNNEST({}::text[], {}::uuid[], {}::uuid[], {}::uuid[], {}::text[], {}::int8[], \
           {}::int8[], {}::int8[], {}::int8[], {}::int8[], {}::int8[], {}::int8[], \
           {}::uuid[]) \
           WITH ORDINALITY AS e(type, account_id, counterparty_id, transfer_id, status, \
             posted_amount, ab, apd, apc, cb, cpd, cpc, monitor_id, n) \
         ORDER BY n",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12]
    ))
}
