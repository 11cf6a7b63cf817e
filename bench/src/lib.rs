//! Load testing and the benchmark of SPEC §8.
//!
//! - `suppressd-bench load` ([`args`], [`runner`], [`report`]): a gRPC load generator in the manner of ghz,
//!   with ghz's flags, configuration files and its summary and JSON report formats, for every RPC
//!   of `suppress.v1.Suppression` by reflection ([`request`]), with ghz-style templates in the
//!   request data ([`template`]) and HDR histograms over every call ([`stats`]).
//! - `suppressd-bench baseline` ([`baseline`]): empty handlers on the same proto, the yardstick.
//! - `suppressd-bench suite` ([`suite`]): starts what it needs and measures every row of SPEC §8 next
//!   to its baseline, in one run.
//!
//! Nothing here is used by the service; it is a client of the service like any other. The
//! binary (`src/main.rs`) adds `serve-unaudited`, the service without its audit log.

pub mod args;
pub mod baseline;
pub mod report;
pub mod request;
pub mod runner;
pub mod stats;
pub mod suite;
pub mod template;

pub use args::{BenchSettings, Format};
pub use report::Report;
pub use runner::run;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// `suppressd-bench load`: runs the load test (Ctrl-C ends it early, with a report) and prints the report.
pub async fn main(settings: BenchSettings) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let report = run(&settings, cancel).await?;
    let text = match settings.format {
        Format::Summary => report.summary(),
        Format::Json => serde_json::to_string(&report)?,
        Format::Pretty => serde_json::to_string_pretty(&report)?,
    };
    match &settings.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("writing the report to {}", path.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}
