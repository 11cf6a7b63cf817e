//! How the suite drives the load generator: one [`Load`] describes a workload, [`Ctx::load`] runs it
//! against one address with the same client settings for the server and its baseline, records the
//! ghz report, and notes failed calls (a benchmark with failures is not a clean result).

use super::table::SuiteReport;
use crate::{BenchSettings, Report};
use std::{net::SocketAddr, time::Duration};
use tokio_util::sync::CancellationToken;

/// One workload.
#[derive(Clone, Copy)]
pub struct Load<'a> {
    /// The RPC's method name in `suppress.v1.Suppression`: `CheckSuppressed`.
    pub call: &'static str,
    /// `--data`: a JSON array of requests, used round-robin.
    pub data: &'a str,
    pub concurrency: u32,
    pub connections: u32,
    pub duration: Duration,
    /// Open loop at this rate, or closed loop.
    pub rps: Option<f64>,
}

pub struct Ctx {
    pub report: SuiteReport,
}

impl Ctx {
    /// Runs `load` against `addr`; the report is kept under `name`.
    pub async fn load(
        &mut self,
        name: &str,
        addr: SocketAddr,
        load: Load<'_>,
    ) -> anyhow::Result<Report> {
        let mut args = vec![
            "--call".to_owned(),
            format!("suppress.v1.Suppression.{}", load.call),
            "-c".into(),
            load.concurrency.to_string(),
            "--connections".into(),
            load.connections.min(load.concurrency).to_string(),
            "-z".into(),
            format!("{}ms", load.duration.as_millis().max(1)),
            "-d".into(),
            load.data.to_owned(),
            "--insecure".into(),
            "--max-details".into(),
            "0".into(),
            "--name".into(),
            name.to_owned(),
        ];
        if let Some(rps) = load.rps {
            args.extend(["--rps".into(), format!("{rps:.0}")]);
        }
        args.push(addr.to_string());
        let settings = BenchSettings::from_args(args)?;
        let mut report = crate::run(&settings, CancellationToken::new()).await?;
        // The data arrays are large and identical across runs: keep the JSON report readable.
        report.options.data = None;
        let ok = ok_count(&report);
        if ok < report.count {
            let msg = format!(
                "{name}: {} of {} calls failed: {:?}",
                report.count - ok,
                report.count,
                report.error_distribution
            );
            eprintln!("warning: {msg}");
            self.report.warnings.push(msg);
        }
        eprintln!("  {name}: {} calls, {:.0}/s", report.count, report.rps);
        self.report.runs.insert(name.to_owned(), report.clone());
        Ok(report)
    }
}

pub fn ok_count(r: &Report) -> u64 {
    r.status_code_distribution.get("OK").copied().unwrap_or(0)
}

/// Successful calls per second.
pub fn ok_rps(r: &Report) -> f64 {
    ok_count(r) as f64 / (r.total as f64 / 1e9).max(1e-9)
}

pub fn p(r: &Report, percentile: u32) -> u64 {
    r.percentile(percentile).unwrap_or(0)
}

/// p99 from intended start times (open loop runs).
pub fn intended_p99(r: &Report) -> u64 {
    r.open_loop
        .as_ref()
        .and_then(|o| o.latency_distribution.iter().find(|l| l.percentage == 99))
        .map_or(0, |l| l.latency)
}

pub fn us(ns: u64) -> String {
    format!("{:.0} µs", ns as f64 / 1e3)
}

pub fn ms(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}

/// CPU time per call, in microseconds.
pub fn cpu_per_call(cpu: Duration, calls: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / calls.max(1) as f64
}
