//! Proto messages to domain values and back. Messages are destructured completely, so a new proto
//! field breaks the build here instead of being silently ignored. Every error names the field as the
//! caller wrote it.

use crate::{
    auth::{TokenClaims, token},
    domain::{
        Channel, Invalid, Match, Millis, Notice, Reason, Recipient, RecipientKind, Scope, Source,
        Subject, control::Zone,
    },
    proto,
    service::{Check, Durability, OptOutCommand, Purpose},
};

pub mod consent;
pub mod controls;
pub mod imports;
pub use controls::answer_to_proto;

/// The most checks one `CheckSuppressedBatch` may carry.
pub const MAX_BATCH: usize = 1_000;

mod receipts;
pub(crate) use receipts::{
    checkpoint_to_proto, confirmation, confirmation_to_proto, consistency_to_proto,
    delivery_to_proto, receipt_id, receipt_to_proto,
};
mod rights;
pub use rights::*;
mod triggers;

pub fn recipient(r: Option<proto::Recipient>) -> Result<Recipient, Invalid> {
    use proto::recipient::Id;
    let proto::Recipient { id } = r.ok_or_else(|| Invalid::new("recipient", "is required"))?;
    let (kind, raw) = match id.ok_or_else(|| {
        Invalid::new(
            "recipient",
            "must set one of email, phone, user_id, push_token, postal_address",
        )
    })? {
        Id::Email(v) => (RecipientKind::Email, v),
        Id::Phone(v) => (RecipientKind::Phone, v),
        Id::UserId(v) => (RecipientKind::UserId, v),
        Id::PushToken(v) => (RecipientKind::PushToken, v),
        Id::PostalAddress(v) => (RecipientKind::PostalAddress, v),
    };
    Recipient::parse(kind, &raw)
}

fn channel(code: i32) -> Result<Option<Channel>, Invalid> {
    match proto::Channel::try_from(code) {
        Ok(proto::Channel::Unspecified) => Ok(None),
        Ok(proto::Channel::Email) => Ok(Some(Channel::Email)),
        Ok(proto::Channel::Sms) => Ok(Some(Channel::Sms)),
        Ok(proto::Channel::Push) => Ok(Some(Channel::Push)),
        Ok(proto::Channel::Voice) => Ok(Some(Channel::Voice)),
        Ok(proto::Channel::Postal) => Ok(Some(Channel::Postal)),
        Err(_) => Err(Invalid::new(
            "scope.channel",
            format!("unknown channel {code}"),
        )),
    }
}

fn channel_to_proto(c: Option<Channel>) -> proto::Channel {
    match c {
        None => proto::Channel::Unspecified,
        Some(Channel::Email) => proto::Channel::Email,
        Some(Channel::Sms) => proto::Channel::Sms,
        Some(Channel::Push) => proto::Channel::Push,
        Some(Channel::Voice) => proto::Channel::Voice,
        Some(Channel::Postal) => proto::Channel::Postal,
    }
}

fn scope_parts(
    s: Option<proto::Scope>,
) -> Result<(String, Option<Channel>, String, String), Invalid> {
    let proto::Scope {
        tenant,
        channel: code,
        topic,
        campaign,
    } = s.ok_or_else(|| Invalid::new("scope", "is required"))?;
    Ok((tenant, channel(code)?, topic, campaign))
}

pub fn opt_out_scope(s: Option<proto::Scope>) -> Result<Scope, Invalid> {
    let (tenant, channel, topic, campaign) = scope_parts(s)?;
    Scope::parse(tenant, channel, topic, campaign)
}

pub fn notice(s: Option<proto::Scope>) -> Result<Notice, Invalid> {
    let (tenant, channel, topic, campaign) = scope_parts(s)?;
    Notice::parse(tenant, channel, topic, campaign)
}

pub fn check(req: proto::CheckSuppressedRequest) -> Result<Check, Invalid> {
    let proto::CheckSuppressedRequest {
        recipient: r,
        scope,
        time_zone,
        purpose,
    } = req;
    Ok(Check {
        recipient: recipient(r)?,
        notice: notice(scope)?,
        zone: (!time_zone.is_empty())
            .then(|| Zone::parse("time_zone", &time_zone))
            .transpose()?,
        purpose: match proto::CheckPurpose::try_from(purpose) {
            Ok(proto::CheckPurpose::Unspecified) => Purpose::Notice,
            Ok(proto::CheckPurpose::OptOutConfirmation) => Purpose::OptOutConfirmation,
            Err(_) => {
                return Err(Invalid::new(
                    "purpose",
                    format!("unknown purpose {purpose}"),
                ));
            }
        },
    })
}

