//! The load generator against a real server whose answers are known, and the benchmark suite in its
//! smoke mode. Nothing here asserts a speed: counts, distributions and the report's shape only.

mod harness;

use harness::{ADMIN_KEY, spawn_app};
use suppressd_bench::{self as bench, BenchSettings, Report, suite};
use tokio_util::sync::CancellationToken;

/// Runs the load generator with the harness's admin key, as a load test against a real deployment
/// would send one.
async fn load(args: &[&str]) -> Report {
    let key = format!(r#""authorization":"Bearer {ADMIN_KEY}""#);
    let mut with_key: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    match with_key.iter().position(|a| a == "-m") {
        Some(at) => with_key[at + 1] = with_key[at + 1].replacen('{', &format!("{{{key},"), 1),
        None => with_key
            .splice(0..0, ["-m".to_owned(), format!("{{{key}}}")])
            .for_each(drop),
    }
    let settings =
        BenchSettings::from_args(with_key.iter().map(String::as_str)).expect("valid bench flags");
    bench::run(&settings, CancellationToken::new())
        .await
        .expect("the load test runs")
}

/// Three valid opt-outs (a fresh recipient per request) and one with a broken address, round-robin.
const OPT_OUT_MIX: &str = r#"[
  {"recipient":{"email":"u{{.RequestNumber}}@example.com"},"scope":{"tenant":"t","channel":"CHANNEL_EMAIL"},
   "reason":"REASON_USER_REQUEST","source":"SOURCE_API"},
  {"recipient":{"phone":"+44 20 7946 {{.RequestNumber}}00"},"scope":{"tenant":"t"},
   "reason":"REASON_USER_REQUEST","source":"SOURCE_SMS_KEYWORD"},
  {"recipient":{"userId":"user-{{.RequestNumber}}-{{.WorkerID}}"},"scope":{"tenant":"t","topic":"recall"},
   "reason":"REASON_COMPLAINT","source":"SOURCE_LINK","durability":"DURABILITY_DURABLE"},
  {"recipient":{"email":"no-at-sign-{{.RequestNumber}}"},"scope":{"tenant":"t"},
   "reason":"REASON_USER_REQUEST","source":"SOURCE_API"}
]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_counts_what_the_server_recorded() {
    let app = spawn_app().await;
    let host = app.addr.to_string();

    let report = load(&[
        "--call",
        "suppress.v1.Suppression.OptOut",
        "-n",
        "40",
        "-c",
        "4",
        "--connections",
        "2",
        "-d",
        OPT_OUT_MIX,
        "--insecure",
        &host,
    ])
    .await;

    assert_eq!(report.count, 40);
    assert_eq!(
        report.status_code_distribution,
        [("InvalidArgument".into(), 10), ("OK".into(), 30)].into()
    );
    assert_eq!(report.error_distribution.values().sum::<u64>(), 10);
    let (error, _) = report.error_distribution.iter().next().unwrap();
    assert!(
        error.starts_with("rpc error: code = InvalidArgument desc = recipient.email"),
        "{error}"
    );
    // DURABLE opt-outs answered OK are committed: the store holds exactly the 30 accepted ones.
    assert_eq!(app.rows().await, 30);
    assert_eq!(report.details.len(), 40);
    assert_eq!(report.end_reason, bench::report::EndReason::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_are_ordered_and_within_fastest_and_slowest() {
    let app = spawn_app().await;
    app.wait_cache_complete().await;

    let report = load(&[
        "--call",
        "suppress.v1.Suppression/CheckSuppressed",
        "-n",
        "300",
        "-c",
        "8",
        "-d",
        r#"{"recipient":{"email":"r{{randomInt 0 50}}@example.com"},
            "scope":{"channel":"CHANNEL_EMAIL","topic":"recall"}}"#,
        "--insecure",
        &app.addr.to_string(),
    ])
    .await;

    assert_eq!(report.status_code_distribution, [("OK".into(), 300)].into());
    let points = report.latency_distribution.clone().unwrap();
    let percentages: Vec<u32> = points.iter().map(|p| p.percentage).collect();
    assert_eq!(percentages, [10, 25, 50, 75, 90, 95, 99]);
    assert!(points.windows(2).all(|w| w[0].latency <= w[1].latency));
    assert!(
        points
            .iter()
            .all(|p| report.fastest <= p.latency && p.latency <= report.slowest)
    );
    assert!(report.fastest <= report.average && report.average <= report.slowest);
    let histogram = report.histogram.clone().unwrap();
    assert_eq!(histogram.len(), 11);
    assert_eq!(histogram.iter().map(|b| b.count).sum::<u64>(), 300);
    assert!(histogram.windows(2).all(|w| w[0].mark <= w[1].mark));
    assert!((histogram.iter().map(|b| b.frequency).sum::<f64>() - 1.0).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_uses_ghz_field_names() {
    let app = spawn_app().await;

    let report = load(&[
        "--call",
        "suppress.v1.Suppression.GetReceipt",
        "-n",
        "20",
        "-c",
        "2",
        "-d",
        r#"{"receiptId":"{{newUUID}}"}"#,
        "-m",
        r#"{"x-request":"{{.RequestNumber}}"}"#,
        "--insecure",
        &app.addr.to_string(),
    ])
    .await;
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();

    for field in [
        "date",
        "endReason",
        "options",
        "count",
        "total",
        "average",
        "fastest",
        "slowest",
        "rps",
        "errorDistribution",
        "statusCodeDistribution",
        "latencyDistribution",
        "histogram",
        "details",
    ] {
        assert!(json.get(field).is_some(), "no {field} in {json}");
    }
    assert_eq!(json["endReason"], "normal");
    assert_eq!(json["statusCodeDistribution"]["NotFound"], 20);
    // As in ghz: no successful call, so no latency distribution.
    assert!(json["latencyDistribution"].is_null());
    for field in [
        "host",
        "call",
        "insecure",
        "total",
        "concurrency",
        "connections",
        "CPUs",
    ] {
        assert!(json["options"].get(field).is_some(), "no options.{field}");
    }
    let detail = &json["details"][0];
    for field in ["timestamp", "latency", "error", "status"] {
        assert!(detail.get(field).is_some(), "no details[0].{field}");
    }
    assert_eq!(detail["status"], "NotFound");
    // The summary is ghz's text.
    let summary = report.summary();
    assert!(summary.contains("Summary:\n  Count:\t20\n"), "{summary}");
    assert!(summary.contains("Status code distribution:\n  [NotFound]   20 responses"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_paces_requests_and_reports_latency_from_intended_start() {
    let app = spawn_app().await;
    app.wait_cache_complete().await;

    let report = load(&[
        "--call",
        "suppress.v1.Suppression.CheckSuppressed",
        "--rps",
        "200",
        "-z",
        "300ms",
        "-c",
        "4",
        "-d",
        r#"{"recipient":{"userId":"u{{.RequestNumber}}"},"scope":{"channel":"CHANNEL_PUSH","topic":"t"}}"#,
        "--insecure",
        &app.addr.to_string(),
    ])
    .await;

    assert_eq!(report.end_reason, bench::report::EndReason::Timeout);
    // Request k is due at k/200 s: at most 61 can start within 300 ms, however fast the server
    // (a few more may be counted when timer wake-ups on a loaded machine blur the deadline).
    assert!(report.count > 0 && report.count <= 66, "{}", report.count);
    let open = report.open_loop.expect("an open-loop section");
    assert_eq!(open.latency_distribution.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_suite_smoke_mode_runs() {
    let out = tempfile::tempdir().unwrap();
    let mut settings = suite::SuiteSettings::defaults(true);
    settings.out = out.path().to_owned();
    // The service binary that `cargo test --workspace` builds beside this crate's own.
    let bench_bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_suppressd-bench"));
    let server_bin = bench_bin.with_file_name("suppressd");
    assert!(
        server_bin.exists(),
        "{} is missing: run the workspace's tests (`cargo test --workspace`)",
        server_bin.display()
    );
    settings.server_bin = Some(server_bin);
    settings.bench_bin = Some(bench_bin);
    settings.thresholds = concat!(env!("CARGO_MANIFEST_DIR"), "/thresholds.json").into();

    let report = suite::run(&settings).await.expect("the smoke suite runs");

    let thresholds = suite::read_thresholds(&settings.thresholds).unwrap();
    for id in thresholds.keys() {
        assert!(report.rows.iter().any(|r| &r.id == id), "no row for {id}");
    }
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(report.runs.values().all(|r| r.count > 0));
    assert!(out.path().join("report.json").exists());
    assert!(out.path().join("report.md").exists());
}

/// `bench-baseline --otlp-sink` (the collector of `scripts/trace-instructions`) accepts trace
/// exports; without the flag the baseline serves only the suppression service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_accepts_trace_exports_only_as_a_sink() {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::{
            ExportTraceServiceRequest, trace_service_client::TraceServiceClient,
        },
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); 3],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    for sink in [true, false] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let serving = tokio::spawn(bench::baseline::serve(
            listener,
            sink,
            stop.clone().cancelled_owned(),
        ));
        let mut client = TraceServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let exported = client.export(request.clone()).await;
        match sink {
            true => assert!(exported.is_ok(), "{exported:?}"),
            false => assert_eq!(exported.unwrap_err().code(), tonic::Code::Unimplemented),
        }
        stop.cancel();
        serving.await.unwrap().unwrap();
    }
}

/// Every ghz configuration in deploy/ghz/, read by `--config` as ghz reads it, runs against a live
/// server: a short run each, the key from a metadata file (`-M`, as the configs' `metadata-file`
/// names one), the host and counts overridden on the command line as one would with ghz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghz_configs_run_by_config_against_a_live_server() {
    let app = spawn_app().await;
    let host = app.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("metadata.json");
    std::fs::write(
        &metadata,
        format!(r#"{{"authorization":"Bearer {ADMIN_KEY}"}}"#),
    )
    .unwrap();
    let configs = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/ghz");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(configs).unwrap() {
        let path = entry.unwrap().path();
        // metadata.json is the key file deploy/ghz/write-metadata writes, not a configuration.
        if path.extension().is_none_or(|e| e != "json" && e != "toml")
            || path.ends_with("metadata.json")
        {
            continue;
        }
        let config = path.to_str().unwrap();
        let settings = BenchSettings::from_args([
            "--config",
            config,
            "-M",
            metadata.to_str().unwrap(),
            "-n",
            "12",
            "-c",
            "3",
            &host,
        ])
        .unwrap_or_else(|e| panic!("{config}: {e}"));
        assert!(
            settings.insecure,
            "{config}: the compose stack speaks plaintext"
        );
        let report = bench::run(&settings, CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{config}: {e:#}"));
        assert_eq!(report.count, 12, "{config}");
        // GetReceipt of random ids is NOT_FOUND by design; anything else must be answered OK.
        for (code, n) in &report.status_code_distribution {
            assert!(
                code == "OK" || (code == "NotFound" && config.ends_with("get-receipt.json")),
                "{config}: {n} x {code}: {:?}",
                report.error_distribution
            );
        }
        seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "check-batch.json",
            "check.json",
            "get-receipt.json",
            "opt-out.json"
        ]
    );
}

/// ghz's TOML form of a configuration reads like its JSON form, and command-line flags override it.
#[test]
fn a_toml_config_reads_like_json_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("halt.toml");
    std::fs::write(
        &path,
        r#"
call = "suppress.v1.Suppression.ListControls"
host = "127.0.0.1:50051"
insecure = true
total = 500
concurrency = 4
metadata-file = "deploy/ghz/metadata.json"
[data]
tenant = "acme"
include_ended = true
"#,
    )
    .unwrap();
    let s = BenchSettings::from_args(["--config", path.to_str().unwrap(), "-n", "7"]).unwrap();
    assert_eq!(s.call().unwrap(), "suppress.v1.Suppression.ListControls");
    assert_eq!(s.host().unwrap(), "127.0.0.1:50051");
    assert_eq!((s.total, s.concurrency), (7, 4));
    assert!(s.insecure);
    let data: serde_json::Value = serde_json::from_str(s.data.as_deref().unwrap()).unwrap();
    assert_eq!(data["include_ended"], true);
    let s = BenchSettings::from_args(["--config", path.to_str().unwrap(), "10.0.0.1:1"]).unwrap();
    assert_eq!(s.host().unwrap(), "10.0.0.1:1");
    std::fs::write(&path, "call = \"x\"\nproto-typo = 1\n").unwrap();
    let err = BenchSettings::from_args(["--config", path.to_str().unwrap()]).unwrap_err();
    assert!(err.to_string().contains("proto-typo"), "{err}");
}

/// Any RPC of the service is callable by reflection, the client-streaming import included: the
/// data array is the stream, as in ghz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_rpc_is_callable_including_a_client_stream() {
    let app = spawn_app().await;
    let host = app.addr.to_string();
    let report = load(&[
        "--call",
        "suppress.v1.Suppression.ListControls",
        "-n",
        "5",
        "-c",
        "1",
        "-d",
        r#"{"tenant":"acme","includeEnded":true}"#,
        "--insecure",
        &host,
    ])
    .await;
    assert_eq!(report.status_code_distribution, [("OK".into(), 5)].into());
    let report = load(&[
        "--call",
        "suppress.v1.Suppression.ImportSuppressions",
        "-n",
        "2",
        "-c",
        "1",
        "-d",
        r#"[{"line":1,"recipient":{"email":"imp-{{.RequestNumber}}-a@example.com"},"scope":{"tenant":"imp"},"reason":"REASON_LEGAL"},
            {"line":2,"recipient":{"email":"imp-{{.RequestNumber}}-b@example.com"},"scope":{"tenant":"imp"},"reason":"REASON_LEGAL"}]"#,
        "--insecure",
        &host,
    ])
    .await;
    assert_eq!(
        report.status_code_distribution,
        [("OK".into(), 2)].into(),
        "{:?}",
        report.error_distribution
    );
    // Two calls, each a stream of two rows: four records.
    assert_eq!(app.rows().await, 4);
}

