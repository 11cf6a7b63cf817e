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
//! checks' read is in `lookup`, the writes of opt-outs and merged records in `record`.

pub(crate) mod controls;
pub mod layout;
mod lookup;
pub mod near;
pub mod rebuild;
mod receipts;
mod record;
mod retract;
pub mod stream;

use crate::telemetry::metrics::names;
use layout::Keys;
pub use lookup::{Lookup, Lookups, Probe};
pub use record::{Merged, Recorded, Written};
use redis::{
    AsyncCommands, Client, RedisError, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
pub use retract::Retraction;
use std::time::Duration;

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

/// Timeouts of the shared connection: a dead Redis must turn into a fallback quickly, not a hang.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A client for `url` whose connections send at once: redis-rs leaves Nagle's algorithm on, which
/// holds a pipeline's tail back for the server's delayed ACK (~40 ms) whenever a write spans segments.
pub fn open(url: &str) -> Result<Client, CacheError> {
    let info = redis::IntoConnectionInfo::into_connection_info(url).context("URL")?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Client::open(info.set_tcp_settings(tcp)).context("URL")
}

/// The shared, multiplexed connection and the scripts. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    client: Client,
    conn: ConnectionManager,
    keys: Keys,
    opt_out: Script,
    merge: Script,
}

impl Cache {
    /// Connects to Redis. Fails when Redis cannot be reached at start; afterwards the connection
    /// reconnects by itself and each call fails fast while Redis is away.
    pub async fn connect(url: &str, keys: Keys) -> Result<Cache, CacheError> {
        let client = open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .context("connecting")?;
        Ok(Cache {
            client,
            conn,
            keys,
            opt_out: Script::new(&layout::opt_out_script()),
            merge: Script::new(&layout::merge_script()),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.conn())
            .await
            .context("PING")
    }

    /// The write counter, for the periodic staleness check.
    pub async fn writes(&self) -> Result<u64, CacheError> {
        let writes: Option<u64> = self
            .conn()
            .get(self.keys.writes())
            .await
            .context("GET write counter")?;
        Ok(writes.unwrap_or(0))
    }

    /// Whether the last rebuild finished and nothing has removed its work since.
    pub async fn is_complete(&self) -> Result<bool, CacheError> {
        Ok(self.complete_generation().await?.is_some())
    }

    /// The generation of the rebuild the cache is complete from, if it is complete.
    pub async fn complete_generation(&self) -> Result<Option<String>, CacheError> {
        let (complete, generation): (Option<String>, Option<String>) = redis::pipe()
            .get(self.keys.complete())
            .get(self.keys.generation())
            .query_async(&mut self.conn())
            .await
            .context("reading the completeness marker")?;
        Ok(complete.filter(|c| generation.as_ref() == Some(c)))
    }
}
