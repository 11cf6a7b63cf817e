//! Redis: the complete set of active suppressions (the hot path reads only this), the write-behind
//! stream, idempotency keys, pending receipts, and the marker that says the set is complete.
//!
//! The hot path answers from this replica's copy of the buckets when it can vouch for it ([`near`]);
//! otherwise it asks one question per check — `HMGET bucket marker field₁ … field₈` — and sends every
//! check of a batch in one pipeline, so a call costs one round trip however many scopes and checks it
//! carries. It must never answer "not suppressed" from a bucket that lacks the marker; [`Lookup`]
//! carries that fact up to the service, which falls back to the store.
//!
//! This file holds the connection, its errors, the write counter and the completeness marker; the
//! checks' read is in `lookup`, the writes of opt-outs and merged records in `record`. Which bucket
//! layouts those writes go to and those reads come from, while a deployment changes its layout,
//! is [`layouts`]'s.
//!
//! **The write counter.** Every opt-out and every merge of records bumps it in the same call, and
//! every change in the near-cache feed carries the value it bumped it to. Each replica remembers
//! the highest value it saw, from its own writes' replies and from the feed
//! ([`Cache::saw_writes`]): a Redis that answers with less lost writes this replica knows of (a
//! stale replica promoted, an old snapshot loaded), however complete its markers say it is. Each
//! slot group ([`layout::Keys`]) has its own counter, markers, stream and feed, so a Cluster shard
//! that failed over or was flushed is noticed, and rebuilt, group by group.

mod backlog;
mod connection;
pub(crate) mod controls;
pub mod layout;
pub mod layouts;
mod lookup;
pub mod near;
pub mod rebuild;
mod receipts;
mod record;
mod retract;
pub mod stream;
pub(crate) mod triggers;

use crate::telemetry::metrics::names;
pub use backlog::{Backlog, StreamHeads};
pub(crate) use connection::Redis;
pub use connection::{Conn, Topology};
use layout::{Group, Keys};
pub use lookup::{Lookup, Lookups, PerCheck, Probe};
pub use record::{GroupMerged, Merged, Recorded, Written};
use redis::{AsyncCommands, Client, RedisError, Script};
pub use retract::Retraction;
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

#[derive(Debug, thiserror::Error)]
#[error("redis {context}")]
pub struct CacheError {
    context: &'static str,
    #[source]
    source: RedisError,
}

impl CacheError {
    pub(crate) fn new(context: &'static str, source: RedisError) -> Self {
        // Every Redis failure passes here once: the one place that counts them.
        metrics::counter!(names::REDIS_ERRORS, "operation" => context).increment(1);
        Self { context, source }
    }

    /// The server's error code (`NOGROUP`, `NOSCRIPT`, …), if Redis answered with one.
    pub fn code(&self) -> Option<&str> {
        self.source.code()
    }
}

pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, CacheError>;
}

impl<T> Context<T> for Result<T, RedisError> {
    fn context(self, context: &'static str) -> Result<T, CacheError> {
        self.map_err(|source| CacheError::new(context, source))
    }
}

/// A client for `url` whose connections send at once (see `connection::node_info`): for tools
/// that talk to one Redis node directly, such as the benchmark's raw-read baseline.
pub fn open(url: &str) -> Result<Client, CacheError> {
    Client::open(connection::node_info(url).context("URL")?).context("URL")
}

/// The shared, multiplexed connection and the scripts. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    redis: Redis,
    conn: Conn,
    keys: Keys,
    /// The layouts written and read while the bucket layout changes (`layouts`).
    layouts: Arc<layouts::Layouts>,
    opt_out: Script,
    merge: Script,
    /// The highest write counter this replica has seen, by slot group.
    writes_seen: Arc<[AtomicU64]>,
}

