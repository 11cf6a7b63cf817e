//! `google.rpc` details for the statuses suppressd does not raise itself: one tower layer around
//! the whole router that gives every non-OK status without `grpc-status-details-bin` an
//! `ErrorInfo` (and `RetryInfo` where retrying is safe), chosen by its code
//! (`proto::details::reason_of_code`).
//!
//! Such statuses come from the gRPC library: an unknown method (`UNIMPLEMENTED`), a request over
//! the size cap (`OUT_OF_RANGE`), the caller's `grpc-timeout` running out on the server
//! (`CANCELLED`). Statuses suppressd raises already carry their details (`api::status`) and pass
//! through untouched, as does their message. A status travels in the response headers when the
//! call fails before any message (trailers-only, every unary error) and otherwise in the trailers
//! after the body, so both are looked at; an OK call costs one header lookup.

use super::GRPC_STATUS;
use crate::proto::details::{reason_of_code, rich};
use http::{HeaderMap, HeaderName};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tonic::{Code, Status};
use tower::{Layer, Service};

static DETAILS_HEADER: HeaderName = HeaderName::from_static("grpc-status-details-bin");

/// Wraps every service of the router; see the module comment.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DetailsLayer;

impl<S> Layer<S> for DetailsLayer {
    type Service = Details<S>;

    fn layer(&self, inner: S) -> Details<S> {
        Details { inner }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Details<S> {
    inner: S,
}

impl<S, B, ResBody> Service<http::Request<B>> for Details<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<DetailedBody<ResBody>>;
    type Error = S::Error;
    type Future = DetailedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        DetailedFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    pub(crate) struct DetailedFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, ResBody, E> Future for DetailedFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<DetailedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.project().inner.poll(cx));
        Poll::Ready(response.map(|response| {
            let (mut parts, inner) = response.into_parts();
            fill_in(&mut parts.headers);
            http::Response::from_parts(parts, DetailedBody { inner })
        }))
    }
}

pin_project! {
    /// The response body, whose trailers get the same treatment as the headers.
    pub(crate) struct DetailedBody<B> {
        #[pin]
        inner: B,
    }
}

impl<B: Body> Body for DetailedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = ready!(self.project().inner.poll_frame(cx));
        Poll::Ready(polled.map(|frame| {
            frame.map(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    fill_in(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Adds details to the status in `headers` (response headers or trailers) when it is not OK and
/// has none; leaves everything else as it is.
fn fill_in(headers: &mut HeaderMap) {
    let Some(code) = headers.get(&GRPC_STATUS) else {
        return;
    };
    if code.as_bytes() == b"0" || headers.contains_key(&DETAILS_HEADER) {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if status.code() == Code::Ok {
        return;
    }
    let detailed = rich(
        status.code(),
        status.message(),
        reason_of_code(status.code()),
        None,
    );
    // Only fails on a message that cannot be a header value, which the status just parsed from a
    // header cannot hold; the status then stays as it was.
    let _ = detailed.add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    fn status_in(headers: &HeaderMap) -> Status {
        Status::from_header_map(headers).expect("a status")
    }

    #[test]
    fn a_bare_status_gets_error_info_by_its_code_and_keeps_its_message() {
        let mut headers = HeaderMap::new();
        Status::out_of_range("decoded message length too large: 5000000 > 4194304")
            .add_header(&mut headers)
            .unwrap();
        fill_in(&mut headers);
        let status = status_in(&headers);
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(
            status.message(),
            "decoded message length too large: 5000000 > 4194304"
        );
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "MESSAGE_TOO_LARGE");
        assert_eq!(info.domain, "suppressd.dev");
        assert!(status.get_details_retry_info().is_none());
    }

    #[test]
    fn a_bare_unavailable_gets_retry_info() {
        let mut headers = HeaderMap::new();
        Status::unavailable("no").add_header(&mut headers).unwrap();
        fill_in(&mut headers);
        let status = status_in(&headers);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "UNAVAILABLE"
        );
        assert!(status.get_details_retry_info().is_some());
    }

    #[test]
    fn statuses_with_details_and_ok_are_left_alone() {
        let mut headers = HeaderMap::new();
        rich(
            Code::InvalidArgument,
            "checks[0].tenant: empty",
            "INVALID_FIELD",
            Some(("checks[0].tenant", "empty")),
        )
        .add_header(&mut headers)
        .unwrap();
        let before = headers.clone();
        fill_in(&mut headers);
        assert_eq!(headers, before);

        let mut ok = HeaderMap::new();
        ok.insert("grpc-status", "0".parse().unwrap());
        fill_in(&mut ok);
        assert_eq!(ok.len(), 1);
    }
}
