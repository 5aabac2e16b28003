//! The ledger: accounts in one currency, and transfers that move money between two of them as
//! double entry. Free of any transport; every operation takes the calling [`Principal`] and
//! answers `NOT_FOUND` for what the caller may not see, exactly as for what does not exist.
//!
//! Money rules (mirrored by CHECK constraints in `migrations/`):
//! - amounts are positive integers in minor units, at most [`AMOUNT_MAX`];
//! - a transfer writes exactly two entries, −amount on the source and +amount on the
//!   destination, so every currency sums to zero and every balance is the sum of its entries;
//! - a hold (pending transfer) writes no entries: it reserves its amount in the source's
//!   `pending_debits` and the destination's `pending_credits` until it is posted (entries of
//!   the posted amount then), voided, or expires; the pending sums are the sums of the live
//!   holds;
//! - a customer account's available balance (balance − pending debits) never goes below
//!   −overdraft limit (0 by default); a currency's system account (the counterparty of deposits
//!   and withdrawals) may go anywhere;
//! - a closed account is empty, holds nothing, and takes no new transfers;
//! - the reversals of a transfer never sum to more than it moved.

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
pub mod conversions;
pub mod currency;
pub mod engine;
pub mod holds;
pub mod monitors;
pub mod page;
mod plan;
pub mod posting;
pub mod transfers;
pub mod verify;

/// The transfer's column types are the domain's types: one name per stage.
pub use crate::store::transfers::{FailureReason, Kind, Status};
pub use currency::Currencies;
pub use posting::{Chain, Op, Posting};

/// The largest amount one transfer may move, in minor units (10^15: ten million BTC, or
/// ten trillion dollars). Keeps every balance far from i64 overflow.
pub const AMOUNT_MAX: i64 = 1_000_000_000_000_000;
pub const MEMO_CHARS_MAX: usize = 256;
/// The longest pause between two attempts of one transfer batch.
pub const TRANSFER_RETRY_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// The longest a hold may wait to be posted or voided (the migration's CHECK says the same).
pub const HOLD_TIMEOUT_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
// migrations/20261201000009_holds_reversals_limits.up.sql: `timeout_ms BETWEEN 1 AND 604800000`,
// and the overdraft limit's CHECK allows up to AMOUNT_MAX.
const _: () =
    assert!(HOLD_TIMEOUT_MAX.as_millis() == 604_800_000 && AMOUNT_MAX == 1_000_000_000_000_000);
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
    /// How often the sweeper looks for overdue holds nobody touched.
    pub hold_sweep_interval: Duration,
    /// Whether changes write change-feed events (`TALLY_FEED_EVENTS`).
    pub feed_events: bool,
}

pub struct Ledger {
    pool: PgPool,
    settings: LedgerSettings,
    engine: engine::Engine,
    /// The system account of each currency, read once at [`Ledger::bootstrap`] (they never
    /// change).
    system_accounts: std::sync::OnceLock<HashMap<String, Uuid>>,
    /// The liquidity account of each currency (the counterparty of conversions), likewise.
    liquidity_accounts: std::sync::OnceLock<HashMap<String, Uuid>>,
    /// Counts the commits that wrote change-feed events (the feed's tail and relay wait on it).
    committed: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Dropped with the ledger, which stops the hold sweeper.
    _sweeper: tokio::sync::oneshot::Sender<()>,
}

impl Ledger {
    /// Builds the ledger and starts its transfer engine (needs a tokio runtime).
    pub fn new(pool: PgPool, settings: LedgerSettings) -> Self {
        // Rare events still get a series from the start, so dashboards and alerts see a 0
        // rather than nothing. (`increment(0)`: another ledger in this process keeps its count.)
        metrics::counter!("tally_transfer_retries_total").increment(0);
        metrics::counter!("tally_transfer_aborts_total").increment(0);
        metrics::counter!("tally_holds_expired_total").increment(0);
        let committed = std::sync::Arc::new(tokio::sync::watch::channel(0).0);
        let engine = engine::Engine::spawn(pool.clone(), settings.clone(), committed.clone());
        let (sweeper, stop) = tokio::sync::oneshot::channel();
        holds::spawn_sweeper(
            pool.clone(),
            engine.clone(),
            settings.hold_sweep_interval,
            stop,
        );
        Self {
            engine,
            pool,
            settings,
            system_accounts: std::sync::OnceLock::new(),
            liquidity_accounts: std::sync::OnceLock::new(),
            committed,
            _sweeper: sweeper,
        }
    }

