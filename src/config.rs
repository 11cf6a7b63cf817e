//! The settings of `suppressd serve`: one typed tree, read from flags and `SUPPRESSD_*` environment
//! variables. Loading it binds and connects to nothing; a bad value stops the process before it
//! starts anything. The rest of the command line is the CLI's own (`cli::args`).

use crate::{
    audit::AuditLog,
    cache::{Topology, layout::Keys},
    domain::{Pepper, deadline::DeadlineRules},
    telemetry::LogFormat,
};
use anyhow::{Context, bail, ensure};
use clap::{Args, Parser};
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// The configured pepper, or the development one (and `true` to say it is).
pub fn pepper_or_development(pepper: Option<&str>) -> anyhow::Result<(Pepper, bool)> {
    match pepper {
        Some(secret) => Ok((Pepper::new(secret.as_bytes())?, false)),
        None => Ok((Pepper::new(DEV_PEPPER.as_bytes())?, true)),
    }
}

/// The development pepper: only for a developer's machine. Start-up warns loudly when it is used.
const DEV_PEPPER: &str = "suppressd-development-pepper-do-not-use";

#[derive(Args, Clone, Debug)]
pub struct ServeSettings {
    /// Address the gRPC server listens on (port 0 picks a free port).
    #[arg(long, env = "SUPPRESSD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Redis holding the cache and the write-behind stream. With --redis-sentinel-master, a
    /// comma-separated list of Sentinels; with --redis-cluster, a comma-separated list of seed nodes.
    #[arg(
        long,
        env = "SUPPRESSD_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// Reach Redis through Sentinel: the name of the master the Sentinels in --redis-url watch.
    /// A failover to a new master is followed without a restart.
    #[arg(long, env = "SUPPRESSD_REDIS_SENTINEL_MASTER")]
    pub redis_sentinel_master: Option<String>,

    /// Redis is a Redis Cluster; --redis-url lists seed nodes. Every key carries the prefix as its
    /// hash tag (so the prefix may not contain braces); see docs/operations.md.
    #[arg(long, env = "SUPPRESSD_REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// On Redis Cluster: how many slot groups a deployment's keys are spread over (a power of two,
    /// at most the bucket count): each group has its own hash tag, so the groups spread over the
    /// masters; an opt-out touches one group, a batch asks the groups of its subjects at once.
    /// Changing it makes the cache rebuild. Standalone and Sentinel always use one group.
    #[arg(long, env = "SUPPRESSD_REDIS_SLOT_GROUPS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub redis_slot_groups: u32,

    /// Prefix of every Redis key, so deployments can share a Redis.
    #[arg(long, env = "SUPPRESSD_REDIS_PREFIX", default_value = "suppressd:")]
    pub redis_prefix: String,

