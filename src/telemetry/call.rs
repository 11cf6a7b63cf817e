//! The server span of a traced call, built directly with the OpenTelemetry SDK.
//!
//! Every traced call has this span, most have no other, so it is built the cheap way. Through
//! `tracing-opentelemetry` it cost a visitor over the `tracing` span's fields, an owned string
//! per attribute, and a span builder kept in the registry's extensions and built into the SDK's
//! span when the `tracing` span closed: the largest part of what tracing every call cost. Here
//! the SDK span is started once with static attribute values, and its context is made current
//! (attached) for each poll of the call ([`ServerSpan::attach`]).
//!
//! The logs name the call a line was logged in from its [`CallFields`], not from a `tracing` span.
//! A span for the logs cost each call, at the default level, its creation in the registry, its
//! fields formatted into a string when it opened and again at each `record`, an enter and exit at
//! each poll and a look-up for each `record`: about 6 µs of a check's latency at concurrency 1,
//! for lines that a call seldom logs. The fields are now held as they are recorded, made current
//! for each poll of the call like the server span ([`CallFields::within`]), and formatted only
//! into a line that is written (`telemetry::text`, `telemetry::json`).
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
use smallvec::SmallVec;
use std::{
    cell::RefCell,
    fmt,
    sync::{Arc, Mutex, OnceLock},
};
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{Layer, layer, registry::LookupSpan};

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

/// The call being served, to record an attribute on: in its [`CallFields`] for its log lines, and
/// on its server span when the call is traced. Outside a call, recording does nothing.
pub(crate) struct CallSpan(Option<Arc<CallFields>>);

impl CallSpan {
    pub(crate) fn current() -> CallSpan {
        CallSpan(CURRENT.with_borrow(Clone::clone))
    }

    pub(crate) fn record_str(&self, key: &'static str, value: &str) {
        if let Some(fields) = &self.0 {
            fields.record(key, FieldValue::Str(value.to_owned()));
        }
        on_server_span(|| KeyValue::new(key, value.to_owned()));
    }

    pub(crate) fn record_i64(&self, key: &'static str, value: i64) {
        if let Some(fields) = &self.0 {
            fields.record(key, FieldValue::I64(value));
        }
        on_server_span(|| KeyValue::new(key, value));
    }
}

thread_local! {
    /// The fields of the call whose poll this thread is in.
    static CURRENT: RefCell<Option<Arc<CallFields>>> = const { RefCell::new(None) };
}

/// What the log lines of one call say about it: its method, then what the call recorded
/// ([`CallSpan`]), in the order first recorded; a key recorded again keeps its place.
#[derive(Debug)]
pub(crate) struct CallFields {
    method: &'static str,
    recorded: Mutex<SmallVec<[(&'static str, FieldValue); 4]>>,
}

#[derive(Debug)]
enum FieldValue {
    Str(String),
    I64(i64),
}

impl CallFields {
    pub(crate) fn new(method: &'static str) -> Arc<CallFields> {
        Arc::new(CallFields {
            method,
            recorded: Mutex::new(SmallVec::new()),
        })
    }

    fn record(&self, key: &'static str, value: FieldValue) {
        let mut recorded = self.recorded.lock().expect("call fields lock");
        match recorded.iter_mut().find(|(k, _)| *k == key) {
            Some((_, held)) => *held = value,
            None => recorded.push((key, value)),
        }
    }

    /// Runs `f` with these fields current on this thread (as the call's, for the log lines).
    pub(crate) fn within<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Arc<CallFields>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with_borrow_mut(|current| *current = previous);
            }
        }
        let _restore = Restore(CURRENT.replace(Some(Arc::clone(self))));
        f()
    }

    /// Calls `f` with the fields of the call this thread is in, if it is in one.
    pub(super) fn with_current<R>(f: impl FnOnce(Option<&CallFields>) -> R) -> R {
        CURRENT.with_borrow(|current| f(current.as_deref()))
    }

    /// As the text format writes a span: `rpc{method=… principal=…}`.
    pub(super) fn write_text(&self, out: &mut impl fmt::Write) -> fmt::Result {
        write!(out, "rpc{{method={}", self.method)?;
        for (key, value) in self.recorded.lock().expect("call fields lock").iter() {
            match value {
                FieldValue::Str(s) => write!(out, " {key}={s}")?,
                FieldValue::I64(n) => write!(out, " {key}={n}")?,
            }
        }
        out.write_char('}')
    }

    /// As a JSON object: `{"method":"…","principal":"…",…}`.
    pub(super) fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        object.insert("method".into(), self.method.into());
        for (key, value) in self.recorded.lock().expect("call fields lock").iter() {
            let value = match value {
                FieldValue::Str(s) => s.as_str().into(),
                FieldValue::I64(n) => (*n).into(),
            };
            object.insert((*key).into(), value);
        }
        object.into()
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
