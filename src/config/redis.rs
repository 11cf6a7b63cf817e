//! Where Redis is and how a deployment's keys sit in it: the `--redis-*` flags of `serve`. What they
//! add up to (a topology and a key layout) is worked out beside the cache's own flags, in [`super`].

use clap::Args;

/// The `--redis-*` flags: the address (or Sentinels, or Cluster seeds) and the key prefix.
#[derive(Args, Clone, Debug)]
pub struct RedisSettings {
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
}
