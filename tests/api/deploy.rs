//! The operations files stay true to the code: the Grafana dashboard parses and charts only metrics
//! that exist, and the README documents every metric. (YAML is linted by `.ci/run` with yamllint.)

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};
use suppressd::telemetry::metrics::names;

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap()
}

/// Every `suppressd_…` metric a text mentions, with the series suffixes Prometheus adds removed.
fn metrics_named_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("suppressd_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if name == "suppressd_" {
            continue; // the prefix alone, as in `grep '^suppressd_'`
        }
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| names::ALL.contains(b)))
            .unwrap_or(&name);
        found.insert(base.to_owned());
    }
    found
}

#[test]
fn the_dashboard_parses_and_charts_only_metrics_that_exist() {
    let text = read("deploy/grafana/dashboards/suppressd.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let charted = metrics_named_in(&text);
    for name in &charted {
        assert!(names::ALL.contains(&name.as_str()), "unknown metric {name}");
    }
    // Every metric is on the dashboard.
    for name in names::ALL {
        assert!(charted.contains(*name), "{name} is not charted");
    }
}

#[test]
fn the_operations_guide_documents_every_metric() {
    let documented = metrics_named_in(&read("docs/operations.md"));
    for name in names::ALL {
        assert!(
            documented.contains(*name),
            "docs/operations.md does not mention {name}"
        );
    }
    for name in &documented {
        assert!(
            names::ALL.contains(&name.as_str()),
            "docs/operations.md names unknown {name}"
        );
    }
}

/// The last stage of `deploy/Dockerfile`, as a container runtime reads it.
struct Image {
    env: Vec<(String, String)>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
}

fn json_array(text: &str) -> Vec<String> {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not a JSON array {text:?}: {e}"))
}

fn image() -> Image {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("deploy/Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => instructions.push(std::mem::take(&mut current) + line),
        }
    }
    let last = instructions
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .unwrap();
    let mut image = Image {
        env: Vec::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        healthcheck: Vec::new(),
    };
    for instruction in &instructions[last..] {
        let (keyword, rest) = instruction.split_once(' ').unwrap();
        match keyword {
            "ENV" => image.env.extend(rest.split_whitespace().map(|kv| {
                let (k, v) = kv.split_once('=').expect("ENV KEY=VALUE");
                (k.to_owned(), v.to_owned())
            })),
            "ENTRYPOINT" => image.entrypoint = json_array(rest),
            "CMD" => image.cmd = json_array(rest),
            "HEALTHCHECK" => image.healthcheck = json_array(rest.split_once("CMD ").unwrap().1),
            _ => {}
        }
    }
    image
}

fn compose() -> serde_yaml::Value {
    serde_yaml::from_str(&read("deploy/compose.yaml")).expect("valid YAML")
}

