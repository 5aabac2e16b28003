//! Queries on `transfers` and `entries`.

use sqlx::{
    FromRow, PgConnection, Postgres,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef},
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

/// Maps a closed Rust enum to a `text` column (and `text[]` for bulk statements) by its stored
/// name, so a value the code does not know fails to decode instead of passing as a string.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// The name stored in the database.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }

        impl sqlx::Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <&str as sqlx::Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as sqlx::Type<Postgres>>::compatible(ty)
            }
        }

        impl PgHasArrayType for $name {
            fn array_type_info() -> PgTypeInfo {
                <&str as PgHasArrayType>::array_type_info()
            }
        }

        impl sqlx::Encode<'_, Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut PgArgumentBuffer,
            ) -> std::result::Result<IsNull, BoxDynError> {
                <&str as sqlx::Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl sqlx::Decode<'_, Postgres> for $name {
            fn decode(value: PgValueRef<'_>) -> std::result::Result<Self, BoxDynError> {
                Ok(<&str as sqlx::Decode<Postgres>>::decode(value)?.parse::<$name>()?)
            }
        }
    };
}
pub(crate) use text_enum;

text_enum! {
    /// What a transfer row records (`transfers.kind`).
    pub enum Kind {
        /// Between two customer accounts.
        Transfer => "transfer",
        /// From the currency's system account.
        Deposit => "deposit",
        /// To the currency's system account.
        Withdrawal => "withdrawal",
        /// Back from the destination of an earlier transfer to its source.
        Reversal => "reversal",
        /// One leg of a currency conversion: into or out of a liquidity account.
        Conversion => "conversion",
    }
}

text_enum! {
    /// `transfers.status`.
    pub enum Status {
        Succeeded => "succeeded",
        /// Refused by a ledger rule; recorded without entries.
        Failed => "failed",
        /// A hold: the amount is reserved (no entries yet) until it is posted, voided or expires.
        Pending => "pending",
        /// A hold that was posted (all or part of it): its entries are written.
        Posted => "posted",
        /// A hold released by a void; moved nothing.
        Voided => "voided",
        /// A hold that reached its timeout unposted; moved nothing.
        Expired => "expired",
    }
}

text_enum! {
    /// Why a FAILED transfer moved nothing (`transfers.failure_reason`).
    pub enum FailureReason {
        InsufficientFunds => "insufficient_funds",
        CurrencyMismatch => "currency_mismatch",
        /// Another member of its linked chain failed.
        LinkedTransferFailed => "linked_transfer_failed",
        /// One of its accounts is closed.
        AccountClosed => "account_closed",
        /// A conversion leg the currency's liquidity account could not pay.
        InsufficientLiquidity => "insufficient_liquidity",
        /// The conversion's quote had expired.
        QuoteExpired => "quote_expired",
        /// The conversion's quote was used by another conversion.
        QuoteUsed => "quote_used",
    }
}

#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct TransferRow {
    pub id: Uuid,
    pub seq: i64,
    pub kind: Kind,
    pub requested_by: Uuid,
    pub from_account_id: Uuid,
    pub to_account_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub status: Status,
    pub failure_reason: Option<FailureReason>,
    pub memo: String,
    pub fingerprint: Vec<u8>,
    pub created_at: OffsetDateTime,
    /// Set for a hold (a transfer created pending).
    pub timeout_ms: Option<i64>,
    /// Set once a hold was accepted: `created_at + timeout`.
    pub expires_at: Option<OffsetDateTime>,
    /// Set when a hold was posted.
    pub posted_amount: Option<i64>,
    /// Set for a reversal: the transfer it reverses.
    pub reverses_transfer_id: Option<Uuid>,
    /// The sum of this transfer's succeeded reversals.
    pub reversed_amount: i64,
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
         failure_reason, memo, fingerprint, created_at, timeout_ms, expires_at, posted_amount, \
         reverses_transfer_id, reversed_amount"
    };
}

