//! The [`Store`]'s reads of the audit tables: rows in log order, one change's entry, one person's
//! entries, the stored subtree hashes that proofs are built from, checkpoints and the head's size.
//! Read-only: every write to these tables goes through `append`.

use crate::{
    audit::{AuditEntry, merkle::Hash},
    store::{Context, Store, StoreError},
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
    pub detail: Option<String>,
    /// When the entry's free text was erased (`ForgetPerson`); read only where it matters.
    #[sqlx(default)]
    pub erased_at: Option<i64>,
    /// The leaf hash, then the hashes of the subtrees this leaf completes, level by level.
    pub hashes: Vec<u8>,
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
            detail: self.detail.clone(),
        })
    }

    /// The hash stored for the subtree of `level` this row completes (level 0: its leaf).
    pub(crate) fn stored_hash(&self, level: u32) -> Option<Hash> {
        let at = level as usize * 32;
        self.hashes.get(at..at + 32).and_then(|h| h.try_into().ok())
    }
}

/// A stored checkpoint: the tree size, its root, and the signed note.
#[derive(sqlx::FromRow, Debug, Clone)]
pub struct CheckpointRow {
    pub size: i64,
    pub root: Vec<u8>,
    pub note: String,
}
/// The row of the leaf that completes the aligned subtree (`level`, `index`): its last leaf.
fn completing_seq(level: u32, index: u64) -> u64 {
    ((index + 1) << level) - 1
}
impl Store {
    /// Audit rows in sequence order, after `after` (exclusive), for verification.
    pub async fn audit_rows(&self, after: i64, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            audit_columns!(),
            ", erased_at FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
        );
        on_pool!(self, pool => sqlx::query_as(sql).bind(after).bind(limit as i64).fetch_all(pool).await)
            .context("reading audit rows")
    }

    /// The checkpoints after `after`, up to `limit` of them, as (size, the appending span's
    /// `traceparent`): the entry `seq` was appended by the first whose size exceeds it.
    pub(crate) async fn append_spans(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let sql = "SELECT size, span FROM audit_checkpoints WHERE size > $1 ORDER BY size LIMIT $2";
        on_pool!(self, pool => sqlx::query_as(sql).bind(after).bind(limit as i64).fetch_all(pool).await)
            .context("reading the spans of appends")
    }

    /// The audit entry of one change.
    pub(crate) async fn audit_row_for(
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

    /// Every audit entry of one receipt (a record's opt-out, its end, its confirmations), in log
    /// order.
    pub(crate) async fn audit_rows_of_receipt(
        &self,
        receipt: &str,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE receipt_id = $1 ORDER BY seq"
        );
        on_pool!(self, pool => sqlx::query_as(sql).bind(receipt).fetch_all(pool).await)
            .context("reading a receipt's audit entries")
    }

    /// One person's audit entries within a tenant, in log order: those of their records (every
    /// entry that names a person is about one of its records; see migration 0007).
    pub(crate) async fn audit_rows_for_subject(
        &self,
        subject: &[u8],
        tenant: &str,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE receipt_id IN \
               (SELECT receipt_id FROM suppressions WHERE subject = $1 AND tenant = $2) \
             AND subject = $1 AND tenant = $2 ORDER BY seq"
        );
        on_pool!(self, pool => sqlx::query_as(sql).bind(subject.to_vec()).bind(tenant).fetch_all(pool).await)
            .context("reading a subject's audit entries")
    }

    /// Stored hashes of aligned complete subtrees, by (level, index): each lives in the row of the
    /// leaf that completed it.
    pub(crate) async fn audit_nodes(
        &self,
        keys: &[(u32, u64)],
    ) -> Result<HashMap<(u32, u64), Hash>, StoreError> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(500) {
            let rows: Vec<(i64, Vec<u8>)> = on_pool!(self, pool => {
                let mut q = QueryBuilder::new("SELECT seq, hashes FROM audit_log WHERE seq IN (");
                let mut list = q.separated(", ");
                for (level, index) in chunk {
                    list.push_bind(completing_seq(*level, *index) as i64);
                }
                q.push(")");
                q.build_query_as().fetch_all(pool).await
            })
            .context("reading audit subtrees")?;
            let by_seq: HashMap<i64, Vec<u8>> = rows.into_iter().collect();
            for &(level, index) in chunk {
                let at = level as usize * 32;
                let hash = by_seq
                    .get(&(completing_seq(level, index) as i64))
                    .and_then(|h| h.get(at..at + 32))
                    .and_then(|h| h.try_into().ok());
                if let Some(hash) = hash {
                    found.insert((level, index), hash);
                }
            }
        }
        Ok(found)
    }

    /// Every checkpoint, smallest first.
    pub(crate) async fn audit_checkpoints(&self) -> Result<Vec<CheckpointRow>, StoreError> {
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
