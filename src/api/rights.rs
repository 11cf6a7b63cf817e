//! A person's rights: opting back in (with stronger proof than opting out), and seeing every record
//! kept about them. Handlers of `suppress.v1.Suppression`, split from `suppression` by topic.

use super::SuppressionApi;
use crate::proto;
use tonic::{Request, Response, Status};

impl SuppressionApi {
    pub(super) async fn opt_in_impl(
        &self,
        _request: Request<proto::OptInRequest>,
    ) -> Result<Response<proto::OptInResponse>, Status> {
        Err(Status::unimplemented("not built yet"))
    }

    pub(super) async fn issue_opt_in_token_impl(
        &self,
        _request: Request<proto::IssueOptInTokenRequest>,
    ) -> Result<Response<proto::IssueOptInTokenResponse>, Status> {
        Err(Status::unimplemented("not built yet"))
    }

    pub(super) async fn list_suppressions_impl(
        &self,
        _request: Request<proto::ListSuppressionsRequest>,
    ) -> Result<Response<proto::ListSuppressionsResponse>, Status> {
        Err(Status::unimplemented("not built yet"))
    }
}
