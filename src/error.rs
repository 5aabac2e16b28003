//! The one error taxonomy of tally, mapped once to a gRPC status, and the one table from a gRPC
//! code to an HTTP status ([`http_status`]) that the HTTP gateway answers with.
//!
//! Domain code returns [`Error`]; adapters convert with `Status::from`. Where a client must
//! branch on the cause, the status carries a `google.rpc.ErrorInfo` with a stable `reason` in
//! domain [`ERROR_DOMAIN`]. Internal causes are logged once, with their chain, and the client
//! sees an opaque message.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `domain` of every ErrorInfo tally emits.
pub const ERROR_DOMAIN: &str = "tally";

/// Every ErrorInfo reason tally emits, and the gRPC code each answers with: the one table a
/// client needs to branch on errors. Clients may match on the strings; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    InvalidArgument,
    NotFound,
    UsernameTaken,
    EmailTaken,
    Unauthenticated,
    PermissionDenied,
    CurrentPasswordMismatch,
    LoginRateLimited,
    LastAdmin,
    NotImplemented,
    TransferIdReused,
    InsufficientFunds,
    CurrencyMismatch,
    /// Another member of a linked chain failed, so this one moved nothing.
    LinkedTransferFailed,
    /// A batch's last item is linked: its chain never ends.
    LinkedChainOpen,
    TransactionConflict,
    AccountLimit,
    /// The caller holds as many webhooks as allowed.
    WebhookLimit,
    /// The account has as many balance monitors as allowed.
    MonitorLimit,
    BalanceLimit,
    /// An account of the transfer is closed.
    AccountClosed,
    /// Only an account at zero with nothing pending can be closed.
    AccountNotEmpty,
    /// Post or void of a transfer that is not a hold.
    TransferNotPending,
    /// The hold reached its timeout: it can be neither posted nor voided.
    PendingTransferExpired,
    /// The hold was posted before (with another amount, or now voided).
    PendingTransferAlreadyPosted,
    /// The hold was voided before.
    PendingTransferAlreadyVoided,
    /// A post of more than the hold reserved.
    PostExceedsPending,
    /// Only a succeeded transfer, deposit or withdrawal, or a posted hold, can be reversed.
    TransferNotReversible,
    /// The reversals of a transfer would sum to more than it moved.
    ReversalExceedsOriginal,
    VerificationCodeInvalid,
    VerificationRateLimited,
    EmailAlreadyVerified,
    /// No exchange rate is set between the two currencies.
    RateNotSet,
    /// The liquidity account of the target currency cannot pay the conversion.
    InsufficientLiquidity,
    /// The conversion's quote had expired.
    QuoteExpired,
    /// The conversion's quote was used by another conversion.
    QuoteUsed,
    /// The caller holds as many live streams as allowed.
    StreamLimit,
    /// A live stream's client read more slowly than its events came, and the stream was cut:
    /// resume from the `after_sequence` of the ErrorInfo metadata.
    SlowConsumer,
    /// A rate limit of the caller's address or user is spent: retry after the RetryInfo delay.
    RateLimited,
    /// The request is larger than the server accepts (gRPC's code for it).
    MessageTooLarge,
    /// The request did not arrive (or the call did not finish) within its deadline.
    DeadlineExceeded,
    /// The server shed the call to protect itself (no slot, no hashing turn): retry after the
    /// RetryInfo delay.
    Overloaded,
    Unavailable,
    Internal,
}

