//! The server span and the RPC metrics of every call: one tower layer around the whole router.
//!
//! It sits outermost (`Server::builder().layer`), so that it sees every call the server answers,
//! including those answered before any handler runs (unknown method, oversized message, a layer
//! that sheds load), and so that its span is the parent of everything a handler does. The span
//! follows the OpenTelemetry RPC conventions: named `package.Service/Method`, kind server, with
//! `rpc.system`, `rpc.service`, `rpc.method` and `rpc.grpc.status_code`; a caller's W3C context
//! (`traceparent`/`tracestate` metadata) becomes its parent. It is built with the SDK directly
//! (`telemetry::call`); the call's [`CallFields`] name the method in its log lines. The
//! status is read where gRPC puts it: in the response headers for an error (trailers-only), else
//! in the trailers after the body, which is why the response body is wrapped too.

use crate::{
    proto,
    telemetry::{
        call::{CallFields, ServerSpan},
        metrics::{self, names},
        propagation, sampling,
    },
};
use ::metrics::{Counter, Histogram};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::KeyValue;
use pin_project_lite::pin_project;
use prost::Message;
use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, LazyLock, OnceLock},
    task::{Context, Poll, ready},
    time::Instant,
};
use tower::{Layer, Service};

/// gRPC status codes this layer names itself.
const OK: i32 = 0;
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;

/// Wraps every service of the router; see the module comment for why it sits outermost.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RpcLayer;

impl<S> Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Rpc<S> {
        Rpc { inner }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Rpc<S> {
    inner: S,
}

impl<S, B, ResBody> Service<http::Request<B>> for Rpc<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = Call::start(&request);
        let inner = call.inside(|| self.inner.call(request));
        ObservedFuture {
            inner,
            call: Some(call),
        }
    }
}

pin_project! {
    /// The handler's future, polled inside the server span.
    pub(crate) struct ObservedFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for ObservedFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<ObservedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let result = match this.call.as_ref() {
            Some(call) => call.inside(|| inner.poll(cx)),
            None => inner.poll(cx),
        };
        let result = ready!(result);
        let mut call = this.call.take().expect("polled after completion");
        Poll::Ready(match result {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                // A trailers-only response (every error) carries its status in the headers.
                let call = match grpc_status(&parts.headers) {
                    Some(code) => {
                        call.code = Some(code);
                        None
                    }
                    None => Some(call),
                };
                Ok(http::Response::from_parts(
                    parts,
                    ObservedBody { inner: body, call },
                ))
            }
            Err(e) => {
                call.code = Some(UNKNOWN);
                Err(e)
            }
        })
    }
}

