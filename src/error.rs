//! The one error taxonomy of tally, mapped once to a gRPC status, and the one table from a gRPC
//! code to an HTTP status ([`http_status`]) that the HTTP gateway answers with.
//!
//! Domain code returns [`Error`]; adapters convert with `Status::from`. Where a client must
//! branch on the cause, the status carries a `google.rpc.ErrorInfo` with a stable `reason` in
//! domain [`ERROR_DOMAIN`]. Internal causes are logged once, with their chain, and the client
//! sees an opaque message.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `domain` of every ErrorInfo tally emits.
pub const ERROR_DOMAIN: &str = "tally";

/// Stable ErrorInfo reasons. Clients may match on these strings; never rename one.
pub mod reason {
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const USERNAME_TAKEN: &str = "USERNAME_TAKEN";
    pub const EMAIL_TAKEN: &str = "EMAIL_TAKEN";
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
    pub const CURRENT_PASSWORD_MISMATCH: &str = "CURRENT_PASSWORD_MISMATCH";
    pub const LOGIN_RATE_LIMITED: &str = "LOGIN_RATE_LIMITED";
    pub const LAST_ADMIN: &str = "LAST_ADMIN";
    pub const NOT_IMPLEMENTED: &str = "NOT_IMPLEMENTED";
    pub const TRANSFER_ID_REUSED: &str = "TRANSFER_ID_REUSED";
    pub const INSUFFICIENT_FUNDS: &str = "INSUFFICIENT_FUNDS";
    pub const CURRENCY_MISMATCH: &str = "CURRENCY_MISMATCH";
    pub const LINKED_TRANSFER_FAILED: &str = "LINKED_TRANSFER_FAILED";
    pub const LINKED_CHAIN_OPEN: &str = "LINKED_CHAIN_OPEN";
    pub const TRANSACTION_CONFLICT: &str = "TRANSACTION_CONFLICT";
    pub const ACCOUNT_LIMIT: &str = "ACCOUNT_LIMIT";
    pub const BALANCE_LIMIT: &str = "BALANCE_LIMIT";
    pub const VERIFICATION_CODE_INVALID: &str = "VERIFICATION_CODE_INVALID";
    pub const VERIFICATION_RATE_LIMITED: &str = "VERIFICATION_RATE_LIMITED";
    pub const EMAIL_ALREADY_VERIFIED: &str = "EMAIL_ALREADY_VERIFIED";
}

/// SQLSTATEs after which PostgreSQL has certainly rolled the transaction back and a retry of
/// the whole transaction is safe: serialization_failure and deadlock_detected.
const RETRYABLE_SQLSTATES: &[&str] = &["40001", "40P01"];

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed input; nothing was written. `field` is the request field's proto name;
    /// `reason` is [`reason::INVALID_ARGUMENT`] unless the client must tell this case apart.
    #[error("{field}: {message}")]
    InvalidArgument {
        reason: &'static str,
        field: &'static str,
        message: String,
    },
    /// Missing, or not visible to the caller: the two answer identically so ids can't be probed.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    AlreadyExists {
        reason: &'static str,
        message: String,
    },
    /// The one message every credential defect shares.
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{message}")]
    PermissionDenied {
        reason: &'static str,
        message: String,
    },
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },
    #[error("{message}")]
    ResourceExhausted {
        reason: &'static str,
        message: String,
    },
    /// A business rule refused the call after recording it; ErrorInfo metadata carries the
    /// recorded resource (for example the FAILED transfer's id).
    #[error("{message}")]
    Refused {
        reason: &'static str,
        message: String,
        metadata: Vec<(&'static str, String)>,
    },
    /// PostgreSQL aborted the transaction (serialization failure, deadlock, or a concurrent
    /// insert of the same key): certainly rolled back, so the whole transaction may be retried.
    #[error("transaction conflict")]
    Conflict(#[source] sqlx::Error),
    /// Retries were exhausted; the client may try again with the same idempotency key.
    #[error("{0}")]
    Aborted(String),
    #[error("{0} is not implemented")]
    Unimplemented(&'static str),
    /// The database or another dependency is unreachable right now; the call may be retried.
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A bug or an unexpected dependency failure. The cause is logged, never returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            reason: reason::INVALID_ARGUMENT,
            field,
            message: message.into(),
        }
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Error::Internal(cause.into())
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Error::PermissionDenied {
            reason: reason::PERMISSION_DENIED,
            message: message.into(),
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied { .. } => Code::PermissionDenied,
            Error::FailedPrecondition { .. } => Code::FailedPrecondition,
            Error::ResourceExhausted { .. } => Code::ResourceExhausted,
            Error::Refused { .. } => Code::FailedPrecondition,
            Error::Conflict(_) | Error::Aborted(_) => Code::Aborted,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Error::NotFound(_) => reason::NOT_FOUND,
            Error::Unauthenticated(_) => reason::UNAUTHENTICATED,
            Error::Unimplemented(_) => reason::NOT_IMPLEMENTED,
            Error::InvalidArgument { reason, .. }
            | Error::AlreadyExists { reason, .. }
            | Error::PermissionDenied { reason, .. }
            | Error::FailedPrecondition { reason, .. }
            | Error::ResourceExhausted { reason, .. }
            | Error::Refused { reason, .. } => reason,
            Error::Conflict(_) | Error::Aborted(_) => reason::TRANSACTION_CONFLICT,
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::Internal(_) => "INTERNAL",
        }
    }
}

