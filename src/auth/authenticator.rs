//! Turns a bearer token into a [`Principal`].
//!
//! A valid signature is not enough: the session must still be live and the roles are the ones
//! held now. Both are read from PostgreSQL and cached for at most `auth_cache_ttl` (capped at
//! 5 s by configuration), which is how a revoked session or role stops working for tokens
//! already issued within 5 seconds, on every replica, without a database read per call.
//! Revocations made by this process also evict the cache entry at once.
//!
//! Verified tokens are cached too, by the SHA-256 of their text: a token's bytes fully decide
//! what it asserts, so decrypting and parsing it again on every call (a sixteenth of the
//! server's CPU per transfer in a profile) would only give the same answer. Its expiry is
//! still checked on every use, and only tokens that verified are cached, so garbage cannot
//! fill the cache.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    principal::{Principal, Role},
    token::{AccessClaims, TokenCodec},
};
use crate::{
    error::{Error, Result},
    store,
};

/// The one message for every token defect, so callers learn nothing about why.
/// Revocations must reach already-issued access tokens within 5 s (the contract), so the
/// session cache may never hold an entry longer than this.
pub const AUTH_CACHE_TTL_MS_MAX: u64 = 5_000;
pub const UNAUTHENTICATED_MESSAGE: &str = "missing or invalid access token";
/// Cached sessions; past this the cache is emptied (a crude bound, but a bound).
const SESSION_CACHE_ENTRIES_MAX: usize = 100_000;
/// Cached verified tokens; past this the cache is emptied.
const VERIFIED_TOKENS_MAX: usize = 100_000;

#[derive(Debug, Clone)]
struct LiveSession {
    user_id: Uuid,
    username: String,
    roles: Vec<Role>,
    expires_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
struct CacheEntry {
    fetched_at: Instant,
    /// `None`: the session is revoked, expired or unknown.
    session: Option<LiveSession>,
}

pub struct Authenticator {
    codec: Arc<dyn TokenCodec>,
    pool: PgPool,
    cache_ttl: Duration,
    cache: Mutex<HashMap<Uuid, CacheEntry>>,
    verified: Mutex<HashMap<[u8; 32], AccessClaims>>,
}

impl Authenticator {
    pub fn new(codec: Arc<dyn TokenCodec>, pool: PgPool, cache_ttl: Duration) -> Self {
        Self {
            codec,
            pool,
            cache_ttl,
            cache: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
        }
    }

    pub fn codec(&self) -> &dyn TokenCodec {
        self.codec.as_ref()
    }

    /// Verifies the `authorization` header value and resolves the live principal.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal> {
        let unauthenticated = || Error::Unauthenticated(UNAUTHENTICATED_MESSAGE);
        let token = authorization
            .and_then(bearer_token)
            .ok_or_else(unauthenticated)?;
        let claims = self.verify(token).ok_or_else(unauthenticated)?;
        let session = self
            .session(claims.session_id)
            .await?
            .ok_or_else(unauthenticated)?;
        // The token names its user; a token whose user no longer owns the session is forged
        // or stale.
        if session.username != claims.username || session.expires_at <= OffsetDateTime::now_utc() {
            return Err(unauthenticated());
        }
        Ok(Principal {
            user_id: session.user_id,
            username: session.username,
            session_id: claims.session_id,
            roles: session.roles,
        })
    }

    /// The claims of a valid, unexpired token, from the cache when it verified before.
    fn verify(&self, token: &str) -> Option<AccessClaims> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = OffsetDateTime::now_utc();
        let cached = lock(&self.verified).get(&key).cloned();
        let claims = match cached {
            Some(claims) => claims,
            None => {
                let claims = self.codec.verify(token).ok()?;
                let mut verified = lock(&self.verified);
                if verified.len() >= VERIFIED_TOKENS_MAX {
                    verified.clear();
                }
                verified.insert(key, claims.clone());
                claims
            }
        };
        (claims.expires_at > now).then_some(claims)
    }

    async fn session(&self, session_id: Uuid) -> Result<Option<LiveSession>> {
        if let Some(entry) = self.lock().get(&session_id)
            && entry.fetched_at.elapsed() < self.cache_ttl
        {
            return Ok(entry.session.clone());
        }
        let mut conn = crate::db::acquire(&self.pool).await?;
        let session = store::sessions::live_session(&mut conn, session_id)
            .await?
            .map(|row| LiveSession {
                user_id: row.user_id,
                username: row.username,
                roles: row
                    .roles
                    .iter()
                    .filter_map(|r| Role::from_name(r))
                    .collect(),
                expires_at: row.expires_at,
            });
        let mut cache = self.lock();
        if cache.len() >= SESSION_CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(
            session_id,
            CacheEntry {
                fetched_at: Instant::now(),
                session: session.clone(),
            },
        );
        Ok(session)
    }

    /// Forgets a session so its next use re-reads it (after a revocation here).
    pub fn forget_session(&self, session_id: Uuid) {
        self.lock().remove(&session_id);
    }

    /// Forgets every session of a user (after a role or password change here).
    pub fn forget_user(&self, user_id: Uuid) {
        self.lock()
            .retain(|_, entry| entry.session.as_ref().is_none_or(|s| s.user_id != user_id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, CacheEntry>> {
        lock(&self.cache)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned cache is still a valid cache: entries are replaced whole.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Extracts the token from `Bearer <token>` (scheme case-insensitive, per RFC 6750).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_tokens_are_extracted_and_other_schemes_refused() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
