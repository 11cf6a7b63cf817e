//! The benchmark's yardstick: the same proto served by empty tonic handlers, with the same server
//! settings as `suppressd serve`, so that the difference between the two is what suppressd itself costs
//! (validation, hashing, Redis), measured with the same client in the same run.

use clap::Args;
use std::{future::Future, net::SocketAddr};
use suppressd::proto::{self, suppression_server::Suppression};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

#[derive(Args, Clone, Debug)]
pub struct BaselineSettings {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// Also accept OTLP/gRPC trace exports on the same address, counted and dropped: a collector
    /// for measuring a traced server by hand (`scripts/trace-instructions`).
    #[arg(long)]
    pub otlp_sink: bool,
}

/// Answers every call at once with an empty response.
pub struct EmptySuppression;

#[tonic::async_trait]
impl Suppression for EmptySuppression {
    async fn check_suppressed(
        &self,
        _: Request<proto::CheckSuppressedRequest>,
    ) -> Result<Response<proto::CheckSuppressedResponse>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn check_suppressed_batch(
        &self,
        request: Request<proto::CheckSuppressedBatchRequest>,
    ) -> Result<Response<proto::CheckSuppressedBatchResponse>, Status> {
        // One (empty) answer per check, so the response is as long as the real one's shape.
        let results = vec![Default::default(); request.into_inner().checks.len()];
        Ok(Response::new(proto::CheckSuppressedBatchResponse {
            results,
        }))
    }

    async fn opt_out(
        &self,
        _: Request<proto::OptOutRequest>,
    ) -> Result<Response<proto::OptOutResponse>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn get_receipt(
        &self,
        _: Request<proto::GetReceiptRequest>,
    ) -> Result<Response<proto::Receipt>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn record_confirmation(
        &self,
        _: Request<proto::RecordConfirmationRequest>,
    ) -> Result<Response<proto::Confirmation>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn issue_opt_out_token(
        &self,
        _: Request<proto::IssueOptOutTokenRequest>,
    ) -> Result<Response<proto::IssueOptOutTokenResponse>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn get_checkpoint(
        &self,
        _: Request<proto::GetCheckpointRequest>,
    ) -> Result<Response<proto::SignedCheckpoint>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn get_consistency_proof(
        &self,
        _: Request<proto::GetConsistencyProofRequest>,
    ) -> Result<Response<proto::ConsistencyProof>, Status> {
        Ok(Response::new(Default::default()))
    }

    // The RPCs the benchmark does not call: the trait wants every one.
    async fn opt_in(
        &self,
        _: Request<proto::OptInRequest>,
    ) -> Result<Response<proto::OptInResponse>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn issue_opt_in_token(
        &self,
        _: Request<proto::IssueOptInTokenRequest>,
    ) -> Result<Response<proto::IssueOptInTokenResponse>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn list_suppressions(
        &self,
        _: Request<proto::ListSuppressionsRequest>,
    ) -> Result<Response<proto::ListSuppressionsResponse>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn forget_person(
        &self,
        _: Request<proto::ForgetPersonRequest>,
    ) -> Result<Response<proto::ForgetPersonResponse>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn halt_campaign(
        &self,
        _: Request<proto::HaltCampaignRequest>,
    ) -> Result<Response<proto::Halt>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn resume_campaign(
        &self,
        _: Request<proto::ResumeCampaignRequest>,
    ) -> Result<Response<proto::Halt>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn declare_mandatory(
        &self,
        _: Request<proto::DeclareMandatoryRequest>,
    ) -> Result<Response<proto::MandatoryDeclaration>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn revoke_mandatory(
        &self,
        _: Request<proto::RevokeMandatoryRequest>,
    ) -> Result<Response<proto::MandatoryDeclaration>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn set_send_window(
        &self,
        _: Request<proto::SetSendWindowRequest>,
    ) -> Result<Response<proto::SendWindow>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn remove_send_window(
        &self,
        _: Request<proto::RemoveSendWindowRequest>,
    ) -> Result<Response<proto::SendWindow>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn require_consent(
        &self,
        _: Request<proto::RequireConsentRequest>,
    ) -> Result<Response<proto::ConsentRequirement>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn drop_consent_requirement(
        &self,
        _: Request<proto::DropConsentRequirementRequest>,
    ) -> Result<Response<proto::ConsentRequirement>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn record_consent(
        &self,
        _: Request<proto::RecordConsentRequest>,
    ) -> Result<Response<proto::Consent>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn set_halt_trigger(
        &self,
        _: Request<proto::SetHaltTriggerRequest>,
    ) -> Result<Response<proto::HaltTrigger>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn remove_halt_trigger(
        &self,
        _: Request<proto::RemoveHaltTriggerRequest>,
    ) -> Result<Response<proto::HaltTrigger>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn list_halt_triggers(
        &self,
        _: Request<proto::ListHaltTriggersRequest>,
    ) -> Result<Response<proto::ListHaltTriggersResponse>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn list_controls(
        &self,
        _: Request<proto::ListControlsRequest>,
    ) -> Result<Response<proto::ListControlsResponse>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn register_destination(
        &self,
        _: Request<proto::RegisterDestinationRequest>,
    ) -> Result<Response<proto::Destination>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn list_destinations(
        &self,
        _: Request<proto::ListDestinationsRequest>,
    ) -> Result<Response<proto::ListDestinationsResponse>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn remove_destination(
        &self,
        _: Request<proto::RemoveDestinationRequest>,
    ) -> Result<Response<proto::Destination>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn resume_destination(
        &self,
        _: Request<proto::ResumeDestinationRequest>,
    ) -> Result<Response<proto::Destination>, Status> {
        Ok(Response::new(Default::default()))
    }

    type WatchChangesStream = tokio_stream::Empty<Result<proto::Change, Status>>;

    async fn watch_changes(
        &self,
        _: Request<proto::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        Ok(Response::new(tokio_stream::empty()))
    }

    async fn import_suppressions(
        &self,
        _: Request<tonic::Streaming<proto::ImportRow>>,
    ) -> Result<Response<proto::ImportSummary>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn rollback_import(
        &self,
        _: Request<proto::RollbackImportRequest>,
    ) -> Result<Response<proto::RollbackSummary>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn list_imports(
        &self,
        _: Request<proto::ListImportsRequest>,
    ) -> Result<Response<proto::ListImportsResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
}

/// Serves the empty handlers (and, with `otlp_sink`, a trace sink) on `listener` until `shutdown`
/// resolves.
pub async fn serve(
    listener: TcpListener,
    otlp_sink: bool,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let server = proto::suppression_server::SuppressionServer::new(EmptySuppression)
        .max_decoding_message_size(suppressd::api::MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .add_service(server)
        .add_optional_service(otlp_sink.then(super::suite::otlp_sink::Sink::default))
        .serve_with_incoming_shutdown(suppressd::api::incoming(listener), shutdown)
        .await?;
    Ok(())
}

/// `suppressd bench-baseline`: binds and serves until `shutdown`.
pub async fn main(
    settings: BaselineSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.listen).await?;
    eprintln!("baseline listening on {}", listener.local_addr()?);
    serve(listener, settings.otlp_sink, shutdown).await
}
