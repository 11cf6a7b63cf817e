//! What tracing costs: `CheckSuppressed` throughput of three release `suppressd` processes, side by
//! side in one run: traces off (no endpoint), sampled at 1 %, and always on, the last two exporting
//! to a real OTLP/gRPC receiver in this process. Phases alternate between the three, so drift on a
//! shared machine lands on all of them alike. Not a benchmark suite: an honest, short measurement.
//!
//! ```sh
//! cargo build --release && cargo run --release --example trace_cost -- [seconds-per-phase] [rounds]
//! ```
//! Needs Redis on 127.0.0.1:6379; each process uses its own key prefix and SQLite file.

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use suppressd::proto::{self, suppression_client::SuppressionClient};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;

const CONNECTIONS: usize = 4;
const IN_FLIGHT_PER_CONNECTION: usize = 4;

#[derive(Clone, Default)]
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

struct Server {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    calls: u64,
    busy: Duration,
    prefix: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    /// SIGTERM (a graceful stop that flushes spans), then the test's Redis keys go.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        if let Ok(mut conn) =
            redis::Client::open("redis://127.0.0.1:6379").and_then(|c| c.get_connection())
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query(&mut conn)
                .unwrap_or_default();
            for chunk in keys.chunks(500) {
                let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
            }
        }
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn spawn(name: &'static str, otlp: Option<SocketAddr>, sampler: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let prefix = format!("tracecost-{name}-{}:", std::process::id());
    // The example runs from target/<profile>/examples/; the server binary sits one level up.
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe.parent().unwrap().parent().unwrap().join("suppressd"));
    cmd.arg("serve")
        .env("SUPPRESSD_LISTEN", addr.to_string())
        .env("SUPPRESSD_REDIS_PREFIX", &prefix)
        .env(
            "SUPPRESSD_STORE_URL",
            format!("sqlite://{}/s.db", dir.path().display()),
        )
        .env("SUPPRESSD_PEPPER", "trace-cost-pepper-0123456789")
        .env("SUPPRESSD_CACHE_BUCKET_BITS", "8")
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(otlp) = otlp {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"));
    }
    cmd.envs(sampler.iter().copied());
    Server {
        name,
        addr,
        child: cmd.spawn().expect("run `cargo build --release` first"),
        calls: 0,
        busy: Duration::ZERO,
        prefix,
        _dir: dir,
    }
}

async fn connect(addr: SocketAddr) -> SuppressionClient<Channel> {
    for _ in 0..100 {
        if let Ok(c) = SuppressionClient::connect(format!("http://{addr}")).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("suppressd at {addr} did not start");
}

fn request(i: u64) -> proto::CheckSuppressedRequest {
    proto::CheckSuppressedRequest {
        recipient: Some(proto::Recipient {
            id: Some(proto::recipient::Id::UserId(format!("user-{}", i % 10_000))),
        }),
        scope: Some(proto::Scope {
            tenant: "bench".into(),
            channel: proto::Channel::Email as i32,
            topic: "recall".into(),
            campaign: String::new(),
        }),
    }
}

/// A closed loop for `length`: every task sends its next call when the previous one answered.
async fn phase(addr: SocketAddr, length: Duration) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + length;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = connect(addr).await;
        for _ in 0..IN_FLIGHT_PER_CONNECTION {
            let (mut client, done) = (client.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = rand_start();
                while Instant::now() < deadline {
                    client.check_suppressed(request(i)).await.expect("check");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed)
}

fn rand_start() -> u64 {
    u64::from(std::process::id()) * 7919 + Instant::now().elapsed().subsec_nanos() as u64
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let sink = Sink::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let mut servers = vec![
        spawn("off", None, &[]),
        spawn(
            "1%",
            Some(otlp),
            &[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
            ],
        ),
        spawn(
            "always",
            Some(otlp),
            &[("OTEL_TRACES_SAMPLER", "always_on")],
        ),
    ];
    // Warm-up: connections, the cache rebuild, the allocator.
    for s in &servers {
        phase(s.addr, Duration::from_secs(2)).await;
    }
    for _ in 0..rounds {
        for s in &mut servers {
            let started = Instant::now();
            s.calls += phase(s.addr, Duration::from_secs(seconds)).await;
            s.busy += started.elapsed();
        }
    }
    let base = servers[0].calls as f64 / servers[0].busy.as_secs_f64();
    println!(
        "closed loop, {} in flight, {rounds} rounds × {seconds}s per setting",
        CONNECTIONS * IN_FLIGHT_PER_CONNECTION
    );
    for s in &servers {
        let rate = s.calls as f64 / s.busy.as_secs_f64();
        println!(
            "tracing {:>6}: {:>8.0} calls/s  {:>6.3} of off  ({:+.1} %)",
            s.name,
            rate,
            rate / base,
            (rate / base - 1.0) * 100.0
        );
    }
    drop(servers);
    println!(
        "spans received by the OTLP sink: {}",
        sink.0.load(Ordering::Relaxed)
    );
}