impl Reason {
    /// Every reason, for tests and documentation.
    pub const ALL: &[Reason] = &[
        Reason::InvalidArgument,
        Reason::NotFound,
        Reason::UsernameTaken,
        Reason::EmailTaken,
        Reason::Unauthenticated,
        Reason::PermissionDenied,
        Reason::CurrentPasswordMismatch,
        Reason::LoginRateLimited,
        Reason::LastAdmin,
        Reason::NotImplemented,
        Reason::TransferIdReused,
        Reason::InsufficientFunds,
        Reason::CurrencyMismatch,
        Reason::LinkedTransferFailed,
        Reason::LinkedChainOpen,
        Reason::TransactionConflict,
        Reason::AccountLimit,
        Reason::WebhookLimit,
        Reason::MonitorLimit,
        Reason::BalanceLimit,
        Reason::AccountClosed,
        Reason::AccountNotEmpty,
        Reason::TransferNotPending,
        Reason::PendingTransferExpired,
        Reason::PendingTransferAlreadyPosted,
        Reason::PendingTransferAlreadyVoided,
        Reason::PostExceedsPending,
        Reason::TransferNotReversible,
        Reason::ReversalExceedsOriginal,
        Reason::VerificationCodeInvalid,
        Reason::VerificationRateLimited,
        Reason::EmailAlreadyVerified,
        Reason::RateNotSet,
        Reason::InsufficientLiquidity,
        Reason::QuoteExpired,
        Reason::QuoteUsed,
        Reason::StreamLimit,
        Reason::SlowConsumer,
        Reason::RateLimited,
        Reason::MessageTooLarge,
        Reason::DeadlineExceeded,
        Reason::Overloaded,
        Reason::Unavailable,
        Reason::Internal,
    ];

