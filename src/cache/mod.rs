//! Redis: the complete set of active suppressions (the hot path reads only this), the write-behind
//! stream, idempotency keys, pending receipts, and the marker that says the set is complete.
//!
//! The hot path answers from this replica's copy of the buckets when it can vouch for it ([`near`]);
//! otherwise it asks one question per check — `HMGET bucket marker field₁ … field₈` — and sends every
//! check of a batch in one pipeline, so a call costs one round trip however many scopes and checks it
//! carries. It must never answer "not suppressed" from a bucket that lacks the marker; [`Lookup`]
//! carries that fact up to the service, which falls back to the store.

mod controls;
pub mod layout;
pub mod near;
pub mod rebuild;
mod retract;
pub mod stream;

use crate::{
    domain::{Match, Notice, ReceiptId, SubjectHash, Suppression},
    telemetry::metrics::names,
};
use layout::{Keys, MARKER_FIELD};
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

/// How long idempotency keys and pending-receipt markers live in Redis. Past this the store answers
/// (a committed record keeps its idempotency key forever).
pub const KEY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

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

/// One check, as the cache sees it: the bucket and the fields of every candidate scope. The scopes
/// themselves are only built for fields that hold a record (most checks find none).
pub struct Probe<'a> {
    /// The bucket's index: its key is only needed when Redis is asked (the near-cache is not).
    bucket: u32,
    notice: &'a Notice,
    fields: [layout::Field; 8],
    n: usize,
}

/// What the cache knows about one check.
#[derive(Debug)]
pub struct Lookup {
    /// The bucket carries the marker: absent records really are absent.
    pub complete: bool,
    /// Covering records found, expired ones included (the service filters by its clock).
    pub found: Vec<Match>,
}

/// What one round trip of checks found.
#[derive(Debug)]
pub struct Lookups {
    pub checks: Vec<Lookup>,
    /// The write counter as this Redis has it (see [`Keys::writes`]).
    pub writes: u64,
}

/// What happened to an opt-out written to the cache, and the write counter after it.
#[derive(Debug)]
pub struct Written {
    pub outcome: Recorded,
    pub writes: u64,
    /// The number of the change fed to the near-caches (0: none; see [`near`]).
    pub change: u64,
    /// The near-cache leases as they stood just after the write: what the writer waits on.
    pub leases: near::Leases,
}

