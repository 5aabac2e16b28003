//! Thin tonic adapters: take the principal, turn the request into a domain command, call the
//! domain, map the result. No business rule lives here.

use std::sync::Arc;

use time::OffsetDateTime;
use tonic::{Request, Status};

use crate::{
    auth::Principal,
    error::Error,
    identity::{ClientInfo, Identity},
    ledger::Ledger,
};

pub mod accounts;
pub mod audit;
pub mod events;
pub mod exchange;
pub mod roles;
pub mod sessions;
pub mod transfers;
pub mod users;
pub mod webhooks;

/// What every adapter holds.
#[derive(Clone)]
pub struct ApiState {
    pub identity: Arc<Identity>,
    pub ledger: Arc<Ledger>,
    pub exchange: Arc<crate::exchange::Exchange>,
    /// The change feed's live watches.
    pub feed: Arc<crate::feed::Feed>,
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// The largest message the server sends (`TALLY_MAX_MESSAGE_BYTES`): batch calls whose
    /// answers could exceed it are refused before they write.
    pub message_bytes_max: usize,
    /// For the audit trail's reads.
    pub pool: sqlx::PgPool,
}

/// The principal the auth layer attached. Its absence on a non-public method is a wiring bug,
/// answered as `UNAUTHENTICATED` rather than a panic.
pub(crate) fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| {
            Status::from(Error::Unauthenticated(
                crate::auth::authenticator::UNAUTHENTICATED_MESSAGE,
            ))
        })
}

pub(crate) fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        // Always within 0..1e9, so the cast cannot truncate.
        nanos: t.nanosecond() as i32,
    }
}

/// A request's timestamp field, if set; `INVALID_ARGUMENT` when out of range.
pub(crate) fn from_timestamp(
    field: &'static str,
    t: &Option<prost_types::Timestamp>,
) -> Result<Option<OffsetDateTime>, Error> {
    t.as_ref()
        .map(|t| {
            OffsetDateTime::from_unix_timestamp(t.seconds)
                .ok()
                .and_then(|at| {
                    u32::try_from(t.nanos)
                        .ok()
                        .and_then(|n| at.replace_nanosecond(n).ok())
                })
                .ok_or_else(|| Error::invalid(field, "is not a valid timestamp"))
        })
        .transpose()
}

/// A request's duration field, if set; `INVALID_ARGUMENT` when negative or malformed.
pub(crate) fn from_duration(
    field: &'static str,
    d: &Option<prost_types::Duration>,
) -> Result<Option<std::time::Duration>, Error> {
    d.as_ref()
        .map(|d| {
            std::time::Duration::try_from(*d)
                .map_err(|_| Error::invalid(field, "must be a non-negative duration"))
        })
        .transpose()
}

pub(crate) fn duration(d: std::time::Duration) -> prost_types::Duration {
    // Durations here are at most HOLD_TIMEOUT_MAX, far inside prost's range.
    prost_types::Duration::try_from(d).unwrap_or_default()
}

/// The caller's user agent and address, as recorded on sessions.
pub(crate) fn client_info<T>(request: &Request<T>) -> ClientInfo {
    ClientInfo {
        user_agent: request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        // Resolved by the rate limit layer (through trusted proxies); else the peer.
        client_address: request
            .extensions()
            .get::<crate::limits::ClientAddress>()
            .map(|a| a.0)
            .or_else(|| request.remote_addr().map(|a| a.ip()))
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
    }
}
