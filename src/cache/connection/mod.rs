//! How this process reaches Redis, whatever the topology: one standalone server, the master a set of
//! Sentinels names, or a Redis Cluster. Everything above this file speaks to a [`Conn`], which is the
//! same type on every topology and implements redis-rs's `ConnectionLike`, so the cache's commands,
//! pipelines and scripts are written once.
//!
//! **deadpool opens the connections.** Each topology has a deadpool pool (deadpool-redis's own for
//! standalone; deadpool over small managers of ours for Sentinel and Cluster, because deadpool-redis's
//! managers there cannot set the timeouts and `TCP_NODELAY` below). A [`Conn`] is one multiplexed
//! connection *taken* from its pool and kept: a pool hands out a connection per call only after a
//! `PING` to recycle it, one more round trip than the hot path can afford, while one multiplexed
//! connection carries every concurrent call of the process without waiting.
//!
//! **It fails fast and heals by itself.** A response that takes longer than [`RESPONSE_TIMEOUT`]
//! fails, so a dead Redis becomes a fallback to the store quickly, never a hang. When a node
//! connection breaks, times out or finds itself on a demoted master (`READONLY`, after a Sentinel
//! failover), the call fails and the [`Conn`] takes a fresh connection from the pool in the
//! background: on Sentinel the pool asks the Sentinels for the current master, so a failover is
//! followed without a restart. A Cluster connection follows `MOVED`/`ASK` redirections and
//! failovers itself, within the same response timeout; a redirection it cannot follow in time is an
//! error, never an answer.

mod managers;

use managers::{ClusterManager, SentinelManager};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, MultiplexedConnection, PubSub},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    sentinel::{Sentinel, SentinelNodeConnectionInfo},
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// A response slower than this fails: a dead Redis must turn into a fallback quickly, not a hang.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Opening a connection (to a node, or asking the Sentinels) gives up after this.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Connections that block on purpose (`XREADGROUP … BLOCK`, `XREAD … BLOCK`) answer within this:
/// longer than any block the worker or the near-cache asks for, short enough to notice a hung Redis.
pub(crate) const BLOCKING_TIMEOUT: Duration = Duration::from_secs(5);

/// Where Redis is: the settings' `--redis-url`, `--redis-sentinel-master` and `--redis-cluster`
/// read together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One server.
    Standalone(String),
    /// The master that these Sentinels name `master`.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
    /// A Redis Cluster, found through these seed nodes.
    Cluster(Vec<String>),
}

impl Topology {
    /// `urls` is one URL, or with Sentinel or Cluster a comma-separated list.
    pub fn parse(urls: &str, sentinel_master: Option<&str>, cluster: bool) -> Result<Self, String> {
        let mut list: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if list.is_empty() {
            return Err("the Redis URL is empty".into());
        }
        for url in &list {
            url.as_str()
                .into_connection_info()
                .map_err(|e| format!("Redis URL {url:?}: {e}"))?;
        }
        match (sentinel_master, cluster) {
            (Some(_), true) => Err("Redis Sentinel and Redis Cluster exclude each other".into()),
            (Some(master), false) if master.trim().is_empty() => {
                Err("the Sentinel master name is empty".into())
            }
            (Some(master), false) => Ok(Topology::Sentinel {
                sentinels: list,
                master: master.trim().to_owned(),
            }),
            (None, true) => Ok(Topology::Cluster(list)),
            (None, false) if list.len() > 1 => Err(
                "several Redis URLs: give --redis-cluster or --redis-sentinel-master, or one URL"
                    .into(),
            ),
            (None, false) => Ok(Topology::Standalone(list.remove(0))),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Topology::Cluster(_))
    }
}

/// `url` as connection info whose connections send at once: redis-rs leaves Nagle's algorithm on,
/// which holds a pipeline's tail back for the server's delayed ACK (~40 ms) whenever a write spans
/// segments.
pub(crate) fn node_info(url: &str) -> RedisResult<ConnectionInfo> {
    let info = url.into_connection_info()?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Ok(info.set_tcp_settings(tcp))
}

fn node_config(response: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_response_timeout(Some(response))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
}

enum Pool {
    Standalone(deadpool_redis::Pool),
    Sentinel(deadpool::managed::Pool<SentinelManager>),
    Cluster(deadpool::managed::Pool<ClusterManager>),
}

/// Connections in the pool beyond those taken out: a few, for connections opened at once.
const POOL_SIZE: usize = 4;

