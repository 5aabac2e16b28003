//! The built-in roles and their grants.

use super::{Identity, User, validate};
use crate::{
    auth::Role,
    error::{Error, Reason, Result},
    store,
};

fn role(name: &str) -> Result<Role> {
    Role::from_name(name).ok_or_else(|| {
        Error::invalid(
            "role",
            format!(
                "unknown role; one of {}",
                Role::ALL.map(Role::name).join(", ")
            ),
        )
    })
}

impl Identity {
    /// The built-in roles, from code (the `roles` table mirrors them).
    pub fn list_roles(&self) -> Vec<Role> {
        Role::ALL.to_vec()
    }

    /// Grants a role; granting one already held changes nothing. The access policy already
    /// demands `roles.manage`; `actor` is logged.
    pub async fn grant_role(&self, actor: &str, username: &str, name: &str) -> Result<User> {
        let username = validate::username("username", username)?;
        let role = role(name)?;
        let mut tx = crate::db::begin(&self.pool).await?;
        let user = store::users::lock_by_username(&mut tx, &username)
            .await?
            .ok_or(Error::NotFound("user"))?;
        store::roles::grant(&mut tx, user.id, role.name()).await?;
        let updated = store::users::by_id(&mut tx, user.id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        tx.commit().await?;
        self.authenticator.forget_user(user.id);
        tracing::info!(by = actor, user.username = %username, role = role.name(), "role granted");
        Ok(updated.into())
    }

    /// Revokes a role. The last admin cannot lose `admin`, or nobody could grant it again
    /// short of the shell.
    pub async fn revoke_role(&self, actor: &str, username: &str, name: &str) -> Result<User> {
        let username = validate::username("username", username)?;
        let role = role(name)?;
        let mut tx = crate::db::begin(&self.pool).await?;
        let user = store::users::lock_by_username(&mut tx, &username)
            .await?
            .ok_or(Error::NotFound("user"))?;
        if role == Role::Admin
            && user.roles.iter().any(|r| r == Role::Admin.name())
            && store::roles::lock_holders(&mut tx, Role::Admin.name()).await? <= 1
        {
            return Err(Error::refused(
                Reason::LastAdmin,
                "cannot revoke admin from the last admin",
            ));
        }
        store::roles::revoke(&mut tx, user.id, role.name()).await?;
        let updated = store::users::by_id(&mut tx, user.id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        tx.commit().await?;
        self.authenticator.forget_user(user.id);
        tracing::info!(by = actor, user.username = %username, role = role.name(), "role revoked");
        Ok(updated.into())
    }
}
