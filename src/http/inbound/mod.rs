//! Opt-outs where people say them (docs/inbound.md): what they text to a tenant's number, delivered
//! by the SMS provider's webhook, here; mail providers' bounces, complaints and unsubscribes in
//! `email`.
//!
//! - `POST /inbound/twilio`: Twilio's messaging webhook (form fields `From`, `To`, `Body`,
//!   `MessageSid`, …), signed with `X-Twilio-Signature`; answered with TwiML.
//! - `POST /inbound/sms`: any other provider, JSON `{"from", "to", "body", "message_id"}` signed per
//!   Standard Webhooks; answered with JSON `{"outcome", "reply"}`, the reply for the provider to send.
//!
//! The `To` number names the account in the key file (`auth::inbound`), whose secret verifies the
//! signature and whose tenant the keyword speaks to. STOP opts the number out of the tenant's SMS
//! (reason `USER_REQUEST`, source `SMS_KEYWORD`, the provider's message id as the idempotency key, so
//! a redelivered webhook records nothing new); START is the person's own opt-in for exactly that
//! scope; HELP answers. Nothing is recorded before the signature is verified. A store or Redis
//! outage answers 503, which providers retry. Numbers and message texts appear nowhere in logs,
//! spans or metrics.

mod email;
mod ses;

pub(super) use email::{mailgun, sendgrid};
pub(super) use ses::ses;

use super::Front;
use crate::{
    auth::inbound::{InboundAccount, Provider, Refused},
    domain::{
        Channel, Recipient, RecipientKind, Scope, Source, Subject,
        keyword::{Keyword, keyword},
    },
    service::{Durability, OptInCommand, OptInGrounds, OptOutCommand, ServiceError},
    telemetry::{metrics::names, sampling},
};
use axum::{
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use tracing::{Instrument, Span, field::Empty};

/// One text, as either provider delivers it.
struct Text {
    from: String,
    to: String,
    body: String,
    message_id: String,
}

/// What became of a webhook: the metric's and the span's `outcome`, and the answer's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Mail events recorded (bounces, complaints, unsubscribes).
    Recorded,
    /// An SNS subscription confirmed.
    Subscribed,
    OptedOut,
    OptedIn,
    Help,
    Ignored,
    Refused(Refused),
    UnknownNumber,
    Malformed,
    Unavailable,
    Failed,
}

impl Outcome {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Outcome::Recorded => "recorded",
            Outcome::Subscribed => "subscribed",
            Outcome::OptedOut => "opted_out",
            Outcome::OptedIn => "opted_in",
            Outcome::Help => "help",
            Outcome::Ignored => "ignored",
            Outcome::Refused(r) => r.as_str(),
            Outcome::UnknownNumber => "unknown_number",
            Outcome::Malformed => "malformed",
            Outcome::Unavailable => "unavailable",
            Outcome::Failed => "failed",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Outcome::Recorded
            | Outcome::Subscribed
            | Outcome::OptedOut
            | Outcome::OptedIn
            | Outcome::Help
            | Outcome::Ignored => StatusCode::OK,
            Outcome::Refused(_) => StatusCode::FORBIDDEN,
            Outcome::UnknownNumber => StatusCode::NOT_FOUND,
            Outcome::Malformed => StatusCode::BAD_REQUEST,
            Outcome::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// `POST /inbound/twilio`.
pub(super) async fn twilio(
    State(front): State<Front>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    traced(Provider::Twilio, async move {
        let (outcome, reply) = twilio_outcome(&front, &uri, &headers, body).await;
        let twiml = match reply {
            Some(reply) => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
                escape_xml(&reply)
            ),
            None => "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>".to_owned(),
        };
        (outcome, answer(outcome, "text/xml; charset=utf-8", twiml))
    })
    .await
}

async fn twilio_outcome(
    front: &Front,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (Outcome, Option<String>) {
    let Ok(body) = body else {
        return (Outcome::Malformed, None);
    };
    let Ok(params) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return (Outcome::Malformed, None);
    };
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (Some(from), Some(to), Some(text), Some(message_id)) = (
        field("From"),
        field("To"),
        field("Body"),
        field("MessageSid"),
    ) else {
        return (Outcome::Malformed, None);
    };
    let Some(account) = front
        .keys
        .current()
        .inbound
        .for_number(Provider::Twilio, &to)
    else {
        return (Outcome::UnknownNumber, None);
    };
    let url = format!("{}{uri}", front.public_url(headers));
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    if let Err(refused) = account.verify_twilio(&url, &params, signature) {
        return (Outcome::Refused(refused), None);
    }
    let text = Text {
        from,
        to,
        body: text,
        message_id,
    };
    act(front, &account, &text).await
}

#[derive(Deserialize)]
struct SmsJson {
    from: String,
    to: String,
    body: String,
    message_id: String,
}

#[derive(Serialize)]
struct SmsAnswer {
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<String>,
}

