//! The near-cache: each replica's own copy, in memory, of every cached suppression, so that a check
//! answers without a round trip to Redis (SPEC §8); and the protocol that keeps SPEC §5's first
//! promise with it: once a write returns, every replica answers by it.
//!
//! - **Copied whole, then followed.** A replica notes the change feed's head (`Keys::changes`),
//!   copies every bucket of a complete cache (each must carry its marker) in the layout its checks
//!   read, which must still be `ok` after the copy (`cache::layouts`), and applies the feed
//!   from the noted head on. Every write that changes a bucket field feeds the field's new value,
//!   numbered consecutively, so a gap in the numbers (the feed trimmed past this replica, Redis
//!   restarted) ends the copy's life.
//! - **Leases that acknowledge.** Soon after each read of the feed the replica renews its lease in
//!   `Keys::near_replicas`, reporting the last change it applied. It answers from memory only
//!   until that lease runs out, measured on its own clock from before it asked, and only while each
//!   renewal finds the previous one where it left it, the cache still complete under the same
//!   rebuild generation, and the write counter no lower than the highest this replica saw (a
//!   Redis that went back in time keeps its markers; see `cache`). A renewal that comes after its lease ran out (the replica stalled, and
//!   writers stopped waiting for it) counts as registering again: it catches up before it serves.
//! - **Writers wait.** A write that fed change `c` returns only once every replica holding a live
//!   lease has applied `c`, or its lease has run out (`NearCache::settled`). A replica that
//!   registers after the write catches up past it before it serves. A writer that cannot have seen
//!   every lease (it started less than a lease ago, or Redis lost the leases) waits a lease out.
//!
//! Whenever the copy cannot vouch (still loading, Redis away longer than a lease, a rebuild), checks
//! take the Redis path, which keeps its own rules.
//!
//! **By slot group.** Each slot group (`layout::Keys`) has its own feed, leases, write counter and
//! markers, so the copy is one [`GroupCopy`] per group, each loading, following and leasing its
//! group's part alone: a gap in one group's feed, or one group rebuilt, reloads that group only.
//! A writer waits on the leases of the group it wrote to. A check answers from memory only when
//! the groups of all its subjects serve.
//!
//! This file runs the copy's life (load, follow, serve, stop); `copy` holds the records in memory
//! and reads the feed into them (`records` stores each shard's densely), `lease` is the protocol
//! with the writers (renewals, and the wait in `GroupCopy::settled`).

mod copy;
mod lease;
mod records;

pub use lease::Leases;
pub(crate) use lease::NotSettled;

use super::Conn;
use super::{Cache, CacheError, Context, Lookup, Merged, PerCheck, Probe, layout};
use crate::telemetry::metrics::names;
use copy::{SHARDS, Shard};
use lease::View;
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a renewal lets a replica answer from memory, as writers count it (Redis's clock).
pub(crate) const LEASE: Duration = Duration::from_millis(500);
/// What the replica itself takes off its lease, for clocks that do not tick alike.
const MARGIN: Duration = Duration::from_millis(100);
/// How long a read of the feed waits for changes: renewals come at least this often.
const BLOCK: Duration = Duration::from_millis(100);
/// How soon after applying a change the replica acknowledges it (renews): what a writer on another
/// replica waits for, at most, beyond the feed's own delay.
const ACK_EVERY: Duration = Duration::from_millis(2);
/// Pause before following again after the copy stopped.
const RETRY: Duration = Duration::from_millis(200);

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
    #[error(
        "Redis holds write counter {writes}, below the {seen} this replica saw: it lost writes \
         (a stale replica promoted, an old snapshot loaded)"
    )]
    WentBack { writes: u64, seen: u64 },
    #[error("the lease was not where this replica left it: Redis lost it")]
    LeaseLost,
    #[error("a change in the feed could not be read: {0}")]
    Malformed(String),
}

/// This replica's copy, and the writer's side of the protocol. Every replica has one; it follows
/// the feeds only when `run` is running.
pub struct NearCache {
    groups: Box<[GroupCopy]>,
}

impl NearCache {
    pub(crate) fn new(cache: Cache, replica: &str) -> NearCache {
        let serving = Arc::new(AtomicU32::new(0));
        NearCache {
            groups: cache
                .keys()
                .groups()
                .iter()
                .map(|g| GroupCopy::new(cache.clone(), replica, g.group()).counting(&serving))
                .collect(),
        }
    }

    /// TESTS ONLY: see [`GroupCopy::with_stall_failpoint`].
    #[cfg(feature = "failpoints")]
    pub(crate) fn with_stall_failpoint(self) -> NearCache {
        NearCache {
            groups: self
                .groups
                .into_iter()
                .map(GroupCopy::with_stall_failpoint)
                .collect(),
        }
    }

    /// The answers to `probes` from memory, or `None` when the copy cannot vouch for all of them.
    pub(crate) fn lookup(&self, probes: &[Probe<'_>]) -> Option<PerCheck<Lookup>> {
        if !probes.iter().all(|p| self.group(p.group).serving()) {
            return None;
        }
        Some(
            probes
                .iter()
                .map(|p| self.group(p.group).lookup_one(p))
                .collect(),
        )
    }

    fn group(&self, group: layout::Group) -> &GroupCopy {
        &self.groups[group as usize]
    }

    /// Whether checks of every group may be answered from memory now.
    pub fn serving(&self) -> bool {
        self.groups.iter().all(GroupCopy::serving)
    }

    /// Follows every group's feed, loading a group again whenever its copy stops, until `stop`.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        futures_util::future::join_all(self.groups.iter().map(|g| g.run(stop.clone()))).await;
    }

