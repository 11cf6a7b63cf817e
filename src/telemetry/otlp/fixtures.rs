//! TESTS ONLY: spans with something in every field, shared by the encoder's and the transport's
//! tests.

use opentelemetry::{
    Array, InstrumentationScope, KeyValue, StringValue, Value,
    trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::{
    borrow::Cow,
    time::{Duration, SystemTime},
};

fn context(trace: u128, span: u64, remote: bool) -> SpanContext {
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::SAMPLED,
        remote,
        TraceState::from_key_value([("vendor", "opaque")]).unwrap(),
    )
}

/// A span with something in every field, and every kind of attribute value, including each
/// type's default (which a oneof must still carry).
pub(super) fn full_span(scope: InstrumentationScope, status: Status) -> SpanData {
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_764_000_000_123_456_789);
    let mut events = SpanEvents::default();
    events.events.push(Event::new(
        "rpc finished",
        start + Duration::from_micros(40),
        vec![KeyValue::new("code", "OK"), KeyValue::new("elapsed_us", 40)],
        1,
    ));
    events.dropped_count = 2;
    let mut links = SpanLinks::default();
    links.links.push(Link::new(
        context(7, 8, true),
        vec![KeyValue::new("link.kind", "follows")],
        3,
    ));
    SpanData {
        span_context: context(
            0x0af7651916cd43dd8448eb211c80319c,
            0xb7ad6b7169203331,
            false,
        ),
        parent_span_id: SpanId::from(0x00f067aa0ba902b7),
        parent_span_is_remote: true,
        span_kind: SpanKind::Server,
        name: Cow::Borrowed("suppress.v1.Suppression/CheckSuppressed"),
        start_time: start,
        end_time: start + Duration::from_micros(42),
        attributes: vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("owned", String::from("an owned string")),
            KeyValue::new("empty", ""),
            KeyValue::new("rpc.grpc.status_code", 0_i64),
            KeyValue::new("negative", -5_i64),
            KeyValue::new("flag", false),
            KeyValue::new("yes", true),
            KeyValue::new("ratio", 0.0_f64),
            KeyValue::new("pi", 3.25_f64),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![0, 1, -1]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![0.5]))),
            KeyValue::new(
                "strings",
                Value::Array(Array::String(vec![StringValue::from("a"), "".into()])),
            ),
            KeyValue::new("unicode", "opt-out ✓ ünïcödé"),
            // Lengths of more than one varint byte, and an empty key (written as nothing).
            KeyValue::new("long", "x".repeat(300)),
            KeyValue::new("big", i64::MAX),
            KeyValue::new("", "no key"),
        ],
        dropped_attributes_count: 4,
        events,
        links,
        status,
        instrumentation_scope: scope,
    }
}
