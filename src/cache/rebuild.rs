//! The Redis side of a rebuild: a lease so that one replica at a time rebuilds, a generation that a
//! flush erases (so a rebuild notices its work is gone), and the marking of every bucket. The lease
//! is the deployment's; generations and markers are each slot group's, so a group that lost its
//! keys (a Cluster shard flushed, or failed over to a replica that lost writes) is rebuilt alone
//! while the others answer. The service
//! drives these steps with records read from the store (`service::rebuild`).

use super::{
    Cache, CacheError, Context,
    layout::{Group, Keys, MARK_SCRIPT, RAISE_WRITES_SCRIPT, UNMARK_SCRIPT},
    stream,
};
use crate::domain::Suppression;
use redis::{AsyncCommands, Script};
use std::time::Duration;

/// Buckets marked per script call.
const MARK_CHUNK: u32 = 512;
/// Stream entries read per call by [`Cache::stream_records`].
const STREAM_PAGE: usize = 1_000;

/// Extends or releases a lease only if this replica still holds it.
const RENEW_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
";

impl Cache {
    /// Takes the rebuild lease for `owner`, unless another replica holds it.
    pub(crate) async fn acquire_rebuild_lease(
        &self,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.rebuild_lease())
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut self.conn())
            .await
            .context("taking the rebuild lease")?;
        Ok(set.is_some())
    }

    /// Extends the lease; false if it was lost (expired and taken by another replica).
    pub(crate) async fn renew_rebuild_lease(
        &self,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let ms = (ttl.as_millis() as u64).max(1);
        self.lease_script(owner, ms).await
    }

    pub(crate) async fn release_rebuild_lease(&self, owner: &str) -> Result<(), CacheError> {
        self.lease_script(owner, 0).await.map(drop)
    }

    async fn lease_script(&self, owner: &str, ms: u64) -> Result<bool, CacheError> {
        let held: i64 = Script::new(RENEW_SCRIPT)
            .key(self.keys.rebuild_lease())
            .arg(owner)
            .arg(ms)
            .invoke_async(&mut self.conn())
            .await
            .context("renewing the rebuild lease")?;
        Ok(held == 1)
    }

    /// Starts a generation in a group: from now on, a flush is visible as the generation's absence.
    pub(crate) async fn begin_generation(
        &self,
        group: Group,
        generation: &str,
    ) -> Result<(), CacheError> {
        self.conn()
            .set::<_, _, ()>(self.keys.group(group).generation(), generation)
            .await
            .context("setting the generation")
    }

    pub(crate) async fn generation_is(
        &self,
        group: Group,
        generation: &str,
    ) -> Result<bool, CacheError> {
        let current: Option<String> = self
            .conn()
            .get(self.keys.group(group).generation())
            .await
            .context("reading the generation")?;
        Ok(current.as_deref() == Some(generation))
    }

    /// Marks every bucket of a group complete in each layout given, and then the group as a whole.
    /// Returns false, having marked nothing further, if the generation vanished (Redis was flushed
    /// or restarted mid-rebuild).
    pub(crate) async fn mark_complete(
        &self,
        group: Group,
        generation: &str,
        layouts: &[Keys],
    ) -> Result<bool, CacheError> {
        for layout in layouts {
            if !self.mark_buckets(group, generation, layout).await? {
                return Ok(false);
            }
        }
        let keys = self.keys.group(group);
        let done: i64 = Script::new(
            "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end \
             redis.call('SET', KEYS[2], ARGV[1]) return 1",
        )
        .key(keys.generation())
        .key(keys.complete())
        .arg(generation)
        .invoke_async(&mut self.conn())
        .await
        .context("marking the cache complete")?;
        Ok(done == 1)
    }

    /// Marks every bucket of a group in one layout complete, while the generation is current;
    /// false if it is not.
    pub(crate) async fn mark_buckets(
        &self,
        group: Group,
        generation: &str,
        layout: &Keys,
    ) -> Result<bool, CacheError> {
        let keys = layout.group(group);
        let script = Script::new(MARK_SCRIPT);
        let buckets = keys.buckets();
        let mut start = buckets.start;
        while start < buckets.end {
            let end = (start + MARK_CHUNK).min(buckets.end);
            let mut call = script.prepare_invoke();
            call.key(keys.generation());
            for b in start..end {
                call.key(keys.bucket(b));
            }
            call.arg(generation);
            let marked: i64 = call
                .invoke_async(&mut self.conn())
                .await
                .context("marking buckets complete")?;
            if marked == 0 {
                return Ok(false);
            }
            start = end;
        }
        Ok(true)
    }

    /// Takes the marker from every bucket of a group and the group as a whole, and forgets its
    /// layouts (`cache::layouts`), then raises its write counter to `writes`: after this none of
    /// its buckets answers "absent" until a rebuild has marked it again.
    pub(crate) async fn unmark_group(&self, group: Group, writes: u64) -> Result<(), CacheError> {
        self.forget_layouts(group).await?;
        let keys = self.keys.group(group);
        let script = Script::new(UNMARK_SCRIPT);
        let buckets = keys.buckets();
        let mut start = buckets.start;
        while start < buckets.end {
            let end = (start + MARK_CHUNK).min(buckets.end);
            let mut call = script.prepare_invoke();
            for b in start..end {
                call.key(keys.bucket(b));
            }
            call.invoke_async::<i64>(&mut self.conn())
                .await
                .context("unmarking buckets")?;
            start = end;
        }
        self.conn()
            .del::<_, ()>(keys.complete())
            .await
            .context("unmarking the cache")?;
        Script::new(RAISE_WRITES_SCRIPT)
            .key(keys.writes())
            .arg(writes)
            .invoke_async::<i64>(&mut self.conn())
            .await
            .context("raising the write counter")?;
        Ok(())
    }

    /// The records of every entry now in a group's write-behind stream (those this release can
    /// read): what a fill copies after the store, since the worker deletes an entry only after
    /// it merged it back into the cache.
    pub(crate) async fn stream_records(
        &self,
        group: Group,
    ) -> Result<Vec<Suppression>, CacheError> {
        let stream = self.keys.group(group).stream();
        let mut records = Vec::new();
        let mut from = "-".to_owned();
        loop {
            let page: Vec<stream::Entry> = redis::cmd("XRANGE")
                .arg(&stream)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(STREAM_PAGE)
                .query_async(&mut self.conn())
                .await
                .context("reading the write-behind stream")?;
            let n = page.len();
            if let Some(last) = page.last() {
                from = format!("({}", last.id);
            }
            records.extend(
                page.into_iter()
                    .filter_map(|e| stream::delivery(e).record.ok()),
            );
            if n < STREAM_PAGE {
                return Ok(records);
            }
        }
    }

    /// Whether one bucket carries the marker.
    pub(crate) async fn bucket_is_complete(&self, bucket: &str) -> Result<bool, CacheError> {
        self.conn()
            .hexists(bucket, super::layout::MARKER_FIELD)
            .await
            .context("HEXISTS marker")
    }
}
