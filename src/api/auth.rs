//! Authentication and authorization, in one place. A tower layer around the `Suppression` service
//! (not around health or reflection: probes and grpcurl's schema look-ups need no key) reads the
//! credentials before the message is decoded:
//!
//! 1. `authorization: Bearer <key>` → the principal whose key hash matches; a header that is there
//!    but wrong is UNAUTHENTICATED, never "anonymous".
//! 2. else a verified client certificate (mTLS) whose subject CN the key file maps to a principal.
//! 3. else nobody: only `OptOut` lets an anonymous call through, because it may carry an opt-out
//!    token; the handler then demands one.
//!
//! The role each RPC needs is decided here from the path (an RPC not listed needs `admin`, so a new
//! admin RPC is closed by default), and so is the per-principal rate limit. Tenants are named inside
//! the message, so the second half, [`authorize_tenants`], runs in the handler once it is decoded;
//! it lives here too so the rules stay in one file.

use super::status::Refusal;
use crate::{
    auth::{KeyStore, Principal, Role},
    proto,
};
use futures_util::future::Either;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::{
    convert::Infallible,
    future::{Ready, ready},
    num::NonZeroU32,
    sync::Arc,
    task::{Context, Poll},
};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

/// The RPCs of `suppress.v1.Suppression`, told apart by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rpc {
    Check,
    OptOut,
    /// `GetReceipt` and `RecordConfirmation`: about one receipt, by id.
    GetReceipt,
    IssueOptOutToken,
    /// `RecordConsent`: role write, like `OptOut`, but never anonymous (there is no consent token).
    RecordConsent,
    /// `OptIn` and `ListSuppressions`: a person's own token is enough (anonymous calls pass, the
    /// handler demands the token); without one the handler demands `admin`.
    PersonRights,
    /// The audit log's public face (`GetCheckpoint`, `GetConsistencyProof`): sizes and hashes only,
    /// which anyone checking a receipt must be able to fetch, key or no key.
    AuditLog,
    /// `WatchChanges`: role `watch` (or admin).
    Watch,
    /// Anything not classified yet: admin only.
    Other,
}

impl Rpc {
    /// The RPC a request's path names; any path outside `suppress.v1.Suppression` is `Other`.
    /// Two layers ask on every call, so it compares the service's prefix and then the method's
    /// name, without searching the path.
    pub(super) fn from_path(path: &str) -> Rpc {
        let method = path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(proto::suppression_server::SERVICE_NAME))
            .and_then(|p| p.strip_prefix('/'))
            .unwrap_or_default();
        match method {
            "CheckSuppressed" | "CheckSuppressedBatch" => Rpc::Check,
            "OptOut" => Rpc::OptOut,
            "GetReceipt" | "RecordConfirmation" => Rpc::GetReceipt,
            "IssueOptOutToken" => Rpc::IssueOptOutToken,
            "RecordConsent" => Rpc::RecordConsent,
            "OptIn" | "ListSuppressions" => Rpc::PersonRights,
            "GetCheckpoint" | "GetConsistencyProof" => Rpc::AuditLog,
            "WatchChanges" => Rpc::Watch,
            _ => Rpc::Other,
        }
    }

    fn role(self) -> Role {
        match self {
            Rpc::Check | Rpc::AuditLog => Role::Check,
            Rpc::OptOut
            | Rpc::GetReceipt
            | Rpc::IssueOptOutToken
            | Rpc::RecordConsent
            | Rpc::PersonRights => Role::Write,
            Rpc::Watch => Role::Watch,
            Rpc::Other => Role::Admin,
        }
    }
}

/// The authenticated caller, put into the request's extensions for the handlers.
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub(crate) Arc<Principal>);

/// The principal of a request the layer admitted (`None`: an anonymous `OptOut`, which must carry a
/// token).
pub(crate) fn caller<T>(request: &tonic::Request<T>) -> Option<Arc<Principal>> {
    request.extensions().get::<Caller>().map(|c| c.0.clone())
}

/// The tenant half of authorization: every tenant the request names must be one the principal may
/// use (every check of a batch, not only the first).
pub(crate) fn authorize_tenants<'a>(
    principal: &Principal,
    tenants: impl IntoIterator<Item = &'a str>,
) -> Result<(), Refusal> {
    for tenant in tenants {
        if !principal.may_use_tenant(tenant) {
            return Err(Refusal::PermissionDenied(format!(
                "principal {:?} may not use tenant {tenant:?}",
                principal.name
            )));
        }
    }
    Ok(())
}

/// What the layer needs: the key table (`None` with `--dev-no-auth`) and the rate limiter.
#[derive(Clone)]
pub(crate) struct Authenticator {
    keys: Option<KeyStore>,
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
}

impl Authenticator {
    /// `keys: None` turns authentication off (every caller is the development admin).
    pub(crate) fn new(keys: Option<KeyStore>, per_second: u32) -> Self {
        let limiter =
            NonZeroU32::new(per_second).map(|n| Arc::new(RateLimiter::keyed(Quota::per_second(n))));
        Authenticator { keys, limiter }
    }

