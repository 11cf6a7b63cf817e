//! The example senders of docs/clients.md run as a developer would run them, against a live server.
//! examples/python (grpcio) and examples/node (@grpc/grpc-js): a check that says "send", an opt-out,
//! its replay with the same idempotency key (the same receipt), a check that now holds the notice,
//! a key without the role and a server that is not there (held: fail-closed). scripts/test installs
//! grpcio into target/pydeps; the Node example is installed from the npm registry into
//! examples/node/node_modules (without node on the machine, that test says so and passes).
//! examples/go and examples/java, the docs' Go and Java snippets, built against the code
//! scripts/check-protos generated: send, opt out, then held with the same receipt.

use crate::helpers::*;
use serde_json::Value;
use std::{path::Path, process::Command};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs one command of a sender; returns its exit code and the JSON line it printed.
fn run(program: &mut Command) -> (i32, Value) {
    let out = program.output().expect("the sender starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let json = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "not one JSON line ({e}): {stdout}\nstderr: {}\n(scripts/test installs grpcio and \
             grpcio-tools into target/pydeps and sets SUPPRESSD_TEST_PYTHONPATH)",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// Asserts a check's decision and its exit code (0 = sent, 3 = held); returns the answer.
fn decided((code, answer): (i32, Value), decision: &str) -> Value {
    let expected = if decision == "send" { 0 } else { 3 };
    assert_eq!(
        (code, answer["decision"].as_str()),
        (expected, Some(decision)),
        "{answer}"
    );
    answer
}

/// The scenario both senders must pass, `sender(server, key, args)` building the command.
async fn check_then_opt_out(sender: impl Fn(&str, &str, &[&str]) -> Command) {
    let app = spawn_app(Backend::Sqlite).await;
    let server = app.addr.to_string();
    let email = format!("ex-{}@example.com", uuid::Uuid::new_v4().simple());
    let check = ["check", "--email", &email, "--topic", "recall"];

    decided(run(&mut sender(&server, CHECK_KEY, &check)), "send");

    let opt_out = ["opt-out", "--email", &email, "--idempotency-key", "unsub-1"];
    let (code, first) = run(&mut sender(&server, WRITE_KEY, &opt_out));
    assert_eq!(code, 0, "{first}");
    let receipt = first["receipt_id"]
        .as_str()
        .expect("a receipt id")
        .to_owned();
    let (code, replay) = run(&mut sender(&server, WRITE_KEY, &opt_out));
    assert_eq!(code, 0, "{replay}");
    assert_eq!(
        replay["receipt_id"],
        receipt.as_str(),
        "same key, same receipt"
    );
    assert_eq!(app.rows(None).await, 1, "the replay recorded nothing new");

    let answer = decided(run(&mut sender(&server, CHECK_KEY, &check)), "hold");
    assert_eq!(answer["why"], "REASON_USER_REQUEST");

    // A key without the check role: PERMISSION_DENIED, so the notice is held.
    decided(run(&mut sender(&server, WRITE_KEY, &check)), "hold");

    // Nobody listening: held, never sent.
    let gone = free_addr();
    let answer = decided(run(&mut sender(&gone, CHECK_KEY, &check)), "hold");
    assert_eq!(answer["why"], "UNAVAILABLE");
}

/// An address on which nothing listens (a port bound, then released).
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_python_sender_checks_before_sending_and_opts_out_once() {
    let pythonpath = std::env::var("SUPPRESSD_TEST_PYTHONPATH").unwrap_or_default();
    check_then_opt_out(|server, key, args| {
        let mut c = Command::new("python3");
        c.arg(Path::new(ROOT).join("examples/python/sender.py"))
            .args(["--server", server, "--api-key", key])
            .args(args)
            .env("PYTHONPATH", &pythonpath);
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_node_sender_checks_before_sending_and_opts_out_once() {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED: node is not installed; the Node example sender was not run");
        return;
    }
    let dir = Path::new(ROOT).join("examples/node");
    if !dir.join("node_modules/@grpc/grpc-js").exists() {
        let npm = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .output()
            .expect("npm runs where node does");
        assert!(
            npm.status.success(),
            "npm install in examples/node failed: {}",
            String::from_utf8_lossy(&npm.stderr)
        );
    }
    check_then_opt_out(|server, key, args| {
        let mut c = Command::new("node");
        c.arg(dir.join("sender.js"))
            .args(["--server", server, "--api-key", key])
            .args(args);
        c
    })
    .await;
}

/// The Go snippet of docs/clients.md (examples/go), built against the code scripts/check-protos
/// generated (target/protos-gen/go) and run twice against a live server: the first run sends and
/// records the opt-out; the second holds the notice, and its opt-out (same idempotency key) gets the
/// same receipt. Without that generated code or a Go toolchain the test says so and passes: CI runs
/// scripts/check-protos, which installs both, before the tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_go_sender_checks_before_sending_and_opts_out_once() {
    let gopath = Path::new(ROOT).join("target/protos-gen/go");
    let module = gopath.join("src/github.com/suppressd/suppressd");
    if !module.join("gen/go/suppress/v1/suppression.pb.go").exists()
        || Command::new("go").arg("version").output().is_err()
    {
        eprintln!("SKIPPED: no Go code generated; run scripts/check-protos first (CI does)");
        return;
    }
    std::fs::create_dir_all(module.join("examples/go")).unwrap();
    std::fs::copy(
        Path::new(ROOT).join("examples/go/main.go"),
        module.join("examples/go/main.go"),
    )
    .unwrap();
    let bin = tempfile::tempdir().unwrap();
    let build = Command::new("go")
        .args(["build", "-o"])
        .arg(bin.path().join("sender"))
        .arg("./examples/go")
        .current_dir(&module)
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:/usr/share/gocode", gopath.display()))
        .env(
            "GOCACHE",
            Path::new(ROOT).join("target/protos-gen/go-cache"),
        )
        .env("GOFLAGS", "")
        .output()
        .expect("go runs");
    assert!(
        build.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&build.stderr)
    );

    let sender = bin.path().join("sender");
    sender_twice(|addr, key| {
        let mut c = Command::new(&sender);
        c.env("SUPPRESSD_ADDR", addr).env("SUPPRESSD_API_KEY", key);
        c
    })
    .await;
}

/// Runs a compiled example sender (Go, Java: a fixed recipient, the server and key from
/// SUPPRESSD_ADDR and SUPPRESSD_API_KEY) twice against a live server: the first run sends and
/// records the opt-out; the second holds the notice, and its opt-out (same idempotency key) gets the
/// same receipt.
async fn sender_twice(sender: impl Fn(&str, &str) -> Command) {
    // One key with both roles a sender needs.
    const SENDER_KEY: &str = "sk_test_sender_00112233445566778899aabbccddeeff";
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("keys.toml");
    std::fs::write(
        &key_file,
        key_file_text(&[(TOKEN_KEY.0, TOKEN_KEY.1, true)])
            + &format!(
                "[[principal]]\nname = \"sender\"\nroles = [\"check\", \"write\"]\nkey_sha256 = [\"{}\"]\n",
                suppressd::auth::hash_key(SENDER_KEY)
            ),
    )
    .unwrap();
    let app = spawn_app_with(Backend::Sqlite, suppressd::domain::Clock::System, |s| {
        s.auth.keys = Some(key_file)
    })
    .await;
    let addr = app.addr.to_string();
    let run_sender = || {
        let out = sender(&addr, SENDER_KEY)
            .output()
            .expect("the sender starts");
        let log = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{log}");
        let receipt = log
            .split("opted out: ")
            .nth(1)
            .unwrap_or_else(|| panic!("no receipt in: {log}"));
        let receipt = receipt
            .trim_start_matches("receipt ")
            .lines()
            .next()
            .unwrap();
        (log.contains("sending"), receipt.trim().to_owned())
    };
    let (sent, first) = run_sender();
    assert!(sent, "the first check says send");
    let (sent, again) = run_sender();
    assert!(!sent, "after the opt-out the notice is held");
    assert_eq!(first, again, "same idempotency key, same receipt");
    assert_eq!(app.rows(None).await, 1);
}

/// The Java snippet of docs/clients.md (examples/java), compiled against the code and classpath
/// scripts/check-protos made (target/protos-gen/java; grpc-java and netty from Debian) and run twice
/// against a live server, as the Go one is. Without them, or without a JDK, the test says so and
/// passes: CI runs scripts/check-protos before the tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_java_sender_checks_before_sending_and_opts_out_once() {
    let generated = Path::new(ROOT).join("target/protos-gen/java");
    let Ok(classpath) = std::fs::read_to_string(generated.join("classpath.txt")) else {
        eprintln!("SKIPPED: no Java code generated; run scripts/check-protos first (CI does)");
        return;
    };
    if Command::new("javac").arg("-version").output().is_err() {
        eprintln!("SKIPPED: no JDK (javac) on this machine");
        return;
    }
    let classes = tempfile::tempdir().unwrap();
    let build = Command::new("javac")
        .args(["-nowarn", "-d"])
        .arg(classes.path())
        .args(["-cp", classpath.trim()])
        .arg(Path::new(ROOT).join("examples/java/SendIfAllowed.java"))
        .output()
        .expect("javac runs");
    assert!(
        build.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let classpath = format!("{}:{}", classes.path().display(), classpath.trim());
    sender_twice(|addr, key| {
        let mut c = Command::new("java");
        c.args(["-cp", &classpath, "SendIfAllowed"])
            .env("SUPPRESSD_ADDR", addr)
            .env("SUPPRESSD_API_KEY", key);
        c
    })
    .await;
}
