//! Who may tell us that a person said STOP, or that an address bounced or complained: the SMS and
//! mail providers' accounts in the key file (`[[inbound]]`; mail accounts in docs/inbound.md), and
//! the signatures that prove a webhook came from one of them.
//!
//! ```toml
//! [[inbound]]
//! provider = "twilio"              # twilio | sms (any provider signing per Standard Webhooks)
//! secret = "…"                     # twilio: the account's auth token; sms: "whsec_<base64 key>"
//! tenant = "acme"                  # whose opt-outs a keyword to these numbers records
//! numbers = ["+15005550006"]       # the numbers people text (E.164), each in one entry per provider
//! stop_reply = "…"                 # optional replies; defaults say who and how to undo
//! start_reply = "…"
//! help_reply = "…"
//! ```
//!
//! Both signatures are HMACs (RustCrypto's `hmac` with `sha1`/`sha2`), compared in constant time:
//! - **Twilio** (`X-Twilio-Signature`): base64 of HMAC-SHA1, keyed with the auth token, over the full
//!   URL Twilio called followed by every POST parameter's name and value, sorted by name.
//! - **Standard Webhooks** (`webhook-id`, `webhook-timestamp`, `webhook-signature`): base64 of
//!   HMAC-SHA256, keyed with the secret's base64-decoded bytes after `whsec_`, over
//!   `{id}.{timestamp}.{body}`; the header lists `v1,<signature>` entries separated by spaces, any of
//!   which may match; a timestamp more than 5 minutes from now is refused (a replay).
//! - **Mailgun**: hex HMAC-SHA256 with the signing key over timestamp and token.
//! - **SendGrid**: ECDSA P-256 with SHA-256 (RustCrypto's `p256`) over the timestamp header and the
//!   raw body, a base64 DER signature, verified with the account's base64 DER public key.
//! - **SES** (through Amazon SNS): RSA over the message's fields with the key of SNS's signing
//!   certificate (`sns`).

mod email;
mod sns;

pub(crate) use email::EmailAccount;
pub(crate) use sns::{SnsMessage, sns_url};

use anyhow::{Context, ensure};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use std::{collections::HashMap, fmt, sync::Arc};

/// How far a Standard Webhooks timestamp may be from now, either way.
pub(crate) const TOLERANCE_SECS: i64 = 5 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Provider {
    Twilio,
    /// Any SMS provider that signs per the Standard Webhooks specification.
    Sms,
    /// Mailgun's event webhooks (HMAC-SHA256 of timestamp and token).
    Mailgun,
    /// SendGrid's Event Webhook (ECDSA P-256 over timestamp and body).
    Sendgrid,
    /// Amazon SES events delivered by an SNS topic (RSA with SNS's signing certificate).
    Ses,
}

impl Provider {
    fn parse(name: &str) -> anyhow::Result<Provider> {
        match name {
            "twilio" => Ok(Provider::Twilio),
            "sms" => Ok(Provider::Sms),
            "mailgun" => Ok(Provider::Mailgun),
            "sendgrid" => Ok(Provider::Sendgrid),
            "ses" => Ok(Provider::Ses),
            other => {
                anyhow::bail!(
                    "unknown provider {other:?} (twilio | sms | mailgun | sendgrid | ses)"
                )
            }
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Provider::Twilio => "twilio",
            Provider::Sms => "sms",
            Provider::Mailgun => "mailgun",
            Provider::Sendgrid => "sendgrid",
            Provider::Ses => "ses",
        }
    }
}

/// One provider account: the numbers people text, the tenant those texts speak to, and the replies.
pub(crate) struct InboundAccount {
    pub(crate) provider: Provider,
    secret: Vec<u8>,
    pub(crate) tenant: String,
    pub(crate) stop_reply: String,
    pub(crate) start_reply: String,
    pub(crate) help_reply: String,
}

impl fmt::Debug for InboundAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundAccount")
            .field("provider", &self.provider)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// Why a webhook's signature was refused (a label of `suppressd_inbound_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("no signature")]
    Unsigned,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the timestamp is more than 5 minutes from now")]
    Stale,
    /// SNS: the signing certificate's URL is not SNS's, or not the one pinned.
    #[error("the signing certificate is not SNS's")]
    UntrustedCertificate,
}

impl Refused {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refused::Unsigned => "unsigned",
            Refused::BadSignature => "bad_signature",
            Refused::Stale => "stale",
            Refused::UntrustedCertificate => "untrusted_certificate",
        }
    }
}

impl InboundAccount {
    /// Twilio's `X-Twilio-Signature` over `url` and the form's `params`.
    pub(crate) fn verify_twilio(
        &self,
        url: &str,
        params: &[(String, String)],
        signature: Option<&str>,
    ) -> Result<(), Refused> {
        let signature = signature.ok_or(Refused::Unsigned)?;
        let given = BASE64
            .decode(signature.trim())
            .map_err(|_| Refused::BadSignature)?;
        let mut sorted: Vec<&(String, String)> = params.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&self.secret).expect("any key length");
        mac.update(url.as_bytes());
        for (name, value) in sorted {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
        mac.verify_slice(&given).map_err(|_| Refused::BadSignature)
    }