    /// Who is calling: a principal, nobody, or a refusal for credentials that do not check out.
    fn authenticate<B>(&self, req: &http::Request<B>) -> Result<Option<Arc<Principal>>, Refusal> {
        let Some(store) = &self.keys else {
            return Ok(Some(Principal::development()));
        };
        let keys = store.current();
        if let Some(header) = req.headers().get(http::header::AUTHORIZATION) {
            let key =
                header.to_str().ok().and_then(bearer_key).ok_or_else(|| {
                    Refusal::unauthenticated("authorization must be 'Bearer <key>'")
                })?;
            return keys
                .by_api_key(key)
                .map(Some)
                .ok_or_else(|| Refusal::unauthenticated("invalid API key"));
        }
        let certs = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.peer_certs());
        if let Some(leaf) = certs.as_ref().and_then(|c| c.first()) {
            let cn = common_name(leaf.as_ref())
                .ok_or_else(|| Refusal::unauthenticated("client certificate has no subject CN"))?;
            return keys.by_cert_cn(&cn).map(Some).ok_or_else(|| {
                Refusal::unauthenticated("client certificate subject is not a known principal")
            });
        }
        Ok(None)
    }

    /// Admits a request (and tags it with its caller) or says why not.
    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Refusal> {
        let rpc = Rpc::from_path(req.uri().path());
        let Some(principal) = self.authenticate(req)? else {
            return match rpc {
                // The handler insists on a token; a token is the credential of an anonymous call.
                Rpc::OptOut | Rpc::PersonRights => Ok(()),
                Rpc::AuditLog => self.admit_anonymous(Anonymous::AuditRead),
                _ => Err(Refusal::unauthenticated(
                    "missing credentials: send 'authorization: Bearer <key>'",
                )),
            };
        };
        if rpc != Rpc::AuditLog && !principal.has(rpc.role()) {
            return Err(Refusal::PermissionDenied(format!(
                "principal {:?} lacks the role this call needs ({:?})",
                principal.name,
                rpc.role()
            )));
        }
        if let Some(limiter) = &self.limiter
            && limiter.check_key(&principal.name).is_err()
        {
            return Err(Refusal::RateLimited(principal.name.clone()));
        }
        req.extensions_mut().insert(Caller(principal));
        Ok(())
    }

    /// The rate limit of anonymous calls: every call of one kind shares one bucket.
    pub(crate) fn admit_anonymous(&self, kind: Anonymous) -> Result<(), Refusal> {
        let (bucket, what) = match kind {
            Anonymous::PersonsToken => ("(token)", "anonymous calls with a person's token"),
            Anonymous::AuditRead => ("(audit)", "anonymous audit reads"),
        };
        match &self.limiter {
            Some(limiter) if limiter.check_key(&bucket.to_owned()).is_err() => {
                Err(Refusal::RateLimited(what.into()))
            }
            _ => Ok(()),
        }
    }
}

/// The kinds of anonymous call, each with a rate bucket of its own: a flood of audit reads must
/// never use up the bucket a person's token opt-out needs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Anonymous {
    /// A call that carries a person's token (opt-out, opt-in, their records).
    PersonsToken,
    /// GetCheckpoint and GetConsistencyProof, which anyone may call.
    AuditRead,
}

/// The subject CN of a DER certificate (already verified against the client CA by rustls).
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The tower layer that applies an [`Authenticator`].
#[derive(Clone)]
pub(crate) struct AuthLayer(pub(crate) Authenticator);

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            auth: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct AuthService<S> {
    inner: S,
    auth: Authenticator,
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Self::Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.auth.admit(&mut req) {
            Ok(()) => Either::Left(self.inner.call(req)),
            Err(refusal) => Either::Right(ready(Ok(tonic::Status::from(refusal).into_http()))),
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for AuthService<S> {
    const NAME: &'static str = S::NAME;
}

/// The key of an `authorization: Bearer <key>` value. The scheme is case-insensitive (RFC 9110
/// §11.1), so `bearer` and `BEARER` are the same; the key is not.
fn bearer_key(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_rpcs_need_admin() {
        let path = |m: &str| Rpc::from_path(&format!("/suppress.v1.Suppression/{m}"));
        assert_eq!(path("CheckSuppressedBatch").role(), Role::Check);
        assert_eq!(path("OptOut").role(), Role::Write);
        assert_eq!(path("IssueOptOutToken").role(), Role::Write);
        assert_eq!(path("RecordConsent").role(), Role::Write);
        assert_eq!(path("RequireConsent").role(), Role::Admin);
        assert_eq!(path("OptIn").role(), Role::Write);
        assert_eq!(path("RollbackImport").role(), Role::Admin);
        assert_eq!(path("HaltCampaign").role(), Role::Admin);
        assert_eq!(path("WatchChanges").role(), Role::Watch);
        assert_eq!(path("IssueOptInToken").role(), Role::Admin);
    }

    #[test]
    fn only_the_service_s_own_paths_name_its_rpcs() {
        assert_eq!(
            Rpc::from_path("/suppress.v1.Suppression/CheckSuppressed"),
            Rpc::Check
        );
        for path in [
            "/other.v1.Service/CheckSuppressed",
            "/suppress.v1.SuppressionX/OptOut",
            "suppress.v1.Suppression/OptOut",
            "/suppress.v1.Suppression/OptOut/extra",
            "/suppress.v1.Suppression",
            "",
        ] {
            assert_eq!(Rpc::from_path(path), Rpc::Other, "{path}");
        }
    }
}
