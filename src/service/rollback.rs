//! `RollbackImport` and `ListImports`. A rollback takes back exactly what one import created and
//! nothing a person created (SPEC §5, invariant 6): it selects records by their import batch, which
//! only rows an import created carry, so a person's own opt-outs, before or after, are never touched.
//!
//! The batch is marked first, so an import still streaming into it stops at its next chunk; then its
//! still-active records are ended page by page (ended, not deleted: the history stays) with one
//! `rollback` audit entry each, and their cache fields are recomputed from what remains active, so a
//! person's own record of the same scope takes the field over. Running it again ends nothing more and
//! repairs the cache of whatever an interrupted run left.

use super::{ServiceError, Suppressions};
use crate::{
    audit::Action,
    domain::{Millis, ReceiptId, Suppression},
    store::imports::{ImportBatchRow, Marked},
};
use std::collections::{BTreeMap, BTreeSet};

/// Records of a batch read (and ended) at a time.
const PAGE: usize = 1_000;

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RollbackSummary {
    pub(crate) batch_id: String,
    /// Records of the batch that stopped suppressing now.
    pub(crate) removed: u64,
    /// Records of the batch that had already ended (expired, opted in, rolled back before).
    pub(crate) already_ended: u64,
}

/// One import batch as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImportBatch {
    pub(crate) batch_id: String,
    pub(crate) actor: String,
    pub(crate) started_at: Millis,
    pub(crate) finished_at: Option<Millis>,
    pub(crate) imported: u64,
    pub(crate) duplicates: u64,
    pub(crate) rejected: u64,
    pub(crate) rolled_back_at: Option<Millis>,
    pub(crate) rolled_back_by: Option<String>,
}

impl From<ImportBatchRow> for ImportBatch {
    fn from(r: ImportBatchRow) -> Self {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        ImportBatch {
            batch_id: r.batch_id,
            actor: r.actor,
            started_at: r.started_at,
            finished_at: r.finished_at,
            imported: count(r.imported),
            duplicates: count(r.duplicates),
            rejected: count(r.rejected),
            rolled_back_at: r.rolled_back_at,
            rolled_back_by: r.rolled_back_by,
        }
    }
}

impl Suppressions {
    /// The tenants of the records each batch created (one absent: it created none).
    pub(crate) async fn import_tenants(
        &self,
        batches: &[String],
    ) -> Result<BTreeMap<String, BTreeSet<String>>, ServiceError> {
        Ok(self.inner.store.import_tenants(batches).await?)
    }

    /// Import batches, newest first: the first `limit`, or those older than `after`.
    pub(crate) async fn list_imports(
        &self,
        limit: usize,
        after: Option<&ImportBatch>,
    ) -> Result<Vec<ImportBatch>, ServiceError> {
        let after = after.map(|b| (b.started_at, b.batch_id.as_str()));
        let rows = self.inner.store.list_imports(limit, after).await?;
        Ok(rows.into_iter().map(ImportBatch::from).collect())
    }
}

impl Suppressions {
    /// Rolls back one import batch (see the module doc). NOT_FOUND for an unknown batch;
    /// PERMISSION_DENIED, changing nothing, when the batch holds a record of a tenant `may_use`
    /// refuses (`None`: the actor may use every tenant).
    #[tracing::instrument(name = "rollback_import", skip_all, fields(suppressd.batch_id = batch_id))]
    pub(crate) async fn rollback_import(
        &self,
        batch_id: &str,
        reason: &str,
        actor: &str,
        may_use: Option<&(dyn Fn(&str) -> bool + Sync)>,
    ) -> Result<RollbackSummary, ServiceError> {
        // A person's opt-out still queued must be in the store before fields are refilled from it.
        self.queued_committed().await?;
        let store = self.store();
        let now = self.now();
        match store
            .mark_rolled_back(batch_id, actor, now, may_use)
            .await?
        {
            Marked::Done => {}
            Marked::Unknown => {
                return Err(ServiceError::NotFound(format!(
                    "no import batch {batch_id}"
                )));
            }
            Marked::Refused { tenant } => {
                return Err(ServiceError::Forbidden(format!(
                    "principal {actor:?} may not use tenant {tenant:?}, which import batch \
                     {batch_id} holds records of"
                )));
            }
        }
        let detail = format!("batch {batch_id}: {reason}");
        let (mut removed, mut total) = (0, 0);
        let mut after = String::new();
        loop {
            let page = store.batch_page(batch_id, &after, PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = last.receipt.to_string();
            total += page.len() as u64;
            let now = self.now();
            let active: Vec<ReceiptId> = page
                .iter()
                .filter(|(s, ended)| !ended && s.is_active_at(now))
                .map(|(s, _)| s.receipt)
                .collect();
            let ended = store
                .end_records(
                    &active,
                    Action::Rollback,
                    actor,
                    Some(&detail),
                    now,
                    self.audit_log(),
                )
                .await?;
            removed += ended.len() as u64;
            // Every record of the page is out of force now; retracting all of them also repairs
            // the cache of a run that ended records but could not reach Redis.
            let records: Vec<Suppression> = page.into_iter().map(|(s, _)| s).collect();
            self.retract(&records).await?;
        }
        tracing::info!(
            batch_id,
            removed,
            already_ended = total - removed,
            "import rolled back"
        );
        Ok(RollbackSummary {
            batch_id: batch_id.to_owned(),
            removed,
            already_ended: total - removed,
        })
    }
}
