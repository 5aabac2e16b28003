//! Email verification: opening a verification (with its outbox row, in the caller's
//! transaction), `VerifyEmail` and `ResendVerification`.
//!
//! Every kind of bad code (malformed, unknown, wrong, used, superseded, expired) gets the same
//! answer, so the answer tells an attacker nothing; codes are compared as SHA-256 hashes in
//! constant time.

use sha2::{Digest as _, Sha256};
use sqlx::PgConnection;
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Identity, may_see_user, validate};
use crate::{
    auth::Principal,
    error::{Error, Reason, Result},
    jobs::MailJob,
    store::{self, verifications::Purpose},
};

/// `ResendVerification` calls allowed per user within [`RESEND_WINDOW`].
pub const RESENDS_PER_WINDOW_MAX: i64 = 3;
pub const RESEND_WINDOW: time::Duration = time::Duration::hours(1);
/// Longest code we bother hashing; real codes are 43 characters.
const CODE_CHARS_MAX: usize = 128;

/// The one answer for every bad code.
pub const BAD_CODE_MESSAGE: &str = "verification code is invalid, expired or already used";

fn bad_code() -> Error {
    Error::refused(Reason::VerificationCodeInvalid, BAD_CODE_MESSAGE)
}

/// What `VerifyEmail` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub username: String,
    /// Whether the user's current address is now verified (false when the address changed
    /// after the mail went out).
    pub email_verified: bool,
}

impl Identity {
    /// Supersedes the user's open verifications and opens a new one with the outbox row that
    /// owes its mail, in the caller's transaction. Returns the outbox id to kick after commit.
    pub(super) async fn open_verification(
        &self,
        conn: &mut PgConnection,
        user_id: Uuid,
        email: &str,
        purpose: Purpose,
    ) -> Result<Uuid> {
        store::verifications::supersede_open(conn, user_id).await?;
        let verification_id = Uuid::now_v7();
        store::verifications::insert(
            conn,
            store::verifications::NewVerification {
                id: verification_id,
                user_id,
                email,
                purpose,
                expires_at: OffsetDateTime::now_utc() + self.settings.verification_ttl,
            },
        )
        .await?;
        let outbox_id = Uuid::now_v7();
        let payload = serde_json::to_value(MailJob::VerificationMailV1 {
            verification_id,
            // The job continues the trace of the call that owes the mail.
            traceparent: crate::telemetry::current_traceparent(),
        })
        .map_err(Error::internal)?;
        store::mail::insert_outbox(conn, outbox_id, verification_id, &payload).await?;
        Ok(outbox_id)
    }

    /// Pushes a committed outbox row to the queue now, if this process has a relay; the
    /// worker's sweep picks it up otherwise.
    pub(super) fn relay_mail(&self, outbox_id: Uuid) {
        if let Some(relay) = &self.relay {
            relay.kick(outbox_id);
        }
    }

    /// Confirms an email address with the code from the mail. Public; single use.
    pub async fn verify_email(&self, verification_id: &str, code: &str) -> Result<Verified> {
        let Ok(verification_id) = Uuid::parse_str(verification_id.trim()) else {
            return Err(bad_code());
        };
        if code.is_empty() || code.len() > CODE_CHARS_MAX {
            return Err(bad_code());
        }
        let presented = Sha256::digest(code.trim().as_bytes());
        let mut tx = crate::db::begin(&self.pool).await?;
        // Locking waits for a worker that is sending this very mail, so its code is committed.
        let Some(row) = store::verifications::lock(&mut tx, verification_id).await? else {
            return Err(bad_code());
        };
        // The mailed code, or any other minted for this verification (a mail whose sending
        // transaction was lost after the mail went out): each compared in constant time.
        let minted = store::verifications::code_hashes(&mut tx, verification_id).await?;
        let stored = row.code_hash.as_deref().unwrap_or(&[0u8; 32]);
        let matches: bool = minted
            .iter()
            .map(Vec::as_slice)
            .chain(std::iter::once(stored))
            .fold(subtle::Choice::from(0), |any, hash| {
                any | presented[..].ct_eq(hash)
            })
            .into();
        let usable = (row.code_hash.is_some() || !minted.is_empty())
            && row.used_at.is_none()
            && row.superseded_at.is_none()
            && row.expires_at > OffsetDateTime::now_utc();
        if !(matches && usable) {
            return Err(bad_code());
        }
        let email_verified = store::verifications::consume(&mut tx, &row, &presented).await?;
        let user = store::users::by_id(&mut tx, row.user_id)
            .await?
            .ok_or_else(bad_code)?;
        tx.commit().await?;
        tracing::info!(user.username = %user.username, email_verified, "email verified");
        Ok(Verified {
            username: user.username,
            email_verified,
        })
    }

    /// Sends a new verification mail, superseding older codes; at most
    /// [`RESENDS_PER_WINDOW_MAX`] per [`RESEND_WINDOW`] per user.
    pub async fn resend_verification(&self, principal: &Principal, username: &str) -> Result<()> {
        let username = validate::username("username", username)?;
        if !may_see_user(principal, &username) {
            return Err(Error::NotFound("user"));
        }
        let mut tx = crate::db::begin(&self.pool).await?;
        // The user lock serialises resends, so the count below cannot be raced past.
        let user = store::users::lock_by_username(&mut tx, &username)
            .await?
            .ok_or(Error::NotFound("user"))?;
        if user.email_verified {
            return Err(Error::refused(
                Reason::EmailAlreadyVerified,
                "email is already verified",
            ));
        }
        let since = OffsetDateTime::now_utc() - RESEND_WINDOW;
        let recent =
            store::verifications::count_since(&mut tx, user.id, Purpose::Resend, since).await?;
        if recent >= RESENDS_PER_WINDOW_MAX {
            return Err(Error::refused(
                Reason::VerificationRateLimited,
                format!(
                    "at most {RESENDS_PER_WINDOW_MAX} verification mails per hour; try again later"
                ),
            ));
        }
        let outbox_id = self
            .open_verification(&mut tx, user.id, &user.email, Purpose::Resend)
            .await?;
        tx.commit().await?;
        self.relay_mail(outbox_id);
        tracing::info!(user.username = %username, "verification mail requested again");
        Ok(())
    }
}
