//! `tally.v1.AccountService`: answers `UNIMPLEMENTED` until the ledger lands. The access
//! policy already covers every method, so callers are authenticated first.

use tonic::{Request, Response, Status};

use super::ApiState;
use crate::{
    error::Error,
    proto::tally_v1::{self as pb, account_service_server::AccountService},
};

#[tonic::async_trait]
impl AccountService for ApiState {
    async fn create_account(
        &self,
        _: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        Err(Error::Unimplemented("CreateAccount").into())
    }

    async fn get_account(
        &self,
        _: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        Err(Error::Unimplemented("GetAccount").into())
    }

    async fn list_accounts(
        &self,
        _: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        Err(Error::Unimplemented("ListAccounts").into())
    }

    async fn list_entries(
        &self,
        _: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        Err(Error::Unimplemented("ListEntries").into())
    }

    async fn deposit(
        &self,
        _: Request<pb::DepositRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        Err(Error::Unimplemented("Deposit").into())
    }

    async fn withdraw(
        &self,
        _: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        Err(Error::Unimplemented("Withdraw").into())
    }
}
