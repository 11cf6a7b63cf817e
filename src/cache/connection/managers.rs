//! The deadpool managers of the two topologies deadpool-redis's own managers cannot open with our
//! timeouts and `TCP_NODELAY`: Sentinel (asks for the master on every new connection, so a failover
//! is followed) and Cluster.

use super::{CONNECT_TIMEOUT, timed_out};
use redis::{
    AsyncConnectionConfig, Client, RedisError, RedisResult,
    aio::MultiplexedConnection,
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    sentinel::{Sentinel, SentinelNodeConnectionInfo},
};

/// Opens Sentinel connections: asks the Sentinels for the master each time, so a new connection
/// after a failover reaches the new master.
pub(super) struct SentinelManager {
    pub(super) sentinel: tokio::sync::Mutex<Sentinel>,
    pub(super) master: String,
    pub(super) node: SentinelNodeConnectionInfo,
    pub(super) config: AsyncConnectionConfig,
}

impl SentinelManager {
    pub(super) async fn master(&self) -> RedisResult<Client> {
        let mut sentinel = self.sentinel.lock().await;
        sentinel
            .async_master_for(&self.master, Some(&self.node))
            .await
    }
}

impl deadpool::managed::Manager for SentinelManager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> RedisResult<MultiplexedConnection> {
        let master = tokio::time::timeout(CONNECT_TIMEOUT, self.master())
            .await
            .map_err(|_| timed_out("asking the Sentinels for the master"))??;
        master
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<RedisError> {
        redis::cmd("PING").query_async::<()>(conn).await?;
        Ok(())
    }
}

/// Opens Cluster connections (each one multiplexed over a connection per node).
pub(super) struct ClusterManager(pub(super) ClusterClient);

impl deadpool::managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> RedisResult<ClusterConnection> {
        self.0.get_async_connection().await
    }

    async fn recycle(
        &self,
        conn: &mut ClusterConnection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<RedisError> {
        redis::cmd("PING").query_async::<()>(conn).await?;
        Ok(())
    }
}
