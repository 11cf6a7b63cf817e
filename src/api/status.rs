//! The one mapping from service errors to gRPC status codes (the status-code contract of README.md and docs/api.md).
//! Internal errors tell the client nothing and are logged once, with their cause chain, here.
//!
//! Every status built here also carries `google.rpc` details (`grpc-status-details-bin`, encoded by
//! `tonic-types`), so that a program can act on a failure without parsing the human message, which
//! stays as it was: an [`ErrorInfo`](tonic_types::ErrorInfo) with a stable [`reason`] code in the
//! [`DOMAIN`](crate::proto::details::DOMAIN), a `BadRequest` field violation for `INVALID_ARGUMENT` (the field path the message
//! starts with), and a `RetryInfo` for the codes a caller may retry (`RESOURCE_EXHAUSTED`,
//! `UNAVAILABLE`). The table of reasons is in docs/api.md; a reason, once published, never changes
//! meaning.

use crate::service::ServiceError;
use tonic::{Code, Status};

pub use crate::proto::details::reason;
use crate::proto::details::rich;

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
    use crate::proto::details::DOMAIN;
    use tonic_types::StatusExt;

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