/// The HTTP status of a gRPC code, by the google.rpc.Code table (google/rpc/code.proto); the
/// HTTP JSON gateway answers with it.
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as S;
    match code {
        Code::Ok => S::OK,
        // 499 "client closed request" has no constant in `http`; it is a valid status.
        Code::Cancelled => S::from_u16(499).unwrap_or(S::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => S::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => S::BAD_REQUEST,
        Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        Code::NotFound => S::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => S::CONFLICT,
        Code::PermissionDenied => S::FORBIDDEN,
        Code::Unauthenticated => S::UNAUTHORIZED,
        Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
        Code::Unimplemented => S::NOT_IMPLEMENTED,
        Code::Unavailable => S::SERVICE_UNAVAILABLE,
    }
}

impl From<sqlx::Error> for Error {
    /// Unclassified database errors. The store layer maps the constraint violations it expects
    /// before this catch-all; a pool timeout or a lost connection is worth a retry.
    fn from(err: sqlx::Error) -> Self {
        if is_retryable(&err) {
            return Error::Conflict(err);
        }
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Error::Unavailable(err.into())
            }
            other => Error::Internal(other.into()),
        }
    }
}

/// Whether PostgreSQL certainly aborted the transaction that produced `err`.
pub fn is_retryable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| RETRYABLE_SQLSTATES.contains(&code.as_ref())),
        _ => false,
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = err.code();
        match &err {
            Error::Internal(cause) | Error::Unavailable(cause) => {
                // Logged once here, with the whole chain; the client gets no detail.
                tracing::error!(error = format!("{cause:#}"), code = ?code, "call failed");
                return Status::new(code, err.to_string());
            }
            _ => {}
        }
        let metadata: HashMap<String, String> = match &err {
            Error::Refused { metadata, .. } => metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            _ => HashMap::new(),
        };
        let mut details = ErrorDetails::with_error_info(err.reason(), ERROR_DOMAIN, metadata);
        if let Error::InvalidArgument { field, message, .. } = &err {
            details.add_bad_request_violation(*field, message.clone());
        }
        Status::with_error_details(code, err.to_string(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field_in_message_and_details() {
        let status = Status::from(Error::invalid("username", "must be 3 to 32 characters"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("username:"));
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("bad request").field_violations;
        assert_eq!(violations[0].field, "username");
        assert_eq!(
            details.error_info().unwrap().reason,
            reason::INVALID_ARGUMENT
        );
    }

    #[test]
    fn grpc_codes_map_to_the_google_rpc_http_statuses() {
        let table = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, status) in table {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = Status::from(Error::internal(anyhow::anyhow!("password=hunter2 leaked")));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }
}
