//! `tally.v1.EventService`, and the protobuf form of the change feed's events (which the Redis
//! stream and webhooks publish too, as JSON).

use std::pin::Pin;

use futures_util::{Stream, StreamExt as _};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{ApiState, principal, timestamp};
use crate::{
    feed::{Event, Subject, WatchItem},
    ledger::monitors::{BalanceMonitor, Condition},
    proto::tally_v1::{self as pb, event_service_server::EventService},
    store::accounts::Position,
};

fn position((account_id, p): (Uuid, Position)) -> pb::AccountPosition {
    pb::AccountPosition {
        account_id: account_id.to_string(),
        balance: p.balance,
        pending_debits: p.pending_debits,
        pending_credits: p.pending_credits,
        available_balance: p.balance.saturating_sub(p.pending_debits),
    }
}

/// Sequences are positive `bigint`s.
fn sequence(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

impl From<Event> for pb::LedgerEvent {
    fn from(e: Event) -> Self {
        use pb::ledger_event::Subject as S;
        pb::LedgerEvent {
            sequence: sequence(e.sequence),
            r#type: e.kind.as_str().to_owned(),
            occurred_at: Some(timestamp(e.occurred_at)),
            subject: Some(match e.subject {
                Subject::Transfer(t) => S::Transfer((*t).into()),
                Subject::Account(a) => S::Account((*a).into()),
                Subject::Monitor(m) => S::BalanceMonitor((*m).into()),
            }),
            positions: e.positions.into_iter().map(position).collect(),
        }
    }
}

impl From<WatchItem> for pb::WatchAccountResponse {
    fn from(item: WatchItem) -> Self {
        let sent_at = Some(timestamp(OffsetDateTime::now_utc()));
        match item {
            WatchItem::Event(e) => pb::WatchAccountResponse {
                sequence: sequence(e.sequence),
                event: Some(e.into()),
                sent_at,
            },
            WatchItem::Heartbeat { sequence: last } => pb::WatchAccountResponse {
                event: None,
                sequence: sequence(last),
                sent_at,
            },
        }
    }
}

impl From<BalanceMonitor> for pb::BalanceMonitor {
    fn from(m: BalanceMonitor) -> Self {
        use pb::BalanceMonitorCondition as C;
        pb::BalanceMonitor {
            monitor_id: m.id.to_string(),
            account_id: m.account_id.to_string(),
            condition: match m.condition.as_str() {
                "above" => C::Above,
                "below" => C::Below,
                _ => C::Unspecified,
            } as i32,
            threshold: m.threshold,
            triggered: m.triggered,
            created_at: Some(timestamp(m.created_at)),
        }
    }
}

type WatchAccountStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchAccountResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for ApiState {
    type WatchAccountStream = WatchAccountStream;

    async fn watch_account(
        &self,
        request: Request<pb::WatchAccountRequest>,
    ) -> Result<Response<Self::WatchAccountStream>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let items = self
            .feed
            .watch(&principal, &r.account_id, r.after_sequence)
            .await?;
        Ok(Response::new(Box::pin(
            items.map(|item| item.map(Into::into).map_err(Status::from)),
        )))
    }

    async fn create_balance_monitor(
        &self,
        request: Request<pb::CreateBalanceMonitorRequest>,
    ) -> Result<Response<pb::BalanceMonitor>, Status> {
        use pb::BalanceMonitorCondition as C;
        let principal = principal(&request)?;
        let r = request.into_inner();
        let condition = match C::try_from(r.condition) {
            Ok(C::Above) => Some(Condition::Above),
            Ok(C::Below) => Some(Condition::Below),
            _ => None,
        };
        let monitor = self
            .ledger
            .create_monitor(&principal, &r.account_id, condition, r.threshold)
            .await?;
        Ok(Response::new(monitor.into()))
    }

    async fn list_balance_monitors(
        &self,
        request: Request<pb::ListBalanceMonitorsRequest>,
    ) -> Result<Response<pb::ListBalanceMonitorsResponse>, Status> {
        let principal = principal(&request)?;
        let monitors = self
            .ledger
            .list_monitors(&principal, &request.get_ref().account_id)
            .await?;
        Ok(Response::new(pb::ListBalanceMonitorsResponse {
            monitors: monitors.into_iter().map(Into::into).collect(),
        }))
    }

    async fn delete_balance_monitor(
        &self,
        request: Request<pb::DeleteBalanceMonitorRequest>,
    ) -> Result<Response<pb::DeleteBalanceMonitorResponse>, Status> {
        let principal = principal(&request)?;
        self.ledger
            .delete_monitor(&principal, &request.get_ref().monitor_id)
            .await?;
        Ok(Response::new(pb::DeleteBalanceMonitorResponse {}))
    }
}
