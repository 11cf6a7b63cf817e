//! The public HTTP front: the page behind an unsubscribe link, and RFC 8058 one-click unsubscribe.
//! Off unless `--http-listen` is set; it runs in the same process as the gRPC server, on its own
//! port, and calls the same use case. Its only credential is the opt-out token in the path.
//!
//! - `GET /unsubscribe/{token}` shows what the person is about to leave and one button. A GET never
//!   opts anyone out: mail scanners and link previewers fetch every link they see.
//! - `POST /unsubscribe/{token}` with `List-Unsubscribe=One-Click` (form-encoded or multipart, as
//!   mail providers send it) records the opt-out and answers with a page that says, in words, what
//!   the person left and the receipt id. The page's own button posts the same field plus
//!   `via=page`, which records source LINK; a bare one-click POST records ONE_CLICK.
//!
//! - `POST /inbound/twilio` and `POST /inbound/sms`: what people text to a tenant's number;
//!   `POST /inbound/mailgun`, `/inbound/sendgrid` and `/inbound/ses`: mail providers' bounces,
//!   complaints and unsubscribes (see `inbound`).
//!
//! Pages are plain HTML with no script, so they work in any browser and with a screen reader. The
//! token is in the URL, so every answer forbids caching and referrers.

mod inbound;
mod page;

use crate::{
    auth::{KeyStore, Purpose, token},
    domain::{Channel, Reason, Source, Subject, token_actor},
    service::{Durability, OptOutCommand, ServiceError, Suppressions},
    telemetry::sampling,
};
use axum::{
    Router,
    body::Bytes,
    extract::{
        Path, State,
        rejection::{BytesRejection, PathRejection},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};

/// The largest POST body read: the one field RFC 8058 asks for, with room for a multipart wrapper;
/// an SMS provider's webhook (Twilio's form carries some 20 fields around the text).
const MAX_BODY: usize = 16 * 1024;

#[derive(Clone)]
struct Front {
    service: Suppressions,
    keys: KeyStore,
    /// `--http-public-url`: the URL providers call, which Twilio signs.
    public_url: Option<String>,
}

/// The axum router of the front. Every answer, also those the framework makes itself (a method
/// other than GET or POST, an unknown path), leaves through [`secured`].
pub(crate) fn router(service: Suppressions, keys: KeyStore, public_url: Option<String>) -> Router {
    Router::new()
        .route("/unsubscribe/{token}", get(show).post(unsubscribe))
        .route("/inbound/twilio", post(inbound::twilio))
        .route("/inbound/sms", post(inbound::standard))
        .route("/inbound/mailgun", post(inbound::mailgun))
        .route("/inbound/sendgrid", post(inbound::sendgrid))
        .route("/inbound/ses", post(inbound::ses))
        .fallback(|| async { html(StatusCode::NOT_FOUND, page::not_found()) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(secured))
        .with_state(Front {
            service,
            keys,
            public_url,
        })
}

/// The headers every answer carries: the token is in the URL, so nothing may be cached or passed
/// on as a referrer, and pages run no script and cannot be framed.
async fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
    );
    response
}

/// The token in the path; a path that does not decode (not UTF-8) is a link that is not valid.
type TokenPath = Result<Path<String>, PathRejection>;

/// `GET`: the confirmation page with one button, or a page that says the link is not valid.
async fn show(State(front): State<Front>, token: TokenPath) -> Response {
    let Ok(Path(token)) = token else {
        return html(StatusCode::BAD_REQUEST, page::invalid_link());
    };
    let now = front.service.clock().now();
    match front.keys.verify_person_token(&token, Purpose::OptOut, now) {
        Ok(claims) => html(StatusCode::OK, page::confirm(&claims.scope)),
        Err(_) => html(StatusCode::BAD_REQUEST, page::invalid_link()),
    }
}

/// `POST`: records the opt-out the token names.
async fn unsubscribe(
    State(front): State<Front>,
    token: TokenPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(Path(token)) = token else {
        return html(StatusCode::BAD_REQUEST, page::invalid_link());
    };
    let Ok(body) = body else {
        return html(StatusCode::PAYLOAD_TOO_LARGE, page::too_large());
    };
    let Some(via_page) = one_click(&headers, &body) else {
        return html(StatusCode::BAD_REQUEST, page::missing_field());
    };
    let now = front.service.clock().now();
    let claims = match front.keys.verify_person_token(&token, Purpose::OptOut, now) {
        Ok(claims) => claims,
        Err(_) => {
            return html(StatusCode::BAD_REQUEST, page::invalid_link());
        }
    };
    let source = if via_page {
        Source::Link
    } else {
        Source::OneClick
    };
    let scope = claims.scope.clone();
    let cmd = OptOutCommand::new(
        Subject::Hash(claims.subject),
        claims.scope,
        Reason::UserRequest,
        source,
        &token::idempotency_key(&token),
        Durability::Durable,
        None,
        token_actor(&claims.key_id),
    );
    let cmd = match cmd {
        Ok(cmd) => cmd,
        Err(e) => {
            tracing::error!(error = %e, "a verified token made an invalid opt-out");
            return html(StatusCode::INTERNAL_SERVER_ERROR, page::failed());
        }
    };
    // A person's click starts a trace of its own, sampled here.
    let recorded = sampling::Sampled::new(front.service.opt_out(cmd), sampling::decide(None));
    match recorded.await {
        Ok(receipt) => {
            // The page is the confirmation: what it says, as served, goes on the trail.
            let done = page::done(&scope, &receipt.id.to_string());
            let channel = scope.channel.unwrap_or(Channel::Email);
            front
                .service
                .record_own_confirmation(&receipt, channel, &done, "one-click confirmation page")
                .await;
            html(StatusCode::OK, done)
        }
        Err(ServiceError::Unavailable { message, cause }) => {
            tracing::warn!(error = ?cause, "{message}");
            let mut response = html(StatusCode::SERVICE_UNAVAILABLE, page::try_again());
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            response
        }
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "a person's one-click opt-out failed"
            );
            html(StatusCode::INTERNAL_SERVER_ERROR, page::failed())
        }
    }
}

/// Whether the body carries `List-Unsubscribe=One-Click` (RFC 8058 §3.1), and whether it came from
/// this front's own page (`via=page`). `None`: the field is missing.
fn one_click(headers: &HeaderMap, body: &[u8]) -> Option<bool> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        // The one part mail providers send: name="List-Unsubscribe", value One-Click.
        let text = String::from_utf8_lossy(body);
        let found = text
            .split("name=\"List-Unsubscribe\"")
            .nth(1)
            .is_some_and(|rest| rest.trim_start().starts_with("One-Click"));
        return found.then_some(false);
    }
    let mut one_click = false;
    let mut via_page = false;
    for (k, v) in form_urlencoded_pairs(body) {
        match (k.as_str(), v.as_str()) {
            ("List-Unsubscribe", "One-Click") => one_click = true,
            ("via", "page") => via_page = true,
            _ => {}
        }
    }
    one_click.then_some(via_page)
}

fn form_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default()
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