    /// Returns once every replica that may answer from memory has applied `change` of `group`
    /// (see [`GroupCopy::settled`]).
    pub(crate) async fn settled(
        &self,
        group: layout::Group,
        change: u64,
        leases: Option<Leases>,
    ) -> Result<(), lease::NotSettled> {
        self.group(group).settled(change, leases).await
    }

    /// [`Self::settled`] for every group a merge (or a retraction) fed, all at once.
    pub(crate) async fn settled_merged(&self, merged: &Merged) -> Result<(), lease::NotSettled> {
        let waits = merged
            .groups
            .iter()
            .map(|m| self.settled(m.group, m.change, None));
        futures_util::future::try_join_all(waits).await.map(drop)
    }
}

/// One slot group's part of the copy, and the writer's side of the protocol for that group.
pub(crate) struct GroupCopy {
    cache: Cache,
    group: layout::Group,
    replica: String,
    /// How many groups of this replica serve, shared by its groups: the serving gauge says 1 when
    /// all do.
    serving_groups: Arc<AtomicU32>,
    /// This group is counted in `serving_groups`.
    counted: AtomicBool,
    /// The records this group's last load copied, for the entries gauge (summed over groups).
    loaded: AtomicU64,
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

impl GroupCopy {
    pub(crate) fn new(cache: Cache, replica: &str, group: layout::Group) -> GroupCopy {
        let start = Instant::now();
        GroupCopy {
            cache,
            group,
            replica: replica.to_owned(),
            serving_groups: Arc::default(),
            counted: AtomicBool::new(false),
            loaded: AtomicU64::new(0),
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
    pub(crate) fn with_stall_failpoint(mut self) -> GroupCopy {
        self.stall_failpoint = true;
        self
    }

    /// The failpoint's stalls (see [`Self::with_stall_failpoint`]), if it is on and was told to.
    #[cfg(not(feature = "failpoints"))]
    async fn stall_told(&self, _: &mut Conn) -> Option<(Duration, Duration)> {
        None
    }

    /// The failpoint's stalls (see [`Self::with_stall_failpoint`]), if it is on and was told to.
    #[cfg(feature = "failpoints")]
    async fn stall_told(&self, conn: &mut Conn) -> Option<(Duration, Duration)> {
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

    fn counting(mut self, serving_groups: &Arc<AtomicU32>) -> GroupCopy {
        self.serving_groups = serving_groups.clone();
        self
    }

    /// This group's names.
    fn keys(&self) -> &layout::GroupKeys {
        self.cache.keys().group(self.group)
    }

    /// Counts this group in or out of the replica's serving groups, and sets the gauge.
    fn count_serving(&self, serving: bool) {
        if self.counted.swap(serving, Ordering::AcqRel) == serving {
            return;
        }
        let n = if serving {
            self.serving_groups.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.serving_groups.fetch_sub(1, Ordering::AcqRel) - 1
        };
        let all = n == self.cache.keys().group_count();
        metrics::gauge!(names::NEAR_CACHE_SERVING).set(if all { 1.0 } else { 0.0 });
    }

    /// Whether checks of this group may be answered from memory now.
    pub fn serving(&self) -> bool {
        let until = self.serving_until.load(Ordering::Acquire);
        until != 0 && (self.start.elapsed().as_nanos() as u64) < until
    }

    /// Follows the feed, loading again whenever the copy stops, until `stop`.
    async fn run(&self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let stopped = tokio::select! {
                stopped = self.follow() => stopped,
                () = stop.cancelled() => break,
            };
            self.stop_serving().await;
            if matches!(stopped, Stopped::Incomplete) {
                // Waiting for a rebuild to finish: expected at start and after Redis lost data.
                tracing::debug!(
                    group = self.group,
                    "near-cache waits for the cache to be complete"
                );
            } else {
                tracing::warn!(group = self.group, reason = %stopped,
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
                .arg(self.keys().near_replicas())
                .arg(&self.replica)
                .query_async::<()>(&mut self.cache.conn())
                .await;
        }
        self.count_serving(false);
    }

    /// Loads and follows; returns only why it stopped.
    async fn follow(&self) -> Stopped {
        match self.try_follow().await {
            Ok(never) => match never {},
            Err(stopped) => stopped,
        }
    }

    async fn try_follow(&self) -> Result<std::convert::Infallible, Stopped> {
        let mut conn = self
            .cache
            .redis()
            .blocking()
            .await
            .context("connecting the near-cache")?;
        let generation = self
            .cache
            .complete_generation(self.group)
            .await?
            .ok_or(Stopped::Incomplete)?;
        let mut feed = self.feed_head(&mut conn).await?;
        let (entries, layout) = self.load(&mut conn).await?;
        if self.cache.complete_generation(self.group).await?.as_deref() != Some(generation.as_str())
        {
            return Err(Stopped::Rebuilt);
        }
        // Still `ok` after the copy: every write before it reached the buckets copied.
        if !self.cache.layout_is_ok(self.group, layout).await? {
            return Err(Stopped::Incomplete);
        }
        let before = self.loaded.swap(entries as u64, Ordering::AcqRel);
        metrics::gauge!(names::NEAR_CACHE_ENTRIES).increment(entries as f64 - before as f64);
        self.catch_up(&mut conn, &mut feed).await?;
        // Registered: writers from now on wait for this copy. Then everything written before that.
        let mut lease = self
            .renew(&mut conn, feed.applied, None, &generation)
            .await?;
        // Where this copy stands, for writers here, before they wait on it: the feed's head when it
        // loaded may lie past the last change it read (a write just before the load, which the copy
        // holds), or below what an earlier copy applied (Redis restarted and numbers afresh).
        self.applied.send_replace(feed.applied);
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
            self.count_serving(true);
            if !announced {
                tracing::info!(
                    group = self.group,
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
}
