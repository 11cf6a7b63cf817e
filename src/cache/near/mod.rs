//! The near-cache: each replica's own copy, in memory, of every cached suppression, so that a check
//! answers without a round trip to Redis (SPEC §8); and the protocol that keeps SPEC §5's first
//! promise with it: once a write returns, every replica answers by it.
//!
//! - **Copied whole, then followed.** A replica notes the change feed's head ([`Keys::changes`]),
//!   copies every bucket of a complete cache (each must carry its marker), and applies the feed
//!   from the noted head on. Every write that changes a bucket field feeds the field's new value,
//!   numbered consecutively, so a gap in the numbers (the feed trimmed past this replica, Redis
//!   restarted) ends the copy's life.
//! - **Leases that acknowledge.** Soon after each read of the feed the replica renews its lease in
//!   [`Keys::near_replicas`], reporting the last change it applied. It answers from memory only
//!   until that lease runs out, measured on its own clock from before it asked, and only while each
//!   renewal finds the previous one where it left it and the cache still complete under the same
//!   rebuild generation. A renewal that comes after its lease ran out (the replica stalled, and
//!   writers stopped waiting for it) counts as registering again: it catches up before it serves.
//! - **Writers wait.** A write that fed change `c` returns only once every replica holding a live
//!   lease has applied `c`, or its lease has run out ([`NearCache::settled`]). A replica that
//!   registers after the write catches up past it before it serves. A writer that cannot have seen
//!   every lease (it started less than a lease ago, or Redis lost the leases) waits a lease out.
//!
//! Whenever the copy cannot vouch (still loading, Redis away longer than a lease, a rebuild), checks
//! take the Redis path, which keeps its own rules.

