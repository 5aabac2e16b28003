//! `tally.v1.UserService`.

use tonic::{Request, Response, Status};

use super::{ApiState, principal, timestamp};
use crate::{
    error::Error,
    identity::{
        User,
        users::{CreateUser, UpdateUser},
    },
    proto::tally_v1::{self as pb, user_service_server::UserService},
};

impl From<User> for pb::User {
    fn from(u: User) -> Self {
        pb::User {
            username: u.username,
            full_name: u.full_name,
            email: u.email,
            email_verified: u.email_verified,
            roles: u.roles,
            created_at: Some(timestamp(u.created_at)),
            password_changed_at: Some(timestamp(u.password_changed_at)),
        }
    }
}

impl TryFrom<pb::CreateUserRequest> for CreateUser {
    type Error = Error;
    fn try_from(r: pb::CreateUserRequest) -> Result<Self, Error> {
        CreateUser::parse(&r.username, &r.full_name, &r.email, &r.password)
    }
}

impl TryFrom<pb::UpdateUserRequest> for UpdateUser {
    type Error = Error;
    fn try_from(r: pb::UpdateUserRequest) -> Result<Self, Error> {
        UpdateUser::parse(
            &r.username,
            r.full_name.as_deref(),
            r.email.as_deref(),
            r.password.as_deref(),
            r.current_password.as_deref(),
        )
    }
}

#[tonic::async_trait]
impl UserService for ApiState {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let command = CreateUser::try_from(request.into_inner())?;
        let user = self.identity.create_user(command).await?;
        Ok(Response::new(user.into()))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let principal = principal(&request)?;
        let user = self
            .identity
            .get_user(&principal, &request.into_inner().username)
            .await?;
        Ok(Response::new(user.into()))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let principal = principal(&request)?;
        let client = super::client_info(&request);
        let change = UpdateUser::try_from(request.into_inner())?;
        let user = self
            .identity
            .update_user(&principal, change, &client)
            .await?;
        Ok(Response::new(user.into()))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        let pb::VerifyEmailRequest {
            verification_id,
            code,
        } = request.into_inner();
        let verified = self.identity.verify_email(&verification_id, &code).await?;
        Ok(Response::new(pb::VerifyEmailResponse {
            username: verified.username,
            email_verified: verified.email_verified,
        }))
    }

    async fn resend_verification(
        &self,
        request: Request<pb::ResendVerificationRequest>,
    ) -> Result<Response<pb::ResendVerificationResponse>, Status> {
        let principal = principal(&request)?;
        self.identity
            .resend_verification(&principal, &request.into_inner().username)
            .await?;
        Ok(Response::new(pb::ResendVerificationResponse {}))
    }
}
