//! The `suppress.v1.Suppression` service: each handler validates and converts, calls the use case,
//! converts back. No Redis, SQL or retry logic lives here.

use super::convert;
use crate::{
    proto,
    service::{ServiceError, Suppressions, audit},
};
use tonic::{Request, Response, Status};

/// The actor recorded on opt-outs until callers authenticate.
pub const ANONYMOUS: &str = "anonymous";

pub struct SuppressionApi {
    service: Suppressions,
}

impl SuppressionApi {
    pub fn new(service: Suppressions) -> Self {
        Self { service }
    }
}

#[tonic::async_trait]
impl proto::suppression_server::Suppression for SuppressionApi {
    async fn check_suppressed(
        &self,
        request: Request<proto::CheckSuppressedRequest>,
    ) -> Result<Response<proto::CheckSuppressedResponse>, Status> {
        let check = convert::check(request.into_inner()).map_err(ServiceError::from)?;
        let mut answers = self.service.check(std::slice::from_ref(&check)).await?;
        let answer = answers.pop().flatten();
        Ok(Response::new(convert::answer_to_proto(answer)))
    }

    async fn check_suppressed_batch(
        &self,
        request: Request<proto::CheckSuppressedBatchRequest>,
    ) -> Result<Response<proto::CheckSuppressedBatchResponse>, Status> {
        let checks = convert::checks(request.into_inner()).map_err(ServiceError::from)?;
        let answers = self.service.check(&checks).await?;
        Ok(Response::new(proto::CheckSuppressedBatchResponse {
            results: answers.into_iter().map(convert::answer_to_proto).collect(),
        }))
    }

    async fn opt_out(
        &self,
        request: Request<proto::OptOutRequest>,
    ) -> Result<Response<proto::OptOutResponse>, Status> {
        let cmd = convert::opt_out(request.into_inner(), ANONYMOUS.to_owned())
            .map_err(ServiceError::from)?;
        let receipt = self.service.opt_out(cmd).await?;
        Ok(Response::new(proto::OptOutResponse {
            receipt: Some(convert::receipt_to_proto(receipt)),
        }))
    }

    async fn get_receipt(
        &self,
        request: Request<proto::GetReceiptRequest>,
    ) -> Result<Response<proto::Receipt>, Status> {
        let id = convert::receipt_id(request.into_inner()).map_err(ServiceError::from)?;
        let receipt = self.service.receipt(id).await?;
        Ok(Response::new(convert::receipt_to_proto(receipt)))
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
}
