//! Load shedding with separate budgets. Checks, writes (opt-outs, token issuing, admin calls) and
//! audit reads (anyone may ask for a checkpoint or a proof, without a key) each have a number of calls that may be in flight in this process; a call beyond its budget is
//! answered RESOURCE_EXHAUSTED at once instead of queueing (a queue under overload only turns into
//! timeouts). The budgets are separate so that a flood of checks can never shed an opt-out (a person's
//! opt-out is the call this service exists to take), and a flood of anonymous audit reads sheds
//! neither. Health and reflection sit outside the layer, so
//! they answer under any load.
//!
//! The layer sits inside [`super::auth`]: unauthenticated calls are refused before they take a slot.

use super::{auth::Rpc, status::Refusal};
use futures_util::future::Either;
use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

/// How many calls of each kind may be in flight.
#[derive(Clone)]
pub(crate) struct Budgets {
    checks: Arc<Semaphore>,
    writes: Arc<Semaphore>,
    audit_reads: Arc<Semaphore>,
}

impl Budgets {
    pub(crate) fn new(checks: usize, writes: usize, audit_reads: usize) -> Self {
        Budgets {
            checks: Arc::new(Semaphore::new(checks)),
            writes: Arc::new(Semaphore::new(writes)),
            audit_reads: Arc::new(Semaphore::new(audit_reads)),
        }
    }

    fn take(&self, rpc: Rpc) -> Result<OwnedSemaphorePermit, Refusal> {
        let (budget, what) = match rpc {
            Rpc::Check => (&self.checks, "checks"),
            // Anonymous and unbounded in number: never in a slot a check or an opt-out needs.
            Rpc::AuditLog => (&self.audit_reads, "audit reads"),
            Rpc::OptOut
            | Rpc::GetReceipt
            | Rpc::IssueOptOutToken
            | Rpc::RecordConsent
            | Rpc::PersonRights
            // A watch holds its slot only until its stream begins.
            | Rpc::Watch
            | Rpc::Other => (&self.writes, "writes"),
        };
        budget
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Overloaded(what))
    }
}

#[derive(Clone)]
pub(crate) struct ShedLayer(pub(crate) Budgets);

impl<S> Layer<S> for ShedLayer {
    type Service = ShedService<S>;

    fn layer(&self, inner: S) -> ShedService<S> {
        ShedService {
            inner,
            budgets: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct ShedService<S> {
    inner: S,
    budgets: Budgets,
}

impl<S, B> Service<http::Request<B>> for ShedService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Either<Permitted<S::Future>, Ready<Result<Self::Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match self.budgets.take(Rpc::from_path(req.uri().path())) {
            Ok(permit) => Either::Left(Permitted {
                inner: self.inner.call(req),
                _permit: permit,
            }),
            Err(refusal) => Either::Right(ready(Ok(tonic::Status::from(refusal).into_http()))),
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for ShedService<S> {
    const NAME: &'static str = S::NAME;
}

/// A call's future holding its slot; the slot is freed when the call has answered (or was dropped).
pub(crate) struct Permitted<F> {
    inner: F,
    _permit: OwnedSemaphorePermit,
}

impl<F: Future + Unpin> Future for Permitted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        Pin::new(&mut self.inner).poll(cx)
    }
}