    /// A Standard Webhooks signature over `id`, `timestamp` and `body`, at `now_secs`.
    pub(crate) fn verify_standard(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signatures: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), Refused> {
        let (Some(id), Some(timestamp), Some(signatures)) = (id, timestamp, signatures) else {
            return Err(Refused::Unsigned);
        };
        fresh(timestamp, now_secs)?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.trim().as_bytes());
        mac.update(b".");
        mac.update(body);
        let matches = signatures.split_whitespace().any(|entry| {
            entry
                .strip_prefix("v1,")
                .and_then(|s| BASE64.decode(s).ok())
                .is_some_and(|given| mac.clone().verify_slice(&given).is_ok())
        });
        if matches {
            Ok(())
        } else {
            Err(Refused::BadSignature)
        }
    }
}

/// A signed timestamp (Unix seconds) no further than [`TOLERANCE_SECS`] from now.
fn fresh(timestamp: &str, now_secs: i64) -> Result<(), Refused> {
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Refused::BadSignature)?;
    if (now_secs - at).abs() > TOLERANCE_SECS {
        return Err(Refused::Stale);
    }
    Ok(())
}

/// The accounts: SMS ones by provider and number, mail ones by provider (an event is matched to
/// the account whose key verifies it).
#[derive(Debug, Default)]
pub(crate) struct InboundAccounts {
    by_number: HashMap<(Provider, String), Arc<InboundAccount>>,
    email: Vec<Arc<EmailAccount>>,
}

impl InboundAccounts {
    /// The account `provider` delivers texts to `number` for.
    pub(crate) fn for_number(
        &self,
        provider: Provider,
        number: &str,
    ) -> Option<Arc<InboundAccount>> {
        self.by_number
            .get(&(provider, number.trim().to_owned()))
            .cloned()
    }

    /// The mail accounts of `provider`.
    pub(crate) fn email(&self, provider: Provider) -> impl Iterator<Item = &Arc<EmailAccount>> {
        self.email.iter().filter(move |a| a.provider == provider)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_number.len() + self.email.len()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InboundEntry {
    provider: String,
    secret: Option<String>,
    public_key: Option<String>,
    tenant: String,
    numbers: Option<Vec<String>>,
    stop_reply: Option<String>,
    start_reply: Option<String>,
    help_reply: Option<String>,
    bounce_expiry_days: Option<u32>,
    groups: Option<HashMap<String, String>>,
    topic_arns: Option<Vec<String>>,
    certificates: Option<HashMap<String, String>>,
}

/// Checks the `[[inbound]]` entries and indexes them.
pub(super) fn accounts(entries: Vec<InboundEntry>) -> anyhow::Result<InboundAccounts> {
    let mut accounts = InboundAccounts::default();
    for (i, entry) in entries.into_iter().enumerate() {
        let provider =
            Provider::parse(&entry.provider).with_context(|| format!("inbound entry {i}"))?;
        crate::domain::Scope::parse(&entry.tenant, None, "", "")
            .map_err(|e| anyhow::anyhow!("inbound entry {i}: tenant: {e}"))?;
        match provider {
            Provider::Twilio | Provider::Sms => sms_account(&mut accounts, i, provider, entry)?,
            Provider::Mailgun | Provider::Sendgrid | Provider::Ses => {
                accounts
                    .email
                    .push(Arc::new(email::email_account(i, provider, entry)?));
            }
        }
    }
    Ok(accounts)
}

fn sms_account(
    accounts: &mut InboundAccounts,
    i: usize,
    provider: Provider,
    entry: InboundEntry,
) -> anyhow::Result<()> {
    let InboundEntry {
        secret,
        tenant,
        numbers,
        stop_reply,
        start_reply,
        help_reply,
        ..
    } = entry;
    ensure!(
        entry.public_key.is_none()
            && entry.bounce_expiry_days.is_none()
            && entry.groups.is_none()
            && entry.topic_arns.is_none()
            && entry.certificates.is_none(),
        "inbound entry {i}: public_key, bounce_expiry_days, groups, topic_arns and certificates \
         are for mail providers"
    );
    let secret = secret.with_context(|| format!("inbound entry {i}: no secret"))?;
    let secret = match provider {
        Provider::Sms => secret
            .trim()
            .strip_prefix("whsec_")
            .and_then(|s| BASE64.decode(s).ok())
            .with_context(|| {
                format!("inbound entry {i}: an sms secret is whsec_ followed by base64")
            })?,
        _ => secret.trim().as_bytes().to_vec(),
    };
    ensure!(!secret.is_empty(), "inbound entry {i}: empty secret");
    let numbers = numbers.unwrap_or_default();
    ensure!(!numbers.is_empty(), "inbound entry {i}: no numbers");
    let account = Arc::new(InboundAccount {
        provider,
        secret,
        stop_reply: stop_reply.unwrap_or_else(|| {
            format!(
                "You will no longer receive text messages from {tenant}. Reply START to receive \
                 them again."
            )
        }),
        start_reply: start_reply.unwrap_or_else(|| {
            format!("You will receive text messages from {tenant} again. Reply STOP to stop.")
        }),
        help_reply: help_reply.unwrap_or_else(|| {
            format!("Messages from {tenant}. Reply STOP to stop, START to receive them again.")
        }),
        tenant,
    });
    for number in numbers {
        let number = number.trim().to_owned();
        ensure!(
            number.starts_with('+') && number.len() > 4,
            "inbound entry {i}: number {number:?} is not E.164 (+ and digits)"
        );
        ensure!(
            accounts
                .by_number
                .insert((provider, number.clone()), account.clone())
                .is_none(),
            "number {number:?} is listed twice for provider {}",
            provider.as_str()
        );
    }
    Ok(())
}
