//! `tally.v1.TransferService`.

use prost::Message as _;
use tonic::{Request, Response, Status, metadata::MetadataValue};

use super::{ApiState, duration, from_duration, principal, timestamp};
use crate::{
    error::Error,
    ledger::{
        FailureReason, Kind, Status as TransferStatus, Transfer,
        holds::ReverseRequest,
        transfers::{Applied, BatchItem, NewTransfer, TransferFields},
    },
    proto::tally_v1::{
        self as pb, create_transfer_result::Result as Outcome,
        transfer_service_server::TransferService,
    },
};

pub use crate::proto::ATTEMPTS_HEADER;

/// Room each item of a `CreateTransfers` call needs in the response beyond its own size in the
/// request: a result echoes the item's fields with a few more (status, kind, timestamp), or is
/// an error of at most [`ERROR_MESSAGE_BYTES_MAX`] plus its ErrorInfo. A call whose request plus
/// this much per item would not fit the message-size limit is refused before anything is
/// written, rather than committed with an answer too large to send.
pub const RESULT_BYTES_PER_ITEM: usize = 256;
/// Error messages in batch results are cut to this many bytes (at a character boundary).
const ERROR_MESSAGE_BYTES_MAX: usize = 128;
// A cut error message and its ErrorInfo must fit an item's room in the response.
const _: () = assert!(ERROR_MESSAGE_BYTES_MAX < RESULT_BYTES_PER_ITEM);

impl TryFrom<pb::CreateTransferRequest> for NewTransfer {
    type Error = Error;
    fn try_from(r: pb::CreateTransferRequest) -> Result<Self, Error> {
        NewTransfer::parse(TransferFields {
            transfer_id: &r.transfer_id,
            from_account_id: &r.from_account_id,
            to_account_id: &r.to_account_id,
            amount: r.amount,
            currency: &r.currency,
            memo: r.memo.as_deref(),
            pending: r.pending,
            timeout: from_duration("timeout", &r.timeout)?,
        })
    }
}

impl From<Transfer> for pb::Transfer {
    fn from(t: Transfer) -> Self {
        let status = match t.status {
            TransferStatus::Succeeded => pb::TransferStatus::Succeeded,
            TransferStatus::Failed => pb::TransferStatus::Failed,
            TransferStatus::Pending => pb::TransferStatus::Pending,
            TransferStatus::Posted => pb::TransferStatus::Posted,
            TransferStatus::Voided => pb::TransferStatus::Voided,
            TransferStatus::Expired => pb::TransferStatus::Expired,
        };
        let failure_reason = match t.failure {
            None => pb::FailureReason::Unspecified,
            Some(FailureReason::InsufficientFunds) => pb::FailureReason::InsufficientFunds,
            Some(FailureReason::CurrencyMismatch) => pb::FailureReason::CurrencyMismatch,
            Some(FailureReason::LinkedTransferFailed) => pb::FailureReason::LinkedTransferFailed,
            Some(FailureReason::AccountClosed) => pb::FailureReason::AccountClosed,
            Some(FailureReason::InsufficientLiquidity) => pb::FailureReason::InsufficientLiquidity,
            Some(FailureReason::QuoteExpired) => pb::FailureReason::QuoteExpired,
            Some(FailureReason::QuoteUsed) => pb::FailureReason::QuoteUsed,
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
                Kind::Reversal => pb::TransferKind::Reversal,
                Kind::Conversion => pb::TransferKind::Conversion,
            }
            .into(),
            posted_amount: t.posted_amount,
            timeout: t.timeout.map(duration),
            expires_at: t.expires_at.map(timestamp),
            reverses_transfer_id: t
                .reverses_transfer_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            reversed_amount: t.reversed_amount,
        }
    }
}

/// The transfer, with the attempts it took as response metadata.
pub(super) fn applied_response(applied: Applied) -> Response<pb::Transfer> {
    with_attempts(
        Response::new(pb::Transfer::from(applied.transfer)),
        applied.attempts,
    )
}

