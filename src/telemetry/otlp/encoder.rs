//! The encoding of a batch: opentelemetry/proto/{collector/trace,trace,common,resource}/v1, fields by
//! number, in one pass through a [`Writer`]. The tests check, field by field, that the bytes decode
//! to exactly what the reference conversion (`opentelemetry-proto`'s) builds.

use super::wire::{FIXED64, LEN, VARINT, Writer, varint_len};
use opentelemetry::{
    Array, InstrumentationScope, KeyValue, Value,
    trace::{SpanKind, Status},
};
use opentelemetry_sdk::{Resource, trace::SpanData};
use std::time::SystemTime;

/// The request this exporter sends for `batch` from a process described by `resource`.
pub fn encode(resource: &Resource, batch: &[SpanData]) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    encode_request(&mut w, &encode_resource(resource), batch);
    w.0
}

pub(super) fn encode_request(w: &mut Writer, resource: &EncodedResource, batch: &[SpanData]) {
    // ExportTraceServiceRequest.resource_spans = 1: one resource (this process).
    w.message(1, |w| {
        // ResourceSpans.resource = 1 (always present, encoded once), scope_spans = 2,
        // schema_url = 3.
        w.message(1, |w| w.0.extend_from_slice(&resource.message));
        w.string(3, &resource.schema_url);
        // Spans grouped by scope, scopes in order of first appearance (nearly always just one).
        let mut scopes: Vec<&InstrumentationScope> = Vec::new();
        for span in batch {
            if !scopes.contains(&&span.instrumentation_scope) {
                scopes.push(&span.instrumentation_scope);
            }
        }
        for scope in scopes {
            w.message(2, |w| {
                // ScopeSpans.scope = 1, spans = 2, schema_url = 3.
                w.message(1, |w| encode_scope(w, scope));
                for span in batch.iter().filter(|s| &s.instrumentation_scope == scope) {
                    w.message(2, |w| encode_span(w, span));
                }
                w.string(3, scope.schema_url().unwrap_or_default());
            });
        }
    });
}

/// The process's `Resource` message (attributes = 1), encoded once, and the schema URL that goes
/// beside it in each request.
pub(super) struct EncodedResource {
    message: Vec<u8>,
    schema_url: String,
}

pub(super) fn encode_resource(resource: &Resource) -> EncodedResource {
    let mut w = Writer(Vec::new());
    for (key, value) in resource.iter() {
        encode_key_value(&mut w, 1, key.as_str(), value);
    }
    EncodedResource {
        message: w.0,
        schema_url: resource.schema_url().unwrap_or_default().to_owned(),
    }
}

/// An `InstrumentationScope`: name = 1, version = 2, attributes = 3.
fn encode_scope(w: &mut Writer, scope: &InstrumentationScope) {
    w.string(1, scope.name());
    w.string(2, scope.version().unwrap_or_default());
    encode_attributes(w, 3, scope.attributes());
}

fn encode_span(w: &mut Writer, span: &SpanData) {
    let context = &span.span_context;
    w.bytes(1, &context.trace_id().to_bytes());
    w.bytes(2, &context.span_id().to_bytes());
    w.string(3, &context.trace_state().header());
    if span.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        w.bytes(4, &span.parent_span_id.to_bytes());
    }
    w.string(5, &span.name);
    w.uint(6, span_kind(&span.span_kind));
    w.fixed64(7, nanos(span.start_time));
    w.fixed64(8, nanos(span.end_time));
    encode_attributes(w, 9, &span.attributes);
    w.uint(10, u64::from(span.dropped_attributes_count));
    for event in &span.events.events {
        // Event: time_unix_nano = 1, name = 2, attributes = 3, dropped_attributes_count = 4.
        w.message(11, |w| {
            w.fixed64(1, nanos(event.timestamp));
            w.string(2, &event.name);
            encode_attributes(w, 3, &event.attributes);
            w.uint(4, u64::from(event.dropped_attributes_count));
        });
    }
    w.uint(12, u64::from(span.events.dropped_count));
    for link in &span.links.links {
        // Link: trace_id = 1, span_id = 2, trace_state = 3, attributes = 4,
        // dropped_attributes_count = 5, flags = 6.
        w.message(13, |w| {
            let context = &link.span_context;
            w.bytes(1, &context.trace_id().to_bytes());
            w.bytes(2, &context.span_id().to_bytes());
            w.string(3, &context.trace_state().header());
            encode_attributes(w, 4, &link.attributes);
            w.uint(5, u64::from(link.dropped_attributes_count));
            w.fixed32(6, span_flags(context.is_remote(), context.trace_flags()));
        });
    }
    w.uint(14, u64::from(span.links.dropped_count));
    // Status: message = 2, code = 3 (always present, as the reference conversion has it).
    w.message(15, |w| match &span.status {
        Status::Unset => {}
        Status::Ok => w.uint(3, 1),
        Status::Error { description } => {
            w.string(2, description);
            w.uint(3, 2);
        }
    });
    w.fixed32(
        16,
        span_flags(span.parent_span_is_remote, context.trace_flags()),
    );
}

/// `SpanFlags`: the W3C trace flags, and whether the parent (or linked) context is remote.
fn span_flags(remote: bool, trace_flags: opentelemetry::trace::TraceFlags) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(trace_flags.to_u8()) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn encode_attributes<'a>(
    w: &mut Writer,
    field: u32,
    attributes: impl IntoIterator<Item = &'a KeyValue>,
) {
    for kv in attributes {
        encode_key_value(w, field, kv.key.as_str(), &kv.value);
    }
}

