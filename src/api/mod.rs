//! The gRPC surface: `suppress.v1.Suppression`, `grpc.health.v1.Health` and server reflection (v1 and
//! v1alpha, so grpcurl and ghz work without the `.proto`). Cross-cutting layers are wired here, in
//! one place.
//!
//! Around every service, outermost: `observe`'s RPC span and metrics layer. Around `Suppression`
//! (outermost first): `auth` (who is calling, may they call this RPC, their
//! rate limit), then `limits` (the in-flight budgets, so refused callers never take a slot), then
//! the generated server with its message-size cap. Health and reflection stay outside both: probes
//! must answer under overload and without a key.

pub(crate) mod auth;
mod controls;
mod convert;
mod destinations;
mod details;
mod imports;
pub(crate) mod limits;
mod observe;
mod rights;
pub(crate) mod status;
mod suppression;
mod watch;

pub(crate) use observe::RpcLayer;
pub(crate) use suppression::SuppressionApi;

use crate::{auth::KeyStore, proto, service::Suppressions};
use tonic::transport::ServerTlsConfig;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

/// The server with every layer applied, ready to serve.
pub(crate) type Router =
    tonic::transport::server::Router<Stack<details::DetailsLayer, Stack<RpcLayer, Identity>>>;

/// The largest request accepted: a full batch of 1,000 checks with long postal addresses fits.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// HTTP/2 flow-control windows. A stream's window bounds what h2 buffers for a handler that is not
/// reading (an import committing a chunk); h2 counts each small buffered DATA frame against a
/// connection budget of half the connection window and sends GOAWAY (`ENHANCE_YOUR_CALM`) when it
/// runs out. A client sending one message per frame (grpcio does) fills a stream window with frames
/// of a few dozen bytes, which cost up to 50 times their size: the connection window is large
/// enough that a whole stream window of frames of 5 bytes or more (the smallest gRPC message) fits
/// the budget, and so do several concurrent imports of ordinary rows.
pub(crate) const STREAM_WINDOW: u32 = 64 * 1024;
pub(crate) const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

/// The accepted connections of a listener, with `TCP_NODELAY` on each. Serving from a listener
/// skips tonic's own socket settings, and without it Nagle's algorithm holds a small response back
/// until the peer's delayed ACK (~40 ms) whenever an earlier one is still unacknowledged.
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

pub(crate) type SuppressionServer = proto::suppression_server::SuppressionServer<SuppressionApi>;

/// The status header (or trailer) of every response, which `observe` and `details` each read once
/// or twice per call. Looked up by a name built once, not by `&str`: a `&str` key is parsed and
/// validated as a header name on every look-up, which was about 300 instructions each (callgrind,
/// bench/README.md "Where a check's CPU goes").
pub(crate) static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// How the gRPC surface guards itself.
pub(crate) struct ApiSettings {
    /// Principals, API key hashes and token keys (reloadable).
    pub(crate) keys: KeyStore,
    /// `false` only with `--dev-no-auth`.
    pub(crate) authenticate: bool,
    /// Requests per second per principal (0 = no limit).
    pub(crate) rate_limit_per_principal: u32,
    /// In-flight budgets: checks, writes (opt-outs and the rest), and audit reads.
    pub(crate) max_concurrent_checks: usize,
    pub(crate) max_concurrent_writes: usize,
    pub(crate) max_concurrent_audit_reads: usize,
    /// Server certificate and, for mTLS, the client CA.
    pub(crate) tls: Option<ServerTlsConfig>,
}

/// Builds the router with every service. Health starts NOT_SERVING; the caller turns it on once the
/// process can answer.
pub(crate) fn router(
    service: Suppressions,
    settings: ApiSettings,
) -> anyhow::Result<(Router, HealthReporter)> {
    let ApiSettings {
        keys,
        authenticate,
        rate_limit_per_principal,
        max_concurrent_checks,
        max_concurrent_writes,
        max_concurrent_audit_reads,
        tls,
    } = settings;
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let authenticator =
        auth::Authenticator::new(authenticate.then(|| keys.clone()), rate_limit_per_principal);
    // The size cap is set on the generated server before it is wrapped (the wrappers hide it).
    let suppression =
        SuppressionServer::new(SuppressionApi::new(service, keys, authenticator.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let suppression = tower::ServiceBuilder::new()
        .layer(auth::AuthLayer(authenticator))
        .layer(limits::ShedLayer(limits::Budgets::new(
            max_concurrent_checks,
            max_concurrent_writes,
            max_concurrent_audit_reads,
        )))
        .service(suppression);
    let mut server = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    let router = server
        // Outermost, so every call (even one no handler sees, or one auth refuses) gets its server
        // span and its metrics, and the span is the parent of all the handler does. See `observe`.
        .layer(RpcLayer)
        // Inside it: statuses the gRPC library raises (unknown method, oversized request, the
        // caller's deadline) get the details every status of ours carries. See `details`.
        .layer(details::DetailsLayer)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(suppression);
    Ok((router, reporter))
}
