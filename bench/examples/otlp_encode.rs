//! What encoding a batch of spans costs: `opentelemetry-otlp`'s path (clone the batch, as it does on
//! every attempt; convert to the generated messages; prost-encode) against suppressd's exporter
//! (`telemetry::otlp`), on the same batch of 512 server spans shaped like a traced check's, in one
//! run. CPU time on one thread, so it holds on a busy machine better than the end-to-end rows.
//!
//! `cargo run --release --example otlp_encode`

use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::{
    common::tonic::ResourceAttributesWithSchema, trace::tonic::group_spans_by_resource_and_scope,
};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanEvents, SpanLinks},
};
use prost::Message;
use std::time::{Instant, SystemTime};

const BATCH: usize = 512; // the batch processor's default export size
const ROUNDS: usize = 400;

fn batch() -> Vec<SpanData> {
    let scope = InstrumentationScope::builder("suppressd").build();
    let text = |k: &'static str, v: &str| KeyValue::new(k, v.to_owned());
    (0..BATCH as u64)
        .map(|i| SpanData {
            span_context: SpanContext::new(
                TraceId::from(u128::from(i) + 99),
                SpanId::from(i + 1),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "suppress.v1.Suppression/CheckSuppressed".into(),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: vec![
                text("rpc.system", "grpc"),
                text("rpc.service", "suppress.v1.Suppression"),
                text("rpc.method", "CheckSuppressed"),
                text("principal", "mailer"),
                KeyValue::new("suppressd.checks", 1_i64),
                text("suppressd.answer_source", "cache"),
                KeyValue::new("rpc.grpc.status_code", 0_i64),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        })
        .collect()
}

/// Microseconds per span over `ROUNDS` batches, and bytes per span.
fn per_span(mut encode: impl FnMut() -> usize) -> (f64, usize) {
    let started = Instant::now();
    let bytes: usize = (0..ROUNDS).map(|_| encode()).sum();
    let spans = (ROUNDS * BATCH) as f64;
    (
        started.elapsed().as_secs_f64() * 1e6 / spans,
        bytes / (ROUNDS * BATCH),
    )
}

fn main() {
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "suppressd"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    let batch = batch();
    let schema = ResourceAttributesWithSchema::from(&resource);
    for round in 1..=3 {
        let (reference, reference_bytes) = per_span(|| {
            let request = ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(batch.clone(), &schema),
            };
            let mut buffer = bytes::BytesMut::with_capacity(8 * 1024); // tonic's initial buffer
            request.encode(&mut buffer).expect("the buffer grows");
            buffer.len()
        });
        let (ours, ours_bytes) =
            per_span(|| suppressd::telemetry::otlp::encode(&resource, &batch).len());
        println!(
            "round {round}: opentelemetry-otlp's path {reference:.3} µs/span ({reference_bytes} B), \
             suppressd's exporter {ours:.3} µs/span ({ours_bytes} B): {:.1}× less",
            reference / ours
        );
    }
}
