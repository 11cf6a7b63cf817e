//! The audit tables: entries, aligned Merkle subtrees, signed checkpoints, and the head row that
//! serializes appends (locked `FOR UPDATE` on PostgreSQL; SQLite has one writer anyway).

use super::{Context, Store, StoreError};
use crate::audit::{
    AuditEntry,
    merkle::{Frontier, Hash},
};
use sqlx::QueryBuilder;
use std::collections::HashMap;

/// An audit row as stored; [`AuditRow::entry`] rebuilds the canonical entry from the columns, which
/// is what makes a change to any column visible in the leaf hash.
#[derive(sqlx::FromRow, Debug, Clone)]
pub struct AuditRow {
    pub seq: i64,
    pub recorded_at: i64,
    pub actor: String,
    pub action: String,
    pub tenant: String,
    pub subject: Vec<u8>,
    pub channel: i32,
    pub topic: String,
    pub campaign: String,
    pub reason: i32,
    pub source: i32,
    pub receipt_id: String,
    pub trace_id: String,
    pub expires_at: Option<i64>,
}

impl AuditRow {
    /// The entry this row encodes, or why no entry could have produced it.
    pub fn entry(&self) -> Result<AuditEntry, String> {
        let small =
            |name: &str, v: i32| u8::try_from(v).map_err(|_| format!("{name} {v} out of range"));
        Ok(AuditEntry {
            v: AuditEntry::VERSION,
            seq: u64::try_from(self.seq).map_err(|_| "negative sequence".to_owned())?,
            time: self.recorded_at,
            actor: self.actor.clone(),
            action: self.action.clone(),
            tenant: self.tenant.clone(),
            subject: hex::encode(&self.subject),
            channel: small("channel", self.channel)?,
            topic: self.topic.clone(),
            campaign: self.campaign.clone(),
            reason: small("reason", self.reason)?,
            source: small("source", self.source)?,
            receipt: self.receipt_id.clone(),
            trace_id: self.trace_id.clone(),
            expires_at: self.expires_at,
        })
    }
}

/// A stored checkpoint: the tree size, its root, and the signed note.
#[derive(sqlx::FromRow, Debug, Clone)]
pub struct CheckpointRow {
    pub size: i64,
    pub root: Vec<u8>,
    pub note: String,
}

macro_rules! audit_columns {
    () => {
        "seq, recorded_at, actor, action, tenant, subject, channel, topic, campaign, reason, source, \
         receipt_id, trace_id, expires_at"
    };
}
pub(super) use audit_columns;

pub(super) const LOCK_HEAD_PG: &str =
    "SELECT size, frontier FROM audit_head WHERE id = 1 FOR UPDATE";
pub(super) const LOCK_HEAD_SQLITE: &str = "SELECT size, frontier FROM audit_head WHERE id = 1";

/// What one commit appends: the entries, the subtrees they complete, the new head.
pub(super) struct Append {
    pub entries: Vec<AuditEntry>,
    pub nodes: Vec<(u32, u64, Hash)>,
    pub frontier: Frontier,
}

pub(super) fn plan_append(
    size: i64,
    frontier: &[u8],
    entries: impl IntoIterator<Item = (u64, AuditEntry)>,
) -> Result<Append, StoreError> {
    let size = u64::try_from(size).map_err(|_| corrupt_head())?;
    let mut frontier = Frontier::from_bytes(size, frontier).ok_or_else(corrupt_head)?;
    let mut nodes = Vec::new();
    let mut out = Vec::new();
    for (_, entry) in entries {
        debug_assert_eq!(entry.seq, frontier.size());
        nodes.extend(frontier.push(entry.leaf_hash()));
        out.push(entry);
    }
    Ok(Append {
        entries: out,
        nodes,
        frontier,
    })
}

fn corrupt_head() -> StoreError {
    StoreError::Corrupt {
        receipt: "audit_head".into(),
        problem: "the frontier does not match the size".into(),
    }
}

/// Rows per multi-row INSERT of audit data.
pub(super) const AUDIT_CHUNK: usize = 500;

