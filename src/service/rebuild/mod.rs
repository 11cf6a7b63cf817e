//! Keeping the cache complete. When Redis has lost what it held (restarted empty, flushed, failed over,
//! a bucket evicted), checks fall back to the store and this rebuilds the cache from the store in the
//! background: one replica at a time (a lease in Redis), page by page, then marks every bucket.
//!
//! A Redis that went back in time (a stale replica promoted, an old snapshot loaded) still carries
//! markers, so it is recognised by its write counter instead (see `cache`): a value below the
//! highest this replica saw means writes were lost; the replica that sees it removes every marker
//! and the cache is rebuilt.
//!
//! Each slot group (see `cache::layout`) has its own markers and write counter, so a group that
//! lost its keys (a Cluster shard flushed, or failed over to a replica that lost writes) is rebuilt
//! alone: every record is read from the store, and only that group's are written, while the other
//! groups go on answering from the cache.
//!
//! Opt-outs that arrive meanwhile are written to Redis by their own path and are never overwritten by
//! older store data (the merge rule keeps a permanent record). A record the worker commits after the
//! rebuild read past its page is re-applied by the worker itself; a last pass over records committed
//! since the rebuild began catches any that raced the worker's re-apply; then every entry still in
//! the write-behind stream is copied too (an entry leaves it only after the worker merged it back).
//!
//! A rebuild writes, and marks complete, every bucket layout this replica writes
//! (`cache::layouts`). A layout that is not complete while the group is (the configured layout of
//! a replica whose bucket layout changed) is *filled* alone under the group's generation, once
//! every live replica writes it (`fill`).

mod fill;

use crate::{
    cache::{
        Cache,
        layout::{Group, Keys, Layout},
    },
    domain::{Clock, Millis, Suppression},
    store::Store,
    telemetry::{metrics::names, sampling},
};
use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Records read from the store and written to Redis per page.
pub(crate) const PAGE: usize = 2_000;
/// How long the lease lasts without renewal: a rebuilder that died frees it after this.
const LEASE_TTL: Duration = Duration::from_secs(15);
/// How far back the final pass looks, to cover worker batches that were in flight at the start.
const CATCH_UP_MARGIN: Millis = 60_000;
/// How often the rebuilder looks at the marker without being asked.
const POLL: Duration = Duration::from_secs(1);

/// How the request path tells the rebuilder what it saw: a bucket without the marker, or a Redis
/// that went back in time.
#[derive(Default)]
pub(crate) struct RebuildTrigger {
    notify: Notify,
    /// A bucket a check found without its marker, and its group.
    suspect: Mutex<Option<(Group, String)>>,
    /// The groups found to have gone back in time, until their markers are removed.
    stale: Mutex<Vec<Group>>,
    /// `stale` is not empty: the checks' fast path reads only this.
    any_stale: AtomicBool,
}

impl RebuildTrigger {
    /// Whether a slot group, answering `writes` to a read sent after
    /// [`Cache::writes_seen`](crate::cache::Cache::writes_seen) returned `seen_before`, has lost
    /// writes this replica saw; if so, asks for the group's markers to be removed and the group
    /// rebuilt. It stays so until the rebuilder has removed them.
    pub(crate) fn went_back(&self, group: Group, seen_before: u64, writes: u64) -> bool {
        if writes < seen_before {
            let mut stale = self.stale.lock().expect("trigger lock");
            if !stale.contains(&group) {
                stale.push(group);
                self.any_stale.store(true, Ordering::SeqCst);
                tracing::error!(
                    group,
                    writes,
                    seen = seen_before,
                    "Redis lost writes it had acknowledged (stale failover or old snapshot); \
                     answering from the store and rebuilding"
                );
                self.notify.notify_one();
            }
            return true;
        }
        self.any_stale.load(Ordering::SeqCst)
            && self.stale.lock().expect("trigger lock").contains(&group)
    }

    /// The group's markers are gone: it answers from the store until rebuilt, stale no more.
    fn unmarked(&self, group: Group) {
        let mut stale = self.stale.lock().expect("trigger lock");
        stale.retain(|&g| g != group);
        self.any_stale.store(!stale.is_empty(), Ordering::SeqCst);
    }

    pub(crate) fn suspect(&self, group: Group, bucket: &str) {
        let mut suspect = self.suspect.lock().expect("trigger lock");
        if suspect.is_none() {
            *suspect = Some((group, bucket.to_owned()));
            self.notify.notify_one();
        }
    }

