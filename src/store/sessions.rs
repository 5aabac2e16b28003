//! Queries on `sessions`, `refresh_tokens` and `login_failures`.

use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub user_agent: String,
    pub client_address: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// A session that is neither revoked nor expired, with its user's current roles.
#[derive(Debug, Clone, FromRow)]
pub struct LiveSessionRow {
    pub user_id: Uuid,
    pub username: String,
    pub roles: Vec<String>,
    pub expires_at: OffsetDateTime,
}

/// A refresh token, locked, with the state of its session.
#[derive(Debug, Clone, FromRow)]
pub struct RefreshTokenRow {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub expires_at: OffsetDateTime,
    pub used_at: Option<OffsetDateTime>,
    pub session_revoked_at: Option<OffsetDateTime>,
}

pub struct NewSession<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub user_agent: &'a str,
    pub client_address: &'a str,
    pub expires_at: OffsetDateTime,
}

pub async fn insert(conn: &mut PgConnection, session: NewSession<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, user_agent, client_address, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(session.id)
    .bind(session.user_id)
    .bind(session.user_agent)
    .bind(session.client_address)
    .bind(session.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert_refresh_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
    session_id: Uuid,
    expires_at: OffsetDateTime,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(token_hash)
    .bind(session_id)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks a refresh token row (and its session's) so two concurrent refreshes of one token
/// serialise: the second sees `used_at` set and is treated as reuse.
pub async fn lock_refresh_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<RefreshTokenRow>> {
    Ok(sqlx::query_as::<_, RefreshTokenRow>(
        "SELECT t.session_id, s.user_id, t.expires_at, t.used_at, \
                s.revoked_at AS session_revoked_at \
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
         WHERE t.token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await?)
}

pub async fn mark_refresh_token_used(conn: &mut PgConnection, token_hash: &[u8]) -> Result<()> {
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
        .bind(token_hash)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn extend(conn: &mut PgConnection, id: Uuid, expires_at: OffsetDateTime) -> Result<()> {
    sqlx::query("UPDATE sessions SET expires_at = $2 WHERE id = $1")
        .bind(id)
        .bind(expires_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes a live session; returns false when it was already revoked.
pub async fn revoke(conn: &mut PgConnection, id: Uuid, reason: &str) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2 \
         WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Revokes every live session of a user except `keep`; returns the revoked ids.
pub async fn revoke_all_for_user(
    conn: &mut PgConnection,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $3 \
         WHERE user_id = $1 AND revoked_at IS NULL AND ($2::uuid IS NULL OR id <> $2) \
         RETURNING id",
    )
    .bind(user_id)
    .bind(keep)
    .bind(reason)
    .fetch_all(conn)
    .await?)
}

pub async fn live_session(conn: &mut PgConnection, id: Uuid) -> Result<Option<LiveSessionRow>> {
    Ok(sqlx::query_as::<_, LiveSessionRow>(
        "SELECT s.user_id, u.username, s.expires_at, \
                ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = u.id ORDER BY r.role) \
                  AS roles \
         FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > now()",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

macro_rules! select_session {
    () => {
        "SELECT s.id, s.user_id, u.username, s.user_agent, s.client_address, s.created_at, \
         s.expires_at, s.revoked_at FROM sessions s JOIN users u ON u.id = s.user_id "
    };
}

pub async fn by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<SessionRow>> {
    Ok(
        sqlx::query_as::<_, SessionRow>(concat!(select_session!(), "WHERE s.id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

/// The newest `limit` sessions of a user.
pub async fn newest_for_user(
    conn: &mut PgConnection,
    user_id: Uuid,
    limit: i64,
) -> Result<Vec<SessionRow>> {
    Ok(sqlx::query_as::<_, SessionRow>(concat!(
        select_session!(),
        "WHERE s.user_id = $1 ORDER BY s.created_at DESC, s.id DESC LIMIT $2"
    ))
    .bind(user_id)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Serialises login attempts for one username, then for one client address, until the
/// transaction ends, so concurrent attempts cannot all slip under the failure limits. (Always in
/// that order, so two attempts cannot wait for each other.)
pub async fn lock_login_attempts(
    conn: &mut PgConnection,
    username: &str,
    client_address: &str,
) -> Result<()> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('tally.login:' || $1, 0)), \
                pg_advisory_xact_lock(hashtextextended('tally.login-address:' || $2, 0))",
    )
    .bind(username)
    .bind(client_address)
    .execute(conn)
    .await?;
    Ok(())
}

/// Failures within the window: for this username from this address, and from this address for
/// any username.
pub async fn recent_login_failures(
    conn: &mut PgConnection,
    username: &str,
    client_address: &str,
    window_secs: i64,
) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE username = $1), count(*) FROM login_failures \
         WHERE client_address = $2 AND failed_at > now() - make_interval(secs => $3)",
    )
    .bind(username)
    .bind(client_address)
    .bind(window_secs as f64)
    .fetch_one(conn)
    .await?)
}

/// Records a failure and prunes every failure that fell out of the window (any username, so
/// guessing many usernames cannot grow the table without bound).
pub async fn record_login_failure(
    conn: &mut PgConnection,
    username: &str,
    client_address: &str,
    window_secs: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM login_failures WHERE failed_at <= now() - make_interval(secs => $1)")
        .bind(window_secs as f64)
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO login_failures (username, client_address) VALUES ($1, $2)")
        .bind(username)
        .bind(client_address)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes a session's refresh tokens that have expired: past their expiry, a rotated token can
/// no longer be presented, so it is no longer needed to detect reuse.
pub async fn prune_refresh_tokens(conn: &mut PgConnection, session_id: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM refresh_tokens WHERE session_id = $1 AND expires_at < now()")
        .bind(session_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes a user's live sessions beyond the newest `keep`; returns the revoked ids.
pub async fn revoke_beyond(conn: &mut PgConnection, user_id: Uuid, keep: i64) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = 'session_limit' \
         WHERE id IN (SELECT id FROM sessions \
                      WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() \
                      ORDER BY created_at DESC, id DESC OFFSET $2) \
         RETURNING id",
    )
    .bind(user_id)
    .bind(keep)
    .fetch_all(conn)
    .await?)
}
