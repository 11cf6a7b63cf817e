//! The one mapping from service errors to gRPC status codes (the README's status-code contract).
//! Internal errors tell the client nothing and are logged once, with their cause chain, here.

use crate::service::ServiceError;
use tonic::Status;

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        match e {
            ServiceError::Invalid(invalid) => Status::invalid_argument(invalid.to_string()),
            ServiceError::NotFound(message) => Status::not_found(message),
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