use super::{Cache, CacheError, Context, Lookup, Probe, layout};
use crate::telemetry::metrics::names;
use redis::{
    AsyncConnectionConfig, Script, Value, aio::MultiplexedConnection, streams::StreamReadReply,
};
use std::{
    collections::HashMap,
    sync::{
        LazyLock, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a renewal lets a replica answer from memory, as writers count it (Redis's clock).
pub const LEASE: Duration = Duration::from_millis(500);
/// What the replica itself takes off its lease, for clocks that do not tick alike.
const MARGIN: Duration = Duration::from_millis(100);
/// How long a read of the feed waits for changes: renewals come at least this often.
const BLOCK: Duration = Duration::from_millis(100);
const READ_COUNT: usize = 1_000;
/// How soon after applying a change the replica acknowledges it (renews): what a writer on another
/// replica waits for, at most, beyond the feed's own delay.
const ACK_EVERY: Duration = Duration::from_millis(2);
/// Buckets copied per pipeline while loading.
const LOAD_CHUNK: u32 = 256;
/// How often a writer waiting on other replicas looks at their acknowledgements.
const POLL: Duration = Duration::from_millis(1);
/// Pause before a writer reads the leases again after the read failed.
const PEEK_RETRY: Duration = Duration::from_millis(20);
/// A writer gives up after this (a lease always runs out well before).
const SETTLE_LIMIT: Duration = Duration::from_secs(3);
/// Pause before following again after the copy stopped.
const RETRY: Duration = Duration::from_millis(200);

type Shard = RwLock<HashMap<layout::Field, Box<[u8]>>>;
const SHARDS: usize = 64;

/// Why the copy stopped answering; it loads again after [`RETRY`].
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error(transparent)]
    Redis(#[from] CacheError),
    #[error("the cache is not complete (rebuilding)")]
    Incomplete,
    #[error("the cache was rebuilt")]
    Rebuilt,
    #[error("change {got} followed change {applied}: the feed lost changes")]
    Gap { applied: u64, got: u64 },
    #[error("the lease was not where this replica left it: Redis lost it")]
    LeaseLost,
    #[error("a change in the feed could not be read: {0}")]
    Malformed(String),
}

/// A renewal as Redis recorded it.
struct Lease {
    /// The registry value written, which the next renewal expects to find.
    entry: String,
    /// When (this replica's clock) the renewal was sent: the lease runs from no earlier.
    sent: Instant,
    /// The previous lease had run out by Redis's clock when this renewal came: writers meanwhile
    /// stopped waiting for this copy.
    lapsed: bool,
}

/// One replica's line in the registry.
#[derive(Debug, PartialEq, Eq)]
struct Registered {
    replica: String,
    applied: u64,
    renewed_at: u64,
}

/// The leases as one read of Redis found them.
#[derive(Debug)]
pub struct Leases {
    /// When (this process's clock) the read was sent.
    asked: Instant,
    /// Redis's clock (ms) when it answered.
    now: u64,
    renewals: u64,
    registry: Vec<Registered>,
}

impl Leases {
    pub(super) fn new(
        asked: Instant,
        now: u64,
        renewals: u64,
        registry: Vec<(String, String)>,
    ) -> Leases {
        Leases {
            asked,
            now,
            renewals,
            registry: parse_registry(registry),
        }
    }

    /// The replicas other than `me` that hold a live lease and have not applied `change`.
    fn behind<'a>(&'a self, change: u64, me: &'a str) -> impl Iterator<Item = &'a Registered> {
        let lease = LEASE.as_millis() as u64;
        self.registry.iter().filter(move |r| {
            r.replica != me && r.renewed_at + lease > self.now && r.applied < change
        })
    }
}

/// What a writer knows of the leases it may not see in the registry.
struct View {
    /// The highest renewal count seen, and when the read that returned it came back: a smaller count
    /// from a read sent after that means Redis lost leases (reads in flight together may come back
    /// in any order).
    renewals: u64,
    seen_at: Instant,
    /// Until then a writer also waits out leases it cannot see.
    blind_until: Instant,
}

/// This replica's copy, and the writer's side of the protocol. Every replica has one; it follows
/// the feed only when [`run`](Self::run) is running.
pub struct NearCache {
    cache: Cache,
    replica: String,
    shards: Box<[Shard]>,
    start: Instant,
    /// Nanoseconds after `start` until which answers from memory are allowed; 0: not serving.
    serving_until: AtomicU64,
    /// This replica's lease is in the registry: writers here wait for it to apply their change.
    registered: AtomicBool,
    /// The last change applied.
    applied: watch::Sender<u64>,
    view: Mutex<View>,
    /// See [`Self::with_stall_failpoint`].
    #[cfg(feature = "failpoints")]
    stall_failpoint: bool,
}

impl NearCache {
    pub fn new(cache: Cache, replica: &str) -> NearCache {
        let start = Instant::now();
        NearCache {
            cache,
            replica: replica.to_owned(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            start,
            serving_until: AtomicU64::new(0),
            registered: AtomicBool::new(false),
            applied: watch::Sender::new(0),
            // Leases granted before this process started are invisible to it for one lease.
            view: Mutex::new(View {
                renewals: 0,
                seen_at: start,
                blind_until: start + LEASE,
            }),
            #[cfg(feature = "failpoints")]
            stall_failpoint: false,
        }
    }

    /// TESTS ONLY: before each renewal while it serves, the copy takes
    /// [`Keys::near_stall_failpoint`](layout::Keys::near_stall_failpoint) from Redis; when the key
    /// holds `before:after` (ms), it stalls `before`, renews, and once it answers from memory again
    /// stalls `after` before it reads the feed: a replica stalled past its lease just as it renews,
    /// and slow to read the feed then.
    #[cfg(feature = "failpoints")]
    pub fn with_stall_failpoint(mut self) -> NearCache {
        self.stall_failpoint = true;
        self
    }

    /// The failpoint's stalls (see [`Self::with_stall_failpoint`]), if it is on and was told to.
    #[cfg(not(feature = "failpoints"))]
    async fn stall_told(&self, _: &mut MultiplexedConnection) -> Option<(Duration, Duration)> {
        None
    }

    /// The failpoint's stalls (see [`Self::with_stall_failpoint`]), if it is on and was told to.
    #[cfg(feature = "failpoints")]
    async fn stall_told(&self, conn: &mut MultiplexedConnection) -> Option<(Duration, Duration)> {
        if !self.stall_failpoint {
            return None;
        }
        let key = self.cache.keys().near_stall_failpoint();
        let told: Option<String> = redis::cmd("GETDEL").arg(key).query_async(conn).await.ok()?;
        let (before, after) = told?.split_once(':').map(|(b, a)| (b.parse(), a.parse()))?;
        tracing::warn!("failpoint: the near-cache stalls around a renewal");
        Some((
            Duration::from_millis(before.ok()?),
            Duration::from_millis(after.ok()?),
        ))
    }

    /// Whether checks may be answered from memory now.
    pub fn serving(&self) -> bool {
        let until = self.serving_until.load(Ordering::Acquire);
        until != 0 && (self.start.elapsed().as_nanos() as u64) < until
    }

    /// The answers to `probes` from memory, or `None` when the copy cannot vouch for them.
    pub fn lookup(&self, probes: &[Probe<'_>]) -> Option<Vec<Lookup>> {
        if !self.serving() {
            return None;
        }
        Some(probes.iter().map(|p| self.lookup_one(p)).collect())
    }

    fn lookup_one(&self, probe: &Probe<'_>) -> Lookup {
        // The candidate scopes are built only for a check that finds a record (most find none).
        let mut candidates = None;
        let mut found = Vec::new();
        for (k, field) in probe.fields[..probe.n].iter().enumerate() {
            if let Some(v) = self.shard(field).read().expect("shard lock").get(field) {
                let scope = candidates.get_or_insert_with(|| probe.notice.candidates())[k].clone();
                found.extend(layout::decode_value(scope, v));
            }
        }
        Lookup {
            complete: true,
            found,
        }
    }

    fn shard(&self, field: &layout::Field) -> &Shard {
        &self.shards[usize::from(field[0]) % SHARDS]
    }

    /// Returns once every replica that may answer from memory has applied `change`, or its lease has
    /// run out; at once for 0 (nothing fed). `leases`: a read of them made after the write, if the
    /// write brought one back. Fails when that cannot be known in time (Redis away).
    pub async fn settled(&self, change: u64, leases: Option<Leases>) -> Result<(), NotSettled> {
        if change == 0 {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        if self.registered.load(Ordering::Acquire) {
            let mut applied = self.applied.subscribe();
            let here =
                applied.wait_for(|&a| a >= change || !self.registered.load(Ordering::Acquire));
            tokio::time::timeout_at(deadline, here)
                .await
                .map_err(|_| self.local_timeout(change))?
                .map_err(|_| self.local_timeout(change))?;
        }
        let mut leases = leases;
        loop {
            let read = match leases.take() {
                Some(read) => Ok(read),
                None => self.peek().await,
            };
            let read = match read {
                Ok(read) => read,
                // A slow or reconnecting Redis: ask again while there is time.
                Err(e) if tokio::time::Instant::now() + PEEK_RETRY < deadline => {
                    tracing::debug!(error = %e, "reading the near-cache leases; retrying");
                    tokio::time::sleep(PEEK_RETRY).await;
                    continue;
                }
                Err(e) => return Err(NotSettled::Redis(e)),
            };
            let blind_until = self.observe(read.renewals, read.asked);
            let behind = read.behind(change, &self.replica).next().is_some();
            let blind = Instant::now() < blind_until;
            if !behind && !blind {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let mut waiting: Vec<String> = read
                    .behind(change, &self.replica)
                    .map(|r| {
                        format!(
                            "replica {} at change {} (renewed {} ms before)",
                            r.replica,
                            r.applied,
                            read.now.saturating_sub(r.renewed_at)
                        )
                    })
                    .collect();
                if blind {
                    waiting.push("leases Redis lost".into());
                }
                return Err(NotSettled::Timeout(format!(
                    "change {change}: waiting on {}",
                    waiting.join(", ")
                )));
            }
            let pause = if behind {
                POLL
            } else {
                blind_until.saturating_duration_since(Instant::now())
            };
            tokio::time::sleep(pause).await;
        }
    }

    fn local_timeout(&self, change: u64) -> NotSettled {
        NotSettled::Timeout(format!(
            "change {change}: waiting on this replica, at change {}",
            *self.applied.borrow()
        ))
    }

    /// Notes a renewal count read from Redis by a read sent at `asked`; returns until when writers
    /// must also wait out leases they cannot see.
    fn observe(&self, renewals: u64, asked: Instant) -> Instant {
        let mut view = self.view.lock().expect("view lock");
        if renewals < view.renewals && asked > view.seen_at {
            tracing::warn!(
                renewals,
                seen = view.renewals,
                "Redis lost near-cache leases; writes wait a lease out"
            );
            view.blind_until = view.blind_until.max(Instant::now() + LEASE);
            view.renewals = renewals;
            view.seen_at = Instant::now();
        } else if renewals > view.renewals {
            view.renewals = renewals;
            view.seen_at = Instant::now();
        }
        view.blind_until
    }

    /// Reads the leases: Redis's clock, the renewal count and the registry, in one round trip.
    async fn peek(&self) -> Result<Leases, CacheError> {
        let keys = self.cache.keys();
        let asked = Instant::now();
        let (now, renewals, registry): (u64, u64, Vec<(String, String)>) = PEEK
            .key(keys.near_replicas())
            .key(keys.near_renewals())
            .invoke_async(&mut self.cache.conn())
            .await
            .context("reading the near-cache leases")?;
        Ok(Leases::new(asked, now, renewals, registry))
    }

    /// Follows the feed, loading again whenever the copy stops, until `stop`.
    pub async fn run(self: std::sync::Arc<Self>, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let stopped = tokio::select! {
                stopped = self.follow() => stopped,
                () = stop.cancelled() => break,
            };
            self.stop_serving().await;
            if matches!(stopped, Stopped::Incomplete) {
                // Waiting for a rebuild to finish: expected at start and after Redis lost data.
                tracing::debug!("near-cache waits for the cache to be complete");
            } else {
                tracing::warn!(reason = %stopped,
                    "near-cache stopped answering; checks go to Redis until it has loaded again");
            }
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                () = stop.cancelled() => break,
            }
        }
        self.stop_serving().await;
    }

    async fn stop_serving(&self) {
        self.serving_until.store(0, Ordering::Release);
        if self.registered.swap(false, Ordering::AcqRel) {
            // Wake writers waiting on this copy; then stop holding up other replicas' writers.
            self.applied.send_modify(|_| {});
            let _ = redis::cmd("HDEL")
                .arg(self.cache.keys().near_replicas())
                .arg(&self.replica)
                .query_async::<()>(&mut self.cache.conn())
                .await;
        }
        metrics::gauge!(names::NEAR_CACHE_SERVING).set(0.0);
    }

    /// Loads and follows; returns only why it stopped.
    async fn follow(&self) -> Stopped {
        match self.try_follow().await {
            Ok(never) => match never {},
            Err(stopped) => stopped,
        }
    }

    async fn try_follow(&self) -> Result<std::convert::Infallible, Stopped> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(BLOCK + Duration::from_millis(500)));
        let mut conn = self
            .cache
            .client()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .context("connecting the near-cache")?;
        let generation = self
            .cache
            .complete_generation()
            .await?
            .ok_or(Stopped::Incomplete)?;
        let mut feed = self.feed_head(&mut conn).await?;
        let entries = self.load(&mut conn).await?;
        if self.cache.complete_generation().await?.as_deref() != Some(generation.as_str()) {
            return Err(Stopped::Rebuilt);
        }
        metrics::gauge!(names::NEAR_CACHE_ENTRIES).set(entries as f64);
        self.catch_up(&mut conn, &mut feed).await?;
        // Registered: writers from now on wait for this copy. Then everything written before that.
        let mut lease = self
            .renew(&mut conn, feed.applied, None, &generation)
            .await?;
        self.registered.store(true, Ordering::Release);
        self.catch_up(&mut conn, &mut feed).await?;
        let mut announced = false;
        let mut stall_after = None;
        loop {
            if let Some((before, after)) = self.stall_told(&mut conn).await {
                tokio::time::sleep(before).await;
                stall_after = Some(after);
            }
            lease = self
                .renew(&mut conn, feed.applied, Some(&lease.entry), &generation)
                .await?;
            if lease.lapsed {
                // Stalled past its lease (its own clock had already stopped it answering), so
                // writers meanwhile returned without it: it answers again only once it has caught
                // up past everything they wrote, which this renewal, waited for from now on, bounds.
                self.serving_until.store(0, Ordering::Release);
                self.catch_up(&mut conn, &mut feed).await?;
                continue;
            }
            let until = (lease.sent + LEASE - MARGIN).duration_since(self.start);
            self.serving_until
                .store(until.as_nanos() as u64, Ordering::Release);
            metrics::gauge!(names::NEAR_CACHE_SERVING).set(1.0);
            if !announced {
                tracing::info!(
                    records = entries,
                    "near-cache loaded; checks answered from memory"
                );
                announced = true;
            }
            if let Some(after) = stall_after.take() {
                tokio::time::sleep(after).await;
            }
            // Read until there is something to acknowledge and it has waited ACK_EVERY (so that a
            // busy feed costs one renewal per ACK_EVERY, not one per change), or until BLOCK of quiet.
            let mut unacked = false;
            loop {
                let block = if unacked {
                    ACK_EVERY
                        .saturating_sub(lease.sent.elapsed())
                        .max(Duration::from_millis(1))
                } else {
                    BLOCK
                };
                let read = self.read(&mut conn, &mut feed, Some(block)).await?;
                unacked |= read > 0;
                if read == 0 || lease.sent.elapsed() >= ACK_EVERY {
                    break;
                }
            }
        }
    }

    /// The feed's last change: where following starts.
    async fn feed_head(&self, conn: &mut MultiplexedConnection) -> Result<Position, Stopped> {
        let keys = self.cache.keys();
        let (last, seq): (Vec<FeedEntry>, u64) = HEAD
            .key(keys.changes())
            .key(keys.change_seq())
            .invoke_async(conn)
            .await
            .context("reading the change feed's head")?;
        Ok(match last.into_iter().next() {
            Some((id, fields)) => Position {
                id,
                applied: fields
                    .get("s")
                    .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
                    .ok_or_else(|| Stopped::Malformed("a change without a number".into()))?,
            },
            None => Position {
                id: "0-0".into(),
                applied: seq,
            },
        })
    }

    /// Replaces the copy with every bucket as Redis holds it now. Returns the number of records.
    async fn load(&self, conn: &mut MultiplexedConnection) -> Result<usize, Stopped> {
        for shard in &self.shards {
            shard.write().expect("shard lock").clear();
        }
        let keys = self.cache.keys();
        let mut entries = 0;
        let mut from = 0;
        while from < keys.bucket_count() {
            let to = (from + LOAD_CHUNK).min(keys.bucket_count());
            let mut pipe = redis::pipe();
            for b in from..to {
                pipe.cmd("HGETALL").arg(keys.bucket(b));
            }
            let buckets: Vec<Vec<(Vec<u8>, Vec<u8>)>> =
                pipe.query_async(conn).await.context("copying buckets")?;
            for bucket in buckets {
                if !bucket.iter().any(|(f, _)| f == layout::MARKER_FIELD) {
                    return Err(Stopped::Incomplete);
                }
                for (field, value) in bucket {
                    if let Ok(field) = layout::Field::try_from(field.as_slice()) {
                        self.shard(&field)
                            .write()
                            .expect("shard lock")
                            .insert(field, value.into_boxed_slice());
                        entries += 1;
                    }
                }
            }
            from = to;
        }
        Ok(entries)
    }

    /// Reads the feed until it has nothing more.
    async fn catch_up(
        &self,
        conn: &mut MultiplexedConnection,
        feed: &mut Position,
    ) -> Result<(), Stopped> {
        while self.read(conn, feed, None).await? == READ_COUNT {}
        Ok(())
    }

    /// Applies the changes after `feed`, waiting up to `block` for one. Returns how many it read.
    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        feed: &mut Position,
        block: Option<Duration>,
    ) -> Result<usize, Stopped> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(READ_COUNT);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS")
            .arg(self.cache.keys().changes())
            .arg(&feed.id);
        let reply: Option<StreamReadReply> = cmd
            .query_async(conn)
            .await
            .context("reading the change feed")?;
        let mut read = 0;
        for change in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            let number = |name: &str| match change.map.get(name) {
                Some(Value::BulkString(b)) => Ok(b.clone()),
                other => Err(Stopped::Malformed(format!("{name}: {other:?}"))),
            };
            let seq: u64 = String::from_utf8_lossy(&number("s")?)
                .parse()
                .map_err(|_| Stopped::Malformed("s: not a number".into()))?;
            if seq != feed.applied + 1 {
                return Err(Stopped::Gap {
                    applied: feed.applied,
                    got: seq,
                });
            }
            let field = layout::Field::try_from(number("f")?.as_slice())
                .map_err(|_| Stopped::Malformed("f: not a field".into()))?;
            let value = number("v")?;
            let mut shard = self.shard(&field).write().expect("shard lock");
            if value.is_empty() {
                shard.remove(&field);
            } else {
                shard.insert(field, value.into_boxed_slice());
            }
            drop(shard);
            feed.id = change.id;
            feed.applied = seq;
            read += 1;
        }
        if read > 0 {
            self.applied.send_replace(feed.applied);
        }
        Ok(read)
    }

    /// Renews this replica's lease, reporting `applied`; `previous` is the entry the last renewal
    /// wrote (`None` when registering).
    async fn renew(
        &self,
        conn: &mut MultiplexedConnection,
        applied: u64,
        previous: Option<&str>,
        generation: &str,
    ) -> Result<Lease, Stopped> {
        let keys = self.cache.keys();
        let sent = Instant::now();
        let (kept, entry, complete, renewals, lapsed): (bool, String, String, u64, bool) = RENEW
            .key(keys.near_replicas())
            .key(keys.near_renewals())
            .key(keys.generation())
            .key(keys.complete())
            .arg(&self.replica)
            .arg(applied)
            .arg(previous.unwrap_or(""))
            .arg(10 * LEASE.as_millis() as u64)
            .arg(LEASE.as_millis() as u64)
            .invoke_async(conn)
            .await
            .context("renewing the near-cache lease")?;
        self.observe(renewals, sent);
        if previous.is_some() && !kept {
            return Err(Stopped::LeaseLost);
        }
        if complete != generation {
            return Err(Stopped::Rebuilt);
        }
        Ok(Lease {
            entry,
            sent,
            lapsed: previous.is_some() && lapsed,
        })
    }
}

