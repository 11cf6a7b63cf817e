//! The identifier vault's SQL: reading a record's sealed identifier, and erasing a person
//! (`ForgetPerson`). The store only ever holds the sealed bytes (`suppressions.sealed_identifier`);
//! sealing and opening are the vault's (`auth::vault`).
//!
//! An erasure keeps every record, hash and audit leaf. It destroys the sealed identifiers, the free
//! text of the person's audit entries (`detail`, marked `erased_at`) and the evidence text of their
//! consents, and appends one `erasure` entry that vouches for what remains of each erased entry
//! (see `audit::Erasure`), all in one transaction under the audit head's lock.

use super::{Context, Store, StoreError, audit::AuditTx};
use crate::{
    audit::{Action, AuditEntry, AuditLog, Erasure, merkle::Hash},
    domain::{Millis, ReceiptId, SubjectHash},
    store::audit::AuditRow,
};

/// What an erasure destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Erased {
    /// Sealed identifiers set to nothing.
    pub(crate) identifiers: u64,
    /// Audit entries whose free text was erased.
    pub(crate) entries: u64,
    /// Consents whose evidence text was erased.
    pub(crate) consents: u64,
    /// The `erasure` entry's id (its receipt) and log index.
    pub(crate) erasure: ReceiptId,
    pub(crate) log_index: u64,
}

/// The person's entries that still hold free text: those of their records and of their consents.
/// An erasure entry keeps its own detail: it is what vouches for the others.
const ERASABLE: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_log WHERE subject = $1 AND tenant = $2 AND detail IS NOT NULL \
       AND erased_at IS NULL AND action <> 'erasure' \
       AND (receipt_id IN (SELECT receipt_id FROM suppressions WHERE subject = $1 AND tenant = $2) \
         OR receipt_id IN (SELECT consent_id FROM consents WHERE subject = $1 AND tenant = $2)) \
     ORDER BY seq"
);

impl Store {
    /// The sealed identifier kept with the record `receipt`, if any.
    pub(crate) async fn sealed_identifier(
        &self,
        receipt: ReceiptId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = "SELECT sealed_identifier FROM suppressions WHERE receipt_id = $1";
        let found: Option<Option<Vec<u8>>> = on_pool!(self, pool => sqlx::query_scalar(sql)
            .bind(receipt.to_string())
            .fetch_optional(pool)
            .await)
        .context("reading a sealed identifier")?;
        Ok(found.flatten())
    }

    /// Erases the person `subject` within `tenant` (see the module doc), by `actor` at `now`.
    #[tracing::instrument(name = "UPDATE suppressions (erasure)", skip_all, fields(
        otel.kind = "client", db.system = self.engine(), db.operation = "UPDATE",
        db.sql.table = "suppressions"))]
    pub(crate) async fn erase_person(
        &self,
        subject: &SubjectHash,
        tenant: &str,
        actor: &str,
        now: Millis,
        log: &AuditLog,
    ) -> Result<Erased, StoreError> {
        let who = subject.0.to_vec();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.context("beginning an erasure")?;
            // Write first, then read the head (SQLite takes its write lock with the first write).
            let identifiers = sqlx::query(
                "UPDATE suppressions SET sealed_identifier = NULL \
                 WHERE subject = $1 AND tenant = $2 AND sealed_identifier IS NOT NULL",
            )
            .bind(&who)
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .context("erasing sealed identifiers")?
            .rows_affected();
            let consents = sqlx::query(
                "UPDATE consents SET proof = '' WHERE subject = $1 AND tenant = $2 AND proof <> ''",
            )
            .bind(&who)
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .context("erasing consent evidence")?
            .rows_affected();
            let rows: Vec<AuditRow> = sqlx::query_as(ERASABLE)
                .bind(&who)
                .bind(tenant)
                .fetch_all(&mut *tx)
                .await
                .context("reading entries to erase")?;
            let mut erased: Vec<(u64, String)> = Vec::with_capacity(rows.len());
            for row in &rows {
                let entry = row.entry().map_err(|problem| StoreError::Corrupt {
                    receipt: row.receipt_id.clone(),
                    problem,
                })?;
                let remains: Hash = entry.remains_hash();
                erased.push((entry.seq, hex::encode(remains)));
                sqlx::query("UPDATE audit_log SET detail = NULL, erased_at = $1 WHERE seq = $2")
                    .bind(now)
                    .bind(row.seq)
                    .execute(&mut *tx)
                    .await
                    .context("erasing an entry's free text")?;
            }
            let head = tx.lock_head().await?;
            let id = ReceiptId::new(now);
            let entry = AuditEntry {
                v: AuditEntry::VERSION,
                seq: head.seq(0),
                time: now,
                actor: actor.to_owned(),
                action: Action::Erasure.as_str().to_owned(),
                tenant: tenant.to_owned(),
                subject: subject.to_hex(),
                channel: 0,
                topic: String::new(),
                campaign: String::new(),
                reason: 0,
                source: 0,
                receipt: id.to_string(),
                trace_id: String::new(),
                expires_at: None,
                detail: None,
            }
            .with_detail(
                Erasure {
                    identifiers,
                    entries: erased.clone(),
                }
                .detail(),
            );
            let log_index = entry.seq;
            tx.append_audit(head, [entry], log, now).await?;
            tx.commit().await.context("committing an erasure")?;
            Ok(Erased {
                identifiers,
                entries: erased.len() as u64,
                consents,
                erasure: id,
                log_index,
            })
        })
    }
}