    /// The ErrorInfo `reason` string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidArgument => "INVALID_ARGUMENT",
            Reason::NotFound => "NOT_FOUND",
            Reason::UsernameTaken => "USERNAME_TAKEN",
            Reason::EmailTaken => "EMAIL_TAKEN",
            Reason::Unauthenticated => "UNAUTHENTICATED",
            Reason::PermissionDenied => "PERMISSION_DENIED",
            Reason::CurrentPasswordMismatch => "CURRENT_PASSWORD_MISMATCH",
            Reason::LoginRateLimited => "LOGIN_RATE_LIMITED",
            Reason::LastAdmin => "LAST_ADMIN",
            Reason::NotImplemented => "NOT_IMPLEMENTED",
            Reason::TransferIdReused => "TRANSFER_ID_REUSED",
            Reason::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Reason::CurrencyMismatch => "CURRENCY_MISMATCH",
            Reason::LinkedTransferFailed => "LINKED_TRANSFER_FAILED",
            Reason::LinkedChainOpen => "LINKED_CHAIN_OPEN",
            Reason::TransactionConflict => "TRANSACTION_CONFLICT",
            Reason::AccountLimit => "ACCOUNT_LIMIT",
            Reason::WebhookLimit => "WEBHOOK_LIMIT",
            Reason::MonitorLimit => "MONITOR_LIMIT",
            Reason::BalanceLimit => "BALANCE_LIMIT",
            Reason::AccountClosed => "ACCOUNT_CLOSED",
            Reason::AccountNotEmpty => "ACCOUNT_NOT_EMPTY",
            Reason::TransferNotPending => "TRANSFER_NOT_PENDING",
            Reason::PendingTransferExpired => "PENDING_TRANSFER_EXPIRED",
            Reason::PendingTransferAlreadyPosted => "PENDING_TRANSFER_ALREADY_POSTED",
            Reason::PendingTransferAlreadyVoided => "PENDING_TRANSFER_ALREADY_VOIDED",
            Reason::PostExceedsPending => "POST_EXCEEDS_PENDING",
            Reason::TransferNotReversible => "TRANSFER_NOT_REVERSIBLE",
            Reason::ReversalExceedsOriginal => "REVERSAL_EXCEEDS_ORIGINAL",
            Reason::VerificationCodeInvalid => "VERIFICATION_CODE_INVALID",
            Reason::VerificationRateLimited => "VERIFICATION_RATE_LIMITED",
            Reason::EmailAlreadyVerified => "EMAIL_ALREADY_VERIFIED",
            Reason::RateNotSet => "RATE_NOT_SET",
            Reason::InsufficientLiquidity => "INSUFFICIENT_LIQUIDITY",
            Reason::QuoteExpired => "QUOTE_EXPIRED",
            Reason::QuoteUsed => "QUOTE_USED",
            Reason::StreamLimit => "STREAM_LIMIT",
            Reason::SlowConsumer => "SLOW_CONSUMER",
            Reason::RateLimited => "RATE_LIMITED",
            Reason::MessageTooLarge => "MESSAGE_TOO_LARGE",
            Reason::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Reason::Overloaded => "OVERLOADED",
            Reason::Unavailable => "UNAVAILABLE",
            Reason::Internal => "INTERNAL",
        }
    }

    /// The gRPC code a call answers with for this reason.
    pub const fn code(self) -> Code {
        match self {
            Reason::InvalidArgument | Reason::LinkedChainOpen => Code::InvalidArgument,
            Reason::NotFound => Code::NotFound,
            Reason::UsernameTaken | Reason::EmailTaken | Reason::TransferIdReused => {
                Code::AlreadyExists
            }
            Reason::Unauthenticated => Code::Unauthenticated,
            Reason::PermissionDenied | Reason::CurrentPasswordMismatch => Code::PermissionDenied,
            Reason::LoginRateLimited
            | Reason::VerificationRateLimited
            | Reason::RateLimited
            | Reason::StreamLimit
            | Reason::SlowConsumer
            | Reason::MessageTooLarge => Code::ResourceExhausted,
            Reason::LastAdmin
            | Reason::InsufficientFunds
            | Reason::CurrencyMismatch
            | Reason::LinkedTransferFailed
            | Reason::AccountLimit
            | Reason::WebhookLimit
            | Reason::MonitorLimit
            | Reason::BalanceLimit
            | Reason::AccountClosed
            | Reason::AccountNotEmpty
            | Reason::TransferNotPending
            | Reason::PendingTransferExpired
            | Reason::PendingTransferAlreadyPosted
            | Reason::PendingTransferAlreadyVoided
            | Reason::PostExceedsPending
            | Reason::TransferNotReversible
            | Reason::ReversalExceedsOriginal
            | Reason::VerificationCodeInvalid
            | Reason::EmailAlreadyVerified
            | Reason::RateNotSet
            | Reason::InsufficientLiquidity
            | Reason::QuoteExpired
            | Reason::QuoteUsed => Code::FailedPrecondition,
            Reason::NotImplemented => Code::Unimplemented,
            Reason::TransactionConflict => Code::Aborted,
            Reason::DeadlineExceeded => Code::DeadlineExceeded,
            Reason::Overloaded | Reason::Unavailable => Code::Unavailable,
            Reason::Internal => Code::Internal,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SQLSTATEs after which PostgreSQL has certainly rolled the transaction back and a retry of
/// the whole transaction is safe: serialization_failure and deadlock_detected.
const RETRYABLE_SQLSTATES: &[&str] = &["40001", "40P01"];

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed input; nothing was written. `field` is the request field's proto name;
    /// `reason` is [`Reason::InvalidArgument`] unless the client must tell this case apart.
    #[error("{field}: {message}")]
    InvalidArgument {
        reason: Reason,
        field: &'static str,
        message: String,
    },
    /// Missing, or not visible to the caller: the two answer identically so ids can't be probed.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The one message every credential defect shares.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Refused for a reason the client can branch on; the code is the reason's. ErrorInfo
    /// metadata may name what was recorded (for example a FAILED transfer's id).
    #[error("{message}")]
    Refused {
        reason: Reason,
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
    /// Shed or throttled: the same call may succeed after `retry_after` (sent as a
    /// `google.rpc.RetryInfo` detail, and as `Retry-After` over HTTP). Not logged as a failure.
    #[error("{message}")]
    RetryLater {
        reason: Reason,
        message: String,
        retry_after: Duration,
    },
    /// The database or another dependency is unreachable right now; the call may be retried.
    /// The connection may have gone while a transaction committed, so the client cannot know
    /// whether it applied: the message says to retry with the same idempotency key, whose replay
    /// answers what happened.
    #[error(
        "the database is unreachable right now; retry the call (with the same id, for a call that \
         takes one: a retry never applies it twice)"
    )]
    Unavailable(#[source] anyhow::Error),
    /// A bug or an unexpected dependency failure. The cause is logged, never returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            reason: Reason::InvalidArgument,
            field,
            message: message.into(),
        }
    }

    /// A refusal with no metadata.
    pub fn refused(reason: Reason, message: impl Into<String>) -> Self {
        Error::Refused {
            reason,
            message: message.into(),
            metadata: Vec::new(),
        }
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Error::Internal(cause.into())
    }

    /// The server is too busy for this call now: `UNAVAILABLE`, reason `OVERLOADED`.
    pub fn overloaded(message: impl Into<String>, retry_after: Duration) -> Self {
        Error::RetryLater {
            reason: Reason::Overloaded,
            message: message.into(),
            retry_after,
        }
    }

    /// A rate limit is spent: `RESOURCE_EXHAUSTED`, reason `RATE_LIMITED`.
    pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Self {
        Error::RetryLater {
            reason: Reason::RateLimited,
            message: message.into(),
            retry_after,
        }
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Error::refused(Reason::PermissionDenied, message)
    }

    /// The ErrorInfo reason.
    pub fn reason(&self) -> Reason {
        match self {
            Error::InvalidArgument { reason, .. }
            | Error::Refused { reason, .. }
            | Error::RetryLater { reason, .. } => *reason,
            Error::NotFound(_) => Reason::NotFound,
            Error::Unauthenticated(_) => Reason::Unauthenticated,
            Error::Unimplemented(_) => Reason::NotImplemented,
            Error::Conflict(_) | Error::Aborted(_) => Reason::TransactionConflict,
            Error::Unavailable(_) => Reason::Unavailable,
            Error::Internal(_) => Reason::Internal,
        }
    }

    /// The gRPC code this error maps to: its reason's.
    pub fn code(&self) -> Code {
        self.reason().code()
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
        if is_unavailable(&err) {
            return Error::Unavailable(err.into());
        }
        Error::Internal(err.into())
    }
}

