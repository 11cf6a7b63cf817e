//! Private Redis topologies on free ports: a 3-master + 3-replica Redis Cluster, and a master with a
//! replica watched by three Sentinels. Each node is a real `redis-server` that dies with the test
//! binary (a watchdog shell waits on the test process), so a static cluster shared by many tests
//! leaves nothing behind.

use crate::processes::free_port;
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use tempfile::TempDir;

/// Starts `redis-server` with `args`; it is killed when this test binary exits.
fn spawn_node(args: &[String]) {
    // The outer shell leaves at once; the watchdog subshell stays with the node.
    let script = format!(
        "(redis-server {} & r=$!; while kill -0 {} 2>/dev/null && kill -0 $r 2>/dev/null; \
         do sleep 0.5; done; kill -9 $r 2>/dev/null) >/dev/null 2>&1 &",
        args.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" "),
        std::process::id()
    );
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("bash is installed");
    assert!(status.success(), "starting redis-server");
}

fn conn(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    client.get_connection_with_timeout(Duration::from_millis(500))
}

/// A command to the node on `port`.
pub fn node_cmd<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    cmd.query(&mut conn(port)?)
}

fn wait(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_ping(port: u16) {
    wait("redis-server answers", Duration::from_secs(30), || {
        node_cmd::<String>(port, &redis::cmd("PING")).is_ok()
    });
}

/// The pid of the `redis-server` on `port`, from its own `INFO`.
fn node_pid(port: u16) -> u32 {
    let info: String = node_cmd(port, redis::cmd("INFO").arg("server")).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("INFO names the process")
}

/// Sends `signal` to the node on `port` (KILL, STOP, CONT); returns its pid.
pub fn signal_node(port: u16, signal: &str) -> u32 {
    let pid = node_pid(port);
    signal_pid(pid, signal);
    pid
}

pub fn signal_pid(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A Redis Cluster of three masters with one replica each.
pub struct Cluster {
    pub ports: Vec<u16>,
    _dir: TempDir,
}

impl Cluster {
    /// Starts six nodes, joins them with `redis-cli --cluster create`, and waits until every node
    /// says the cluster is ok.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
        for port in &ports {
            let args = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &format!("nodes-{port}.conf"),
                "--cluster-node-timeout",
                "1000",
                // A replica may take over however long it was cut off: the drills kill masters.
                "--cluster-replica-validity-factor",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.path().display().to_string(),
            ];
            spawn_node(&args.map(str::to_owned));
        }
        for port in &ports {
            wait_ping(*port);
        }
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Cluster { ports, _dir: dir };
        cluster.wait_ok();
        cluster
    }

    /// Waits until every live node reports `cluster_state:ok` and agrees on the slots.
    pub fn wait_ok(&self) {
        wait("the cluster is ok", Duration::from_secs(30), || {
            self.ports.iter().all(|p| {
                let info: Result<String, _> = node_cmd(*p, redis::cmd("CLUSTER").arg("INFO"));
                match info {
                    Ok(info) => info.contains("cluster_state:ok"),
                    Err(_) => true, // a node a test killed
                }
            })
        });
    }

    /// Waits (30 s at most) until `ready`.
    pub fn wait_until(&self, what: &str, ready: impl FnMut() -> bool) {
        wait(what, Duration::from_secs(30), ready);
    }

    /// The seed list, as `--redis-url` takes it.
    pub fn seeds(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A node that answers.
    fn live(&self) -> u16 {
        *self
            .ports
            .iter()
            .find(|p| node_cmd::<String>(**p, &redis::cmd("PING")).is_ok())
            .expect("a node answers")
    }

    /// The slot of a key.
    pub fn slot(&self, key: &str) -> u16 {
        node_cmd(self.live(), redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).unwrap()
    }

    /// The master serving `slot` (as a live node sees it): its port and node id.
    pub fn master_of(&self, slot: u16) -> (u16, String) {
        self.try_master_of(slot)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// The master serving `slot`, if a master not marked failed does.
    pub fn try_master_of(&self, slot: u16) -> Option<(u16, String)> {
        let nodes: String = node_cmd(self.live(), redis::cmd("CLUSTER").arg("NODES")).unwrap();
        for line in nodes.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            if !parts[2].contains("master") || parts[2].contains("fail") {
                continue;
            }
            let serves = parts[8..].iter().any(|range| {
                let mut ends = range.split('-').map(|n| n.parse::<u16>());
                match (ends.next(), ends.next()) {
                    (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                    (Some(Ok(a)), None) => a == slot,
                    _ => false,
                }
            });
            if serves {
                let port = parts[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap();
                return Some((port, parts[0].to_owned()));
            }
        }
        None
    }

    /// Another master than `port`: its port and node id.
    pub fn other_master(&self, port: u16) -> (u16, String) {
        let nodes: String = node_cmd(self.live(), redis::cmd("CLUSTER").arg("NODES")).unwrap();
        nodes
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .filter(|p| p[2].contains("master") && !p[2].contains("fail") && p.len() > 8)
            .map(|p| {
                let port = p[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap();
                (port, p[0].to_owned())
            })
            .find(|(p, _)| *p != port)
            .expect("another master")
    }
}

/// A master, its replica, and three Sentinels that watch it as `main`.
pub struct Sentinels {
    pub master: u16,
    pub replica: u16,
    pub sentinels: Vec<u16>,
    _dir: TempDir,
}

pub const MASTER_NAME: &str = "main";

impl Sentinels {
    pub fn start() -> Sentinels {
        let dir = tempfile::tempdir().unwrap();
        let (master, replica) = (free_port(), free_port());
        let node = |port: u16, extra: &[&str]| {
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.path().display().to_string(),
                "--dbfilename",
                &format!("dump-{port}.rdb"),
            ]
            .map(str::to_owned)
            .to_vec();
            args.extend(extra.iter().map(|s| s.to_string()));
            spawn_node(&args);
        };
        node(master, &[]);
        node(replica, &["--replicaof", "127.0.0.1", &master.to_string()]);
        wait_ping(master);
        wait_ping(replica);
        let sentinels: Vec<u16> = (0..3).map(|_| free_port()).collect();
        for port in &sentinels {
            let conf = dir.path().join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir.path().display()
                ),
            )
            .unwrap();
            spawn_node(&[conf.display().to_string(), "--sentinel".into()]);
        }
        for port in &sentinels {
            wait_ping(*port);
        }
        let s = Sentinels {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        // Every Sentinel knows the replica (and the others), so a failover can start at once.
        wait(
            "the Sentinels see the replica",
            Duration::from_secs(30),
            || {
                s.sentinels.iter().all(|p| {
                    let replicas: redis::RedisResult<Vec<redis::Value>> =
                        node_cmd(*p, redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME));
                    let others: redis::RedisResult<Vec<redis::Value>> =
                        node_cmd(*p, redis::cmd("SENTINEL").arg("SENTINELS").arg(MASTER_NAME));
                    matches!((replicas, others), (Ok(r), Ok(o)) if !r.is_empty() && o.len() == 2)
                })
            },
        );
        s
    }

    /// The Sentinel list, as `--redis-url` takes it with `--redis-sentinel-master`.
    pub fn urls(&self) -> String {
        self.sentinels
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master the Sentinels name now.
    pub fn current_master(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|p| {
            let addr: Vec<String> = node_cmd(
                *p,
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(MASTER_NAME),
            )
            .ok()?;
            addr.get(1)?.parse().ok()
        })
    }

    /// Waits until the Sentinels name `port` the master and it says so itself.
    pub fn wait_promoted(&self, port: u16) {
        wait("the replica is promoted", Duration::from_secs(30), || {
            self.current_master() == Some(port)
                && node_cmd::<String>(port, redis::cmd("INFO").arg("replication"))
                    .is_ok_and(|i| i.contains("role:master"))
        });
    }
}
