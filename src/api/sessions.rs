//! `tally.v1.SessionService`.

use tonic::{Request, Response, Status};

use super::{ApiState, client_info, principal, timestamp};
use crate::{
    identity::sessions::Session,
    proto::tally_v1::{self as pb, session_service_server::SessionService},
};

impl From<Session> for pb::Session {
    fn from(s: Session) -> Self {
        pb::Session {
            session_id: s.session_id.to_string(),
            username: s.username,
            user_agent: s.user_agent,
            client_address: s.client_address,
            created_at: Some(timestamp(s.created_at)),
            expires_at: Some(timestamp(s.expires_at)),
            revoked_at: s.revoked_at.map(timestamp),
        }
    }
}

#[tonic::async_trait]
impl SessionService for ApiState {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = client_info(&request);
        let r = request.into_inner();
        let (tokens, user) = self
            .identity
            .login(&r.username, &r.password, &client)
            .await?;
        Ok(Response::new(pb::LoginResponse {
            session_id: tokens.session_id.to_string(),
            access_token: tokens.access_token,
            access_token_expires_at: Some(timestamp(tokens.access_token_expires_at)),
            refresh_token: tokens.refresh_token,
            refresh_token_expires_at: Some(timestamp(tokens.refresh_token_expires_at)),
            user: Some(user.into()),
        }))
    }

    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> Result<Response<pb::RefreshSessionResponse>, Status> {
        let tokens = self
            .identity
            .refresh(&request.into_inner().refresh_token)
            .await?;
        Ok(Response::new(pb::RefreshSessionResponse {
            access_token: tokens.access_token,
            access_token_expires_at: Some(timestamp(tokens.access_token_expires_at)),
            refresh_token: tokens.refresh_token,
            refresh_token_expires_at: Some(timestamp(tokens.refresh_token_expires_at)),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let principal = principal(&request)?;
        let sessions = self
            .identity
            .list_sessions(&principal, &request.into_inner().username)
            .await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(Into::into).collect(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let principal = principal(&request)?;
        self.identity
            .revoke_session(&principal, &request.into_inner().session_id)
            .await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }
}
