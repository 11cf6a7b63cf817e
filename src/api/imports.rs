//! Bulk imports and their rollback. Handlers of `suppress.v1.Suppression`, split from `suppression`
//! by topic.

use super::SuppressionApi;
use crate::proto;
use tonic::{Request, Response, Status};

impl SuppressionApi {
    pub(super) async fn import_suppressions_impl(
        &self,
        _request: Request<tonic::Streaming<proto::ImportRow>>,
    ) -> Result<Response<proto::ImportSummary>, Status> {
        Err(Status::unimplemented("not built yet"))
    }

    pub(super) async fn rollback_import_impl(
        &self,
        _request: Request<proto::RollbackImportRequest>,
    ) -> Result<Response<proto::RollbackSummary>, Status> {
        Err(Status::unimplemented("not built yet"))
    }

    pub(super) async fn list_imports_impl(
        &self,
        _request: Request<proto::ListImportsRequest>,
    ) -> Result<Response<proto::ListImportsResponse>, Status> {
        Err(Status::unimplemented("not built yet"))
    }
}
