//! Runs a load test: `connections` HTTP/2 connections, `concurrency` workers sharing them round-robin,
//! each worker sending one call at a time. Closed loop by default (a worker sends its next call when
//! the last one is answered); with `--rps`, open loop: request k is due at start + k/rps whatever the
//! answers' speed, and its latency is also measured from that due time, so a slow server cannot
//! hide its queueing by slowing the client down (coordinated omission).

use super::{
    args::BenchSettings,
    report::{EndReason, Options, Report},
    request::{self, Call, Request},
    stats::{Outcome, Tally},
    template::{CallData, Template},
};
use anyhow::{Context, bail};
use serde_json::Value;
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};
use tokio_util::sync::CancellationToken;
use tonic::{
    Status,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

/// How each request is made: parsed once, before the first call, so that a mistake in `--data`
/// stops the run at once instead of turning every call into an error.
struct Plan {
    call: Call,
    method: String,
    data: Source<Vec<Request>>,
    metadata: Option<Source<MetadataMap>>,
}

/// Either fixed (parsed once) or a template rendered for each request.
enum Source<T> {
    Fixed(T),
    Templated(Template),
}

impl Plan {
    fn new(settings: &BenchSettings) -> anyhow::Result<Plan> {
        let call = Call::parse(settings.call()?).map_err(anyhow::Error::msg)?;
        let text = settings.data_text()?.unwrap_or_else(|| "{}".to_owned());
        let template = Template::parse(&text).map_err(|e| anyhow::anyhow!("--data: {e}"))?;
        let data = if template.is_constant() {
            let json: Value = serde_json::from_str(&text).context("--data is not JSON")?;
            let requests = messages(&json)
                .iter()
                .map(|m| request::from_json(&call, m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("--data: {e}"))?;
            Source::Fixed(requests)
        } else {
            Source::Templated(template)
        };
        let metadata = match settings.metadata_text()? {
            None => None,
            Some(text) => {
                let text = text.as_str();
                let template =
                    Template::parse(text).map_err(|e| anyhow::anyhow!("--metadata: {e}"))?;
                Some(if template.is_constant() {
                    Source::Fixed(metadata(text).map_err(|e| anyhow::anyhow!("--metadata: {e}"))?)
                } else {
                    Source::Templated(template)
                })
            }
        };
        let plan = Plan {
            method: call.full_name(),
            call,
            data,
            metadata,
        };
        // Render the first request now: a template that yields bad JSON fails here, loudly.
        plan.request(0, "c0w0")
            .map_err(|e| anyhow::anyhow!("--data: {e}"))?;
        Ok(plan)
    }

    fn call_data<'a>(&'a self, request_number: u64, worker_id: &'a str) -> CallData<'a> {
        CallData {
            request_number,
            worker_id,
            method: &self.method,
            input: self.call.input(),
            output: self.call.output(),
        }
    }

    /// Request `k`: one message of the data, round-robin, or for a client-streaming call the whole
    /// array as the stream (as ghz sends it).
    fn request(&self, k: u64, worker_id: &str) -> Result<tonic::Request<Payload>, String> {
        let streaming = self.call.is_client_streaming();
        let pick = |all: &[Request]| {
            if streaming {
                Payload::Stream(all.to_vec())
            } else {
                Payload::Unary(all[(k % all.len() as u64) as usize].clone())
            }
        };
        let message = match &self.data {
            Source::Fixed(all) => pick(all),
            Source::Templated(t) => {
                let text = t.render(&self.call_data(k, worker_id));
                if !streaming && text.trim_start().starts_with('{') {
                    // One message, as most templates are: read straight from the text, without
                    // building a JSON value first.
                    Payload::Unary(
                        request::from_json_text(&self.call, &text)
                            .map_err(|e| format!("rendered data: {e}"))?,
                    )
                } else {
                    self.of_array(&text, k)?
                }
            }
        };
        let mut request = tonic::Request::new(message);
        match &self.metadata {
            None => {}
            Some(Source::Fixed(map)) => *request.metadata_mut() = map.clone(),
            Some(Source::Templated(t)) => {
                *request.metadata_mut() = metadata(&t.render(&self.call_data(k, worker_id)))?
            }
        }
        Ok(request)
    }

    /// Request `k` of rendered data that is an array of messages, or a client stream.
    fn of_array(&self, text: &str, k: u64) -> Result<Payload, String> {
        let streaming = self.call.is_client_streaming();
        let json: Value = serde_json::from_str(text).map_err(|e| format!("rendered data: {e}"))?;
        Ok(if streaming {
            let all = messages(&json)
                .into_iter()
                .map(|m| request::from_json(&self.call, m))
                .collect::<Result<Vec<_>, _>>()?;
            Payload::Stream(all)
        } else {
            let all = messages(&json);
            Payload::Unary(request::from_json(
                &self.call,
                all[(k % all.len() as u64) as usize],
            )?)
        })
    }
}

/// What one call sends.
enum Payload {
    Unary(Request),
    Stream(Vec<Request>),
}

/// A JSON array is a list of messages used round-robin; anything else is one message.
fn messages(json: &Value) -> Vec<&Value> {
    match json {
        Value::Array(items) if !items.is_empty() => items.iter().collect(),
        other => vec![other],
    }
}

fn metadata(text: &str) -> Result<MetadataMap, String> {
    let json: serde_json::Map<String, Value> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let mut map = MetadataMap::new();
    for (key, value) in json {
        let Value::String(value) = value else {
            return Err(format!("{key}: values must be strings"));
        };
        let name = MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("{key:?} is not a metadata key"))?;
        let value = MetadataValue::try_from(value.as_str())
            .map_err(|_| format!("{key}: not a valid metadata value"))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// What the workers share.
struct Shared {
    plan: Plan,
    next: AtomicU64,
    details_left: AtomicUsize,
    limit: Option<u64>,
    rps: Option<f64>,
    timeout: Duration,
    started: tokio::time::Instant,
    stop: CancellationToken,
}

/// The client's TLS settings from ghz's flags, or `None` for plaintext (`--insecure`).
fn tls_config(settings: &BenchSettings) -> anyhow::Result<Option<ClientTlsConfig>> {
    if settings.insecure {
        return Ok(None);
    }
    if settings.skip_tls {
        bail!("--skipTLS is not supported: pass the server's CA with --cacert (or use --insecure)");
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let Some(ca) = &settings.cacert else {
        bail!(
            "TLS needs the server's CA certificate: pass --cacert FILE (or --insecure for plaintext)"
        );
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let Some(name) = &settings.cname {
        tls = tls.domain_name(name.clone());
    }
    if let (Some(cert), Some(key)) = (&settings.cert, &settings.key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

/// Runs a load test and returns its report. `cancel` ends it early (end reason `cancel`).
pub async fn run(settings: &BenchSettings, cancel: CancellationToken) -> anyhow::Result<Report> {
    if settings.rps.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rps must be a positive number");
    }
    let plan = Plan::new(settings)?;
    let host = settings.host()?;
    let mut channels = Vec::new();
    let tls = tls_config(settings)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    for _ in 0..settings.connections {
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{host}"))
            .with_context(|| format!("{host:?} is not a host:port"))?
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to {host}"))?,
        );
    }

    let stop = cancel.child_token();
    let shared = Arc::new(Shared {
        plan,
        next: AtomicU64::new(0),
        details_left: AtomicUsize::new(settings.max_details),
        limit: settings.duration.is_none().then_some(settings.total),
        rps: settings.rps,
        timeout: settings.timeout,
        started: tokio::time::Instant::now(),
        stop: stop.clone(),
    });
    let date = super::report::now_rfc3339();
    let began = Instant::now();
    let workers: Vec<_> = (0..settings.concurrency)
        .map(|w| {
            let conn = w % settings.connections;
            let client = tonic::client::Grpc::new(channels[conn as usize].clone())
                .max_decoding_message_size(suppressd::api::MAX_MESSAGE_BYTES);
            tokio::spawn(worker(format!("c{conn}w{w}"), client, shared.clone()))
        })
        .collect();
    if let Some(d) = settings.duration {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(d) => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        });
    }
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await.context("a load worker panicked")?);
    }
    let total = began.elapsed();
    stop.cancel();
    let end_reason = if cancel.is_cancelled() {
        EndReason::Cancel
    } else if settings.duration.is_some() {
        EndReason::Timeout
    } else {
        EndReason::Normal
    };
    Ok(Report::build(
        tally,
        options(settings),
        end_reason,
        total,
        date,
    ))
}

async fn worker(
    id: String,
    mut client: tonic::client::Grpc<Channel>,
    shared: Arc<Shared>,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        if shared.stop.is_cancelled() {
            break;
        }
        let k = shared.next.fetch_add(1, Ordering::Relaxed);
        if shared.limit.is_some_and(|n| k >= n) {
            break;
        }
        let due = shared
            .rps
            .map(|rps| shared.started + Duration::from_secs_f64(k as f64 / rps));
        if let Some(due) = due {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = shared.stop.cancelled() => break,
            }
        }
        let started = SystemTime::now();
        let sent = tokio::time::Instant::now();
        let result = match shared.plan.request(k, &id) {
            Ok(request) => send(&mut client, &shared.plan.call, request, shared.timeout).await,
            Err(e) => Err(Status::unknown(format!("building the request: {e}"))),
        };
        let answered = tokio::time::Instant::now();
        let keep = shared
            .details_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        tally.record(
            Outcome {
                started,
                service: answered - sent,
                from_intended: due.map(|d| answered - d),
                result,
            },
            keep,
        );
    }
    tally
}