fn strings(v: &serde_yaml::Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("a list (the exec form) expected: {v:?}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn scalar(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A service's environment (a mapping), in file order.
fn environment(service: &serde_yaml::Value) -> Vec<(String, String)> {
    service["environment"]
        .as_mapping()
        .map(|m| m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect())
        .unwrap_or_default()
}

/// What runs in the compose stack's containers, mapped onto this machine: each compose host to a
/// local instance, each named volume to a directory of the test's own, each listen port to a free
/// one (on the same interface). Anything else that names a compose host fails the test, so a new
/// dependency in compose.yaml is mapped here, not silently run against nothing.
struct Mapping {
    hosts: Vec<String>,
    volumes: BTreeMap<String, tempfile::TempDir>,
    store_url: String,
    otlp: String,
}

impl Mapping {
    fn value(&self, key: &str, value: &str) -> String {
        if let Ok(addr) = value.parse::<std::net::SocketAddr>() {
            return format!("{}:{}", addr.ip(), crate::processes::free_port());
        }
        let host = value
            .split_once("://")
            .map(|(_, rest)| rest.rsplit_once('@').map_or(rest, |(_, r)| r))
            .and_then(|rest| rest.split([':', '/']).next())
            .filter(|h| self.hosts.iter().any(|s| s == h));
        match host {
            Some("redis") => crate::helpers::redis_url().to_owned(),
            Some("postgres") => self.store_url.clone(),
            Some("otel-collector") => self.otlp.clone(),
            Some(other) => panic!("{key}={value}: the test maps no local instance for {other}"),
            None => {
                for h in &self.hosts {
                    assert!(
                        !value.contains(&format!("{h}:")),
                        "{key}={value} names the compose host {h}, which the test does not map"
                    );
                }
                value.to_owned()
            }
        }
    }

    /// A path inside a container, on this machine: its named volume's directory.
    fn path(&self, service: &serde_yaml::Value, text: &str) -> String {
        let mut text = text.to_owned();
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let spec = volume.as_str().unwrap();
            let mut parts = spec.split(':');
            let (source, target) = (parts.next().unwrap(), parts.next().unwrap());
            if let Some(dir) = self.volumes.get(source) {
                text = text.replace(target, dir.path().to_str().unwrap());
            }
        }
        text
    }

    /// The image's environment overridden by the service's, mapped.
    fn env(&self, image: &Image, service: &serde_yaml::Value) -> BTreeMap<String, String> {
        let mut env: BTreeMap<_, _> = image.env.iter().cloned().collect();
        env.extend(environment(service));
        env.into_iter()
            .map(|(k, v)| {
                let v = self.value(&k, &self.path(service, &v));
                (k, v)
            })
            .collect()
    }
}

/// PATH with the suppressd under test first, as `suppressd` is on the image's PATH.
fn path_with_suppressd() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_suppressd")).parent().unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_starts_authenticated_and_answers_with_its_generated_key() {
    use crate::helpers::*;
    use suppressd::proto;
    use tokio::io::{AsyncBufReadExt, BufReader};

    let (compose, image) = (compose(), image());
    let services = &compose["services"];
    let db = TestDb::new(Backend::Postgres).await;
    let mapping = Mapping {
        hosts: services.as_mapping().unwrap().keys().map(scalar).collect(),
        volumes: compose["volumes"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|name| (scalar(name), tempfile::tempdir().unwrap()))
            .collect(),
        store_url: db.url.clone(),
        otlp: format!("http://127.0.0.1:{}", crate::processes::free_port()),
    };

    // The one-shot `keys` service, twice: the second run keeps what the first made.
    let keys = &services["keys"];
    let run_keys = || {
        let mut argv: Vec<String> = strings(&keys["entrypoint"]);
        argv.extend(strings(&keys["command"]));
        let argv: Vec<String> = argv.iter().map(|a| mapping.path(keys, a)).collect();
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(mapping.env(&image, keys))
            .env("PATH", path_with_suppressd())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the keys service failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run_keys();
    let key_dir = mapping.volumes["keys"].path();
    let key_file = std::fs::read_to_string(key_dir.join("keys.toml")).unwrap();
    let api_key = std::fs::read_to_string(key_dir.join("api-key")).unwrap();
    run_keys();
    assert_eq!(
        std::fs::read_to_string(key_dir.join("keys.toml")).unwrap(),
        key_file
    );
    assert_eq!(
        std::fs::read_to_string(key_dir.join("api-key")).unwrap(),
        api_key
    );

    // The `suppressd` service: the image's entrypoint, the service's command and environment.
    let service = &services["suppressd"];
    assert!(
        image.entrypoint[0].ends_with("/suppressd"),
        "{:?}",
        image.entrypoint
    );
    let mut args: Vec<String> = image.entrypoint[1..].to_vec();
    args.extend(match service.get("command") {
        Some(command) => strings(command),
        None => image.cmd.clone(),
    });
    let env = mapping.env(&image, service);
    let listen: std::net::SocketAddr = env["SUPPRESSD_LISTEN"].parse().unwrap();
    assert!(
        !listen.ip().is_loopback(),
        "a container listens beyond loopback"
    );
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(args.iter().map(|a| mapping.path(service, a)))
        .env_clear()
        .envs(&env)
        .env("PATH", path_with_suppressd())
        // The one addition: a key prefix of the test's own on the shared Redis.
        .env("SUPPRESSD_REDIS_PREFIX", &prefix)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(line))) if line.contains("suppressd ready to serve") => break,
            Ok(Ok(Some(line))) => seen.push(line),
            _ => panic!("the compose service did not start:\n{}", seen.join("\n")),
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let addr = format!("127.0.0.1:{}", listen.port());

    // The image's HEALTHCHECK, as the container runtime runs it.
    assert_eq!(image.healthcheck[..2], ["suppressd", "health"]);
    let health = tokio::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(&image.healthcheck[1..])
        .env("SUPPRESSD_SERVER", &addr)
        .output()
        .await
        .unwrap();
    assert!(
        health.status.success(),
        "HEALTHCHECK: {}",
        String::from_utf8_lossy(&health.stderr)
    );

    // Calls with the generated key: an opt-out, then a check that it holds; none without a key.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = client_with(channel.clone(), Some(api_key.trim()));
    let receipt = client
        .opt_out(opt_out_request(
            email("compose@example.com"),
            scope("acme", proto::Channel::Email, "", ""),
        ))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert_eq!(receipt.state, proto::ReceiptState::Durable as i32);
    let check = proto::CheckSuppressedRequest {
        recipient: Some(email("compose@example.com")),
        scope: Some(scope("acme", proto::Channel::Email, "recall", "")),
    };
    let answer = client.check_suppressed(check.clone()).await.unwrap();
    assert!(answer.into_inner().suppressed);
    let refused = client_with(channel, None)
        .check_suppressed(check)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let _ = child.kill().await;
    delete_prefix(redis_url(), &prefix);
}

