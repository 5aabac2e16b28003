//! Queries on `users` and their roles.

use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Error, Reason, Result};

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub username: String,
    pub full_name: String,
    pub email: String,
    pub email_verified: bool,
    pub password_hash: String,
    pub password_changed_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    /// Sorted role names.
    pub roles: Vec<String>,
}

/// The user columns plus the sorted role names; a macro so queries stay `&'static str`.
macro_rules! select_user {
    () => {
        "SELECT u.id, u.username, u.full_name, u.email, u.email_verified, u.password_hash, \
         u.password_changed_at, u.created_at, \
         ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = u.id ORDER BY r.role) AS roles \
         FROM users u "
    };
}

pub struct NewUser<'a> {
    pub id: Uuid,
    pub username: &'a str,
    pub full_name: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
}

fn map_unique(err: sqlx::Error) -> Error {
    match super::violated_constraint(&err) {
        Some("users_username_key") => username_taken(),
        Some("users_email_key") => email_taken(),
        _ => err.into(),
    }
}

fn username_taken() -> Error {
    Error::refused(Reason::UsernameTaken, "username is taken")
}

fn email_taken() -> Error {
    Error::refused(Reason::EmailTaken, "email is already registered")
}

/// Refuses a sign-up whose username or email is already registered, with the error the
/// insert's unique violation would give. Asked before the password is hashed, so a taken name
/// costs no hash; the unique indexes stay the real guard against a race.
pub async fn refuse_if_taken(conn: &mut PgConnection, username: &str, email: &str) -> Result<()> {
    let (username_taken, email_taken): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM users WHERE username = $1), \
                EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($2))",
    )
    .bind(username)
    .bind(email)
    .fetch_one(conn)
    .await?;
    if username_taken {
        return Err(self::username_taken());
    }
    if email_taken {
        return Err(self::email_taken());
    }
    Ok(())
}

pub async fn insert(conn: &mut PgConnection, user: NewUser<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO users (id, username, full_name, email, password_hash) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user.id)
    .bind(user.username)
    .bind(user.full_name)
    .bind(user.email)
    .bind(user.password_hash)
    .execute(conn)
    .await
    .map_err(map_unique)?;
    Ok(())
}

pub async fn by_username(conn: &mut PgConnection, username: &str) -> Result<Option<UserRow>> {
    Ok(
        sqlx::query_as::<_, UserRow>(concat!(select_user!(), "WHERE u.username = $1"))
            .bind(username)
            .fetch_optional(conn)
            .await?,
    )
}

/// Locks the user row for the rest of the transaction (serialises changes to one user).
pub async fn lock_by_username(conn: &mut PgConnection, username: &str) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as::<_, UserRow>(concat!(
        select_user!(),
        "WHERE u.username = $1 FOR UPDATE OF u"
    ))
    .bind(username)
    .fetch_optional(conn)
    .await?)
}

pub async fn update_full_name(conn: &mut PgConnection, id: Uuid, full_name: &str) -> Result<()> {
    sqlx::query("UPDATE users SET full_name = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(full_name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets a new email, which is unverified until verified again.
pub async fn update_email(conn: &mut PgConnection, id: Uuid, email: &str) -> Result<()> {
    sqlx::query(
        "UPDATE users SET email = $2, email_verified = false, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(email)
    .execute(conn)
    .await
    .map_err(map_unique)?;
    Ok(())
}

pub async fn update_password(conn: &mut PgConnection, id: Uuid, password_hash: &str) -> Result<()> {
    sqlx::query(
        "UPDATE users SET password_hash = $2, password_changed_at = now(), updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(password_hash)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<UserRow>> {
    Ok(
        sqlx::query_as::<_, UserRow>(concat!(select_user!(), "WHERE u.id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Locks a user row against concurrent changes without blocking foreign-key checks on it
/// (so inserting rows that reference the user still proceeds). Returns whether it exists.
pub async fn lock_id(conn: &mut PgConnection, id: Uuid) -> Result<bool> {
    Ok(
        sqlx::query_scalar::<_, i32>("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(id)
            .fetch_optional(conn)
            .await?
            .is_some(),
    )
}