/// What a merge of records did: the write counter after it, and the last change it fed (0: none).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    pub writes: u64,
    pub change: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Visible to checks and appended to the stream under this id.
    Queued { stream_id: String },
    /// The idempotency key was used before, for this receipt; nothing was written.
    Replay(ReceiptId),
    /// The stream holds at least `limit` uncommitted entries; nothing was written.
    BacklogFull { backlog: u64 },
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

    pub fn probe<'a>(&self, subject: &SubjectHash, notice: &'a Notice) -> Probe<'a> {
        let (fields, n) = layout::candidate_fields(subject, notice);
        Probe {
            bucket: self.keys.bucket_of(subject),
            notice,
            fields,
            n,
        }
    }

    /// Reads every probe, and the write counter, in one round trip.
    #[tracing::instrument(name = "HMGET", skip_all, fields(
        otel.kind = "client", db.system = "redis", db.operation = "HMGET",
        db.redis.pipeline_length = probes.len() as i64))]
    pub async fn lookup(&self, probes: Vec<Probe<'_>>) -> Result<Lookups, CacheError> {
        let mut pipe = redis::pipe();
        for probe in &probes {
            pipe.cmd("HMGET")
                .arg(self.keys.bucket(probe.bucket))
                .arg(MARKER_FIELD);
            for field in &probe.fields[..probe.n] {
                pipe.arg(&field[..]);
            }
        }
        pipe.get(self.keys.writes());
        let (replies, writes) = pipe
            .query_async::<redis::Value>(&mut self.conn())
            .await
            .and_then(|v| split_lookup_reply(v, probes.len()))
            .context("HMGET candidates")?;
        let checks = probes
            .into_iter()
            .zip(replies)
            .map(|(probe, values)| {
                let mut values = values.into_iter();
                let complete = values.next().flatten().is_some();
                let found = if values.as_slice().iter().all(Option::is_none) {
                    Vec::new()
                } else {
                    probe
                        .notice
                        .candidates()
                        .into_iter()
                        .zip(values)
                        .filter_map(|(scope, v)| layout::decode_value(scope, &v?))
                        .collect()
                };
                Lookup { complete, found }
            })
            .collect();
        Ok(Lookups {
            checks,
            writes: writes.unwrap_or(0),
        })
    }

    /// Makes an opt-out visible and queues it, atomically with the idempotency check. `payload` is
    /// the stream entry the worker will commit; `backlog_limit` (0 = none) refuses new writes while
    /// the stream holds that many uncommitted entries.
    #[tracing::instrument(name = "EVALSHA", skip_all, fields(
        otel.kind = "client", db.system = "redis", db.operation = "EVALSHA",
        suppressd.script = "opt_out"))]
    pub async fn record(
        &self,
        s: &Suppression,
        payload: &str,
        backlog_limit: u64,
    ) -> Result<Written, CacheError> {
        let idem = s.idempotency_key.as_deref();
        let asked = std::time::Instant::now();
        let reply: OptOutReply = self
            .opt_out
            .key(self.keys.bucket_for(&s.subject))
            .key(self.keys.stream())
            .key(self.keys.idempotency(&s.scope.tenant, idem.unwrap_or("")))
            .key(self.keys.receipt(s.receipt))
            .key(self.keys.writes())
            .key(self.keys.near_replicas())
            .key(self.keys.near_renewals())
            .key(self.keys.changes())
            .key(self.keys.change_seq())
            .arg(if idem.is_some() { "1" } else { "0" })
            .arg(&layout::field(&s.subject, &s.scope)[..])
            .arg(layout::encode_value(&Match::from(s)))
            .arg(s.receipt.to_string())
            .arg(payload)
            .arg(KEY_TTL.as_millis() as u64)
            .arg(backlog_limit)
            .invoke_async(&mut self.conn())
            .await
            .context("recording an opt-out")?;
        let (code, detail, writes, change, now, renewals, registry) = reply;
        let outcome = match (code, detail) {
            (0, prior) => Recorded::Replay(ReceiptId::parse("receipt", &prior).map_err(|_| {
                CacheError::new(
                    "idempotency key",
                    RedisError::from((redis::ErrorKind::Parse, "not a receipt id")),
                )
            })?),
            (2, backlog) => Recorded::BacklogFull {
                backlog: backlog.parse().unwrap_or(u64::MAX),
            },
            (_, stream_id) => Recorded::Queued { stream_id },
        };
        Ok(Written {
            outcome,
            writes,
            change,
            leases: near::Leases::new(asked, now, renewals, registry),
        })
    }

    /// Writes committed records into the cache with the same merge rule as an opt-out: used by the
    /// rebuild, by imports, and by the worker after each commit (so a record committed just after a
    /// flush is not missed by a rebuild that had already read past it). Bumps the write counter
    /// after them, in the same pipeline, and returns it: a Redis that comes back without these
    /// records (an old snapshot, a lagging replica) comes back without the bump too, which is how a
    /// replica that saw the bump tells (see [`Keys::writes`]). With no records, nothing is sent.
    ///
    /// `feed`: whether the fields it changes go to the change feed (everything but a rebuild; see
    /// [`layout::merge_script`]).
    #[tracing::instrument(name = "EVALSHA", skip_all, fields(
        otel.kind = "client", db.system = "redis", db.operation = "EVALSHA",
        suppressd.script = "merge", db.redis.pipeline_length = records.len() as i64))]
    pub async fn merge(&self, records: &[Suppression], feed: bool) -> Result<Merged, CacheError> {
        if records.is_empty() {
            return Ok(Merged::default());
        }
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        for s in records {
            let call = pipe.cmd("EVALSHA").arg(self.merge.get_hash());
            if feed {
                call.arg(3)
                    .arg(self.keys.bucket_for(&s.subject))
                    .arg(self.keys.changes())
                    .arg(self.keys.change_seq());
            } else {
                call.arg(1).arg(self.keys.bucket_for(&s.subject));
            }
            call.arg(&layout::field(&s.subject, &s.scope)[..])
                .arg(layout::encode_value(&Match::from(s)));
        }
        pipe.incr(self.keys.writes(), 1);
        // EVALSHA first, as redis-rs's `Script` does: the script is loaded only when Redis does not
        // know it (a first merge, or a Redis restarted since), and the pipeline is then sent again.
        // Sent again, nothing goes wrong: a record merged twice is merged once, and the write
        // counter only goes up one more.
        let mut replies: Vec<u64> = match pipe.query_async(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(layout::merge_script())
                    .query_async::<String>(&mut conn)
                    .await
                    .context("loading the merge script")?;
                pipe.query_async(&mut conn).await
            }
            replies => replies,
        }
        .context("merging records")?;
        let writes = replies.pop().unwrap_or(0);
        Ok(Merged {
            writes,
            change: replies.into_iter().max().unwrap_or(0),
        })
    }

    /// The receipt an idempotency key was used for, while Redis still remembers it.
    #[tracing::instrument(name = "GET", skip_all, fields(
        otel.kind = "client", db.system = "redis", db.operation = "GET"))]
    pub async fn idempotent_receipt(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<ReceiptId>, CacheError> {
        let prior: Option<String> = self
            .conn()
            .get(self.keys.idempotency(tenant, key))
            .await
            .context("GET idempotency key")?;
        Ok(prior.and_then(|p| ReceiptId::parse("receipt", &p).ok()))
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

/// The opt-out script's reply: outcome code, its detail, the write counter, the change fed, then
/// Redis's clock, the renewal count and the near-cache leases (see [`layout::opt_out_script`]).
type OptOutReply = (i64, String, u64, u64, u64, u64, Vec<(String, String)>);

/// One `HMGET` reply: the marker, then one value per candidate scope.
type Candidates = Vec<Option<Vec<u8>>>;

/// Splits a lookup pipeline's reply: one `HMGET` reply per probe, then the write counter.
fn split_lookup_reply(
    reply: redis::Value,
    probes: usize,
) -> Result<(Vec<Candidates>, Option<u64>), RedisError> {
    let redis::Value::Array(mut items) = reply else {
        return Err((redis::ErrorKind::Parse, "a pipeline answers with an array").into());
    };
    if items.len() != probes + 1 {
        return Err((redis::ErrorKind::Parse, "one reply per command").into());
    }
    let writes = items.pop().expect("checked length");
    let hmget = items
        .into_iter()
        .map(redis::from_redis_value)
        .collect::<Result<_, _>>()?;
    Ok((hmget, redis::from_redis_value(writes)?))
}
