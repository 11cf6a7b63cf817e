//! The operator's levers that act on checks: campaign halts and mandatory declarations. Handlers of
//! `suppress.v1.Suppression`, split from `suppression` by topic.

use super::SuppressionApi;
use crate::proto;
use tonic::{Request, Response, Status};

impl SuppressionApi {
    pub(super) async fn halt_campaign_impl(
        &self,
        _request: Request<proto::HaltCampaignRequest>,
    ) -> Result<Response<proto::Halt>, Status> {
        Err(Status::unimplemented("not built yet"))
    }

    pub(super) async fn resume_campaign_impl(
        &self,
        _request: Request<proto::ResumeCampaignRequest>,
    ) -> Result<Response<proto::Halt>, Status> {
        Err(Status::unimplemented("not built yet"))
    }

    pub(super) async fn declare_mandatory_impl(
        &self,
        _request: Request<proto::DeclareMandatoryRequest>,
    ) -> Result<Response<proto::MandatoryDeclaration>, Status> {
        Err(Status::unimplemented("not built yet"))
    }

    pub(super) async fn revoke_mandatory_impl(
        &self,
        _request: Request<proto::RevokeMandatoryRequest>,
    ) -> Result<Response<proto::MandatoryDeclaration>, Status> {
        Err(Status::unimplemented("not built yet"))
    }

    pub(super) async fn list_controls_impl(
        &self,
        _request: Request<proto::ListControlsRequest>,
    ) -> Result<Response<proto::ListControlsResponse>, Status> {
        Err(Status::unimplemented("not built yet"))
    }
}
