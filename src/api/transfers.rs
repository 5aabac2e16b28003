//! `tally.v1.TransferService`.

use tonic::{Request, Response, Status, metadata::MetadataValue};

use super::{ApiState, principal, timestamp};
use crate::{
    ledger::{FailureReason, Kind, Transfer, engine::Applied},
    proto::tally_v1::{self as pb, transfer_service_server::TransferService},
};

/// Response metadata: how many transaction attempts the transfer took (1 = no retry).
pub const ATTEMPTS_HEADER: &str = "tally-attempts";

impl From<Transfer> for pb::Transfer {
    fn from(t: Transfer) -> Self {
        let (status, failure_reason) = match t.failure {
            None => (
                pb::TransferStatus::Succeeded,
                pb::FailureReason::Unspecified,
            ),
            Some(FailureReason::InsufficientFunds) => (
                pb::TransferStatus::Failed,
                pb::FailureReason::InsufficientFunds,
            ),
            Some(FailureReason::CurrencyMismatch) => (
                pb::TransferStatus::Failed,
                pb::FailureReason::CurrencyMismatch,
            ),
        };
        pb::Transfer {
            transfer_id: t.id.to_string(),
            from_account_id: t.from_account_id.to_string(),
            to_account_id: t.to_account_id.to_string(),
            amount: t.amount,
            currency: t.currency,
            status: status.into(),
            failure_reason: failure_reason.into(),
            memo: t.memo,
            created_at: Some(timestamp(t.created_at)),
            kind: match t.kind {
                Kind::Transfer => pb::TransferKind::Transfer,
                Kind::Deposit => pb::TransferKind::Deposit,
                Kind::Withdrawal => pb::TransferKind::Withdrawal,
            }
            .into(),
        }
    }
}

/// The transfer, with the attempts it took as response metadata.
pub(super) fn applied_response(applied: Applied) -> Response<pb::Transfer> {
    let mut response = Response::new(pb::Transfer::from(applied.transfer));
    response
        .metadata_mut()
        .insert(ATTEMPTS_HEADER, MetadataValue::from(applied.attempts));
    response
}

#[tonic::async_trait]
impl TransferService for ApiState {
    async fn create_transfer(
        &self,
        request: Request<pb::CreateTransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let transfer = self.ledger.parse_transfer(
            &r.transfer_id,
            &r.from_account_id,
            &r.to_account_id,
            r.amount,
            &r.currency,
            r.memo.as_deref(),
        )?;
        let applied = self.ledger.create_transfer(&principal, transfer).await?;
        Ok(applied_response(applied))
    }

    async fn get_transfer(
        &self,
        request: Request<pb::GetTransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        let principal = principal(&request)?;
        let transfer = self
            .ledger
            .get_transfer(&principal, &request.into_inner().transfer_id)
            .await?;
        Ok(Response::new(transfer.into()))
    }

    async fn list_transfers(
        &self,
        request: Request<pb::ListTransfersRequest>,
    ) -> Result<Response<pb::ListTransfersResponse>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let page = self
            .ledger
            .list_transfers(&principal, &r.account_id, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListTransfersResponse {
            transfers: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
