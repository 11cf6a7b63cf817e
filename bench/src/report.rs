//! ghz's report, field for field: the JSON report (`-O json`) with the same names and nanosecond
//! durations, and the `summary` text. Tools that read ghz reports read these. One addition, ignored by
//! such tools: `openLoop`, the latencies measured from each request's intended start under `--rps`.

use super::stats::{Detail, Latencies, Tally};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fmt::Write,
    time::{Duration, SystemTime},
};

/// The percentiles ghz reports.
pub const PERCENTILES: [u32; 7] = [10, 25, 50, 75, 90, 95, 99];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    /// Every request of `-n` was sent and answered.
    Normal,
    /// Stopped by the user (Ctrl-C).
    Cancel,
    /// The `-z` duration ran out.
    Timeout,
}

/// The run's options, as ghz echoes them in its report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Options {
    pub host: String,
    pub call: String,
    pub insecure: bool,
    pub total: u64,
    pub concurrency: u32,
    pub connections: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rps: Option<f64>,
    /// Nanoseconds; 0 when the run was bounded by `total`.
    pub duration: u64,
    pub timeout: u64,
    #[serde(rename = "dial-timeout")]
    pub dial_timeout: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    pub binary: bool,
    #[serde(rename = "CPUs")]
    pub cpus: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LatencyPoint {
    pub percentage: u32,
    /// Nanoseconds.
    pub latency: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    /// Upper bound of the bucket, in seconds.
    pub mark: f64,
    pub count: u64,
    /// Share of the successful calls in this bucket (0–1).
    pub frequency: f64,
}

/// Latencies from intended start times (`--rps` only): what a caller arriving on schedule waited,
/// queueing in the client included (coordinated omission corrected). Includes the client timer's
/// granularity (about 1 ms).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OpenLoop {
    pub rps: f64,
    pub average: u64,
    pub fastest: u64,
    pub slowest: u64,
    pub latency_distribution: Vec<LatencyPoint>,
}

/// ghz's JSON report. Durations are nanoseconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub end_reason: EndReason,
    pub options: Options,
    pub date: String,
    pub count: u64,
    pub total: u64,
    pub average: u64,
    pub fastest: u64,
    pub slowest: u64,
    pub rps: f64,
    pub error_distribution: BTreeMap<String, u64>,
    pub status_code_distribution: BTreeMap<String, u64>,
    /// Over successful calls only, as in ghz; `null` when none succeeded.
    pub latency_distribution: Option<Vec<LatencyPoint>>,
    pub histogram: Option<Vec<Bucket>>,
    pub details: Vec<Detail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoop>,
}

impl Report {
    pub fn build(
        tally: Tally,
        options: Options,
        end_reason: EndReason,
        total: Duration,
        date: String,
    ) -> Report {
        let ok = &tally.ok;
        let average = if tally.count > 0 {
            (tally.sum_ns / u128::from(tally.count)) as u64
        } else {
            0
        };
        let open_loop = options
            .rps
            .filter(|_| !tally.ok_from_intended.is_empty())
            .map(|rps| {
                let h = &tally.ok_from_intended;
                OpenLoop {
                    rps,
                    average: h.histogram.mean() as u64,
                    fastest: h.fastest,
                    slowest: h.slowest,
                    latency_distribution: distribution(h),
                }
            });
        Report {
            name: options.name.clone(),
            end_reason,
            date,
            count: tally.count,
            total: total.as_nanos() as u64,
            average,
            fastest: if ok.is_empty() { 0 } else { ok.fastest },
            slowest: ok.slowest,
            rps: if total.is_zero() {
                0.0
            } else {
                tally.count as f64 / total.as_secs_f64()
            },
            error_distribution: tally.errors,
            status_code_distribution: tally.statuses,
            latency_distribution: (!ok.is_empty()).then(|| distribution(ok)),
            histogram: (!ok.is_empty()).then(|| histogram(ok)),
            details: tally.details,
            open_loop,
            options,
        }
    }

    /// The percentile `p` of the successful calls' latency distribution, if reported.
    pub fn percentile(&self, p: u32) -> Option<u64> {
        let points = self.latency_distribution.as_ref()?;
        points.iter().find(|l| l.percentage == p).map(|l| l.latency)
    }