/// The load generator speaks TLS as ghz does (`--cacert`, `--cname`): every call through it is
/// answered, and it refuses to start without a CA to verify the server against, or with the wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_verifies_the_server_and_loads_it_over_tls() {
    let pki = harness::Pki::new();
    let app = pki.app().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("bench-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let host = app.addr.to_string();
    let metadata = format!(r#"{{"authorization":"Bearer {ADMIN_KEY}"}}"#);
    let settings = |tls: &[&str]| {
        let mut args = vec![
            "--call",
            "suppress.v1.Suppression.CheckSuppressed",
            "-n",
            "20",
            "-c",
            "2",
            "-m",
            &metadata,
            "-d",
            r#"{"recipient":{"email":"tls@example.com"},"scope":{"tenant":"t","channel":"CHANNEL_EMAIL","topic":"news"}}"#,
        ];
        args.extend_from_slice(tls);
        args.push(&host);
        BenchSettings::from_args(args).unwrap()
    };
    let run = async |s: BenchSettings| bench::run(&s, CancellationToken::new()).await;

    let ca_path = ca.to_str().unwrap();
    let report = run(settings(&["--cacert", ca_path, "--cname", "localhost"]))
        .await
        .unwrap();
    assert_eq!(report.count, 20);
    assert_eq!(
        report.status_code_distribution,
        [("OK".into(), 20)].into(),
        "{:?}",
        report.error_distribution
    );

    let refused = run(settings(&[])).await.unwrap_err();
    assert!(format!("{refused:#}").contains("--cacert"), "{refused:#}");
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, harness::Pki::new().ca_pem).unwrap();
    let refused = run(settings(&[
        "--cacert",
        other_ca.to_str().unwrap(),
        "--cname",
        "localhost",
    ]))
    .await;
    assert!(
        refused.is_err(),
        "a server signed by another CA was trusted"
    );
}