pub fn checks(req: proto::CheckSuppressedBatchRequest) -> Result<Vec<Check>, Invalid> {
    let proto::CheckSuppressedBatchRequest { checks } = req;
    if checks.len() > MAX_BATCH {
        return Err(Invalid::new(
            "checks",
            format!("at most {MAX_BATCH} checks per call, got {}", checks.len()),
        ));
    }
    checks
        .into_iter()
        .enumerate()
        .map(|(i, c)| check(c).map_err(|e| e.within(&format!("checks[{i}]"))))
        .collect()
}

fn reason(code: i32) -> Result<Reason, Invalid> {
    match proto::Reason::try_from(code) {
        Ok(proto::Reason::UserRequest) => Ok(Reason::UserRequest),
        Ok(proto::Reason::Complaint) => Ok(Reason::Complaint),
        Ok(proto::Reason::Bounce) => Ok(Reason::Bounce),
        Ok(proto::Reason::Legal) => Ok(Reason::Legal),
        Ok(proto::Reason::Operator) => Ok(Reason::Operator),
        Ok(proto::Reason::Unspecified) => Err(Invalid::new("reason", "is required")),
        Ok(proto::Reason::NoConsent) => Err(Invalid::new(
            "reason",
            "NO_CONSENT is what a check answers, not a reason to opt out",
        )),
        Err(_) => Err(Invalid::new("reason", format!("unknown reason {code}"))),
    }
}

fn reason_to_proto(r: Reason) -> proto::Reason {
    match r {
        Reason::UserRequest => proto::Reason::UserRequest,
        Reason::Complaint => proto::Reason::Complaint,
        Reason::Bounce => proto::Reason::Bounce,
        Reason::Legal => proto::Reason::Legal,
        Reason::Operator => proto::Reason::Operator,
    }
}

fn source(code: i32) -> Result<Source, Invalid> {
    match proto::Source::try_from(code) {
        Ok(proto::Source::Link) => Ok(Source::Link),
        Ok(proto::Source::OneClick) => Ok(Source::OneClick),
        Ok(proto::Source::SmsKeyword) => Ok(Source::SmsKeyword),
        Ok(proto::Source::SupportAgent) => Ok(Source::SupportAgent),
        Ok(proto::Source::Api) => Ok(Source::Api),
        Ok(proto::Source::Import) => Ok(Source::Import),
        Ok(proto::Source::PreferenceSignal) => Ok(Source::PreferenceSignal),
        Ok(proto::Source::Unspecified) => Err(Invalid::new("source", "is required")),
        Err(_) => Err(Invalid::new("source", format!("unknown source {code}"))),
    }
}

fn source_to_proto(s: Source) -> proto::Source {
    match s {
        Source::Link => proto::Source::Link,
        Source::OneClick => proto::Source::OneClick,
        Source::SmsKeyword => proto::Source::SmsKeyword,
        Source::SupportAgent => proto::Source::SupportAgent,
        Source::Api => proto::Source::Api,
        Source::Import => proto::Source::Import,
        Source::PreferenceSignal => proto::Source::PreferenceSignal,
    }
}

fn durability(code: i32) -> Result<Durability, Invalid> {
    match proto::Durability::try_from(code) {
        Ok(proto::Durability::Unspecified | proto::Durability::Durable) => Ok(Durability::Durable),
        Ok(proto::Durability::Accepted) => Ok(Durability::Accepted),
        Err(_) => Err(Invalid::new(
            "durability",
            format!("unknown durability {code}"),
        )),
    }
}

fn millis(field: &str, t: prost_types::Timestamp) -> Result<Millis, Invalid> {
    let prost_types::Timestamp { seconds, nanos } = t;
    if !(0..1_000_000_000).contains(&nanos) {
        return Err(Invalid::new(field, "nanos must be within 0..1e9"));
    }
    seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(nanos / 1_000_000)))
        .filter(|ms| *ms > 0)
        .ok_or_else(|| Invalid::new(field, "is out of range"))
}