/// A change as `XREVRANGE` returns it: its stream id and its fields.
type FeedEntry = (String, HashMap<String, Vec<u8>>);

/// Where following the feed stands: the last change read, by stream id and by number.
struct Position {
    id: String,
    applied: u64,
}

/// Why a write could not confirm that every replica answers by it.
#[derive(Debug, thiserror::Error)]
pub enum NotSettled {
    #[error("the near-cache leases could not be read")]
    Redis(#[source] CacheError),
    /// What it was still waiting on.
    #[error("replicas did not confirm the change in time ({0})")]
    Timeout(String),
}

fn parse_registry(registry: Vec<(String, String)>) -> Vec<Registered> {
    registry
        .into_iter()
        .filter_map(|(replica, value)| {
            let mut parts = value.split(':').map(str::parse);
            Some(Registered {
                replica,
                applied: parts.next()?.ok()?,
                renewed_at: parts.next()?.ok()?,
            })
        })
        .collect()
}

static HEAD: LazyLock<Script> = LazyLock::new(|| Script::new(HEAD_SCRIPT));
/// KEYS: registry, renewal counter. Returns Redis's clock (ms), the counter and the registry.
static PEEK: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{}return leases({{}})", layout::leases_fn(1, 2))));
static RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{}{RENEW_SCRIPT}", layout::NOW_MS_FN)));

/// KEYS: feed, change counter. Returns the last change (as XREVRANGE gives it) and the counter.
const HEAD_SCRIPT: &str = r"
return {redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1), redis.call('GET', KEYS[2]) or '0'}
";