/// A trailers-only gRPC response carrying `err` (`grpc-status` in the headers), in the
/// caller's gRPC flavour (its `content-type`, so gRPC-web clients read it too). The layers
/// in front of the handlers answer this way.
pub fn grpc_rejection(
    err: Error,
    content_type: Option<http::HeaderValue>,
) -> http::Response<tonic::body::Body> {
    let mut response = Status::from(err).into_http::<tonic::body::Body>();
    if let Some(ct) = content_type.filter(|ct| ct.as_bytes().starts_with(b"application/grpc")) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, ct);
    }
    response
}

/// Whether PostgreSQL certainly aborted the transaction that produced `err`.
/// SQLSTATEs of a database that is going away, starting, or out of connections (class 08:
/// connection exceptions; 57P01-57P03: shutdown, crash, not yet accepting; 53300: too many
/// connections). Not a bug: the call may succeed once the database is back.
fn is_unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// Whether `err` means the database cannot be reached or talked to now (the connection broke,
/// the pool has none to give, the server is restarting) rather than a bug.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_unavailable_sqlstate(&code)),
        _ => false,
    }
}

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
        let mut details =
            ErrorDetails::with_error_info(err.reason().as_str(), ERROR_DOMAIN, metadata);
        if let Error::InvalidArgument { field, message, .. } = &err {
            details.add_bad_request_violation(*field, message.clone());
        }
        if let Error::RetryLater { retry_after, .. } = &err {
            details.set_retry_info(Some(*retry_after));
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
            Reason::InvalidArgument.as_str()
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
    fn every_reason_has_a_distinct_name_and_an_error_code() {
        let names: std::collections::HashSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len(), "reason names are distinct");
        for reason in Reason::ALL {
            assert_ne!(reason.code(), Code::Ok, "{reason}");
            assert_eq!(
                Status::from(Error::refused(*reason, "x")).code(),
                reason.code(),
                "{reason}"
            );
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = Status::from(Error::internal(anyhow::anyhow!("password=hunter2 leaked")));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }

    /// A database that is gone or going is not a bug: `UNAVAILABLE`, with the advice to retry
    /// with the same id (the commit may have happened).
    #[test]
    fn a_lost_database_is_unavailable_with_the_advice_to_retry_with_the_same_id() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        for err in [
            sqlx::Error::Io(io()),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Protocol("unexpected message".into()),
            sqlx::Error::WorkerCrashed,
        ] {
            let status = Status::from(Error::from(err));
            assert_eq!(status.code(), Code::Unavailable);
            assert!(status.message().contains("retry") && status.message().contains("same id"));
        }
        for code in ["08006", "08001", "57P01", "57P02", "57P03", "53300"] {
            assert!(is_unavailable_sqlstate(code), "{code}");
        }
        for code in ["40001", "23505", "42P01", "XX000"] {
            assert!(!is_unavailable_sqlstate(code), "{code}");
        }
        let status = Status::from(Error::from(sqlx::Error::RowNotFound));
        assert_eq!(status.code(), Code::Internal);
    }
}