pub fn timestamp(ms: Millis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn opt_out(req: proto::OptOutRequest, actor: String) -> Result<OptOutCommand, Invalid> {
    let proto::OptOutRequest {
        recipient: r,
        scope,
        reason: reason_code,
        source: source_code,
        idempotency_key,
        durability: durability_code,
        expires_at,
        // The handler sends requests with a token to `token_opt_out`.
        token: _,
        keep_identifier_for_delivery,
    } = req;
    let cmd = OptOutCommand::new(
        Subject::Recipient(recipient(r)?),
        opt_out_scope(scope)?,
        reason(reason_code)?,
        source(source_code)?,
        &idempotency_key,
        durability(durability_code)?,
        expires_at.map(|t| millis("expires_at", t)).transpose()?,
        actor,
    )?;
    if keep_identifier_for_delivery {
        return cmd.keeping_identifier();
    }
    Ok(cmd)
}

/// The longest a token may live: people open old mail, but not forever.
const MAX_TOKEN_TTL_MS: Millis = 400 * 24 * 3600 * 1000;
/// The validity of a token whose request names no ttl.
const DEFAULT_TOKEN_TTL_MS: Millis = 180 * 24 * 3600 * 1000;

/// An `OptOut` carrying a token: the token (already verified) names subject and scope; the request
/// may only choose how the opt-out arrived and how long to wait. It is always the person's own
/// request, so it never expires.
pub fn token_opt_out(
    req: proto::OptOutRequest,
    claims: TokenClaims,
    actor: String,
) -> Result<OptOutCommand, Invalid> {
    let proto::OptOutRequest {
        recipient: r,
        scope,
        reason: reason_code,
        source: source_code,
        idempotency_key,
        durability: durability_code,
        expires_at,
        token,
        keep_identifier_for_delivery,
    } = req;
    if keep_identifier_for_delivery {
        return Err(Invalid::new(
            "keep_identifier_for_delivery",
            "not with a token: a token carries only the keyed hash, no identifier to keep",
        ));
    }
    if r.is_some() || scope.is_some() {
        return Err(Invalid::new(
            "token",
            "recipient and scope must be unset when a token is given: the token names them",
        ));
    }
    if reason_code != proto::Reason::Unspecified as i32
        && reason(reason_code)? != Reason::UserRequest
    {
        return Err(Invalid::new(
            "reason",
            "an opt-out by token is the person's own: unspecified or USER_REQUEST",
        ));
    }
    let source = match source_code {
        0 => Source::Link,
        code => match source(code)? {
            s @ (Source::Link | Source::OneClick) => s,
            _ => return Err(Invalid::new("source", "with a token: LINK or ONE_CLICK")),
        },
    };
    if expires_at.is_some() {
        return Err(Invalid::new(
            "expires_at",
            "a person's own opt-out never expires",
        ));
    }
    let idempotency_key = match idempotency_key.as_str() {
        "" => token::idempotency_key(&token),
        given => given.to_owned(),
    };
    OptOutCommand::new(
        Subject::Hash(claims.subject),
        claims.scope,
        Reason::UserRequest,
        source,
        &idempotency_key,
        durability(durability_code)?,
        None,
        actor,
    )
}

/// What an `IssueOptOutToken` asks for: whom, what, and for how long (milliseconds).
pub fn issue_token(
    req: proto::IssueOptOutTokenRequest,
) -> Result<(Recipient, Scope, Millis), Invalid> {
    let proto::IssueOptOutTokenRequest {
        recipient: r,
        scope,
        ttl,
    } = req;
    let ttl = token_ttl(ttl, DEFAULT_TOKEN_TTL_MS, MAX_TOKEN_TTL_MS, "400 days")?;
    Ok((recipient(r)?, opt_out_scope(scope)?, ttl))
}

/// A token's lifetime: `default` when unset, else positive and at most `max` (named `max_text`).
fn token_ttl(
    ttl: Option<prost_types::Duration>,
    default: Millis,
    max: Millis,
    max_text: &str,
) -> Result<Millis, Invalid> {
    let Some(prost_types::Duration { seconds, nanos }) = ttl else {
        return Ok(default);
    };
    let ms = seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(nanos / 1_000_000));
    if ms <= 0 || ms > max {
        return Err(Invalid::new(
            "ttl",
            format!("must be positive and at most {max_text}"),
        ));
    }
    Ok(ms)
}

/// A record as a check (or a listing) shows it.
pub fn match_to_proto(m: Match) -> proto::SuppressionRecord {
    let Match {
        scope,
        reason,
        source,
        received_at,
        effective_at,
        expires_at,
        receipt,
    } = m;
    let Scope {
        tenant,
        channel,
        topic,
        campaign,
    } = scope;
    proto::SuppressionRecord {
        scope: Some(proto::Scope {
            tenant,
            channel: channel_to_proto(channel) as i32,
            topic,
            campaign,
        }),
        reason: reason_to_proto(reason) as i32,
        source: source_to_proto(source) as i32,
        received_at: Some(timestamp(received_at)),
        expires_at: expires_at.map(timestamp),
        receipt_id: receipt.to_string(),
        effective_at: Some(timestamp(effective_at)),
        import_batch: receipt
            .import_batch()
            .map(|b| b.to_string())
            .unwrap_or_default(),
    }
}
