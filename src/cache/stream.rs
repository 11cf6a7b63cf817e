//! The write-behind stream as the worker sees it: a consumer-group member that reads its own pending
//! entries, new entries and entries abandoned by dead consumers, and settles what the store committed.
//!
//! Each slot group has a stream of its own (its opt-outs', written by the group's script), with
//! its own consumer group and dead letters; a [`Consumer`] reads one of them.
//!
//! Entries are deleted once acknowledged, so the stream's length is the backlog; nothing trims it, so
//! an entry is never lost while it is pending (Redis 7.0's `MAXLEN` would drop pending entries).

use super::{
    Cache, CacheError, Conn, Context,
    layout::{Group, GroupKeys},
};
use crate::{
    domain::{
        Channel, Millis, Reason, ReceiptId, Scope, SealedIdentifier, Source, SubjectHash,
        Suppression, scope::channel_code,
    },
    telemetry::propagation::{self, Carrier},
};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use redis::{FromRedisValue, ParsingError, RedisError, Value};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub(crate) const GROUP: &str = "suppressd-writers";

/// The newest entry format this version reads and the one it writes. A newer release that needs
/// an older worker to leave its entries alone raises it; one that only adds fields does not (a
/// reader ignores fields it does not know). See docs/compatibility.md.
pub(crate) const ENTRY_VERSION: u8 = 1;

/// The consumer that holds entries of a newer format until a newer worker takes them: parked
/// there unacknowledged (never dead-lettered), so no worker of this version reads them again
/// until they have sat for the claim interval, and a newer one can take them at once.
pub(crate) const NEWER_VERSION_CONSUMER: &str = "newer-version";

/// One stream entry: the record, in a versioned JSON form that carries no raw identifier (only,
/// when the opt-out asked to keep it for delivery, the vault's sealed form of it).
#[derive(Debug, Serialize, Deserialize)]
pub struct StreamEntry {
    pub(crate) v: u8,
    pub(crate) receipt: String,
    pub(crate) subject: String,
    pub(crate) tenant: String,
    pub(crate) channel: u8,
    pub(crate) topic: String,
    pub(crate) campaign: String,
    pub(crate) reason: u8,
    pub(crate) source: u8,
    pub(crate) actor: String,
    pub(crate) received_at: Millis,
    pub(crate) effective_at: Millis,
    pub(crate) expires_at: Option<Millis>,
    pub(crate) idempotency_key: Option<String>,
    /// The W3C trace context (`traceparent`, `tracestate`) of the request that queued the entry, so
    /// the worker's commit span can link to it. Absent when traces are off, the request was not
    /// sampled, or the entry predates the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) trace: Option<Carrier>,
    /// The sealed identifier (base64), when one is kept; never the identifier in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sealed: Option<String>,
}

impl StreamEntry {
    /// Encodes a record, with the trace context of the current span.
    pub fn encode(s: &Suppression) -> String {
        let entry = StreamEntry {
            v: 1,
            receipt: s.receipt.to_string(),
            subject: s.subject.to_hex(),
            tenant: s.scope.tenant.clone(),
            channel: channel_code(s.scope.channel),
            topic: s.scope.topic.clone(),
            campaign: s.scope.campaign.clone(),
            reason: s.reason.code(),
            source: s.source.code(),
            actor: s.actor.clone(),
            received_at: s.received_at,
            effective_at: s.effective_at,
            expires_at: s.expires_at,
            idempotency_key: s.idempotency_key.clone(),
            trace: propagation::current_carrier(),
            sealed: s.sealed.as_ref().map(|x| B64.encode(&x.0)),
        };
        serde_json::to_string(&entry).expect("a stream entry always serializes")
    }

    fn into_record(self) -> Result<Suppression, String> {
        let e = self;
        if e.v != ENTRY_VERSION {
            return Err(format!("unknown entry version {}", e.v));
        }
        let channel = match e.channel {
            0 => None,
            c => Some(Channel::from_code(c).ok_or("unknown channel")?),
        };
        let subject = hex::decode(&e.subject)
            .ok()
            .and_then(|b| SubjectHash::from_slice(&b))
            .ok_or("bad subject")?;
        Ok(Suppression {
            receipt: ReceiptId::parse("receipt", &e.receipt).map_err(|e| e.to_string())?,
            subject,
            scope: Scope::parse(&e.tenant, channel, &e.topic, &e.campaign)
                .map_err(|e| e.to_string())?,
            reason: Reason::from_code(e.reason).ok_or("unknown reason")?,
            source: Source::from_code(e.source).ok_or("unknown source")?,
            actor: e.actor,
            received_at: e.received_at,
            effective_at: e.effective_at,
            expires_at: e.expires_at,
            idempotency_key: e.idempotency_key,
            sealed: match e.sealed {
                Some(b) => Some(SealedIdentifier(
                    B64.decode(b).map_err(|_| "bad sealed identifier")?,
                )),
                None => None,
            },
        })
    }
}

