//! Transfers, deposits and withdrawals (all through the one engine), and reading them back.

use uuid::Uuid;

use std::time::Duration;

use super::{
    AMOUNT_MAX, Chain, HOLD_TIMEOUT_MAX, Kind, Ledger, MEMO_CHARS_MAX, Op, Page, Posting, Status,
    Transfer, page, plan,
};
use crate::{
    auth::{Permission, Principal},
    error::{Error, Reason, Result},
    store, validate,
};

/// A transfer as recorded, and how many attempts its batch transaction took.
#[derive(Debug, Clone)]
pub struct Applied {
    pub transfer: Transfer,
    pub attempts: u32,
}

/// A validated `CreateTransfer`, or one item of `CreateTransfers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTransfer {
    pub id: Uuid,
    pub from: Uuid,
    pub to: Uuid,
    pub amount: i64,
    /// Upper-case code; whether the ledger knows it is checked by [`Ledger`].
    pub currency: String,
    pub memo: String,
    /// A hold, and how long it may wait to be posted or voided.
    pub hold: Option<Duration>,
}

/// The fields of a transfer request, as received.
#[derive(Debug, Clone, Copy)]
pub struct TransferFields<'a> {
    pub transfer_id: &'a str,
    pub from_account_id: &'a str,
    pub to_account_id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub memo: Option<&'a str>,
    pub pending: bool,
    /// The requested timeout; `Err` when it is not a duration at all.
    pub timeout: Option<Duration>,
}

/// One item of a `CreateTransfers` call: whether it chains with the next, and the transfer (or
/// why it is malformed; a malformed item still belongs to its chain).
#[derive(Debug)]
pub struct BatchItem {
    pub linked: bool,
    pub transfer: Result<NewTransfer>,
}

/// A validated `Deposit` or `Withdraw`.
#[derive(Debug, Clone)]
pub struct Movement {
    pub account: Uuid,
    pub request_id: Uuid,
    pub amount: i64,
    pub memo: String,
}

/// The most transfers one `CreateTransfers` call may carry (TigerBeetle's figure; the
/// message-size limit may allow fewer).
pub const TRANSFERS_PER_CALL_MAX: usize = super::engine::BATCH_POSTINGS_MAX;

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

/// A hold's timeout: required with `pending`, 1 ms to [`HOLD_TIMEOUT_MAX`] in whole
/// milliseconds; refused without it.
fn hold(pending: bool, timeout: Option<Duration>) -> Result<Option<Duration>> {
    match (pending, timeout) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(Error::invalid(
            "timeout",
            "is for holds only; set `pending` or leave it out",
        )),
        (true, None) => Err(Error::invalid(
            "timeout",
            "is required for a hold (pending transfer)",
        )),
        (true, Some(t)) if t.subsec_nanos() % 1_000_000 != 0 => Err(Error::invalid(
            "timeout",
            "must be a whole number of milliseconds",
        )),
        (true, Some(t)) if t.is_zero() || t > HOLD_TIMEOUT_MAX => Err(Error::invalid(
            "timeout",
            format!("must be from 1 ms to {} s", HOLD_TIMEOUT_MAX.as_secs()),
        )),
        (true, Some(t)) => Ok(Some(t)),
    }
}

impl NewTransfer {
    /// Validates the fields of a transfer request (everything but whether its currency is one
    /// of the ledger's).
    pub fn parse(f: TransferFields<'_>) -> Result<Self> {
        let t = NewTransfer {
            id: validate::uuid("transfer_id", f.transfer_id)?,
            from: validate::uuid("from_account_id", f.from_account_id)?,
            to: validate::uuid("to_account_id", f.to_account_id)?,
            amount: amount("amount", f.amount)?,
            currency: super::currency::code("currency", f.currency)?,
            memo: memo("memo", f.memo)?,
            hold: hold(f.pending, f.timeout)?,
        };
        if t.from == t.to {
            return Err(Error::invalid(
                "to_account_id",
                "must differ from from_account_id",
            ));
        }
        Ok(t)
    }
}

