//! The copy itself: every cached record in memory, sharded under read-write locks, and the reads of
//! the change feed that keep it current. It answers lookups only while [`GroupCopy::serving`] says
//! the lease allows; when to load and when to stop is `super`'s business, not this file's.

use super::{
    GroupCopy, Stopped,
    records::{Loading, Records, Run},
};
use crate::cache::{Conn, stream::Read};
use crate::cache::{Context, Lookup, Probe, layout};
use redis::Script;
use std::{
    collections::HashMap,
    sync::{LazyLock, RwLock, RwLockReadGuard, TryLockError},
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
    ///
    /// Each field is a look-up in a shard picked by a keyed hash, so in memory far from the
    /// others': taken one after another, each waits for its own reads (a directory entry, then a
    /// run of entries) to arrive from memory. Here every step is taken for all the fields before
    /// the next, so that their reads are fetched together, under read locks held for the whole
    /// check ([`Reads`]).
    pub(super) fn lookup_one(&self, probe: &Probe<'_>) -> Lookup {
        let fields = &probe.fields[..probe.n];
        let reads = Reads::take(&self.shards, fields.iter().map(shard_of));
        let runs: [Run<'_>; 8] = std::array::from_fn(|k| {
            fields
                .get(k)
                .map_or_else(Run::default, |field| reads.of(k).locate(field))
        });
        std::hint::black_box(runs.iter().fold(0, |t, run| t ^ run.touch()));
        // A scope is built only for a field that holds a record (most checks find none).
        let (found, unreadable) =
            layout::decode_values(fields.iter().zip(runs).enumerate().filter_map(
                |(k, (field, run))| {
                    let value = reads.of(k).get_in(field, run)?;
                    Some((probe.notice.candidate(k), value))
                },
            ));
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
        let Read(changes) = cmd
            .query_async(conn)
            .await
            .context("reading the change feed")?;
        let mut read = 0;
        for mut change in changes {
            let mut number = |name: &str| {
                change
                    .take(name)
                    .ok_or_else(|| Stopped::Malformed(format!("{name}: missing, or not a string")))
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

/// Read locks on the shards of up to eight look-ups, held together. Each is first tried without
/// waiting, in look-up order, which cannot deadlock since no try waits. If one would wait (a writer
/// holds or waits for that shard), all are let go and taken again in shard order, once per shard,
/// so that two holders never wait on each other through a writer queued at one of the shards
/// (writers hold one shard at a time), and a read lock is never taken twice by one thread (which
/// can wait on a writer queued in between). Sorting the shards first on every check cost as much
/// as the locks themselves.
struct Reads<'a, T> {
    guards: [Option<RwLockReadGuard<'a, T>>; 8],
    /// `held[k]`: the look-up whose entry in `guards` holds look-up `k`'s shard.
    held: [usize; 8],
}

impl<'a, T> Reads<'a, T> {
    /// Locks `shards[s]` for each `s` that `wanted` names (at most eight), for reading.
    fn take(shards: &'a [RwLock<T>], wanted: impl ExactSizeIterator<Item = usize>) -> Self {
        let n = wanted.len();
        assert!(n <= 8, "at most eight look-ups at once");
        let mut of = [0; 8];
        for (k, s) in wanted.enumerate() {
            of[k] = s;
        }
        let mut reads = Reads {
            guards: [const { None }; 8],
            held: std::array::from_fn(|k| k),
        };
        for k in 0..n {
            match shards[of[k]].try_read() {
                Ok(guard) => reads.guards[k] = Some(guard),
                Err(TryLockError::WouldBlock) => {
                    drop(reads);
                    return Self::in_shard_order(shards, &of[..n]);
                }
                Err(TryLockError::Poisoned(_)) => panic!("shard lock poisoned"),
            }
        }
        reads
    }

    /// Locks `shards[of[k]]` for each look-up `k`, in shard order, each shard once.
    fn in_shard_order(shards: &'a [RwLock<T>], of: &[usize]) -> Self {
        let mut order: [usize; 8] = std::array::from_fn(|k| k);
        let order = &mut order[..of.len()];
        order.sort_unstable_by_key(|&k| of[k]);
        let mut reads = Reads {
            guards: [const { None }; 8],
            held: [0; 8],
        };
        let mut previous: Option<usize> = None;
        for &k in order.iter() {
            reads.held[k] = match previous {
                Some(at) if of[at] == of[k] => at,
                _ => {
                    reads.guards[k] = Some(shards[of[k]].read().expect("shard lock"));
                    previous = Some(k);
                    k
                }
            };
        }
        reads
    }

    /// What look-up `k`'s shard holds.
    fn of(&self, k: usize) -> &T {
        self.guards[self.held[k]]
            .as_deref()
            .expect("a look-up's shard is held")
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn reads_answer_for_every_look_up_and_hold_their_shards_for_reading() {
        let shards: Vec<RwLock<usize>> = (0..5).map(|s| RwLock::new(s * 10)).collect();
        let wanted = [3, 0, 3, 4, 0, 3];
        for ordered in [false, true] {
            let reads = if ordered {
                Reads::in_shard_order(&shards, &wanted)
            } else {
                Reads::take(&shards, wanted.into_iter())
            };
            for (k, s) in wanted.into_iter().enumerate() {
                assert_eq!(*reads.of(k), s * 10);
            }
            // Held for reading only: another reader gets in, a writer does not.
            assert!(shards[3].try_read().is_ok());
            assert!(shards[3].try_write().is_err());
            assert!(
                shards[1].try_write().is_ok(),
                "a shard no look-up wants stays free"
            );
            drop(reads);
            assert!(shards[3].try_write().is_ok(), "released when dropped");
        }
    }

    #[test]
    fn reads_in_shard_order_hold_each_shard_once() {
        let shards: Vec<RwLock<usize>> = (0..5).map(RwLock::new).collect();
        let reads = Reads::in_shard_order(&shards, &[3, 0, 3, 4, 0, 3]);
        assert_eq!(reads.guards.iter().flatten().count(), 3);
    }

    /// A shard a writer holds: the reads wait for it (in shard order) and see what it wrote.
    #[test]
    fn reads_wait_for_a_writer_in_shard_order() {
        let shards: Arc<Vec<RwLock<usize>>> = Arc::new((0..4).map(RwLock::new).collect());
        let writing = shards[2].write().expect("shard lock");
        let reader = {
            let shards = shards.clone();
            std::thread::spawn(move || {
                let reads = Reads::take(&shards, [3, 2, 0].into_iter());
                (*reads.of(0), *reads.of(1), *reads.of(2))
            })
        };
        let mut writing = writing;
        *writing = 20;
        drop(writing);
        assert_eq!(reader.join().expect("the reader finished"), (3, 20, 0));
    }

    /// Readers that hold several shards at once while writers, one shard at a time, queue at them:
    /// in any other order than the shards', two readers can each hold what the other waits for
    /// behind a queued writer, and the test never ends.
    #[test]
    fn readers_of_several_shards_and_writers_never_wait_on_each_other() {
        let shards: Arc<Vec<RwLock<u64>>> = Arc::new((0..4).map(|_| RwLock::new(0)).collect());
        let threads = 6;
        let start = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (shards, start) = (shards.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..20_000usize {
                        if t % 2 == 0 {
                            *shards[(i + t) % 4].write().expect("shard lock") += 1;
                        } else {
                            // Wanted in an order that differs from thread to thread.
                            let wanted = [(i + t) % 4, (i + 3 * t) % 4, (i * 7 + t) % 4];
                            let reads = Reads::take(&shards, wanted.into_iter());
                            std::hint::black_box(*reads.of(0) + *reads.of(2));
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("no thread panicked");
        }
        let total: u64 = shards.iter().map(|s| *s.read().expect("shard lock")).sum();
        assert_eq!(total, 3 * 20_000);
    }
}
