//! `deploy/compose.yaml` and `deploy/Dockerfile` start what they promise. There is no container
//! engine here, so the test does what the engine would: it reads the image's entrypoint, `ENV` and
//! `HEALTHCHECK`, and each service's entrypoint, command, environment and volumes, maps what only
//! exists inside the stack onto this machine (compose hosts to local Redis and PostgreSQL, named
//! volumes to directories, listen ports to free ones on the same interface), and runs the real
//! binary with exactly that. A compose file whose suppressd cannot start fails here.

use crate::{deploy::read, helpers::*, processes::free_port};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Stdio,
    time::Duration,
};
use suppressd::proto;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

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

type Yaml = serde_yaml::Value;

fn compose() -> Yaml {
    serde_yaml::from_str(&read("deploy/compose.yaml")).expect("valid YAML")
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("a list (the exec form) expected: {v:?}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A service's environment (a mapping), in file order.
fn environment(service: &Yaml) -> Vec<(String, String)> {
    service["environment"]
        .as_mapping()
        .map(|m| m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect())
        .unwrap_or_default()
}

/// What runs inside the stack, mapped onto this machine. Anything else that names a compose host
/// fails the test, so a new dependency in compose.yaml gets mapped here, never run against nothing.
struct Mapping {
    services: BTreeSet<String>,
    /// compose host → the URL of its local stand-in (scheme included).
    hosts: BTreeMap<String, String>,
    volumes: BTreeMap<String, tempfile::TempDir>,
}

impl Mapping {
    fn new(compose: &Yaml, hosts: BTreeMap<String, String>) -> Mapping {
        Mapping {
            services: compose["services"]
                .as_mapping()
                .unwrap()
                .keys()
                .map(scalar)
                .collect(),
            hosts,
            volumes: compose["volumes"]
                .as_mapping()
                .unwrap()
                .keys()
                .map(|name| (scalar(name), tempfile::tempdir().unwrap()))
                .collect(),
        }
    }

    /// One URL whose host is a compose service: its stand-in.
    fn url(&self, key: &str, url: &str) -> Option<String> {
        let rest = url.split_once("://")?.1;
        let authority = rest.split('/').next().unwrap();
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, h)| h)
            .split(':')
            .next()
            .unwrap();
        if !self.services.contains(host) {
            return None;
        }
        let local = self.hosts.get(host);
        Some(
            local
                .unwrap_or_else(|| panic!("{key}={url}: the test maps no stand-in for {host}"))
                .clone(),
        )
    }

    fn value(&self, key: &str, value: &str) -> String {
        if let Ok(addr) = value.parse::<std::net::SocketAddr>() {
            return format!("{}:{}", addr.ip(), free_port());
        }
        let parts: Vec<&str> = value.split(',').collect();
        let mapped: Vec<Option<String>> = parts.iter().map(|p| self.url(key, p)).collect();
        if mapped.iter().any(Option::is_some) {
            return parts
                .iter()
                .zip(mapped)
                .map(|(p, m)| m.unwrap_or_else(|| p.to_string()))
                .collect::<Vec<_>>()
                .join(",");
        }
        for host in &self.services {
            assert!(
                !value.contains(&format!("{host}:")),
                "{key}={value} names the compose host {host}, which the test does not map"
            );
        }
        value.to_owned()
    }

    /// A path inside a container, on this machine: its named volume's directory.
    fn path(&self, service: &Yaml, text: &str) -> String {
        let mut text = text.to_owned();
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let mut parts = volume.as_str().unwrap().split(':');
            let (source, target) = (parts.next().unwrap(), parts.next().unwrap());
            if let Some(dir) = self.volumes.get(source) {
                text = text.replace(target, dir.path().to_str().unwrap());
            }
        }
        text
    }

    /// The image's environment overridden by the service's, mapped.
    fn env(&self, image: &Image, service: &Yaml) -> BTreeMap<String, String> {
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
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{}:{path}", bin.display())
}