/// Binds one entry as an audit row (a macro: the same binds for both engines' query builders).
macro_rules! push_entry {
    ($row:expr, $e:expr) => {{
        let e: &AuditEntry = $e;
        $row.push_bind(e.seq as i64)
            .push_bind(e.time)
            .push_bind(e.actor.clone())
            .push_bind(e.action.clone())
            .push_bind(e.tenant.clone())
            .push_bind(hex::decode(&e.subject).unwrap_or_default())
            .push_bind(i32::from(e.channel))
            .push_bind(e.topic.clone())
            .push_bind(e.campaign.clone())
            .push_bind(i32::from(e.reason))
            .push_bind(i32::from(e.source))
            .push_bind(e.receipt.clone())
            .push_bind(e.trace_id.clone())
            .push_bind(e.expires_at);
    }};
}
pub(super) use push_entry;

impl Store {
    /// Audit rows in sequence order, after `after` (exclusive), for verification.
    pub async fn audit_rows(&self, after: i64, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
        );
        on_pool!(self, pool => sqlx::query_as(sql).bind(after).bind(limit as i64).fetch_all(pool).await)
            .context("reading audit rows")
    }

    /// The audit entry of one change.
    pub async fn audit_row_for(
        &self,
        receipt: &str,
        action: &str,
    ) -> Result<Option<AuditRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE receipt_id = $1 AND action = $2"
        );
        on_pool!(self, pool => sqlx::query_as(sql).bind(receipt).bind(action).fetch_optional(pool).await)
            .context("reading an audit entry")
    }

    /// One person's audit entries within a tenant, in log order.
    pub async fn audit_rows_for_subject(
        &self,
        subject: &[u8],
        tenant: &str,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE subject = $1 AND tenant = $2 ORDER BY seq"
        );
        on_pool!(self, pool => sqlx::query_as(sql).bind(subject.to_vec()).bind(tenant).fetch_all(pool).await)
            .context("reading a subject's audit entries")
    }

    /// Stored subtree hashes for the given (level, index) keys.
    pub async fn audit_nodes(
        &self,
        keys: &[(u32, u64)],
    ) -> Result<HashMap<(u32, u64), Hash>, StoreError> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(200) {
            let rows: Vec<(i32, i64, Vec<u8>)> = on_pool!(self, pool => {
                let mut q = QueryBuilder::new("SELECT level, idx, hash FROM audit_nodes WHERE ");
                let mut or = q.separated(" OR ");
                for (level, idx) in chunk {
                    or.push("(level = ")
                        .push_bind_unseparated(*level as i32)
                        .push_unseparated(" AND idx = ")
                        .push_bind_unseparated(*idx as i64)
                        .push_unseparated(")");
                }
                q.build_query_as().fetch_all(pool).await
            })
            .context("reading audit subtrees")?;
            for (level, idx, hash) in rows {
                if let Ok(hash) = hash.try_into() {
                    found.insert((level as u32, idx as u64), hash);
                }
            }
        }
        Ok(found)
    }

    /// Every checkpoint, smallest first.
    pub async fn audit_checkpoints(&self) -> Result<Vec<CheckpointRow>, StoreError> {
        let sql = "SELECT size, root, note FROM audit_checkpoints ORDER BY size";
        on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)
            .context("reading checkpoints")
    }

    pub async fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError> {
        let sql = "SELECT size, root, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1";
        on_pool!(self, pool => sqlx::query_as(sql).fetch_optional(pool).await)
            .context("reading the latest checkpoint")
    }

    /// The checkpoint of exactly this size, if one was signed.
    pub async fn checkpoint_of_size(&self, size: i64) -> Result<Option<CheckpointRow>, StoreError> {
        let sql = "SELECT size, root, note FROM audit_checkpoints WHERE size = $1";
        on_pool!(self, pool => sqlx::query_as(sql).bind(size).fetch_optional(pool).await)
            .context("reading a checkpoint")
    }

    /// The head's size: how many entries the log holds.
    pub async fn audit_size(&self) -> Result<i64, StoreError> {
        let sql = "SELECT size FROM audit_head WHERE id = 1";
        on_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await)
            .context("reading the audit head")
    }
}
