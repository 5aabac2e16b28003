//! Login, refresh-token rotation with reuse detection, listing and revocation of sessions.
//!
//! A refresh token is 32 random bytes (base64url) of which only the SHA-256 is stored. Each
//! refresh marks the presented token used and issues a new one; a used token presented again
//! means it was copied, so the whole session is revoked and both copies die.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ClientInfo, Identity, User, validate};
use crate::{
    auth::{
        Permission, Principal,
        token::{AccessClaims, whole_seconds},
    },
    error::{Error, Reason, Result},
    store::{self, sessions::SessionRow},
};

/// The one answer to every failed login, for unknown users and wrong passwords alike.
pub const LOGIN_FAILED_MESSAGE: &str = "invalid username or password";
const REFRESH_FAILED_MESSAGE: &str = "invalid refresh token";
const REFRESH_TOKEN_BYTES: usize = 32;
/// Longer refresh tokens are refused before hashing.
const REFRESH_TOKEN_CHARS_MAX: usize = 128;
/// `ListSessions` returns at most this many, newest first.
pub const SESSIONS_LIST_MAX: i64 = 100;
/// Live sessions one user may hold; a new login past this revokes the oldest.
pub const LIVE_SESSIONS_PER_USER_MAX: i64 = 50;
/// Stored user agents and addresses are cut to these lengths (the columns' CHECKs).
const USER_AGENT_CHARS_MAX: usize = 512;
const CLIENT_ADDRESS_CHARS_MAX: usize = 128;
/// `login_failures.client_address`'s CHECK.
const LOGIN_FAILURE_ADDRESS_CHARS_MAX: usize = 64;

/// What a successful login or refresh hands out.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub session_id: Uuid,
    pub access_token: String,
    pub access_token_expires_at: OffsetDateTime,
    pub refresh_token: String,
    pub refresh_token_expires_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub session_id: Uuid,
    pub username: String,
    pub user_agent: String,
    pub client_address: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        Session {
            session_id: row.id,
            username: row.username,
            user_agent: row.user_agent,
            client_address: row.client_address,
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
        }
    }
}

fn truncate(value: &str, chars_max: usize) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(chars_max)
        .collect()
}

fn refresh_token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn new_refresh_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(rand::random::<[u8; REFRESH_TOKEN_BYTES]>())
}

impl Identity {
    /// Opens a session. Refused with `RESOURCE_EXHAUSTED` once the username has had
    /// `login_failures_max` failures within the window, whatever the password.
    pub async fn login(
        &self,
        username: &str,
        password_presented: &str,
        client: &ClientInfo,
    ) -> Result<(Tokens, User)> {
        let username = validate::username("username", username)?;
        let presented = validate::presented_password("password", password_presented)?;

        // The permit first: no transaction (nor the username's attempt lock) waits for hashing.
        let permit = self.hashing.permit().await?;
        let mut tx = crate::db::begin(&self.pool).await?;
        let address = client_address_key(client);
        store::sessions::lock_login_attempts(&mut tx, &username, &address).await?;
        self.refuse_if_rate_limited(&mut tx, &username, &address)
            .await?;
        let user = store::users::by_username(&mut tx, &username).await?;
        // Unknown users are checked against a dummy hash: same answer, similar time.
        let matched = permit
            .verify(presented, user.as_ref().map(|u| u.password_hash.clone()))
            .await?;
        let user = match user {
            Some(user) if matched => user,
            _ => {
                self.record_failure(&mut tx, &username, &address).await?;
                tx.commit().await?;
                tracing::info!(user.username = %username, "login failed");
                return Err(Error::Unauthenticated(LOGIN_FAILED_MESSAGE));
            }
        };

        let now = whole_seconds(OffsetDateTime::now_utc());
        let session_id = Uuid::now_v7();
        let refresh_token = new_refresh_token();
        let refresh_expires_at = now + self.settings.refresh_ttl;
        let evicted =
            store::sessions::revoke_beyond(&mut tx, user.id, LIVE_SESSIONS_PER_USER_MAX - 1)
                .await?;
        store::sessions::insert(
            &mut tx,
            store::sessions::NewSession {
                id: session_id,
                user_id: user.id,
                user_agent: &truncate(&client.user_agent, USER_AGENT_CHARS_MAX),
                client_address: &truncate(&client.client_address, CLIENT_ADDRESS_CHARS_MAX),
                expires_at: refresh_expires_at,
            },
        )
        .await?;
        store::sessions::insert_refresh_token(
            &mut tx,
            &refresh_token_hash(&refresh_token),
            session_id,
            refresh_expires_at,
        )
        .await?;
        tx.commit().await?;
        for id in evicted {
            self.authenticator.forget_session(id);
        }

        let (access_token, access_expires_at) =
            self.issue_access(&user.username, session_id, user.roles.clone(), now)?;
        tracing::info!(user.username = %user.username, session.id = %session_id, "login");
        Ok((
            Tokens {
                session_id,
                access_token,
                access_token_expires_at: access_expires_at,
                refresh_token,
                refresh_token_expires_at: refresh_expires_at,
            },
            user.into(),
        ))
    }

    /// Rotates a refresh token. A token that was already rotated revokes its session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens> {
        let refused = || Error::Unauthenticated(REFRESH_FAILED_MESSAGE);
        if refresh_token.is_empty() {
            return Err(Error::invalid("refresh_token", "is required"));
        }
        if refresh_token.len() > REFRESH_TOKEN_CHARS_MAX {
            return Err(refused());
        }
        let hash = refresh_token_hash(refresh_token);
        let now = whole_seconds(OffsetDateTime::now_utc());

