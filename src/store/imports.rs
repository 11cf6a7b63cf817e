//! Import batches: the `imports` row that names and counts each batch, the chunk commit that writes
//! an import's records, and the reads a rollback pages through.
//!
//! A chunk's transaction begins by bumping its batch's counts, and only while the batch is not rolled
//! back. That one statement is what stops an import still streaming once a rollback marked its batch:
//! on PostgreSQL it waits for the rollback's row lock and re-reads the row; SQLite has one writer,
//! and a write as the first statement takes the write lock before any snapshot is read.

use super::audit::AuditTx;
use super::{Context, INSERT_CHUNK, InsertRecords, Row, Store, StoreError};
use crate::{
    audit::{Action, AuditEntry, AuditLog},
    domain::{Millis, Suppression},
};
use sqlx::QueryBuilder;
use std::collections::{BTreeMap, BTreeSet};

/// One import batch as listed.
#[derive(sqlx::FromRow, Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImportBatchRow {
    pub(crate) batch_id: String,
    pub(crate) actor: String,
    pub(crate) started_at: i64,
    pub(crate) finished_at: Option<i64>,
    pub(crate) imported: i64,
    pub(crate) duplicates: i64,
    pub(crate) rejected: i64,
    pub(crate) rolled_back_at: Option<i64>,
    pub(crate) rolled_back_by: Option<String>,
}

/// What marking a batch rolled back found.
#[derive(Debug)]
pub(crate) enum Marked {
    /// No batch of that id.
    Unknown,
    /// A record of the batch is of a tenant the caller may not use; the batch is left as it was.
    Refused { tenant: String },
    /// The batch is marked (now, or by an earlier rollback, whose time and actor it keeps).
    Done,
}

/// What one chunk adds to its batch's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ChunkCounts {
    pub(crate) duplicates: u64,
    pub(crate) rejected: u64,
}

/// A record of a batch as a rollback sees it: whether something already ended it.
#[derive(sqlx::FromRow)]
struct BatchRow {
    #[sqlx(flatten)]
    row: Row,
    ended_at: Option<i64>,
}

impl Store {
    /// Opens a batch: listed (and counted) from its first chunk on, even if the stream breaks off.
    pub(crate) async fn create_import(
        &self,
        batch_id: &str,
        actor: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO imports (batch_id, actor, started_at) VALUES ($1, $2, $3)";
        on_pool!(self, pool => sqlx::query(sql).bind(batch_id).bind(actor).bind(now).execute(pool).await.map(drop))
            .context("opening an import batch")?;
        Ok(())
    }

    /// Whether a rollback has marked the batch (so its import must stop). An unknown batch counts as
    /// rolled back: nothing may be written into it.
    pub(crate) async fn import_rolled_back(&self, batch_id: &str) -> Result<bool, StoreError> {
        let sql = "SELECT rolled_back_at FROM imports WHERE batch_id = $1";
        let row: Option<Option<i64>> = on_pool!(self, pool =>
            sqlx::query_scalar(sql).bind(batch_id).fetch_optional(pool).await)
        .context("reading an import batch")?;
        Ok(row.is_none_or(|at| at.is_some()))
    }

