//! A person's rights: opting back in (with stronger proof than opting out), and seeing every record
//! kept about them. Handlers of `suppress.v1.Suppression`, split from `suppression` by topic.
//!
//! Both accept a person's token in place of an API key: an opt-in token (purpose `opt_in`, minted
//! by an admin, an hour at most) for `OptIn`, the person's own opt-out token for `ListSuppressions`.
//! Without a token, both are admin-only, whatever role the auth layer let through. What a listing
//! shows to a token's holder (what the token covers, no operator's names or text) is the
//! service's rule ([`Viewer`]); this layer only says who is asking.

use super::{
    SuppressionApi, auth,
    convert::{self, ListRequest, OptInRequest},
    status::Refusal,
    suppression::verify_person_token,
};
use crate::{
    auth::{Principal, Purpose, Role, TokenClaims},
    domain::token_actor,
    proto,
    service::{OptInCommand, OptInGrounds, ServiceError, Viewer},
    telemetry::call::CallSpan,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

impl SuppressionApi {
    pub(super) async fn opt_in_impl(
        &self,
        request: Request<proto::OptInRequest>,
    ) -> Result<Response<proto::OptInResponse>, Status> {
        let caller = auth::caller(&request);
        let cmd = match convert::opt_in(request.into_inner()).map_err(ServiceError::from)? {
            OptInRequest::Token(token) => {
                let claims = self.person_token(caller.as_deref(), &token, Purpose::OptIn)?;
                let actor = actor(caller.as_deref(), &claims);
                convert::token_opt_in(claims, actor)
            }
            OptInRequest::Admin {
                recipient,
                scope,
                reason,
            } => {
                let principal = admin(caller, "an opt-in without a token")?;
                auth::authorize_tenants(&principal, [scope.tenant.as_str()])?;
                OptInCommand {
                    subject: self.service.subject(&recipient),
                    scope,
                    actor: principal.name.clone(),
                    grounds: OptInGrounds::Admin { reason },
                }
            }
        };
        let removed = self.service.opt_in(cmd).await?;
        Ok(Response::new(convert::removed_to_proto(&removed)))
    }

    pub(super) async fn issue_opt_in_token_impl(
        &self,
        request: Request<proto::IssueOptInTokenRequest>,
    ) -> Result<Response<proto::IssueOptInTokenResponse>, Status> {
        let principal = super::suppression::principal(&request)?;
        let asked =
            convert::issue_opt_in_token(request.into_inner()).map_err(ServiceError::from)?;
        let (token, expires_at) = self.mint(&principal, asked, Purpose::OptIn)?;
        Ok(Response::new(proto::IssueOptInTokenResponse {
            token,
            expires_at: Some(convert::timestamp(expires_at)),
        }))
    }

    pub(super) async fn list_suppressions_impl(
        &self,
        request: Request<proto::ListSuppressionsRequest>,
    ) -> Result<Response<proto::ListSuppressionsResponse>, Status> {
        let caller = auth::caller(&request);
        // A token shows what it covers and no operator's names or text, even to a caller with a
        // key: the token, not the key, is what the request is about.
        let (subject, viewer) =
            match convert::list_suppressions(request.into_inner()).map_err(ServiceError::from)? {
                ListRequest::Token(token) => {
                    let claims = self.person_token(caller.as_deref(), &token, Purpose::OptOut)?;
                    // Recorded as the call's principal; the listing needs no actor.
                    actor(caller.as_deref(), &claims);
                    (
                        claims.subject,
                        Viewer::Token {
                            scope: claims.scope,
                        },
                    )
                }
                ListRequest::Person { recipient, tenant } => {
                    let principal = admin(caller, "a listing without a token")?;
                    auth::authorize_tenants(&principal, [tenant.as_str()])?;
                    (
                        self.service.subject(&recipient),
                        Viewer::Operator { tenant },
                    )
                }
            };
        let now = self.service.clock().now();
        let records = self.service.history(&subject, &viewer).await?;
        let consents = self.service.consents(&subject, &viewer).await?;
        let mut shown = Vec::with_capacity(records.len());
        for history in records {
            // Where the record's changes went is an operator's concern, not the person's.
            let deliveries = match viewer {
                Viewer::Operator { .. } => {
                    let receipt = history.record.record.receipt.to_string();
                    self.service.deliveries_of(&receipt).await?
                }
                Viewer::Token { .. } => Vec::new(),
            };
            let rules = self.service.deadline_rules();
            let deliveries = deliveries
                .into_iter()
                .map(|d| convert::delivery_with_deadlines(d, &history.record.record, now, rules))
                .collect();
            shown.push(proto::RecordHistory {
                deliveries,
                ..convert::history_to_proto(history, now, rules)
            });
        }
        Ok(Response::new(proto::ListSuppressionsResponse {
            records: shown,
            consents: consents
                .into_iter()
                .map(convert::consent::consent_to_proto)
                .collect(),
        }))
    }

    /// `ForgetPerson`: role admin (the auth layer required it), for the tenant.
    pub(super) async fn forget_person_impl(
        &self,
        request: Request<proto::ForgetPersonRequest>,
    ) -> Result<Response<proto::ForgetPersonResponse>, Status> {
        let principal = super::suppression::principal(&request)?;
        let (recipient, tenant) =
            convert::forget_person(request.into_inner()).map_err(ServiceError::from)?;
        auth::authorize_tenants(&principal, [tenant.as_str()])?;
        let subject = self.service.subject(&recipient);
        let erased = self
            .service
            .forget_person(subject, &tenant, &principal.name)
            .await?;
        Ok(Response::new(convert::forget_person_to_proto(erased)))
    }

    /// `RecordConsent`: role write (the auth layer required it), for the scope's tenant. Whoever
    /// may record a person's opt-out may record their consent; the evidence says how it was given.
    pub(super) async fn record_consent_impl(
        &self,
        request: Request<proto::RecordConsentRequest>,
    ) -> Result<Response<proto::Consent>, Status> {
        let principal = super::suppression::principal(&request)?;
        let new = convert::consent::record(request.into_inner()).map_err(ServiceError::from)?;
        auth::authorize_tenants(&principal, [new.scope.tenant.as_str()])?;
        let consent = self
            .service
            .record_consent(new, principal.name.clone())
            .await?;
        Ok(Response::new(convert::consent::consent_to_proto(consent)))
    }

    /// A person's token of `purpose`, verified by the service's clock; anonymous callers spend the
    /// shared anonymous rate limit.
    fn person_token(
        &self,
        caller: Option<&Principal>,
        token: &str,
        purpose: Purpose,
    ) -> Result<TokenClaims, Refusal> {
        if caller.is_none() {
            self.auth.admit_anonymous(auth::Anonymous::PersonsToken)?;
        }
        let now = self.service.clock().now();
        verify_person_token(&self.keys, token, purpose, now)
    }
}

/// Who is recorded as acting on a token: the caller with a key, else the token's key id. It is
/// also recorded on the call's span as its principal.
fn actor(caller: Option<&Principal>, claims: &TokenClaims) -> String {
    let actor = caller.map_or_else(|| token_actor(&claims.key_id), |p| p.name.clone());
    CallSpan::current().record_str("principal", actor.as_str());
    actor
}

/// The caller, if it is an admin; `what` names the call in the refusal.
fn admin(caller: Option<Arc<Principal>>, what: &str) -> Result<Arc<Principal>, Refusal> {
    let principal = caller.ok_or_else(|| {
        Refusal::unauthenticated(format!(
            "missing credentials: {what} needs an admin's API key"
        ))
    })?;
    CallSpan::current().record_str("principal", principal.name.as_str());
    if !principal.has(Role::Admin) {
        return Err(Refusal::PermissionDenied(format!(
            "principal {:?} is not an admin; {what} needs one (or the person's token)",
            principal.name
        )));
    }
    Ok(principal)
}
