//! The transfer engine: one posting applied inside a caller's transaction, and the retry loop
//! that runs it in its own SERIALIZABLE transaction.
//!
//! [`apply`] takes `&mut PgConnection` and never begins or commits, so several postings can be
//! applied in one database transaction with a result each (a batch). [`execute`] owns the
//! transaction: `BEGIN ISOLATION LEVEL SERIALIZABLE`, apply, `COMMIT`, and on a serialization
//! failure or deadlock (SQLSTATE 40001 / 40P01, which can surface at COMMIT too) the whole unit
//! is retried with jittered exponential backoff, a bounded number of times, then `ABORTED`.
//!
//! Before the transaction, [`AccountGate`] admits at most one transaction per account (stripe)
//! at a time in this process. Under SERIALIZABLE, a transaction that waits for a row lock held
//! by a writer fails with 40001 as soon as that writer commits, so without the gate a hot
//! account turns into a storm of doomed attempts and retries can starve; with it, transfers on
//! one replica queue fairly (tokio's mutex is FIFO) and only conflicts between replicas, or
//! SSI's page-level false positives, are retried.

use std::time::Duration;

use tracing::Instrument as _;

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{FailureReason, Kind, LedgerSettings, Transfer};
use crate::{
    error::{Error, Result, reason},
    store::{self, accounts::LockedAccount, transfers::TransferRow},
};

/// A validated request to move money, ready to apply.
#[derive(Debug, Clone)]
pub struct Posting {
    /// The client's idempotency key; becomes the transfer id.
    pub id: Uuid,
    pub kind: Kind,
    /// Who asks: only they can replay this id.
    pub requested_by: Uuid,
    /// May the requester move money out of accounts it does not own (bankers, admins)?
    pub may_move_any: bool,
    pub from: Uuid,
    pub to: Uuid,
    pub amount: i64,
    pub currency: String,
    pub memo: String,
}

