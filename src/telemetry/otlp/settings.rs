//! The exporter's settings, as the OTLP exporter specification's variables give them: the
//! per-signal one first. Reading them connects to nothing; what the exporter cannot do is refused
//! here, by the variable's name.

use std::time::Duration;

const DEFAULT_ENDPOINT: &str = "http://localhost:4317";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how spans are sent, as the `OTEL_EXPORTER_OTLP_*` variables say.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExportConfig {
    pub(crate) endpoint: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) timeout: Duration,
}

impl ExportConfig {
    /// Reads the configuration through `var` (the process environment in production).
    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<ExportConfig, String> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        // The per-signal variable wins over the general one.
        let either = |suffix: &str| {
            let traces = format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}");
            let general = format!("OTEL_EXPORTER_OTLP_{suffix}");
            var(&traces)
                .map(|v| (traces, v))
                .or_else(|| var(&general).map(|v| (general, v)))
        };
        if let Some((name, protocol)) = either("PROTOCOL")
            && protocol.trim() != "grpc"
        {
            return Err(format!(
                "{name}={protocol}: suppressd exports traces over OTLP/gRPC only (`grpc`)"
            ));
        }
        if let Some((name, compression)) = either("COMPRESSION")
            && compression.trim() != "none"
        {
            return Err(format!(
                "{name}={compression}: compressed export is not supported (`none` only)"
            ));
        }
        let endpoint = match either("ENDPOINT") {
            Some((name, endpoint)) => {
                let endpoint = endpoint.trim().to_owned();
                if endpoint.starts_with("https://") {
                    return Err(format!(
                        "{name}={endpoint}: TLS to the collector is not supported; send to a \
                         collector or agent on the host or its private network over http://"
                    ));
                }
                if !endpoint.starts_with("http://") {
                    return Err(format!(
                        "{name}={endpoint}: expected an http:// address, e.g. http://127.0.0.1:4317"
                    ));
                }
                endpoint
            }
            None => DEFAULT_ENDPOINT.to_owned(),
        };
        let headers = match either("HEADERS") {
            Some((name, list)) => parse_headers(&list).map_err(|e| format!("{name}: {e}"))?,
            None => Vec::new(),
        };
        let timeout = match either("TIMEOUT") {
            Some((name, ms)) => ms
                .trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{name}={ms}: expected milliseconds, e.g. 10000"))?,
            None => DEFAULT_TIMEOUT,
        };
        Ok(ExportConfig {
            endpoint,
            headers,
            timeout,
        })
    }
}

/// `key=value,key2=value2`, each part percent-decoded (the W3C baggage form the variables use).
fn parse_headers(list: &str) -> Result<Vec<(String, String)>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not key=value"))?;
            let decode = |s: &str| {
                percent_decode(s.trim()).ok_or_else(|| format!("`{pair}`: bad percent-encoding"))
            };
            Ok((decode(key)?.to_ascii_lowercase(), decode(value)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn the_configuration_reads_the_specifications_variables_per_signal_first() {
        assert_eq!(
            ExportConfig::from_vars(vars(&[])).unwrap(),
            ExportConfig {
                endpoint: "http://localhost:4317".into(),
                headers: vec![],
                timeout: Duration::from_secs(10),
            }
        );
        let config = ExportConfig::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "general=1"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "Authorization=Bearer%20abc, x-tenant = acme%2Cb",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
        ]))
        .unwrap();
        assert_eq!(
            config,
            ExportConfig {
                endpoint: "http://traces:4317".into(),
                headers: vec![
                    ("authorization".into(), "Bearer abc".into()),
                    ("x-tenant".into(), "acme,b".into()),
                ],
                timeout: Duration::from_millis(2500),
            }
        );
    }

    #[test]
    fn what_the_exporter_cannot_do_is_refused_by_name() {
        for (name, value, says) in [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://collector:4317",
                "TLS",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "collector:4317",
                "http://",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", "gRPC"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip", "compress"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign", "key=value"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "k=%zz", "percent"),
        ] {
            let error = ExportConfig::from_vars(vars(&[(name, value)])).unwrap_err();
            assert!(
                error.contains(name) && error.contains(says),
                "{name}={value}: {error}"
            );
        }
    }
}
