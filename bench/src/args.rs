//! The flags of `suppressd bench`, named and defaulted as ghz names them, so that a ghz command line
//! for this service runs here unchanged (ghz's `--skipTLS` aside: certificates are always verified),
//! and ghz's configuration files (`--config`, JSON or TOML, ghz's keys): the file's settings come
//! first and flags on the command line override them, as in ghz.

use clap::{Args, Parser, ValueEnum};
use std::{path::PathBuf, time::Duration};

#[derive(Args, Clone, Debug)]
pub struct BenchSettings {
    /// Host and port of the server, as ghz takes it: `127.0.0.1:50051` (or `host` in --config).
    pub host: Option<String>,

    /// The host from a --config file; the positional HOST wins over it.
    #[arg(long = "host", hide = true)]
    pub config_host: Option<String>,

    /// Fully-qualified method, any RPC of the service: `suppress.v1.Suppression.CheckSuppressed`
    /// (or `…Suppression/CheckSuppressed`).
    #[arg(long)]
    pub call: Option<String>,

    /// A ghz configuration file (JSON, or TOML by its `.toml` extension) with ghz's keys (`call`,
    /// `host`, `total`, `concurrency`, `data`, `metadata`, `metadata-file`, …). Flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,

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

    /// A file holding the request metadata (a JSON object of strings), as ghz's `-M`. `-m` wins.
    #[arg(short = 'M', long = "metadata-file")]
    pub metadata_file: Option<PathBuf>,

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
        #[command(args_override_self = true)]
        struct Only {
            #[command(flatten)]
            bench: BenchSettings,
        }
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let args = expand_config(args, 0).map_err(|e| {
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n"))
        })?;
        let argv = std::iter::once(std::ffi::OsString::from("bench")).chain(args);
        Only::try_parse_from(argv).map(|o| o.bench)
    }

    /// The server's host:port: the positional HOST, else the config file's `host`.
    pub fn host(&self) -> anyhow::Result<&str> {
        self.host
            .as_deref()
            .or(self.config_host.as_deref())
            .ok_or_else(|| {
                anyhow::anyhow!("no server: give HOST (host:port) or `host` in --config")
            })
    }

    /// The method to call, from --call or the config file.
    pub fn call(&self) -> anyhow::Result<&str> {
        self.call
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("no method: give --call or `call` in --config"))
    }

    /// The metadata template: `-m`, else the contents of `-M FILE`.
    pub fn metadata_text(&self) -> anyhow::Result<Option<String>> {
        match (&self.metadata, &self.metadata_file) {
            (Some(text), _) => Ok(Some(text.clone())),
            (None, Some(path)) => std::fs::read_to_string(path).map(Some).map_err(|e| {
                anyhow::anyhow!(
                    "reading --metadata-file {}: {e} (deploy/ghz's configurations name \
                         deploy/ghz/metadata.json: deploy/ghz/write-metadata writes it)",
                    path.display()
                )
            }),
            (None, None) => Ok(None),
        }
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

/// Replaces `--config FILE` (or `--config=FILE`) in `args` by the flags the file stands for, put at
/// `at` (before every other flag, so that those override it: the command sets
/// `args_override_self`). Without `--config`, returns `args` unchanged.
pub fn expand_config(
    mut args: Vec<std::ffi::OsString>,
    at: usize,
) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let Some(i) = args
        .iter()
        .position(|a| a == "--config" || a.to_string_lossy().starts_with("--config="))
    else {
        return Ok(args);
    };
    let path = match args[i].to_string_lossy().strip_prefix("--config=") {
        Some(p) => {
            let p = PathBuf::from(p);
            args.remove(i);
            p
        }
        None => {
            anyhow::ensure!(i + 1 < args.len(), "--config needs a file");
            let p = PathBuf::from(args.remove(i + 1));
            args.remove(i);
            p
        }
    };
    let flags = config_flags(&path)?;
    args.splice(
        at.min(args.len())..at.min(args.len()),
        flags.into_iter().map(Into::into),
    );
    Ok(args)
}

/// The flags a ghz configuration file stands for. Keys that concern only ghz's own way of finding
/// the service (`proto`, `protoset`, `import-paths`, `reflect-metadata`) are ignored: the service's
/// descriptors are built in. Any other key this tool does not know is an error that names it.
pub fn config_flags(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading --config {}: {e}", path.display()))?;
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    let config: serde_json::Value = if is_toml {
        let value: toml::Value = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        serde_json::to_value(value)?
    } else {
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--config {}: not JSON: {e}", path.display()))?
    };
    let serde_json::Value::Object(map) = config else {
        anyhow::bail!(
            "--config {}: must be an object of ghz settings",
            path.display()
        );
    };
    let bad = |key: &str, what: &str| {
        anyhow::anyhow!("--config {}: `{key}` must be {what}", path.display())
    };
    let mut flags = Vec::new();
    for (key, value) in &map {
        let scalar = || -> anyhow::Result<String> {
            match value {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                _ => Err(bad(key, "a string or a number")),
            }
        };
        let flag = match key.as_str() {
            "proto" | "protoset" | "import-paths" | "reflect-metadata" => continue,
            "call" => "--call",
            "host" => "--host",
            "total" => "-n",
            "concurrency" => "-c",
            "connections" => "--connections",
            "rps" => "--rps",
            "duration" => "-z",
            "timeout" => "-t",
            "connect-timeout" => "--connect-timeout",
            "cacert" => "--cacert",
            "cert" => "--cert",
            "key" => "--key",
            "cname" => "--cname",
            "format" => "-O",
            "output" => "-o",
            "name" => "--name",
            "metadata-file" => "--metadata-file",
            "insecure" | "skipTLS" => {
                match value {
                    serde_json::Value::Bool(true) => flags.push(format!("--{key}")),
                    serde_json::Value::Bool(false) => {}
                    _ => return Err(bad(key, "true or false")),
                }
                continue;
            }
            "data" => {
                flags.extend(["-d".to_owned(), value.to_string()]);
                continue;
            }
            "data-file" => {
                flags.extend(["-d".to_owned(), format!("@{}", scalar()?)]);
                continue;
            }
            "metadata" => {
                if !value.is_object() {
                    return Err(bad(key, "an object of strings"));
                }
                flags.extend(["-m".to_owned(), value.to_string()]);
                continue;
            }
            other => anyhow::bail!(
                "--config {}: `{other}` is not a ghz setting this tool supports",
                path.display()
            ),
        };
        flags.extend([flag.to_owned(), scalar()?]);
    }
    Ok(flags)
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
