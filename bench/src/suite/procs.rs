//! The processes and databases a benchmark run owns: a private `redis-server` on a free port, a fresh
//! PostgreSQL database on the shared server, and child processes of this binary (`serve`,
//! `bench-baseline`). Each is stopped or dropped by the run that made it, by its own process id or
//! name; nothing shared is flushed or stopped.

use anyhow::{Context, bail};
use std::{
    net::SocketAddr,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};
use tokio::process::{Child, Command};

/// A port nobody listens on right now (the kernel's pick for port 0).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A child process, killed if the run ends without stopping it.
pub struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    /// Starts `program args…` with its output appended to `log`.
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Proc> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Proc { name, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Waits until `addr` accepts connections (or the process dies).
    pub async fn wait_listening(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited before listening: {status}", self.name);
            }
            if Instant::now() > deadline {
                bail!("{} did not listen on {addr} within 60 s", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM (a graceful stop, by this child's id), then SIGKILL after a grace period.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// CPU time (user + system) this process has used so far.
    pub fn cpu(&self) -> Duration {
        cpu_time(self.pid()).unwrap_or_default()
    }
}

/// User + system CPU time of a process, from `/proc/PID/stat` (fields 14 and 15, in clock ticks).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are space-separated.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// CPU time of every process named `name` on this machine (PostgreSQL's server and backends), as
/// far as they are alive to be read.
pub fn cpu_time_of_all(name: &str) -> Duration {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .filter_map(cpu_time)
        .sum()
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Processes held to chosen CPUs, every thread of each (`taskset -a`), until dropped, when each
/// gets back the affinity it had. Threads a pinned thread starts, and the programs it runs, inherit
/// its CPU, so pinning this process pins the load it generates and the `h2load` it starts.
pub struct Pinned {
    /// Each pinned process with its affinity before, as `taskset -p` printed it (a hex mask).
    before: Vec<(u32, String)>,
}

impl Pinned {
    /// Holds each `(pid, cpu)`.
    pub fn new(placement: &[(u32, usize)]) -> anyhow::Result<Pinned> {
        let mut pinned = Pinned { before: Vec::new() };
        for &(pid, cpu) in placement {
            let shown = taskset(&["-p", &pid.to_string()])?;
            // "pid 42's current affinity mask: 3"
            let mask = shown
                .rsplit(": ")
                .next()
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .with_context(|| format!("reading the affinity of process {pid}: {shown}"))?;
            pinned.before.push((pid, mask.to_owned()));
            taskset(&["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])?;
        }
        Ok(pinned)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for (pid, mask) in &self.before {
            if let Err(e) = taskset(&["-a", "-p", mask, &pid.to_string()]) {
                eprintln!("could not give process {pid} its CPUs back: {e:#}");
            }
        }
    }
}

/// Runs `taskset` (util-linux) and returns what it printed.
fn taskset(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("taskset")
        .args(args)
        .output()
        .context("running taskset (util-linux)")?;
    if !out.status.success() {
        bail!(
            "taskset {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `redis-server` of the run's own: no persistence, `noeviction` (as the README asks of
/// production), so FLUSHALL and memory figures concern nobody else.
pub struct PrivateRedis {
    pub url: String,
    proc: Proc,
    client: redis::Client,
}

impl PrivateRedis {
    pub async fn start(program: &Path, dir: &Path) -> anyhow::Result<PrivateRedis> {
        let port = free_port()?;
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
            "--dir",
            &dir.display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        let mut proc = Proc::spawn("redis-server", program, &args, &[], &dir.join("redis.log"))?;
        proc.wait_listening(([127, 0, 0, 1], port).into()).await?;
        let url = format!("redis://127.0.0.1:{port}");
        let client = suppressd::cache::open(&url)?;
        Ok(PrivateRedis { url, proc, client })
    }

    pub fn cpu(&self) -> Duration {
        self.proc.cpu()
    }

    pub async fn conn(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(self.client.get_multiplexed_async_connection().await?)
    }

    /// `used_memory` from `INFO memory`.
    pub async fn used_memory(&self) -> anyhow::Result<u64> {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.conn().await?)
            .await?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .context("INFO memory has no used_memory")
    }

    pub async fn stop(self) {
        self.proc.stop().await
    }
}

/// A database of the run's own on the shared PostgreSQL; [`PgDatabase::drop_now`] removes it.
pub struct PgDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

impl PgDatabase {
    pub async fn create(admin_url: &str) -> anyhow::Result<PgDatabase> {
        let name = format!("suppressd_bench_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(admin_url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {admin_url}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .context("creating the benchmark database")?;
        admin.close().await;
        // The database URL is the admin URL with the database name replaced.
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(base, _)| base);
        Ok(PgDatabase {
            url: format!("{base}/{name}"),
            name,
            admin_url: admin_url.to_owned(),
        })
    }

    pub async fn drop_now(self) {
        if let Ok(admin) = sqlx::PgPool::connect(&self.admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await {
                eprintln!("could not drop the benchmark database {}: {e}", self.name);
            }
            admin.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel lets `pid` run on, as `/proc` lists it (e.g. `0-1`).
    fn allowed(pid: u32) -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        line.trim().to_owned()
    }

    #[test]
    fn a_pinned_process_runs_on_its_cpu_until_the_guard_drops() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let before = allowed(child.id());
        {
            let _pinned = Pinned::new(&[(child.id(), 0)]).unwrap();
            assert_eq!(allowed(child.id()), "0");
        }
        assert_eq!(allowed(child.id()), before);
        let err = Pinned::new(&[(child.id(), 4096)]).err().unwrap();
        assert!(format!("{err:#}").contains("taskset"), "{err:#}");
        assert_eq!(allowed(child.id()), before, "a failed pin changes nothing");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