    /// ghz's `summary` output.
    pub fn summary(&self) -> String {
        let mut s = String::from("\nSummary:\n");
        if let Some(name) = &self.name {
            let _ = writeln!(s, "  Name:\t\t{name}");
        }
        let _ = writeln!(s, "  Count:\t{}", self.count);
        let _ = writeln!(s, "  Total:\t{}", nano_unit(self.total));
        let _ = writeln!(s, "  Slowest:\t{}", nano_unit(self.slowest));
        let _ = writeln!(s, "  Fastest:\t{}", nano_unit(self.fastest));
        let _ = writeln!(s, "  Average:\t{}", nano_unit(self.average));
        let _ = writeln!(s, "  Requests/sec:\t{:.2}", self.rps);
        s.push_str("\nResponse time histogram:\n");
        s.push_str(&histogram_text(self.histogram.as_deref().unwrap_or(&[])));
        s.push_str("\nLatency distribution:");
        for l in self.latency_distribution.iter().flatten() {
            let _ = write!(s, "\n  {} % in {} ", l.percentage, nano_unit(l.latency));
        }
        s.push_str("\n\n");
        if let Some(open) = &self.open_loop {
            let _ = write!(
                s,
                "Latency from intended start (open loop at {} rps):",
                open.rps
            );
            for l in &open.latency_distribution {
                let _ = write!(s, "\n  {} % in {} ", l.percentage, nano_unit(l.latency));
            }
            s.push_str("\n\n");
        }
        if !self.status_code_distribution.is_empty() {
            s.push_str("Status code distribution:\n");
            let rows = self
                .status_code_distribution
                .iter()
                .map(|(code, n)| (format!("  [{code}]"), format!("{n} responses")));
            s.push_str(&table(rows.collect()));
        }
        s.push('\n');
        if !self.error_distribution.is_empty() {
            s.push_str("Error distribution:\n");
            let rows = self
                .error_distribution
                .iter()
                .map(|(error, n)| (format!("  [{n}]"), error.clone()));
            s.push_str(&table(rows.collect()));
        }
        s.push('\n');
        s
    }
}

/// Now, in RFC 3339 to the second, as ghz writes a report's `date`.
pub fn now_rfc3339() -> String {
    let seconds = prost_types::Timestamp::from(SystemTime::now()).seconds;
    prost_types::Timestamp { seconds, nanos: 0 }.to_string()
}

fn distribution(l: &Latencies) -> Vec<LatencyPoint> {
    PERCENTILES
        .iter()
        .map(|&p| LatencyPoint {
            percentage: p,
            latency: l.percentile(f64::from(p)),
        })
        .collect()
}

/// ghz's histogram: 11 marks evenly spaced from the fastest to the slowest call; each successful call
/// counts in the first bucket whose mark is at or above it.
fn histogram(l: &Latencies) -> Vec<Bucket> {
    const BUCKETS: usize = 10;
    let (fastest, slowest) = (l.fastest as f64, l.slowest as f64);
    let step = (slowest - fastest) / BUCKETS as f64;
    let marks: Vec<f64> = (0..BUCKETS)
        .map(|i| fastest + step * i as f64)
        .chain([slowest])
        .collect();
    let mut counts = vec![0u64; marks.len()];
    for v in l.histogram.iter_recorded() {
        let ns =
            (l.histogram.lowest_equivalent(v.value_iterated_to()) as f64).clamp(fastest, slowest);
        let i = marks.iter().position(|&m| ns <= m).unwrap_or(BUCKETS);
        counts[i] += v.count_at_value();
    }
    let total = l.histogram.len().max(1) as f64;
    marks
        .into_iter()
        .zip(counts)
        .map(|(mark, count)| Bucket {
            mark: mark / 1e9,
            count,
            frequency: count as f64 / total,
        })
        .collect()
}

/// ghz's `formatNanoUnit`.
fn nano_unit(ns: u64) -> String {
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000_000 {
        format!("{:4.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:4.2} s", ns as f64 / 1e9)
    }
}

fn histogram_text(buckets: &[Bucket]) -> String {
    let mark = |b: &Bucket| format!("{:.3}", b.mark * 1000.0);
    let mark_width = buckets.iter().map(|b| mark(b).len()).max().unwrap_or(0);
    let max_count = buckets.iter().map(|b| b.count).max().unwrap_or(0);
    let count_width = max_count.to_string().len();
    let mut s = String::new();
    for b in buckets {
        let bar = (b.count * 40 + max_count / 2)
            .checked_div(max_count)
            .unwrap_or(0);
        let (m, c) = (mark(b), b.count.to_string());
        let _ = writeln!(
            s,
            "  {m}{} [{c}]{} |{}",
            " ".repeat(mark_width - m.len()),
            " ".repeat(count_width - c.len()),
            "∎".repeat(bar as usize)
        );
    }
    s
}

/// Two columns padded as Go's tabwriter pads them in ghz (padding 3, cells ended by a tab).
fn table(rows: Vec<(String, String)>) -> String {
    let w1 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0) + 3;
    let w2 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0) + 3;
    rows.into_iter()
        .map(|(a, b)| format!("{a:<w1$}{b:<w2$}\n"))
        .collect()
}
