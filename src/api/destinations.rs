//! Webhook destinations (role admin). Handlers of `suppress.v1.Suppression`, split from
//! `suppression` by topic. A key restricted to tenants registers only destinations that name its
//! tenants, and sees and changes only those.

use super::{SuppressionApi, auth, convert::timestamp, status::Refusal, suppression::principal};
use crate::{
    auth::Principal,
    proto,
    service::{
        ServiceError,
        delivery::{DestinationState, DestinationView, NewDestination},
    },
};
use tonic::{Request, Response, Status};

impl SuppressionApi {
    pub(super) async fn register_destination_impl(
        &self,
        request: Request<proto::RegisterDestinationRequest>,
    ) -> Result<Response<proto::Destination>, Status> {
        let principal = principal(&request)?;
        let proto::RegisterDestinationRequest {
            url,
            tenants,
            kinds,
            secret,
            needs_identifier,
        } = request.into_inner();
        let new = NewDestination::parse(url, tenants, kinds, secret, needs_identifier)
            .map_err(ServiceError::from)?;
        if new.wants.tenants.is_empty() && !principal.may_use_every_tenant() {
            return Err(Refusal::PermissionDenied(format!(
                "principal {:?} may use only some tenants: name them in tenants",
                principal.name
            ))
            .into());
        }
        auth::authorize_tenants(&principal, new.wants.tenants.iter().map(String::as_str))?;
        let destination = self
            .service
            .register_destination(new, &principal.name)
            .await?;
        Ok(Response::new(destination_to_proto(destination)))
    }

    pub(super) async fn list_destinations_impl(
        &self,
        request: Request<proto::ListDestinationsRequest>,
    ) -> Result<Response<proto::ListDestinationsResponse>, Status> {
        let principal = principal(&request)?;
        let proto::ListDestinationsRequest {} = request.into_inner();
        let destinations = self.service.list_destinations().await?;
        Ok(Response::new(proto::ListDestinationsResponse {
            destinations: destinations
                .into_iter()
                .filter(|d| may_see(&principal, d))
                .map(destination_to_proto)
                .collect(),
        }))
    }

    pub(super) async fn remove_destination_impl(
        &self,
        request: Request<proto::RemoveDestinationRequest>,
    ) -> Result<Response<proto::Destination>, Status> {
        let principal = principal(&request)?;
        let proto::RemoveDestinationRequest { destination_id } = request.into_inner();
        self.check_destination(&principal, &destination_id).await?;
        let removed = self.service.remove_destination(&destination_id).await?;
        Ok(Response::new(destination_to_proto(removed)))
    }

    pub(super) async fn resume_destination_impl(
        &self,
        request: Request<proto::ResumeDestinationRequest>,
    ) -> Result<Response<proto::Destination>, Status> {
        let principal = principal(&request)?;
        let proto::ResumeDestinationRequest { destination_id } = request.into_inner();
        self.check_destination(&principal, &destination_id).await?;
        let resumed = self.service.resume_destination(&destination_id).await?;
        Ok(Response::new(destination_to_proto(resumed)))
    }

    /// A destination the caller may act on: one it may see, else NOT_FOUND (as if absent).
    async fn check_destination(&self, principal: &Principal, id: &str) -> Result<(), Status> {
        if id.is_empty() {
            return Err(ServiceError::from(crate::domain::Invalid::new(
                "destination_id",
                "is required",
            ))
            .into());
        }
        let known = self.service.list_destinations().await?;
        match known.iter().find(|d| d.id == id) {
            Some(d) if may_see(principal, d) => Ok(()),
            _ => Err(ServiceError::NotFound(format!("no destination {id:?}")).into()),
        }
    }
}

/// A key restricted to tenants sees the destinations that name only tenants of its own.
fn may_see(principal: &Principal, d: &DestinationView) -> bool {
    principal.may_use_every_tenant()
        || (!d.wants.tenants.is_empty()
            && d.wants.tenants.iter().all(|t| principal.may_use_tenant(t)))
}

fn destination_to_proto(d: DestinationView) -> proto::Destination {
    let DestinationView {
        id,
        url,
        wants,
        secret,
        created_by,
        created_at,
        delivered_seq,
        state,
        failures,
        last_error,
        parked_at,
        needs_identifier,
    } = d;
    proto::Destination {
        destination_id: id,
        url,
        tenants: wants.tenants.into_iter().collect(),
        kinds: wants.kinds.into_iter().collect(),
        secret: secret.unwrap_or_default(),
        created_by,
        created_at: Some(timestamp(created_at)),
        delivered_seq,
        state: match state {
            DestinationState::Active => proto::DestinationState::Active,
            DestinationState::Parked => proto::DestinationState::Parked,
        } as i32,
        failures,
        last_error,
        parked_at: parked_at.map(timestamp),
        needs_identifier,
    }
}
