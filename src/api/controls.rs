//! The operator's levers that act on checks: campaign halts, mandatory declarations, send
//! windows, consent requirements and halt triggers. Handlers of
//! `suppress.v1.Suppression`, split from `suppression` by topic. The auth layer has already required
//! the `admin` role; each handler checks the tenant the control is for against the caller.

use super::{
    SuppressionApi, auth,
    convert::{consent, controls as convert},
    suppression::principal,
};
use crate::{domain::ReceiptId, proto, service::ServiceError};
use tonic::{Request, Response, Status};

impl SuppressionApi {
    pub(super) async fn halt_campaign_impl(
        &self,
        request: Request<proto::HaltCampaignRequest>,
    ) -> Result<Response<proto::Halt>, Status> {
        let principal = principal(&request)?;
        let new = convert::halt(request.into_inner()).map_err(ServiceError::from)?;
        auth::authorize_tenants(&principal, [new.tenant.as_str()])?;
        let halt = self.service.halt(new, principal.name.clone()).await?;
        Ok(Response::new(convert::changed_halt_to_proto(halt)))
    }

    pub(super) async fn resume_campaign_impl(
        &self,
        request: Request<proto::ResumeCampaignRequest>,
    ) -> Result<Response<proto::Halt>, Status> {
        let principal = principal(&request)?;
        let (id, reason) = convert::resume(request.into_inner()).map_err(ServiceError::from)?;
        self.authorize_control(&principal, id).await?;
        let halt = self
            .service
            .resume(id, &reason, principal.name.clone())
            .await?;
        Ok(Response::new(convert::changed_halt_to_proto(halt)))
    }

    pub(super) async fn declare_mandatory_impl(
        &self,
        request: Request<proto::DeclareMandatoryRequest>,
    ) -> Result<Response<proto::MandatoryDeclaration>, Status> {
        let principal = principal(&request)?;
        let new = convert::declare(request.into_inner()).map_err(ServiceError::from)?;
        auth::authorize_tenants(&principal, [new.tenant.as_str()])?;
        let declaration = self
            .service
            .declare_mandatory(new, principal.name.clone())
            .await?;
        Ok(Response::new(convert::changed_declaration_to_proto(
            declaration,
        )))
    }

    pub(super) async fn revoke_mandatory_impl(
        &self,
        request: Request<proto::RevokeMandatoryRequest>,
    ) -> Result<Response<proto::MandatoryDeclaration>, Status> {
        let principal = principal(&request)?;
        let (id, reason) = convert::revoke(request.into_inner()).map_err(ServiceError::from)?;
        self.authorize_control(&principal, id).await?;
        let declaration = self
            .service
            .revoke_mandatory(id, &reason, principal.name.clone())
            .await?;
        Ok(Response::new(convert::changed_declaration_to_proto(
            declaration,
        )))
    }

    pub(super) async fn set_send_window_impl(
        &self,
        request: Request<proto::SetSendWindowRequest>,
    ) -> Result<Response<proto::SendWindow>, Status> {
        let principal = principal(&request)?;
        let new = convert::window(request.into_inner()).map_err(ServiceError::from)?;
        auth::authorize_tenants(&principal, [new.tenant.as_str()])?;
        let window = self
            .service
            .set_send_window(new, principal.name.clone())
            .await?;
        Ok(Response::new(convert::changed_window_to_proto(window)))
    }

    pub(super) async fn remove_send_window_impl(
        &self,
        request: Request<proto::RemoveSendWindowRequest>,
    ) -> Result<Response<proto::SendWindow>, Status> {
        let principal = principal(&request)?;
        let (id, reason) =
            convert::remove_window(request.into_inner()).map_err(ServiceError::from)?;
        self.authorize_control(&principal, id).await?;
        let window = self
            .service
            .remove_send_window(id, &reason, principal.name.clone())
            .await?;
        Ok(Response::new(convert::changed_window_to_proto(window)))
    }