impl Pool {
    fn new(topology: &Topology, response: Duration) -> RedisResult<Pool> {
        let runtime = deadpool::Runtime::Tokio1;
        let build_error = |e: deadpool::managed::BuildError| {
            RedisError::from((redis::ErrorKind::InvalidClientConfig, "pool", e.to_string()))
        };
        Ok(match topology {
            Topology::Standalone(url) => {
                let manager = deadpool_redis::Manager::new_with_config(
                    node_info(url)?,
                    node_config(response),
                )?;
                Pool::Standalone(
                    deadpool_redis::Pool::builder(manager)
                        .max_size(POOL_SIZE)
                        .runtime(deadpool_redis::Runtime::Tokio1)
                        .create_timeout(Some(CONNECT_TIMEOUT * 2))
                        .wait_timeout(Some(CONNECT_TIMEOUT * 2))
                        .build()
                        .map_err(build_error)?,
                )
            }
            Topology::Sentinel { sentinels, master } => {
                let infos = sentinels
                    .iter()
                    .map(|u| node_info(u))
                    .collect::<RedisResult<Vec<_>>>()?;
                let nodelay = infos[0].tcp_settings().clone();
                let manager = SentinelManager {
                    sentinel: tokio::sync::Mutex::new(Sentinel::build(infos)?),
                    master: master.clone(),
                    node: SentinelNodeConnectionInfo::default().set_tcp_settings(nodelay),
                    config: node_config(response),
                };
                Pool::Sentinel(
                    deadpool::managed::Pool::builder(manager)
                        .max_size(POOL_SIZE)
                        .runtime(runtime)
                        .create_timeout(Some(CONNECT_TIMEOUT * 3))
                        .wait_timeout(Some(CONNECT_TIMEOUT * 3))
                        .build()
                        .map_err(build_error)?,
                )
            }
            Topology::Cluster(seeds) => {
                let infos = seeds
                    .iter()
                    .map(|u| node_info(u))
                    .collect::<RedisResult<Vec<_>>>()?;
                let nodelay = infos[0].tcp_settings().clone();
                let client = ClusterClientBuilder::new(infos)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(response)
                    .tcp_settings(nodelay)
                    .build()?;
                Pool::Cluster(
                    deadpool::managed::Pool::builder(ClusterManager(client))
                        .max_size(POOL_SIZE)
                        .runtime(runtime)
                        .create_timeout(Some(CONNECT_TIMEOUT * 4))
                        .wait_timeout(Some(CONNECT_TIMEOUT * 4))
                        .build()
                        .map_err(build_error)?,
                )
            }
        })
    }

    /// A connection of the pool's, taken out of it for good (see the module doc).
    async fn take(&self) -> RedisResult<Raw> {
        fn backend(e: deadpool::managed::PoolError<RedisError>) -> RedisError {
            match e {
                deadpool::managed::PoolError::Backend(e) => e,
                other => timed_out(&format!("opening a Redis connection: {other}")),
            }
        }
        Ok(match self {
            Pool::Standalone(pool) => Raw::Node(deadpool_redis::Connection::take(
                pool.get().await.map_err(|e| match e {
                    deadpool_redis::PoolError::Backend(e) => e,
                    other => timed_out(&format!("opening a Redis connection: {other}")),
                })?,
            )),
            Pool::Sentinel(pool) => Raw::Node(deadpool::managed::Object::take(
                pool.get().await.map_err(backend)?,
            )),
            Pool::Cluster(pool) => Raw::Cluster(deadpool::managed::Object::take(
                pool.get().await.map_err(backend)?,
            )),
        })
    }
}

fn timed_out(what: &str) -> RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_owned()).into()
}

/// Opens connections to Redis, whatever the topology. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Redis(Arc<Pools>);

struct Pools {
    topology: Topology,
    /// Connections with [`RESPONSE_TIMEOUT`]: the hot path and everything that does not block.
    fast: Pool,
    /// Connections with [`BLOCKING_TIMEOUT`], for reads that block on purpose.
    blocking: Pool,
}

impl Redis {
    pub(crate) fn new(topology: &Topology) -> RedisResult<Redis> {
        Ok(Redis(Arc::new(Pools {
            topology: topology.clone(),
            fast: Pool::new(topology, RESPONSE_TIMEOUT)?,
            blocking: Pool::new(topology, BLOCKING_TIMEOUT)?,
        })))
    }

    /// The connection the hot path and every non-blocking command share.
    pub(crate) async fn shared(&self) -> RedisResult<Conn> {
        Conn::open(self.clone(), false).await
    }

    /// A connection of its own for reads that block (never the shared one: a blocked read would
    /// hold up every command queued behind it).
    pub(crate) async fn blocking(&self) -> RedisResult<Conn> {
        Conn::open(self.clone(), true).await
    }

    /// A publish/subscribe connection. On Cluster any node will do: a message published on one
    /// node reaches subscribers on every node.
    pub(crate) async fn pubsub(&self) -> RedisResult<PubSub> {
        match &self.0.topology {
            Topology::Standalone(url) => Client::open(node_info(url)?)?.get_async_pubsub().await,
            Topology::Sentinel { .. } => match &self.0.fast {
                Pool::Sentinel(pool) => pool.manager().master().await?.get_async_pubsub().await,
                _ => unreachable!("a Sentinel topology has Sentinel pools"),
            },
            Topology::Cluster(seeds) => {
                let mut last = None;
                for seed in seeds {
                    match Client::open(node_info(seed)?)?.get_async_pubsub().await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.expect("a cluster has at least one seed"))
            }
        }
    }
}

