//! Telemetry set-up, in one place: logs on standard error (text or JSON, filtered by `RUST_LOG`),
//! traces exported over OTLP/gRPC (configured by the standard `OTEL_*` variables), and the
//! Prometheus recorder behind the admin port's `/metrics` ([`metrics`]).
//!
//! Traces are off unless an OTLP endpoint is configured. Then no OpenTelemetry layer is installed at
//! all, so an untraced process pays nothing for it beyond the `tracing` spans its logs already use.
//! When they are on, spans leave through a batch processor (never on the request path) and
//! [`TelemetryGuard`] flushes what is queued when the process ends.
//!
//! Both `tracing`'s subscriber and the `metrics` recorder are process-wide and can be installed only
//! once: the test suite therefore runs the tests that install them in child processes of their own.

pub(crate) mod call;
mod gate;
mod json;
pub mod metrics;
pub mod otlp;
pub(crate) mod propagation;
pub(crate) mod sampling;
mod text;

use anyhow::Context as _;
use gate::{Gate, Noted};
use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use std::time::Duration;
use tracing::{Level, level_filters::LevelFilter};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{self, FilterExt, Targets},
    fmt,
    prelude::*,
};

/// The service name used when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub(crate) const SERVICE_NAME: &str = "suppressd";

/// How long shutdown waits for the last spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Flushes and shuts the trace pipeline down when dropped; hold it until the process ends. Drop it
/// inside a multi-threaded Tokio runtime (as `main` does): the exporter's connection lives there.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported (an OTLP endpoint is configured).
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            // The subscriber may already be gone; standard error is all that is left.
            eprintln!("suppressd: flushing traces at shutdown failed: {e}");
        }
    }
}

/// How log lines are written on standard error (`serve --log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line per event.
    Text,
    /// For log pipelines: one JSON object per line, with trace and span ids.
    Json,
}

/// What the logs take: what `RUST_LOG` (`env`) enables, but no span that stands for one command to
/// Redis or the store (`EVALSHA`, `INSERT suppressions`, …: those with a `db.system`). Those are a
/// trace's parts: as log context they would name only what the line's own call (`rpc{…}`) or
/// operation already says, and every opt-out built one (and its write-behind batch two more), their
/// fields formatted, for lines it seldom logs. Left to the traces, they are not created at all when
/// no trace wants them ([`gate`]).
fn for_logs<S>(env: EnvFilter) -> impl tracing_subscriber::layer::Filter<S> {
    let not_a_command = |meta: &tracing::Metadata<'_>| {
        !(meta.is_span() && meta.fields().field("db.system").is_some())
    };
    // With a hint that says nothing: an `And` of filters without one has none, and the
    // subscriber's would then let every `debug!` and `trace!` of every crate be asked for.
    env.and(filter::filter_fn(not_a_command).with_max_level_hint(LevelFilter::TRACE))
}

