//! The gRPC surface: `suppress.v1.Suppression`, `grpc.health.v1.Health` and server reflection (v1 and
//! v1alpha, so grpcurl and ghz work without the `.proto`). Cross-cutting layers are wired here, in
//! one place.

mod convert;
mod observe;
mod status;
mod suppression;

pub use convert::MAX_BATCH;
pub use observe::RpcLayer;
pub use suppression::SuppressionApi;

use crate::{proto, service::Suppressions};
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

/// The server with every layer applied, ready to serve.
pub type Router = tonic::transport::server::Router<Stack<RpcLayer, Identity>>;

/// The largest request accepted: a full batch of 1,000 checks with long postal addresses fits.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

pub type SuppressionServer = proto::suppression_server::SuppressionServer<SuppressionApi>;

/// Builds the router with every service. Health starts NOT_SERVING; the caller turns it on once the
/// process can answer.
pub fn router(service: Suppressions) -> anyhow::Result<(Router, HealthReporter)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let suppression = SuppressionServer::new(SuppressionApi::new(service))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let router = tonic::transport::Server::builder()
        // Outermost, so every call (even one no handler sees) gets its server span and its metrics,
        // and the span is the parent of all the handler does. See `observe`.
        .layer(RpcLayer)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(suppression);
    Ok((router, reporter))
}