pin_project! {
    /// The response body; the call ends when its trailers (and so its status) have gone out.
    pub(crate) struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let inner = this.inner;
        // Outside the spans (only within its trace's decision): sending the response makes no span
        // and logs nothing. The server span ends with the call, once the trailers (and so its
        // status) have gone out.
        let polled = match this.call.as_ref() {
            Some(call) => sampling::within(call.sampled, || inner.poll_frame(cx)),
            None => inner.poll_frame(cx),
        };
        let polled = ready!(polled);
        let code = match &polled {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|t| grpc_status(t).unwrap_or(UNKNOWN)),
            Some(Err(_)) | None => Some(UNKNOWN),
        };
        if let Some(code) = code
            && let Some(mut call) = this.call.take()
        {
            call.code = Some(code);
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One call in flight. Dropping it ends the call: with the status seen, or `CANCELLED` when the
/// client went away first.
struct Call {
    /// For the logs: every line logged during the call names them.
    fields: Arc<CallFields>,
    /// The server span, when the call is traced.
    trace: Option<ServerSpan>,
    /// Whether the call's trace is recorded, decided as it arrived (`None`: traces are off).
    sampled: Option<bool>,
    method: &'static Method,
    started: Instant,
    /// One of gRPC's codes (`grpc_status` makes anything else UNKNOWN); none yet: CANCELLED.
    code: Option<i32>,
}

impl Call {
    /// Runs `f` as part of this call: with its fields, inside its server span, and within its
    /// trace's sampling decision.
    fn inside<R>(&self, f: impl FnOnce() -> R) -> R {
        sampling::within(self.sampled, || {
            self.fields.within(|| {
                let _attached = self.trace.as_ref().map(ServerSpan::attach);
                f()
            })
        })
    }

    fn start<B>(request: &http::Request<B>) -> Call {
        let method = Method::of(request.uri().path());
        let parent = propagation::from_headers(request.headers());
        let sampled = sampling::decide(parent.as_ref());
        let trace = (sampled == Some(true))
            .then(|| {
                let attributes = [
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", method.service),
                    KeyValue::new("rpc.method", method.method),
                ];
                ServerSpan::start(method.full, attributes, parent)
            })
            .flatten();
        Call {
            fields: CallFields::new(method.full),
            trace,
            sampled,
            method,
            started: Instant::now(),
            code: None,
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(CANCELLED);
        let elapsed = self.started.elapsed();
        let (service, method) = (self.method.service, self.method.method);
        metrics::once(&self.method.requests[code as usize], || {
            ::metrics::counter!(names::RPC_REQUESTS,
                "rpc_service" => service, "rpc_method" => method, "code" => code_name(code))
        })
        .increment(1);
        metrics::once(&self.method.duration, || {
            ::metrics::histogram!(names::RPC_DURATION,
                "rpc_service" => service, "rpc_method" => method)
        })
        .record(elapsed);
        // Only when it is logged (not at the default level): inside the call, so that the line
        // names it and, in JSON, carries the trace's ids.
        if tracing::enabled!(tracing::Level::DEBUG) {
            self.inside(|| {
                tracing::debug!(
                    code = code_name(code),
                    elapsed_us = elapsed.as_micros() as u64,
                    "rpc finished"
                );
            });
        }
        if let Some(trace) = self.trace.take() {
            trace.end(code, is_server_error(code));
        }
    }
}

/// A method the server knows, as the conventions name it. Anything else is `_OTHER`, so a client
/// inventing paths cannot mint new metric series.
struct Method {
    full: &'static str,
    service: &'static str,
    method: &'static str,
    /// Its calls by gRPC status code, and their latency: each series made on its first call.
    requests: [OnceLock<Counter>; CODES],
    duration: OnceLock<Histogram>,
}

/// gRPC's status codes, 0 to 16.
const CODES: usize = 17;

impl Method {
    const fn new(full: &'static str, service: &'static str, method: &'static str) -> Method {
        Method {
            full,
            service,
            method,
            requests: [const { OnceLock::new() }; CODES],
            duration: OnceLock::new(),
        }
    }
}

static OTHER: Method = Method::new("_OTHER", "_OTHER", "_OTHER");

/// Every method of every service the router serves, keyed by HTTP path, read once from the
/// services' own descriptors so that a new RPC is named without touching this file.
static METHODS: LazyLock<HashMap<String, Method>> = LazyLock::new(|| {
    let descriptor_sets = [
        proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for bytes in descriptor_sets {
        let set =
            prost_types::FileDescriptorSet::decode(bytes).expect("built-in descriptors decode");
        for file in set.file {
            for service in &file.service {
                let service_name = format!("{}.{}", file.package(), service.name());
                let service_name: &'static str = Box::leak(service_name.into_boxed_str());
                for m in &service.method {
                    let full = format!("{service_name}/{}", m.name());
                    let full: &'static str = Box::leak(full.into_boxed_str());
                    methods.insert(
                        format!("/{full}"),
                        Method::new(full, service_name, &full[service_name.len() + 1..]),
                    );
                }
            }
        }
    }
    methods
});

impl Method {
    fn of(path: &str) -> &'static Method {
        METHODS.get(path).unwrap_or(&OTHER)
    }
}

/// The status a `grpc-status` header gives, if there is one; a value that is not one of gRPC's
/// codes counts as UNKNOWN, here only, so that every code a [`Call`] holds indexes its counters.
fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    let value = headers.get(&super::GRPC_STATUS)?;
    let code = value.to_str().ok().and_then(|v| v.parse::<i32>().ok());
    Some(
        code.filter(|c| (0..CODES as i32).contains(c))
            .unwrap_or(UNKNOWN),
    )
}

/// The codes that make a server span an error, per the conventions: faults of the server, not of
/// the request.
fn is_server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

fn code_name(code: i32) -> &'static str {
    match code {
        OK => "OK",
        CANCELLED => "CANCELLED",
        UNKNOWN => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_are_named_by_the_conventions() {
        let m = Method::of("/suppress.v1.Suppression/CheckSuppressed");
        assert_eq!(m.full, "suppress.v1.Suppression/CheckSuppressed");
        assert_eq!(m.service, "suppress.v1.Suppression");
        assert_eq!(m.method, "CheckSuppressed");
        assert_eq!(Method::of("/grpc.health.v1.Health/Check").method, "Check");
        assert_eq!(Method::of("/made.up.Service/Anything").full, "_OTHER");
    }

    #[test]
    fn status_codes_have_their_grpc_names() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(14), "UNAVAILABLE");
        assert_eq!(code_name(99), "UNKNOWN");
        assert!(is_server_error(13) && !is_server_error(3));
    }

    #[test]
    fn a_status_outside_grpcs_codes_is_unknown() {
        let status = |v: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(&crate::api::GRPC_STATUS, http::HeaderValue::from_static(v));
            grpc_status(&headers)
        };
        assert_eq!(grpc_status(&http::HeaderMap::new()), None);
        assert_eq!(status("0"), Some(OK));
        assert_eq!(status("16"), Some(16));
        for odd in ["17", "99", "-1", "two"] {
            assert_eq!(status(odd), Some(UNKNOWN), "{odd}");
        }
    }
}
