//! Ending records and reading a person's records whole. A record is never deleted: an opt-in or a
//! rollback *ends* it (`ended_at`, and `ended_by` = the audit action), in one transaction with the
//! audit entry that says so, and from then on no check, rebuild or expiry sweep sees it. Its history
//! stays readable for data-subject requests.

use super::{Context, Row, Store, StoreError, audit::AuditTx};
use crate::{
    audit::{Action, AuditEntry, AuditLog},
    domain::{Millis, ReceiptId, SubjectHash, Suppression},
};
use sqlx::QueryBuilder;

/// Receipts ended per statement; both engines take this many parameters comfortably.
const END_CHUNK: usize = 500;

/// A record as kept, with what happened to it since.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub(crate) record: Suppression,
    pub(crate) ended_at: Option<Millis>,
    /// The audit action that ended it (`opt_in`, `rollback`).
    pub(crate) ended_by: Option<String>,
    pub(crate) import_batch: Option<String>,
}

impl StoredRecord {
    pub fn is_active_at(&self, now: Millis) -> bool {
        self.ended_at.is_none() && self.record.is_active_at(now)
    }
}

#[derive(sqlx::FromRow)]
struct StoredRow {
    #[sqlx(flatten)]
    row: Row,
    ended_at: Option<i64>,
    ended_by: Option<String>,
    import_batch: Option<String>,
}

impl StoredRow {
    fn into_record(self) -> Result<StoredRecord, StoreError> {
        Ok(StoredRecord {
            record: self.row.into_suppression()?,
            ended_at: self.ended_at,
            ended_by: self.ended_by,
            import_batch: self.import_batch,
        })
    }
}

macro_rules! stored_columns {
    () => {
        concat!(columns!(), ", ended_at, ended_by, import_batch")
    };
}

impl Store {
    /// Ends those of `receipts` that are still active (not ended, not expired) and appends one
    /// audit entry per record ended, by `actor`, all in one transaction. Returns the records it
    /// ended; a receipt already ended is skipped, so repeating a call changes nothing.
    #[tracing::instrument(name = "UPDATE suppressions", skip_all, fields(
        otel.kind = "client", db.system = self.engine(), db.operation = "UPDATE",
        db.sql.table = "suppressions", suppressd.records = receipts.len() as i64))]
    pub(crate) async fn end_records(
        &self,
        receipts: &[ReceiptId],
        action: Action,
        actor: &str,
        detail: Option<&str>,
        now: Millis,
        log: &AuditLog,
    ) -> Result<Vec<Suppression>, StoreError> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.context("beginning to end records")?;
            // Write first, then read the head: SQLite must take its write lock before it reads,
            // or a commit elsewhere in between makes the upgrade fail (the worker's order too).
            let mut ended = Vec::new();
            for chunk in receipts.chunks(END_CHUNK) {
                let mut q = QueryBuilder::new("UPDATE suppressions SET ended_at = ");
                q.push_bind(now)
                    .push(", ended_by = ")
                    .push_bind(action.as_str())
                    .push(" WHERE ended_at IS NULL AND (expires_at IS NULL OR expires_at > ")
                    .push_bind(now)
                    .push(") AND receipt_id IN (");
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(id.to_string());
                }
                q.push(concat!(") RETURNING ", columns!()));
                let rows: Vec<Row> = q
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await
                    .context("ending records")?;
                for row in rows {
                    ended.push(row.into_suppression()?);
                }
            }
            if ended.is_empty() {
                tx.rollback().await.context("ending records")?;
                return Ok(ended);
            }
            let head = tx.lock_head().await?;
            // Log order follows receipt order, whatever order the engine returned rows in.
            ended.sort_by_key(|s| s.receipt);
            let entries: Vec<_> = ended
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    let entry = AuditEntry {
                        actor: actor.to_owned(),
                        ..AuditEntry::about(action, head.seq(k), now, s, "")
                    };
                    match detail {
                        Some(d) => entry.with_detail(d),
                        None => entry,
                    }
                })
                .collect();
            tx.append_audit(head, entries, log, now).await?;
            tx.commit().await.context("committing ended records")?;
            Ok(ended)
        })
    }

    /// Every record of one person within a tenant, active or not, oldest first.
    #[tracing::instrument(name = "SELECT suppressions", skip_all, fields(
        otel.kind = "client", db.system = self.engine(), db.operation = "SELECT",
        db.sql.table = "suppressions"))]
    pub async fn records_of(
        &self,
        subject: &SubjectHash,
        tenant: &str,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            stored_columns!(),
            " FROM suppressions WHERE subject = $1 AND tenant = $2 ORDER BY received_at, receipt_id"
        );
        let rows: Vec<StoredRow> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(subject.0.to_vec())
            .bind(tenant)
            .fetch_all(pool)
            .await)
        .context("reading a person's records")?;
        rows.into_iter().map(StoredRow::into_record).collect()
    }

    /// The active records of any of `subjects`: what remains to fill the cache fields that ended
    /// records leave.
    pub(crate) async fn active_of_subjects(
        &self,
        subjects: &[SubjectHash],
        now: Millis,
    ) -> Result<Vec<Suppression>, StoreError> {
        let mut found = Vec::new();
        for chunk in subjects.chunks(END_CHUNK) {
            let rows: Vec<Row> = on_pool!(self, pool => {
                let mut q = QueryBuilder::new(concat!(
                    "SELECT ", columns!(),
                    " FROM suppressions WHERE ended_at IS NULL AND (expires_at IS NULL OR expires_at > "
                ));
                q.push_bind(now).push(") AND subject IN (");
                let mut list = q.separated(", ");
                for subject in chunk {
                    list.push_bind(subject.0.to_vec());
                }
                q.push(")");
                q.build_query_as().fetch_all(pool).await
            })
            .context("reading the active records of subjects")?;
            for row in rows {
                found.push(row.into_suppression()?);
            }
        }
        Ok(found)
    }

    /// Records received at or after `since` that took effect more than `slower_than` after
    /// receipt: the only ones that can have missed a deadline as long as `slower_than` (the legal
    /// clocks' gauges), so the query stays small however many opt-outs arrive on time.
    pub(crate) async fn slow_records(
        &self,
        since: Millis,
        slower_than: Millis,
    ) -> Result<Vec<Suppression>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            // The first condition is implied by the last (`slower_than` is never negative); it
            // names the partial index of such records (PostgreSQL migration 0017).
            " FROM suppressions WHERE effective_at > received_at \
             AND received_at >= $1 AND effective_at - received_at > $2"
        );
        let rows: Vec<Row> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(since)
            .bind(slower_than)
            .fetch_all(pool)
            .await)
        .context("reading slow records")?;
        rows.into_iter().map(Row::into_suppression).collect()
    }

    /// One page of records ended at or after `since`, in receipt order after `after`: what a cache
    /// rebuild re-applies at its end, in case it copied a record just before it ended.
    pub(crate) async fn ended_page(
        &self,
        after: Option<ReceiptId>,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<Suppression>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM suppressions WHERE receipt_id > $1 AND ended_at >= $2 \
             ORDER BY receipt_id LIMIT $3"
        );
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let rows: Vec<Row> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(after)
            .bind(since)
            .bind(limit as i64)
            .fetch_all(pool)
            .await)
        .context("reading a page of ended records")?;
        rows.into_iter().map(Row::into_suppression).collect()
    }
}
