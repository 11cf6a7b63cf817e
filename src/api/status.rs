//! The one mapping from service errors to gRPC status codes (the status-code contract of README.md and docs/api.md).
//! Internal errors tell the client nothing and are logged once, with their cause chain, here.

use crate::service::ServiceError;
use tonic::Status;

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        match e {
            ServiceError::Invalid(invalid) => Status::invalid_argument(invalid.to_string()),
            ServiceError::NotFound(message) => Status::not_found(message),
            ServiceError::Aborted(message) => Status::aborted(message),
            ServiceError::Precondition(message) => Status::failed_precondition(message),
            ServiceError::Forbidden(message) => Status::permission_denied(message),
            ServiceError::Unavailable { message, cause } => {
                match cause {
                    Some(cause) => tracing::warn!(error = format!("{cause:#}"), "{message}"),
                    None => tracing::warn!("{message}"),
                }
                Status::unavailable(message)
            }
            ServiceError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                Status::internal("internal error")
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
            Refusal::Unauthenticated(message) => Status::unauthenticated(message),
            Refusal::PermissionDenied(message) => Status::permission_denied(message),
            Refusal::RateLimited(who) => {
                Status::resource_exhausted(format!("rate limit of {who} reached; retry later"))
            }
            Refusal::Overloaded(what) => Status::resource_exhausted(format!(
                "overloaded: too many {what} in flight; retry with backoff"
            )),
            Refusal::NotConfigured(message) => Status::failed_precondition(message),
        }
    }
}
