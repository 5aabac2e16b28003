//! `tally.v1.WebhookService`.

use tonic::{Request, Response, Status};

use super::{ApiState, principal, timestamp};
use crate::{
    proto::tally_v1::{self as pb, webhook_service_server::WebhookService},
    webhooks::Webhook,
};

impl From<Webhook> for pb::Webhook {
    fn from(w: Webhook) -> Self {
        pb::Webhook {
            webhook_id: w.id.to_string(),
            url: w.url,
            event_types: w.event_types,
            account_id: w.account_id.map(|id| id.to_string()),
            created_at: Some(timestamp(w.created_at)),
            delivered_through: u64::try_from(w.delivered_through).unwrap_or_default(),
            last_error: w.last_error.unwrap_or_default(),
        }
    }
}

#[tonic::async_trait]
impl WebhookService for ApiState {
    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let (webhook, secret) = self
            .webhooks
            .create(&principal, &r.url, &r.event_types, r.account_id.as_deref())
            .await?;
        Ok(Response::new(pb::CreateWebhookResponse {
            webhook: Some(webhook.into()),
            secret,
        }))
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let principal = principal(&request)?;
        let webhooks = self.webhooks.list(&principal).await?;
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: webhooks.into_iter().map(Into::into).collect(),
        }))
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        let principal = principal(&request)?;
        self.webhooks
            .delete(&principal, &request.get_ref().webhook_id)
            .await?;
        Ok(Response::new(pb::DeleteWebhookResponse {}))
    }
}
