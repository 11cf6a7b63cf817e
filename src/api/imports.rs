//! Bulk imports and their rollback. Handlers of `suppress.v1.Suppression`, split from `suppression`
//! by topic; the role (`admin`) was checked by the auth layer, tenants are checked here: a row of a
//! tenant the caller may not use is rejected (not the whole import), and an admin whose key names
//! tenants lists and rolls back only batches whose records all belong to them (and its own).

use super::{SuppressionApi, convert::imports as convert, suppression::principal};
use crate::{proto, service::ServiceError};
use tonic::{Request, Response, Status};

impl SuppressionApi {
    pub(super) async fn import_suppressions_impl(
        &self,
        request: Request<tonic::Streaming<proto::ImportRow>>,
    ) -> Result<Response<proto::ImportSummary>, Status> {
        let principal = principal(&request)?;
        let mut import = self.service.begin_import(principal.name.clone()).await?;
        let mut rows = drain(request.into_inner());
        let mut ordinal = 0;
        while let Some(row) = rows.recv().await {
            let row = row.map_err(|status| {
                let stopped = import.stopped();
                tracing::warn!(batch_id = import.batch_id(), error = %status, "import stream failed");
                // Keep the details (reason, retry) of the status that stopped the stream.
                Status::with_details(
                    status.code(),
                    format!("{}; {stopped}", status.message()),
                    status.details().to_vec().into(),
                )
            })?;
            ordinal += 1;
            let (line, item) = convert::import_row(row, ordinal, |t| principal.may_use_tenant(t));
            import.add(line, item).await?;
        }
        let summary = import.finish().await?;
        Ok(Response::new(convert::summary_to_proto(summary)))
    }

    pub(super) async fn rollback_import_impl(
        &self,
        request: Request<proto::RollbackImportRequest>,
    ) -> Result<Response<proto::RollbackSummary>, Status> {
        let principal = principal(&request)?;
        let (batch_id, reason) =
            convert::rollback(request.into_inner()).map_err(ServiceError::from)?;
        // The batch's tenants are checked in the same transaction that marks it, after which no
        // record can land in it: a chunk committed between a check and the mark cannot slip by.
        let may_use = |tenant: &str| principal.may_use_tenant(tenant);
        let restricted = !principal.may_use_every_tenant();
        let summary = self
            .service
            .rollback_import(
                &batch_id,
                &reason,
                &principal.name,
                restricted.then_some(&may_use as &(dyn Fn(&str) -> bool + Sync)),
            )
            .await?;
        Ok(Response::new(convert::rollback_to_proto(summary)))
    }

    pub(super) async fn list_imports_impl(
        &self,
        request: Request<proto::ListImportsRequest>,
    ) -> Result<Response<proto::ListImportsResponse>, Status> {
        let principal = principal(&request)?;
        let limit = convert::list_limit(request.into_inner()).map_err(ServiceError::from)?;
        // A tenant-restricted admin sees its own batches and those of its tenants only: pages are
        // read until `limit` of those are found, so batches it may not see do not crowd them out.
        let mut batches = Vec::with_capacity(limit);
        let mut after = None;
        loop {
            let mut page = self.service.list_imports(limit, after.as_ref()).await?;
            let last_page = page.len() < limit;
            after = page.last().cloned();
            if !principal.may_use_every_tenant() {
                let ids: Vec<String> = page.iter().map(|b| b.batch_id.clone()).collect();
                let tenants = self.service.import_tenants(&ids).await?;
                page.retain(|b| {
                    b.actor == principal.name
                        || tenants
                            .get(&b.batch_id)
                            .is_some_and(|ts| ts.iter().all(|t| principal.may_use_tenant(t)))
                });
            }
            batches.extend(page);
            if last_page || batches.len() >= limit {
                break;
            }
        }
        batches.truncate(limit);
        Ok(Response::new(proto::ListImportsResponse {
            batches: batches.into_iter().map(convert::batch_to_proto).collect(),
        }))
    }
}

/// Rows read ahead of the import: a chunk holds the handler while it commits, and meanwhile the rows
/// keep being read, so h2 does not hold thousands of small DATA frames (which it counts against its
/// flood budget, see [`super::STREAM_WINDOW`]). Bounded: once it is full, reading stops and the
/// HTTP/2 window pushes back on the sender.
const READ_AHEAD: usize = 2 * crate::service::import::CHUNK;

/// Reads `rows` into a queue of [`READ_AHEAD`] rows from a task of its own, which ends with the
/// stream (after passing on its error, if any) or when the handler drops the queue.
fn drain(
    mut rows: tonic::Streaming<proto::ImportRow>,
) -> tokio::sync::mpsc::Receiver<Result<proto::ImportRow, Status>> {
    use tracing::Instrument;
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::spawn(
        async move {
            loop {
                let row = match rows.message().await {
                    Ok(Some(row)) => Ok(row),
                    Ok(None) => break,
                    Err(status) => Err(status),
                };
                let last = row.is_err();
                if tx.send(row).await.is_err() || last {
                    break;
                }
            }
        }
        .in_current_span(),
    );
    rx
}