/// Runs the one-shot `keys` service (twice: the second run keeps what the first made); the API key.
fn run_keys_service(compose: &Yaml, image: &Image, mapping: &Mapping) -> String {
    let keys = &compose["services"]["keys"];
    let run = || {
        let mut argv: Vec<String> = strings(&keys["entrypoint"]);
        argv.extend(strings(&keys["command"]));
        let argv: Vec<String> = argv.iter().map(|a| mapping.path(keys, a)).collect();
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(mapping.env(image, keys))
            .env("PATH", path_with_suppressd())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the keys service failed: {stderr}");
    };
    run();
    let dir = mapping.volumes["keys"].path();
    let made = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let (key_file, api_key) = (made("keys.toml"), made("api-key"));
    run();
    assert_eq!(
        made("keys.toml"),
        key_file,
        "a second run keeps the key file"
    );
    assert_eq!(made("api-key"), api_key);
    api_key.trim().to_owned()
}

/// A compose service running the image: the process (killed on drop) and where it listens.
struct Running {
    _child: tokio::process::Child,
    addr: String,
}

/// Starts `name` as the container would: the image's entrypoint, the service's command (or the
/// image's), the image's `ENV` and the service's environment, mapped; plus a key prefix of the
/// test's own on the shared Redis (the one addition). Waits until it serves.
async fn run_service(compose: &Yaml, image: &Image, mapping: &Mapping, name: &str) -> Running {
    let service = &compose["services"][name];
    assert!(image.entrypoint[0].ends_with("/suppressd"));
    let mut args = image.entrypoint[1..].to_vec();
    args.extend(service.get("command").map_or(image.cmd.clone(), strings));
    let env = mapping.env(image, service);
    let listen: std::net::SocketAddr = env["SUPPRESSD_LISTEN"].parse().unwrap();
    assert!(
        !listen.ip().is_loopback(),
        "a container listens beyond loopback"
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(args.iter().map(|a| mapping.path(service, a)))
        .env_clear()
        .envs(&env)
        .env("PATH", path_with_suppressd())
        .env(
            "SUPPRESSD_REDIS_PREFIX",
            format!("t{}:", uuid::Uuid::new_v4().simple()),
        )
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
            _ => panic!("compose service {name} did not start:\n{}", seen.join("\n")),
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let exposed = seen
        .iter()
        .find(|l| l.contains("is open to group or others"));
    assert!(
        exposed.is_none(),
        "the generated key file is private: {exposed:?}"
    );
    Running {
        _child: child,
        addr: format!("127.0.0.1:{}", listen.port()),
    }
}

/// The image's HEALTHCHECK as the container runtime runs it, then calls with the generated key: an
/// opt-out, a check that it holds, and no check without a key.
async fn healthy_and_answers(image: &Image, running: &Running, api_key: &str) {
    assert_eq!(image.healthcheck[..2], ["suppressd", "health"]);
    let health = tokio::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(&image.healthcheck[1..])
        .env("SUPPRESSD_SERVER", &running.addr)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&health.stderr);
    assert!(health.status.success(), "HEALTHCHECK: {stderr}");

    let channel = Channel::from_shared(format!("http://{}", running.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = client_with(channel.clone(), Some(api_key));
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
        time_zone: String::new(),
        recipient: Some(email("compose@example.com")),
        scope: Some(scope("acme", proto::Channel::Email, "recall", "")),
        purpose: 0,
    };
    let answer = client.check_suppressed(check.clone()).await.unwrap();
    assert!(answer.into_inner().suppressed);
    let refused = client_with(channel, None)
        .check_suppressed(check)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_starts_authenticated_and_answers_with_its_generated_key() {
    let (compose, image) = (compose(), image());
    let db = TestDb::new(Backend::Postgres).await;
    let hosts = [
        ("redis", redis_url().to_owned()),
        ("postgres", db.url.clone()),
        (
            "otel-collector",
            format!("http://127.0.0.1:{}", free_port()),
        ),
    ];
    let hosts = hosts.map(|(h, u)| (h.to_owned(), u)).into();
    let mapping = Mapping::new(&compose, hosts);
    let api_key = run_keys_service(&compose, &image, &mapping);
    let running = run_service(&compose, &image, &mapping, "suppressd").await;
    healthy_and_answers(&image, &running, &api_key).await;
}

/// The `cluster` profile's Redis nodes: redis-server with each node's own command, on free ports.
struct ClusterNodes {
    children: Vec<std::process::Child>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Drop for ClusterNodes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The services of the `cluster` profile whose command runs redis-server in cluster mode.
fn cluster_nodes(compose: &Yaml) -> BTreeMap<String, Vec<String>> {
    let services = compose["services"].as_mapping().unwrap();
    services
        .iter()
        .filter(|(_, s)| {
            s.get("profiles")
                .is_some_and(|p| strings(p).iter().any(|p| p == "cluster"))
        })
        .filter_map(|(name, s)| {
            let command = strings(s.get("command")?);
            let clustered = command
                .windows(2)
                .any(|w| w == ["--cluster-enabled", "yes"]);
            clustered.then(|| (scalar(name), command))
        })
        .collect()
}

/// The `cluster` profile: its suppressd runs in cluster mode, seeded with every node of the cluster
/// the init service creates, and keeps a store of its own.
#[test]
fn the_cluster_profile_seeds_suppressd_with_every_node_of_its_cluster() {
    let compose = compose();
    let nodes: BTreeSet<String> = cluster_nodes(&compose).into_keys().collect();
    assert!(nodes.len() >= 3, "a cluster of three masters: {nodes:?}");
    let init = strings(&compose["services"]["redis-cluster-init"]["command"]).join(" ");
    assert!(init.contains("--cluster create"));
    let env: BTreeMap<_, _> = environment(&compose["services"]["suppressd-cluster"])
        .into_iter()
        .collect();
    assert_eq!(env["SUPPRESSD_REDIS_CLUSTER"], "true");
    let seeds: BTreeSet<String> = env["SUPPRESSD_REDIS_URL"]
        .split(',')
        .map(|url| {
            let authority = url.strip_prefix("redis://").unwrap();
            authority.split(':').next().unwrap().to_owned()
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
        env["SUPPRESSD_STORE_URL"], standalone["SUPPRESSD_STORE_URL"],
        "two caches never share one store"
    );
}

/// The `cluster` profile's suppressd, run on a local cluster made of the profile's own node
/// commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_cluster_profile_starts_on_a_redis_cluster() {
    let (compose, image) = (compose(), image());
    let mut nodes = ClusterNodes {
        children: Vec::new(),
        _dirs: Vec::new(),
    };
    let mut hosts = BTreeMap::new();
    let mut addresses = Vec::new();
    for (name, command) in cluster_nodes(&compose) {
        // A free port can be taken by another test before the node binds it: then the node
        // exits, and it is started again on another port.
        let mut attempts = 0;
        let (port, child, dir) = loop {
            let (port, dir) = (free_port(), tempfile::tempdir().unwrap());
            let mut child = std::process::Command::new(&command[0])
                .args(&command[1..])
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            if answers_ping(port, &mut child).await {
                break (port, child, dir);
            }
            attempts += 1;
            assert!(
                attempts < 3,
                "redis-server for {name} did not start on three ports"
            );
        };
        nodes.children.push(child);
        nodes._dirs.push(dir);
        hosts.insert(name, format!("redis://127.0.0.1:{port}"));
        addresses.push(format!("127.0.0.1:{port}"));
    }
    let created = std::process::Command::new("redis-cli")
        .args(["--cluster", "create", "--cluster-yes"])
        .args(&addresses)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    for address in &addresses {
        let port = address.rsplit_once(':').unwrap().1;
        wait_for_redis(&["-p", port, "cluster", "info"], "cluster_state:ok").await;
    }
    let mapping = Mapping::new(&compose, hosts);
    let api_key = run_keys_service(&compose, &image, &mapping);
    let running = run_service(&compose, &image, &mapping, "suppressd-cluster").await;
    healthy_and_answers(&image, &running, &api_key).await;
}

/// Whether the node on `port` answers `PING` (within 30 s) before its process exits.
async fn answers_ping(port: u16, child: &mut std::process::Child) -> bool {
    for _ in 0..600 {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "ping"])
            .output();
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG")) {
            return true;
        }
        if child.try_wait().is_ok_and(|status| status.is_some()) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server on port {port} neither answered nor exited in 30 s");
}

/// Waits until `redis-cli ARGS…` prints `expected`.
async fn wait_for_redis(args: &[&str], expected: &str) {
    for _ in 0..600 {
        let out = std::process::Command::new("redis-cli").args(args).output();
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(expected)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-cli {args:?} never said {expected}");
}
