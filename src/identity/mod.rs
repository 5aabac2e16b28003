//! The identity half of tally, free of any transport: users, sessions and roles.
//!
//! Every operation takes the calling [`Principal`] (or is public) and decides visibility
//! itself: users other than yourself are `NOT_FOUND` unless you may manage users.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::{
    auth::{Authenticator, Principal, password::Hashing},
    jobs::outbox::Relay,
    store::users::UserRow,
};

pub mod roles;
pub mod sessions;
pub mod users;
pub use crate::validate;
pub mod verification;

/// Settings the identity rules need.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Failed logins per (username, client address) within the window.
    pub login_failures_max: u32,
    /// Failed logins per client address, any username, within the window.
    pub login_failures_per_address_max: u32,
    pub login_failure_window: Duration,
    /// How long a verification code stays valid.
    pub verification_ttl: Duration,
    /// Password hashes at once, process-wide, and how long a caller waits for a turn.
    pub hash_concurrency_max: usize,
    pub hash_wait: Duration,
}

pub struct Identity {
    pool: PgPool,
    authenticator: Arc<Authenticator>,
    settings: IdentitySettings,
    hashing: Hashing,
    /// Pushes verification mail to the queue right after commit; `None` leaves it to the
    /// worker's outbox sweep (as in `tally admin`).
    relay: Option<Relay>,
}

impl Identity {
    pub fn new(
        pool: PgPool,
        authenticator: Arc<Authenticator>,
        settings: IdentitySettings,
        relay: Option<Relay>,
    ) -> Self {
        Self {
            hashing: Hashing::new(settings.hash_concurrency_max, settings.hash_wait),
            pool,
            authenticator,
            settings,
            relay,
        }
    }
}

/// A user as the API may show it: no password hash, no internal id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub full_name: String,
    pub email: String,
    pub email_verified: bool,
    pub roles: Vec<String>,
    pub created_at: OffsetDateTime,
    pub password_changed_at: OffsetDateTime,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            username: row.username,
            full_name: row.full_name,
            email: row.email,
            email_verified: row.email_verified,
            roles: row.roles,
            created_at: row.created_at,
            password_changed_at: row.password_changed_at,
        }
    }
}

/// Where a call came from, recorded on the sessions it opens.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub user_agent: String,
    pub client_address: String,
}

/// Whether `principal` may see `username` at all: themselves, or a user manager.
fn may_see_user(principal: &Principal, username: &str) -> bool {
    principal.is(username) || principal.can(crate::auth::Permission::UsersManage)
}