/// `POST /inbound/sms`.
pub(super) async fn standard(
    State(front): State<Front>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    traced(Provider::Sms, async move {
        let (outcome, reply) = standard_outcome(&front, &headers, body).await;
        let json = serde_json::to_string(&SmsAnswer {
            outcome: outcome.as_str(),
            reply,
        })
        .expect("an answer serializes");
        (outcome, answer(outcome, "application/json", json))
    })
    .await
}

async fn standard_outcome(
    front: &Front,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (Outcome, Option<String>) {
    let Ok(body) = body else {
        return (Outcome::Malformed, None);
    };
    let Ok(sms) = serde_json::from_slice::<SmsJson>(&body) else {
        return (Outcome::Malformed, None);
    };
    let Some(account) = front
        .keys
        .current()
        .inbound
        .for_number(Provider::Sms, &sms.to)
    else {
        return (Outcome::UnknownNumber, None);
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now_secs = front.service.clock().now() / 1000;
    if let Err(refused) = account.verify_standard(
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
        now_secs,
    ) {
        return (Outcome::Refused(refused), None);
    }
    let text = Text {
        from: sms.from,
        to: sms.to,
        body: sms.body,
        message_id: sms.message_id,
    };
    act(front, &account, &text).await
}

/// Does what a verified text asks; the reply to send back, if any.
async fn act(front: &Front, account: &InboundAccount, text: &Text) -> (Outcome, Option<String>) {
    let Some(word) = keyword(&text.body) else {
        tracing::info!("an inbound text that is no keyword, ignored");
        return (Outcome::Ignored, None);
    };
    Span::current().record("suppressd.keyword", word.as_str());
    if word == Keyword::Help {
        return (Outcome::Help, Some(account.help_reply.clone()));
    }
    let Ok(person) = Recipient::parse(RecipientKind::Phone, &text.from) else {
        return (Outcome::Malformed, None);
    };
    let provider = account.provider.as_str();
    let scope = match Scope::parse(&account.tenant, Some(Channel::Sms), "", "") {
        Ok(scope) => scope,
        Err(_) => return (Outcome::Failed, None),
    };
    // The account's number, never the person's: the actor is on the audit trail.
    let actor = format!("{provider}:{}", text.to.trim());
    let done = if word == Keyword::Stop {
        let cmd = OptOutCommand::new(
            Subject::Recipient(person),
            scope,
            crate::domain::Reason::UserRequest,
            Source::SmsKeyword,
            &format!("{provider}:{}", text.message_id),
            Durability::Durable,
            None,
            actor,
        );
        let Ok(cmd) = cmd else {
            // The message id is the provider's: too long or with control characters.
            return (Outcome::Malformed, None);
        };
        match front.service.opt_out(cmd).await {
            Ok(receipt) => {
                let answered = format!("reply to {provider}:{}", text.message_id);
                front
                    .service
                    .record_own_confirmation(&receipt, Channel::Sms, &account.stop_reply, &answered)
                    .await;
                Ok((Outcome::OptedOut, account.stop_reply.clone()))
            }
            Err(e) => Err(e),
        }
    } else {
        let cmd = OptInCommand {
            subject: front.service.subject(&person),
            scope,
            actor,
            grounds: OptInGrounds::Keyword {
                provider,
                message_id: text.message_id.clone(),
            },
        };
        match front.service.opt_in(cmd).await {
            // START from a number that never texted STOP changes nothing; the reply is the same.
            Ok(_) | Err(ServiceError::NotFound(_)) => {
                Ok((Outcome::OptedIn, account.start_reply.clone()))
            }
            Err(e) => Err(e),
        }
    };
    match done {
        Ok((outcome, reply)) => (outcome, Some(reply)),
        Err(ServiceError::Unavailable { message, cause }) => {
            tracing::warn!(error = ?cause, "{message}; the provider will redeliver");
            (Outcome::Unavailable, None)
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "an inbound keyword failed");
            (Outcome::Failed, None)
        }
    }
}

/// Runs one webhook in a server span of its own (a trace sampled here), and counts it.
pub(super) async fn traced(
    provider: Provider,
    work: impl Future<Output = (Outcome, Response)> + Send,
) -> Response {
    let span = tracing::info_span!(
        "inbound",
        otel.kind = "server",
        suppressd.provider = provider.as_str(),
        suppressd.outcome = Empty,
        suppressd.keyword = Empty,
    );
    let run = async {
        let (outcome, response) = work.await;
        Span::current().record("suppressd.outcome", outcome.as_str());
        metrics::counter!(names::INBOUND_EVENTS,
            "provider" => provider.as_str(), "outcome" => outcome.as_str())
        .increment(1);
        response
    };
    sampling::Sampled::new(run.instrument(span), sampling::decide(None)).await
}

pub(super) fn answer(outcome: Outcome, content_type: &'static str, body: String) -> Response {
    let mut response = (outcome.status(), body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if outcome == Outcome::Unavailable {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    }
    response
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Front {
    /// Where providers reach this front: `--http-public-url`, else `http://` and the request's Host.
    fn public_url(&self, headers: &HeaderMap) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                format!("http://{host}")
            }
        }
    }
}