impl Movement {
    pub fn parse(
        account_id: &str,
        request_id: &str,
        amount_minor: i64,
        memo_text: Option<&str>,
    ) -> Result<Self> {
        Ok(Movement {
            account: validate::uuid("account_id", account_id)?,
            request_id: validate::uuid("request_id", request_id)?,
            amount: amount("amount", amount_minor)?,
            memo: memo("memo", memo_text)?,
        })
    }
}

/// The answers to a `CreateTransfers` call: one per item, in order. `Ok` holds a recorded
/// transfer (succeeded, or FAILED by a rule); `Err` means nothing was written for the item.
#[derive(Debug)]
pub struct BatchApplied {
    pub results: Vec<Result<Transfer>>,
    pub attempts: u32,
}

/// Whether the caller may move money out of anyone's account (`transfers.create_any`) or only
/// out of their own (`transfers.own`, the customer role's); with neither, `PERMISSION_DENIED`.
pub(super) fn may_move_any(principal: &Principal) -> Result<bool> {
    if principal.can(Permission::TransfersCreateAny) {
        return Ok(true);
    }
    principal.require(Permission::TransfersOwn)?;
    Ok(false)
}

impl Ledger {
    /// Moves money out of an account the caller owns (or any, with `transfers.create_any`).
    /// A refused transfer is recorded FAILED and answered `FAILED_PRECONDITION`.
    pub async fn create_transfer(&self, principal: &Principal, t: NewTransfer) -> Result<Applied> {
        let may_move_any = may_move_any(principal)?;
        let posting = self.transfer_posting(principal, may_move_any, t)?;
        self.run_one(Op::Create(posting)).await
    }

