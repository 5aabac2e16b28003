//! Verification mail, from the transaction that owes it to the SMTP server that takes it.
//!
//! The path of one mail:
//! 1. The identity domain commits the user, an `email_verifications` row and a `mail_outbox`
//!    row in one transaction (so a mail is owed exactly when the verification exists).
//! 2. [`outbox`] relays outbox rows into the Redis queue: `serve` right after the commit, and
//!    the worker's periodic sweep for anything left behind (Redis down, a lost job).
//! 3. [`worker`] (`tally worker`) drains the queue with apalis: it locks the verification,
//!    mints the code, sends the mail through [`mail`], and deletes the outbox row in the same
//!    transaction. A failure counts an attempt and schedules the next one with exponential
//!    backoff; the last failure moves the row to `mail_dead_letters`.
//!
//! Delivery is at least once through the queue but, thanks to the row lock and the outbox
//! row, at most one mail per verification reaches the SMTP server in every case but one: the
//! server accepted the mail and the commit right after failed.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod mail;
pub mod outbox;
pub mod queue;
pub mod worker;

/// A job on the mail queue. Versioned and tagged: a new shape gets a new variant (and both
/// are handled while old jobs may still sit in Redis); a variant never changes shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MailJob {
    /// Send the mail of one verification. Carries no secret: the worker mints the code.
    ///
    /// `traceparent` (W3C) names the span that owed the mail, so the job's span continues
    /// that trace. It is optional and omitted when absent, which keeps the shape compatible
    /// both ways: payloads written before it existed decode, and a worker that predates it
    /// ignores it.
    #[serde(rename = "verification_mail.v1")]
    VerificationMailV1 {
        verification_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
}

/// Counters of what the worker did, for its logs and tests; `/metrics` has the same counts as
/// `tally_mail_jobs_total{outcome}` and `tally_mail_outbox_relayed_total`.
#[derive(Debug, Default)]
pub struct JobMetrics {
    /// Mail handed to the SMTP server (or written to a file).
    pub sent: AtomicU64,
    /// Jobs dropped because their mail was no longer wanted (used, superseded, expired, or
    /// already handled by another delivery of the same job).
    pub dropped: AtomicU64,
    /// Failed attempts that will be retried.
    pub retried: AtomicU64,
    /// Mail given up on (moved to the dead letters).
    pub dead: AtomicU64,
    /// Outbox rows pushed to the queue.
    pub relayed: AtomicU64,
}

/// A copy of [`JobMetrics`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobMetricsSnapshot {
    pub sent: u64,
    pub dropped: u64,
    pub retried: u64,
    pub dead: u64,
    pub relayed: u64,
}

impl JobMetrics {
    pub fn snapshot(&self) -> JobMetricsSnapshot {
        JobMetricsSnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead: self.dead.load(Ordering::Relaxed),
            relayed: self.relayed.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_payload_is_tagged_with_its_version() {
        let id = Uuid::nil();
        let json = serde_json::to_value(MailJob::VerificationMailV1 {
            verification_id: id,
            traceparent: None,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "verification_mail.v1", "verification_id": id})
        );
        let unknown = serde_json::json!({"type": "verification_mail.v9", "verification_id": id});
        assert!(serde_json::from_value::<MailJob>(unknown).is_err());
    }

    #[test]
    fn a_payload_carries_its_trace_and_one_without_a_trace_still_decodes() {
        let id = Uuid::nil();
        let old = serde_json::json!({"type": "verification_mail.v1", "verification_id": id});
        assert_eq!(
            serde_json::from_value::<MailJob>(old).unwrap(),
            MailJob::VerificationMailV1 {
                verification_id: id,
                traceparent: None
            }
        );
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let job = MailJob::VerificationMailV1 {
            verification_id: id,
            traceparent: Some(traceparent.to_owned()),
        };
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["traceparent"], traceparent);
        assert_eq!(serde_json::from_value::<MailJob>(json).unwrap(), job);
    }
}