/// Installs the process-wide subscriber: logs always, OpenTelemetry export when configured. Fails if
/// a subscriber is already installed or the OTLP exporter cannot be built. Call it inside the Tokio
/// runtime: the exporter's channel is created on it.
pub fn init(format: LogFormat) -> anyhow::Result<TelemetryGuard> {
    let provider = tracing_configured().then(tracer_provider).transpose()?;
    if provider.is_some() {
        sampling::install(sampling::HeadSampler::from_env().map_err(anyhow::Error::msg)?);
    }
    let logs =
        for_logs(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let log_layer = match format {
        LogFormat::Text => fmt::layer()
            .event_format(text::WithCall::default())
            .with_writer(std::io::stderr)
            // Colours for a person at a terminal only: a file or a pipe gets plain text, as does
            // anyone who asks for it with NO_COLOR (https://no-color.org).
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            )
            .with_filter(Noted(logs))
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .event_format(json::WithTraceIds::default())
            .with_writer(std::io::stderr)
            .with_filter(Noted(logs))
            .boxed(),
    };

    let trace_layer = provider.as_ref().map(|provider| {
        // Only this crate's spans are exported; RUST_LOG governs logs, the sampler governs traces,
        // and the spans of the libraries below (h2, sqlx, redis) would only add noise and cost.
        // A call's server span is built directly ([`call`]).
        let ours = Targets::new().with_target(env!("CARGO_CRATE_NAME"), Level::INFO);
        let tracer = provider.tracer(SERVICE_NAME);
        call::install(tracer.clone());
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Per-span extras that cost clock reads, allocations or a context push on every
            // poll of every span, sampled or not, and that no one reads here: a span finds its
            // parent through the registry (or, under a call's server span, in the context the call
            // attaches), propagation reads the layer's own span data, and code locations, threads
            // and busy/idle times are noise in an RPC trace.
            .with_context_activation(false)
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .and_then(call::CallEvents)
            .with_filter(Noted(ours.and(sampling::HeadSampling)))
    });

    // Every per-layer filter above is `Noted`, and the gate sits on the registry, below them all:
    // a span that neither logs nor traces want (an unsampled call's) is then never created.
    tracing_subscriber::registry()
        .with(Gate)
        .with(log_layer)
        .with(trace_layer)
        .try_init()
        .context("installing the tracing subscriber")?;
    Ok(TelemetryGuard { provider })
}

/// Whether the standard variables ask for trace export: an OTLP endpoint (general or for traces)
/// is set, the SDK is not disabled, and the traces exporter is not `none`.
fn tracing_configured() -> bool {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return false;
    }
    var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
}

/// The OTLP/gRPC exporter ([`otlp`], configured by `OTEL_EXPORTER_OTLP_*`) behind the SDK's batch
/// processor, which reads its settings from `OTEL_BSP_*`. Its sampler records every span it is
/// given: the sampler the variables name has already decided, at the head of each trace
/// ([`sampling`]).
fn tracer_provider() -> anyhow::Result<SdkTracerProvider> {
    let config = otlp::ExportConfig::from_vars(|name| std::env::var(name).ok())
        .map_err(anyhow::Error::msg)
        .context("configuring the OTLP span exporter")?;
    let exporter = otlp::OtlpExporter::new(&config)
        .map_err(anyhow::Error::msg)
        .context("building the OTLP span exporter")?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_resource(resource())
        .build())
}

/// `service.name` and `service.version` of this binary, overridden by whatever
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` say.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let defaults = [
        KeyValue::new("service.name", SERVICE_NAME),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ];
    // Without OTEL_SERVICE_NAME the SDK says `unknown_service…`; ours is a better default.
    let chosen = detected.iter().filter(|(key, value)| {
        !(key.as_str() == "service.name" && value.as_str().starts_with("unknown_service"))
    });
    Resource::builder_empty()
        .with_attributes(defaults)
        .with_attributes(chosen.map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Subscriber;
    use tracing_subscriber::layer::Identity;

    #[test]
    fn spans_that_stand_for_one_database_command_are_not_created_for_logs() {
        let logs = tracing_subscriber::registry()
            .with(Gate)
            .with(Identity::new().with_filter(Noted(for_logs(EnvFilter::new("info")))));
        // Only what `RUST_LOG` asks for is ever asked of the logs' filter.
        assert_eq!(logs.max_level_hint(), Some(LevelFilter::INFO));
        tracing::subscriber::with_default(logs, || {
            assert!(
                tracing::info_span!("EVALSHA", otel.kind = "client", db.system = "redis")
                    .is_disabled()
            );
            // Operations stay: a write-behind batch, a request to the HTTP front, a rebuild.
            let batch = tracing::info_span!("writebehind.commit", otel.kind = "consumer");
            assert!(!batch.is_disabled());
            assert!(!tracing::info_span!("inbound", otel.kind = "server").is_disabled());
            assert!(!tracing::info_span!("cache.rebuild").is_disabled());
            assert!(tracing::debug_span!("cache.detail").is_disabled());
        });
    }
}
