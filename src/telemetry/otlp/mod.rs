//! The OTLP/gRPC span exporter: each batch the SDK's batch processor hands over is written straight
//! into the protobuf bytes of one `ExportTraceServiceRequest` and sent as `TraceService/Export`.
//!
//! Why not `opentelemetry-otlp`'s exporter: with every call traced, it was most of what tracing
//! cost the server (profiled under the benchmark's always-on load: 12 % of the server's CPU in
//! encoding the request, 7 % more on the export thread). It clones the whole batch on every
//! attempt, converts each span into the generated message types (another copy of every string),
//! and prost then computes each nested message's length once per level it is nested in, into a
//! buffer that grows by doubling (and faults in fresh pages each time). Here a batch is encoded
//! once, in one pass, into a buffer kept between exports; a retry resends the same bytes.
//! `bench/examples/otlp_encode.rs` measures both side by side; the encoder's tests check, field by
//! field, that the bytes decode to exactly what the reference conversion (`opentelemetry-proto`'s)
//! builds.
//!
//! Configuration follows the OTLP exporter specification's variables, the per-signal one first:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` (default
//! `http://localhost:4317`), `…_HEADERS` (`key=value,…`, values percent-decoded) and `…_TIMEOUT`
//! (milliseconds, default 10 000). What it does not support (TLS to the collector, compression, a
//! protocol other than gRPC) it refuses by name at start rather than ignore.
//!
//! `settings` reads the variables, `encoder` writes a batch's bytes (through `wire`'s protobuf
//! writer), and `transport` owns the exporter the SDK calls and the gRPC call that sends them.

mod encoder;
#[cfg(test)]
mod fixtures;
mod settings;
mod transport;
mod wire;

pub use encoder::encode;
pub(crate) use settings::ExportConfig;
pub(crate) use transport::OtlpExporter;
