//! Settling holds (post, void), reversing transfers, and the sweeper that marks overdue holds
//! expired. All of it goes through the engine, so it is decided in the same SERIALIZABLE batch
//! transactions as every other movement of money.
//!
//! Expiry never waits for the sweeper: every batch expires the overdue holds of the accounts it
//! locks before it applies anything (see [`super::engine`]). The sweeper only settles the holds
//! of accounts nobody touches, so listings, balances and `tally_holds_expired_total` catch up.

use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    Ledger, Op,
    engine::Engine,
    posting::{Reversal, Settle, Settlement},
    transfers::{Applied, amount, may_move_any, memo},
};
use crate::{
    auth::Principal,
    error::{Error, Result},
    store, validate,
};

/// Overdue holds one sweep settles at most (their source accounts go through the engine as one
/// submission); the next sweep takes the rest.
pub const SWEEP_HOLDS_MAX: i64 = 1_000;

/// A validated `ReverseTransfer`.
#[derive(Debug, Clone)]
pub struct ReverseRequest {
    pub original: Uuid,
    pub reversal_id: Uuid,
    pub amount: Option<i64>,
    pub memo: String,
}

impl ReverseRequest {
    pub fn parse(
        transfer_id: &str,
        reversal_id: &str,
        amount_minor: Option<i64>,
        memo_text: Option<&str>,
    ) -> Result<Self> {
        let r = ReverseRequest {
            original: validate::uuid("transfer_id", transfer_id)?,
            reversal_id: validate::uuid("reversal_id", reversal_id)?,
            amount: amount_minor.map(|a| amount("amount", a)).transpose()?,
            memo: memo("memo", memo_text)?,
        };
        if r.original == r.reversal_id {
            return Err(Error::invalid(
                "reversal_id",
                "must be a new id, not the id of the transfer it reverses",
            ));
        }
        Ok(r)
    }
}

impl Ledger {
    /// Posts a hold: `amount` of it (all when `None`) moves, the rest is released.
    pub async fn post_transfer(
        &self,
        principal: &Principal,
        transfer_id: &str,
        amount_minor: Option<i64>,
    ) -> Result<Applied> {
        let id = validate::uuid("transfer_id", transfer_id)?;
        let amount = amount_minor.map(|a| amount("amount", a)).transpose()?;
        self.settle(principal, id, Settle::Post(amount)).await
    }

    /// Voids a hold: all of it is released.
    pub async fn void_transfer(&self, principal: &Principal, transfer_id: &str) -> Result<Applied> {
        let id = validate::uuid("transfer_id", transfer_id)?;
        self.settle(principal, id, Settle::Void).await
    }

    async fn settle(&self, principal: &Principal, id: Uuid, action: Settle) -> Result<Applied> {
        let may_move_any = may_move_any(principal)?;
        self.run_one(Op::Settle(Settlement {
            id,
            requested_by: principal.user_id,
            may_move_any,
            action,
        }))
        .await
    }

    /// Reverses a transfer (all that is left of it, or `amount`); recorded FAILED when its
    /// destination lacks the funds.
    pub async fn reverse_transfer(
        &self,
        principal: &Principal,
        r: ReverseRequest,
    ) -> Result<Applied> {
        let may_move_any = may_move_any(principal)?;
        self.run_one(Op::Reverse(Reversal {
            id: r.reversal_id,
            original: r.original,
            requested_by: principal.user_id,
            may_move_any,
            amount: r.amount,
            memo: r.memo,
        }))
        .await
    }

    /// One sweep: expires up to [`SWEEP_HOLDS_MAX`] overdue holds; returns how many source
    /// accounts it touched (0: nothing was overdue).
    pub async fn expire_overdue_holds(&self) -> Result<usize> {
        sweep(&self.pool, &self.engine).await
    }
}

async fn sweep(pool: &sqlx::PgPool, engine: &Engine) -> Result<usize> {
    let mut accounts = {
        let mut conn = crate::db::acquire(pool).await?;
        store::transfers::expired_hold_accounts(&mut conn, SWEEP_HOLDS_MAX).await?
    };
    accounts.sort_unstable();
    accounts.dedup();
    if !accounts.is_empty() {
        engine.touch(accounts.clone()).await?;
    }
    Ok(accounts.len())
}

/// Runs [`sweep`] every `interval` until `stop` fires or is dropped (with the ledger).
pub(super) fn spawn_sweeper(
    pool: sqlx::PgPool,
    engine: Engine,
    interval: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticks.tick() => {}
            }
            match sweep(&pool, &engine).await {
                Ok(0) => {}
                Ok(accounts) => tracing::debug!(accounts, "expired overdue holds"),
                // The next tick tries again; batches expire what they touch meanwhile.
                Err(err) => tracing::warn!(error = %err, "hold sweep failed"),
            }
        }
    });
}