    /// Durable store: sqlite://PATH (created if missing) or postgres://…
    #[arg(
        long,
        env = "SUPPRESSD_STORE_URL",
        default_value = "sqlite://data/suppressd.db"
    )]
    pub store_url: String,

    /// Secret keying the recipient hash (at least 16 bytes). Without it a development pepper is used
    /// and start-up warns. Changing it orphans every record: keep it for the life of the data.
    #[arg(long, env = "SUPPRESSD_PEPPER", hide_env_values = true)]
    pub pepper: Option<String>,

    /// Name of the audit log, the first line of every signed checkpoint.
    #[arg(long, env = "SUPPRESSD_AUDIT_ORIGIN", default_value = "suppressd")]
    pub audit_origin: String,

    /// Ed25519 key that signs audit checkpoints, as a C2SP note signer key
    /// (`PRIVATE+KEY+name+id+base64`; `suppressd audit keygen` makes one). Without it a development
    /// key is used, with a loud warning: anyone can forge its checkpoints.
    #[arg(long, env = "SUPPRESSD_AUDIT_SIGNING_KEY", hide_env_values = true)]
    pub audit_signing_key: Option<String>,

    /// How long a DURABLE opt-out waits for the store before answering ACCEPTED, in milliseconds.
    #[arg(long, env = "SUPPRESSD_DURABLE_WAIT_MS", default_value_t = 2_000)]
    pub durable_wait_ms: u64,

    /// Uncommitted opt-outs above which ACCEPTED-only opt-outs are refused with UNAVAILABLE (0 = no
    /// limit). DURABLE opt-outs are not refused: their receipt tells the truth.
    #[arg(long, env = "SUPPRESSD_BACKLOG_LIMIT", default_value_t = 100_000)]
    pub(crate) backlog_limit: u64,

    /// Most opt-outs the worker commits in one transaction.
    #[arg(long, env = "SUPPRESSD_WORKER_BATCH", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) worker_batch: u32,

    /// How long an entry may stay unacknowledged by a worker before another replica claims it, in
    /// milliseconds.
    #[arg(long, env = "SUPPRESSD_WORKER_CLAIM_IDLE_MS", default_value_t = 5_000)]
    pub(crate) worker_claim_idle_ms: u64,

    /// Cache buckets are 2^bits small hashes; 40 to 80 active opt-outs per bucket is the sweet spot
    /// (each check scans its bucket once per candidate scope, so larger buckets cost Redis CPU;
    /// smaller ones cost memory per entry). Changing it by rolling update is safe: replicas write
    /// both layouts, fill the new one and switch to it (docs/operations.md, "Changing
    /// --cache-bucket-bits").
    #[arg(long, env = "SUPPRESSD_CACHE_BUCKET_BITS", default_value_t = 16,
          value_parser = clap::value_parser!(u8).range(1..=24))]
    pub cache_bucket_bits: u8,

    /// Answer checks from Redis on every call instead of from this replica's near-cache (an
    /// in-memory copy of the cache that follows Redis's change feed; see docs/architecture.md, "The near-cache").
    /// Writes still wait for the near-caches of other replicas.
    #[arg(long, env = "SUPPRESSD_NO_NEAR_CACHE")]
    pub no_near_cache: bool,

    /// This replica's name in the consumer group and the rebuild lease (default: host-pid-random).
    #[arg(long, env = "SUPPRESSD_REPLICA_NAME")]
    pub replica_name: Option<String>,

    /// How long shutdown waits for in-flight calls and the worker's last commit, in milliseconds.
    #[arg(long, env = "SUPPRESSD_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// Testing hook (feature `failpoints`, never in a release build): the worker aborts the process
    /// right after its first store commit, before it acknowledges the stream entries. Lets the
    /// failure tests kill a replica at exactly that point.
    #[cfg(feature = "failpoints")]
    #[arg(long, env = "SUPPRESSD_FAILPOINT_CRASH_AFTER_COMMIT", hide = true)]
    pub(crate) failpoint_crash_after_commit: bool,

    /// Testing hook (feature `failpoints`): the near-cache stalls when told to through Redis (see
    /// `NearCache::with_stall_failpoint`). Lets a test stall a replica's copy at exactly the point
    /// where it renews its lease, which a signal cannot aim at.
    #[cfg(feature = "failpoints")]
    #[arg(long, env = "SUPPRESSD_FAILPOINT_NEAR_STALL", hide = true)]
    pub failpoint_near_stall: bool,

    /// BENCHMARK BASELINE ONLY (feature `bench-baseline`; no flag reaches it): the worker commits
    /// opt-outs without audit entries, so that `suppressd-bench serve-unaudited` can serve the
    /// baseline the audit log's cost is measured against. Breaks SPEC §5.5 on purpose.
    #[cfg(feature = "bench-baseline")]
    #[arg(skip)]
    pub bench_unaudited: bool,

    /// BENCHMARK BASELINE ONLY (feature `bench-baseline`; no flag reaches it): the shared Redis
    /// connection is redis-rs's `ConnectionManager`, as before deadpool, so that
    /// `suppressd-bench serve-connection-manager` can serve the connection layer's baseline.
    #[cfg(feature = "bench-baseline")]
    #[arg(skip)]
    pub bench_connection_manager: bool,

    /// Admin HTTP address serving Prometheus metrics at /metrics (port 0 picks a free port). Off
    /// when unset; keep it on a private interface.
    #[arg(long, env = "SUPPRESSD_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// The key file (TOML): principals with hashed API keys, roles, tenants, certificate subjects,
    /// and the opt-out token keys. Reloaded on SIGHUP and when the file changes. Required unless
    /// --dev-no-auth.
    #[arg(long, env = "SUPPRESSD_KEYS")]
    pub keys: Option<PathBuf>,

    /// Refuse to start when the key file is readable or writable by group or others (without it:
    /// a loud warning at start-up).
    #[arg(long, env = "SUPPRESSD_STRICT_KEY_FILE")]
    pub strict_key_file: bool,

    /// DEVELOPMENT ONLY: no authentication; every caller is an admin. Refuses to listen on anything
    /// but a loopback address.
    #[arg(long, env = "SUPPRESSD_DEV_NO_AUTH")]
    pub dev_no_auth: bool,

    /// PEM certificate chain of the gRPC server; with --tls-key turns TLS on.
    #[arg(long, env = "SUPPRESSD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the gRPC server.
    #[arg(long, env = "SUPPRESSD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates that sign client certificates: turns mTLS on (a client without a
    /// certificate from this CA is refused at the handshake). Subjects map to principals by CN.
    #[arg(long, env = "SUPPRESSD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Address of the public HTTP front (RFC 8058 one-click unsubscribe pages); off when unset.
    #[arg(long, env = "SUPPRESSD_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// The HTTP front's URL as SMS providers call it, without the path (e.g.
    /// `https://optout.example.com`): Twilio signs the full URL it calls. Default: `http://` and the
    /// request's Host header.
    #[arg(long, env = "SUPPRESSD_HTTP_PUBLIC_URL", requires = "http_listen")]
    pub http_public_url: Option<String>,

    /// Requests per second each principal may make (a burst of the same size); 0 = no limit.
    /// Beyond it: RESOURCE_EXHAUSTED.
    #[arg(long, env = "SUPPRESSD_RATE_LIMIT_PER_PRINCIPAL", default_value_t = 0)]
    pub rate_limit_per_principal: u32,

    /// Checks in flight at once in this process; more are shed with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SUPPRESSD_MAX_CONCURRENT_CHECKS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_checks: u32,

    /// Opt-outs and other writes in flight at once; a budget of their own, so a flood of checks
    /// never sheds an opt-out.
    #[arg(long, env = "SUPPRESSD_MAX_CONCURRENT_WRITES", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_writes: u32,

    /// Anonymous audit reads (GetCheckpoint, GetConsistencyProof) in flight at once: a budget of
    /// their own, so a flood of them sheds neither checks nor opt-outs. Their anonymous rate bucket
    /// is their own too.
    #[arg(long, env = "SUPPRESSD_MAX_CONCURRENT_AUDIT_READS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_audit_reads: u32,

    /// How often this replica polls the store for changed halts and mandatory declarations
    /// (e.g. `25ms`, `1s`). A change waits for every live replica before it returns; this bounds how
    /// long a replica cut off from Redis takes to follow.
    #[arg(long, env = "SUPPRESSD_CONTROLS_POLL", default_value = "25ms",
          value_parser = parse_interval)]
    pub(crate) controls_poll: Duration,

    /// How long this replica trusts its halts and mandatory declarations without confirming them
    /// (from the store, or from the snapshot other replicas publish in Redis). Past it the controls
    /// are stale: no check answers "send" (UNAVAILABLE instead), mandatory declarations stop
    /// overriding opt-outs, and health says NOT_SERVING, until a confirmation comes. At least
    /// four polls.
    #[arg(long, env = "SUPPRESSD_CONTROLS_STALE_AFTER", default_value = "1s",
          value_parser = parse_interval)]
    pub(crate) controls_stale_after: Duration,

    /// How often this replica adds what it counted for halt triggers (checks, opt-outs,
    /// complaints) into Redis and asks whether a trigger's threshold is crossed: a trigger fires
    /// at most this long after its figures cross it (e.g. `250ms`, `1s`).
    #[arg(long, env = "SUPPRESSD_TRIGGER_FLUSH", default_value = "250ms",
          value_parser = parse_interval)]
    pub(crate) trigger_flush: Duration,

    /// How often a `WatchChanges` stream that has caught up with the audit log asks the store for
    /// newer entries (e.g. `100ms`): the most a watcher waits for a change another replica
    /// committed.
    #[arg(long, env = "SUPPRESSD_WATCH_POLL", default_value = "100ms",
          value_parser = parse_interval)]
    pub watch_poll: Duration,

    /// How often each replica looks for webhook destinations with changes to deliver.
    #[arg(long, env = "SUPPRESSD_DELIVERY_INTERVAL", default_value = "200ms",
          value_parser = parse_interval)]
    pub delivery_interval: Duration,

    /// Failed attempts in a row after which a webhook destination is parked (its changes kept,
    /// none dropped) until an admin resumes it (`ResumeDestination`).
    #[arg(long, env = "SUPPRESSD_DELIVERY_FAILURE_BUDGET", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub delivery_failure_budget: u32,

    /// The delay before the first retry of a failed webhook; each next one doubles (with jitter:
    /// half to all of it), up to --delivery-backoff-max.
    #[arg(long, env = "SUPPRESSD_DELIVERY_BACKOFF_BASE", default_value = "1s",
          value_parser = parse_interval)]
    pub delivery_backoff_base: Duration,

    #[arg(long, env = "SUPPRESSD_DELIVERY_BACKOFF_MAX", default_value = "300s",
          value_parser = parse_interval)]
    pub delivery_backoff_max: Duration,

    /// How long one webhook POST may take before it counts as failed. A destination's lease (one
    /// replica delivers it at a time) lasts two of these plus --delivery-interval.
    #[arg(long, env = "SUPPRESSD_DELIVERY_TIMEOUT", default_value = "10s",
          value_parser = parse_interval)]
    pub delivery_timeout: Duration,

    /// Legal deadline rules (TOML: time zone, "near" margin, and per regime its window, channels
    /// and holidays); without it the statutory windows in UTC with no holidays. See
    /// docs/deadlines.md.
    #[arg(long, env = "SUPPRESSD_DEADLINES_FILE")]
    pub deadlines_file: Option<PathBuf>,

    /// How often the deadline gauges (`suppressd_deadlines`) are recomputed from the store.
    #[arg(long, env = "SUPPRESSD_DEADLINES_REFRESH", default_value = "60s",
          value_parser = parse_interval)]
    pub deadlines_refresh: Duration,

    /// Log format on standard error; RUST_LOG filters (default `info`).
    #[arg(long, env = "SUPPRESSD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl ServeSettings {
    /// The defaults, as `suppressd serve` with no flags and no environment would have them.
    pub fn defaults() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeSettings,
        }
        Only::parse_from(["suppressd"]).serve
    }

    /// The deadline rules: the file's, or the defaults. A bad file stops start-up.
    pub(crate) fn deadline_rules(&self) -> anyhow::Result<DeadlineRules> {
        let Some(path) = &self.deadlines_file else {
            return Ok(DeadlineRules::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the deadlines file {}", path.display()))?;
        DeadlineRules::parse(&text)
            .map_err(|e| anyhow::anyhow!("in the deadlines file {}: {e}", path.display()))
    }

    /// The configured pepper, or the development one (and `true` to say it is).
    pub fn pepper(&self) -> anyhow::Result<(Pepper, bool)> {
        pepper_or_development(self.pepper.as_deref())
    }

    /// The audit log's signer, and whether it is the development key.
    pub(crate) fn audit_log(&self) -> anyhow::Result<(AuditLog, bool)> {
        #[allow(unused_mut)] // written only under the benchmark's feature
        let mut log = AuditLog::new(&self.audit_origin, self.audit_signing_key.as_deref())?;
        #[cfg(feature = "bench-baseline")]
        {
            log.bench_unaudited = self.bench_unaudited;
        }
        Ok((log, self.audit_signing_key.is_none()))
    }

    /// The rules between settings that clap cannot express. Authentication is on unless the
    /// development flag says otherwise, and then nothing may listen beyond loopback.
    pub fn check(&self) -> anyhow::Result<()> {
        self.redis_topology()?;
        self.deadline_rules()?;
        if self.dev_no_auth {
            ensure!(
                self.keys.is_none(),
                "--dev-no-auth and --keys contradict each other: --dev-no-auth turns authentication \
                 off, so the key file would be ignored; give one or the other"
            );
            let addrs = std::iter::once(self.listen)
                .chain(self.http_listen)
                .chain(self.admin_listen);
            for addr in addrs {
                ensure!(
                    addr.ip().is_loopback(),
                    "--dev-no-auth refuses to listen on {addr}: without authentication only a \
                     loopback address is allowed"
                );
            }
        } else if self.keys.is_none() {
            bail!(
                "authentication is on: give a key file with --keys (SUPPRESSD_KEYS), or \
                 --dev-no-auth on a developer machine"
            );
        }
        ensure!(
            self.controls_stale_after >= self.controls_poll * 4,
            "--controls-stale-after ({:?}) must be at least four --controls-poll intervals ({:?}): \
             a replica would otherwise turn stale between two polls",
            self.controls_stale_after,
            self.controls_poll
        );
        if let Some(path) = &self.keys
            && let Some(problem) = crate::auth::key_file_exposure(path)?
        {
            ensure!(
                !self.strict_key_file,
                "{problem} (refused: --strict-key-file)"
            );
            tracing::warn!("{problem}: anyone who can read it can forge opt-out tokens");
        }
        Ok(())
    }

    /// Where Redis is, from --redis-url, --redis-sentinel-master and --redis-cluster.
    pub fn redis_topology(&self) -> anyhow::Result<Topology> {
        let topology = Topology::parse(
            &self.redis_url,
            self.redis_sentinel_master.as_deref(),
            self.redis_cluster,
        )
        .map_err(anyhow::Error::msg)?;
        ensure!(
            !topology.is_cluster() || !self.redis_prefix.contains(['{', '}']),
            "--redis-prefix {:?}: on Redis Cluster the prefix is every key's hash tag and may not \
             contain braces",
            self.redis_prefix
        );
        ensure!(
            self.redis_slot_groups.is_power_of_two(),
            "--redis-slot-groups {}: must be a power of two",
            self.redis_slot_groups
        );
        ensure!(
            !topology.is_cluster() || self.redis_slot_groups <= 1 << self.cache_bucket_bits,
            "--redis-slot-groups {}: at most the bucket count (2^--cache-bucket-bits = {})",
            self.redis_slot_groups,
            1u32 << self.cache_bucket_bits
        );
        Ok(topology)
    }

    /// The key layout for this topology (see `Keys::for_topology`).
    pub fn cache_keys(&self) -> anyhow::Result<Keys> {
        Ok(Keys::for_topology(
            &self.redis_prefix,
            self.cache_bucket_bits,
            self.redis_slot_groups,
            &self.redis_topology()?,
        ))
    }

    pub(crate) fn durable_wait(&self) -> Duration {
        Duration::from_millis(self.durable_wait_ms)
    }

    pub(crate) fn worker_claim_idle(&self) -> Duration {
        Duration::from_millis(self.worker_claim_idle_ms)
    }

    pub(crate) fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub(crate) fn replica_name(&self) -> String {
        self.replica_name.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "suppressd".into());
            format!(
                "{host}-{}-{:04x}",
                std::process::id(),
                rand::random::<u16>()
            )
        })
    }
}

/// `25ms`, `2s`: a short interval with its unit, at least 1 ms.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, e.g. 25ms"))?;
    let interval = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        _ => return Err(format!("{text:?}: the unit must be ms or s")),
    };
    if interval.is_zero() {
        return Err("must be at least 1ms".into());
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_have_a_unit_and_are_not_zero() {
        assert_eq!(parse_interval("25ms"), Ok(Duration::from_millis(25)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        for bad in ["25", "0ms", "ms", "1m", "-1s"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
