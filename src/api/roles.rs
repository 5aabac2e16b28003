//! `tally.v1.RoleService`.

use tonic::{Request, Response, Status};

use super::{ApiState, principal};
use crate::{
    auth::Role,
    proto::tally_v1::{self as pb, role_service_server::RoleService},
};

impl From<Role> for pb::Role {
    fn from(role: Role) -> Self {
        pb::Role {
            name: role.name().to_owned(),
            description: role.description().to_owned(),
            permissions: role
                .permissions()
                .iter()
                .map(|p| p.name().to_owned())
                .collect(),
        }
    }
}

#[tonic::async_trait]
impl RoleService for ApiState {
    async fn list_roles(
        &self,
        _request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        Ok(Response::new(pb::ListRolesResponse {
            roles: self
                .identity
                .list_roles()
                .into_iter()
                .map(Into::into)
                .collect(),
        }))
    }

    async fn grant_role(
        &self,
        request: Request<pb::GrantRoleRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let user = self
            .identity
            .grant_role(&principal.username, &r.username, &r.role)
            .await?;
        Ok(Response::new(user.into()))
    }

    async fn revoke_role(
        &self,
        request: Request<pb::RevokeRoleRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let user = self
            .identity
            .revoke_role(&principal.username, &r.username, &r.role)
            .await?;
        Ok(Response::new(user.into()))
    }
}