/// An entry read from the stream: its id, and its record or why it could not be read.
#[derive(Debug)]
pub struct Delivery {
    pub(crate) id: String,
    pub record: Result<Suppression, Unreadable>,
    /// The trace context of the request that queued it, if it carried one.
    pub(crate) trace: Option<Carrier>,
}

/// Why an entry could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// Written by a newer release in a format this one does not know: left for a newer worker.
    Newer(u64),
    /// Damaged, or written in no format any release wrote: set aside as a dead letter.
    Broken(String),
}

/// Only the version, read first: a newer format may change anything but where its version is.
#[derive(Deserialize)]
struct Version {
    v: u64,
}

/// Reads an entry's `r` field: its record, or why not.
fn read_entry(bytes: &[u8]) -> (Result<Suppression, Unreadable>, Option<Carrier>) {
    // An entry of this version, as nearly all are, is parsed once; any other is told apart by its
    // version alone, read first.
    if let Ok(mut e) = serde_json::from_slice::<StreamEntry>(bytes)
        && e.v == ENTRY_VERSION
    {
        let trace = e.trace.take();
        return (e.into_record().map_err(Unreadable::Broken), trace);
    }
    match serde_json::from_slice::<Version>(bytes) {
        Ok(Version { v }) if v > u64::from(ENTRY_VERSION) => {
            return (Err(Unreadable::Newer(v)), None);
        }
        Ok(_) => {}
        Err(e) => return (Err(Unreadable::Broken(e.to_string())), None),
    }
    match serde_json::from_slice::<StreamEntry>(bytes) {
        Ok(mut e) => {
            let trace = e.trace.take();
            (e.into_record().map_err(Unreadable::Broken), trace)
        }
        Err(e) => (Err(Unreadable::Broken(e.to_string())), None),
    }
}

pub(super) fn delivery(mut entry: Entry) -> Delivery {
    let (record, trace) = match entry.take("r") {
        Some(bytes) => read_entry(&bytes),
        None => (
            Err(Unreadable::Broken(
                "entry without a record field".to_owned(),
            )),
            None,
        ),
    };
    Delivery {
        id: entry.id,
        record,
        trace,
    }
}

/// An entry as a stream read returns it (`XREAD`, `XREADGROUP`, `XRANGE`, `XCLAIM`,
/// `XAUTOCLAIM`): its id and its fields, names and values in turn, moved out of the reply.
/// `redis`'s own stream replies clone the whole reply and build a hash map per entry (and two more
/// around them), which was most of what reading the change feed and the write-behind stream cost
/// the server.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: String,
    fields: Vec<Value>,
}

impl Entry {
    /// Takes the value of the field `name` out of the entry (`None`: no such field, or not a
    /// string).
    pub(crate) fn take(&mut self, name: &str) -> Option<Vec<u8>> {
        self.fields
            .chunks_exact_mut(2)
            .find(|pair| matches!(&pair[0], Value::BulkString(n) if n == name.as_bytes()))
            .and_then(|pair| match std::mem::replace(&mut pair[1], Value::Nil) {
                Value::BulkString(value) => Some(value),
                _ => None,
            })
    }
}

impl FromRedisValue for Entry {
    fn from_redis_value(v: Value) -> Result<Entry, ParsingError> {
        // `[id, [name, value, …]]`; an entry deleted while pending reads as `[id, nil]`, and
        // `XREADGROUP … CLAIM` adds two counts after the fields.
        let Value::Array(parts) = v else {
            return Err(format!("a stream entry is an array, not {v:?}").into());
        };
        let mut parts = parts.into_iter();
        let id = match parts.next() {
            Some(Value::BulkString(id)) => String::from_utf8(id)?,
            other => return Err(format!("a stream entry's id, not {other:?}").into()),
        };
        let fields = match parts.next() {
            Some(Value::Array(fields)) => fields,
            Some(Value::Map(pairs)) => pairs.into_iter().flat_map(|(n, v)| [n, v]).collect(),
            Some(Value::Nil) | None => Vec::new(),
            Some(other) => return Err(format!("a stream entry's fields, not {other:?}").into()),
        };
        Ok(Entry { id, fields })
    }
}

