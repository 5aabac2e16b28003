//! The one error taxonomy of tally, mapped once to a gRPC status (the HTTP gateway maps the
//! gRPC code to an HTTP status).
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
    pub const VERIFICATION_CODE_INVALID: &str = "VERIFICATION_CODE_INVALID";
    pub const VERIFICATION_RATE_LIMITED: &str = "VERIFICATION_RATE_LIMITED";
    pub const EMAIL_ALREADY_VERIFIED: &str = "EMAIL_ALREADY_VERIFIED";
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed input; nothing was written. `field` is the request field's proto name.
    #[error("{field}: {message}")]
    InvalidArgument {
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
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => reason::INVALID_ARGUMENT,
            Error::NotFound(_) => reason::NOT_FOUND,
            Error::Unauthenticated(_) => reason::UNAUTHENTICATED,
            Error::Unimplemented(_) => reason::NOT_IMPLEMENTED,
            Error::AlreadyExists { reason, .. }
            | Error::PermissionDenied { reason, .. }
            | Error::FailedPrecondition { reason, .. }
            | Error::ResourceExhausted { reason, .. } => reason,
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::Internal(_) => "INTERNAL",
        }
    }
}

impl From<sqlx::Error> for Error {
    /// Unclassified database errors. The store layer maps the constraint violations it expects
    /// before this catch-all; a pool timeout or a lost connection is worth a retry.
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Error::Unavailable(err.into())
            }
            other => Error::Internal(other.into()),
        }
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
        let mut details = ErrorDetails::with_error_info(err.reason(), ERROR_DOMAIN, HashMap::new());
        if let Error::InvalidArgument { field, message } = &err {
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
    fn internal_errors_hide_their_cause() {
        let status = Status::from(Error::internal(anyhow::anyhow!("password=hunter2 leaked")));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }
}