    /// Changes after each commit of this process that wrote change-feed events: every
    /// receiver is woken (a tail and a relay both follow it).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
    }

    pub fn currencies(&self) -> &Currencies {
        &self.settings.currencies
    }

    /// Syncs the currency table and makes sure every currency has its system account. Refuses
    /// to start when a stored exponent differs from the configured one.
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        use crate::store::accounts::HouseAccount;
        let mut tx = crate::db::begin(&self.pool).await?;
        for (code, exponent) in self.settings.currencies.iter() {
            let stored =
                crate::store::accounts::ensure_currency(&mut tx, code, i16::from(exponent)).await?;
            anyhow::ensure!(
                stored == i16::from(exponent),
                "TALLY_CURRENCIES: {code} has exponent {exponent}, but the database stores \
                 {stored}; changing it would change the value of every {code} amount"
            );
            for kind in [HouseAccount::System, HouseAccount::Liquidity] {
                crate::store::accounts::ensure_house_account(&mut tx, code, kind).await?;
            }
        }
        let system = crate::store::accounts::house_accounts(&mut tx, HouseAccount::System).await?;
        let liquidity =
            crate::store::accounts::house_accounts(&mut tx, HouseAccount::Liquidity).await?;
        tx.commit().await?;
        // A second bootstrap finds the same accounts: they are never replaced.
        let _ = self.system_accounts.set(system.into_iter().collect());
        let _ = self.liquidity_accounts.set(liquidity.into_iter().collect());
        Ok(())
    }
}

/// A recorded transfer: succeeded or failed, or a hold in any of its states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: Uuid,
    pub kind: Kind,
    pub status: Status,
    pub from_account_id: Uuid,
    pub to_account_id: Uuid,
    pub amount: i64,
    pub currency: String,
    /// Set exactly when `status` is FAILED.
    pub failure: Option<FailureReason>,
    pub memo: String,
    pub created_at: OffsetDateTime,
    /// A hold's timeout, as requested.
    pub timeout: Option<Duration>,
    /// A hold's expiry, once it was accepted.
    pub expires_at: Option<OffsetDateTime>,
    pub posted_amount: Option<i64>,
    pub reverses_transfer_id: Option<Uuid>,
    pub reversed_amount: i64,
}

fn timeout_of(ms: Option<i64>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or_default()))
}

impl TryFrom<TransferRow> for Transfer {
    type Error = Error;
    fn try_from(row: TransferRow) -> Result<Self> {
        let consistent = match row.status {
            Status::Failed => row.failure_reason.is_some(),
            _ => row.failure_reason.is_none(),
        };
        if !consistent {
            return Err(Error::internal(anyhow::anyhow!(
                "inconsistent transfer {}: status {:?} with reason {:?}",
                row.id,
                row.status,
                row.failure_reason
            )));
        }
        Ok(Transfer {
            id: row.id,
            kind: row.kind,
            status: row.status,
            from_account_id: row.from_account_id,
            to_account_id: row.to_account_id,
            amount: row.amount,
            currency: row.currency,
            failure: row.failure_reason,
            memo: row.memo,
            created_at: row.created_at,
            timeout: timeout_of(row.timeout_ms),
            expires_at: row.expires_at,
            posted_amount: row.posted_amount,
            reverses_transfer_id: row.reverses_transfer_id,
            reversed_amount: row.reversed_amount,
        })
    }
}

impl Transfer {
    /// The transfer a batch has just inserted (`created_at` is the transaction's start, from
    /// which the database also computed a hold's expiry).
    pub fn recorded(row: &NewTransfer, created_at: OffsetDateTime) -> Self {
        let timeout = timeout_of(row.timeout_ms);
        Transfer {
            id: row.id,
            kind: row.kind,
            status: row.status,
            from_account_id: row.from_account_id,
            to_account_id: row.to_account_id,
            amount: row.amount,
            currency: row.currency.clone(),
            failure: row.failure_reason,
            memo: row.memo.clone(),
            created_at,
            timeout,
            expires_at: timeout
                .filter(|_| row.status != Status::Failed)
                .map(|t| created_at + t),
            posted_amount: row.posted_amount,
            reverses_transfer_id: row.reverses_transfer_id,
            reversed_amount: row.reversed_amount,
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
        FailureReason::AccountClosed => (
            crate::error::Reason::AccountClosed,
            "an account of the transfer is closed",
        ),
        FailureReason::InsufficientLiquidity => (
            crate::error::Reason::InsufficientLiquidity,
            "the liquidity account of the target currency cannot pay this conversion now",
        ),
        FailureReason::QuoteExpired => (
            crate::error::Reason::QuoteExpired,
            "the quote has expired; ask for a new one",
        ),
        FailureReason::QuoteUsed => (
            crate::error::Reason::QuoteUsed,
            "the quote was used by another conversion; ask for a new one",
        ),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: Uuid,
    pub owner: String,
    pub name: String,
    pub currency: String,
    /// Posted money: the sum of the account's entries.
    pub balance: i64,
    pub pending_debits: i64,
    pub pending_credits: i64,
    pub overdraft_limit: i64,
    pub closed_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Account {
    /// Balance less the live holds out of it: what it may spend, plus its overdraft limit.
    pub fn available_balance(&self) -> i64 {
        self.balance.saturating_sub(self.pending_debits)
    }
}

impl From<AccountRow> for Account {
    fn from(row: AccountRow) -> Self {
        Account {
            id: row.id,
            owner: row.owner,
            name: row.name,
            currency: row.currency,
            balance: row.balance,
            pending_debits: row.pending_debits,
            pending_credits: row.pending_credits,
            overdraft_limit: row.overdraft_limit,
            closed_at: row.closed_at,
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
