//! [`Client`]: the calls a sending service makes, each with its deadline and retry rule.
//!
//! Each call runs attempts under one overall deadline (from [`crate::Deadlines`]); an attempt that
//! fails with a retryable code waits as [`crate::retry`] says, and no wait starts that would end
//! past the deadline. The deadline is enforced here (not only sent as `grpc-timeout`), so a server
//! that hangs still yields [`ClientError::Timeout`] on time.

use crate::strict::StrictCodec;
use crate::{
    Bearer, ClientConfig, ClientError, Decision,
    proto::{
        CheckSuppressedBatchRequest, CheckSuppressedBatchResponse, CheckSuppressedRequest,
        CheckSuppressedResponse, GetReceiptRequest, IssueOptOutTokenRequest,
        IssueOptOutTokenResponse, OptOutRequest, Receipt, suppression_client::SuppressionClient,
    },
    retry::RetryPolicy,
};
use std::{future::Future, time::Duration};
use tokio::time::Instant;
use tonic::{
    client::Grpc, codegen::http::uri::PathAndQuery, service::interceptor::InterceptedService,
    transport::Channel,
};

const CHECK: &str = "/suppress.v1.Suppression/CheckSuppressed";
const CHECK_BATCH: &str = "/suppress.v1.Suppression/CheckSuppressedBatch";

/// The generated client over this crate's connection and key, for the RPCs not wrapped here.
pub type RawClient = SuppressionClient<InterceptedService<Channel, Bearer>>;

/// The most checks the server takes in one `CheckSuppressedBatch` call.
pub const BATCH_LIMIT: usize = 1_000;

/// A connection to one suppressd deployment. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Client {
    raw: RawClient,
    /// The same connection and key, for check calls decoded by [`StrictCodec`].
    strict: Grpc<InterceptedService<Channel, Bearer>>,
    config: ClientConfig,
}

