//! Filling this replica's configured bucket layout in a group that is complete in another one (its
//! `--cache-bucket-bits` changed): the rebuild's copy, into that layout alone, under the group's
//! current generation, so that the layouts the other replicas read keep answering meanwhile. Why
//! what it copies is enough is argued in `cache::layouts`.

use super::{CATCH_UP_MARGIN, RebuildOutcome, Rebuilder, Rebuilding};
use crate::cache::layout::Group;
use std::time::Instant;

impl Rebuilder {
    /// Fills the configured layout where the announcements say it is wanted and written by every
    /// live replica, under the rebuild lease.
    pub(super) async fn fill_if_wanted(&self) -> anyhow::Result<RebuildOutcome> {
        let groups = self.cache.layouts().to_fill();
        if groups.is_empty() {
            return Ok(RebuildOutcome::NotNeeded);
        }
        self.under_lease(async {
            let mut outcome = Ok(RebuildOutcome::NotNeeded);
            for group in groups {
                outcome = self.fill(group).await;
                if !matches!(
                    outcome,
                    Ok(RebuildOutcome::Rebuilt { .. } | RebuildOutcome::NotNeeded)
                ) {
                    break;
                }
            }
            outcome
        })
        .await
    }

    /// Fills one group's buckets of the configured layout: emptied, set `fill`, copied from the
    /// store, caught up, the stream copied, marked, set `ok` if still `fill`.
    #[tracing::instrument(name = "cache.fill", skip_all, fields(suppressd.group = group))]
    async fn fill(&self, group: Group) -> anyhow::Result<RebuildOutcome> {
        let layout = self.cache.layouts().configured();
        let keys = self.cache.keys().clone();
        // Under the lease, as Redis has it now: another replica may have filled it meanwhile.
        if self.cache.layout_is_ok(group, layout).await? {
            return Ok(RebuildOutcome::NotNeeded);
        }
        let Some(generation) = self.cache.complete_generation(group).await? else {
            return Ok(RebuildOutcome::Interrupted);
        };
        let started = Instant::now();
        let began_at = self.clock.now();
        tracing::info!(%layout, group, "filling bucket layout {layout}");
        // Emptied before it is set `fill`: a write after that point lands in what is kept.
        self.cache.clear_buckets(group, &keys).await?;
        if !self.cache.begin_fill(group, &generation, &[layout]).await? {
            return Ok(RebuildOutcome::Interrupted);
        }
        let filling = [(layout, keys.clone())];
        let rebuilding = Rebuilding {
            groups: &[group],
            generation: &generation,
            layouts: &filling,
        };
        let Some(copied) = self.copy_since(0, &rebuilding).await? else {
            return Ok(RebuildOutcome::Interrupted);
        };
        let caught_up = self
            .copy_since(began_at - CATCH_UP_MARGIN, &rebuilding)
            .await?;
        if caught_up.is_none() {
            return Ok(RebuildOutcome::Interrupted);
        }
        self.retract_since(began_at - CATCH_UP_MARGIN).await?;
        self.copy_queued(group, &filling).await?;
        if !self.cache.mark_buckets(group, &generation, &keys).await? {
            return Ok(RebuildOutcome::Interrupted);
        }
        if self.cache.validate(group, &generation, &[layout]).await? == 0 {
            tracing::warn!(%layout, group,
                "a write that does not write bucket layout {layout} came during its fill (a \
                 replica that has not yet heard of it); filling again later");
            return Ok(RebuildOutcome::Unfilled);
        }
        let took = started.elapsed();
        tracing::info!(%layout, group, records = copied, ?took, "bucket layout {layout} filled");
        Ok(RebuildOutcome::Rebuilt {
            records: copied,
            took,
        })
    }
}