    fn take(&self) -> Option<(Group, String)> {
        self.suspect.lock().expect("trigger lock").take()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RebuildOutcome {
    /// The cache was complete; nothing done.
    NotNeeded,
    /// Another replica holds the lease.
    Elsewhere,
    /// Redis lost the rebuild's work (or the lease) mid-way; try again.
    Interrupted,
    Rebuilt {
        records: u64,
        took: Duration,
    },
    /// A fill came to nothing: a write that does not write the layout came meanwhile. Tried
    /// again at the next look, not at once.
    Unfilled,
}

pub(crate) struct Rebuilder {
    cache: Cache,
    store: Store,
    clock: Clock,
    owner: String,
}

impl Rebuilder {
    pub(crate) fn new(cache: Cache, store: Store, clock: Clock, owner: String) -> Self {
        Self {
            cache,
            store,
            clock,
            owner,
        }
    }

    /// Rebuilds the groups that are not complete, whose suspected bucket lacks its marker, or that
    /// went back in time. The step function of the background loop.
    pub(crate) async fn step(&self, trigger: &RebuildTrigger) -> anyhow::Result<RebuildOutcome> {
        let suspect = trigger.take();
        let groups = self.cache.keys().group_count();
        let counters = (0..groups).map(|g| {
            let seen = self.cache.writes_seen(g);
            async move { Ok::<_, crate::cache::CacheError>((g, seen, self.cache.writes(g).await?)) }
        });
        for (g, seen, writes) in futures_util::future::try_join_all(counters).await? {
            if trigger.went_back(g, seen, writes) {
                self.cache
                    .unmark_group(g, self.cache.writes_seen(g))
                    .await?;
                trigger.unmarked(g);
            }
        }
        let mut needed = self.cache.incomplete_groups().await?;
        if let Some((group, bucket)) = suspect
            && !needed.contains(&group)
            && !self.cache.bucket_is_complete(&bucket).await?
        {
            needed.push(group);
        }
        if needed.is_empty() {
            return self.fill_if_wanted().await;
        }
        self.under_lease(async {
            metrics::gauge!(names::REBUILD_RECORDS).set(0.0);
            let outcome =
                sampling::Sampled::new(self.rebuild(&needed), sampling::decide(None)).await;
            let label = match &outcome {
                Ok(RebuildOutcome::Rebuilt { .. }) => "rebuilt",
                Ok(_) => "interrupted",
                Err(_) => "failed",
            };
            metrics::counter!(names::REBUILDS, "outcome" => label).increment(1);
            outcome
        })
        .await
    }

    /// Runs `work` under the rebuild lease (one replica at a time), with the running gauge up
    /// meanwhile; `Elsewhere` when another replica holds the lease.
    async fn under_lease(
        &self,
        work: impl Future<Output = anyhow::Result<RebuildOutcome>>,
    ) -> anyhow::Result<RebuildOutcome> {
        if !self
            .cache
            .acquire_rebuild_lease(&self.owner, LEASE_TTL)
            .await?
        {
            return Ok(RebuildOutcome::Elsewhere);
        }
        metrics::gauge!(names::REBUILD_RUNNING).set(1.0);
        let outcome = work.await;
        metrics::gauge!(names::REBUILD_RUNNING).set(0.0);
        if let Err(e) = self.cache.release_rebuild_lease(&self.owner).await {
            tracing::warn!(error = %e, "could not release the rebuild lease; it will expire");
        }
        outcome
    }

    /// Rebuilds `groups` (one generation for all of them).
    #[tracing::instrument(name = "cache.rebuild", skip_all, fields(suppressd.groups = groups.len()))]
    async fn rebuild(&self, groups: &[Group]) -> anyhow::Result<RebuildOutcome> {
        let started = Instant::now();
        let began_at = self.clock.now();
        let generation = uuid::Uuid::new_v4().to_string();
        let plan = self.cache.layouts().plan();
        let names: Vec<Layout> = plan.writes.iter().map(|(l, _)| *l).collect();
        for &g in groups {
            self.cache.begin_generation(g, &generation).await?;
            self.cache.begin_fill(g, &generation, &names).await?;
        }
        tracing::info!(generation, ?groups, layouts = ?plan.write_names(), "cache rebuild started");
        let rebuilding = Rebuilding {
            groups,
            generation: &generation,
            layouts: &plan.writes,
        };
        let mut records = self.copy_since(0, &rebuilding).await?;
        let Some(copied) = records else {
            return Ok(RebuildOutcome::Interrupted);
        };
        records = self
            .copy_since(began_at - CATCH_UP_MARGIN, &rebuilding)
            .await?;
        let Some(caught_up) = records else {
            return Ok(RebuildOutcome::Interrupted);
        };
        // A record that ended (opt-in, rollback) after the copy read it was written back by the
        // copy: take those out again, last, after every write of the copy.
        self.retract_since(began_at - CATCH_UP_MARGIN).await?;
        let layouts: Vec<Keys> = plan.writes.iter().map(|(_, k)| k.clone()).collect();
        for &g in groups {
            self.copy_queued(g, &plan.writes).await?;
            if !self.cache.mark_complete(g, &generation, &layouts).await? {
                return Ok(RebuildOutcome::Interrupted);
            }
            self.cache.validate(g, &generation, &names).await?;
        }
        let took = started.elapsed();
        tracing::info!(records = copied, caught_up, ?took, "cache rebuild complete");
        Ok(RebuildOutcome::Rebuilt {
            records: copied,
            took,
        })
    }

    /// Copies active records committed at or after `since` into Redis. `None` if the generation or
    /// the lease was lost on the way. The next page is read from the store while the current one
    /// is written to Redis: the two servers work at once.
    async fn copy_since(
        &self,
        since: Millis,
        rebuilding: &Rebuilding<'_>,
    ) -> anyhow::Result<Option<u64>> {
        let keys = self.cache.keys();
        let every_group = rebuilding.groups.len() as u32 == keys.group_count();
        // Only the records of the groups being rebuilt are written.
        let of_groups = |page: &[Suppression]| -> Vec<Suppression> {
            page.iter()
                .filter(|s| rebuilding.groups.contains(&keys.group_of(&s.subject)))
                .cloned()
                .collect()
        };
        let read = |after| self.store.active_page(after, since, PAGE, self.clock.now());
        let mut page = read(None).await?;
        let mut copied = 0;
        loop {
            let Some(last) = page.last() else {
                return Ok(Some(copied));
            };
            let some;
            let writing = if every_group {
                &page[..]
            } else {
                some = of_groups(&page);
                &some[..]
            };
            let (next, merged) = tokio::join!(
                read(Some(last.receipt)),
                self.cache.merge_into(writing, rebuilding.layouts, false)
            );
            merged?;
            copied += writing.len() as u64;
            metrics::gauge!(names::REBUILD_RECORDS).increment(writing.len() as f64);
            if !self.generations_are(rebuilding).await?
                || !self
                    .cache
                    .renew_rebuild_lease(&self.owner, LEASE_TTL)
                    .await?
            {
                tracing::warn!(
                    copied,
                    "cache rebuild interrupted: Redis lost its work or the lease"
                );
                return Ok(None);
            }
            if copied % (PAGE as u64 * 50) == 0 {
                tracing::info!(copied, "cache rebuild progress");
            }
            page = next?;
        }
    }

    /// Whether every group being rebuilt still holds the rebuild's generation.
    async fn generations_are(&self, rebuilding: &Rebuilding<'_>) -> anyhow::Result<bool> {
        let asked = rebuilding
            .groups
            .iter()
            .map(|&g| self.cache.generation_is(g, rebuilding.generation));
        Ok(futures_util::future::try_join_all(asked)
            .await?
            .into_iter()
            .all(|kept| kept))
    }

    /// Copies the records still queued in a group's write-behind stream (see the module doc).
    async fn copy_queued(&self, group: Group, layouts: &[(Layout, Keys)]) -> anyhow::Result<()> {
        let queued = self.cache.stream_records(group).await?;
        self.cache.merge_into(&queued, layouts, false).await?;
        Ok(())
    }

    /// Re-applies the endings of records ended at or after `since`.
    async fn retract_since(&self, since: Millis) -> anyhow::Result<()> {
        let mut after = None;
        loop {
            let page = self.store.ended_page(after, since, PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.receipt);
            super::records::retract(&self.cache, &self.store, &page, self.clock.now()).await?;
        }
    }

    /// Runs until shutdown: rebuilds whenever the cache is found incomplete, by a check or by a
    /// periodic look.
    pub(crate) async fn run(
        self,
        trigger: std::sync::Arc<RebuildTrigger>,
        shutdown: CancellationToken,
    ) {
        loop {
            match self.step(&trigger).await {
                Ok(RebuildOutcome::Interrupted) => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "cache rebuild failed; will retry")
                }
            }
            tokio::select! {
                _ = trigger.notify.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// What one rebuild (or fill) is doing: the groups it rebuilds, under one generation, and the
/// layouts it writes.
struct Rebuilding<'a> {
    groups: &'a [Group],
    generation: &'a str,
    layouts: &'a [(Layout, Keys)],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_at_or_above_what_was_seen_is_no_lost_write() {
        let trigger = RebuildTrigger::default();
        assert!(!trigger.went_back(0, 5, 5));
        assert!(!trigger.went_back(0, 5, 9));
        assert!(!trigger.any_stale.load(Ordering::SeqCst));
    }

    #[test]
    fn a_counter_below_what_was_seen_before_the_read_is_a_lost_write_of_that_group() {
        let trigger = RebuildTrigger::default();
        assert!(trigger.went_back(1, 6, 5));
        // It stays stale until the rebuilder has removed the group's markers; other groups not.
        assert!(trigger.went_back(1, 6, 6));
        assert!(!trigger.went_back(0, 6, 6));
        trigger.unmarked(1);
        assert!(!trigger.went_back(1, 6, 6));
    }
}
