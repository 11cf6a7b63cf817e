//! Mail providers' events: hard bounces, spam complaints and the provider's own unsubscribe links.
//!
//! - `POST /inbound/mailgun`: one event per request (`{"signature": {timestamp, token, signature},
//!   "event-data": {...}}`), signed with hex HMAC-SHA256 of timestamp and token.
//! - `POST /inbound/sendgrid`: SendGrid's Event Webhook, a JSON array of events, signed with ECDSA
//!   P-256 over the timestamp header and the raw body.
//!
//! The account is the one whose key verifies the request (several tenants may each have one).
//! A permanent bounce records `BOUNCE` on the tenant's email, expiring after the account's
//! `bounce_expiry_days`; a complaint `COMPLAINT`, never expiring; an unsubscribe `USER_REQUEST` (a
//! SendGrid group unsubscribe: the topic the account maps the group to; an unmapped group, all the
//! tenant's email: never less than the person asked for). Everything else (deliveries, opens, soft
//! bounces) records nothing. The provider's event id is the idempotency key, so a redelivery records
//! nothing new. Source `API`, actor the provider's name: the event is a system telling us.

use super::{Front, Outcome, answer, traced};
use crate::{
    auth::inbound::{EmailAccount, Provider, Refused},
    domain::{Channel, Reason, Recipient, RecipientKind, Scope, Source, Subject},
    service::{Durability, OptOutCommand, ServiceError},
};
use axum::{
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::HeaderMap,
    response::Response,
};
use serde::Deserialize;
use std::sync::Arc;

/// One event that records something: who, what, and the provider's id for it.
pub(super) struct MailEvent {
    pub(super) address: String,
    pub(super) reason: Reason,
    pub(super) topic: String,
    pub(super) id: String,
}

#[derive(Deserialize)]
struct MailgunBody {
    signature: MailgunSignature,
    #[serde(rename = "event-data")]
    event: MailgunEvent,
}

#[derive(Deserialize)]
struct MailgunSignature {
    timestamp: String,
    token: String,
    signature: String,
}

#[derive(Deserialize)]
struct MailgunEvent {
    event: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    recipient: String,
    id: String,
}

/// `POST /inbound/mailgun`.
pub(in crate::http) async fn mailgun(
    State(front): State<Front>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    traced(Provider::Mailgun, async move {
        let outcome = mailgun_outcome(&front, body).await;
        (
            outcome,
            answer(outcome, "application/json", outcome_json(outcome)),
        )
    })
    .await
}

async fn mailgun_outcome(front: &Front, body: Result<Bytes, BytesRejection>) -> Outcome {
    let Ok(body) = body else {
        return Outcome::Malformed;
    };
    let Ok(MailgunBody { signature, event }) = serde_json::from_slice::<MailgunBody>(&body) else {
        return Outcome::Malformed;
    };
    let now = front.service.clock().now() / 1000;
    let keys = front.keys.current();
    let account = verified(keys.inbound.email(Provider::Mailgun), |a| {
        a.verify_mailgun(
            &signature.timestamp,
            &signature.token,
            &signature.signature,
            now,
        )
    });
    let account = match account {
        Ok(account) => account,
        Err(outcome) => return outcome,
    };
    let reason = match (event.event.as_str(), event.severity.as_str()) {
        ("failed", "permanent") => Reason::Bounce,
        ("complained", _) => Reason::Complaint,
        ("unsubscribed", _) => Reason::UserRequest,
        _ => return Outcome::Ignored,
    };
    let events = [MailEvent {
        address: event.recipient,
        reason,
        topic: String::new(),
        id: event.id,
    }];
    record(front, &account, &events).await
}

#[derive(Deserialize)]
struct SendgridEvent {
    #[serde(default)]
    email: String,
    event: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    sg_event_id: String,
    asm_group_id: Option<i64>,
}

/// `POST /inbound/sendgrid`.
pub(in crate::http) async fn sendgrid(
    State(front): State<Front>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    traced(Provider::Sendgrid, async move {
        let outcome = sendgrid_outcome(&front, &headers, body).await;
        (
            outcome,
            answer(outcome, "application/json", outcome_json(outcome)),
        )
    })
    .await
}

