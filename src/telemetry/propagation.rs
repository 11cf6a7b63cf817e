//! W3C trace context (`traceparent`, `tracestate`) in and out: from a caller's gRPC metadata into
//! the server span, and from a request into the write-behind stream entry it queues, so the commit
//! that happens later, in another task or replica, links back to it.

use opentelemetry::{
    Context,
    propagation::{Extractor, TextMapPropagator},
    trace::{SpanContext, TraceContextExt},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C fields as a string map: what a stream entry carries.
pub(crate) type Carrier = HashMap<String, String>;

/// Looked up on every call: a name built once, not a `&str` parsed as a header name each time.
static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The caller's context from request headers (gRPC metadata), if it sent one.
pub(crate) fn from_headers(headers: &http::HeaderMap) -> Option<Context> {
    // Most calls carry none: skip the parse for them.
    if !headers.contains_key(&TRACEPARENT) {
        return None;
    }
    Some(TraceContextPropagator::new().extract(&HeaderExtractor(headers)))
}

/// The context of the current span, if it is sampled: a link to an unrecorded span leads nowhere.
/// `None` whenever traces are off. Directly in a call, outside any span of its own, that is the
/// call's server span, which the current context holds (`call`).
pub(crate) fn current_carrier() -> Option<Carrier> {
    let mut cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        cx = Context::current();
    }
    if !cx.span().span_context().is_sampled() {
        return None;
    }
    let mut carrier = Carrier::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    Some(carrier)
}

/// The span a carrier names, if it names a valid one.
pub(crate) fn span_context(carrier: &Carrier) -> Option<SpanContext> {
    let cx = TraceContextPropagator::new().extract(carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_traceparent_is_read_from_metadata() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = from_headers(&headers).unwrap();
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn no_or_malformed_context_names_no_span() {
        assert!(from_headers(&http::HeaderMap::new()).is_none());
        let carrier = Carrier::from([("traceparent".into(), "00-nonsense".into())]);
        assert!(span_context(&carrier).is_none());
        // Outside any traced span there is nothing to carry.
        assert!(current_carrier().is_none());
    }

    #[test]
    fn the_span_of_the_current_context_is_carried() {
        use opentelemetry::trace::{Span as _, Tracer, TracerProvider};
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let span = provider.tracer("test").start("rpc");
        let trace_id = span.span_context().trace_id().to_string();
        let _attached = Context::current_with_span(span).attach();

        let carrier = current_carrier().expect("a sampled span is current");
        assert!(carrier["traceparent"].contains(&trace_id), "{carrier:?}");
    }
}
