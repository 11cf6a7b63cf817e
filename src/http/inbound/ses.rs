//! `POST /inbound/ses`: Amazon SES's bounce and complaint notifications, delivered by an SNS topic
//! (docs/inbound.md).
//!
//! The account is the SES entry that lists the message's `TopicArn`. The signing certificate must
//! come from an SNS URL (`auth::inbound::sns_url`); an account that pins certificates trusts only
//! those, otherwise the certificate is fetched over TLS verified against the Web PKI (webpki-roots)
//! and kept for the process's life (SNS rotates certificates under new URLs). Then:
//! - `SubscriptionConfirmation`: suppressd confirms the subscription by fetching its `SubscribeURL`
//!   (also an SNS URL); if that fails, 503, and SNS sends the confirmation again.
//! - `Notification`: the SES event in `Message` — `notificationType` (identity notifications) or
//!   `eventType` (configuration-set event publishing). A `Permanent` bounce records `BOUNCE` for each
//!   bounced recipient, a complaint `COMPLAINT` for each complained recipient; anything else
//!   (transient or undetermined bounces, deliveries, sends, opens) records nothing. The idempotency
//!   key is the SNS message id and the recipient's place in it, so a redelivery records nothing new.
//! - `UnsubscribeConfirmation`: nothing.

use super::{
    Front, Outcome, answer,
    email::{MailEvent, outcome_json, record},
    traced,
};
use crate::{
    auth::inbound::{EmailAccount, Provider, Refused, SnsMessage, sns_url},
    domain::Reason,
};
use axum::{
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    response::Response,
};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Deserialize;
use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

/// How long fetching a certificate or confirming a subscription may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a certificate (or a confirmation's answer) may weigh.
const FETCH_LIMIT: usize = 64 * 1024;

/// `POST /inbound/ses`.
pub(in crate::http) async fn ses(
    State(front): State<Front>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    traced(Provider::Ses, async move {
        let outcome = ses_outcome(&front, body).await;
        (
            outcome,
            answer(outcome, "application/json", outcome_json(outcome)),
        )
    })
    .await
}

async fn ses_outcome(front: &Front, body: Result<Bytes, BytesRejection>) -> Outcome {
    let Ok(body) = body else {
        return Outcome::Malformed;
    };
    let Ok(message) = serde_json::from_slice::<SnsMessage>(&body) else {
        return Outcome::Malformed;
    };
    let keys = front.keys.current();
    let Some(account) = keys
        .inbound
        .email(Provider::Ses)
        .find(|a| a.takes_topic(&message.topic_arn))
        .cloned()
    else {
        return Outcome::UnknownNumber;
    };
    let certificate = match certificate(&account, &message.signing_cert_url).await {
        Ok(certificate) => certificate,
        Err(outcome) => return outcome,
    };
    let now = front.service.clock().now() / 1000;
    if let Err(refused) = message.verify(&certificate, now) {
        return Outcome::Refused(refused);
    }
    match message.kind.as_str() {
        "Notification" => match events(&message) {
            Some(events) => record(front, &account, &events).await,
            None => Outcome::Ignored,
        },
        "SubscriptionConfirmation" => confirm(message.subscribe_url.as_deref()).await,
        _ => Outcome::Ignored,
    }
}

/// The signing certificate (DER) at `url`: the pinned one, or one fetched from SNS.
async fn certificate(account: &EmailAccount, url: &str) -> Result<Arc<Vec<u8>>, Outcome> {
    if !sns_url(url) {
        return Err(Outcome::Refused(Refused::UntrustedCertificate));
    }
    if account.pins() {
        return account
            .pinned_certificate(url)
            .map(|der| Arc::new(der.to_vec()))
            .ok_or(Outcome::Refused(Refused::UntrustedCertificate));
    }
    static FETCHED: LazyLock<Mutex<HashMap<String, Arc<Vec<u8>>>>> = LazyLock::new(Mutex::default);
    if let Some(der) = FETCHED.lock().expect("certificates lock").get(url) {
        return Ok(der.clone());
    }
    let fetched = fetch(url).await.and_then(|pem| {
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)?;
        anyhow::ensure!(
            pem.parse_x509()?.validity().is_valid(),
            "the certificate is outside its validity"
        );
        Ok(Arc::new(pem.contents))
    });
    match fetched {
        Ok(der) => {
            let mut cache = FETCHED.lock().expect("certificates lock");
            cache.insert(url.to_owned(), der.clone());
            Ok(der)
        }
        Err(e) => {
            tracing::warn!(
                url,
                error = format!("{e:#}"),
                "could not fetch SNS's signing certificate; SNS will deliver again"
            );
            Err(Outcome::Unavailable)
        }
    }
}

/// Confirms an SNS subscription by fetching its `SubscribeURL`.
async fn confirm(url: Option<&str>) -> Outcome {
    let Some(url) = url.filter(|u| sns_url(u)) else {
        return Outcome::Malformed;
    };
    match fetch(url).await {
        Ok(_) => {
            tracing::info!("SNS subscription confirmed");
            Outcome::Subscribed
        }
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "could not confirm the SNS subscription; SNS will ask again"
            );
            Outcome::Unavailable
        }
    }
}

/// GETs `url` over TLS verified against the Web PKI; the body, at most [`FETCH_LIMIT`].
async fn fetch(url: &str) -> anyhow::Result<Bytes> {
    type Https = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;
    static CLIENT: LazyLock<anyhow::Result<Https>> = LazyLock::new(|| {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))?
            .https_only()
            .enable_http1()
            .build();
        Ok(Client::builder(TokioExecutor::new()).build(https))
    });
    let client = CLIENT
        .as_ref()
        .map_err(|e| anyhow::anyhow!("the HTTPS client: {e:#}"))?;
    let got = tokio::time::timeout(FETCH_TIMEOUT, async {
        let response = client.get(url.parse()?).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "answered {}",
            response.status()
        );
        let body = Limited::new(response.into_body(), FETCH_LIMIT)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(body.to_bytes())
    })
    .await;
    got.map_err(|_| anyhow::anyhow!("no answer within {FETCH_TIMEOUT:?}"))?
}

/// An SES notification or published event, as far as it says who bounced or complained.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SesEvent {
    notification_type: Option<String>,
    event_type: Option<String>,
    bounce: Option<Bounce>,
    complaint: Option<Complaint>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bounce {
    bounce_type: String,
    #[serde(default)]
    bounced_recipients: Vec<Address>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Complaint {
    #[serde(default)]
    complained_recipients: Vec<Address>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Address {
    email_address: String,
}

/// What the notification records, or `None` when nothing (not an SES event, or one of a kind that
/// records nothing).
fn events(message: &SnsMessage) -> Option<Vec<MailEvent>> {
    let event: SesEvent = serde_json::from_str(&message.message).ok()?;
    let kind = event.notification_type.or(event.event_type)?;
    let (reason, addresses) = match (kind.as_str(), event.bounce, event.complaint) {
        ("Bounce", Some(b), _) if b.bounce_type == "Permanent" => {
            (Reason::Bounce, b.bounced_recipients)
        }
        ("Complaint", _, Some(c)) => (Reason::Complaint, c.complained_recipients),
        _ => return None,
    };
    Some(
        addresses
            .into_iter()
            .enumerate()
            .map(|(n, a)| MailEvent {
                address: a.email_address,
                reason,
                topic: String::new(),
                id: format!("{}:{n}", message.message_id),
            })
            .collect(),
    )
}
