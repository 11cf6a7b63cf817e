//! The cache's writes: an opt-out made visible and queued in one script call with its idempotency
//! check, committed records merged in under the same rule, and an idempotency key read back. It
//! writes fields, the stream and the counters only through the scripts of [`layout`]; it never
//! touches the completeness marker (that is the rebuild's).

use super::{Cache, CacheError, Context, layout, near};
use crate::domain::{Match, ReceiptId, Suppression};
use redis::{AsyncCommands, RedisError};
use std::time::Duration;

/// How long idempotency keys and pending-receipt markers live in Redis. Past this the store answers
/// (a committed record keeps its idempotency key forever).
pub(crate) const KEY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

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

impl Cache {
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
            .key(self.keys.near_replicas())
            .key(self.keys.near_renewals())
            .key(self.keys.writes())
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
    /// replica that saw the bump tells (see [`Keys::writes`](layout::Keys::writes)). With no records,
    /// nothing is sent.
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
                call.arg(4)
                    .arg(self.keys.bucket_for(&s.subject))
                    .arg(self.keys.writes())
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
    pub(crate) async fn idempotent_receipt(
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
}

/// The opt-out script's reply: outcome code, its detail, the write counter, the change fed, then
/// Redis's clock, the renewal count and the near-cache leases (see [`layout::opt_out_script`]).
type OptOutReply = (i64, String, u64, u64, u64, u64, Vec<(String, String)>);
