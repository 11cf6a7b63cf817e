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
use redis::{RedisError, Value};

mod reply;
pub(crate) use reply::{Entry, Read};
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

/// A consumer-group member. Its connection is one for blocking reads, because `XREADGROUP … BLOCK`
/// legitimately waits; it is never the connection the hot path uses.
pub(crate) struct Consumer {
    conn: Conn,
    keys: GroupKeys,
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