/// A transfer row to insert (`seq` and `created_at` are the database's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTransfer {
    pub id: Uuid,
    pub kind: Kind,
    pub requested_by: Uuid,
    pub from_account_id: Uuid,
    pub to_account_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub status: Status,
    pub failure_reason: Option<FailureReason>,
    pub memo: String,
    pub fingerprint: [u8; 32],
    /// A hold's timeout; its `expires_at` is the database's `now()` plus this.
    pub timeout_ms: Option<i64>,
    pub posted_amount: Option<i64>,
    pub reverses_transfer_id: Option<Uuid>,
    pub reversed_amount: i64,
}

/// What a batch changes in a transfer recorded before it: a hold posted or voided, or the sum
/// of its reversals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferChange {
    pub id: Uuid,
    pub status: Status,
    pub posted_amount: Option<i64>,
    pub reversed_amount: i64,
}

/// A hold that a batch found past its expiry and marked `expired`.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct ExpiredHold {
    pub id: Uuid,
    pub from_account_id: Uuid,
    pub to_account_id: Uuid,
    pub amount: i64,
}

/// An entry row to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub account_id: Uuid,
    pub transfer_id: Uuid,
    /// Signed minor units.
    pub amount: i64,
    pub balance_after: i64,
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

/// The recorded transfers among `ids` (one index probe each, one round trip).
pub async fn by_ids(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<TransferRow>> {
    Ok(sqlx::query_as::<_, TransferRow>(concat!(
        "SELECT ",
        transfer_columns!(),
        " FROM transfers WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

/// Applies what a batch changed in transfers recorded before it, with one statement.
pub async fn change_many(conn: &mut PgConnection, changes: &[TransferChange]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = changes.iter().map(|c| c.id).collect();
    let statuses: Vec<Status> = changes.iter().map(|c| c.status).collect();
    let posted: Vec<Option<i64>> = changes.iter().map(|c| c.posted_amount).collect();
    let reversed: Vec<i64> = changes.iter().map(|c| c.reversed_amount).collect();
    sqlx::query(
        "UPDATE transfers SET status = c.status, posted_amount = c.posted_amount, \
           reversed_amount = c.reversed_amount \
         FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[]) \
           AS c(id, status, posted_amount, reversed_amount) \
         WHERE transfers.id = c.id",
    )
    .bind(ids)
    .bind(statuses)
    .bind(posted)
    .bind(reversed)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks `expired` every live hold out of or into `accounts` whose expiry has passed (at the
/// transaction's start), and returns them, so the batch can release what they held.
pub async fn expire_touching(
    conn: &mut PgConnection,
    accounts: &[Uuid],
) -> Result<Vec<ExpiredHold>> {
    Ok(sqlx::query_as::<_, ExpiredHold>(
        "UPDATE transfers SET status = 'expired' \
         WHERE status = 'pending' AND expires_at <= now() \
           AND (from_account_id = ANY($1) OR to_account_id = ANY($1)) \
         RETURNING id, from_account_id, to_account_id, amount",
    )
    .bind(accounts)
    .fetch_all(conn)
    .await?)
}

/// Source accounts of up to `limit` holds past their expiry, soonest expired first (the
/// sweeper's work list; one index range scan).
pub async fn expired_hold_accounts(conn: &mut PgConnection, limit: i64) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT from_account_id FROM transfers \
         WHERE status = 'pending' AND expires_at <= now() ORDER BY expires_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The balance of `account_id` right after its last entry at or before `as_of`, or `None` when
/// it had none by then (one probe of `entries_account_time_idx`).
pub async fn balance_at(
    conn: &mut PgConnection,
    account_id: Uuid,
    as_of: OffsetDateTime,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT balance_after FROM entries WHERE account_id = $1 AND created_at <= $2 \
         ORDER BY created_at DESC, seq DESC LIMIT 1",
    )
    .bind(account_id)
    .bind(as_of)
    .fetch_optional(conn)
    .await?)
}

/// Transfers touching `account_id` with `seq` below `before`, newest first: every transfer out
/// of it, and the transfers into it that moved (or hold) money: a FAILED, voided or expired one
/// moved nothing in, costs its sender nothing, and showing it would let anyone write into this
/// account's statement. Two index scans (one per
/// side) rather than an `OR`, so each walks its index in order.
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
        " FROM transfers WHERE to_account_id = $1 AND seq < $2 \
           AND status IN ('succeeded', 'pending', 'posted') \
           ORDER BY seq DESC LIMIT $3)",
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