/// A `KeyValue` (key = 1, value = 2, an `AnyValue`) as field `field`. A scalar value's lengths are
/// known before it is written, so it is written straight through, without `message`'s move.
fn encode_key_value(w: &mut Writer, field: u32, key: &str, value: &Value) {
    let Some(value_len) = scalar_len(value) else {
        return w.message(field, |w| {
            w.string(1, key);
            w.message(2, |w| encode_any_value(w, value));
        });
    };
    let key_len = if key.is_empty() {
        0 // an empty string is not written
    } else {
        1 + varint_len(key.len() as u64) + key.len()
    };
    w.key(field, LEN);
    w.varint((key_len + 1 + varint_len(value_len as u64) + value_len) as u64);
    w.string(1, key);
    w.key(2, LEN);
    w.varint(value_len as u64);
    encode_any_value(w, value);
}

/// The encoded length of an `AnyValue` holding a scalar (`None` for an array or a later kind).
fn scalar_len(value: &Value) -> Option<usize> {
    Some(match value {
        Value::Bool(_) => 2,
        Value::I64(i) => 1 + varint_len(*i as u64),
        Value::F64(_) => 9,
        Value::String(s) => 1 + varint_len(s.as_str().len() as u64) + s.as_str().len(),
        _ => return None,
    })
}

/// An `AnyValue`, a oneof: string_value = 1, bool_value = 2, int_value = 3, double_value = 4,
/// array_value = 5 (an `ArrayValue`: values = 1). A oneof member is written even when it holds its
/// type's default, or the value would read back as unset.
fn encode_any_value(w: &mut Writer, value: &Value) {
    match value {
        Value::Bool(b) => {
            w.key(2, VARINT);
            w.varint(u64::from(*b));
        }
        Value::I64(i) => {
            w.key(3, VARINT);
            w.varint(*i as u64);
        }
        Value::F64(f) => {
            w.key(4, FIXED64);
            w.0.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => {
            w.key(1, LEN);
            w.varint(s.as_str().len() as u64);
            w.0.extend_from_slice(s.as_str().as_bytes());
        }
        Value::Array(array) => w.message(5, |w| {
            let values: Vec<Value> = match array {
                Array::Bool(v) => v.iter().map(|&b| Value::Bool(b)).collect(),
                Array::I64(v) => v.iter().map(|&i| Value::I64(i)).collect(),
                Array::F64(v) => v.iter().map(|&f| Value::F64(f)).collect(),
                Array::String(v) => v.iter().map(|s| Value::String(s.clone())).collect(),
                // A kind of array added to the API later: its text, rather than nothing.
                other => vec![Value::String(other.to_string().into())],
            };
            for value in &values {
                w.message(1, |w| encode_any_value(w, value));
            }
        }),
        // A kind of value added to the API later: its text, rather than nothing.
        other => {
            let text = other.as_str();
            w.key(1, LEN);
            w.varint(text.len() as u64);
            w.0.extend_from_slice(text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::full_span;
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::{
        common::tonic::ResourceAttributesWithSchema,
        trace::tonic::group_spans_by_resource_and_scope,
    };
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message;
    use std::borrow::Cow;

    fn decode(bytes: &[u8]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest::decode(bytes).expect("a valid ExportTraceServiceRequest")
    }

    /// What `opentelemetry-otlp` would have sent for the same batch and resource.
    fn reference(batch: Vec<SpanData>, resource: &Resource) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                batch,
                &ResourceAttributesWithSchema::from(resource),
            ),
        }
    }

    #[test]
    fn a_batch_decodes_to_exactly_what_the_reference_conversion_builds() {
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "suppressd"),
                KeyValue::new("service.version", "0.1.0"),
                KeyValue::new("host.cores", 2_i64),
            ])
            .build();
        let ours_scope = InstrumentationScope::builder("suppressd")
            .with_version("0.1.0")
            .with_schema_url("https://opentelemetry.io/schemas/1.26.0")
            .with_attributes([KeyValue::new("scope.attr", "x")])
            .build();
        let other_scope = InstrumentationScope::builder("other").build();
        let batch = vec![
            full_span(ours_scope.clone(), Status::Unset),
            full_span(other_scope, Status::Ok),
            full_span(
                ours_scope,
                Status::Error {
                    description: "store unavailable".into(),
                },
            ),
        ];
        let mut writer = Writer(Vec::new());
        encode_request(&mut writer, &encode_resource(&resource), &batch);

        assert_eq!(decode(&writer.0), reference(batch, &resource));
    }

    #[test]
    fn a_span_with_nothing_set_decodes_to_what_the_reference_builds() {
        let bare = SpanData {
            span_context: SpanContext::new(
                TraceId::from(1),
                SpanId::from(2),
                TraceFlags::default(),
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(""),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes: vec![],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("").build(),
        };
        let resource = Resource::builder_empty().build();
        let mut writer = Writer(Vec::new());
        encode_request(
            &mut writer,
            &encode_resource(&resource),
            std::slice::from_ref(&bare),
        );

        assert_eq!(decode(&writer.0), reference(vec![bare], &resource));
    }
}
