//! Mail provider accounts (`provider = "mailgun" | "sendgrid" | "ses"` in `[[inbound]]`): the key
//! their events are signed with (for SES: the SNS topics they come from and any pinned signing
//! certificates), and how the events map to records (docs/inbound.md).

use super::{BASE64, InboundEntry, Provider, Refused, fresh};
use anyhow::{Context, ensure};
use base64::Engine;
use hmac::{Hmac, Mac};
use std::{collections::HashMap, fmt};

/// A mail provider account: the key its events are signed with, the tenant they speak for, and how
/// they map to records.
pub(crate) struct EmailAccount {
    pub(crate) provider: Provider,
    key: EmailKey,
    pub(crate) tenant: String,
    /// How long a hard bounce suppresses the address (`None`: until removed).
    pub(crate) bounce_expiry_days: Option<u32>,
    /// SendGrid unsubscribe group ids and the topic each stands for.
    pub(crate) groups: HashMap<i64, String>,
}

enum EmailKey {
    Hmac(Vec<u8>),
    P256(Box<p256::ecdsa::VerifyingKey>),
    /// SES: the SNS topics whose messages speak for the tenant, and signing certificates (DER)
    /// pinned by URL.
    Sns {
        topic_arns: Vec<String>,
        pinned: HashMap<String, Vec<u8>>,
    },
}

impl fmt::Debug for EmailAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailAccount")
            .field("provider", &self.provider)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl EmailAccount {
    /// Mailgun: hex HMAC-SHA256, keyed with the webhook signing key, over `timestamp` then `token`.
    pub(crate) fn verify_mailgun(
        &self,
        timestamp: &str,
        token: &str,
        signature: &str,
        now_secs: i64,
    ) -> Result<(), Refused> {
        let EmailKey::Hmac(key) = &self.key else {
            return Err(Refused::BadSignature);
        };
        fresh(timestamp, now_secs)?;
        let given = hex::decode(signature.trim()).map_err(|_| Refused::BadSignature)?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
        mac.update(timestamp.as_bytes());
        mac.update(token.as_bytes());
        mac.verify_slice(&given).map_err(|_| Refused::BadSignature)
    }

    /// SendGrid: a base64 DER ECDSA P-256 signature (SHA-256) over `timestamp` then the raw body.
    pub(crate) fn verify_sendgrid(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), Refused> {
        use p256::ecdsa::{Signature, signature::Verifier};
        let EmailKey::P256(key) = &self.key else {
            return Err(Refused::BadSignature);
        };
        let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
            return Err(Refused::Unsigned);
        };
        fresh(timestamp, now_secs)?;
        let der = BASE64
            .decode(signature.trim())
            .map_err(|_| Refused::BadSignature)?;
        let signature = Signature::from_der(&der).map_err(|_| Refused::BadSignature)?;
        let mut signed = timestamp.trim().as_bytes().to_vec();
        signed.extend_from_slice(body);
        key.verify(&signed, &signature)
            .map_err(|_| Refused::BadSignature)
    }
}

impl EmailAccount {
    /// Whether this SES account takes messages from the SNS topic `arn`.
    pub(crate) fn takes_topic(&self, arn: &str) -> bool {
        matches!(&self.key, EmailKey::Sns { topic_arns, .. } if topic_arns.iter().any(|t| t == arn))
    }

    /// The signing certificate (DER) pinned for `url`, if any.
    pub(crate) fn pinned_certificate(&self, url: &str) -> Option<&[u8]> {
        match &self.key {
            EmailKey::Sns { pinned, .. } => pinned.get(url).map(Vec::as_slice),
            _ => None,
        }
    }

    /// Whether this SES account pins certificates: then no other is fetched or trusted.
    pub(crate) fn pins(&self) -> bool {
        matches!(&self.key, EmailKey::Sns { pinned, .. } if !pinned.is_empty())
    }
}

pub(super) fn email_account(
    i: usize,
    provider: Provider,
    entry: InboundEntry,
) -> anyhow::Result<EmailAccount> {
    use p256::pkcs8::DecodePublicKey;
    ensure!(
        entry.numbers.is_none()
            && entry.stop_reply.is_none()
            && entry.start_reply.is_none()
            && entry.help_reply.is_none(),
        "inbound entry {i}: numbers and replies are for SMS providers"
    );
    ensure!(
        provider == Provider::Ses || (entry.topic_arns.is_none() && entry.certificates.is_none()),
        "inbound entry {i}: topic_arns and certificates are for ses"
    );
    let key = match provider {
        Provider::Ses => sns_key(i, entry.topic_arns, entry.certificates)?,
        Provider::Mailgun => {
            let secret = entry
                .secret
                .filter(|s| !s.trim().is_empty())
                .with_context(|| {
                    format!("inbound entry {i}: mailgun needs its signing key as secret")
                })?;
            EmailKey::Hmac(secret.trim().as_bytes().to_vec())
        }
        _ => {
            let public_key = entry.public_key.with_context(|| {
                format!("inbound entry {i}: sendgrid needs the verification key as public_key")
            })?;
            let der = BASE64
                .decode(public_key.trim())
                .ok()
                .and_then(|der| p256::ecdsa::VerifyingKey::from_public_key_der(&der).ok())
                .with_context(|| {
                    format!("inbound entry {i}: public_key is not a base64 P-256 public key")
                })?;
            EmailKey::P256(Box::new(der))
        }
    };
    let mut groups = HashMap::new();
    for (id, topic) in entry.groups.unwrap_or_default() {
        let id: i64 = id
            .parse()
            .with_context(|| format!("inbound entry {i}: group {id:?} is not a number"))?;
        crate::domain::Scope::parse(&entry.tenant, None, &topic, "")
            .map_err(|e| anyhow::anyhow!("inbound entry {i}: group {id}: {e}"))?;
        groups.insert(id, topic);
    }
    Ok(EmailAccount {
        provider,
        key,
        tenant: entry.tenant,
        bounce_expiry_days: Some(entry.bounce_expiry_days.unwrap_or(DEFAULT_BOUNCE_DAYS))
            .filter(|&d| d > 0),
        groups,
    })
}

/// An SES account's topics and pinned certificates (PEM in the key file), checked.
fn sns_key(
    i: usize,
    topic_arns: Option<Vec<String>>,
    certificates: Option<HashMap<String, String>>,
) -> anyhow::Result<EmailKey> {
    let topic_arns = topic_arns.unwrap_or_default();
    ensure!(
        !topic_arns.is_empty(),
        "inbound entry {i}: ses needs topic_arns, the SNS topics its events come from"
    );
    for arn in &topic_arns {
        ensure!(
            arn.starts_with("arn:aws") && arn.split(':').count() == 6,
            "inbound entry {i}: {arn:?} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
        );
    }
    let mut pinned = HashMap::new();
    for (url, pem) in certificates.unwrap_or_default() {
        ensure!(
            super::sns_url(&url),
            "inbound entry {i}: certificate URL {url:?} is not an https://sns.REGION.amazonaws.com URL"
        );
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes())
            .map_err(|e| anyhow::anyhow!("inbound entry {i}: certificate for {url}: {e}"))?;
        pem.parse_x509()
            .map_err(|e| anyhow::anyhow!("inbound entry {i}: certificate for {url}: {e}"))?;
        pinned.insert(url, pem.contents);
    }
    Ok(EmailKey::Sns { topic_arns, pinned })
}

/// How long a hard bounce suppresses an address unless an entry says otherwise (0: until removed).
const DEFAULT_BOUNCE_DAYS: u32 = 180;