/// A connection as a pool hands it out.
#[derive(Clone)]
enum Raw {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
    /// BENCHMARK BASELINE ONLY: redis-rs's own reconnecting connection, the layer deadpool
    /// replaced, so that the suite can show what the change costs (`serve-connection-manager`).
    #[cfg(feature = "bench-baseline")]
    Manager(redis::aio::ConnectionManager),
}

/// One multiplexed connection to Redis, on any topology; it replaces itself when it breaks (see
/// the module doc). Cheap to clone: clones share it.
#[derive(Clone)]
pub struct Conn(Arc<Current>);

struct Current {
    redis: Redis,
    blocking: bool,
    raw: arc_swap::ArcSwap<Raw>,
    /// A replacement is being opened: later failures need not open another.
    replacing: AtomicBool,
}

impl Conn {
    async fn open(redis: Redis, blocking: bool) -> RedisResult<Conn> {
        let pool = if blocking {
            &redis.0.blocking
        } else {
            &redis.0.fast
        };
        let raw = pool.take().await?;
        Ok(Conn(Arc::new(Current {
            redis,
            blocking,
            raw: arc_swap::ArcSwap::from_pointee(raw),
            replacing: AtomicBool::new(false),
        })))
    }

    fn raw(&self) -> Raw {
        Raw::clone(&self.0.raw.load())
    }

    /// BENCHMARK BASELINE ONLY: the shared connection as it was before deadpool (see `Raw`).
    #[cfg(feature = "bench-baseline")]
    pub(crate) async fn connection_manager(redis: Redis, url: &str) -> RedisResult<Conn> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let client = Client::open(node_info(url)?)?;
        let manager = redis::aio::ConnectionManager::new_with_config(client, config).await?;
        Ok(Conn(Arc::new(Current {
            redis,
            blocking: false,
            raw: arc_swap::ArcSwap::from_pointee(Raw::Manager(manager)),
            replacing: AtomicBool::new(false),
        })))
    }

    /// After a failed call: a node connection that may be dead, stuck, or on a demoted master is
    /// replaced from the pool, once, in the background. A Cluster connection heals itself.
    fn failed(&self, e: &RedisError) {
        let suspect = e.is_connection_dropped()
            || e.is_unrecoverable_error()
            || e.is_io_error()
            || e.is_timeout()
            || e.code() == Some("READONLY");
        if !suspect
            || !matches!(**self.0.raw.load(), Raw::Node(_))
            || self.0.replacing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let current = self.0.clone();
        tokio::spawn(async move {
            let pool = if current.blocking {
                &current.redis.0.blocking
            } else {
                &current.redis.0.fast
            };
            match pool.take().await {
                Ok(raw) => current.raw.store(Arc::new(raw)),
                Err(e) => {
                    tracing::debug!(error = %e, "reconnecting to Redis; trying again on the next failure")
                }
            }
            current.replacing.store(false, Ordering::Release);
        });
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let reply = match self.raw() {
                Raw::Node(mut c) => c.req_packed_command(cmd).await,
                Raw::Cluster(mut c) => c.req_packed_command(cmd).await,
                #[cfg(feature = "bench-baseline")]
                Raw::Manager(mut c) => c.req_packed_command(cmd).await,
            };
            if let Err(e) = &reply {
                self.failed(e);
            }
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let reply = match self.raw() {
                Raw::Node(mut c) => c.req_packed_commands(pipe, offset, count).await,
                Raw::Cluster(mut c) => c.req_packed_commands(pipe, offset, count).await,
                #[cfg(feature = "bench-baseline")]
                Raw::Manager(mut c) => c.req_packed_commands(pipe, offset, count).await,
            };
            if let Err(e) = &reply {
                self.failed(e);
            }
            reply
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_standalone_and_lists_need_a_topology() {
        assert_eq!(
            Topology::parse("redis://a:1", None, false),
            Ok(Topology::Standalone("redis://a:1".into()))
        );
        assert!(Topology::parse("redis://a:1,redis://b:2", None, false).is_err());
        assert_eq!(
            Topology::parse("redis://a:1, redis://b:2", None, true),
            Ok(Topology::Cluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into()
            ]))
        );
        assert_eq!(
            Topology::parse("redis://s:26379", Some("main"), false),
            Ok(Topology::Sentinel {
                sentinels: vec!["redis://s:26379".into()],
                master: "main".into()
            })
        );
        assert!(Topology::parse("redis://s:1", Some("m"), true).is_err());
        assert!(Topology::parse("redis://s:1", Some(" "), false).is_err());
        assert!(Topology::parse(" , ", None, false).is_err());
        assert!(Topology::parse("http://x", None, false).is_err());
    }
}