    /// Applies a batch: `items` in order, each already parsed (a parse error is that item's
    /// answer). Items with `linked` chain with the next one; `atomic` makes the batch one chain.
    pub async fn create_transfers(
        &self,
        principal: &Principal,
        items: Vec<BatchItem>,
        atomic: bool,
    ) -> Result<BatchApplied> {
        if items.is_empty() || items.len() > TRANSFERS_PER_CALL_MAX {
            return Err(Error::invalid(
                "transfers",
                format!("must hold 1 to {TRANSFERS_PER_CALL_MAX} transfers"),
            ));
        }
        // The caller's right to move money at all is one answer for the whole call.
        let may_move_any = may_move_any(principal)?;
        if !atomic && items.last().is_some_and(|item| item.linked) {
            return Err(Error::InvalidArgument {
                reason: Reason::LinkedChainOpen,
                field: "transfers",
                message: "the last transfer is linked, so its chain never ends; clear `linked` on \
                          the last transfer of every chain"
                    .into(),
            });
        }

        // Chains as ranges of item indices, then what each item comes to: an answer known here
        // (a malformed item, or a member of a chain holding one), or a place in the engine's.
        let chains = chain_ranges(&items, atomic);
        let mut items: Vec<Option<Result<Posting>>> = items
            .into_iter()
            .map(|item| {
                Some(
                    item.transfer
                        .and_then(|t| self.transfer_posting(principal, may_move_any, t)),
                )
            })
            .collect();
        let mut answers: Vec<Option<Result<Transfer>>> = (0..items.len()).map(|_| None).collect();
        let mut submitted: Vec<Chain> = Vec::new();
        let mut places: Vec<usize> = Vec::new();
        for range in chains {
            let whole = items[range.clone()]
                .iter()
                .all(|item| matches!(item, Some(Ok(_))));
            for i in range.clone() {
                match items[i].take().expect("each item is taken once") {
                    Ok(posting) if whole => {
                        if i == range.start {
                            submitted.push(Vec::with_capacity(range.len()));
                        }
                        submitted
                            .last_mut()
                            .expect("pushed above")
                            .push(Op::Create(posting));
                        places.push(i);
                    }
                    Ok(_) => {
                        answers[i] = Some(Err(plan::linked_failed(plan::CHAIN_REJECTED)));
                    }
                    Err(err) => answers[i] = Some(Err(err)),
                }
            }
        }
        let mut attempts = 0;
        if !submitted.is_empty() {
            let settled = self.engine.submit(submitted).await?;
            attempts = settled.attempts;
            for (i, outcome) in places.into_iter().zip(settled.outcomes) {
                answers[i] = Some(outcome);
            }
        }
        Ok(BatchApplied {
            results: answers
                .into_iter()
                .map(|a| a.expect("every item answered"))
                .collect(),
            attempts,
        })
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
        let system = self.system_account(&account.currency).await?;
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
            hold_ms: None,
            claim: None,
        };
        self.run_one(Op::Create(posting)).await
    }

    /// The system account of `currency`, from the bootstrap's cache (or the database when the
    /// ledger was not bootstrapped).
    async fn system_account(&self, currency: &str) -> Result<Uuid> {
        if let Some(id) = self.system_accounts.get().and_then(|m| m.get(currency)) {
            return Ok(*id);
        }
        let mut conn = crate::db::acquire(&self.pool).await?;
        store::accounts::system_account_id(&mut conn, currency)
            .await?
            .ok_or_else(|| Error::internal(anyhow::anyhow!("no system account for {currency}")))
    }

    fn transfer_posting(
        &self,
        principal: &Principal,
        may_move_any: bool,
        t: NewTransfer,
    ) -> Result<Posting> {
        Ok(Posting {
            id: t.id,
            kind: Kind::Transfer,
            requested_by: principal.user_id,
            may_move_any,
            from: t.from,
            to: t.to,
            amount: t.amount,
            currency: self.currencies().require("currency", &t.currency)?,
            memo: t.memo,
            hold_ms: t.hold.map(|d| d.as_millis() as i64),
            claim: None,
        })
    }

    pub(super) async fn run_one(&self, op: Op) -> Result<Applied> {
        let mut settled = self.engine.submit(vec![vec![op]]).await?;
        let transfer = settled
            .outcomes
            .pop()
            .ok_or_else(|| Error::internal(anyhow::anyhow!("the engine gave no answer")))??;
        Ok(Applied {
            transfer: transfer.into_result()?,
            attempts: settled.attempts,
        })
    }

    /// A transfer if the caller requested it, owns either side (only the source, for a FAILED
    /// one) or holds `transfers.read_any`.
    pub async fn get_transfer(&self, principal: &Principal, transfer_id: &str) -> Result<Transfer> {
        let id = validate::uuid("transfer_id", transfer_id)?;
        let mut conn = crate::db::acquire(&self.pool).await?;
        let row = store::transfers::by_id(&mut conn, id)
            .await?
            .ok_or(Error::NotFound("transfer"))?;
        if !principal.can(Permission::TransfersReadAny) && row.requested_by != principal.user_id {
            // A FAILED, voided or expired transfer moved nothing into its destination: it
            // belongs to the source's history, never the destination's, so nobody can write
            // into another's statement by naming their account.
            let sides: &[Uuid] = if reached_destination(row.status) {
                &[row.from_account_id, row.to_account_id]
            } else {
                &[row.from_account_id]
            };
            let mut owns_a_side = false;
            for &account in sides {
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

    /// The transfers touching an account, newest first: those out of it, and those into it that
    /// succeeded (a FAILED transfer is in its source's history only).
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
        let next_page_token = page::cut(
            &mut rows,
            limit,
            |t| page::ITEM_FIXED_BYTES + t.memo.len(),
            |last| page::token(id, &last.seq.to_string()),
        );
        Ok(Page {
            items: rows
                .into_iter()
                .map(Transfer::try_from)
                .collect::<Result<_>>()?,
            next_page_token,
        })
    }
}

/// Whether a transfer in this state moved (or holds) money into its destination, and so shows
/// in the destination's history.
fn reached_destination(status: Status) -> bool {
    matches!(status, Status::Succeeded | Status::Pending | Status::Posted)
}

/// The chains of a batch as ranges of item indices: `atomic` makes one; otherwise a chain ends
/// at the first item that is not `linked`.
fn chain_ranges(items: &[BatchItem], atomic: bool) -> Vec<std::ops::Range<usize>> {
    if atomic {
        return std::iter::once(0..items.len()).collect();
    }
    let mut ranges = Vec::new();
    let mut start = 0;
    for (i, item) in items.iter().enumerate() {
        if !item.linked {
            ranges.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < items.len() {
        ranges.push(start..items.len());
    }
    ranges
}
