//! Conversions for a person's rights: opt-in requests, opt-in tokens, listings with history.

use super::{match_to_proto, opt_out_scope, recipient, timestamp, token_ttl};
use crate::{
    auth::TokenClaims,
    domain::{
        Invalid, Match, Millis, Recipient, Scope, Suppression,
        deadline::{Deadline, DeadlineRules, DeadlineState, Regime},
    },
    proto,
    service::{Erased, OptInCommand, OptInGrounds, RecordEvent, RecordHistory},
};

/// An opt-in token lives 15 minutes unless asked otherwise, and never more than an hour: it stands
/// for a fresh confirmation by the person, not a standing permission.
const DEFAULT_OPT_IN_TTL_MS: Millis = 15 * 60 * 1000;
const MAX_OPT_IN_TTL_MS: Millis = 3600 * 1000;
const MAX_REASON_BYTES: usize = 1_000;

/// What an `OptIn` request carries: a token, or (for an admin) a person, a scope and a reason.
pub enum OptInRequest {
    Token(String),
    Admin {
        recipient: Recipient,
        scope: Scope,
        reason: String,
    },
}

pub fn opt_in(req: proto::OptInRequest) -> Result<OptInRequest, Invalid> {
    let proto::OptInRequest {
        recipient: r,
        scope,
        token,
        reason,
    } = req;
    if !token.is_empty() {
        if r.is_some() || scope.is_some() {
            return Err(Invalid::new(
                "token",
                "recipient and scope must be unset when a token is given: the token names them",
            ));
        }
        return Ok(OptInRequest::Token(token));
    }
    Ok(OptInRequest::Admin {
        recipient: recipient(r)?,
        scope: opt_out_scope(scope)?,
        reason: written_reason(reason)?,
    })
}

/// The grounds an admin must write down: required, trimmed, bounded.
fn written_reason(reason: String) -> Result<String, Invalid> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Invalid::new(
            "reason",
            "required: without an opt-in token, an admin must give written grounds",
        ));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(Invalid::new(
            "reason",
            format!("at most {MAX_REASON_BYTES} bytes"),
        ));
    }
    Ok(reason.to_owned())
}

/// The command of a token opt-in: the token names the person and the scope.
pub fn token_opt_in(claims: TokenClaims, actor: String) -> OptInCommand {
    let TokenClaims {
        subject,
        scope,
        purpose: _,
        expires_at: _,
        key_id,
    } = claims;
    OptInCommand {
        subject,
        scope,
        actor,
        grounds: OptInGrounds::Token { key_id },
    }
}

pub fn issue_opt_in_token(
    req: proto::IssueOptInTokenRequest,
) -> Result<(Recipient, Scope, Millis), Invalid> {
    let proto::IssueOptInTokenRequest {
        recipient: r,
        scope,
        ttl,
    } = req;
    let ttl = token_ttl(ttl, DEFAULT_OPT_IN_TTL_MS, MAX_OPT_IN_TTL_MS, "1 hour")?;
    Ok((recipient(r)?, opt_out_scope(scope)?, ttl))
}

/// Whose records a `ListSuppressions` asks for.
pub enum ListRequest {
    Token(String),
    Person {
        recipient: Recipient,
        tenant: String,
    },
}

pub fn list_suppressions(req: proto::ListSuppressionsRequest) -> Result<ListRequest, Invalid> {
    let proto::ListSuppressionsRequest {
        recipient: r,
        tenant,
        token,
    } = req;
    if !token.is_empty() {
        if r.is_some() || !tenant.is_empty() {
            return Err(Invalid::new(
                "token",
                "recipient and tenant must be unset when a token is given: the token names them",
            ));
        }
        return Ok(ListRequest::Token(token));
    }
    // The tenant obeys the same rules as in a scope.
    let scope = Scope::parse(&tenant, None, "", "")?;
    Ok(ListRequest::Person {
        recipient: recipient(r)?,
        tenant: scope.tenant,
    })
}

