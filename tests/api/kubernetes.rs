//! The Kubernetes base's pod starts and its probes ask what they mean to. No cluster here, so the
//! test does what the kubelet would: the container's args after the image's entrypoint, the
//! environment from the ConfigMap (`envFrom`) and the container's `env` (Secret keys given test
//! values, the pod's name for `fieldRef`), the key file Secret mounted where the pod mounts it; then
//! it asks each gRPC probe's service on the probe's port. Schemas and references are checked by
//! `scripts/check-k8s` in `.ci/run`.

use crate::{deploy::read, helpers::*, processes::free_port};
use std::{collections::BTreeMap, process::Stdio, time::Duration};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

type Yaml = serde_yaml::Value;

fn manifest(name: &str) -> Yaml {
    serde_yaml::from_str(&read(&format!("deploy/k8s/{name}"))).unwrap()
}

fn text(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A fresh audit signing key, as `suppressd audit keygen` prints it.
fn audit_signing_key() -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(["audit", "keygen", "--name", "k8s-test"])
        .output()
        .unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let key = printed.lines().find(|l| l.starts_with("PRIVATE+KEY+"));
    key.expect("keygen prints a private key").to_owned()
}

async fn probe(port: u16, service: &str) -> Option<ServingStatus> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .ok()?;
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let reply = HealthClient::new(channel).check(request).await.ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_pod_starts_and_answers_its_probes() {
    let (deployment, config) = (manifest("deployment.yaml"), manifest("configmap.yaml"));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let db = TestDb::new(Backend::Postgres).await;
    let secrets: BTreeMap<(&str, &str), String> = [
        (("suppressd-secrets", "pepper"), PEPPER.to_owned()),
        (("suppressd-secrets", "store-url"), db.url.clone()),
        (
            ("suppressd-secrets", "audit-signing-key"),
            audit_signing_key(),
        ),
    ]
    .into();

    // The key file Secret, where the pod mounts it.
    let keys_dir = tempfile::tempdir().unwrap();
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "keys")
        .expect("the key file is mounted");
    let mount_path = text(&mount["mountPath"]);
    let key_file = keys_dir.path().join("keys.toml");
    std::fs::write(&key_file, key_file_text(&[])).unwrap();
    let local_path = |v: &str| v.replace(&mount_path, keys_dir.path().to_str().unwrap());

    // envFrom the ConfigMap, then env; hosts and ports mapped to this machine.
    let mut env = BTreeMap::new();
    let mut grpc_port = None;
    for (k, v) in config["data"].as_mapping().unwrap() {
        let (k, v) = (text(k), local_path(&text(v)));
        let v = if let Ok(addr) = v.parse::<std::net::SocketAddr>() {
            let port = free_port();
            if addr.port() == 50051 {
                grpc_port = Some(port);
            }
            assert!(
                !addr.ip().is_loopback(),
                "{k}: a pod listens beyond loopback"
            );
            format!("{}:{port}", addr.ip())
        } else if v == "redis://redis:6379" {
            redis_url().to_owned()
        } else {
            assert!(
                !v.contains("://"),
                "{k}={v}: the test maps no stand-in for it"
            );
            v
        };
        env.insert(k, v);
    }
    for var in container["env"].as_sequence().unwrap() {
        let name = text(&var["name"]);
        let value = if let Some(secret) = var["valueFrom"].get("secretKeyRef") {
            let (secret, key) = (text(&secret["name"]), text(&secret["key"]));
            secrets[&(secret.as_str(), key.as_str())].clone()
        } else if var["valueFrom"].get("fieldRef").is_some() {
            "suppressd-7d9f8-abcde".to_owned()
        } else {
            text(&var["value"])
        };
        env.insert(name, value);
    }
    let grpc_port = grpc_port.expect("the ConfigMap sets the gRPC listen address");
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());

    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(&args)
        .env_clear()
        .envs(&env)
        .env("SUPPRESSD_REDIS_PREFIX", &prefix)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(line))) if line.contains("suppressd ready to serve") => break,
            Ok(Ok(Some(line))) => seen.push(line),
            _ => panic!("the pod's container did not start:\n{}", seen.join("\n")),
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    for kind in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let grpc = &container[kind]["grpc"];
        assert_eq!(text(&grpc["port"]), "50051", "{kind} asks the gRPC port");
        let service = grpc.get("service").map(text).unwrap_or_default();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while probe(grpc_port, &service).await != Some(ServingStatus::Serving) {
            assert!(
                std::time::Instant::now() < deadline,
                "{kind} ({service:?}) never SERVING"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The metrics port the scrape annotation names answers.
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(text(&annotations["prometheus.io/port"]), "9090");
    let admin: std::net::SocketAddr = env["SUPPRESSD_ADMIN_LISTEN"].parse().unwrap();
    let metrics = std::net::TcpStream::connect(("127.0.0.1", admin.port()));
    assert!(metrics.is_ok(), "the metrics port listens");

    let _ = child.kill().await;
    delete_prefix(redis_url(), &prefix);
}
