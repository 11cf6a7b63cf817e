//! The one mapping from service errors to gRPC status codes (the status-code contract of README.md and docs/api.md).
//! Internal errors tell the client nothing and are logged once, with their cause chain, here.
//!
//! Every status built here also carries `google.rpc` details (`grpc-status-details-bin`, encoded by
//! `tonic-types`), so that a program can act on a failure without parsing the human message, which
//! stays as it was: an [`ErrorInfo`](tonic_types::ErrorInfo) with a stable [`reason`] code in the
//! [`DOMAIN`], a `BadRequest` field violation for `INVALID_ARGUMENT` (the field path the message
//! starts with), and a `RetryInfo` for the codes a caller may retry (`RESOURCE_EXHAUSTED`,
//! `UNAVAILABLE`). The table of reasons is in docs/api.md; a reason, once published, never changes
//! meaning.

use crate::service::ServiceError;
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
pub(crate) fn rich(
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

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        match e {
            ServiceError::Invalid(invalid) => rich(
                Code::InvalidArgument,
                invalid.to_string(),
                reason::INVALID_FIELD,
                Some((&invalid.field, &invalid.message)),
            ),
            ServiceError::NotFound(message) => {
                rich(Code::NotFound, message, reason::NOT_FOUND, None)
            }
            ServiceError::Aborted(message) => {
                rich(Code::Aborted, message, reason::CONCURRENT_CHANGE, None)
            }
            ServiceError::Precondition(message) => rich(
                Code::FailedPrecondition,
                message,
                reason::FAILED_PRECONDITION,
                None,
            ),
            ServiceError::Forbidden(message) => rich(
                Code::PermissionDenied,
                message,
                reason::PERMISSION_DENIED,
                None,
            ),
            ServiceError::Unavailable { message, cause } => {
                match cause {
                    Some(cause) => tracing::warn!(error = format!("{cause:#}"), "{message}"),
                    None => tracing::warn!("{message}"),
                }
                rich(Code::Unavailable, message, reason::UNAVAILABLE, None)
            }
            ServiceError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                rich(Code::Internal, "internal error", reason::INTERNAL, None)
            }
        }
    }
}

/// Why the API layer refused a call before (or instead of) a use case: credentials, roles, tenants,
/// tokens and limits. The message says what to fix and never echoes a key or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Missing or invalid API key, unknown certificate, invalid or expired opt-out token.
    Unauthenticated(String),
    /// A valid caller without the role or the tenant the call needs.
    PermissionDenied(String),
    /// The principal's rate limit.
    RateLimited(String),
    /// The process's budget of in-flight calls of this kind ("checks" or "writes") is spent.
    Overloaded(&'static str),
    /// The call needs configuration this server lacks (no token key issues tokens).
    NotConfigured(String),
}

impl Refusal {
    pub(crate) fn unauthenticated(message: impl Into<String>) -> Self {
        Refusal::Unauthenticated(message.into())
    }
}

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Status {
        match r {
            Refusal::Unauthenticated(message) => rich(
                Code::Unauthenticated,
                message,
                reason::UNAUTHENTICATED,
                None,
            ),
            Refusal::PermissionDenied(message) => rich(
                Code::PermissionDenied,
                message,
                reason::PERMISSION_DENIED,
                None,
            ),
            Refusal::RateLimited(who) => rich(
                Code::ResourceExhausted,
                format!("rate limit of {who} reached; retry later"),
                reason::RATE_LIMITED,
                None,
            ),
            Refusal::Overloaded(what) => rich(
                Code::ResourceExhausted,
                format!("overloaded: too many {what} in flight; retry with backoff"),
                reason::OVERLOADED,
                None,
            ),
            Refusal::NotConfigured(message) => rich(
                Code::FailedPrecondition,
                message,
                reason::NOT_CONFIGURED,
                None,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Invalid;

    #[test]
    fn an_invalid_field_names_its_path_in_bad_request_and_error_info() {
        let status = Status::from(ServiceError::from(Invalid::new(
            "checks[3].recipient.phone",
            "not E.164",
        )));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "checks[3].recipient.phone: not E.164");
        let details = status.get_error_details();
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "checks[3].recipient.phone");
        assert_eq!(violations[0].description, "not E.164");
        let info = details.error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            (reason::INVALID_FIELD, DOMAIN)
        );
        assert!(
            details.retry_info().is_none(),
            "fix the request, do not retry"
        );
    }

    #[test]
    fn retryable_codes_say_when_to_retry() {
        for (status, reason) in [
            (
                Status::from(Refusal::RateLimited("p".into())),
                reason::RATE_LIMITED,
            ),
            (
                Status::from(Refusal::Overloaded("checks")),
                reason::OVERLOADED,
            ),
            (
                Status::from(ServiceError::Unavailable {
                    message: "Redis is unavailable".into(),
                    cause: None,
                }),
                reason::UNAVAILABLE,
            ),
        ] {
            let details = status.get_error_details();
            assert_eq!(details.error_info().unwrap().reason, reason);
            assert!(
                details.retry_info().unwrap().retry_delay.is_some(),
                "{reason}"
            );
        }
    }
}