/// `ForgetPerson`: the person and the tenant, by the rules of a listing.
pub fn forget_person(req: proto::ForgetPersonRequest) -> Result<(Recipient, String), Invalid> {
    let proto::ForgetPersonRequest {
        recipient: r,
        tenant,
    } = req;
    let scope = Scope::parse(&tenant, None, "", "")?;
    Ok((recipient(r)?, scope.tenant))
}

pub fn forget_person_to_proto(e: Erased) -> proto::ForgetPersonResponse {
    let Erased {
        identifiers,
        entries,
        consents,
        erasure,
        log_index,
    } = e;
    proto::ForgetPersonResponse {
        identifiers_erased: identifiers,
        entries_erased: entries,
        consents_erased: consents,
        erasure_id: erasure.to_string(),
        log_index,
    }
}

/// A record's history, with its legal clocks judged against its effective time (when checks began to
/// see it).
pub fn history_to_proto(
    h: RecordHistory,
    now: Millis,
    rules: &DeadlineRules,
) -> proto::RecordHistory {
    let RecordHistory { record, events } = h;
    let state = match record.ended_by.as_deref() {
        Some("opt_in") => proto::RecordState::OptedIn,
        Some(_) => proto::RecordState::RolledBack,
        None if record.record.is_active_at(now) => proto::RecordState::Active,
        None => proto::RecordState::Expired,
    };
    let deadlines = rules
        .deadlines(&record.record, Some(record.record.effective_at), now)
        .into_iter()
        .map(deadline_to_proto)
        .collect();
    let mut shown = match_to_proto(Match::from(&record.record));
    shown.import_batch = record.import_batch.unwrap_or_default();
    proto::RecordHistory {
        record: Some(shown),
        state: state as i32,
        events: events.into_iter().map(event_to_proto).collect(),
        deliveries: Vec::new(),
        deadlines,
    }
}

/// A record's delivery to one destination, with the record's legal clocks judged at it (against
/// when its opt-out reached it).
pub fn delivery_with_deadlines(
    d: crate::service::delivery::DeliveryView,
    record: &Suppression,
    now: Millis,
    rules: &DeadlineRules,
) -> proto::DestinationDelivery {
    let deadlines = match d.opt_out {
        Some(delivered_at) => rules
            .deadlines(record, delivered_at, now)
            .into_iter()
            .map(deadline_to_proto)
            .collect(),
        None => Vec::new(),
    };
    proto::DestinationDelivery {
        deadlines,
        ..super::delivery_to_proto(d)
    }
}

fn deadline_to_proto(d: Deadline) -> proto::Deadline {
    let Deadline {
        regime,
        due_at,
        state,
        near: _,
    } = d;
    let regime = match regime {
        Regime::CanSpam => proto::Regime::CanSpam,
        Regime::Tcpa => proto::Regime::Tcpa,
        Regime::Ccpa => proto::Regime::Ccpa,
        Regime::OneClick => proto::Regime::OneClick,
    };
    let state = match state {
        DeadlineState::Met => proto::DeadlineState::Met,
        DeadlineState::Missed => proto::DeadlineState::Missed,
        DeadlineState::Pending => proto::DeadlineState::Pending,
    };
    proto::Deadline {
        regime: regime as i32,
        due_at: Some(timestamp(due_at)),
        state: state as i32,
    }
}

fn event_to_proto(e: RecordEvent) -> proto::RecordEvent {
    let RecordEvent {
        action,
        at,
        actor,
        detail,
        log_index,
    } = e;
    proto::RecordEvent {
        action,
        at: Some(timestamp(at)),
        actor,
        detail,
        log_index,
    }
}

pub fn removed_to_proto(removed: &[crate::domain::Suppression]) -> proto::OptInResponse {
    proto::OptInResponse {
        removed: removed
            .iter()
            .map(|s| match_to_proto(Match::from(s)))
            .collect(),
    }
}
