//! `tally.v1.AccountService`.

use tonic::{Request, Response, Status};

use super::{ApiState, from_timestamp, principal, timestamp};
use crate::{
    error::Error,
    ledger::{Account, Entry, transfers::Movement},
    proto::tally_v1::{self as pb, account_service_server::AccountService},
};

impl From<Account> for pb::Account {
    fn from(a: Account) -> Self {
        let available_balance = a.available_balance();
        pb::Account {
            available_balance,
            account_id: a.id.to_string(),
            owner: a.owner,
            name: a.name,
            currency: a.currency,
            balance: a.balance,
            pending_debits: a.pending_debits,
            pending_credits: a.pending_credits,
            overdraft_limit: a.overdraft_limit,
            closed_at: a.closed_at.map(timestamp),
            created_at: Some(timestamp(a.created_at)),
            updated_at: Some(timestamp(a.updated_at)),
        }
    }
}

impl From<Entry> for pb::Entry {
    fn from(e: Entry) -> Self {
        pb::Entry {
            entry_id: e.id.to_string(),
            account_id: e.account_id.to_string(),
            transfer_id: e.transfer_id.to_string(),
            amount: e.amount,
            balance_after: e.balance_after,
            created_at: Some(timestamp(e.created_at)),
        }
    }
}

impl TryFrom<pb::DepositRequest> for Movement {
    type Error = Error;
    fn try_from(r: pb::DepositRequest) -> Result<Self, Error> {
        Movement::parse(&r.account_id, &r.request_id, r.amount, r.memo.as_deref())
    }
}

impl TryFrom<pb::WithdrawRequest> for Movement {
    type Error = Error;
    fn try_from(r: pb::WithdrawRequest) -> Result<Self, Error> {
        Movement::parse(&r.account_id, &r.request_id, r.amount, r.memo.as_deref())
    }
}

#[tonic::async_trait]
impl AccountService for ApiState {
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let open = self.ledger.parse_open_account(
            &r.currency,
            r.owner.as_deref(),
            r.name.as_deref(),
            r.overdraft_limit,
        )?;
        let account = self.ledger.create_account(&principal, open).await?;
        Ok(Response::new(account.into()))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let principal = principal(&request)?;
        let account = self
            .ledger
            .get_account(&principal, &request.into_inner().account_id)
            .await?;
        Ok(Response::new(account.into()))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let page = self
            .ledger
            .list_accounts(&principal, r.owner.as_deref(), r.page_size, &r.page_token)
            .await?;
        let valuation = if r.valuation_currency.is_empty() {
            None
        } else {
            Some(
                self.valuation(
                    &principal,
                    r.owner.as_deref(),
                    &r.valuation_currency,
                    &page.items,
                )
                .await?,
            )
        };
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
            valuation,
        }))
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let update = self.ledger.parse_account_update(
            &r.account_id,
            r.name.as_deref(),
            r.overdraft_limit,
        )?;
        let account = self.ledger.update_account(&principal, update).await?;
        Ok(Response::new(account.into()))
    }

    async fn close_account(
        &self,
        request: Request<pb::CloseAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let principal = principal(&request)?;
        let account = self
            .ledger
            .close_account(&principal, &request.into_inner().account_id)
            .await?;
        Ok(Response::new(account.into()))
    }

    async fn get_account_balance(
        &self,
        request: Request<pb::GetAccountBalanceRequest>,
    ) -> Result<Response<pb::GetAccountBalanceResponse>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let as_of = from_timestamp("as_of", &r.as_of)?;
        let at = self
            .ledger
            .account_balance(&principal, &r.account_id, as_of)
            .await?;
        Ok(Response::new(pb::GetAccountBalanceResponse {
            account_id: at.account_id.to_string(),
            currency: at.currency,
            balance: at.balance,
            as_of: Some(timestamp(at.as_of)),
        }))
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let page = self
            .ledger
            .list_entries(&principal, &r.account_id, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListEntriesResponse {
            entries: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn deposit(
        &self,
        request: Request<pb::DepositRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let applied = self
            .ledger
            .deposit(&principal, Movement::try_from(r)?)
            .await?;
        Ok(super::transfers::applied_response(applied))
    }

    async fn withdraw(
        &self,
        request: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let applied = self
            .ledger
            .withdraw(&principal, Movement::try_from(r)?)
            .await?;
        Ok(super::transfers::applied_response(applied))
    }
}

impl ApiState {
    /// The wallet valuation of `ListAccounts`: the page's accounts and every account of the
    /// owner, in `currency`.
    async fn valuation(
        &self,
        principal: &crate::auth::Principal,
        owner: Option<&str>,
        currency: &str,
        page: &[Account],
    ) -> Result<pb::Valuation, Error> {
        let currency = self
            .ledger
            .currencies()
            .require("valuation_currency", currency)?;
        let sums = self.ledger.balances_by_currency(principal, owner).await?;
        let priced = self.exchange.value(&currency, &sums)?;
        let mut total: i128 = 0;
        let mut unpriced_currencies = Vec::new();
        for ((held, _), value) in sums.iter().zip(&priced) {
            match value {
                Some(value) => total += value,
                None => unpriced_currencies.push(held.clone()),
            }
        }
        let balances: Vec<(String, i128)> = page
            .iter()
            .map(|a| (a.currency.clone(), i128::from(a.balance)))
            .collect();
        let accounts = page
            .iter()
            .zip(self.exchange.value(&currency, &balances)?)
            .filter_map(|(account, value)| {
                Some(pb::AccountValue {
                    account_id: account.id.to_string(),
                    value: i64::try_from(value?).ok()?,
                })
            })
            .collect();
        Ok(pb::Valuation {
            total: i64::try_from(total).map_err(|_| {
                Error::invalid(
                    "valuation_currency",
                    "the wallet is worth more than this currency counts",
                )
            })?,
            currency,
            accounts,
            unpriced_currencies,
        })
    }
}