/// Renews one replica's lease. KEYS: registry, renewal counter, generation, complete. ARGV: replica,
/// applied, the entry its last renewal wrote ('' when registering), how long (ms) a silent
/// replica's entry is kept, the lease (ms). Returns whether the previous entry was found as
/// written, the new entry, the generation the cache is complete under ('' if none), the renewal
/// count, and whether the previous lease had run out (as writers count it: renewed + lease <= now).
const RENEW_SCRIPT: &str = r"
local now = now_ms()
local kept = (redis.call('HGET', KEYS[1], ARGV[1]) or '') == ARGV[3]
local before = tonumber(string.match(ARGV[3], '^%d+:(%d+)') or '')
local lapsed = before ~= nil and before + tonumber(ARGV[5]) <= now
local n = redis.call('INCR', KEYS[2])
local entry = ARGV[2] .. ':' .. now .. ':' .. n
redis.call('HSET', KEYS[1], ARGV[1], entry)
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local renewed = tonumber(string.match(all[i + 1], '^%d+:(%d+)'))
  if renewed and renewed + tonumber(ARGV[4]) < now then redis.call('HDEL', KEYS[1], all[i]) end
end
local gen = redis.call('GET', KEYS[3])
local complete = redis.call('GET', KEYS[4])
local whole = ''
if gen and gen == complete then whole = gen end
return {kept and 1 or 0, entry, whole, n, lapsed and 1 or 0}
";

