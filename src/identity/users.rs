//! Sign-up, profile reads and profile changes.

use uuid::Uuid;

use super::{ClientInfo, Identity, User, may_see_user, validate};
use crate::{
    auth::{Principal, Role},
    error::{Error, Reason, Result},
    store::{self, verifications::Purpose},
};

/// A validated sign-up.
#[derive(Debug, Clone)]
pub struct CreateUser {
    pub username: String,
    pub full_name: String,
    pub email: String,
    pub password: String,
}

impl CreateUser {
    pub fn parse(username: &str, full_name: &str, email: &str, password: &str) -> Result<Self> {
        Ok(Self {
            username: validate::new_username("username", username)?,
            full_name: validate::full_name("full_name", full_name)?,
            email: validate::email("email", email)?,
            password: validate::new_password("password", password)?,
        })
    }
}

/// A validated profile change; `None` fields stay as they are.
#[derive(Debug, Clone)]
pub struct UpdateUser {
    pub username: String,
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub current_password: Option<String>,
}

impl UpdateUser {
    pub fn parse(
        username: &str,
        full_name: Option<&str>,
        email: Option<&str>,
        password: Option<&str>,
        current_password: Option<&str>,
    ) -> Result<Self> {
        Ok(Self {
            username: validate::username("username", username)?,
            full_name: full_name
                .map(|v| validate::full_name("full_name", v))
                .transpose()?,
            email: email.map(|v| validate::email("email", v)).transpose()?,
            password: password
                .map(|v| validate::new_password("password", v))
                .transpose()?,
            current_password: current_password
                .map(|v| validate::presented_password("current_password", v))
                .transpose()?,
        })
    }
}

impl Identity {
    /// Creates a user holding the `customer` role. The user, the role grant, the email
    /// verification and the outbox row that owes its mail commit together.
    pub async fn create_user(&self, new: CreateUser) -> Result<User> {
        {
            let mut conn = crate::db::acquire(&self.pool).await?;
            store::users::refuse_if_taken(&mut conn, &new.username, &new.email).await?;
        }
        let password_hash = self.hashing.permit().await?.hash(new.password).await?;
        let mut tx = crate::db::begin(&self.pool).await?;
        let id = Uuid::now_v7();
        store::users::insert(
            &mut tx,
            store::users::NewUser {
                id,
                username: &new.username,
                full_name: &new.full_name,
                email: &new.email,
                password_hash: &password_hash,
            },
        )
        .await?;
        store::roles::grant(&mut tx, id, Role::Customer.name()).await?;
        let outbox_id = self
            .open_verification(&mut tx, id, &new.email, Purpose::Signup)
            .await?;
        let user = store::users::by_username(&mut tx, &new.username)
            .await?
            .ok_or_else(|| Error::internal(anyhow::anyhow!("inserted user vanished")))?;
        tx.commit().await?;
        self.relay_mail(outbox_id);
        tracing::info!(user.username = %new.username, "user created");
        Ok(user.into())
    }

    pub async fn get_user(&self, principal: &Principal, username: &str) -> Result<User> {
        let username = validate::username("username", username)?;
        if !may_see_user(principal, &username) {
            return Err(Error::NotFound("user"));
        }
        let mut conn = crate::db::acquire(&self.pool).await?;
        store::users::by_username(&mut conn, &username)
            .await?
            .map(User::from)
            .ok_or(Error::NotFound("user"))
    }

    /// Applies a profile change. Changing your own password needs the current one (a wrong
    /// one counts as a failed login, so this is no side door for guessing) and signs out your
    /// other sessions; an admin resetting someone else's password signs out all of theirs.
    pub async fn update_user(
        &self,
        principal: &Principal,
        change: UpdateUser,
        client: &ClientInfo,
    ) -> Result<User> {
        if !may_see_user(principal, &change.username) {
            return Err(Error::NotFound("user"));
        }
        let self_service = principal.is(&change.username);
        if change.password.is_some() && self_service {
            let Some(current) = change.current_password.clone() else {
                return Err(Error::invalid(
                    "current_password",
                    "is required to change your own password",
                ));
            };
            self.check_current_password(&change.username, current, client)
                .await?;
        }
        let new_hash = match change.password {
            Some(p) => Some(self.hashing.permit().await?.hash(p).await?),
            None => None,
        };

        let mut tx = crate::db::begin(&self.pool).await?;
        let user = store::users::lock_by_username(&mut tx, &change.username)
            .await?
            .ok_or(Error::NotFound("user"))?;
        if let Some(full_name) = &change.full_name {
            store::users::update_full_name(&mut tx, user.id, full_name).await?;
        }
        let mut outbox_id = None;
        if let Some(email) = &change.email
            && !email.eq_ignore_ascii_case(&user.email)
        {
            // A new address is unverified until its own code comes back; older codes die.
            store::users::update_email(&mut tx, user.id, email).await?;
            outbox_id = Some(
                self.open_verification(&mut tx, user.id, email, Purpose::EmailChanged)
                    .await?,
            );
        }
        if let Some(hash) = &new_hash {
            store::users::update_password(&mut tx, user.id, hash).await?;
            let keep = self_service.then_some(principal.session_id);
            store::sessions::revoke_all_for_user(&mut tx, user.id, keep, "password_changed")
                .await?;
        }
        let updated = store::users::by_username(&mut tx, &change.username)
            .await?
            .ok_or(Error::NotFound("user"))?;
        tx.commit().await?;
        if let Some(outbox_id) = outbox_id {
            self.relay_mail(outbox_id);
        }
        if new_hash.is_some() {
            self.authenticator.forget_user(user.id);
            tracing::info!(user.username = %change.username, "password changed");
        }
        Ok(updated.into())
    }

    /// Checks a presented current password under the login failure limit.
    async fn check_current_password(
        &self,
        username: &str,
        presented: String,
        client: &ClientInfo,
    ) -> Result<()> {
        let address = super::sessions::client_address_key(client);
        // The permit first: no transaction waits for hashing.
        let permit = self.hashing.permit().await?;
        let mut tx = crate::db::begin(&self.pool).await?;
        self.refuse_if_rate_limited(&mut tx, username, &address)
            .await?;
        let stored = store::users::by_username(&mut tx, username)
            .await?
            .map(|u| u.password_hash);
        if permit.verify(presented, stored).await? {
            tx.commit().await?;
            return Ok(());
        }
        self.record_failure(&mut tx, username, &address).await?;
        tx.commit().await?;
        Err(Error::refused(
            Reason::CurrentPasswordMismatch,
            "current_password is not correct",
        ))
    }
}
