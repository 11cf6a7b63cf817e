//! The [`Store`]'s reads of the audit tables: rows in log order, one change's entry, one person's
//! entries, the stored subtree hashes that proofs are built from, checkpoints and the head's size.
//! Read-only: every write to these tables goes through `append`.
//!
//! Entries live in two shapes, `audit_log` rows and `audit_blocks` (see `audit::block`); every read
//! here answers from both, as [`AuditRow`]s, so nothing above the store knows which an entry is in.
//! A block entry is always an opt-out found through its record (its time is the record's
//! `committed_at`, which blocks are indexed by), read in the same statement as the record, so a
//! record that is visible never lacks its entry.

use crate::{
    audit::{Action, AuditEntry, block, merkle::Hash},
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

    /// The row an entry of a block stands for.
    fn from_entry(e: AuditEntry, hashes: Vec<u8>) -> AuditRow {
        AuditRow {
            seq: e.seq as i64,
            recorded_at: e.time,
            // A subject that is not hex stays as its bytes, so the rebuilt entry differs from the
            // stored leaf and verification names it.
            subject: hex::decode(&e.subject).unwrap_or_else(|_| e.subject.clone().into_bytes()),
            actor: e.actor,
            action: e.action,
            tenant: e.tenant,
            channel: i32::from(e.channel),
            topic: e.topic,
            campaign: e.campaign,
            reason: i32::from(e.reason),
            source: i32::from(e.source),
            receipt_id: e.receipt,
            trace_id: e.trace_id,
            expires_at: e.expires_at,
            detail: e.detail,
            erased_at: None,
            hashes,
        }
    }

    /// The hash stored for the subtree of `level` this row completes (level 0: its leaf).
    pub(crate) fn stored_hash(&self, level: u32) -> Option<Hash> {
        let at = level as usize * 32;
        self.hashes.get(at..at + 32).and_then(|h| h.try_into().ok())
    }
}

/// A stored block of entries (`audit_blocks`), as read.
#[derive(sqlx::FromRow, Debug, Clone)]
struct BlockRow {
    first_seq: i64,
    entries: Vec<u8>,
    hashes: Vec<u8>,
}

impl BlockRow {
    /// The block's entries as rows, or the store's complaint that it is no block.
    fn rows(self) -> Result<Vec<AuditRow>, StoreError> {
        let first = u64::try_from(self.first_seq).unwrap_or(u64::MAX);
        block::decode(first, &self.entries, &self.hashes)
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|(e, hashes)| AuditRow::from_entry(e, hashes))
                    .collect()
            })
            .map_err(|problem| StoreError::Corrupt {
                receipt: format!("audit block from entry {}", self.first_seq),
                problem,
            })
    }
}

/// Every entry of `blocks` that `keep` accepts, as rows.
fn block_rows(
    blocks: Vec<BlockRow>,
    keep: impl Fn(&AuditRow) -> bool,
) -> Result<Vec<AuditRow>, StoreError> {
    let mut rows = Vec::new();
    for b in blocks {
        rows.extend(b.rows()?.into_iter().filter(&keep));
    }
    Ok(rows)
}