/// The `cluster` profile: its suppressd runs in cluster mode, seeded with every node of the cluster
/// the init service creates, and keeps a store of its own.
#[test]
fn the_cluster_profile_seeds_suppressd_with_every_node_of_its_cluster() {
    let compose = compose();
    let services = compose["services"].as_mapping().unwrap();
    let in_profile = |s: &serde_yaml::Value| {
        s.get("profiles")
            .is_some_and(|p| strings(p).iter().any(|p| p == "cluster"))
    };
    let nodes: BTreeSet<String> = services
        .iter()
        .filter(|(_, s)| in_profile(s))
        .filter(|(_, s)| {
            s.get("command").is_some_and(|c| {
                c.as_sequence().is_some_and(|_| {
                    strings(c)
                        .windows(2)
                        .any(|w| w == ["--cluster-enabled", "yes"])
                })
            })
        })
        .map(|(name, _)| scalar(name))
        .collect();
    assert!(nodes.len() >= 3, "a cluster of three masters: {nodes:?}");
    let init = strings(&compose["services"]["redis-cluster-init"]["command"]).join(" ");
    assert!(init.contains("--cluster create"));
    let suppressd: BTreeMap<_, _> = environment(&compose["services"]["suppressd-cluster"])
        .into_iter()
        .collect();
    assert_eq!(suppressd["SUPPRESSD_REDIS_CLUSTER"], "true");
    let seeds: BTreeSet<String> = suppressd["SUPPRESSD_REDIS_URL"]
        .split(',')
        .map(|url| {
            let host = url
                .strip_prefix("redis://")
                .unwrap()
                .split(':')
                .next()
                .unwrap();
            host.to_owned()
        })
        .collect();
    assert_eq!(seeds, nodes, "the seeds are the cluster's nodes");
    for node in &nodes {
        assert!(init.contains(node.as_str()), "the init joins {node}");
    }
    let standalone: BTreeMap<_, _> = environment(&compose["services"]["suppressd"])
        .into_iter()
        .collect();
    assert_ne!(
        suppressd["SUPPRESSD_STORE_URL"], standalone["SUPPRESSD_STORE_URL"],
        "two caches never share one store"
    );
}
