//! A person's opt-outs the store took while Redis could not: the record and its audit entry, and a
//! row in `uncached` saying the cache may lack it, in one transaction; then the rows every replica
//! polls and the service deletes once the cache holds their records (see `service::uncached`).

use super::{Context, Row, Store, StoreError, audit::AuditTx, commit::InsertRecords};
use crate::{
    audit::{AuditEntry, AuditLog},
    domain::{Millis, ReceiptId, Suppression},
};

/// What the store did with an opt-out it was asked to take without the cache.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TakenUncached {
    /// Committed, with its audit entry and its `uncached` row.
    Taken,
    /// The store already holds a record with this receipt or this tenant's idempotency key; nothing
    /// was written.
    Present,
}

/// A record the cache may lack, and whether it is still in force.
#[derive(Debug)]
pub struct Uncached {
    pub(crate) record: Suppression,
    /// Ended (opted in) or expired since: nothing to write into the cache, only the row to delete.
    pub(crate) ended: bool,
}

/// The most marked records one read returns ([`Store::uncached`]): a fixed `LIMIT` (see the
/// module doc of `store`); a replica reads them every controls poll while any is marked.
macro_rules! uncached_page {
    () => {
        1000
    };
}

impl Store {
    /// Commits `record` as the write-behind worker would (the record, its audit entry and a signed
    /// checkpoint) and marks it uncached, in one transaction under the audit head's lock.
    #[tracing::instrument(name = "INSERT suppressions", skip_all, fields(
        otel.kind = "client", db.system = self.engine(), db.operation = "INSERT",
        db.sql.table = "suppressions"))]
    pub(crate) async fn take_uncached(
        &self,
        record: &Suppression,
        trace_id: &str,
        committed_at: Millis,
        log: &AuditLog,
    ) -> Result<TakenUncached, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.context("beginning an uncached opt-out")?;
            let inserted = tx
                .insert_records(std::slice::from_ref(record), committed_at, None)
                .await?;
            if inserted.is_empty() {
                tx.rollback().await.context("ending an uncached opt-out")?;
                return Ok(TakenUncached::Present);
            }
            if !log.unaudited() {
                let head = tx.lock_head().await?;
                let entry = AuditEntry::opt_out(head.seq(0), committed_at, record, trace_id);
                tx.append_audit(head, [entry], log, committed_at).await?;
            }
            sqlx::query("INSERT INTO uncached (receipt_id, recorded_at) VALUES ($1, $2)")
                .bind(record.receipt.to_string())
                .bind(committed_at)
                .execute(&mut *tx)
                .await
                .context("marking an opt-out uncached")?;
            tx.commit().await.context("committing an uncached opt-out")?;
            Ok(TakenUncached::Taken)
        })
    }

    /// Up to a page (`uncached_page!`) of the records marked uncached, oldest receipt first.
    #[tracing::instrument(name = "SELECT uncached", skip_all, fields(
        otel.kind = "client", db.system = self.engine(), db.operation = "SELECT",
        db.sql.table = "uncached"))]
    pub async fn uncached(&self, now: Millis) -> Result<Vec<Uncached>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Marked {
            #[sqlx(flatten)]
            row: Row,
            ended: bool,
        }
        let sql = concat!(
            "SELECT ",
            columns!(),
            ", (ended_at IS NOT NULL OR (expires_at IS NOT NULL AND expires_at <= $1)) AS ended \
             FROM suppressions WHERE receipt_id IN \
               (SELECT receipt_id FROM uncached ORDER BY receipt_id LIMIT ",
            uncached_page!(),
            ") ORDER BY receipt_id"
        );
        let rows: Vec<Marked> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(now)
            .fetch_all(pool)
            .await)
        .context("reading uncached records")?;
        rows.into_iter()
            .map(|m| {
                Ok(Uncached {
                    record: m.row.into_suppression()?,
                    ended: m.ended,
                })
            })
            .collect()
    }

    /// Whether a record is still marked uncached.
    pub(crate) async fn is_uncached(&self, receipt: ReceiptId) -> Result<bool, StoreError> {
        let found: Option<i32> = on_pool!(self, pool =>
            sqlx::query_scalar("SELECT 1 FROM uncached WHERE receipt_id = $1")
                .bind(receipt.to_string())
                .fetch_optional(pool)
                .await)
        .context("reading an uncached mark")?;
        Ok(found.is_some())
    }

    /// Removes the marks of records the cache now holds (or that ended).
    pub(crate) async fn forget_uncached(&self, receipts: &[ReceiptId]) -> Result<(), StoreError> {
        for chunk in receipts.chunks(super::INSERT_CHUNK) {
            on_pool!(self, pool => {
                let mut delete =
                    sqlx::QueryBuilder::new("DELETE FROM uncached WHERE receipt_id IN (");
                let mut ids = delete.separated(", ");
                for id in chunk {
                    ids.push_bind(id.to_string());
                }
                delete.push(")");
                delete.build().execute(pool).await.map(drop)
            })
            .context("removing uncached marks")?;
        }
        Ok(())
    }
}