    /// Commits one chunk of an import in one transaction: the batch's counts, the records (tagged
    /// with the batch), and one `import` audit entry per record (detail: the batch id). Returns
    /// `false`, having written nothing, when the batch was rolled back meanwhile.
    #[tracing::instrument(name = "INSERT suppressions", skip_all, fields(
        otel.kind = "client", db.system = self.engine(), db.operation = "INSERT",
        db.sql.table = "suppressions", suppressd.records = records.len() as i64))]
    pub(crate) async fn commit_import_chunk(
        &self,
        batch_id: &str,
        records: &[Suppression],
        counts: ChunkCounts,
        now: Millis,
        log: &AuditLog,
    ) -> Result<bool, StoreError> {
        let bump = "UPDATE imports SET imported = imported + $2, duplicates = duplicates + $3, \
                    rejected = rejected + $4 WHERE batch_id = $1 AND rolled_back_at IS NULL";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.context("beginning an import chunk")?;
            let open = sqlx::query(bump)
                .bind(batch_id)
                .bind(records.len() as i64)
                .bind(counts.duplicates as i64)
                .bind(counts.rejected as i64)
                .execute(&mut *tx)
                .await
                .context("counting an import chunk")?
                .rows_affected();
            if open == 0 {
                tx.rollback().await.context("abandoning an import chunk")?;
                return Ok(false);
            }
            if !records.is_empty() {
                // Receipts are new ids, so every record is new; the audit follows the insert anyway.
                let inserted = tx.insert_records(records, now, Some(batch_id)).await?;
                let new: std::collections::HashSet<String> = inserted.into_iter().collect();
                let head = tx.lock_head().await?;
                let entries: Vec<_> = records
                    .iter()
                    .filter(|s| new.contains(&s.receipt.to_string()))
                    .enumerate()
                    .map(|(k, s)| {
                        AuditEntry::about(Action::Import, head.seq(k), now, s, "")
                            .with_detail(batch_id)
                    })
                    .collect();
                tx.append_audit(head, entries, log, now).await?;
            }
            tx.commit().await.context("committing an import chunk")?;
            Ok(true)
        })
    }

    /// Closes a batch whose stream ended normally.
    pub(crate) async fn finish_import(
        &self,
        batch_id: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE imports SET finished_at = $2 WHERE batch_id = $1";
        on_pool!(self, pool => sqlx::query(sql).bind(batch_id).bind(now).execute(pool).await.map(drop))
            .context("closing an import batch")?;
        Ok(())
    }

    /// Marks a batch rolled back (the first rollback's time and actor are kept), which stops any
    /// chunk still to come, if `may_use` allows every tenant of its records (`None`: any tenant).
    /// The tenants are read after the mark, in its transaction: the mark waits for a chunk being
    /// committed (which holds the batch's row) and no chunk lands after it, so they are all the
    /// batch will ever hold. A batch with a tenant `may_use` refuses is left unmarked.
    pub(crate) async fn mark_rolled_back(
        &self,
        batch_id: &str,
        actor: &str,
        now: Millis,
        may_use: Option<&(dyn Fn(&str) -> bool + Sync)>,
    ) -> Result<Marked, StoreError> {
        let mark = "UPDATE imports SET rolled_back_at = COALESCE(rolled_back_at, $2), \
                    rolled_back_by = COALESCE(rolled_back_by, $3) WHERE batch_id = $1 \
                    RETURNING 1";
        let tenants = "SELECT DISTINCT tenant FROM suppressions WHERE import_batch = $1";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.context("beginning a rollback's mark")?;
            let found: Option<i32> = sqlx::query_scalar(mark)
                .bind(batch_id)
                .bind(now)
                .bind(actor)
                .fetch_optional(&mut *tx)
                .await
                .context("marking an import rolled back")?;
            if found.is_none() {
                return Ok(Marked::Unknown);
            }
            if let Some(may_use) = may_use {
                let tenants: Vec<String> = sqlx::query_scalar(tenants)
                    .bind(batch_id)
                    .fetch_all(&mut *tx)
                    .await
                    .context("reading the tenants of an import batch")?;
                if let Some(foreign) = tenants.into_iter().find(|t| !may_use(t)) {
                    tx.rollback().await.context("leaving an import unmarked")?;
                    return Ok(Marked::Refused { tenant: foreign });
                }
            }
            tx.commit().await.context("committing a rollback's mark")?;
            Ok(Marked::Done)
        })
    }

    /// One page of a batch's records in receipt order after `after`, each with whether it has
    /// ended. Only rows an import created carry a batch, so nothing else is ever selected.
    pub(crate) async fn batch_page(
        &self,
        batch_id: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(Suppression, bool)>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            ", ended_at FROM suppressions WHERE import_batch = $1 AND receipt_id > $2 \
             ORDER BY receipt_id LIMIT $3"
        );
        let rows: Vec<BatchRow> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(batch_id).bind(after).bind(limit as i64).fetch_all(pool).await)
        .context("reading a page of an import batch")?;
        rows.into_iter()
            .map(|r| Ok((r.row.into_suppression()?, r.ended_at.is_some())))
            .collect()
    }

    /// Import batches, newest first: the first `limit`, or the `limit` after (older than) the batch
    /// `after` names by its start time and id.
    pub(crate) async fn list_imports(
        &self,
        limit: usize,
        after: Option<(i64, &str)>,
    ) -> Result<Vec<ImportBatchRow>, StoreError> {
        let sql = "SELECT batch_id, actor, started_at, finished_at, imported, duplicates, rejected, \
                   rolled_back_at, rolled_back_by FROM imports \
                   WHERE started_at < $2 OR (started_at = $2 AND batch_id < $3) \
                   ORDER BY started_at DESC, batch_id DESC LIMIT $1";
        // With no `after`, a position past every batch (each started before i64::MAX ms).
        let (before_at, before_id) = after.unwrap_or((i64::MAX, ""));
        on_pool!(self, pool => sqlx::query_as(sql)
            .bind(limit as i64).bind(before_at).bind(before_id).fetch_all(pool).await)
        .context("listing import batches")
    }

    /// The tenants of the records each of `batches` created (a batch that created none is absent).
    pub(crate) async fn import_tenants(
        &self,
        batches: &[String],
    ) -> Result<BTreeMap<String, BTreeSet<String>>, StoreError> {
        let mut tenants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for chunk in batches.chunks(INSERT_CHUNK) {
            let pairs: Vec<(String, String)> = on_pool!(self, pool => {
                let mut q = QueryBuilder::new(
                    "SELECT DISTINCT import_batch, tenant FROM suppressions WHERE import_batch IN (",
                );
                let mut list = q.separated(", ");
                for batch in chunk {
                    list.push_bind(batch.clone());
                }
                q.push(")");
                q.build_query_as().fetch_all(pool).await
            })
            .context("reading the tenants of import batches")?;
            for (batch, tenant) in pairs {
                tenants.entry(batch).or_default().insert(tenant);
            }
        }
        Ok(tenants)
    }
}
