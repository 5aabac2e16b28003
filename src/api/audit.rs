//! `tally.v1.AuditService`.

use tonic::{Request, Response, Status};

use super::{ApiState, timestamp};
use crate::{
    audit::{self, AuditEvent, AuditFilter},
    error::Error,
    proto::tally_v1::{self as pb, audit_service_server::AuditService},
};

/// The `username` filter that selects calls made without a token.
const ANONYMOUS: &str = "anonymous";
/// Longer filter values match nothing stored; refused rather than sent to the database.
const FILTER_CHARS_MAX: usize = 128;

impl From<AuditEvent> for pb::AuditEvent {
    fn from(e: AuditEvent) -> Self {
        pb::AuditEvent {
            event_id: e.id.to_string(),
            time: Some(timestamp(e.at)),
            username: e.username.unwrap_or_default(),
            method: e.method,
            resource_ids: e.resource_ids,
            outcome: e.outcome,
            latency_micros: e.latency_micros,
            client_address: e.client_address,
            request_id: e.request_id,
        }
    }
}

impl TryFrom<&pb::ListAuditEventsRequest> for AuditFilter {
    type Error = Error;

    fn try_from(r: &pb::ListAuditEventsRequest) -> Result<Self, Error> {
        let text = |field: &'static str, value: &str| -> Result<Option<String>, Error> {
            match value.trim() {
                "" => Ok(None),
                v if v.chars().count() > FILTER_CHARS_MAX => Err(Error::invalid(
                    field,
                    format!("must be at most {FILTER_CHARS_MAX} characters"),
                )),
                v => Ok(Some(v.to_owned())),
            }
        };
        let username = match text("username", &r.username)? {
            None => None,
            Some(name) if name == ANONYMOUS => Some(None),
            Some(name) => Some(Some(name)),
        };
        Ok(AuditFilter {
            username,
            method: text("method", &r.method)?,
            outcome: text("outcome", &r.outcome)?.map(|o| o.to_ascii_uppercase()),
            start: super::from_timestamp("start_time", &r.start_time)?,
            end: super::from_timestamp("end_time", &r.end_time)?,
        })
    }
}

#[tonic::async_trait]
impl AuditService for ApiState {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        // The policy (audit.read) let only admins this far.
        let r = request.into_inner();
        let filter = AuditFilter::try_from(&r)?;
        let page = audit::list(&self.pool, &filter, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