impl Cache {
    /// Connects to Redis. Fails when Redis cannot be reached at start; afterwards the connection
    /// reconnects by itself and each call fails fast while Redis is away (`connection`).
    pub async fn connect(topology: &Topology, keys: Keys) -> Result<Cache, CacheError> {
        let redis = Redis::new(topology).context("configuration")?;
        let conn = redis.shared().await.context("connecting")?;
        let writes_seen = keys.groups().iter().map(|_| AtomicU64::new(0)).collect();
        Ok(Cache {
            redis,
            conn,
            layouts: Arc::new(layouts::Layouts::new(keys.clone())),
            keys,
            opt_out: Script::new(&layout::opt_out_script()),
            merge: Script::new(&layout::merge_script()),
            writes_seen,
        })
    }

    /// BENCHMARK BASELINE ONLY: [`Cache::connect_url`], with the shared connection on redis-rs's
    /// `ConnectionManager` as before deadpool, for `suppressd-bench serve-connection-manager`.
    #[cfg(feature = "bench-baseline")]
    pub async fn connect_on_connection_manager(url: &str, keys: Keys) -> Result<Cache, CacheError> {
        let mut cache = Self::connect_url(url, keys).await?;
        cache.conn = Conn::connection_manager(cache.redis.clone(), url)
            .await
            .context("connecting")?;
        Ok(cache)
    }

    /// [`Cache::connect`] to one standalone Redis.
    pub async fn connect_url(url: &str, keys: Keys) -> Result<Cache, CacheError> {
        Self::connect(&Topology::Standalone(url.to_owned()), keys).await
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The layouts this replica writes and reads now.
    pub fn layouts(&self) -> &layouts::Layouts {
        &self.layouts
    }

    pub(crate) fn redis(&self) -> &Redis {
        &self.redis
    }

    pub(crate) fn conn(&self) -> Conn {
        self.conn.clone()
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.conn())
            .await
            .context("PING")
    }

    /// Remembers a group's write counter Redis returned: a write's reply, or a change read from
    /// the group's feed.
    pub(crate) fn saw_writes(&self, group: Group, writes: u64) {
        self.writes_seen[group as usize].fetch_max(writes, Ordering::SeqCst);
    }

    /// Remembers the write counters a merge returned.
    pub(crate) fn saw_merged(&self, merged: &Merged) {
        for m in &merged.groups {
            self.saw_writes(m.group, m.writes);
        }
    }

    /// The highest write counter of a group this replica has seen. Read it *before* sending the
    /// read of the counter it is compared with: a concurrent write whose reply arrives while that
    /// read is in flight may raise it past the value the read returns, with no write lost.
    pub(crate) fn writes_seen(&self, group: Group) -> u64 {
        self.writes_seen[group as usize].load(Ordering::SeqCst)
    }

    /// A group's write counter, for the periodic staleness check.
    pub async fn writes(&self, group: Group) -> Result<u64, CacheError> {
        let writes: Option<u64> = self
            .conn()
            .get(self.keys.group(group).writes())
            .await
            .context("GET write counter")?;
        Ok(writes.unwrap_or(0))
    }

    /// Whether every group's last rebuild finished and nothing has removed its work since.
    pub async fn is_complete(&self) -> Result<bool, CacheError> {
        Ok(self.incomplete_groups().await?.is_empty())
    }

    /// The groups that are not complete, one question per group, all at once.
    pub async fn incomplete_groups(&self) -> Result<Vec<Group>, CacheError> {
        let asked = self.keys.groups().iter().map(|g| async move {
            Ok::<_, CacheError>((g.group(), self.complete_generation(g.group()).await?))
        });
        Ok(futures_util::future::try_join_all(asked)
            .await?
            .into_iter()
            .filter_map(|(g, generation)| generation.is_none().then_some(g))
            .collect())
    }

    /// The generation of the rebuild a group is complete from, if it is complete.
    pub async fn complete_generation(&self, group: Group) -> Result<Option<String>, CacheError> {
        let keys = self.keys.group(group);
        let (complete, generation): (Option<String>, Option<String>) = redis::pipe()
            .get(keys.complete())
            .get(keys.generation())
            .query_async(&mut self.conn())
            .await
            .context("reading the completeness marker")?;
        Ok(complete.filter(|c| generation.as_ref() == Some(c)))
    }
}