impl Posting {
    /// SHA-256 over every field of the payload: a replay must match all of them.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            self.kind.as_str().as_bytes(),
            self.from.as_bytes(),
            self.to.as_bytes(),
            &self.amount.to_be_bytes(),
            self.currency.as_bytes(),
            self.memo.as_bytes(),
        ] {
            // Length-prefixed, so no two payloads share an encoding.
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

/// A transfer as recorded, and how many attempts it took.
#[derive(Debug, Clone)]
pub struct Applied {
    pub transfer: Transfer,
    pub attempts: u32,
}

/// Applies one posting inside the caller's transaction: replay check, lock both accounts in id
/// order, check, write. A business refusal is recorded as a FAILED transfer (and returned as
/// one); malformed or invisible input is an error and writes nothing.
pub async fn apply(conn: &mut PgConnection, posting: &Posting) -> Result<TransferRow> {
    let fingerprint = posting.fingerprint();
    if let Some(existing) = store::transfers::by_id(conn, posting.id).await? {
        return replay(existing, posting, &fingerprint);
    }

    let locked = store::accounts::lock(conn, &[posting.from, posting.to]).await?;
    let find = |id: Uuid| locked.iter().find(|a| a.id == id);
    let (from, to) = match (find(posting.from), find(posting.to)) {
        (Some(from), Some(to)) if visible(posting, from, to) => (from, to),
        _ => return Err(Error::NotFound("account")),
    };

    let failure = if from.currency != posting.currency || to.currency != posting.currency {
        Some(FailureReason::CurrencyMismatch)
    } else if !from.is_system && from.balance < posting.amount {
        Some(FailureReason::InsufficientFunds)
    } else {
        None
    };
    let balances = match failure {
        Some(_) => None,
        None => Some(new_balances(from, to, posting.amount)?),
    };

    let row = store::transfers::insert(
        conn,
        store::transfers::NewTransfer {
            id: posting.id,
            kind: posting.kind.as_str(),
            requested_by: posting.requested_by,
            from_account_id: from.id,
            to_account_id: to.id,
            amount: posting.amount,
            currency: &posting.currency,
            status: if failure.is_some() {
                "failed"
            } else {
                "succeeded"
            },
            failure_reason: failure.map(FailureReason::as_str),
            memo: &posting.memo,
            fingerprint: &fingerprint,
        },
    )
    .await?;

    if let Some((from_after, to_after)) = balances {
        // Double entry: the two entries cancel out.
        assert_eq!(
            (from_after - from.balance) + (to_after - to.balance),
            0,
            "entries of a transfer must sum to zero"
        );
        store::accounts::set_balance(conn, from.id, from_after).await?;
        store::accounts::set_balance(conn, to.id, to_after).await?;
        store::transfers::insert_entry(conn, from.id, row.id, -posting.amount, from_after).await?;
        store::transfers::insert_entry(conn, to.id, row.id, posting.amount, to_after).await?;
    }
    Ok(row)
}

/// Who may use which accounts. The destination may be anyone's, but never a system account
/// through a plain transfer (system accounts move money only by deposit and withdrawal).
fn visible(posting: &Posting, from: &LockedAccount, to: &LockedAccount) -> bool {
    match posting.kind {
        Kind::Transfer => {
            !from.is_system
                && !to.is_system
                && (posting.may_move_any || from.owner_id == Some(posting.requested_by))
        }
        Kind::Deposit => from.is_system && !to.is_system,
        Kind::Withdrawal => !from.is_system && to.is_system,
    }
}

/// The balances after moving `amount`; customer balances were checked, so only a system
/// account's unbounded debit or a credit near `i64::MAX` can fail here.
fn new_balances(from: &LockedAccount, to: &LockedAccount, amount: i64) -> Result<(i64, i64)> {
    let limit = || Error::FailedPrecondition {
        reason: reason::BALANCE_LIMIT,
        message: "the transfer would take a balance beyond the ledger's range".into(),
    };
    let from_after = from.balance.checked_sub(amount).ok_or_else(limit)?;
    let to_after = to.balance.checked_add(amount).ok_or_else(limit)?;
    assert!(
        from.is_system || from_after >= 0,
        "customer balance went negative"
    );
    Ok((from_after, to_after))
}

/// The original answer for the same requester and payload; `ALREADY_EXISTS` otherwise (a
/// different requester gets the same answer as a different payload, so it learns nothing).
fn replay(existing: TransferRow, posting: &Posting, fingerprint: &[u8; 32]) -> Result<TransferRow> {
    if existing.requested_by == posting.requested_by && existing.fingerprint == fingerprint {
        Ok(existing)
    } else {
        Err(Error::AlreadyExists {
            reason: reason::TRANSFER_ID_REUSED,
            message: "this id was already used for a different request".into(),
        })
    }
}

/// Lock stripes of the gate; distinct accounts rarely share one.
const GATE_STRIPES: usize = 4_096;

/// In-process admission control: one transaction per account stripe at a time.
pub struct AccountGate {
    stripes: Box<[tokio::sync::Mutex<()>]>,
}

impl Default for AccountGate {
    fn default() -> Self {
        Self {
            stripes: (0..GATE_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }
}

impl AccountGate {
    /// Waits for the stripes of `accounts`, taken in ascending order so two callers can never
    /// wait on each other.
    pub async fn enter(&self, accounts: &[Uuid]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = accounts
            .iter()
            // UUIDv7's low bits are random, so this spreads evenly.
            .map(|id| (id.as_u128() % GATE_STRIPES as u128) as usize)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(self.stripes[stripe].lock().await);
        }
        guards
    }
}

/// Runs one posting in its own SERIALIZABLE transaction with bounded, jittered retries.
pub async fn execute(
    pool: &PgPool,
    settings: &LedgerSettings,
    gate: &AccountGate,
    posting: &Posting,
) -> Result<Applied> {
    let _admitted = gate.enter(&[posting.from, posting.to]).await;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let span = tracing::info_span!(
            "ledger.transaction",
            transfer.id = %posting.id,
            db.system = "postgresql",
            attempt,
            retries = attempt - 1,
            outcome = tracing::field::Empty,
        );
        let outcome = async {
            let mut tx = crate::db::begin_with(pool, "BEGIN ISOLATION LEVEL SERIALIZABLE").await?;
            let row = apply(&mut tx, posting).await?;
            // 40001 can surface here: the commit is part of the retried unit.
            tx.commit().await?;
            Ok::<_, Error>(row)
        }
        .instrument(span.clone())
        .await;
        span.record(
            "outcome",
            match &outcome {
                Ok(_) => "committed",
                Err(Error::Conflict(_)) => "conflict",
                Err(_) => "error",
            },
        );
        match outcome {
            Ok(row) => {
                return Ok(Applied {
                    transfer: Transfer::try_from(row)?,
                    attempts: attempt,
                });
            }
            Err(Error::Conflict(cause)) if attempt < settings.transfer_attempts_max => {
                tracing::debug!(attempt, error = %cause, "transfer conflict; retrying");
                metrics::counter!("tally_transfer_retries_total").increment(1);
                tokio::time::sleep(backoff(settings, attempt)).await;
            }
            Err(Error::Conflict(cause)) => {
                tracing::warn!(attempts = attempt, error = %cause, "transfer aborted after retries");
                metrics::counter!("tally_transfer_aborts_total").increment(1);
                return Err(Error::Aborted(format!(
                    "the transfer conflicted with concurrent ones {attempt} times; retry with \
                     the same id"
                )));
            }
            Err(other) => return Err(other),
        }
    }
}

/// Full jitter: uniformly random in [0, min(max, base · 2^(attempt−1))].
fn backoff(settings: &LedgerSettings, attempt: u32) -> Duration {
    let exp = settings
        .retry_backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let cap = exp.min(settings.retry_backoff_max);
    cap.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posting() -> Posting {
        Posting {
            id: Uuid::now_v7(),
            kind: Kind::Transfer,
            requested_by: Uuid::now_v7(),
            may_move_any: false,
            from: Uuid::now_v7(),
            to: Uuid::now_v7(),
            amount: 100,
            currency: "USD".into(),
            memo: String::new(),
        }
    }

    #[test]
    fn the_fingerprint_covers_every_payload_field() {
        let p = posting();
        let base = p.fingerprint();
        let variants = [
            Posting {
                amount: 101,
                ..p.clone()
            },
            Posting {
                currency: "EUR".into(),
                ..p.clone()
            },
            Posting {
                memo: "x".into(),
                ..p.clone()
            },
            Posting {
                to: Uuid::now_v7(),
                ..p.clone()
            },
            Posting {
                from: Uuid::now_v7(),
                ..p.clone()
            },
            Posting {
                kind: Kind::Deposit,
                ..p.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.fingerprint(), base, "{v:?}");
        }
        assert_eq!(p.clone().fingerprint(), base);
    }

    #[test]
    fn backoff_is_bounded() {
        let settings = LedgerSettings {
            currencies: Default::default(),
            accounts_per_owner_max: 1,
            transfer_attempts_max: 10,
            retry_backoff_base: Duration::from_millis(2),
            retry_backoff_max: Duration::from_millis(50),
        };
        for attempt in 1..40 {
            assert!(backoff(&settings, attempt) <= Duration::from_millis(50));
        }
    }
}
