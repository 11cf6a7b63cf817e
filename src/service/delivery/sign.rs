//! What a webhook carries and how it is signed, per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com/>): the body is JSON; the headers are `webhook-id` (the
//! change's stable id, the same on every retry, for the receiver to deduplicate on),
//! `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the base64 part of the
//! `whsec_` secret). Pure: no I/O.

use crate::{
    audit::AuditEntry,
    domain::{Millis, Reason, Source},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// The prefix of every signing secret.
pub(crate) const SECRET_PREFIX: &str = "whsec_";

/// A fresh signing secret: 32 random bytes.
pub(crate) fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The key a secret signs with, or why the secret is not one.
pub(crate) fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| format!("must start with {SECRET_PREFIX}"))?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| format!("the part after {SECRET_PREFIX} must be base64"))?;
    if !(24..=64).contains(&key.len()) {
        return Err("must hold 24 to 64 bytes (base64 after whsec_)".into());
    }
    Ok(key)
}

/// The `webhook-id` of a change: its audit log index, stable across retries and replicas.
pub(crate) fn webhook_id(seq: u64) -> String {
    format!("evt_{seq}")
}

/// The `webhook-signature` header for one attempt.
pub(crate) fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The JSON body: the envelope Standard Webhooks suggests (`type`, `timestamp`, `data`).
#[derive(Serialize)]
struct Body<'a> {
    r#type: String,
    timestamp: String,
    data: Data<'a>,
}

/// One change, as `WatchChanges` carries it, with names instead of the proto's numbers.
#[derive(Serialize)]
struct Data<'a> {
    seq: u64,
    kind: &'a str,
    recorded_at: String,
    actor: &'a str,
    subject_hash: &'a str,
    tenant: &'a str,
    channel: &'static str,
    topic: &'a str,
    campaign: &'a str,
    reason: &'static str,
    source: &'static str,
    receipt_id: &'a str,
    expires_at: Option<String>,
    detail: &'a str,
    trace_id: &'a str,
    /// The person's identifier, only for a destination registered as `needs_identifier` and only
    /// when the opt-out kept it (the identifier vault).
    #[serde(skip_serializing_if = "Option::is_none")]
    identifier: Option<&'a str>,
}

fn rfc3339(ms: Millis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn channel_name(code: u8) -> &'static str {
    match code {
        1 => "email",
        2 => "sms",
        3 => "push",
        4 => "voice",
        5 => "postal",
        _ => "",
    }
}

/// The body of the webhook for `entry`; `type` is `suppression.<kind>`. `identifier` only for a
/// `needs_identifier` destination.
pub(crate) fn body(entry: &AuditEntry, identifier: Option<&str>) -> Vec<u8> {
    let body = Body {
        r#type: format!("suppression.{}", entry.action),
        timestamp: rfc3339(entry.time),
        data: Data {
            seq: entry.seq,
            kind: &entry.action,
            recorded_at: rfc3339(entry.time),
            actor: &entry.actor,
            subject_hash: &entry.subject,
            tenant: &entry.tenant,
            channel: channel_name(entry.channel),
            topic: &entry.topic,
            campaign: &entry.campaign,
            reason: Reason::from_code(entry.reason).map_or("", Reason::as_str),
            source: Source::from_code(entry.source).map_or("", Source::as_str),
            receipt_id: &entry.receipt,
            expires_at: entry.expires_at.map(rfc3339),
            detail: entry.detail.as_deref().unwrap_or_default(),
            trace_id: &entry.trace_id,
            identifier,
        },
    };
    serde_json::to_vec(&body).expect("a webhook body always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries (their test vectors).
    #[test]
    fn signs_as_the_reference_libraries_do() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_secret_must_be_whsec_and_base64() {
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(secret_key("whsec_not base64!").is_err());
        assert!(secret_key(&new_secret()).is_ok());
    }
}
