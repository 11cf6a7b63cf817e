//! The `google.rpc` details every status suppressd raises carries (`grpc-status-details-bin`,
//! encoded by `tonic-types`): the stable reasons and how a status is built with them. Part of the
//! wire contract, so it lives with the generated types, below every layer that raises a status
//! (`api::status` maps service errors onto it; `codec` reports undecodable requests with it).

use std::{collections::HashMap, time::Duration};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every error suppressd itself raises.
pub const DOMAIN: &str = "suppressd.dev";

/// The stable `ErrorInfo.reason` codes (UPPER_SNAKE_CASE, as AIP-193 asks). Clients branch on these,
/// never on messages.
pub mod reason {
    /// A field of the request is wrong (`BadRequest` names it).
    pub const INVALID_FIELD: &str = "INVALID_FIELD";
    /// The request body is not valid protobuf for the method.
    pub const MALFORMED_REQUEST: &str = "MALFORMED_REQUEST";
    /// No usable credentials: a missing or unknown key, an unmapped certificate, a bad token.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// A valid caller without the role or the tenant the call needs.
    pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
    /// The receipt, batch, control or opt-out the call names does not exist (for this caller).
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// A concurrent change stopped the operation; repeating the same call will not help.
    pub const CONCURRENT_CHANGE: &str = "CONCURRENT_CHANGE";
    /// The state the call acts on does not allow it (a control already ended, not yet durable).
    pub const FAILED_PRECONDITION: &str = "FAILED_PRECONDITION";
    /// The call needs configuration this server lacks (a token key to issue tokens).
    pub const NOT_CONFIGURED: &str = "NOT_CONFIGURED";
    /// The caller's rate limit is reached.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// The process's budget of calls of this kind in flight is spent; the call was shed.
    pub const OVERLOADED: &str = "OVERLOADED";
    /// The service cannot answer correctly now (Redis, the store or the controls); do not send.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// A fault of ours; the server logged the cause.
    pub const INTERNAL: &str = "INTERNAL";
    /// The method does not exist on this server (an older server, or a typo in the path).
    pub const UNIMPLEMENTED: &str = "UNIMPLEMENTED";
    /// The request is larger than the server accepts.
    pub const MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";
    /// The call's deadline (`grpc-timeout`) ran out on the server before it answered.
    pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
}

/// The reason for a status that was raised without details: by the gRPC library (an unknown
/// method, an oversized request, the caller's own deadline) rather than by suppressd. Chosen by
/// the code alone, the only thing such a status says.
pub fn reason_of_code(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => reason::MALFORMED_REQUEST,
        Code::Unauthenticated => reason::UNAUTHENTICATED,
        Code::PermissionDenied => reason::PERMISSION_DENIED,
        Code::NotFound => reason::NOT_FOUND,
        Code::Aborted => reason::CONCURRENT_CHANGE,
        Code::FailedPrecondition => reason::FAILED_PRECONDITION,
        Code::ResourceExhausted => reason::OVERLOADED,
        Code::Unavailable => reason::UNAVAILABLE,
        Code::Unimplemented => reason::UNIMPLEMENTED,
        Code::OutOfRange => reason::MESSAGE_TOO_LARGE,
        Code::Cancelled | Code::DeadlineExceeded => reason::DEADLINE_EXCEEDED,
        _ => reason::INTERNAL,
    }
}

/// How long a caller should wait before retrying, by reason: a rate limit refills each second,
/// shed load clears within milliseconds, an outage of Redis or the store takes a moment.
fn retry_after(reason: &str) -> Option<Duration> {
    match reason {
        reason::RATE_LIMITED => Some(Duration::from_secs(1)),
        reason::OVERLOADED => Some(Duration::from_millis(100)),
        reason::UNAVAILABLE => Some(Duration::from_millis(500)),
        _ => None,
    }
}

/// A status with the message as it always was, plus `ErrorInfo` (and `RetryInfo` where retrying is
/// safe); `field` adds a `BadRequest` violation for that path.
pub fn rich(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    field: Option<(&str, &str)>,
) -> Status {
    let mut details = ErrorDetails::new();
    let mut metadata = HashMap::new();
    if let Some((path, description)) = field {
        details.add_bad_request_violation(path, description);
        metadata.insert("field".to_owned(), path.to_owned());
    }
    details.set_error_info(reason, DOMAIN, metadata);
    if let Some(delay) = retry_after(reason) {
        details.set_retry_info(Some(delay));
    }
    Status::with_error_details(code, message, details)
}