#[cfg(test)]
mod tests {
    use super::*;

    /// A renewal that comes after the lease ran out says so, and the follower then catches up
    /// before it answers again (writers stopped waiting for it meanwhile); one in time does not;
    /// one that finds its entry gone is lost, whatever the time.
    #[tokio::test]
    async fn a_renewal_after_the_lease_ran_out_is_lapsed() {
        let prefix = format!("lapse{}:", uuid::Uuid::new_v4().simple());
        let keys = layout::Keys::new(&prefix, 2);
        let cache = Cache::connect("redis://127.0.0.1:6379", keys.clone())
            .await
            .unwrap();
        let near = NearCache::new(cache.clone(), "r1");
        let mut conn = cache
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let () = redis::pipe()
            .set(keys.generation(), "g")
            .set(keys.complete(), "g")
            .query_async(&mut conn)
            .await
            .unwrap();

        let first = near.renew(&mut conn, 0, None, "g").await.unwrap();
        assert!(!first.lapsed, "registering");
        let in_time = near
            .renew(&mut conn, 1, Some(&first.entry), "g")
            .await
            .unwrap();
        assert!(!in_time.lapsed, "renewed at once");
        tokio::time::sleep(LEASE + Duration::from_millis(20)).await;
        let late = near
            .renew(&mut conn, 2, Some(&in_time.entry), "g")
            .await
            .unwrap();
        assert!(late.lapsed, "renewed a lease late");
        let () = redis::cmd("HDEL")
            .arg(keys.near_replicas())
            .arg("r1")
            .query_async(&mut conn)
            .await
            .unwrap();
        let gone = near.renew(&mut conn, 3, Some(&late.entry), "g").await;
        assert!(matches!(gone, Err(Stopped::LeaseLost)), "{:?}", gone.err());

        let () = redis::cmd("DEL")
            .arg(keys.near_replicas())
            .arg(keys.near_renewals())
            .arg(keys.generation())
            .arg(keys.complete())
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    #[test]
    fn registry_lines_parse_and_bad_ones_are_skipped() {
        let parsed = parse_registry(vec![
            ("a".into(), "12:1800000000000:7".into()),
            ("b".into(), "garbage".into()),
        ]);
        assert_eq!(
            parsed,
            vec![Registered {
                replica: "a".into(),
                applied: 12,
                renewed_at: 1_800_000_000_000,
            }]
        );
    }
}