    pub(super) async fn require_consent_impl(
        &self,
        request: Request<proto::RequireConsentRequest>,
    ) -> Result<Response<proto::ConsentRequirement>, Status> {
        let principal = principal(&request)?;
        let new = consent::require(request.into_inner()).map_err(ServiceError::from)?;
        auth::authorize_tenants(&principal, [new.tenant.as_str()])?;
        let requirement = self
            .service
            .require_consent(new, principal.name.clone())
            .await?;
        Ok(Response::new(consent::changed_requirement_to_proto(
            requirement,
        )))
    }

    pub(super) async fn drop_consent_requirement_impl(
        &self,
        request: Request<proto::DropConsentRequirementRequest>,
    ) -> Result<Response<proto::ConsentRequirement>, Status> {
        let principal = principal(&request)?;
        let (id, reason) =
            consent::drop_requirement(request.into_inner()).map_err(ServiceError::from)?;
        self.authorize_control(&principal, id).await?;
        let requirement = self
            .service
            .drop_consent_requirement(id, &reason, principal.name.clone())
            .await?;
        Ok(Response::new(consent::changed_requirement_to_proto(
            requirement,
        )))
    }

    pub(super) async fn set_halt_trigger_impl(
        &self,
        request: Request<proto::SetHaltTriggerRequest>,
    ) -> Result<Response<proto::HaltTrigger>, Status> {
        let principal = principal(&request)?;
        let new = convert::trigger(request.into_inner());
        auth::authorize_tenants(&principal, [new.tenant.as_str()])?;
        let trigger = self
            .service
            .set_halt_trigger(new, principal.name.clone())
            .await?;
        Ok(Response::new(convert::changed_trigger_to_proto(trigger)))
    }

    pub(super) async fn remove_halt_trigger_impl(
        &self,
        request: Request<proto::RemoveHaltTriggerRequest>,
    ) -> Result<Response<proto::HaltTrigger>, Status> {
        let principal = principal(&request)?;
        let (id, reason) =
            convert::remove_trigger(request.into_inner()).map_err(ServiceError::from)?;
        self.authorize_control(&principal, id).await?;
        let trigger = self
            .service
            .remove_halt_trigger(id, &reason, principal.name.clone())
            .await?;
        Ok(Response::new(convert::changed_trigger_to_proto(trigger)))
    }

    pub(super) async fn list_halt_triggers_impl(
        &self,
        request: Request<proto::ListHaltTriggersRequest>,
    ) -> Result<Response<proto::ListHaltTriggersResponse>, Status> {
        let principal = principal(&request)?;
        let (tenant, include_ended) =
            convert::list_triggers(request.into_inner()).map_err(ServiceError::from)?;
        auth::authorize_tenants(&principal, [tenant.as_str()])?;
        let list = self
            .service
            .list_controls(Some(&tenant), include_ended)
            .await?;
        Ok(Response::new(proto::ListHaltTriggersResponse {
            triggers: list
                .triggers
                .into_iter()
                .map(convert::trigger_to_proto)
                .collect(),
        }))
    }

    pub(super) async fn list_controls_impl(
        &self,
        request: Request<proto::ListControlsRequest>,
    ) -> Result<Response<proto::ListControlsResponse>, Status> {
        let principal = principal(&request)?;
        let (tenant, include_ended) = convert::list(request.into_inner());
        auth::authorize_tenants(&principal, [tenant.as_str()])?;
        let list = self
            .service
            .list_controls(Some(&tenant), include_ended)
            .await?;
        Ok(Response::new(convert::list_to_proto(list)))
    }

    /// Ending a control is for callers of its tenant. An unknown id passes: the use case answers
    /// NOT_FOUND.
    async fn authorize_control(
        &self,
        principal: &crate::auth::Principal,
        id: ReceiptId,
    ) -> Result<(), Status> {
        let Some(control) = self.service.control(id).await? else {
            return Ok(());
        };
        auth::authorize_tenants(principal, [control.tenant()])?;
        Ok(())
    }
}
