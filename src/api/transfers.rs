//! `tally.v1.TransferService`: answers `UNIMPLEMENTED` until the ledger lands. The access
//! policy already covers every method, so callers are authenticated first.

use tonic::{Request, Response, Status};

use super::ApiState;
use crate::{
    error::Error,
    proto::tally_v1::{self as pb, transfer_service_server::TransferService},
};

#[tonic::async_trait]
impl TransferService for ApiState {
    async fn create_transfer(
        &self,
        _: Request<pb::CreateTransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        Err(Error::Unimplemented("CreateTransfer").into())
    }

    async fn get_transfer(
        &self,
        _: Request<pb::GetTransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        Err(Error::Unimplemented("GetTransfer").into())
    }

    async fn list_transfers(
        &self,
        _: Request<pb::ListTransfersRequest>,
    ) -> Result<Response<pb::ListTransfersResponse>, Status> {
        Err(Error::Unimplemented("ListTransfers").into())
    }
}
