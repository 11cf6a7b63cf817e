//! Telemetry end to end: spans received over real OTLP/gRPC, `/metrics` scraped over real HTTP.
//!
//! The tracing subscriber and the metrics recorder are process-wide and can be installed once, and
//! the other tests of this binary make calls concurrently. So each scenario runs in a child process
//! of this same test binary: an `#[ignore]`d `child_*` test that the parent starts alone (`--exact
//! --ignored`), with the environment a deployment would set. The child installs telemetry, runs
//! the real server and makes its calls; the parent holds the OTLP receiver and judges what arrived.

use crate::helpers::*;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind},
};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use suppressd::{
    domain::Clock,
    proto::{self, Channel},
    telemetry,
    telemetry::LogFormat,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};
use tokio_stream::wrappers::TcpListenerStream;

/// Set in a child's environment; a `child_*` test does nothing without it.
const CHILD: &str = "SUPPRESSD_TELEMETRY_CHILD";
/// The raw identifier the children use: it must appear in no span, attribute or log line.
const RAW_EMAIL: &str = "Jane.Telemetry@Example.com";
/// The callers' traces that suppressd must continue.
const CHECK_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const OPT_OUT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const REFUSED_TRACE: &str = "d4cda95b652f4a1592b449d5929fda1b";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "congo=t61rcWkgMzE";

fn is_child() -> bool {
    let child = std::env::var_os(CHILD).is_some();
    if !child {
        eprintln!("skipped: runs only as a child of its parent test in telemetry.rs");
    }
    child
}

