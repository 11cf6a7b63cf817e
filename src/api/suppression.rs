//! The `suppress.v1.Suppression` service: each handler validates and converts, checks the tenants
//! the request names against its caller, calls the use case, converts back. No Redis, SQL or retry
//! logic lives here; who the caller is was settled by [`super::auth`] before the message was decoded.

use super::{
    auth::{self, Authenticator},
    convert,
    status::Refusal,
};
use crate::{
    auth::{KeyStore, Principal, Purpose, TokenClaims},
    domain::{Millis, Recipient, Scope, token_actor},
    proto,
    service::{ReceiptState, ServiceError, Suppressions, audit},
    telemetry::call::CallSpan,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub(crate) struct SuppressionApi {
    pub(super) service: Suppressions,
    pub(super) keys: KeyStore,
    pub(super) auth: Authenticator,
}

impl SuppressionApi {
    pub(crate) fn new(service: Suppressions, keys: KeyStore, auth: Authenticator) -> Self {
        Self {
            service,
            keys,
            auth,
        }
    }

    /// Verifies an opt-out token by the service's clock. Every failure is the same
    /// UNAUTHENTICATED to the caller; the reason goes to the log.
    fn verify_token(&self, token: &str) -> Result<TokenClaims, Refusal> {
        let now = self.service.clock().now();
        verify_person_token(&self.keys, token, Purpose::OptOut, now)
    }
}

impl SuppressionApi {
    /// A person's token of `purpose` for (recipient, scope, lifetime), if the caller may use the
    /// scope's tenant: what both token-issuing RPCs do. Returns the token and its expiry.
    pub(super) fn mint(
        &self,
        principal: &Principal,
        (recipient, scope, ttl): (Recipient, Scope, Millis),
        purpose: Purpose,
    ) -> Result<(String, Millis), Status> {
        auth::authorize_tenants(principal, [scope.tenant.as_str()])?;
        let expires_at = self.service.clock().now() + ttl;
        let subject = self.service.subject(&recipient);
        let token = self
            .keys
            .current()
            .tokens
            .issue(subject, &scope, purpose, expires_at)
            .map_err(|e| Refusal::NotConfigured(e.to_string()))?;
        Ok((token, expires_at))
    }
}

/// A person's token of `purpose`, verified at `now`. Every failure is the same UNAUTHENTICATED to
/// the caller; the reason goes to the log.
pub(super) fn verify_person_token(
    keys: &KeyStore,
    token: &str,
    purpose: Purpose,
    now: crate::domain::Millis,
) -> Result<TokenClaims, Refusal> {
    keys.verify_person_token(token, purpose, now).map_err(|_| {
        Refusal::unauthenticated(format!(
            "invalid or expired {} token",
            purpose.as_str().replace('_', "-")
        ))
    })
}

/// The caller the auth layer admitted; its absence here is a wiring fault, refused all the same.
pub(super) fn principal<T>(request: &Request<T>) -> Result<Arc<Principal>, Refusal> {
    let principal =
        auth::caller(request).ok_or_else(|| Refusal::unauthenticated("missing credentials"))?;
    // The current span is the RPC's server span (`observe`), which declares the field.
    CallSpan::current().record_str("principal", principal.name.as_str());
    Ok(principal)
}

#[tonic::async_trait]
impl proto::suppression_server::Suppression for SuppressionApi {
    async fn check_suppressed(
        &self,
        request: Request<proto::CheckSuppressedRequest>,
    ) -> Result<Response<proto::CheckSuppressedResponse>, Status> {
        let principal = principal(&request)?;
        let check = convert::check(request.into_inner()).map_err(ServiceError::from)?;
        auth::authorize_tenants(&principal, [check.notice.tenant.as_str()])?;
        let mut answers = self.service.check(std::slice::from_ref(&check)).await?;
        let answer = answers
            .pop()
            .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("the check got no answer")))?;
        Ok(Response::new(convert::answer_to_proto(answer)))
    }

    async fn check_suppressed_batch(
        &self,
        request: Request<proto::CheckSuppressedBatchRequest>,
    ) -> Result<Response<proto::CheckSuppressedBatchResponse>, Status> {
        let principal = principal(&request)?;
        let checks = convert::checks(request.into_inner()).map_err(ServiceError::from)?;
        auth::authorize_tenants(&principal, checks.iter().map(|c| c.notice.tenant.as_str()))?;
        let answers = self.service.check(&checks).await?;
        Ok(Response::new(proto::CheckSuppressedBatchResponse {
            results: answers.into_iter().map(convert::answer_to_proto).collect(),
        }))
    }

    async fn opt_out(
        &self,
        request: Request<proto::OptOutRequest>,
    ) -> Result<Response<proto::OptOutResponse>, Status> {
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let cmd = match caller {
            // With a token, the token is the authority over subject and scope; a caller with a key
            // is recorded as the actor, else the token's key id is.
            _ if !req.token.is_empty() => {
                if caller.is_none() {
                    self.auth.admit_anonymous(auth::Anonymous::PersonsToken)?;
                }
                let claims = self.verify_token(&req.token)?;
                let actor = caller.map_or_else(|| token_actor(&claims.key_id), |p| p.name.clone());
                CallSpan::current().record_str("principal", actor.as_str());
                convert::token_opt_out(req, claims, actor).map_err(ServiceError::from)?
            }
            Some(principal) => {
                // The current span is the RPC's server span (`observe`), which declares the field.
                CallSpan::current().record_str("principal", principal.name.as_str());
                let cmd =
                    convert::opt_out(req, principal.name.clone()).map_err(ServiceError::from)?;
                auth::authorize_tenants(&principal, [cmd.scope.tenant.as_str()])?;
                cmd
            }
            None => {
                return Err(Refusal::unauthenticated(
                    "missing credentials: send 'authorization: Bearer <key>', or an opt-out token",
                )
                .into());
            }
        };
        let receipt = self.service.opt_out(cmd).await?;
        Ok(Response::new(proto::OptOutResponse {
            receipt: Some(convert::receipt_to_proto(receipt)),
        }))
    }

    async fn get_receipt(
        &self,
        request: Request<proto::GetReceiptRequest>,
    ) -> Result<Response<proto::Receipt>, Status> {
        // The request names no tenant: the receipt's own tenant must be one the caller may use.
        let caller = principal(&request)?;
        let id = convert::receipt_id(request.into_inner()).map_err(ServiceError::from)?;
        let receipt = self
            .service
            .receipt_for(id, |tenant| caller.may_use_tenant(tenant))
            .await?;
        let (confirmations, deliveries) = match receipt.state {
            ReceiptState::Durable => (
                self.service.confirmations(id).await?,
                self.service.deliveries_of(&id.to_string()).await?,
            ),
            ReceiptState::Accepted => (Vec::new(), Vec::new()),
        };
        Ok(Response::new(proto::Receipt {
            confirmations: confirmations
                .into_iter()
                .map(convert::confirmation_to_proto)
                .collect(),
            deliveries: deliveries
                .into_iter()
                .map(convert::delivery_to_proto)
                .collect(),
            ..convert::receipt_to_proto(receipt)
        }))
    }

    async fn record_confirmation(
        &self,
        request: Request<proto::RecordConfirmationRequest>,
    ) -> Result<Response<proto::Confirmation>, Status> {
        // Like GetReceipt: the receipt's own tenant must be one the caller may use.
        let caller = principal(&request)?;
        let now = self.service.clock().now();
        let confirmation = convert::confirmation(request.into_inner(), &caller.name, now)
            .map_err(ServiceError::from)?;
        let recorded = self
            .service
            .record_confirmation(confirmation, |tenant| caller.may_use_tenant(tenant))
            .await?;
        Ok(Response::new(convert::confirmation_to_proto(recorded)))
    }

    async fn get_checkpoint(
        &self,
        request: Request<proto::GetCheckpointRequest>,
    ) -> Result<Response<proto::SignedCheckpoint>, Status> {
        let proto::GetCheckpointRequest {} = request.into_inner();
        let checkpoint = audit::latest_checkpoint(self.service.store())
            .await?
            .ok_or_else(|| ServiceError::NotFound("the audit log is empty".into()))?;
        Ok(Response::new(convert::checkpoint_to_proto(checkpoint)))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<proto::GetConsistencyProofRequest>,
    ) -> Result<Response<proto::ConsistencyProof>, Status> {
        let proto::GetConsistencyProofRequest { old_size, new_size } = request.into_inner();
        let proof = audit::consistency_proof(self.service.store(), old_size, new_size).await?;
        Ok(Response::new(convert::consistency_to_proto(proof)))
    }

    async fn issue_opt_out_token(
        &self,
        request: Request<proto::IssueOptOutTokenRequest>,
    ) -> Result<Response<proto::IssueOptOutTokenResponse>, Status> {
        let principal = principal(&request)?;
        let asked = convert::issue_token(request.into_inner()).map_err(ServiceError::from)?;
        let (token, expires_at) = self.mint(&principal, asked, Purpose::OptOut)?;
        Ok(Response::new(proto::IssueOptOutTokenResponse {
            token,
            expires_at: Some(convert::timestamp(expires_at)),
        }))
    }

    // Topic by topic, in their own files: `rights`, `controls`, `imports`.
    async fn opt_in(
        &self,
        request: Request<proto::OptInRequest>,
    ) -> Result<Response<proto::OptInResponse>, Status> {
        self.opt_in_impl(request).await
    }

    async fn issue_opt_in_token(
        &self,
        request: Request<proto::IssueOptInTokenRequest>,
    ) -> Result<Response<proto::IssueOptInTokenResponse>, Status> {
        self.issue_opt_in_token_impl(request).await
    }

    async fn list_suppressions(
        &self,
        request: Request<proto::ListSuppressionsRequest>,
    ) -> Result<Response<proto::ListSuppressionsResponse>, Status> {
        self.list_suppressions_impl(request).await
    }

    async fn forget_person(
        &self,
        request: Request<proto::ForgetPersonRequest>,
    ) -> Result<Response<proto::ForgetPersonResponse>, Status> {
        self.forget_person_impl(request).await
    }

    async fn halt_campaign(
        &self,
        request: Request<proto::HaltCampaignRequest>,
    ) -> Result<Response<proto::Halt>, Status> {
        self.halt_campaign_impl(request).await
    }

    async fn resume_campaign(
        &self,
        request: Request<proto::ResumeCampaignRequest>,
    ) -> Result<Response<proto::Halt>, Status> {
        self.resume_campaign_impl(request).await
    }

    async fn declare_mandatory(
        &self,
        request: Request<proto::DeclareMandatoryRequest>,
    ) -> Result<Response<proto::MandatoryDeclaration>, Status> {
        self.declare_mandatory_impl(request).await
    }

    async fn revoke_mandatory(
        &self,
        request: Request<proto::RevokeMandatoryRequest>,
    ) -> Result<Response<proto::MandatoryDeclaration>, Status> {
        self.revoke_mandatory_impl(request).await
    }

    async fn set_send_window(
        &self,
        request: Request<proto::SetSendWindowRequest>,
    ) -> Result<Response<proto::SendWindow>, Status> {
        self.set_send_window_impl(request).await
    }

    async fn remove_send_window(
        &self,
        request: Request<proto::RemoveSendWindowRequest>,
    ) -> Result<Response<proto::SendWindow>, Status> {
        self.remove_send_window_impl(request).await
    }

    async fn require_consent(
        &self,
        request: Request<proto::RequireConsentRequest>,
    ) -> Result<Response<proto::ConsentRequirement>, Status> {
        self.require_consent_impl(request).await
    }

    async fn drop_consent_requirement(
        &self,
        request: Request<proto::DropConsentRequirementRequest>,
    ) -> Result<Response<proto::ConsentRequirement>, Status> {
        self.drop_consent_requirement_impl(request).await
    }

    async fn record_consent(
        &self,
        request: Request<proto::RecordConsentRequest>,
    ) -> Result<Response<proto::Consent>, Status> {
        self.record_consent_impl(request).await
    }

    async fn set_halt_trigger(
        &self,
        request: Request<proto::SetHaltTriggerRequest>,
    ) -> Result<Response<proto::HaltTrigger>, Status> {
        self.set_halt_trigger_impl(request).await
    }

    async fn remove_halt_trigger(
        &self,
        request: Request<proto::RemoveHaltTriggerRequest>,
    ) -> Result<Response<proto::HaltTrigger>, Status> {
        self.remove_halt_trigger_impl(request).await
    }

    async fn list_halt_triggers(
        &self,
        request: Request<proto::ListHaltTriggersRequest>,
    ) -> Result<Response<proto::ListHaltTriggersResponse>, Status> {
        self.list_halt_triggers_impl(request).await
    }

    async fn list_controls(
        &self,
        request: Request<proto::ListControlsRequest>,
    ) -> Result<Response<proto::ListControlsResponse>, Status> {
        self.list_controls_impl(request).await
    }

    async fn import_suppressions(
        &self,
        request: Request<tonic::Streaming<proto::ImportRow>>,
    ) -> Result<Response<proto::ImportSummary>, Status> {
        self.import_suppressions_impl(request).await
    }

    async fn rollback_import(
        &self,
        request: Request<proto::RollbackImportRequest>,
    ) -> Result<Response<proto::RollbackSummary>, Status> {
        self.rollback_import_impl(request).await
    }

    async fn list_imports(
        &self,
        request: Request<proto::ListImportsRequest>,
    ) -> Result<Response<proto::ListImportsResponse>, Status> {
        self.list_imports_impl(request).await
    }

    async fn register_destination(
        &self,
        request: Request<proto::RegisterDestinationRequest>,
    ) -> Result<Response<proto::Destination>, Status> {
        self.register_destination_impl(request).await
    }

    async fn list_destinations(
        &self,
        request: Request<proto::ListDestinationsRequest>,
    ) -> Result<Response<proto::ListDestinationsResponse>, Status> {
        self.list_destinations_impl(request).await
    }

    async fn remove_destination(
        &self,
        request: Request<proto::RemoveDestinationRequest>,
    ) -> Result<Response<proto::Destination>, Status> {
        self.remove_destination_impl(request).await
    }

    async fn resume_destination(
        &self,
        request: Request<proto::ResumeDestinationRequest>,
    ) -> Result<Response<proto::Destination>, Status> {
        self.resume_destination_impl(request).await
    }

    type WatchChangesStream = super::watch::ChangeStream;

    async fn watch_changes(
        &self,
        request: Request<proto::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        self.watch_changes_impl(request).await
    }
}