fn with_attempts<T>(mut response: Response<T>, attempts: u32) -> Response<T> {
    response
        .metadata_mut()
        .insert(ATTEMPTS_HEADER, MetadataValue::from(attempts));
    response
}

/// The `google.rpc.Status` a batch item answers with: the code, message and ErrorInfo that
/// `CreateTransfer` would have answered (the message cut to [`ERROR_MESSAGE_BYTES_MAX`]).
fn item_status(err: Error) -> tonic_types::pb::Status {
    let status = Status::from(err);
    let decoded = tonic_types::pb::Status::decode(status.details()).unwrap_or_default();
    let error_info = "type.googleapis.com/google.rpc.ErrorInfo";
    let mut message = status.message().to_owned();
    if message.len() > ERROR_MESSAGE_BYTES_MAX {
        let mut cut = ERROR_MESSAGE_BYTES_MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    tonic_types::pb::Status {
        code: status.code() as i32,
        message,
        // The ErrorInfo only: the message already names a malformed field.
        details: decoded
            .details
            .into_iter()
            .filter(|any| any.type_url == error_info)
            .collect(),
    }
}

/// Refuses a batch whose results might not fit the message-size limit.
fn check_result_room(
    request_bytes: usize,
    items: usize,
    message_bytes_max: usize,
) -> Result<(), Error> {
    let needed = request_bytes.saturating_add(items.saturating_mul(RESULT_BYTES_PER_ITEM));
    if needed > message_bytes_max {
        let per_item = request_bytes / items.max(1) + RESULT_BYTES_PER_ITEM;
        return Err(Error::invalid(
            "transfers",
            format!(
                "too many for the message-size limit ({message_bytes_max} bytes): the request \
                 plus {RESULT_BYTES_PER_ITEM} bytes per transfer must fit; at most about {} of \
                 these",
                message_bytes_max / per_item
            ),
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl TransferService for ApiState {
    async fn create_transfer(
        &self,
        request: Request<pb::CreateTransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        if r.linked {
            return Err(Error::invalid(
                "linked",
                "chains exist only in CreateTransfers; leave it false here",
            )
            .into());
        }
        let transfer = NewTransfer::try_from(r)?;
        let applied = self.ledger.create_transfer(&principal, transfer).await?;
        Ok(applied_response(applied))
    }

    async fn create_transfers(
        &self,
        request: Request<pb::CreateTransfersRequest>,
    ) -> Result<Response<pb::CreateTransfersResponse>, Status> {
        let principal = principal(&request)?;
        let request_bytes = request.get_ref().encoded_len();
        let r = request.into_inner();
        check_result_room(request_bytes, r.transfers.len(), self.message_bytes_max)?;
        let items = r
            .transfers
            .into_iter()
            .map(|t| BatchItem {
                linked: t.linked,
                transfer: NewTransfer::try_from(t),
            })
            .collect();
        let applied = self
            .ledger
            .create_transfers(&principal, items, r.atomic)
            .await?;
        let results = applied
            .results
            .into_iter()
            .map(|result| pb::CreateTransferResult {
                result: Some(match result {
                    Ok(transfer) => Outcome::Transfer(transfer.into()),
                    Err(err) => Outcome::Error(item_status(err)),
                }),
            })
            .collect();
        Ok(with_attempts(
            Response::new(pb::CreateTransfersResponse { results }),
            applied.attempts,
        ))
    }

    async fn post_transfer(
        &self,
        request: Request<pb::PostTransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let applied = self
            .ledger
            .post_transfer(&principal, &r.transfer_id, r.amount)
            .await?;
        Ok(applied_response(applied))
    }

    async fn void_transfer(
        &self,
        request: Request<pb::VoidTransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let applied = self
            .ledger
            .void_transfer(&principal, &r.transfer_id)
            .await?;
        Ok(applied_response(applied))
    }

    async fn reverse_transfer(
        &self,
        request: Request<pb::ReverseTransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let reversal =
            ReverseRequest::parse(&r.transfer_id, &r.reversal_id, r.amount, r.memo.as_deref())?;
        let applied = self.ledger.reverse_transfer(&principal, reversal).await?;
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
