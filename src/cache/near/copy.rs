//! The copy itself: every cached record in memory, sharded under read-write locks, and the reads of
//! the change feed that keep it current. It answers lookups only while [`GroupCopy::serving`] says
//! the lease allows; when to load and when to stop is `super`'s business, not this file's.

use super::{
    GroupCopy, Stopped,
    records::{Loading, Records},
};
use crate::cache::Conn;
use crate::cache::{Context, Lookup, Probe, layout};
use redis::{Script, Value, streams::StreamReadReply};
use std::{
    collections::HashMap,
    sync::{LazyLock, RwLock},
    time::Duration,
};

const READ_COUNT: usize = 1_000;
/// Buckets copied per pipeline while loading: their replies are what the load holds besides the
/// copy, and the allocator keeps that room afterwards (256 took 2.5 MB more than 64 at a million
/// records).
const LOAD_CHUNK: u32 = 64;

pub(super) type Shard = RwLock<Records>;
/// One per value of a field's first byte, which its records then need not store (`records`).
pub(super) const SHARDS: usize = 1 << u8::BITS;

impl GroupCopy {
    /// The answers to `probes` from memory, or `None` when the copy cannot vouch for them.
    pub(super) fn lookup_one(&self, probe: &Probe<'_>) -> Lookup {
        // The candidate scopes are built only for a check that finds a record (most find none).
        let mut candidates = None;
        let mut found = Vec::new();
        let mut unreadable = false;
        for (k, field) in probe.fields[..probe.n].iter().enumerate() {
            if let Some(v) = self.shard(field).read().expect("shard lock").get(field) {
                let scope = candidates.get_or_insert_with(|| probe.notice.candidates())[k].clone();
                let (decoded, bad) = layout::decode_values([(scope, v)]);
                found.extend(decoded);
                unreadable |= bad;
            }
        }
        Lookup {
            complete: true,
            found,
            unreadable,
        }
    }

    fn shard(&self, field: &layout::Field) -> &Shard {
        &self.shards[shard_of(field)]
    }

    /// The feed's last change: where following starts.
    pub(super) async fn feed_head(&self, conn: &mut Conn) -> Result<Position, Stopped> {
        let keys = self.keys();
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

    /// Replaces the copy with every bucket of the group as Redis holds it now, in the layout the
    /// group's checks read. Returns the number of records and the layout, which the caller must
    /// then find still `ok` (`cache::layouts`).
    pub(super) async fn load(&self, conn: &mut Conn) -> Result<(usize, layout::Layout), Stopped> {
        for shard in &self.shards {
            shard.write().expect("shard lock").clear();
        }
        let plan = self.cache.layouts().plan();
        let (read, all) = plan.read(self.group);
        let keys = all.group(self.group);
        let buckets = keys.buckets();
        // Counted first, so that each shard's room is mapped once, at about its size (fields are
        // uniform over the shards), rather than copied each time it doubles.
        let mut counted = 0;
        let mut from = buckets.start;
        while from < buckets.end {
            let to = (from + LOAD_CHUNK).min(buckets.end);
            let mut pipe = redis::pipe();
            for b in from..to {
                pipe.cmd("HLEN").arg(keys.bucket(b));
            }
            let lens: Vec<usize> = pipe.query_async(conn).await.context("counting buckets")?;
            counted += lens.iter().sum::<usize>();
            from = to;
        }
        let per_shard = counted / SHARDS + counted / SHARDS / 16 + 16;
        let mut loading: Vec<Loading> = (0..SHARDS).map(|_| Loading::new(per_shard)).collect();
        let mut entries = 0;
        let mut from = buckets.start;
        while from < buckets.end {
            let to = (from + LOAD_CHUNK).min(buckets.end);
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
                        loading[shard_of(&field)].push(field, &value);
                        entries += 1;
                    }
                }
            }
            from = to;
        }
        for (shard, loaded) in self.shards.iter().zip(loading) {
            *shard.write().expect("shard lock") = loaded.finish();
        }
        Ok((entries, *read))
    }

    /// Reads the feed until it has nothing more.
    pub(super) async fn catch_up(
        &self,
        conn: &mut Conn,
        feed: &mut Position,
    ) -> Result<(), Stopped> {
        while self.read(conn, feed, None).await? == READ_COUNT {}
        Ok(())
    }

    /// Applies the changes after `feed`, waiting up to `block` for one. Returns how many it read.
    pub(super) async fn read(
        &self,
        conn: &mut Conn,
        feed: &mut Position,
        block: Option<Duration>,
    ) -> Result<usize, Stopped> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(READ_COUNT);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(self.keys().changes()).arg(&feed.id);
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
            // The write counter the change bumped (a change fed before it carried one has none).
            if let Ok(writes) = number("w") {
                let writes = String::from_utf8_lossy(&writes)
                    .parse()
                    .map_err(|_| Stopped::Malformed("w: not a number".into()))?;
                self.cache.saw_writes(self.group, writes);
            }
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
}

/// The shard a field lives in: its first byte's (the records of a shard order by the others).
fn shard_of(field: &layout::Field) -> usize {
    usize::from(field[0])
}

/// A change as `XREVRANGE` returns it: its stream id and its fields.
type FeedEntry = (String, HashMap<String, Vec<u8>>);

/// Where following the feed stands: the last change read, by stream id and by number.
pub(super) struct Position {
    id: String,
    pub(super) applied: u64,
}

static HEAD: LazyLock<Script> = LazyLock::new(|| Script::new(HEAD_SCRIPT));

/// KEYS: feed, change counter. Returns the last change (as XREVRANGE gives it) and the counter.
const HEAD_SCRIPT: &str = r"
return {redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1), redis.call('GET', KEYS[2]) or '0'}
";