// ---------------------------------------------------------------------------------------------
// Traces
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_continue_the_callers_trace_and_follow_the_conventions() {
    // Arrange: a real OTLP/gRPC receiver.
    let receiver = Receiver::start("127.0.0.1:0").await.unwrap();

    // Act: the child serves a check and a DURABLE opt-out, each sent with a traceparent.
    let logs = run_child(
        "telemetry::child_exports_traces",
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", receiver.addr),
            ),
            ("OTEL_SERVICE_NAME", "suppressd-under-test".into()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test".into(),
            ),
            // A collector's key, percent-encoded as the specification has it.
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-collector-key=s3cr%3Dt".into(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ("RUST_LOG", "info,suppressd=debug".into()),
        ],
    )
    .await;
    let keys = receiver.collected.keys();
    let exported = receiver.stop();

    // Assert: every export carried the configured header.
    assert!(!keys.is_empty());
    assert!(
        keys.iter().all(|k| k.as_deref() == Some("s3cr=t")),
        "{keys:?}"
    );

    // Assert: the resource says who sent them.
    let resource = &exported[0].resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(
        string(&resource.attributes, "service.name"),
        "suppressd-under-test"
    );
    assert_eq!(
        string(&resource.attributes, "deployment.environment"),
        "test"
    );
    let spans = spans_in(&exported);

    // The check: the caller's trace continues into a server span named by the conventions …
    let check_rpc = one(&spans, |s| {
        s.name == "suppress.v1.Suppression/CheckSuppressed"
    });
    assert_eq!(hex(&check_rpc.trace_id), CHECK_TRACE);
    assert_eq!(hex(&check_rpc.parent_span_id), CALLER_SPAN);
    assert_eq!(check_rpc.trace_state, TRACESTATE);
    assert_eq!(check_rpc.kind, SpanKind::Server as i32);
    assert_eq!(string(&check_rpc.attributes, "rpc.system"), "grpc");
    assert_eq!(
        string(&check_rpc.attributes, "rpc.service"),
        "suppress.v1.Suppression"
    );
    assert_eq!(
        string(&check_rpc.attributes, "rpc.method"),
        "CheckSuppressed"
    );
    assert_eq!(int(&check_rpc.attributes, "rpc.grpc.status_code"), 0);
    assert!(check_rpc.status.as_ref().is_none_or(|s| s.code == 0));
    // … which records who called, where the answer came from, and whose child reads Redis.
    assert_eq!(string(&check_rpc.attributes, "principal"), "admin");
    // Each attribute once: recording one again must not add a second copy to the span.
    for span in &spans {
        let mut keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        keys.sort();
        let before = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), before, "{} repeats an attribute", span.name);
    }
    assert_eq!(
        string(&check_rpc.attributes, "suppressd.answer_source"),
        "cache"
    );
    assert_eq!(int(&check_rpc.attributes, "suppressd.checks"), 1);
    let hmget = child_of(&spans, check_rpc, "HMGET");
    assert_eq!(hmget.kind, SpanKind::Client as i32);
    assert_eq!(string(&hmget.attributes, "db.system"), "redis");
    assert_eq!(string(&hmget.attributes, "db.operation"), "HMGET");

    // The opt-out: its own caller's trace, the service span, the Redis script.
    let opt_out_rpc = one(&spans, |s| {
        s.name == "suppress.v1.Suppression/OptOut" && hex(&s.trace_id) == OPT_OUT_TRACE
    });
    assert_eq!(hex(&opt_out_rpc.trace_id), OPT_OUT_TRACE);
    assert_eq!(hex(&opt_out_rpc.parent_span_id), CALLER_SPAN);
    assert_eq!(int(&opt_out_rpc.attributes, "rpc.grpc.status_code"), 0);
    let opt_out = child_of(&spans, opt_out_rpc, "opt_out");
    assert_eq!(
        string(&opt_out.attributes, "suppressd.reason"),
        "user_request"
    );
    let script = child_of(&spans, opt_out, "EVALSHA");
    assert_eq!(string(&script.attributes, "suppressd.script"), "opt_out");

    // A refused opt-out: its status, and the reason logged in the call, as an event of its span.
    let refused = one(&spans, |s| hex(&s.trace_id) == REFUSED_TRACE);
    assert_eq!(refused.name, "suppress.v1.Suppression/OptOut");
    assert_eq!(int(&refused.attributes, "rpc.grpc.status_code"), 16);
    let event = refused
        .events
        .iter()
        .find(|e| e.name == "person's token refused")
        .expect("the refusal logged in the call is an event of its span");
    assert_eq!(string(&event.attributes, "level"), "INFO");
    assert_eq!(string(&event.attributes, "purpose"), "opt_out");
    assert!(!string(&event.attributes, "reason").is_empty());

    // The worker's commit: a trace of its own, linked to the request that queued the record, with
    // the store's INSERT beneath it.
    let commit = one(&spans, |s| {
        s.name == "writebehind.commit" && s.links.iter().any(|l| hex(&l.trace_id) == OPT_OUT_TRACE)
    });
    assert_eq!(commit.kind, SpanKind::Consumer as i32);
    assert!(
        commit.parent_span_id.is_empty(),
        "the commit is a root span"
    );
    assert_ne!(hex(&commit.trace_id), OPT_OUT_TRACE);
    let link = commit
        .links
        .iter()
        .find(|l| hex(&l.trace_id) == OPT_OUT_TRACE)
        .unwrap();
    assert_eq!(
        link.span_id, opt_out.span_id,
        "linked to the request's span"
    );
    let insert = child_of(&spans, commit, "INSERT suppressions");
    assert_eq!(string(&insert.attributes, "db.system"), "sqlite");
    assert_eq!(string(&insert.attributes, "db.operation"), "INSERT");
    assert_eq!(int(&commit.attributes, "suppressd.inserted"), 1);
    // Its delivery to the webhook destination: a trace of its own, linked to the statement that
    // committed it.
    let delivery = one(&spans, |s| s.name == "webhook delivery");
    assert!(
        delivery
            .links
            .iter()
            .any(|l| l.trace_id == commit.trace_id && l.span_id == insert.span_id),
        "the delivery links to the commit: {:?}",
        delivery.links
    );
    assert_eq!(
        string(&delivery.attributes, "change_trace_id"),
        OPT_OUT_TRACE
    );

    // No raw identifier anywhere: not in spans, attributes, events, nor in the logs.
    let everything = format!("{exported:?}").to_lowercase();
    assert!(!everything.contains(&RAW_EMAIL.to_lowercase()));
    assert!(!everything.contains("jane"));
    assert!(!logs.to_lowercase().contains("jane"));

    // The JSON logs of the request carry its trace id.
    let traced_log = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["trace_id"] == CHECK_TRACE && l["fields"]["message"] == "rpc finished");
    let traced_log = traced_log.expect("a JSON log line with the caller's trace id");
    assert_eq!(traced_log["span_id"], hex(&check_rpc.span_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of traces_continue_the_callers_trace_and_follow_the_conventions"]
async fn child_exports_traces() {
    if !is_child() {
        return;
    }
    let guard = telemetry::init(LogFormat::Json).unwrap();
    assert!(guard.is_exporting());
    // Checks ask Redis, so that their trace shows the Redis client span (a near-cache has none).
    let mut app = spawn_app_with(Backend::Sqlite, Clock::System, |s| {
        s.no_near_cache = true;
        crate::webhooks::fast_delivery(s);
    })
    .await;
    app.wait_cache_complete().await;
    // A webhook destination: the opt-out's delivery links to its commit.
    let (receiver, url) = crate::webhooks::Receiver::start().await;
    let mut register = crate::webhooks::register(&url);
    register.kinds = vec!["opt_out".into()];
    app.client.register_destination(register).await.unwrap();
    calls_with_traceparent(&mut app).await;
    receiver
        .wait_for("the opt-out delivered", |got| {
            got.iter().any(|r| r.accepted)
        })
        .await;
    app.stop().await;
    // Flushes the batch processor: every span is at the receiver once this returns.
    drop(guard);
}

/// A check and a DURABLE opt-out, each continuing a caller's trace.
async fn calls_with_traceparent(app: &mut TestApp) {
    let notice = scope("acme", Channel::Email, "recall", "");
    let mut check = tonic::Request::new(proto::CheckSuppressedRequest {
        recipient: Some(email(RAW_EMAIL)),
        scope: Some(notice.clone()),
        ..Default::default()
    });
    traceparent(&mut check, CHECK_TRACE);
    let answer = app.client.check_suppressed(check).await.unwrap();
    assert!(!answer.into_inner().suppressed);

    let mut opt_out = tonic::Request::new(opt_out_request(email(RAW_EMAIL), notice));
    traceparent(&mut opt_out, OPT_OUT_TRACE);
    let receipt = app.client.opt_out(opt_out).await.unwrap().into_inner();
    assert_eq!(
        receipt.receipt.unwrap().state,
        proto::ReceiptState::Durable as i32
    );

    let mut refused = tonic::Request::new(proto::OptOutRequest {
        token: "not-a-token".into(),
        ..opt_out_request(
            email(RAW_EMAIL),
            scope("acme", Channel::Email, "recall", ""),
        )
    });
    traceparent(&mut refused, REFUSED_TRACE);
    let status = app.client.opt_out(refused).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

fn traceparent<T>(request: &mut tonic::Request<T>, trace: &str) {
    let metadata = request.metadata_mut();
    metadata.insert(
        "traceparent",
        format!("00-{trace}-{CALLER_SPAN}-01").parse().unwrap(),
    );
    metadata.insert("tracestate", TRACESTATE.parse().unwrap());
}

/// A caller's trace that asked not to be sampled (`traceparent` flags `00`).
const UNSAMPLED_TRACE: &str = "5e0c63257de34c926f9efcd03927272e";

/// The sampler decides at the head of each trace, so a trace is exported whole or not at all: with
/// `parentbased_always_off`, calls that bring no decision and the worker's commits export nothing,
/// not even a fragment, a caller's unsampled trace stays unsampled, and a caller's sampled trace
/// arrives with every span of the call beneath it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_exports_the_spans_it_still_holds() {
    // Arrange: the real binary, exporting to a receiver, with a batch schedule far longer than the
    // test, so that only the flush at shutdown can send what it traced.
    let receiver = Receiver::start("127.0.0.1:0").await.unwrap();
    let db = TestDb::new(Backend::Sqlite).await;
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let config = crate::processes::ReplicaConfig::new(&db.url, redis_url(), &prefix)
        .with(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://{}", receiver.addr),
        )
        .with("OTEL_BSP_SCHEDULE_DELAY", "600000");
    let mut replica = crate::processes::Replica::start(&config).await;
    let mut client = replica.client().await;
    client
        .check_suppressed(proto::CheckSuppressedRequest {
            recipient: Some(email(RAW_EMAIL)),
            scope: Some(scope("acme", proto::Channel::Email, "recall", "")),
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        spans_in(&receiver.collected.0.lock().unwrap()).is_empty(),
        "nothing is sent before the schedule or the shutdown"
    );

    // Act: stop it as an orchestrator would.
    replica.terminate();
    let status = replica.wait().await;

    // Assert: a clean exit, and the check's span arrived on the way out.
    assert!(status.success(), "{status:?}");
    let exported = receiver.stop();
    let spans = spans_in(&exported);
    one(&spans, |s| {
        s.name == "suppress.v1.Suppression/CheckSuppressed"
    });
    delete_prefix(redis_url(), &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_sampled_whole_at_their_head() {
    let receiver = Receiver::start("127.0.0.1:0").await.unwrap();
    run_child(
        "telemetry::child_samples_at_the_head",
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", receiver.addr),
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_off".into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
    )
    .await;
    let exported = receiver.stop();
    let spans = spans_in(&exported);

    let traces: BTreeSet<String> = spans.iter().map(|s| hex(&s.trace_id)).collect();
    assert_eq!(
        traces,
        [CHECK_TRACE, OPT_OUT_TRACE, REFUSED_TRACE]
            .map(str::to_owned)
            .into(),
        "only the callers' sampled traces are exported"
    );
    // Whole: every span hangs from the caller's span or from another exported span.
    let ids: BTreeSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
    for span in &spans {
        assert!(
            hex(&span.parent_span_id) == CALLER_SPAN
                || ids.contains(span.parent_span_id.as_slice()),
            "{} is a fragment",
            span.name
        );
    }
    let check_rpc = one(&spans, |s| {
        s.name == "suppress.v1.Suppression/CheckSuppressed"
    });
    child_of(&spans, check_rpc, "HMGET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of traces_are_sampled_whole_at_their_head"]
async fn child_samples_at_the_head() {
    if !is_child() {
        return;
    }
    let guard = telemetry::init(LogFormat::Text).unwrap();
    // Checks ask Redis, so that their trace shows the Redis client span (a near-cache has none).
    let mut app = spawn_app_with(Backend::Sqlite, Clock::System, |s| s.no_near_cache = true).await;
    app.wait_cache_complete().await;
    let notice = scope("acme", Channel::Email, "recall", "");
    for i in 0..10 {
        let who = email(&format!("unsampled-{i}@example.com"));
        assert!(!app.is_suppressed(who.clone(), notice.clone()).await);
        app.opt_out(opt_out_request(who, notice.clone())).await;
    }
    let mut unsampled = tonic::Request::new(proto::CheckSuppressedRequest {
        recipient: Some(email(RAW_EMAIL)),
        scope: Some(notice.clone()),
        ..Default::default()
    });
    unsampled.metadata_mut().insert(
        "traceparent",
        format!("00-{UNSAMPLED_TRACE}-{CALLER_SPAN}-00")
            .parse()
            .unwrap(),
    );
    app.client.check_suppressed(unsampled).await.unwrap();
    calls_with_traceparent(&mut app).await;
    app.stop().await;
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_nothing_fails() {
    // Arrange: receivers on the OTLP default endpoint, where a wrongly enabled exporter would send.
    let defaults = [
        Receiver::start("127.0.0.1:4317").await,
        Receiver::start("[::1]:4317").await,
    ];
    if defaults.iter().all(Option::is_none) {
        eprintln!("port 4317 is busy: only checking that nothing fails");
    }

    // Act: every OTEL_* variable but an endpoint, and calls that carry a traceparent.
    run_child(
        "telemetry::child_without_endpoint",
        &[
            ("OTEL_SERVICE_NAME", "suppressd-under-test".into()),
            ("OTEL_TRACES_SAMPLER", "always_on".into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
    )
    .await;

    // Assert: the child passed (checked by run_child), and nothing arrived.
    for receiver in defaults.into_iter().flatten() {
        assert!(receiver.stop().is_empty(), "spans were exported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of without_an_endpoint_nothing_is_exported_and_nothing_fails"]
async fn child_without_endpoint() {
    if !is_child() {
        return;
    }
    let guard = telemetry::init(LogFormat::Text).unwrap();
    assert!(!guard.is_exporting());
    let mut app = spawn_app(Backend::Sqlite).await;
    app.wait_cache_complete().await;
    calls_with_traceparent(&mut app).await;
    app.stop().await;
    drop(guard);
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_exactly_the_calls_made() {
    // The child owns the process-wide recorder, so no other test's calls are counted.
    run_child("telemetry::child_serves_metrics", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of metrics_move_by_exactly_the_calls_made"]
async fn child_serves_metrics() {
    if !is_child() {
        return;
    }
    // Arrange: the admin port on port 0, a complete cache.
    let mut app = spawn_app_with(Backend::Sqlite, Clock::System, |s| {
        s.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    app.wait_cache_complete().await;
    let admin = app.admin.expect("the admin port is bound");
    let before = scrape(admin).await;

    // Act: three good checks, one bad one, two DURABLE opt-outs.
    let notice = scope("acme", Channel::Sms, "marketing", "");
    for i in 0..3 {
        app.check(phone(&format!("+4420794600{i:02}")), notice.clone())
            .await;
    }
    let bad = app
        .client
        .check_suppressed(proto::CheckSuppressedRequest {
            recipient: Some(phone("not a number")),
            scope: Some(notice.clone()),
            ..Default::default()
        })
        .await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    for i in 0..2 {
        let mut request = opt_out_request(phone(&format!("+4420794601{i:02}")), notice.clone());
        request.reason = proto::Reason::Complaint as i32;
        request.source = proto::Source::SmsKeyword as i32;
        app.opt_out(request).await;
    }
    let after = scrape(admin).await;

    // Assert: every counter moved by exactly what was done.
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let check = [
        ("rpc_service", "suppress.v1.Suppression"),
        ("rpc_method", "CheckSuppressed"),
    ];
    let opt_out = [
        ("rpc_service", "suppress.v1.Suppression"),
        ("rpc_method", "OptOut"),
    ];
    let with = |labels: &[(&'static str, &'static str)], more: (&'static str, &'static str)| {
        let mut all = labels.to_vec();
        all.push(more);
        all
    };
    let requests = "suppressd_rpc_requests_total";
    assert_eq!(delta(requests, &with(&check, ("code", "OK"))), 3.0);
    assert_eq!(
        delta(requests, &with(&check, ("code", "INVALID_ARGUMENT"))),
        1.0
    );
    assert_eq!(delta(requests, &with(&opt_out, ("code", "OK"))), 2.0);
    let latency = "suppressd_rpc_duration_seconds";
    assert_eq!(delta(&format!("{latency}_count"), &check), 4.0);
    assert_eq!(delta(&format!("{latency}_count"), &opt_out), 2.0);
    assert_eq!(
        delta(&format!("{latency}_bucket"), &with(&check, ("le", "+Inf"))),
        4.0
    );
    // Real buckets: cumulative, and more than the +Inf one.
    let buckets = after.buckets(latency, &check);
    assert!(buckets.len() > 10, "histogram buckets: {buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    assert_eq!(
        delta("suppressd_checks_total", &[("answer_source", "cache")]),
        3.0
    );
    assert_eq!(
        delta(
            "suppressd_opt_outs_total",
            &[("reason", "complaint"), ("source", "sms_keyword")]
        ),
        2.0
    );
    assert_eq!(delta("suppressd_writebehind_committed_total", &[]), 2.0);
    assert_eq!(delta("suppressd_writebehind_batch_size_sum", &[]), 2.0);
    let batches = delta("suppressd_writebehind_batch_size_count", &[]);
    assert!((1.0..=2.0).contains(&batches));
    assert_eq!(
        ["locked", "at_once"]
            .map(|path| delta(
                "suppressd_writebehind_commit_duration_seconds_count",
                &[("path", path)]
            ))
            .iter()
            .sum::<f64>(),
        batches
    );
    assert_eq!(after.value("suppressd_cache_complete", &[]), 1.0);
    // The start's rebuild ran under the lease, counted, with its gauge down again.
    let rebuilt = [("outcome", "rebuilt")];
    assert!(after.value("suppressd_cache_rebuilds_total", &rebuilt) >= 1.0);
    assert_eq!(after.value("suppressd_cache_rebuild_running", &[]), 0.0);
    assert_eq!(after.value("suppressd_writebehind_stream_length", &[]), 0.0);
    assert_eq!(
        after.value("suppressd_writebehind_pending_entries", &[]),
        0.0
    );
    assert_eq!(delta("suppressd_redis_errors_total", &[]), 0.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_gauges_count_per_destination() {
    run_child("telemetry::child_counts_destination_deadlines", &[]).await;
}

/// Two destinations want a record whose CAN-SPAM deadline (here 30 hours) falls within the near
/// margin: one receives it at once (met there), the other never answers (near there). The record
/// took effect at once, so its own clock is met. Each destination's gauge says so, and the listing
/// shows each destination's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of deadline_gauges_count_per_destination"]
async fn child_counts_destination_deadlines() {
    if !is_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("deadlines.toml");
    std::fs::write(
        &rules,
        "near_hours = 24\n[[regime]]\nname = \"can_spam\"\nhours = 30\n",
    )
    .unwrap();
    let mut app = spawn_app_with(Backend::Sqlite, Clock::System, |s| {
        s.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        s.deadlines.deadlines_file = Some(rules.clone());
        s.deadlines.deadlines_refresh = Duration::from_millis(100);
        crate::webhooks::fast_delivery(s);
    })
    .await;
    app.wait_cache_complete().await;
    let admin = app.admin.expect("the admin port is bound");
    let (receiver, url) = crate::webhooks::Receiver::start().await;
    let answering = app
        .client
        .register_destination(crate::webhooks::register(&url))
        .await
        .unwrap()
        .into_inner()
        .destination_id;
    // Nothing listens there: every attempt fails.
    let silent_url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", listener.local_addr().unwrap())
    };
    let silent = app
        .client
        .register_destination(crate::webhooks::register(&silent_url))
        .await
        .unwrap()
        .into_inner()
        .destination_id;

    // Received ten hours ago (an import of a list kept elsewhere): due in twenty.
    let received = Clock::System.now() / 1000 - 10 * 3600;
    let mut row = crate::imports::row(
        1,
        "clocked@example.com",
        scope("acme", Channel::Email, "", ""),
    );
    row.received_at = crate::imports::at(received);
    crate::imports::import(&mut app.client, vec![row]).await;
    receiver
        .wait_for("the import delivered", |got| got.iter().any(|r| r.accepted))
        .await;

    let gauge = "suppressd_destination_deadlines";
    let of = |destination: &str, state: &str| {
        [
            ("destination", destination.to_owned()),
            ("regime", "can_spam".to_owned()),
            ("state", state.to_owned()),
        ]
    };
    let mut last = None;
    for _ in 0..200 {
        let now = scrape(admin).await;
        let read = |d: &str, state: &str| {
            let labels = of(d, state);
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            now.value(gauge, &labels)
        };
        let seen = (
            read(&silent, "near"),
            read(&silent, "missed"),
            read(&answering, "near"),
            read(&answering, "missed"),
            now.value(
                "suppressd_deadlines",
                &[("regime", "can_spam"), ("state", "near")],
            ),
        );
        if seen == (1.0, 0.0, 0.0, 0.0, 0.0) {
            last = None;
            break;
        }
        last = Some(seen);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        last, None,
        "(silent near, missed, answering near, missed, record near)"
    );

    // The listing: met at the answering destination, pending at the silent one.
    let records = app
        .client
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: Some(email("clocked@example.com")),
            tenant: "acme".into(),
            token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    let at = |id: &str| {
        let delivery = records[0]
            .deliveries
            .iter()
            .find(|d| d.destination_id == id)
            .unwrap_or_else(|| panic!("no delivery to {id}: {records:?}"));
        let deadline = delivery
            .deadlines
            .iter()
            .find(|d| d.regime() == proto::Regime::CanSpam)
            .unwrap_or_else(|| panic!("CAN-SPAM's clock at {id}: {delivery:?}"));
        assert_eq!(
            deadline.due_at.as_ref().unwrap().seconds,
            received + 30 * 3600
        );
        deadline.state()
    };
    assert_eq!(at(&answering), proto::DeadlineState::Met);
    assert_eq!(at(&silent), proto::DeadlineState::Pending);
    app.stop().await;
}

/// A parsed Prometheus text exposition: (name, labels) → value.
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    /// The sample with exactly these labels; 0 if it does not exist (yet).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map_or(0.0, |(_, _, v)| *v)
    }

    /// A histogram's buckets (upper bound, cumulative count), in order.
    fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut found: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter(|(n, l, _)| {
                *n == bucket
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|(_, l, v)| (l["le"].parse().unwrap_or(f64::INFINITY), *v))
            .collect();
        found.sort_by(|a, b| a.0.total_cmp(&b.0));
        found
    }
}

/// GET /metrics over plain HTTP/1.1, parsed.
async fn scrape(admin: SocketAddr) -> Scrape {
    let mut stream = TcpStream::connect(admin).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: suppressd\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("content-type: text/plain"));
    let samples = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            (name.to_owned(), labels, value.parse().unwrap())
        })
        .collect();
    Scrape(samples)
}

/// `a="x",b="y"` → {a: x, b: y}. suppressd's label values hold no quotes or commas.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split("\",")
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once("=\"").unwrap();
            (key.to_owned(), value.trim_end_matches('"').to_owned())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The harness: child processes and an OTLP/gRPC receiver
// ---------------------------------------------------------------------------------------------

/// Variables of the parent's environment that must not leak into a child.
const INHERITED: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "RUST_LOG",
];

/// Runs one `child_*` test of this binary alone with `envs`; fails unless it ran and passed.
/// Returns what it wrote to standard error (its logs).
async fn run_child(test: &str, envs: &[(&str, String)]) -> String {
    let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .kill_on_drop(true);
    for name in INHERITED {
        command.env_remove(name);
    }
    command.envs(envs.iter().map(|(k, v)| (k, v)));
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the child finished within two minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child {test} failed:\n{stdout}\n{stderr}"
    );
    stderr
}

/// An OTLP/gRPC trace receiver: the collector's side of the protocol, keeping what it is sent and
/// the `x-collector-key` header each request came with.
#[derive(Clone, Default)]
struct Collected(
    Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    Arc<Mutex<Vec<Option<String>>>>,
);

impl Collected {
    fn keys(&self) -> Vec<Option<String>> {
        self.1.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl TraceService for Collected {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let key = request.metadata().get("x-collector-key");
        let key = key.map(|k| k.to_str().unwrap().to_owned());
        self.1.lock().unwrap().push(key);
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

struct Receiver {
    addr: SocketAddr,
    collected: Collected,
    _stop: oneshot::Sender<()>,
}

impl Receiver {
    /// Listens on `addr`; `None` if it is taken.
    async fn start(addr: &str) -> Option<Receiver> {
        let listener = TcpListener::bind(addr).await.ok()?;
        let addr = listener.local_addr().unwrap();
        let collected = Collected::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collected.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        tokio::spawn(server);
        Some(Receiver {
            addr,
            collected,
            _stop: stop,
        })
    }

    /// Stops listening; returns every export request received.
    fn stop(self) -> Vec<ExportTraceServiceRequest> {
        std::mem::take(&mut *self.collected.0.lock().unwrap())
    }
}

/// Every span of every export request, in the order received.
fn spans_in(exported: &[ExportTraceServiceRequest]) -> Vec<&Span> {
    exported
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn string(attributes: &[KeyValue], key: &str) -> String {
    match attribute(attributes, key) {
        Some(Value::StringValue(s)) => s.clone(),
        other => panic!("attribute {key} is not a string: {other:?}"),
    }
}

fn int(attributes: &[KeyValue], key: &str) -> i64 {
    match attribute(attributes, key) {
        Some(Value::IntValue(i)) => *i,
        other => panic!("attribute {key} is not an integer: {other:?}"),
    }
}

fn one<'a>(spans: &[&'a Span], matches: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<_> = spans.iter().filter(|s| matches(s)).collect();
    let names: Vec<_> = spans.iter().map(|s| &s.name).collect();
    assert_eq!(found.len(), 1, "expected one such span among {names:?}");
    found[0]
}

fn child_of<'a>(spans: &[&'a Span], parent: &Span, name: &str) -> &'a Span {
    one(spans, |s| {
        s.name == name && s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id
    })
}

/// Text logs written to a file or a pipe carry no terminal colour codes (a log collector would store
/// them as garbage).
#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(["serve", "--dev-no-auth", "--listen", "127.0.0.1:0"])
        // Nothing listens there: the process logs its start-up warnings, then stops.
        .args(["--redis-url", "redis://127.0.0.1:1"])
        .arg("--store-url")
        .arg(format!("sqlite://{}", dir.path().join("s.db").display()))
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let said = String::from_utf8(out.stderr).unwrap();
    assert!(said.contains(" WARN "), "it logged: {said}");
    assert!(
        !said.contains('\x1b'),
        "colour codes in piped logs: {said:?}"
    );
}

/// A line logged in a call names the call in both formats: its method, then what the call recorded
/// (the principal, a check's count and answer source). The call is no `tracing` span (it cost every
/// call at the default level; `telemetry::call`), so this is all the logs know of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_logged_in_a_call_names_the_call() {
    use crate::processes::{Replica, ReplicaConfig};
    let db = TestDb::new(Backend::Sqlite).await;
    let prefix = format!("test:{}:", uuid::Uuid::now_v7());
    let person = email("logged@example.com");
    let scope = scope("acme", Channel::Email, "recall", "");
    for format in ["json", "text"] {
        let config = ReplicaConfig::new(&db.url, redis_url(), &prefix)
            .with("RUST_LOG", "info,suppressd::api::observe=debug");
        let config = match format {
            "text" => config.with("SUPPRESSD_LOG_FORMAT", "text"),
            _ => config,
        };
        let replica = Replica::start(&config).await;
        let mut client = replica.client().await;
        client
            .check_suppressed(proto::CheckSuppressedRequest {
                recipient: Some(person.clone()),
                scope: Some(scope.clone()),
                ..Default::default()
            })
            .await
            .expect("the check is answered");
        // The line is written as the call ends, after its answer went out.
        let mut finished = None;
        for _ in 0..100 {
            finished = replica
                .log()
                .lines()
                .find(|l| l.contains("rpc finished"))
                .map(str::to_owned);
            if finished.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let line = finished.unwrap_or_else(|| panic!("no 'rpc finished' line: {}", replica.log()));
        match format {
            "json" => {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let rpc = &v["rpc"];
                assert_eq!(
                    rpc["method"], "suppress.v1.Suppression/CheckSuppressed",
                    "{line}"
                );
                assert_eq!(rpc["principal"], "admin", "{line}");
                assert_eq!(rpc["suppressd.checks"], 1, "{line}");
                assert!(rpc["suppressd.answer_source"].is_string(), "{line}");
                assert_eq!(v["fields"]["code"], "OK", "{line}");
                assert_outside_calls_name_none(&replica.log(), "\"rpc\"");
            }
            _ => {
                assert!(
                    line.contains(
                        " DEBUG rpc{method=suppress.v1.Suppression/CheckSuppressed principal=admin \
                         suppressd.checks=1 suppressd.answer_source="
                    ),
                    "{line}"
                );
                assert!(
                    line.contains("}: suppressd::api::observe: rpc finished code=\"OK\""),
                    "{line}"
                );
                assert_outside_calls_name_none(&replica.log(), "rpc{");
            }
        }
    }
}

/// The lines logged outside a call (start-up, the cache's own work) name no call.
fn assert_outside_calls_name_none(log: &str, call_marker: &str) {
    let outside: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("rpc finished"))
        .collect();
    assert!(!outside.is_empty(), "start-up logged lines: {log}");
    for line in outside {
        assert!(
            !line.contains(call_marker),
            "a line outside any call: {line}"
        );
    }
}
