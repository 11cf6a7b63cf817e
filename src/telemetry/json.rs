//! JSON log lines that carry the trace and span ids of the span they were logged in, so a log search
//! leads to the trace and a trace to its logs, and the fields of the call they were logged in
//! (`rpc`: its method, principal, …; see `telemetry::call`).

use super::call::CallFields;
use opentelemetry::trace::TraceContextExt;
use std::fmt::Write as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{self, Format, Json, Writer},
    },
    registry::LookupSpan,
};

/// `tracing-subscriber`'s JSON format plus top-level `trace_id` and `span_id` fields, present when
/// the event happened inside a span that OpenTelemetry knows (traces are on), and `rpc`, present
/// when it happened in a call.
pub(crate) struct WithTraceIds {
    inner: Format<Json>,
}

impl Default for WithTraceIds {
    fn default() -> Self {
        Self {
            inner: format::format().json(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // Looked up before formatting: the look-up locks the span's extensions, which the inner
        // formatter reads too. A span the OpenTelemetry layer records names its own ids; else the
        // current context does, which is a traced call's server span while the call runs
        // (`call`).
        let cx = ctx
            .parent_span()
            .and_then(|span| {
                tracing::dispatcher::get_default(|dispatch| {
                    tracing_opentelemetry::get_otel_context(&span.id(), dispatch)
                })
            })
            .unwrap_or_else(opentelemetry::Context::current);
        let ids = {
            let span = cx.span();
            let sc = span.span_context();
            sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
        };
        let call = CallFields::with_current(|call| call.map(CallFields::to_json));
        if ids.is_none() && call.is_none() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        // The inner format writes one object and a newline: the extra fields go in before the
        // closing brace.
        let Some(object) = line.strip_suffix("}\n") else {
            return writer.write_str(&line);
        };
        let mut extra = String::new();
        if let Some((trace_id, span_id)) = ids {
            write!(
                extra,
                ",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""
            )?;
        }
        if let Some(call) = call {
            write!(extra, ",\"rpc\":{call}")?;
        }
        writeln!(writer, "{object}{extra}}}")
    }
}
