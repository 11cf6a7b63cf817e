//! Amazon SNS messages, which is how SES reports bounces, complaints and unsubscribes: the message
//! as SNS posts it, the string SNS signs, and the signature check.
//!
//! SNS signs with RSA PKCS#1 v1.5 — SHA-1 for `SignatureVersion` 1, SHA-256 for 2 — using the
//! private key of the certificate at `SigningCertURL`, over the message's fields in a fixed order,
//! each as `Name\nValue\n` (AWS's "Verifying the signatures of Amazon SNS messages"):
//! - `Notification`: `Message`, `MessageId`, `Subject` (only when present), `Timestamp`,
//!   `TopicArn`, `Type`;
//! - `SubscriptionConfirmation` and `UnsubscribeConfirmation`: `Message`, `MessageId`,
//!   `SubscribeURL`, `Timestamp`, `Token`, `TopicArn`, `Type`.
//!
//! The certificate is trusted only from an `https://sns.<region>.amazonaws.com[.cn]/…` URL, which
//! [`sns_url`] checks before anything is fetched or looked up; an account may pin the certificate
//! for a URL (air-gapped installs, tests), otherwise it is fetched over verified TLS (`http`'s
//! concern). The RSA check is `ring`'s, the certificate parse `x509-parser`'s: no cryptography here.

use super::{Refused, TOLERANCE_SECS};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde::Deserialize;

/// A message as SNS posts it (the body, JSON, sent as `text/plain`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SnsMessage {
    #[serde(rename = "Type")]
    pub(crate) kind: String,
    pub(crate) message_id: String,
    pub(crate) topic_arn: String,
    pub(crate) message: String,
    pub(crate) timestamp: String,
    pub(crate) signature_version: String,
    pub(crate) signature: String,
    #[serde(rename = "SigningCertURL")]
    pub(crate) signing_cert_url: String,
    pub(crate) subject: Option<String>,
    pub(crate) token: Option<String>,
    #[serde(rename = "SubscribeURL")]
    pub(crate) subscribe_url: Option<String>,
}

impl SnsMessage {
    /// The string SNS signed, or `None` for a type it does not sign this way (or a confirmation
    /// without its token or URL).
    fn string_to_sign(&self) -> Option<String> {
        let mut fields: Vec<(&str, &str)> = vec![("Message", &self.message)];
        fields.push(("MessageId", &self.message_id));
        match self.kind.as_str() {
            "Notification" => {
                if let Some(subject) = &self.subject {
                    fields.push(("Subject", subject));
                }
                fields.push(("Timestamp", &self.timestamp));
            }
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                fields.push(("SubscribeURL", self.subscribe_url.as_deref()?));
                fields.push(("Timestamp", &self.timestamp));
                fields.push(("Token", self.token.as_deref()?));
            }
            _ => return None,
        }
        fields.push(("TopicArn", &self.topic_arn));
        fields.push(("Type", &self.kind));
        Some(
            fields
                .into_iter()
                .map(|(name, value)| format!("{name}\n{value}\n"))
                .collect(),
        )
    }

    /// Checks the signature with the certificate (DER) from `SigningCertURL`, and that the message
    /// is no more than [`TOLERANCE_SECS`] old at `now_secs` (a replay).
    pub(crate) fn verify(&self, certificate: &[u8], now_secs: i64) -> Result<(), Refused> {
        use ring::signature::{
            RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256,
            UnparsedPublicKey,
        };
        let algorithm = match self.signature_version.as_str() {
            "1" => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "2" => &RSA_PKCS1_2048_8192_SHA256,
            _ => return Err(Refused::BadSignature),
        };
        let signed = self.string_to_sign().ok_or(Refused::BadSignature)?;
        let signature = BASE64
            .decode(self.signature.trim())
            .map_err(|_| Refused::BadSignature)?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(certificate).map_err(|_| Refused::BadSignature)?;
        let key = &cert.public_key().subject_public_key.data;
        UnparsedPublicKey::new(algorithm, key.as_ref())
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| Refused::BadSignature)?;
        let at = self
            .timestamp
            .parse::<jiff::Timestamp>()
            .map_err(|_| Refused::BadSignature)?;
        if (now_secs - at.as_second()).abs() > TOLERANCE_SECS {
            return Err(Refused::Stale);
        }
        Ok(())
    }
}

/// Whether `url` is where SNS keeps its signing certificates or confirms subscriptions: HTTPS on
/// `sns.<region>.amazonaws.com` (or `.amazonaws.com.cn`), default port, no user information.
pub(crate) fn sns_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let Some(authority) = uri.authority() else {
        return false;
    };
    let host = authority.host();
    let region = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))
        .and_then(|h| h.strip_prefix("sns."));
    uri.scheme_str() == Some("https")
        && authority.port().is_none()
        && !authority.as_str().contains('@')
        && region.is_some_and(|r| {
            !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_sns_hosts_are_trusted_for_certificates() {
        for good in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=x",
        ] {
            assert!(sns_url(good), "{good}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
            "https://s3.amazonaws.com/cert.pem",
            "https://sns..amazonaws.com/cert.pem",
            "https://x@sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
            "https://sns.us_east.amazonaws.com/cert.pem",
            "not a url",
        ] {
            assert!(!sns_url(bad), "{bad}");
        }
    }

    #[test]
    fn the_signed_string_lists_the_fields_in_amazons_order() {
        let message: SnsMessage = serde_json::from_str(
            r#"{"Type":"Notification","MessageId":"m","TopicArn":"arn:t","Subject":"s",
                "Message":"body","Timestamp":"2026-12-04T00:00:00.000Z","SignatureVersion":"2",
                "Signature":"","SigningCertURL":"https://sns.us-east-1.amazonaws.com/c.pem"}"#,
        )
        .unwrap();
        assert_eq!(
            message.string_to_sign().unwrap(),
            "Message\nbody\nMessageId\nm\nSubject\ns\nTimestamp\n2026-12-04T00:00:00.000Z\n\
             TopicArn\narn:t\nType\nNotification\n"
        );
    }
}
