//! Balance monitors: conditions on an account's posted balance that the transfer engine
//! evaluates in every batch that moves it (see [`super::plan`]); here, who may set and see
//! them.

use uuid::Uuid;

use super::{AMOUNT_MAX, Ledger};
use crate::{
    auth::Principal,
    error::{Error, Reason, Result},
    store::{self, monitors::MonitorRow},
    validate,
};

/// Monitors one account may have.
pub const MONITORS_PER_ACCOUNT_MAX: i64 = 10;
/// The farthest threshold: a balance never gets further (the migration's CHECK allows more).
pub const THRESHOLD_MAX: i64 = AMOUNT_MAX * 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Above,
    Below,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Condition::Above => "above",
            Condition::Below => "below",
        }
    }
}

pub type BalanceMonitor = MonitorRow;

impl Ledger {
    /// Sets a monitor on an account the caller may read; it starts armed unless its condition
    /// holds already (then it fires once the balance has come back and crossed again).
    pub async fn create_monitor(
        &self,
        principal: &Principal,
        account_id: &str,
        condition: Option<Condition>,
        threshold: i64,
    ) -> Result<BalanceMonitor> {
        let account = self.get_account(principal, account_id).await?.id;
        let condition =
            condition.ok_or_else(|| Error::invalid("condition", "must be ABOVE or BELOW"))?;
        if threshold.unsigned_abs() > THRESHOLD_MAX.unsigned_abs() {
            return Err(Error::invalid(
                "threshold",
                format!("must be within ±{THRESHOLD_MAX} minor units"),
            ));
        }
        let mut tx = crate::db::begin(&self.pool).await?;
        // The account's row lock: no batch moves it meanwhile, so the state below is its
        // state, and concurrent creations cannot pass the limit.
        let locked = store::accounts::lock_one(&mut tx, account)
            .await?
            .ok_or(Error::NotFound("account"))?;
        if store::monitors::count_for_account(&mut tx, account).await? >= MONITORS_PER_ACCOUNT_MAX {
            return Err(Error::refused(
                Reason::MonitorLimit,
                format!("an account may have at most {MONITORS_PER_ACCOUNT_MAX} balance monitors"),
            ));
        }
        let mut row = MonitorRow {
            id: Uuid::now_v7(),
            account_id: account,
            created_by: principal.user_id,
            condition: condition.as_str().to_owned(),
            threshold,
            triggered: false,
            created_at: time::OffsetDateTime::now_utc(),
        };
        row.triggered = match condition {
            Condition::Above => locked.balance > threshold,
            Condition::Below => locked.balance < threshold,
        };
        let row = store::monitors::insert(&mut tx, &row).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// The monitors of an account the caller may read.
    pub async fn list_monitors(
        &self,
        principal: &Principal,
        account_id: &str,
    ) -> Result<Vec<BalanceMonitor>> {
        let account = self.get_account(principal, account_id).await?.id;
        let mut conn = crate::db::acquire(&self.pool).await?;
        store::monitors::for_account(&mut conn, account).await
    }

    /// Deletes a monitor of an account the caller may read (any other looks missing).
    pub async fn delete_monitor(&self, principal: &Principal, monitor_id: &str) -> Result<()> {
        let id = validate::uuid("monitor_id", monitor_id)?;
        let mut conn = crate::db::acquire(&self.pool).await?;
        let Some(monitor) = store::monitors::by_ids(&mut conn, &[id]).await?.pop() else {
            return Err(Error::NotFound("balance monitor"));
        };
        drop(conn);
        self.get_account(principal, &monitor.account_id.to_string())
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => Error::NotFound("balance monitor"),
                other => other,
            })?;
        let mut conn = crate::db::acquire(&self.pool).await?;
        store::monitors::delete(&mut conn, id).await
    }
}
