//! Transfers, deposits and withdrawals (all through the one engine), and reading them back.

use uuid::Uuid;

use super::{
    AMOUNT_MAX, Kind, Ledger, MEMO_CHARS_MAX, Page, Transfer,
    accounts::next_token,
    engine::{self, Applied, Posting},
    page,
};
use crate::{
    auth::{Permission, Principal},
    error::{Error, Result},
    identity::validate,
    store,
};

/// A validated `CreateTransfer`.
#[derive(Debug, Clone)]
pub struct NewTransfer {
    pub id: Uuid,
    pub from: Uuid,
    pub to: Uuid,
    pub amount: i64,
    pub currency: String,
    pub memo: String,
}

/// A validated `Deposit` or `Withdraw`.
#[derive(Debug, Clone)]
pub struct Movement {
    pub account: Uuid,
    pub request_id: Uuid,
    pub amount: i64,
    pub memo: String,
}

pub fn amount(field: &'static str, value: i64) -> Result<i64> {
    if value <= 0 {
        return Err(Error::invalid(field, "must be positive (minor units)"));
    }
    if value > AMOUNT_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {AMOUNT_MAX}"),
        ));
    }
    Ok(value)
}

pub fn memo(field: &'static str, value: Option<&str>) -> Result<String> {
    let value = value.unwrap_or_default();
    if value.chars().count() > MEMO_CHARS_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {MEMO_CHARS_MAX} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

impl Ledger {
    pub fn parse_transfer(
        &self,
        transfer_id: &str,
        from_account_id: &str,
        to_account_id: &str,
        amount_minor: i64,
        currency: &str,
        memo_text: Option<&str>,
    ) -> Result<NewTransfer> {
        let t = NewTransfer {
            id: validate::uuid("transfer_id", transfer_id)?,
            from: validate::uuid("from_account_id", from_account_id)?,
            to: validate::uuid("to_account_id", to_account_id)?,
            amount: amount("amount", amount_minor)?,
            currency: self.currencies().require("currency", currency)?,
            memo: memo("memo", memo_text)?,
        };
        if t.from == t.to {
            return Err(Error::invalid(
                "to_account_id",
                "must differ from from_account_id",
            ));
        }
        Ok(t)
    }

    pub fn parse_movement(
        &self,
        account_id: &str,
        request_id: &str,
        amount_minor: i64,
        memo_text: Option<&str>,
    ) -> Result<Movement> {
        Ok(Movement {
            account: validate::uuid("account_id", account_id)?,
            request_id: validate::uuid("request_id", request_id)?,
            amount: amount("amount", amount_minor)?,
            memo: memo("memo", memo_text)?,
        })
    }

    /// Moves money out of an account the caller owns (or any, with `transfers.create_any`).
    /// A refused transfer is recorded FAILED and answered `FAILED_PRECONDITION`.
    pub async fn create_transfer(&self, principal: &Principal, t: NewTransfer) -> Result<Applied> {
        let posting = Posting {
            id: t.id,
            kind: Kind::Transfer,
            requested_by: principal.user_id,
            may_move_any: principal.can(Permission::TransfersCreateAny),
            from: t.from,
            to: t.to,
            amount: t.amount,
            currency: t.currency,
            memo: t.memo,
        };
        self.run(&posting).await
    }

    /// Credits an account from its currency's system account (the policy demands
    /// `accounts.deposit`).
    pub async fn deposit(&self, principal: &Principal, m: Movement) -> Result<Applied> {
        self.move_system(principal, m, Kind::Deposit).await
    }

    /// Debits an account to its currency's system account (the policy demands
    /// `accounts.withdraw`).
    pub async fn withdraw(&self, principal: &Principal, m: Movement) -> Result<Applied> {
        self.move_system(principal, m, Kind::Withdrawal).await
    }

    async fn move_system(&self, principal: &Principal, m: Movement, kind: Kind) -> Result<Applied> {
        // An account's currency never changes, so reading it before the transaction is safe.
        let account = self
            .visible_account(principal, m.account, Permission::AccountsReadAny)
            .await?;
        if account.is_system {
            return Err(Error::NotFound("account"));
        }
        let mut conn = crate::db::acquire(&self.pool).await?;
        let system = store::accounts::system_account_id(&mut conn, &account.currency)
            .await?
            .ok_or_else(|| {
                Error::internal(anyhow::anyhow!(
                    "no system account for {}",
                    account.currency
                ))
            })?;
        drop(conn);
        let (from, to) = match kind {
            Kind::Withdrawal => (account.id, system),
            _ => (system, account.id),
        };
        let posting = Posting {
            id: m.request_id,
            kind,
            requested_by: principal.user_id,
            may_move_any: true,
            from,
            to,
            amount: m.amount,
            currency: account.currency,
            memo: m.memo,
        };
        self.run(&posting).await
    }

    async fn run(&self, posting: &Posting) -> Result<Applied> {
        let applied = engine::execute(&self.pool, &self.settings, &self.gate, posting).await?;
        let outcome = if applied.transfer.failure.is_some() {
            "failed"
        } else {
            "succeeded"
        };
        metrics::counter!("tally_transfers_total", "kind" => posting.kind.as_str(), "outcome" => outcome)
            .increment(1);
        Ok(Applied {
            transfer: applied.transfer.into_result()?,
            attempts: applied.attempts,
        })
    }

    /// A transfer, failed or not, if the caller owns either side or holds `transfers.read_any`.
    pub async fn get_transfer(&self, principal: &Principal, transfer_id: &str) -> Result<Transfer> {
        let id = validate::uuid("transfer_id", transfer_id)?;
        let mut conn = crate::db::acquire(&self.pool).await?;
        let row = store::transfers::by_id(&mut conn, id)
            .await?
            .ok_or(Error::NotFound("transfer"))?;
        if !principal.can(Permission::TransfersReadAny) {
            let mut owns_a_side = false;
            for account in [row.from_account_id, row.to_account_id] {
                let owner = store::accounts::by_id(&mut conn, account)
                    .await?
                    .and_then(|a| a.owner_id);
                owns_a_side |= owner == Some(principal.user_id);
            }
            if !owns_a_side {
                return Err(Error::NotFound("transfer"));
            }
        }
        Transfer::try_from(row)
    }

    /// The transfers touching an account, newest first.
    pub async fn list_transfers(
        &self,
        principal: &Principal,
        account_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Transfer>> {
        let id = validate::uuid("account_id", account_id)?;
        let limit = page::page_size(page_size)?;
        let before = page::seq_cursor(id, page_token)?;
        self.visible_account(principal, id, Permission::TransfersReadAny)
            .await?;
        let mut conn = crate::db::acquire(&self.pool).await?;
        let mut rows =
            store::transfers::page_for_account(&mut conn, id, before, limit as i64 + 1).await?;
        let next_page_token = next_token(&mut rows, limit, |last| {
            page::token(id, &last.seq.to_string())
        });
        Ok(Page {
            items: rows
                .into_iter()
                .map(Transfer::try_from)
                .collect::<Result<_>>()?,
            next_page_token,
        })
    }
}