/// Sends one call with a deadline (also announced to the server as `grpc-timeout`).
async fn send(
    client: &mut tonic::client::Grpc<Channel>,
    call: &Call,
    request: tonic::Request<Payload>,
    timeout: Duration,
) -> Result<(), Status> {
    let (metadata, extensions, message) = request.into_parts();
    let call = async {
        client
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        match message {
            Payload::Unary(m) => {
                let r = with_deadline(metadata, extensions, m, timeout);
                client.unary(r, call.path(), call.codec()).await.map(drop)
            }
            Payload::Stream(all) => {
                let r = with_deadline(metadata, extensions, tokio_stream::iter(all), timeout);
                client
                    .client_streaming(r, call.path(), call.codec())
                    .await
                    .map(drop)
            }
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("context deadline exceeded")))
}

fn with_deadline<T>(
    metadata: MetadataMap,
    extensions: tonic::Extensions,
    message: T,
    timeout: Duration,
) -> tonic::Request<T> {
    let mut r = tonic::Request::from_parts(metadata, extensions, message);
    r.set_timeout(timeout);
    r
}

fn options(s: &BenchSettings) -> Options {
    let json =
        |text: Option<String>| text.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)));
    Options {
        host: s.host().unwrap_or_default().to_owned(),
        call: s.call().unwrap_or_default().to_owned(),
        insecure: s.insecure,
        total: s.total,
        concurrency: s.concurrency,
        connections: s.connections,
        rps: s.rps,
        duration: s.duration.map_or(0, |d| d.as_nanos() as u64),
        timeout: s.timeout.as_nanos() as u64,
        dial_timeout: s.connect_timeout.as_nanos() as u64,
        data: json(s.data_text().ok().flatten()),
        metadata: json(s.metadata_text().ok().flatten()),
        binary: false,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        name: s.name.clone(),
    }
}
