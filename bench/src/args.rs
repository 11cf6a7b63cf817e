//! The flags of `suppressd bench`, named and defaulted as ghz names them, so that a ghz command line
//! for this service runs here unchanged (ghz's `--skipTLS` aside: certificates are always verified).

use clap::{Args, Parser, ValueEnum};
use std::{path::PathBuf, time::Duration};

#[derive(Args, Clone, Debug)]
pub struct BenchSettings {
    /// Host and port of the server, as ghz takes it: `127.0.0.1:50051`.
    pub host: String,

    /// Fully-qualified method: `suppress.v1.Suppression.CheckSuppressed` (or `…Suppression/CheckSuppressed`).
    #[arg(long)]
    pub call: String,

    /// Number of requests in flight at once (workers).
    #[arg(short = 'c', long, default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// Number of HTTP/2 connections the workers share (worker i uses connection i mod connections).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,

    /// Number of requests to send. Ignored when --duration is given (as in ghz).
    #[arg(short = 'n', long, default_value_t = 200)]
    pub total: u64,

    /// Send for this long (`10s`, `1m30s`, `500ms`), then let in-flight calls finish.
    #[arg(short = 'z', long, value_parser = parse_go_duration)]
    pub duration: Option<Duration>,

    /// Open loop: start requests at this constant rate, whatever the answers' speed. Latency is then
    /// also reported from each request's intended start time (`openLoop` in the JSON report).
    #[arg(long)]
    pub rps: Option<f64>,

    /// Request as JSON (proto3 JSON names, enums by name or number), with ghz-style templates. A JSON
    /// array is used round-robin, one element per request. `@FILE` reads it from a file.
    #[arg(short = 'd', long)]
    pub data: Option<String>,

    /// Request metadata as a JSON object of strings; templates allowed.
    #[arg(short = 'm', long)]
    pub metadata: Option<String>,

    /// Plaintext HTTP/2. Without it the connection is TLS, verified against `--cacert`.
    #[arg(long, conflicts_with_all = ["cacert", "cert", "key", "cname"])]
    pub insecure: bool,

    /// PEM file of the CA certificate(s) that sign the server's certificate (TLS).
    #[arg(long)]
    pub cacert: Option<PathBuf>,

    /// PEM file of a client certificate to present (mutual TLS); needs `--key`.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,

    /// PEM file of the client certificate's private key; needs `--cert`.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,

    /// The server name to verify the certificate against, when it is not the host's.
    #[arg(long)]
    pub cname: Option<String>,

    /// ghz's "skip certificate verification". Refused: a load test that trusts any certificate
    /// measures a connection no client of this service would make.
    #[arg(long = "skipTLS", hide = true)]
    pub skip_tls: bool,

    /// Deadline of each call; a call past it counts as DeadlineExceeded.
    #[arg(short = 't', long, default_value = "20s", value_parser = parse_go_duration)]
    pub timeout: Duration,

    /// How long to wait for each connection.
    #[arg(long = "connect-timeout", default_value = "10s", value_parser = parse_go_duration)]
    pub connect_timeout: Duration,

    /// Output format: ghz's `summary`, or its JSON report (`json`, `pretty` = indented JSON).
    #[arg(short = 'O', long = "format", value_enum, default_value_t = Format::Summary)]
    pub format: Format,

    /// Write the report to this file instead of standard output.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,

    /// A name for the run, printed in the report.
    #[arg(long)]
    pub name: Option<String>,

    /// Most per-call entries kept in the JSON report's `details` (ghz keeps all; percentiles here come
    /// from HDR histograms over every call, whatever this limit).
    #[arg(long, default_value_t = 10_000)]
    pub max_details: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Summary,
    Json,
    Pretty,
}

impl BenchSettings {
    /// Parses settings from a command line (without the program name), e.g. in tests and in the
    /// benchmark suite: `BenchSettings::from_args(["--call", "…", "-n", "10", "--insecure", host])`.
    pub fn from_args<I, S>(args: I) -> Result<BenchSettings, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            bench: BenchSettings,
        }
        let argv = std::iter::once(std::ffi::OsString::from("bench"))
            .chain(args.into_iter().map(Into::into));
        Only::try_parse_from(argv).map(|o| o.bench)
    }

    /// The request data, read from the file when given as `@FILE`.
    pub fn data_text(&self) -> anyhow::Result<Option<String>> {
        match self.data.as_deref() {
            Some(path) if path.starts_with('@') => {
                let text = std::fs::read_to_string(&path[1..])
                    .map_err(|e| anyhow::anyhow!("reading --data {path}: {e}"))?;
                Ok(Some(text))
            }
            other => Ok(other.map(str::to_owned)),
        }
    }
}

/// Parses a Go duration (`300ms`, `1.5s`, `2m`, `1h30m`), the form ghz and its configs use.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 10s, 500ms or 1m30s");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("10x").is_err());
    }

    #[test]
    fn ghz_command_lines_parse() {
        let s = BenchSettings::from_args([
            "--call",
            "suppress.v1.Suppression.CheckSuppressed",
            "-c",
            "8",
            "-z",
            "2s",
            "--insecure",
            "-O",
            "json",
            "127.0.0.1:50051",
        ])
        .unwrap();
        assert_eq!(s.concurrency, 8);
        assert_eq!(s.duration, Some(Duration::from_secs(2)));
        assert_eq!(s.format, Format::Json);
    }
}