/// `a` and `b`, each in log order, merged in log order.
fn merged(mut a: Vec<AuditRow>, b: Vec<AuditRow>) -> Vec<AuditRow> {
    if !b.is_empty() {
        a.extend(b);
        a.sort_by_key(|r| r.seq);
    }
    a
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
    /// Audit rows in sequence order, after `after` (exclusive), at most `limit`, for verification
    /// and the watchers. Rows and blocks are two statements, and a commit between them could show
    /// a later entry without an earlier one. Every index below the head is taken, so rows that do
    /// not run on from `after` without a gap are read again in one snapshot: what is then missing
    /// is missing from the store (verification names it).
    pub async fn audit_rows(&self, after: i64, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            audit_columns!(),
            ", erased_at FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
        );
        // Only blocks that begin among the next `limit` indexes can hold rows of this page.
        let blocks_sql = "SELECT first_seq, entries, hashes FROM audit_blocks \
                          WHERE last_seq > $1 AND first_seq <= $1 + $2 ORDER BY last_seq";
        let (rows, blocks) = on_pool!(self, pool => {
            let rows = sqlx::query_as(sql).bind(after).bind(limit as i64).fetch_all(pool).await;
            let blocks = sqlx::query_as(blocks_sql).bind(after).bind(limit as i64).fetch_all(pool).await;
            (rows, blocks)
        });
        let page = |rows: Result<Vec<AuditRow>, sqlx::Error>,
                    blocks: Result<Vec<BlockRow>, sqlx::Error>| {
            let rows = rows.context("reading audit rows")?;
            let blocks = block_rows(blocks.context("reading audit blocks")?, |r| r.seq > after)?;
            let mut all = merged(rows, blocks);
            all.truncate(limit);
            Ok::<_, StoreError>(all)
        };
        let all = page(rows, blocks)?;
        if all.iter().zip(after + 1..).all(|(r, seq)| r.seq == seq) {
            return Ok(all);
        }
        let (rows, blocks) = on_pool!(self, pool => {
            let mut tx = pool.begin().await.context("beginning a read of the audit log")?;
            if matches!(self, Store::Postgres(_)) {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await
                    .context("beginning a read of the audit log")?;
            }
            let rows = sqlx::query_as(sql).bind(after).bind(limit as i64).fetch_all(&mut *tx).await;
            let blocks = sqlx::query_as(blocks_sql).bind(after).bind(limit as i64).fetch_all(&mut *tx).await;
            tx.rollback().await.context("ending a read of the audit log")?;
            (rows, blocks)
        });
        page(rows, blocks)
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
        let row = on_pool!(self, pool => sqlx::query_as(sql).bind(receipt).bind(action).fetch_optional(pool).await)
            .context("reading an audit entry")?;
        if row.is_some() || action != Action::OptOut.as_str() {
            return Ok(row);
        }
        Ok(self
            .block_rows_of_receipt(receipt)
            .await?
            .into_iter()
            .next())
    }

    /// The entries of `receipt` kept in blocks: its opt-out's, if its batch was written as one.
    async fn block_rows_of_receipt(&self, receipt: &str) -> Result<Vec<AuditRow>, StoreError> {
        let sql = "SELECT first_seq, entries, hashes FROM audit_blocks WHERE committed_at IN \
                   (SELECT committed_at FROM suppressions WHERE receipt_id = $1)";
        let blocks =
            on_pool!(self, pool => sqlx::query_as(sql).bind(receipt).fetch_all(pool).await)
                .context("reading a receipt's audit block")?;
        block_rows(blocks, |r| r.receipt_id == receipt)
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
        let rows = on_pool!(self, pool => sqlx::query_as(sql).bind(receipt).fetch_all(pool).await)
            .context("reading a receipt's audit entries")?;
        Ok(merged(rows, self.block_rows_of_receipt(receipt).await?))
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
        let blocks_sql = "SELECT first_seq, entries, hashes FROM audit_blocks WHERE committed_at IN \
                          (SELECT committed_at FROM suppressions WHERE subject = $1 AND tenant = $2)";
        let (rows, blocks) = on_pool!(self, pool => {
            let rows = sqlx::query_as(sql).bind(subject.to_vec()).bind(tenant).fetch_all(pool).await;
            let blocks = sqlx::query_as(blocks_sql).bind(subject.to_vec()).bind(tenant).fetch_all(pool).await;
            (rows, blocks)
        });
        let rows = rows.context("reading a subject's audit entries")?;
        let blocks = blocks.context("reading a subject's audit blocks")?;
        let theirs = block_rows(blocks, |r| r.subject == subject && r.tenant == tenant)?;
        Ok(merged(rows, theirs))
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
            let mut by_seq: HashMap<i64, Vec<u8>> = rows.into_iter().collect();
            let in_blocks: Vec<i64> = chunk
                .iter()
                .map(|&(level, index)| completing_seq(level, index) as i64)
                .filter(|seq| !by_seq.contains_key(seq))
                .collect();
            by_seq.extend(self.block_hashes(&in_blocks).await?);
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

    /// The stored hashes of the entries `seqs` that live in blocks, by sequence number (those in
    /// no block are left out).
    async fn block_hashes(&self, seqs: &[i64]) -> Result<HashMap<i64, Vec<u8>>, StoreError> {
        let mut found = HashMap::new();
        if seqs.is_empty() {
            return Ok(found);
        }
        // The block holding an entry is the first that ends at or after it; each subquery is one
        // step down the primary key.
        let blocks: Vec<(i64, Vec<u8>)> = on_pool!(self, pool => {
            let mut q = QueryBuilder::new(
                "SELECT first_seq, hashes FROM audit_blocks WHERE last_seq IN (",
            );
            let mut list = q.separated(", ");
            for &seq in seqs {
                list.push("(SELECT min(last_seq) FROM audit_blocks WHERE last_seq >= ")
                    .push_bind_unseparated(seq)
                    .push_unseparated(")");
            }
            q.push(")");
            q.build_query_as().fetch_all(pool).await
        })
        .context("reading audit subtrees in blocks")?;
        for &seq in seqs {
            let hashes = blocks.iter().find_map(|(first, hashes)| {
                let (first, at) = (u64::try_from(*first).ok()?, u64::try_from(seq).ok()?);
                (first <= at).then(|| block::hashes_of(first, hashes, at))?
            });
            if let Some(h) = hashes {
                found.insert(seq, h.to_vec());
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
