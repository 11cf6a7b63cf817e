//! The cache's writes: an opt-out made visible and queued in one script call with its idempotency
//! check, committed records merged in under the same rule, and an idempotency key read back. It
//! writes fields, the stream and the counters only through the scripts of [`layout`]; it never
//! touches the completeness marker (that is the rebuild's).
//!
//! Each write goes to the slot group of its subject ([`layout::Keys`]): an opt-out's script
//! touches only that group's keys, and a merge of records sends one pipeline per group, all at
//! once. An idempotency key lives in the group of the subject it was first used for, so a key
//! reused for a person of another group is not recognised by Redis (with one group, always); the
//! store's unique index on it still keeps a second record out of the durable store.

use super::{Cache, CacheError, Context, layout, layout::Group, near};
use crate::domain::{Match, ReceiptId, Suppression};
use redis::{AsyncCommands, RedisError};
use std::time::Duration;

/// How long idempotency keys and pending-receipt markers live in Redis. Past this the store answers
/// (a committed record keeps its idempotency key forever).
pub(crate) const KEY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What happened to an opt-out written to the cache, and the write counter after it.
#[derive(Debug)]
pub struct Written {
    /// The slot group written to: the write counter, the change and the leases are its own.
    pub group: Group,
    pub outcome: Recorded,
    pub writes: u64,
    /// The number of the change fed to the near-caches (0: none; see [`near`]).
    pub change: u64,
    /// The near-cache leases as they stood just after the write: what the writer waits on.
    pub leases: near::Leases,
}

/// What a merge of records did, in each slot group it wrote to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    pub groups: Vec<GroupMerged>,
}

/// What a merge did in one group: the write counter after it, and the last change it fed (0: none).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GroupMerged {
    pub group: Group,
    pub writes: u64,
    pub change: u64,
}