impl Client {
    /// Connects as the config says (TLS, mTLS, key), within its connect deadline.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let channel = config.channel().await?;
        Client::with_channel(channel, config)
    }

    /// Uses a channel made elsewhere; the config still gives the key, deadlines and retries.
    pub fn with_channel(channel: Channel, config: ClientConfig) -> Result<Client, ClientError> {
        let bearer = config.bearer()?;
        let strict = Grpc::new(InterceptedService::new(channel.clone(), bearer.clone()));
        let raw = SuppressionClient::with_interceptor(channel, bearer);
        Ok(Client {
            raw,
            strict,
            config,
        })
    }

    /// The generated client, for the RPCs not wrapped here (no deadline or retry is added).
    pub fn raw(&self) -> RawClient {
        self.raw.clone()
    }

    /// `CheckSuppressed`: the server's answer. To decide whether to send, use [`Client::decide`].
    pub async fn check(
        &self,
        request: CheckSuppressedRequest,
    ) -> Result<CheckSuppressedResponse, ClientError> {
        let deadline = self.config.deadlines.check;
        self.call(deadline, self.config.retry, |_, left| {
            self.strict_call(CHECK, with_timeout(request.clone(), left))
        })
        .await
    }

    /// May this notice go now? `Send` only on an OK answer saying `suppressed = false`.
    pub async fn decide(&self, request: CheckSuppressedRequest) -> Decision {
        Decision::from_answer(self.check(request).await)
    }

    /// Any number of checks, in calls of up to [`BATCH_LIMIT`], answered in the order given. A
    /// call that fails fails the whole batch (use [`Client::decide_batch`] to keep the rest).
    pub async fn check_batch(
        &self,
        checks: Vec<CheckSuppressedRequest>,
    ) -> Result<Vec<CheckSuppressedResponse>, ClientError> {
        let mut answers = Vec::with_capacity(checks.len());
        for chunk in checks.chunks(BATCH_LIMIT) {
            answers.extend(self.check_chunk(chunk.to_vec()).await?);
        }
        Ok(answers)
    }

    /// One decision per check, in order; the checks of a call that failed are each "do not send"
    /// with that call's error, the other calls' answers stand.
    pub async fn decide_batch(&self, checks: Vec<CheckSuppressedRequest>) -> Vec<Decision> {
        let mut decisions = Vec::with_capacity(checks.len());
        for chunk in checks.chunks(BATCH_LIMIT) {
            match self.check_chunk(chunk.to_vec()).await {
                Ok(answers) => {
                    decisions.extend(answers.into_iter().map(|a| Decision::from_answer(Ok(a))))
                }
                Err(error) => {
                    let line = error.to_string();
                    decisions.push(Decision::from_answer(Err(error)));
                    decisions.extend((1..chunk.len()).map(|_| {
                        Decision::from_answer(Err(ClientError::Unexpected(format!(
                            "its batch call failed: {line}"
                        ))))
                    }));
                }
            }
        }
        decisions
    }

    async fn check_chunk(
        &self,
        checks: Vec<CheckSuppressedRequest>,
    ) -> Result<Vec<CheckSuppressedResponse>, ClientError> {
        let asked = checks.len();
        let request = CheckSuppressedBatchRequest { checks };
        let deadline = self.config.deadlines.check;
        let answer: CheckSuppressedBatchResponse = self
            .call(deadline, self.config.retry, |_, left| {
                self.strict_call(CHECK_BATCH, with_timeout(request.clone(), left))
            })
            .await?;
        if answer.results.len() != asked {
            return Err(ClientError::Unexpected(format!(
                "{} answers to {asked} checks",
                answer.results.len()
            )));
        }
        Ok(answer.results)
    }

    /// `OptOut`, with an idempotency key (a random one when the request has none), so that a retry
    /// after `UNAVAILABLE` or `RESOURCE_EXHAUSTED` can only ever return the first receipt. The
    /// key used is in the request the caller keeps: set it yourself to retry across restarts.
    pub async fn opt_out(&self, mut request: OptOutRequest) -> Result<Receipt, ClientError> {
        if request.idempotency_key.is_empty() && request.token.is_empty() {
            request.idempotency_key = format!("client-{}", uuid::Uuid::new_v4());
        }
        let deadline = self.config.deadlines.write;
        let answer = self
            .call(deadline, self.config.retry, |mut raw, left| {
                let request = with_timeout(request.clone(), left);
                async move { raw.opt_out(request).await }
            })
            .await?;
        answer
            .receipt
            .ok_or_else(|| ClientError::Unexpected("an opt-out answered without a receipt".into()))
    }

    /// `GetReceipt`: `ACCEPTED` (visible, queued) or `DURABLE` (committed, with its proof).
    pub async fn get_receipt(&self, receipt_id: &str) -> Result<Receipt, ClientError> {
        let request = GetReceiptRequest {
            receipt_id: receipt_id.to_owned(),
        };
        let deadline = self.config.deadlines.write;
        self.call(deadline, self.config.retry, |mut raw, left| {
            let request = with_timeout(request.clone(), left);
            async move { raw.get_receipt(request).await }
        })
        .await
    }

    /// `IssueOptOutToken`: a token for an unsubscribe link. Minting records nothing, so a retry at
    /// worst mints a second valid token for the same person and scope.
    pub async fn issue_opt_out_token(
        &self,
        request: IssueOptOutTokenRequest,
    ) -> Result<IssueOptOutTokenResponse, ClientError> {
        let deadline = self.config.deadlines.write;
        self.call(deadline, self.config.retry, |mut raw, left| {
            let request = with_timeout(request.clone(), left);
            async move { raw.issue_opt_out_token(request).await }
        })
        .await
    }

    /// One unary call whose answer is decoded by [`StrictCodec`]: an answer with fields this
    /// client does not know fails rather than being read as what it knows.
    fn strict_call<Q, A>(
        &self,
        path: &'static str,
        request: tonic::Request<Q>,
    ) -> impl Future<Output = Result<tonic::Response<A>, tonic::Status>> + use<Q, A>
    where
        Q: prost::Message + Send + 'static,
        A: prost::Message + Default + Send + 'static,
    {
        let mut grpc = self.strict.clone();
        async move {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("the connection: {e}")))?;
            grpc.unary(
                request,
                PathAndQuery::from_static(path),
                StrictCodec::<Q, A>::default(),
            )
            .await
        }
    }

    /// Attempts under one deadline, retrying as `policy` allows.
    async fn call<T, F, Fut>(
        &self,
        deadline: Duration,
        policy: RetryPolicy,
        mut attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(RawClient, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let end = Instant::now() + deadline;
        let mut n = 1;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let error = match tokio::time::timeout(left, attempt(self.raw.clone(), left)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => ClientError::Status(status),
                Err(_) => return Err(ClientError::Timeout(deadline)),
            };
            match policy.wait_after(n, &error) {
                Some(wait) if Instant::now() + wait < end => tokio::time::sleep(wait).await,
                _ => return Err(error),
            }
            n += 1;
        }
    }
}

/// The request with `grpc-timeout` set to what is left of the deadline, so that the server stops
/// working on an attempt the client has given up on.
fn with_timeout<T>(message: T, left: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(left);
    request
}