/// The entries of an `XREAD` or `XREADGROUP` reply, every stream's in turn (none: nil).
pub(crate) struct Read(pub(crate) Vec<Entry>);

impl FromRedisValue for Read {
    fn from_redis_value(v: Value) -> Result<Read, ParsingError> {
        // RESP2: `[[stream, entries], …]`; RESP3: a map of stream to entries.
        let streams: Vec<Value> = match v {
            Value::Nil => return Ok(Read(Vec::new())),
            Value::Array(streams) => streams
                .into_iter()
                .map(|s| match s {
                    Value::Array(pair) if pair.len() == 2 => {
                        Ok(pair.into_iter().nth(1).expect("two"))
                    }
                    other => Err(format!("a stream of a read, not {other:?}")),
                })
                .collect::<Result<_, _>>()?,
            Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
            other => return Err(format!("a stream read's reply, not {other:?}").into()),
        };
        let mut entries = Vec::new();
        for stream in streams {
            entries.extend(Vec::<Entry>::from_redis_value(stream)?);
        }
        Ok(Read(entries))
    }
}

/// A consumer-group member. Its connection is one for blocking reads, because `XREADGROUP … BLOCK`
/// legitimately waits; it is never the connection the hot path uses.
pub(crate) struct Consumer {
    conn: Conn,
    keys: GroupKeys,
    /// The deployment's commit announcements (`Keys::durable_channel`).
    durable_channel: String,
    /// Whether the announcement shares the stream's hash tag, so can ride in its pipeline.
    announce_in_pipeline: bool,
    name: String,
}

impl Consumer {
    /// A member of `group`'s consumer group.
    pub(crate) async fn connect(
        cache: &Cache,
        name: &str,
        group: Group,
    ) -> Result<Consumer, CacheError> {
        let conn = cache
            .redis()
            .blocking()
            .await
            .context("connecting the stream consumer")?;
        let consumer = Consumer {
            conn,
            keys: cache.keys().group(group).clone(),
            durable_channel: cache.keys().durable_channel(),
            announce_in_pipeline: cache.keys().group_count() == 1,
            name: name.to_owned(),
        };
        consumer.ensure_group().await?;
        Ok(consumer)
    }