async fn sendgrid_outcome(
    front: &Front,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Outcome {
    let Ok(body) = body else {
        return Outcome::Malformed;
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = front.service.clock().now() / 1000;
    let keys = front.keys.current();
    let account = verified(keys.inbound.email(Provider::Sendgrid), |a| {
        a.verify_sendgrid(
            header("x-twilio-email-event-webhook-timestamp"),
            header("x-twilio-email-event-webhook-signature"),
            &body,
            now,
        )
    });
    let account = match account {
        Ok(account) => account,
        Err(outcome) => return outcome,
    };
    let Ok(events) = serde_json::from_slice::<Vec<SendgridEvent>>(&body) else {
        return Outcome::Malformed;
    };
    let events: Vec<MailEvent> = events
        .into_iter()
        .filter_map(|e| {
            let (reason, topic) = match e.event.as_str() {
                // `blocked` is SendGrid's soft bounce: nothing recorded.
                "bounce" if e.kind != "blocked" => (Reason::Bounce, String::new()),
                "spamreport" => (Reason::Complaint, String::new()),
                "unsubscribe" => (Reason::UserRequest, String::new()),
                "group_unsubscribe" => (
                    Reason::UserRequest,
                    e.asm_group_id
                        .and_then(|id| account.groups.get(&id).cloned())
                        .unwrap_or_default(),
                ),
                _ => return None,
            };
            Some(MailEvent {
                address: e.email,
                reason,
                topic,
                id: e.sg_event_id,
            })
        })
        .collect();
    record(front, &account, &events).await
}

/// The account of `accounts` whose key verifies the request, or why none does.
fn verified<'a>(
    accounts: impl Iterator<Item = &'a Arc<EmailAccount>>,
    verify: impl Fn(&EmailAccount) -> Result<(), Refused>,
) -> Result<Arc<EmailAccount>, Outcome> {
    let mut why = None;
    for account in accounts {
        match verify(account) {
            Ok(()) => return Ok(account.clone()),
            Err(refused) => why = Some(refused),
        }
    }
    Err(match why {
        Some(refused) => Outcome::Refused(refused),
        // No account of this provider at all.
        None => Outcome::UnknownNumber,
    })
}

/// Records each event; the first outage stops the batch (503: the provider redelivers it whole,
/// and what was recorded before is recorded once).
pub(super) async fn record(front: &Front, account: &EmailAccount, events: &[MailEvent]) -> Outcome {
    let provider = account.provider.as_str();
    let now = front.service.clock().now();
    let mut recorded = 0;
    for event in events {
        let Ok(person) = Recipient::parse(RecipientKind::Email, &event.address) else {
            tracing::info!(provider, "a mail event without a valid address, skipped");
            continue;
        };
        let Ok(scope) = Scope::parse(&account.tenant, Some(Channel::Email), &event.topic, "")
        else {
            return Outcome::Failed;
        };
        let expires_at = (event.reason == Reason::Bounce)
            .then_some(account.bounce_expiry_days)
            .flatten()
            .map(|days| now + i64::from(days) * 86_400_000);
        let cmd = OptOutCommand::new(
            Subject::Recipient(person),
            scope,
            event.reason,
            Source::Api,
            &format!("{provider}:{}", event.id),
            Durability::Durable,
            expires_at,
            provider.to_owned(),
        );
        let Ok(cmd) = cmd else {
            return Outcome::Malformed;
        };
        match front.service.opt_out(cmd).await {
            Ok(_) => recorded += 1,
            Err(ServiceError::Unavailable { message, cause }) => {
                tracing::warn!(error = ?cause, "{message}; the provider will redeliver");
                return Outcome::Unavailable;
            }
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "a mail event failed");
                return Outcome::Failed;
            }
        }
    }
    if recorded > 0 {
        Outcome::Recorded
    } else {
        Outcome::Ignored
    }
}

pub(super) fn outcome_json(outcome: Outcome) -> String {
    serde_json::json!({ "outcome": outcome.as_str() }).to_string()
}
