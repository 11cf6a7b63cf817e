//! Proto messages of imports and rollbacks to service values and back. A row that does not parse is
//! not an error of the call: it becomes the row's rejection, with the problem named by field.

use super::{millis, opt_out_scope, reason, recipient, source, timestamp};
use crate::{
    domain::{Invalid, Source},
    proto,
    service::{
        import::{ImportItem, ImportSummary, Rejection},
        rollback::{ImportBatch, RollbackSummary},
    },
};

/// Batches a `ListImports` returns when it names no limit, and the most it may ask for.
const DEFAULT_LIST: usize = 50;
const MAX_LIST: usize = 1_000;

/// One row: its line (the sender's, or its place in the stream when the sender gave none) and the
/// parsed item or its problem. `may_use_tenant` is the caller's tenant authorization.
pub(crate) fn import_row(
    row: proto::ImportRow,
    ordinal: u64,
    may_use_tenant: impl Fn(&str) -> bool,
) -> (u64, Result<ImportItem, Invalid>) {
    let proto::ImportRow {
        line,
        recipient: r,
        scope,
        reason: reason_code,
        source: source_code,
        received_at,
        expires_at,
    } = row;
    let line = if line == 0 { ordinal } else { line };
    let item = (|| {
        let scope = opt_out_scope(scope)?;
        if !may_use_tenant(&scope.tenant) {
            return Err(Invalid::new(
                "scope.tenant",
                format!("the caller may not use tenant {:?}", scope.tenant),
            ));
        }
        ImportItem::new(
            recipient(r)?,
            scope,
            reason(reason_code)?,
            match source_code {
                0 => Source::Import,
                code => source(code)?,
            },
            received_at.map(|t| millis("received_at", t)).transpose()?,
            expires_at.map(|t| millis("expires_at", t)).transpose()?,
        )
    })();
    (line, item)
}

pub(crate) fn summary_to_proto(s: ImportSummary) -> proto::ImportSummary {
    let ImportSummary {
        batch_id,
        imported,
        duplicates,
        rejected,
        rejections,
    } = s;
    proto::ImportSummary {
        batch_id,
        imported,
        duplicates,
        rejected,
        rejections: rejections
            .into_iter()
            .map(|Rejection { line, problem }| proto::ImportRejection { line, problem })
            .collect(),
    }
}

/// The batch and the written reason of a rollback; both required.
pub(crate) fn rollback(req: proto::RollbackImportRequest) -> Result<(String, String), Invalid> {
    let proto::RollbackImportRequest { batch_id, reason } = req;
    let batch_id = batch_id.trim();
    if uuid::Uuid::try_parse(batch_id).is_err() {
        return Err(Invalid::new(
            "batch_id",
            "must be a batch id as returned by ImportSuppressions",
        ));
    }
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Invalid::new(
            "reason",
            "is required: say why the import is rolled back",
        ));
    }
    if reason.len() > 1_000 {
        return Err(Invalid::new("reason", "must be at most 1000 bytes"));
    }
    Ok((batch_id.to_owned(), reason.to_owned()))
}

pub(crate) fn rollback_to_proto(s: RollbackSummary) -> proto::RollbackSummary {
    let RollbackSummary {
        batch_id,
        removed,
        already_ended,
    } = s;
    proto::RollbackSummary {
        batch_id,
        removed,
        already_ended,
    }
}

pub(crate) fn list_limit(req: proto::ListImportsRequest) -> Result<usize, Invalid> {
    let proto::ListImportsRequest { limit } = req;
    match limit as usize {
        0 => Ok(DEFAULT_LIST),
        n if n <= MAX_LIST => Ok(n),
        _ => Err(Invalid::new("limit", format!("must be at most {MAX_LIST}"))),
    }
}

pub(crate) fn batch_to_proto(b: ImportBatch) -> proto::ImportBatch {
    let ImportBatch {
        batch_id,
        actor,
        started_at,
        finished_at,
        imported,
        duplicates,
        rejected,
        rolled_back_at,
        rolled_back_by,
    } = b;
    proto::ImportBatch {
        batch_id,
        imported_by: actor,
        started_at: Some(timestamp(started_at)),
        finished_at: finished_at.map(timestamp),
        imported,
        duplicates,
        rejected,
        rolled_back_at: rolled_back_at.map(timestamp),
        rolled_back_by: rolled_back_by.unwrap_or_default(),
    }
}