    /// Creates the stream and the group if missing (a Redis restarted empty has neither).
    pub(crate) async fn ensure_group(&self) -> Result<(), CacheError> {
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.stream())
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn.clone())
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(CacheError::new("XGROUP CREATE", e)),
            _ => Ok(()),
        }
    }

    /// Reads entries: `>` for new ones (waiting up to `block`), `0` for this consumer's own pending
    /// ones (delivered before, not acknowledged: a commit that failed).
    pub(crate) async fn read(
        &self,
        from: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Delivery>, CacheError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(self.keys.stream()).arg(from);
        let Read(entries) = self.retry_without_group(cmd).await?;
        Ok(entries.into_iter().map(delivery).collect())
    }

    /// Takes over entries that another consumer read and has not acknowledged for `min_idle`: that
    /// consumer has died, or is stuck.
    pub(crate) async fn claim_abandoned(
        &self,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, CacheError> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(self.keys.stream())
            .arg(GROUP)
            .arg(&self.name)
            .arg(min_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count);
        // The next id to scan from, the entries claimed, and the ids of pending entries that
        // were deleted (Redis 7 drops them from the pending list instead of claiming them).
        let (_, claimed, _): (Value, Vec<Entry>, Value) = self.retry_without_group(cmd).await?;
        Ok(claimed.into_iter().map(delivery).collect())
    }

    /// Runs a group command; if the group is gone (Redis restarted empty), recreates it and retries.
    async fn retry_without_group<T: redis::FromRedisValue>(
        &self,
        cmd: redis::Cmd,
    ) -> Result<T, CacheError> {
        match cmd.query_async(&mut self.conn.clone()).await {
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group().await?;
                cmd.query_async(&mut self.conn.clone())
                    .await
                    .context("reading the stream")
            }
            other => other.context("reading the stream"),
        }
    }

    /// After a commit: acknowledge and delete the entries, and tell waiting `OptOut` calls on every
    /// replica which receipts are now durable.
    #[tracing::instrument(name = "XACK", skip_all, fields(
        otel.kind = "client", db.system = "redis", db.operation = "XACK",
        db.redis.pipeline_length = 3))]
    pub(crate) async fn settle(
        &self,
        ids: &[String],
        receipts: &[ReceiptId],
    ) -> Result<(), CacheError> {
        if ids.is_empty() {
            return Ok(());
        }
        let announcement = receipts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut pipe = redis::pipe();
        pipe.cmd("XACK")
            .arg(self.keys.stream())
            .arg(GROUP)
            .arg(ids)
            .ignore()
            .cmd("XDEL")
            .arg(self.keys.stream())
            .arg(ids)
            .ignore();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.durable_channel).arg(announcement);
        if self.announce_in_pipeline && !receipts.is_empty() {
            pipe.add_command(publish.clone()).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .context("acknowledging committed entries")?;
        // With several groups the channel's hash tag is not the stream's: a pipeline to one node
        // cannot carry both (Cluster delivers a message published on any node to every node).
        if !self.announce_in_pipeline && !receipts.is_empty() {
            publish
                .query_async::<()>(&mut self.conn.clone())
                .await
                .context("announcing committed entries")?;
        }
        Ok(())
    }

    /// Leaves entries of a newer format for a newer worker: moves them, unacknowledged, to the
    /// [`NEWER_VERSION_CONSUMER`] (which resets their idle time, so that workers of this version
    /// do not claim them again for the claim interval).
    pub(crate) async fn leave_for_newer(&self, ids: &[String]) -> Result<(), CacheError> {
        if ids.is_empty() {
            return Ok(());
        }
        redis::cmd("XCLAIM")
            .arg(self.keys.stream())
            .arg(GROUP)
            .arg(NEWER_VERSION_CONSUMER)
            .arg(0)
            .arg(ids)
            .arg("JUSTID")
            .query_async::<redis::Value>(&mut self.conn.clone())
            .await
            .context("leaving entries for a newer worker")?;
        Ok(())
    }

    /// Takes entries that an older worker left for a newer one, skipping `known_newer` (entries
    /// this worker already found too new for itself).
    pub(crate) async fn take_left_for_newer(
        &self,
        count: usize,
        known_newer: &std::collections::HashSet<String>,
    ) -> Result<Vec<Delivery>, CacheError> {
        let pending: Vec<(String, String, u64, u64)> = self
            .retry_without_group({
                let mut cmd = redis::cmd("XPENDING");
                cmd.arg(self.keys.stream())
                    .arg(GROUP)
                    .arg("-")
                    .arg("+")
                    .arg(count + known_newer.len().min(10_000))
                    .arg(NEWER_VERSION_CONSUMER);
                cmd
            })
            .await?;
        let ids: Vec<String> = pending
            .into_iter()
            .map(|(id, ..)| id)
            .filter(|id| !known_newer.contains(id))
            .take(count)
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let claimed: Vec<Entry> = redis::cmd("XCLAIM")
            .arg(self.keys.stream())
            .arg(GROUP)
            .arg(&self.name)
            .arg(0)
            .arg(&ids)
            .query_async(&mut self.conn.clone())
            .await
            .context("taking entries left for a newer worker")?;
        Ok(claimed.into_iter().map(delivery).collect())
    }

    /// Moves an entry that cannot be decoded aside, so it stops blocking the group but stays for a
    /// person to inspect.
    pub(crate) async fn dead_letter(&self, id: &str, problem: &str) -> Result<(), CacheError> {
        redis::pipe()
            .cmd("XADD")
            .arg(self.keys.dead_letters())
            .arg("*")
            .arg("id")
            .arg(id)
            .arg("problem")
            .arg(problem)
            .ignore()
            .cmd("XACK")
            .arg(self.keys.stream())
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(self.keys.stream())
            .arg(id)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
            .context("dead-lettering an entry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{
        AsyncCommands,
        streams::{StreamAutoClaimReply, StreamRangeReply, StreamReadReply},
    };

    /// Our reading of stream replies against `redis`'s own (the reference), on the test Redis in
    /// both protocols: the same ids, and the same value for every field, from `XREAD` (one and two
    /// streams, and nothing), `XREADGROUP` (new entries, then the pending ones after one was
    /// deleted), `XAUTOCLAIM` (which leaves the deleted one out) and `XRANGE`.
    #[tokio::test]
    async fn stream_replies_read_as_redis_reads_them() {
        let url = std::env::var("SUPPRESSD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        for protocol in ["resp2", "resp3"] {
            let prefix = format!("entries{}:", uuid::Uuid::new_v4().simple());
            let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
            let client = redis::Client::open(format!("{url}?protocol={protocol}")).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let mut ids = Vec::new();
            for (stream, fields) in [
                (&a, vec![("r", "one"), ("w", "1")]),
                (&a, vec![("r", ""), ("x", "\u{0}binary\u{ff}")]),
                (&b, vec![("s", "7")]),
            ] {
                let id: String = conn.xadd(stream, "*", &fields).await.unwrap();
                ids.push(id);
            }
            let _: () = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&a)
                .arg("g")
                .arg("0")
                .query_async(&mut conn)
                .await
                .unwrap();
            let read_group = |from: &str| {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg("g")
                    .arg("c")
                    .arg("STREAMS")
                    .arg(&a)
                    .arg(from);
                cmd
            };
            let mut xread = redis::cmd("XREAD");
            xread.arg("STREAMS").arg(&a).arg(&b).arg("0").arg("0");
            let mut xread_one = redis::cmd("XREAD");
            xread_one.arg("STREAMS").arg(&a).arg(&ids[0]);
            let mut nothing = redis::cmd("XREAD");
            nothing.arg("STREAMS").arg(&b).arg("$");
            for cmd in [xread, xread_one, nothing, read_group(">")] {
                let value: Value = cmd.query_async(&mut conn).await.unwrap();
                let Read(ours) = Read::from_redis_value(value.clone()).unwrap();
                let theirs = StreamReadReply::from_redis_value(value).unwrap();
                same(ours, theirs.keys.into_iter().flat_map(|k| k.ids).collect());
            }
            // Pending entries after one of them was deleted: that one reads as `[id, nil]`.
            let _: i64 = conn.xdel(&a, &[&ids[1]]).await.unwrap();
            let value: Value = read_group("0").query_async(&mut conn).await.unwrap();
            let Read(ours) = Read::from_redis_value(value.clone()).unwrap();
            assert_eq!(ours.len(), 2, "{protocol}: both pending entries");
            let theirs = StreamReadReply::from_redis_value(value).unwrap();
            same(ours, theirs.keys.into_iter().flat_map(|k| k.ids).collect());
            let mut autoclaim = redis::cmd("XAUTOCLAIM");
            autoclaim.arg(&a).arg("g").arg("other").arg(0).arg("0-0");
            let value: Value = autoclaim.query_async(&mut conn).await.unwrap();
            let (_, ours, _): (Value, Vec<Entry>, Value) =
                FromRedisValue::from_redis_value(value.clone()).unwrap();
            assert_eq!(ours.len(), 1, "{protocol}: the entry left pending");
            same(
                ours,
                StreamAutoClaimReply::from_redis_value(value)
                    .unwrap()
                    .claimed,
            );
            let value: Value = conn.xrange_all(&a).await.unwrap();
            let ours = Vec::<Entry>::from_redis_value(value.clone()).unwrap();
            same(ours, StreamRangeReply::from_redis_value(value).unwrap().ids);
            let _: () = conn.del(&[&a, &b]).await.unwrap();
        }
    }

    fn same(ours: Vec<Entry>, theirs: Vec<redis::streams::StreamId>) {
        assert_eq!(ours.len(), theirs.len());
        for (mut ours, theirs) in ours.into_iter().zip(theirs) {
            assert_eq!(ours.id, theirs.id);
            assert_eq!(ours.fields.len(), 2 * theirs.map.len(), "{}", ours.id);
            for (name, value) in &theirs.map {
                let Value::BulkString(value) = value else {
                    panic!("{name}: {value:?}");
                };
                assert_eq!(ours.take(name).as_ref(), Some(value), "{name}");
            }
        }
    }

    /// A field that is not there, or was taken already, is `None`; fields are found by their whole
    /// name.
    #[test]
    fn an_entry_gives_each_field_once() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("rr"), bulk("no"), bulk("r"), bulk("yes")]),
        ]);
        let mut entry = Entry::from_redis_value(entry).unwrap();
        assert_eq!(entry.take("r"), Some(b"yes".to_vec()));
        assert_eq!(entry.take("r"), None);
        assert_eq!(entry.take("w"), None);
        assert!(Entry::from_redis_value(bulk("1-0")).is_err());
    }
}
