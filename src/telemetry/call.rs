//! The server span of a traced call, built directly with the OpenTelemetry SDK.
//!
//! Every traced call has this span, most have no other, so it is built the cheap way. Through
//! `tracing-opentelemetry` it cost a visitor over the `tracing` span's fields, an owned string
//! per attribute, and a span builder kept in the registry's extensions and built into the SDK's
//! span when the `tracing` span closed: the largest part of what tracing every call cost. Here
//! the SDK span is started once with static attribute values, and its context is made current
//! (attached) for each poll of the call ([`ServerSpan::attach`]). The call's `tracing` span is
//! kept for the logs only: its target, [`LOG_ONLY`], is kept out of the OpenTelemetry layer.
//!
//! What a call does still reaches its trace: a span it opens finds no enclosing span that the
//! OpenTelemetry layer records, so the layer parents it on the current context, this span;
//! [`CallEvents`] adds the events the call logs outside any such span to this span, as the layer
//! does for its own; [`CallSpan`] records an attribute on both spans; and JSON log lines read their
//! trace ids from the current context (`json`).

use opentelemetry::{
    Context, KeyValue, Value,
    trace::{SpanBuilder, SpanKind, Status, TraceContextExt, Tracer},
};
use opentelemetry_sdk::trace::SdkTracer;
use std::sync::OnceLock;
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{Layer, layer, registry::LookupSpan};

/// The target of the calls' `tracing` spans, which only the logs see.
pub(crate) const LOG_ONLY: &str = "suppressd::rpc";

/// Enough room for a call's attributes: the three it starts with, those the handler records
/// (principal, checks, answer source) and the status.
const ATTRIBUTES: usize = 8;

/// The tracer of the server spans, once traces are exported ([`super::init`]).
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

pub(super) fn install(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
}

/// A traced call's server span, in the context in which it is current.
pub(crate) struct ServerSpan(Context);

impl ServerSpan {
    /// Starts the server span named `name`, continuing a caller's context if it sent one. `None`
    /// when traces are off.
    pub(crate) fn start(
        name: &'static str,
        attributes: impl IntoIterator<Item = KeyValue>,
        caller: Option<Context>,
    ) -> Option<ServerSpan> {
        let tracer = TRACER.get()?;
        let mut kept = Vec::with_capacity(ATTRIBUTES);
        kept.extend(attributes);
        let mut builder = SpanBuilder::from_name(name).with_kind(SpanKind::Server);
        builder.attributes = Some(kept);
        let parent = caller.unwrap_or_default();
        let span = tracer.build_with_context(builder, &parent);
        Some(ServerSpan(parent.with_span(span)))
    }

    /// Makes the span current on this thread until the guard is dropped.
    pub(crate) fn attach(&self) -> opentelemetry::ContextGuard {
        self.0.clone().attach()
    }

    /// Ends the span with its gRPC status code; `failed` marks it an error.
    pub(crate) fn end(self, code: i32, failed: bool) {
        let span = self.0.span();
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
        if failed {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// The span of the call being served, to record an attribute on: on its `tracing` span (which must
/// declare the field) for its log lines, and on its server span when the call is traced.
pub(crate) struct CallSpan(tracing::Span);

impl CallSpan {
    pub(crate) fn current() -> CallSpan {
        CallSpan(tracing::Span::current())
    }

    pub(crate) fn record_str(&self, key: &'static str, value: &str) {
        self.0.record(key, value);
        on_server_span(|| KeyValue::new(key, value.to_owned()));
    }

    pub(crate) fn record_i64(&self, key: &'static str, value: i64) {
        self.0.record(key, value);
        on_server_span(|| KeyValue::new(key, value));
    }
}

fn on_server_span(attribute: impl FnOnce() -> KeyValue) {
    Context::map_current(|cx| {
        if cx.has_active_span() {
            cx.span().set_attribute(attribute());
        }
    });
}

/// Adds an event logged in a traced call, outside any span the OpenTelemetry layer records, to the
/// call's server span, with its fields as attributes (the message names it), as the layer does for
/// the spans it records. It sits under the layer's filter, so it sees what the layer sees.
pub(super) struct CallEvents;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for CallEvents {
    fn on_event(&self, event: &Event<'_>, ctx: layer::Context<'_, S>) {
        // An explicit parent, or an enclosing span the layer records, is the layer's business.
        if !event.is_contextual() || ctx.lookup_current().is_some() {
            return;
        }
        Context::map_current(|cx| {
            if !cx.has_active_span() {
                return;
            }
            let meta = event.metadata();
            let mut fields = EventFields {
                name: None,
                attributes: vec![
                    KeyValue::new("level", meta.level().as_str()),
                    KeyValue::new("target", meta.target()),
                ],
            };
            event.record(&mut fields);
            let name = fields.name.unwrap_or_else(|| meta.name().to_owned());
            cx.span().add_event(name, fields.attributes);
        });
    }
}

struct EventFields {
    name: Option<String>,
    attributes: Vec<KeyValue>,
}

impl EventFields {
    fn add(&mut self, field: &Field, value: Value) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }
}

impl tracing::field::Visit for EventFields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(value) => self.add(field, value.into()),
            Err(_) => self.add(field, value.to_string().into()),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.add(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.name = Some(value.to_owned());
        } else {
            self.add(field, value.to_owned().into());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.name = Some(format!("{value:?}"));
        } else {
            self.add(field, format!("{value:?}").into());
        }
    }
}
