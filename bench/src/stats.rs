//! What the workers count: each worker keeps a [`Tally`] of its own (no locks on the hot path), and the
//! tallies are merged when the run ends. Latencies go into HDR histograms (3 significant digits) over
//! every call, so percentiles hold for runs of any length.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use tonic::Code;

/// One call as a report's `details` lists it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Detail {
    /// RFC 3339 with nanoseconds, as Go marshals a `time.Time`.
    pub timestamp: String,
    /// Nanoseconds.
    pub latency: u64,
    pub error: String,
    pub status: String,
}

/// Latencies of the calls that succeeded, in nanoseconds, with exact extremes (the histogram's are
/// rounded to its precision).
pub struct Latencies {
    pub histogram: Histogram<u64>,
    pub fastest: u64,
    pub slowest: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            histogram: Histogram::new(3).expect("3 significant digits is a valid precision"),
            fastest: u64::MAX,
            slowest: 0,
        }
    }
}

impl Latencies {
    pub fn record(&mut self, ns: u64) {
        let ns = ns.max(1);
        // An auto-resizing histogram accepts any value; the error case cannot happen.
        let _ = self.histogram.record(ns);
        self.fastest = self.fastest.min(ns);
        self.slowest = self.slowest.max(ns);
    }

    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.histogram.add(&other.histogram);
        self.fastest = self.fastest.min(other.fastest);
        self.slowest = self.slowest.max(other.slowest);
    }

    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// The latency at a percentile (0–100), kept within the exact extremes.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.is_empty() {
            return 0;
        }
        let v = self.histogram.value_at_quantile(p / 100.0);
        v.clamp(self.fastest, self.slowest)
    }
}

/// Everything one worker saw.
#[derive(Default)]
pub struct Tally {
    pub count: u64,
    /// Sum of the service times of all calls, errors included (ghz's `average` is over all calls).
    pub sum_ns: u128,
    /// Service time of each successful call: from sending it to its answer.
    pub ok: Latencies,
    /// Open loop only: time from each successful call's intended start to its answer.
    pub ok_from_intended: Latencies,
    pub statuses: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub details: Vec<Detail>,
}

/// How one call ended.
pub struct Outcome {
    pub started: SystemTime,
    pub service: Duration,
    pub from_intended: Option<Duration>,
    pub result: Result<(), tonic::Status>,
}

impl Tally {
    pub fn record(&mut self, o: Outcome, keep_detail: bool) {
        let ns = o.service.as_nanos() as u64;
        self.count += 1;
        self.sum_ns += u128::from(ns);
        let (status, error) = match &o.result {
            Ok(()) => {
                self.ok.record(ns);
                if let Some(d) = o.from_intended {
                    self.ok_from_intended.record(d.as_nanos() as u64);
                }
                (status_name(Code::Ok), String::new())
            }
            Err(s) => {
                let error = go_error(s);
                *self.errors.entry(error.clone()).or_default() += 1;
                (status_name(s.code()), error)
            }
        };
        *self.statuses.entry(status.to_owned()).or_default() += 1;
        if keep_detail {
            self.details.push(Detail {
                timestamp: prost_types::Timestamp::from(o.started).to_string(),
                latency: ns,
                error,
                status: status.to_owned(),
            });
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.ok.merge(&other.ok);
        self.ok_from_intended.merge(&other.ok_from_intended);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.details.extend(other.details);
    }
}

/// The name grpc-go gives a status code, which is what ghz reports.
pub fn status_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A failed call's error as grpc-go prints it, the key of ghz's `errorDistribution`.
pub fn go_error(s: &tonic::Status) -> String {
    format!(
        "rpc error: code = {} desc = {}",
        status_name(s.code()),
        s.message()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_stay_within_the_extremes() {
        let mut l = Latencies::default();
        for ns in [1_000, 2_000, 3_000, 1_000_000] {
            l.record(ns);
        }
        assert_eq!(l.percentile(0.0), 1_000);
        assert_eq!(l.percentile(100.0), 1_000_000);
        assert!(l.percentile(50.0) >= 2_000 && l.percentile(50.0) <= 2_002);
    }

    #[test]
    fn errors_read_as_grpc_go_prints_them() {
        let s = tonic::Status::invalid_argument("recipient.email: must contain one @");
        assert_eq!(
            go_error(&s),
            "rpc error: code = InvalidArgument desc = recipient.email: must contain one @"
        );
    }
}
