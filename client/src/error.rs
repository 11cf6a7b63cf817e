//! What can go wrong with a call, for the caller to log and for [`crate::Decision`] to refuse on.
//! No variant carries the API key or a recipient: errors are safe to log as they are.

use std::time::Duration;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-OK status (after any retries).
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(tonic::Status),
    /// No answer within the call's deadline (retries included).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made.
    #[error("{0}")]
    Connect(String),
    /// The configuration is wrong (a file, the URL, the key's characters).
    #[error("{0}")]
    Config(String),
    /// An OK answer that breaks the contract (a batch answer of the wrong length).
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// The gRPC code: the status's, `DEADLINE_EXCEEDED` for a timeout, `UNAVAILABLE` for a failed
    /// connection, `INVALID_ARGUMENT` for a bad config, `INTERNAL` for an answer off contract.
    pub fn code(&self) -> Code {
        match self {
            ClientError::Status(status) => status.code(),
            ClientError::Timeout(_) => Code::DeadlineExceeded,
            ClientError::Connect(_) => Code::Unavailable,
            ClientError::Config(_) => Code::InvalidArgument,
            ClientError::Unexpected(_) => Code::Internal,
        }
    }

    /// The server's `google.rpc` details of a refused call (empty for the other kinds).
    pub fn details(&self) -> ErrorDetails {
        match self {
            ClientError::Status(status) => status.get_error_details(),
            _ => ErrorDetails::new(),
        }
    }

    /// The server's stable reason (`ErrorInfo.reason`, e.g. `RATE_LIMITED`), when it gave one.
    pub fn reason(&self) -> Option<String> {
        self.details().error_info().map(|info| info.reason.clone())
    }

    /// How long the server asked the caller to wait before a retry (`RetryInfo`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.details().retry_info().and_then(|r| r.retry_delay)
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Status(status)
    }
}

/// `UNAVAILABLE` rather than tonic's `Unavailable`: the names the docs and grpcurl use.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
