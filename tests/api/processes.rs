//! Real processes for the failure tests: a private `redis-server`, a private PostgreSQL cluster and
//! `suppressd serve` replicas, each on a free port, each killed or stopped for real. The shared
//! instances are never touched by these.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not come up");
}

/// A `redis-server` of one test's own, without persistence: a restart comes back empty.
pub struct PrivateRedis {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let mut redis = PrivateRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port: empty, or from the last [`PrivateRedis::snapshot`].
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let url = self.url();
        wait_for("redis-server", || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        })
        .await;
    }

    /// Writes a snapshot (`SAVE`); the next restart loads it, as a stale node would come back.
    pub fn snapshot(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let _: () = redis::cmd("SAVE").query(&mut conn).unwrap();
    }

    /// SIGKILL: no goodbye, no save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn pg_bin(tool: &str) -> PathBuf {
    let dir = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .unwrap_or_else(|| PathBuf::from(PG_BIN));
    dir.join(tool)
}

/// Runs a PostgreSQL tool as the `postgres` user (initdb refuses root).
fn as_postgres(tool: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg_bin(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"))
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// One initdb per test binary; every private cluster starts as a copy of it.
fn pg_template() -> &'static Path {
    static TEMPLATE: OnceLock<TempDir> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            chown_postgres(dir.path());
            let data = dir.path().join("data");
            let out = as_postgres(
                "initdb",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                ],
            );
            assert!(
                out.status.success(),
                "initdb: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            dir
        })
        .path()
}

/// A PostgreSQL cluster of one test's own, which the test may stop and start.
pub struct PrivatePostgres {
    pub port: u16,
    dir: TempDir,
}

impl PrivatePostgres {
    pub async fn start() -> PrivatePostgres {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(pg_template().join("data"))
            .arg(dir.path().join("data"))
            .status()
            .unwrap();
        assert!(status.success());
        chown_postgres(dir.path());
        let pg = PrivatePostgres {
            port: free_port(),
            dir,
        };
        pg.start_again().await;
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let out = as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl stop -m immediate`: the server goes away as if it crashed.
    pub fn stop_immediate(&self) {
        let _ = as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop_immediate();
    }
}

/// A `suppressd serve` process.
pub struct Replica {
    pub addr: SocketAddr,
    pub pid: u32,
    child: Child,
    /// Every line the replica logged so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The environment of a replica: where its stores are, and its tunables.
#[derive(Clone)]
pub struct ReplicaConfig {
    pub env: Vec<(String, String)>,
}

impl ReplicaConfig {
    pub fn new(store_url: &str, redis_url: &str, prefix: &str) -> ReplicaConfig {
        let env = [
            ("SUPPRESSD_LISTEN", "127.0.0.1:0"),
            ("SUPPRESSD_STORE_URL", store_url),
            ("SUPPRESSD_REDIS_URL", redis_url),
            ("SUPPRESSD_REDIS_PREFIX", prefix),
            ("SUPPRESSD_PEPPER", crate::helpers::PEPPER),
            // Authentication on, as in production: the harness's key file, the admin key on calls.
            ("SUPPRESSD_KEYS", crate::helpers::shared_key_file()),
            ("SUPPRESSD_CACHE_BUCKET_BITS", "6"),
            ("SUPPRESSD_WORKER_CLAIM_IDLE_MS", "500"),
            ("SUPPRESSD_DURABLE_WAIT_MS", "2000"),
            ("SUPPRESSD_SHUTDOWN_GRACE_MS", "3000"),
            ("SUPPRESSD_LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
        ];
        ReplicaConfig {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> ReplicaConfig {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }
}

impl Replica {
    /// Starts a replica and waits until it listens. Panics if it exits first.
    pub async fn start(config: &ReplicaConfig) -> Replica {
        Self::try_start(config).await.expect("the replica starts")
    }

    pub async fn try_start(config: &ReplicaConfig) -> Result<Replica, String> {
        Self::try_start_binary(Path::new(env!("CARGO_BIN_EXE_suppressd")), config).await
    }

    /// Starts another build of the server (another release's binary) with the same environment.
    pub async fn try_start_binary(
        binary: &Path,
        config: &ReplicaConfig,
    ) -> Result<Replica, String> {
        let mut child = Command::new(binary)
            .arg("serve")
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let stderr = tokio::process::ChildStderr::from_std(child.stderr.take().unwrap()).unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let addr = loop {
            match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    if line.contains("suppressd ready to serve") {
                        break ready_addr(&line);
                    }
                    seen.push(line);
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(seen.join("\n"));
                }
            }
        };
        // Keep draining its log so the pipe never fills; show warnings when a test wants them.
        let verbose = std::env::var_os("SUPPRESSD_TEST_LOGS").is_some();
        let log = std::sync::Arc::new(std::sync::Mutex::new(seen));
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if verbose {
                    eprintln!("[replica {pid}] {line}");
                }
                kept.lock().unwrap().push(line);
            }
        });
        Ok(Replica {
            addr,
            pid,
            child,
            log,
        })
    }

    /// What the replica logged so far (standard error, one line each).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// A client that sends the admin key with every call.
    pub async fn client(&self) -> crate::helpers::Client {
        crate::helpers::connect(self.addr).await
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The lines it logged at WARN or ERROR so far (JSON log format).
    pub fn warnings(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| {
                line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"")
            })
            .cloned()
            .collect()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as an orchestrator stops a pod.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit status.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("replica {} did not exit", self.pid);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the start-up line says the server listens, in either log format.
fn ready_addr(line: &str) -> SocketAddr {
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        return v["fields"]["addr"].as_str().unwrap().parse().unwrap();
    }
    let addr = line
        .split("addr=")
        .nth(1)
        .expect("the line names its address");
    addr.split_whitespace().next().unwrap().parse().unwrap()
}

/// A TCP proxy in front of a server that a test can cut and mend: while cut, every connection
/// through it, open or new, fails at once, as when a partition separates one replica from Redis
/// while the others still reach it.
pub struct Partition {
    pub port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Partition {
    pub async fn to(upstream: &str) -> Partition {
        let upstream: SocketAddr = upstream.trim_start_matches("redis://").parse().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watching) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut cut = watching.clone();
                if *cut.borrow() {
                    continue; // dropped: refused
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Partition { port, cut }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn mend(&self) {
        self.cut.send_replace(false);
    }
}
