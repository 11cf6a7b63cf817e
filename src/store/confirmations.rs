//! Confirmations of opt-outs: audit entries of action `confirmation`, under the receipt of the
//! opt-out they confirm (so a person's history lists them with the record). They have no table of
//! their own: the log is where they must be, and the receipt index finds them.

use super::{Context, Store, StoreError, audit::AuditRow, audit::AuditTx};
use crate::{
    audit::{Action, AuditEntry, AuditLog},
    domain::ReceiptId,
};

impl Store {
    /// Appends `entry`, a confirmation, unless the log already holds one with the same receipt and
    /// particulars (the same confirmation recorded again); returns the log index of the one that
    /// stands.
    pub(crate) async fn append_confirmation(
        &self,
        entry: AuditEntry,
        log: &AuditLog,
    ) -> Result<u64, StoreError> {
        let sql = "SELECT seq FROM audit_log WHERE receipt_id = $1 AND action = $2 AND detail = $3";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.context("beginning a confirmation")?;
            let head = tx.lock_head().await?;
            let found: Option<i64> = sqlx::query_scalar(sql)
                .bind(&entry.receipt)
                .bind(Action::Confirmation.as_str())
                .bind(&entry.detail)
                .fetch_optional(&mut *tx)
                .await
                .context("looking for the confirmation")?;
            if let Some(seq) = found {
                return Ok(seq as u64);
            }
            let seq = head.seq(0);
            let time = entry.time;
            tx.append_audit(head, [AuditEntry { seq, ..entry }], log, time).await?;
            tx.commit().await.context("committing a confirmation")?;
            Ok(seq)
        })
    }

    /// The confirmations of the opt-out `receipt`, oldest first.
    pub(crate) async fn confirmations_of(
        &self,
        receipt: ReceiptId,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE receipt_id = $1 AND action = $2 ORDER BY seq"
        );
        on_pool!(self, pool => sqlx::query_as(sql)
            .bind(receipt.to_string())
            .bind(Action::Confirmation.as_str())
            .fetch_all(pool)
            .await)
        .context("reading confirmations")
    }
}
