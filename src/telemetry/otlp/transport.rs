//! Sending a batch: one `TraceService/Export` call over a channel kept between exports, retried with
//! a doubling pause within the timeout. The request arrives as bytes (see [`super::encoder`]), so a
//! retry resends the same bytes instead of encoding the batch again.

use super::{
    ExportConfig,
    encoder::{EncodedResource, encode_request, encode_resource},
    wire::Writer,
};
use bytes::{BufMut, Bytes};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use std::{sync::Mutex, time::Duration};
use tonic::{
    Code,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::Channel,
};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The first pause before a retry; each further retry waits twice as long, within the timeout.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The exporter. Build it inside the Tokio runtime: its connection and its calls live there, while
/// the batch processor calls [`SpanExporter::export`] from a thread of its own.
pub(crate) struct OtlpExporter {
    grpc: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
    /// Set by the provider before the first export.
    resource: EncodedResource,
    /// The request buffer, kept between exports so that its pages stay mapped.
    buffer: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OtlpExporter {
    pub(crate) fn new(config: &ExportConfig) -> Result<OtlpExporter, String> {
        let channel = Channel::from_shared(config.endpoint.clone())
            .map_err(|e| format!("OTLP endpoint {}: {e}", config.endpoint))?
            .tcp_nodelay(true)
            .connect_lazy();
        let mut metadata = MetadataMap::new();
        for (key, value) in &config.headers {
            let name = MetadataKey::from_bytes(key.as_bytes())
                .map_err(|_| format!("OTLP header `{key}` is not a valid header name"))?;
            let value = MetadataValue::try_from(value.as_str())
                .map_err(|_| format!("OTLP header `{key}` has a value that cannot be sent"))?;
            metadata.insert(name, value);
        }
        Ok(OtlpExporter {
            grpc: tonic::client::Grpc::new(channel),
            metadata,
            timeout: config.timeout,
            runtime: tokio::runtime::Handle::try_current()
                .map_err(|_| "the OTLP exporter must be built inside the Tokio runtime")?,
            resource: encode_resource(&Resource::builder_empty().build()),
            buffer: Mutex::new(Vec::new()),
        })
    }

    /// The request for `batch`: its protobuf bytes.
    fn encode(&self, batch: &[SpanData]) -> Bytes {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let mut w = Writer(std::mem::take(&mut *buffer));
        w.0.clear();
        encode_request(&mut w, &self.resource, batch);
        let request = Bytes::copy_from_slice(&w.0);
        *buffer = w.0;
        request
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        let request = self.encode(&batch);
        drop(batch);
        let send = send(
            self.grpc.clone(),
            self.metadata.clone(),
            request,
            self.timeout,
        );
        match self.runtime.spawn(send).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(OTelSdkError::InternalFailure(format!(
                "OTLP export failed: {}: {}",
                status.code(),
                status.message()
            ))),
            Err(e) => Err(OTelSdkError::InternalFailure(format!(
                "OTLP export task failed: {e}"
            ))),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = encode_resource(resource);
    }
}

/// Sends one request, retrying what OTLP calls retryable with a doubling pause, within `timeout`.
async fn send(
    mut grpc: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
    request: Bytes,
    timeout: Duration,
) -> Result<(), tonic::Status> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let attempt = async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("connecting: {e}")))?;
            let mut call = tonic::Request::new(Encoded(request.clone()));
            *call.metadata_mut() = metadata.clone();
            let codec = tonic_prost::ProstCodec::<Encoded, ExportResponse>::default();
            grpc.unary(
                call,
                http::uri::PathAndQuery::from_static(EXPORT_PATH),
                codec,
            )
            .await
        };
        let status = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(response)) => {
                if let Some(partial) = response.into_inner().partial_success
                    && (partial.rejected_spans > 0 || !partial.error_message.is_empty())
                {
                    tracing::warn!(
                        rejected_spans = partial.rejected_spans,
                        error = partial.error_message,
                        "the OTLP collector rejected spans"
                    );
                }
                return Ok(());
            }
            Ok(Err(status)) => status,
            Err(_) => {
                return Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {timeout:?}"
                )));
            }
        };
        let retryable = matches!(
            status.code(),
            Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unavailable
                | Code::DataLoss
        );
        if !retryable || tokio::time::Instant::now() + backoff >= deadline {
            return Err(status);
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

/// A request already encoded: written out as it is.
#[derive(Clone, Default, PartialEq)]
struct Encoded(Bytes);

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({} bytes)", self.0.len())
    }
}

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// `ExportTraceServiceResponse`, as much of it as is read.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected_spans: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::full_span;
    use super::*;
    use opentelemetry::{InstrumentationScope, trace::Status};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    /// A collector that answers each export with the next of `answers` (then OK), keeping the
    /// requests it was sent.
    #[derive(Clone)]
    struct Collector {
        answers: Arc<Mutex<Vec<Code>>>,
        received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    }

    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    };
    use std::sync::{Arc, Mutex};

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            self.received.lock().unwrap().push(request.into_inner());
            let mut answers = self.answers.lock().unwrap();
            match answers.is_empty() {
                true => Ok(tonic::Response::new(ExportTraceServiceResponse::default())),
                false => Err(tonic::Status::new(answers.remove(0), "as the test asked")),
            }
        }
    }

    /// Serves a collector on a free port; returns its endpoint.
    async fn collector(answers: Vec<Code>) -> (String, Collector) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let collector = Collector {
            answers: Arc::new(Mutex::new(answers)),
            received: Arc::default(),
        };
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        (endpoint, collector)
    }

    fn exporter(endpoint: &str, timeout: Duration) -> OtlpExporter {
        let config = ExportConfig {
            endpoint: endpoint.to_owned(),
            headers: vec![],
            timeout,
        };
        OtlpExporter::new(&config).unwrap()
    }

    /// Exports from a thread of its own outside the runtime, as the SDK's batch processor does.
    async fn export(exporter: OtlpExporter, batch: Vec<SpanData>) -> OTelSdkResult {
        let thread = std::thread::spawn(move || futures_executor::block_on(exporter.export(batch)));
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_collector_that_is_briefly_unavailable_gets_the_batch_on_a_retry() {
        let (endpoint, collector) = collector(vec![Code::Unavailable, Code::Unavailable]).await;
        let scope = InstrumentationScope::builder("suppressd").build();
        let batch = vec![full_span(scope, Status::Unset)];

        let exported = export(exporter(&endpoint, Duration::from_secs(5)), batch).await;

        assert!(exported.is_ok(), "{exported:?}");
        let received = collector.received.lock().unwrap();
        assert_eq!(
            received.len(),
            3,
            "two refusals, then the same request accepted"
        );
        assert!(received.iter().all(|r| r == &received[0]));
    }

    #[tokio::test]
    async fn a_refusal_that_retrying_cannot_fix_fails_the_export_at_once() {
        let (endpoint, collector) = collector(vec![Code::InvalidArgument]).await;
        let scope = InstrumentationScope::builder("suppressd").build();
        let batch = vec![full_span(scope, Status::Unset)];

        let exported = export(exporter(&endpoint, Duration::from_secs(5)), batch).await;

        let error = exported.unwrap_err().to_string();
        assert!(error.contains("as the test asked"), "{error}");
        assert_eq!(collector.received.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_absent_collector_fails_the_export_within_the_timeout() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let scope = InstrumentationScope::builder("suppressd").build();
        let batch = vec![full_span(scope, Status::Unset)];

        let started = std::time::Instant::now();
        let exported = export(
            exporter(&format!("http://{port}"), Duration::from_millis(700)),
            batch,
        )
        .await;

        assert!(exported.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "gave up in {:?}",
            started.elapsed()
        );
    }
}
