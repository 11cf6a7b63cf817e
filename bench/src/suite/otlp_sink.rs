//! A throwaway OTLP/gRPC trace receiver for the tracing rows: it accepts `TraceService/Export`,
//! counts the spans it is sent and drops them, so the traced servers pay the real cost of exporting
//! (batching, encoding, a gRPC call) while no collector has to be installed.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

/// Just enough of `ExportTraceServiceRequest` to count spans: the rest is skipped while decoding.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceSpans {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

/// Each span stays an undecoded slice of the request's buffer (no copy, no allocation): the sink
/// shares the machine with the servers it measures, and a real collector would not.
#[derive(Clone, PartialEq, prost::Message)]
struct ScopeSpans {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    spans: Vec<prost::bytes::Bytes>,
}

/// The receiver: spans received so far.
#[derive(Clone, Default)]
pub struct Sink {
    spans: Arc<AtomicU64>,
}

impl Sink {
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    /// The count once nothing has arrived for a while: the traced servers' exporters have sent
    /// what they queued (at most 10 s). A batch exporter that falls behind during a run exports the
    /// rest afterwards; counted then, it is neither lost from the spans per call nor left to slow
    /// down the next run, which would flatter the row it belongs to.
    pub async fn drained(&self) -> u64 {
        let quiet = std::time::Duration::from_millis(300);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut last = self.spans();
        loop {
            tokio::time::sleep(quiet).await;
            let now = self.spans();
            if now == last || tokio::time::Instant::now() >= deadline {
                return now;
            }
            last = now;
        }
    }

    /// Serves on `listener` until `stop` is cancelled.
    pub fn serve(&self, listener: TcpListener, stop: CancellationToken) {
        let service = self.clone();
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled())
                .await;
            if let Err(e) = served {
                eprintln!("warning: the OTLP sink stopped: {e}");
            }
        });
    }
}

struct Export(Arc<AtomicU64>);

impl tonic::server::UnaryService<ExportRequest> for Export {
    type Response = ();
    type Future = std::future::Ready<Result<tonic::Response<()>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<ExportRequest>) -> Self::Future {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        // An empty ExportTraceServiceResponse: full success.
        std::future::ready(Ok(tonic::Response::new(())))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for Sink {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let spans = self.spans.clone();
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), ExportRequest>::default())
                    .apply_max_message_size_config(Some(64 << 20), None);
            Ok(grpc.unary(Export(spans), request).await)
        })
    }
}

impl tonic::server::NamedService for Sink {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}