        let mut tx = crate::db::begin(&self.pool).await?;
        let row = store::sessions::lock_refresh_token(&mut tx, &hash)
            .await?
            .ok_or_else(refused)?;
        if row.used_at.is_some() {
            // Reuse: someone holds a copy. Kill the session so neither copy works.
            let revoked =
                store::sessions::revoke(&mut tx, row.session_id, "refresh_token_reuse").await?;
            tx.commit().await?;
            self.authenticator.forget_session(row.session_id);
            if revoked {
                tracing::warn!(session.id = %row.session_id, "refresh token reuse: session revoked");
            }
            return Err(refused());
        }
        if row.session_revoked_at.is_some() || row.expires_at <= now {
            return Err(refused());
        }
        let user = store::users::by_id(&mut tx, row.user_id)
            .await?
            .ok_or_else(refused)?;
        let next = new_refresh_token();
        let next_expires_at = now + self.settings.refresh_ttl;
        store::sessions::mark_refresh_token_used(&mut tx, &hash).await?;
        store::sessions::insert_refresh_token(
            &mut tx,
            &refresh_token_hash(&next),
            row.session_id,
            next_expires_at,
        )
        .await?;
        store::sessions::extend(&mut tx, row.session_id, next_expires_at).await?;
        store::sessions::prune_refresh_tokens(&mut tx, row.session_id).await?;
        tx.commit().await?;

        let (access_token, access_expires_at) =
            self.issue_access(&user.username, row.session_id, user.roles, now)?;
        Ok(Tokens {
            session_id: row.session_id,
            access_token,
            access_token_expires_at: access_expires_at,
            refresh_token: next,
            refresh_token_expires_at: next_expires_at,
        })
    }

    pub async fn list_sessions(
        &self,
        principal: &Principal,
        username: &str,
    ) -> Result<Vec<Session>> {
        let username = validate::username("username", username)?;
        if !(principal.is(&username) || principal.can(Permission::SessionsManage)) {
            return Err(Error::NotFound("user"));
        }
        let mut conn = crate::db::acquire(&self.pool).await?;
        let user = store::users::by_username(&mut conn, &username)
            .await?
            .ok_or(Error::NotFound("user"))?;
        let rows = store::sessions::newest_for_user(&mut conn, user.id, SESSIONS_LIST_MAX).await?;
        Ok(rows.into_iter().map(Session::from).collect())
    }

    /// Revokes a session: your own (logout) or, with `sessions.manage`, anyone's. Revoking a
    /// revoked session succeeds and changes nothing.
    pub async fn revoke_session(&self, principal: &Principal, session_id: &str) -> Result<()> {
        let session_id = validate::uuid("session_id", session_id)?;
        let mut conn = crate::db::acquire(&self.pool).await?;
        let session = store::sessions::by_id(&mut conn, session_id)
            .await?
            .filter(|s| s.user_id == principal.user_id || principal.can(Permission::SessionsManage))
            .ok_or(Error::NotFound("session"))?;
        let why = if session.user_id == principal.user_id {
            "logout"
        } else {
            "admin"
        };
        if store::sessions::revoke(&mut conn, session_id, why).await? {
            tracing::info!(session.id = %session_id, reason = why, "session revoked");
        }
        self.authenticator.forget_session(session_id);
        Ok(())
    }

    fn issue_access(
        &self,
        username: &str,
        session_id: Uuid,
        roles: Vec<String>,
        now: OffsetDateTime,
    ) -> Result<(String, OffsetDateTime)> {
        let claims = AccessClaims {
            username: username.to_owned(),
            session_id,
            roles,
            issued_at: now,
            expires_at: now + self.settings.access_ttl,
            token_id: Uuid::new_v4(),
        };
        let token =
            self.authenticator.codec().issue(&claims).map_err(|err| {
                Error::internal(anyhow::anyhow!("issuing an access token: {err}"))
            })?;
        Ok((token, claims.expires_at))
    }

    /// `RESOURCE_EXHAUSTED` when `username` used up its failures for the window.
    pub(super) async fn refuse_if_rate_limited(
        &self,
        conn: &mut PgConnection,
        username: &str,
        client_address: &str,
    ) -> Result<()> {
        let window = self.settings.login_failure_window.as_secs() as i64;
        let (pair, address) =
            store::sessions::recent_login_failures(conn, username, client_address, window).await?;
        if pair >= i64::from(self.settings.login_failures_max) {
            return Err(Error::refused(
                Reason::LoginRateLimited,
                "too many failed logins for this username from this address; try again later",
            ));
        }
        if address >= i64::from(self.settings.login_failures_per_address_max) {
            return Err(Error::refused(
                Reason::LoginRateLimited,
                "too many failed logins from this address; try again later",
            ));
        }
        Ok(())
    }

    pub(super) async fn record_failure(
        &self,
        conn: &mut PgConnection,
        username: &str,
        client_address: &str,
    ) -> Result<()> {
        let window = self.settings.login_failure_window.as_secs() as i64;
        store::sessions::record_login_failure(conn, username, client_address, window).await
    }
}

/// The address login failures are counted under: the client's, cut to the column's bound (an
/// IP address is at most 45 characters, so only something that is not one is ever cut).
pub(super) fn client_address_key(client: &ClientInfo) -> String {
    truncate(&client.client_address, LOGIN_FAILURE_ADDRESS_CHARS_MAX)
}
