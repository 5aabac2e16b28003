//! The ledger: accounts in one currency, and transfers that move money between two of them as
//! double entry. Free of any transport; every operation takes the calling [`Principal`] and
//! answers `NOT_FOUND` for what the caller may not see, exactly as for what does not exist.
//!
//! Money rules (mirrored by CHECK constraints in `migrations/`):
//! - amounts are positive integers in minor units, at most [`AMOUNT_MAX`];
//! - a transfer writes exactly two entries, −amount on the source and +amount on the
//!   destination, so every currency sums to zero and every balance is the sum of its entries;
//! - customer balances never go negative; a currency's system account (the counterparty of
//!   deposits and withdrawals) may.

use std::{collections::HashMap, time::Duration};

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    error::{Error, Result},
    store::{
        accounts::AccountRow,
        transfers::{EntryRow, NewTransfer, TransferRow},
    },
};

pub mod accounts;
pub mod currency;
pub mod engine;
pub mod page;
mod plan;
pub mod posting;
pub mod transfers;
pub mod verify;

/// The transfer's column types are the domain's types: one name per stage.
pub use crate::store::transfers::{FailureReason, Kind, Status};
pub use currency::Currencies;
pub use posting::{Chain, Posting};

/// The largest amount one transfer may move, in minor units (10^15: ten million BTC, or
/// ten trillion dollars). Keeps every balance far from i64 overflow.
pub const AMOUNT_MAX: i64 = 1_000_000_000_000_000;
pub const MEMO_CHARS_MAX: usize = 256;
pub const ACCOUNT_NAME_CHARS_MAX: usize = 64;

#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub currencies: Currencies,
    /// Accounts one owner may hold.
    pub accounts_per_owner_max: u32,
    /// Attempts of one transfer transaction before answering `ABORTED`.
    pub transfer_attempts_max: u32,
    /// Backoff before the second attempt; doubles per attempt, with full jitter.
    pub retry_backoff_base: Duration,
    pub retry_backoff_max: Duration,
}

pub struct Ledger {
    pool: PgPool,
    settings: LedgerSettings,
    engine: engine::Engine,
    /// The system account of each currency, read once at [`Ledger::bootstrap`] (they never
    /// change).
    system_accounts: std::sync::OnceLock<HashMap<String, Uuid>>,
}

impl Ledger {
    /// Builds the ledger and starts its transfer engine (needs a tokio runtime).
    pub fn new(pool: PgPool, settings: LedgerSettings) -> Self {
        // Rare events still get a series from the start, so dashboards and alerts see a 0
        // rather than nothing. (`increment(0)`: another ledger in this process keeps its count.)
        metrics::counter!("tally_transfer_retries_total").increment(0);
        metrics::counter!("tally_transfer_aborts_total").increment(0);
        Self {
            engine: engine::Engine::spawn(pool.clone(), settings.clone()),
            pool,
            settings,
            system_accounts: std::sync::OnceLock::new(),
        }
    }

    pub fn currencies(&self) -> &Currencies {
        &self.settings.currencies
    }

    /// Syncs the currency table and makes sure every currency has its system account. Refuses
    /// to start when a stored exponent differs from the configured one.
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        let mut tx = crate::db::begin(&self.pool).await?;
        for (code, exponent) in self.settings.currencies.iter() {
            let stored =
                crate::store::accounts::ensure_currency(&mut tx, code, i16::from(exponent)).await?;
            anyhow::ensure!(
                stored == i16::from(exponent),
                "TALLY_CURRENCIES: {code} has exponent {exponent}, but the database stores \
                 {stored}; changing it would change the value of every {code} amount"
            );
            crate::store::accounts::ensure_system_account(&mut tx, code).await?;
        }
        let system = crate::store::accounts::system_accounts(&mut tx).await?;
        tx.commit().await?;
        // A second bootstrap finds the same accounts: they are never replaced.
        let _ = self.system_accounts.set(system.into_iter().collect());
        Ok(())
    }
}

/// A recorded transfer, succeeded or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: Uuid,
    pub kind: Kind,
    pub from_account_id: Uuid,
    pub to_account_id: Uuid,
    pub amount: i64,
    pub currency: String,
    /// `None`: succeeded.
    pub failure: Option<FailureReason>,
    pub memo: String,
    pub created_at: OffsetDateTime,
}

impl TryFrom<TransferRow> for Transfer {
    type Error = Error;
    fn try_from(row: TransferRow) -> Result<Self> {
        let failure = match (row.status, row.failure_reason) {
            (Status::Succeeded, None) => None,
            (Status::Failed, Some(reason)) => Some(reason),
            (status, reason) => {
                return Err(Error::internal(anyhow::anyhow!(
                    "inconsistent transfer {}: status {status:?} with reason {reason:?}",
                    row.id
                )));
            }
        };
        Ok(Transfer {
            id: row.id,
            kind: row.kind,
            from_account_id: row.from_account_id,
            to_account_id: row.to_account_id,
            amount: row.amount,
            currency: row.currency,
            failure,
            memo: row.memo,
            created_at: row.created_at,
        })
    }
}

impl Transfer {
    /// The transfer a batch has just inserted.
    pub fn recorded(row: &NewTransfer, created_at: OffsetDateTime) -> Self {
        Transfer {
            id: row.id,
            kind: row.kind,
            from_account_id: row.from_account_id,
            to_account_id: row.to_account_id,
            amount: row.amount,
            currency: row.currency.clone(),
            failure: row.failure_reason,
            memo: row.memo.clone(),
            created_at,
        }
    }

    /// A failed transfer is still an answer the client must branch on: `FAILED_PRECONDITION`
    /// with the reason, and the recorded transfer's id in the ErrorInfo metadata.
    pub fn into_result(self) -> Result<Transfer> {
        match self.failure {
            None => Ok(self),
            Some(failure) => {
                let (reason, message) = refusal(failure);
                Err(Error::Refused {
                    reason,
                    message: message.to_owned(),
                    metadata: vec![("transfer_id", self.id.to_string())],
                })
            }
        }
    }
}

/// The ErrorInfo reason and message of a FAILED transfer.
fn refusal(failure: FailureReason) -> (crate::error::Reason, &'static str) {
    match failure {
        FailureReason::InsufficientFunds => (
            crate::error::Reason::InsufficientFunds,
            "insufficient funds in the source account",
        ),
        FailureReason::CurrencyMismatch => (
            crate::error::Reason::CurrencyMismatch,
            "the accounts and the transfer are not all in the same currency",
        ),
        FailureReason::LinkedTransferFailed => (
            crate::error::Reason::LinkedTransferFailed,
            "another transfer of its linked chain failed, so this one moved nothing",
        ),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: Uuid,
    pub owner: String,
    pub name: String,
    pub currency: String,
    pub balance: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl From<AccountRow> for Account {
    fn from(row: AccountRow) -> Self {
        Account {
            id: row.id,
            owner: row.owner,
            name: row.name,
            currency: row.currency,
            balance: row.balance,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: Uuid,
    pub account_id: Uuid,
    pub transfer_id: Uuid,
    pub amount: i64,
    pub balance_after: i64,
    pub created_at: OffsetDateTime,
}

impl From<EntryRow> for Entry {
    fn from(row: EntryRow) -> Self {
        Entry {
            id: row.id,
            account_id: row.account_id,
            transfer_id: row.transfer_id,
            amount: row.amount,
            balance_after: row.balance_after,
            created_at: row.created_at,
        }
    }
}

/// One page of a list and the token of the next (empty at the end).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}
