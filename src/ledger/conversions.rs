//! Conversions between currencies: a linked chain of two legs through the liquidity account of
//! each currency (the user's source account → the source currency's liquidity account, the
//! target currency's liquidity account → the user's target account), applied by the engine in
//! one SERIALIZABLE batch transaction that also checks the quote unexpired and unused and marks
//! it used. Every currency still sums to zero on its own.
//!
//! Idempotent by the client's `conversion_id`: the legs' ids are derived from it, so a resent
//! conversion replays both legs as recorded (succeeded, or FAILED with the reason).

use uuid::Uuid;

use super::{
    Kind, Ledger, Transfer,
    posting::{Op, Posting, QuoteClaim},
};
use crate::{
    auth::{Permission, Principal},
    error::{Error, Reason, Result},
};

/// A validated conversion at a quote's terms.
#[derive(Debug, Clone)]
pub struct ConversionRequest {
    pub conversion_id: Uuid,
    pub quote_id: Uuid,
    pub from_account: Uuid,
    pub to_account: Uuid,
    pub from_currency: String,
    pub to_currency: String,
    pub from_amount: i64,
    pub to_amount: i64,
}

/// The two legs of a conversion, as recorded.
#[derive(Debug, Clone)]
pub struct ConversionLegs {
    /// Out of the user's source account into the source currency's liquidity.
    pub debit: Transfer,
    /// Out of the target currency's liquidity into the user's target account.
    pub credit: Transfer,
}

/// The id of a conversion's leg (`debit` or `credit`): the same for every resend.
pub fn leg_id(conversion_id: Uuid, leg: &str) -> Uuid {
    Uuid::new_v5(&conversion_id, leg.as_bytes())
}

impl Ledger {
    /// The liquidity account of `currency`, from the bootstrap.
    pub fn liquidity_account(&self, currency: &str) -> Result<Uuid> {
        self.liquidity_accounts
            .get()
            .and_then(|accounts| accounts.get(currency))
            .copied()
            .ok_or_else(|| Error::internal(anyhow::anyhow!("no liquidity account for {currency}")))
    }

    /// Every liquidity account id, by currency.
    pub fn liquidity_accounts(&self) -> Vec<(String, Uuid)> {
        self.liquidity_accounts
            .get()
            .map(|accounts| accounts.iter().map(|(c, id)| (c.clone(), *id)).collect())
            .unwrap_or_default()
    }

    /// Converts at the quote's terms: both accounts must be the caller's own (a banker converts
    /// for nobody else). A leg a rule refuses records both legs FAILED and answers the reason
    /// (`QUOTE_EXPIRED`, `QUOTE_USED`, `INSUFFICIENT_FUNDS`, `INSUFFICIENT_LIQUIDITY`, ...).
    pub async fn convert(
        &self,
        principal: &Principal,
        c: &ConversionRequest,
    ) -> Result<ConversionLegs> {
        principal.require(Permission::TransfersOwn)?;
        let leg = |id, from, to, amount, currency: &str, claim| Posting {
            id,
            kind: Kind::Conversion,
            requested_by: principal.user_id,
            may_move_any: false,
            from,
            to,
            amount,
            currency: currency.to_owned(),
            memo: format!("conversion {}", c.conversion_id),
            hold_ms: None,
            claim,
        };
        let debit = leg(
            leg_id(c.conversion_id, "debit"),
            c.from_account,
            self.liquidity_account(&c.from_currency)?,
            c.from_amount,
            &c.from_currency,
            Some(QuoteClaim {
                quote_id: c.quote_id,
                conversion_id: c.conversion_id,
            }),
        );
        let credit = leg(
            leg_id(c.conversion_id, "credit"),
            self.liquidity_account(&c.to_currency)?,
            c.to_account,
            c.to_amount,
            &c.to_currency,
            None,
        );
        let settled = self
            .engine
            .submit(vec![vec![Op::Create(debit), Op::Create(credit)]])
            .await?;
        let mut outcomes = settled.outcomes.into_iter();
        let (Some(debit), Some(credit)) = (outcomes.next(), outcomes.next()) else {
            return Err(Error::internal(anyhow::anyhow!(
                "the engine gave no answer"
            )));
        };
        let (debit, credit) = match (debit, credit) {
            (Ok(debit), Ok(credit)) => (debit, credit),
            // Nothing was written: the leg that was rejected says why, not its partner.
            (Err(err), Err(other)) => return Err(first_cause(err, other)),
            (Err(err), Ok(_)) | (Ok(_), Err(err)) => return Err(err),
        };
        // Recorded FAILED: the leg a rule refused says why (the other is linked).
        for leg in [&debit, &credit] {
            if leg
                .failure
                .is_some_and(|f| f != super::FailureReason::LinkedTransferFailed)
                && let Err(refused) = leg.clone().into_result()
            {
                return Err(refused);
            }
        }
        Ok(ConversionLegs { debit, credit })
    }
}

/// Of two errors of one chain, the one that is not "another member failed".
fn first_cause(first: Error, second: Error) -> Error {
    let linked = |e: &Error| {
        matches!(
            e,
            Error::Refused {
                reason: Reason::LinkedTransferFailed,
                ..
            }
        )
    };
    if linked(&first) && !linked(&second) {
        second
    } else {
        first
    }
}