impl Merged {
    /// The last change fed in any group (0: none): whether anything reached the near-caches.
    pub fn last_change(&self) -> u64 {
        self.groups.iter().map(|g| g.change).max().unwrap_or(0)
    }
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

impl Cache {
    /// Makes an opt-out visible and queues it, atomically with the idempotency check. `payload` is
    /// the stream entry the worker will commit; `backlog_limit` (0 = none) refuses new writes while
    /// the streams hold that many uncommitted entries (each group's stream its share of them).
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
        let keys = self.keys.group_for(&s.subject);
        let plan = self.layouts.plan();
        let asked = std::time::Instant::now();
        // Sized for the keys and arguments, so that writing them never grows the command.
        let mut call = redis::Cmd::with_capacity(20 + 2 * plan.writes.len(), 512 + payload.len());
        call.arg("EVALSHA")
            .arg(self.opt_out.get_hash())
            .arg(9 + plan.writes.len())
            .arg(keys.stream());
        // Without a key the script reads no idempotency key: any key of the group holds the place,
        // and naming one costs a SHA-256.
        match idem {
            Some(key) => call.arg(keys.idempotency(&s.scope.tenant, key)),
            None => call.arg(keys.stream()),
        };
        call.arg(keys.receipt(s.receipt))
            .arg(keys.near_replicas())
            .arg(keys.near_renewals())
            .arg(keys.layouts());
        for (_, layout) in &plan.writes {
            call.arg(layout.bucket_for(&s.subject));
        }
        call.arg(keys.writes())
            .arg(keys.changes())
            .arg(keys.change_seq())
            .arg(if idem.is_some() { "1" } else { "0" })
            .arg(&layout::field(&s.subject, &s.scope)[..])
            .arg(layout::encode_value(&Match::from(s)))
            .arg(s.receipt.to_string())
            .arg(payload)
            .arg(KEY_TTL.as_millis() as u64)
            .arg(backlog_limit.div_ceil(u64::from(self.keys.group_count())));
        for name in plan.write_names() {
            call.arg(name);
        }
        let mut pipe = redis::Pipeline::with_capacity(1);
        pipe.add_command(call);
        let (reply,): (OptOutReply,) =
            query_loading(&pipe, &mut self.conn(), layout::opt_out_script)
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
            group: keys.group(),
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
    /// replica that saw the bump tells (see [`Keys::writes`](layout::Keys::writes)). With no records,
    /// nothing is sent.
    ///
    /// `feed`: whether the fields it changes go to the change feed (everything but a rebuild; see
    /// [`layout::merge_script`]).
    #[tracing::instrument(name = "EVALSHA", skip_all, fields(
        otel.kind = "client", db.system = "redis", db.operation = "EVALSHA",
        suppressd.script = "merge", db.redis.pipeline_length = records.len() as i64))]
    pub async fn merge(&self, records: &[Suppression], feed: bool) -> Result<Merged, CacheError> {
        let plan = self.layouts.plan();
        self.merge_into(records, &plan.writes, feed).await
    }

    /// [`Cache::merge`] of records the worker committed from `group`'s stream, which settles their
    /// entries in the same script calls (see [`layout::merge_script`]): `ids` holds each record's
    /// entry, in the same order; each is acknowledged and deleted, and its receipt announced as
    /// durable on every replica, only once its record is merged. A stream holds only its group's
    /// opt-outs (the opt-out script queues a record in its subject's group).
    #[tracing::instrument(name = "EVALSHA", skip_all, fields(
        otel.kind = "client", db.system = "redis", db.operation = "EVALSHA",
        suppressd.script = "merge", db.redis.pipeline_length = records.len() as i64))]
    pub(crate) async fn merge_and_settle(
        &self,
        group: Group,
        records: &[Suppression],
        ids: &[String],
    ) -> Result<Merged, CacheError> {
        assert_eq!(records.len(), ids.len(), "one stream entry per record");
        debug_assert!(
            records
                .iter()
                .all(|s| self.keys.group_of(&s.subject) == group)
        );
        if records.is_empty() {
            return Ok(Merged::default());
        }
        let plan = self.layouts.plan();
        let records = records.iter().collect();
        let merged = self
            .merge_group(group, records, &plan.writes, true, Some(ids))
            .await?;
        Ok(Merged {
            groups: vec![merged],
        })
    }

    /// [`Cache::merge`] into the given layouts: a rebuild or a fill copies into the layouts it
    /// fills (unfed); fed merges write every layout of the plan.
    pub(crate) async fn merge_into(
        &self,
        records: &[Suppression],
        layouts: &[(layout::Layout, layout::Keys)],
        feed: bool,
    ) -> Result<Merged, CacheError> {
        let mut groups: Vec<(Group, Vec<&Suppression>)> = Vec::new();
        for s in records {
            let group = self.keys.group_of(&s.subject);
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, of_group)) => of_group.push(s),
                None => groups.push((group, vec![s])),
            }
        }
        let merged = groups
            .into_iter()
            .map(|(group, records)| self.merge_group(group, records, layouts, feed, None));
        Ok(Merged {
            groups: futures_util::future::try_join_all(merged).await?,
        })
    }

    /// [`Cache::merge`] of one group's records, in one pipeline; with `settle`, each record's
    /// stream entry is settled by the script call that merges it.
    async fn merge_group(
        &self,
        group: Group,
        records: Vec<&Suppression>,
        layouts: &[(layout::Layout, layout::Keys)],
        feed: bool,
        settle: Option<&[String]>,
    ) -> Result<GroupMerged, CacheError> {
        let keys = self.keys.group(group);
        let names: Vec<String> = layouts.iter().map(|(l, _)| l.to_string()).collect();
        let durable_channel = self.keys.durable_channel();
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        for (at, batch) in records.chunks(layout::MERGE_BATCH).enumerate() {
            let ids = settle.map_or(&[][..], |ids| {
                let from = at * layout::MERGE_BATCH;
                &ids[from..from + batch.len()]
            });
            let call = pipe.cmd("EVALSHA").arg(self.merge.get_hash());
            call.arg(
                1 + batch.len() * layouts.len()
                    + usize::from(!ids.is_empty())
                    + if feed { 3 } else { 0 },
            )
            .arg(keys.layouts());
            for s in batch {
                for (_, layout) in layouts {
                    call.arg(layout.bucket_for(&s.subject));
                }
            }
            if !ids.is_empty() {
                call.arg(keys.stream());
            }
            if feed {
                call.arg(keys.writes())
                    .arg(keys.changes())
                    .arg(keys.change_seq());
            }
            call.arg(layouts.len())
                .arg(batch.len())
                .arg(ids.len())
                .arg(&names);
            for s in batch {
                call.arg(&layout::field(&s.subject, &s.scope)[..])
                    .arg(layout::encode_value(&Match::from(*s)));
            }
            if !ids.is_empty() {
                let receipts: Vec<String> = batch.iter().map(|s| s.receipt.to_string()).collect();
                call.arg(ids).arg(&durable_channel).arg(receipts.join(","));
            }
        }
        pipe.incr(keys.writes(), 1);
        // Sent again after a NOSCRIPT, nothing goes wrong: a record merged twice is merged once,
        // and the write counter only goes up one more.
        let mut replies: Vec<u64> = query_loading(&pipe, &mut conn, layout::merge_script)
            .await
            .context("merging records")?;
        let writes = replies.pop().unwrap_or(0);
        Ok(GroupMerged {
            group,
            writes,
            change: replies.into_iter().max().unwrap_or(0),
        })
    }

    /// The receipt an idempotency key was used for, while Redis still remembers it.
    #[tracing::instrument(name = "GET", skip_all, fields(
        otel.kind = "client", db.system = "redis", db.operation = "GET"))]
    pub(crate) async fn idempotent_receipt(
        &self,
        group: Group,
        tenant: &str,
        key: &str,
    ) -> Result<Option<ReceiptId>, CacheError> {
        let prior: Option<String> = self
            .conn()
            .get(self.keys.group(group).idempotency(tenant, key))
            .await
            .context("GET idempotency key")?;
        Ok(prior.and_then(|p| ReceiptId::parse("receipt", &p).ok()))
    }
}

/// Sends `pipe`, whose script calls are `EVALSHA`s of the script `source` returns, and, when Redis
/// does not know the script (a first call, or a Redis restarted since), loads it and sends `pipe`
/// again: what redis-rs's `Script::invoke_async` does, without the vector it allocates for every
/// key and argument before copying them into the command. After a `NOSCRIPT` no call of the
/// script ran. On Cluster `SCRIPT LOAD` goes to every master.
async fn query_loading<T: redis::FromRedisValue>(
    pipe: &redis::Pipeline,
    conn: &mut super::Conn,
    source: fn() -> String,
) -> redis::RedisResult<T> {
    match pipe.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(source())
                .query_async::<String>(conn)
                .await?;
            pipe.query_async(conn).await
        }
        replies => replies,
    }
}

/// The opt-out script's reply: outcome code, its detail, the write counter, the change fed, then
/// Redis's clock, the renewal count and the near-cache leases (see [`layout::opt_out_script`]).
type OptOutReply = (i64, String, u64, u64, u64, u64, Vec<(String, String)>);
