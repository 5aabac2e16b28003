//! Queries on `email_verifications`.

use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

/// Why a verification was created; stored as text and mirrored by a CHECK constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Signup,
    EmailChanged,
    Resend,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Signup => "signup",
            Purpose::EmailChanged => "email_changed",
            Purpose::Resend => "resend",
        }
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct VerificationRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub code_hash: Option<Vec<u8>>,
    pub expires_at: OffsetDateTime,
    pub mailed_at: Option<OffsetDateTime>,
    pub used_at: Option<OffsetDateTime>,
    pub superseded_at: Option<OffsetDateTime>,
}

pub struct NewVerification<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub email: &'a str,
    pub purpose: Purpose,
    pub expires_at: OffsetDateTime,
}

pub async fn insert(conn: &mut PgConnection, new: NewVerification<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO email_verifications (id, user_id, email, purpose, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(new.id)
    .bind(new.user_id)
    .bind(new.email)
    .bind(new.purpose.as_str())
    .bind(new.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks every open verification of the user superseded (a newer one replaces them).
pub async fn supersede_open(conn: &mut PgConnection, user_id: Uuid) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE email_verifications SET superseded_at = now() \
         WHERE user_id = $1 AND used_at IS NULL AND superseded_at IS NULL",
    )
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// How many verifications of `purpose` the user got since `since`.
pub async fn count_since(
    conn: &mut PgConnection,
    user_id: Uuid,
    purpose: Purpose,
    since: OffsetDateTime,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM email_verifications \
         WHERE user_id = $1 AND purpose = $2 AND created_at > $3",
    )
    .bind(user_id)
    .bind(purpose.as_str())
    .bind(since)
    .fetch_one(conn)
    .await?)
}

/// Locks one verification for the rest of the transaction. The worker holds this lock while
/// it mints a code and sends the mail, so two deliveries of one job cannot both send, and a
/// `VerifyEmail` racing the mail waits for the code to commit. `NO KEY UPDATE`: the code the
/// worker remembers meanwhile, from another connection, only needs a key-share lock for its
/// foreign key.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<VerificationRow>> {
    Ok(sqlx::query_as::<_, VerificationRow>(
        "SELECT id, user_id, email, code_hash, expires_at, mailed_at, used_at, superseded_at \
         FROM email_verifications WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Remembers a code about to be mailed; called outside the sending transaction, so it stays
/// valid even if that transaction is lost after the mail went out.
pub async fn remember_code(conn: &mut PgConnection, id: Uuid, code_hash: &[u8]) -> Result<()> {
    sqlx::query(
        "INSERT INTO verification_codes (verification_id, code_hash) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(code_hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// The hashes of every code minted for a verification (the mailed one among them).
pub async fn code_hashes(conn: &mut PgConnection, id: Uuid) -> Result<Vec<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT code_hash FROM verification_codes WHERE verification_id = $1")
            .bind(id)
            .fetch_all(conn)
            .await?,
    )
}

/// Records the hash of the code that is being mailed.
pub async fn set_mailed(conn: &mut PgConnection, id: Uuid, code_hash: &[u8]) -> Result<()> {
    sqlx::query("UPDATE email_verifications SET code_hash = $2, mailed_at = now() WHERE id = $1")
        .bind(id)
        .bind(code_hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Uses the verification up and marks its user's email verified, if the email is unchanged.
/// Returns whether the user's current email was the verified one.
/// `code_hash` is the code presented: it becomes the mailed one when the mail's own transaction
/// was lost (the code was remembered, the send's commit never came).
pub async fn consume(
    conn: &mut PgConnection,
    row: &VerificationRow,
    code_hash: &[u8],
) -> Result<bool> {
    sqlx::query(
        "UPDATE email_verifications SET used_at = now(), \
           mailed_at = COALESCE(mailed_at, now()), code_hash = COALESCE(code_hash, $2) \
         WHERE id = $1",
    )
    .bind(row.id)
    .bind(code_hash)
    .execute(&mut *conn)
    .await?;
    let verified = sqlx::query(
        "UPDATE users SET email_verified = true, updated_at = now() \
         WHERE id = $1 AND lower(email) = lower($2)",
    )
    .bind(row.user_id)
    .bind(&row.email)
    .execute(conn)
    .await?;
    Ok(verified.rows_affected() == 1)
}
