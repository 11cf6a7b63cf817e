//! The settings of `suppressd serve`: one typed tree, read from flags and `SUPPRESSD_*` environment
//! variables. Loading it binds and connects to nothing; a bad value stops the process before it
//! starts anything. The rest of the command line is the CLI's own (`cli::args`).
//!
//! Flags that belong together sit in a group of their own (`#[command(flatten)]`, one file each):
//! Redis, secrets, the write path, authentication and TLS, limits, controls, changes for other
//! systems, deadlines. The addresses, the store and the process-wide settings stay here, with the
//! rules that span groups ([`ServeSettings::check`]). Grouping changes no flag: `--help` lists them
//! in the same order, under the same names and variables.

mod auth;
mod changes;
mod controls;
mod deadlines;
mod limits;
mod redis;
mod secrets;
mod write_behind;

pub use auth::AuthSettings;
pub use changes::ChangeSettings;
pub use controls::ControlSettings;
pub use deadlines::DeadlineSettings;
pub use limits::LimitSettings;
pub use redis::RedisSettings;
pub use secrets::{SecretSettings, pepper_or_development};
pub use write_behind::WriteBehindSettings;

use crate::{
    audit::AuditLog,
    cache::{Topology, layout::Keys},
    telemetry::LogFormat,
};
use anyhow::{bail, ensure};
use clap::{Args, Parser};
use std::{net::SocketAddr, time::Duration};

#[derive(Args, Clone, Debug)]
pub struct ServeSettings {
    /// Address the gRPC server listens on (port 0 picks a free port).
    #[arg(long, env = "SUPPRESSD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub redis: RedisSettings,

    /// Durable store: sqlite://PATH (created if missing) or postgres://…
    #[arg(
        long,
        env = "SUPPRESSD_STORE_URL",
        default_value = "sqlite://data/suppressd.db"
    )]
    pub store_url: String,

    #[command(flatten)]
    pub secrets: SecretSettings,

    #[command(flatten)]
    pub write_behind: WriteBehindSettings,

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

    /// Testing hook (feature `failpoints`): a check pauses, once, between reading this replica's
    /// controls and answering, when told to through Redis (`Keys::check_pause_failpoint`). Lets a
    /// test change the controls at exactly that point.
    #[cfg(feature = "failpoints")]
    #[arg(long, env = "SUPPRESSD_FAILPOINT_CHECK_PAUSE", hide = true)]
    pub failpoint_check_pause: bool,

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

    /// Store each batch of opt-outs the worker commits as one audit block (one row for the batch)
    /// instead of one `audit_log` row per entry: the same entries, hashes, proofs and checkpoints,
    /// for much less of the store's work. Turn it on once every replica runs this release or a
    /// later one: the previous release reads only rows, and would not find those entries.
    #[arg(long, env = "SUPPRESSD_AUDIT_BLOCKS")]
    pub audit_blocks: bool,

    /// Admin HTTP address serving Prometheus metrics at /metrics (port 0 picks a free port). Off
    /// when unset; keep it on a private interface.
    #[arg(long, env = "SUPPRESSD_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub auth: AuthSettings,

    /// Address of the public HTTP front (RFC 8058 one-click unsubscribe pages); off when unset.
    #[arg(long, env = "SUPPRESSD_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// The HTTP front's URL as SMS providers call it, without the path (e.g.
    /// `https://optout.example.com`): Twilio signs the full URL it calls. Default: `http://` and the
    /// request's Host header.
    #[arg(long, env = "SUPPRESSD_HTTP_PUBLIC_URL", requires = "http_listen")]
    pub http_public_url: Option<String>,

    #[command(flatten)]
    pub limits: LimitSettings,

    #[command(flatten)]
    pub controls: ControlSettings,

    #[command(flatten)]
    pub changes: ChangeSettings,

    #[command(flatten)]
    pub deadlines: DeadlineSettings,

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

    /// The audit log's signer, and whether it is the development key.
    pub(crate) fn audit_log(&self) -> anyhow::Result<(AuditLog, bool)> {
        #[allow(unused_mut)] // written only under the benchmark's feature
        let mut log = AuditLog {
            blocks: self.audit_blocks,
            ..AuditLog::new(
                &self.secrets.audit_origin,
                self.secrets.audit_signing_key.as_deref(),
            )?
        };
        #[cfg(feature = "bench-baseline")]
        {
            log.bench_unaudited = self.bench_unaudited;
        }
        Ok((log, self.secrets.audit_signing_key.is_none()))
    }

    /// The rules between settings that clap cannot express. Authentication is on unless the
    /// development flag says otherwise, and then nothing may listen beyond loopback.
    pub fn check(&self) -> anyhow::Result<()> {
        self.redis_topology()?;
        self.deadlines.rules()?;
        if self.auth.dev_no_auth {
            ensure!(
                self.auth.keys.is_none(),
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
        } else if self.auth.keys.is_none() {
            bail!(
                "authentication is on: give a key file with --keys (SUPPRESSD_KEYS), or \
                 --dev-no-auth on a developer machine"
            );
        }
        ensure!(
            self.controls.controls_stale_after >= self.controls.controls_poll * 4,
            "--controls-stale-after ({:?}) must be at least four --controls-poll intervals ({:?}): \
             a replica would otherwise turn stale between two polls",
            self.controls.controls_stale_after,
            self.controls.controls_poll
        );
        if let Some(path) = &self.auth.keys
            && let Some(problem) = crate::auth::key_file_exposure(path)?
        {
            ensure!(
                !self.auth.strict_key_file,
                "{problem} (refused: --strict-key-file)"
            );
            tracing::warn!("{problem}: anyone who can read it can forge opt-out tokens");
        }
        Ok(())
    }

    /// Where Redis is, from --redis-url, --redis-sentinel-master and --redis-cluster.
    pub fn redis_topology(&self) -> anyhow::Result<Topology> {
        let topology = Topology::parse(
            &self.redis.redis_url,
            self.redis.redis_sentinel_master.as_deref(),
            self.redis.redis_cluster,
        )
        .map_err(anyhow::Error::msg)?;
        ensure!(
            !topology.is_cluster() || !self.redis.redis_prefix.contains(['{', '}']),
            "--redis-prefix {:?}: on Redis Cluster the prefix is every key's hash tag and may not \
             contain braces",
            self.redis.redis_prefix
        );
        ensure!(
            self.redis.redis_slot_groups.is_power_of_two(),
            "--redis-slot-groups {}: must be a power of two",
            self.redis.redis_slot_groups
        );
        ensure!(
            !topology.is_cluster() || self.redis.redis_slot_groups <= 1 << self.cache_bucket_bits,
            "--redis-slot-groups {}: at most the bucket count (2^--cache-bucket-bits = {})",
            self.redis.redis_slot_groups,
            1u32 << self.cache_bucket_bits
        );
        Ok(topology)
    }

    /// The key layout for this topology (see `Keys::for_topology`).
    pub fn cache_keys(&self) -> anyhow::Result<Keys> {
        Ok(Keys::for_topology(
            &self.redis.redis_prefix,
            self.cache_bucket_bits,
            self.redis.redis_slot_groups,
            &self.redis_topology()?,
        ))
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
