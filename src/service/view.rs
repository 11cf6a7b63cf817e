//! What a listing of a person's records shows, by who asks (issue 18 item 1).
//!
//! An admin sees everything the store and the log hold. A person's opt-out token is weaker: it is a
//! link that sits in mailboxes for up to 400 days and gets forwarded, so whoever holds it sees
//! only what the token is about, and nothing an operator wrote or was named by:
//! - the records whose scope the token's scope includes ([`Scope::includes`]); a record of another
//!   channel, topic or campaign, or broader than the token ("every channel"), is left out;
//! - in each record and event, the actor's name replaced by a role word ([`role`]), every event's
//!   detail (an admin's written grounds, a rollback's reason, a mandatory declaration's legal
//!   basis and approver, a batch or key id) and the import batch withheld.
//!
//! The rule lives here, in the service, so every front that lists records for a person gets the
//! same view; the API only converts what it is given.

use crate::{
    domain::{Millis, Scope, Suppression, is_token_actor},
    store::records::StoredRecord,
};

/// How the detail of an opt-in made with the person's opt-in token begins (then the key id); an
/// admin's begins `admin: `. A person's view tells the two apart by it.
pub(super) const TOKEN_OPT_IN_DETAIL: &str = "opt-in token ";

/// One record and the audit entries about it, as a data-subject request shows them.
#[derive(Debug, Clone)]
pub struct RecordHistory {
    pub record: StoredRecord,
    pub events: Vec<RecordEvent>,
}

#[derive(Debug, Clone)]
pub struct RecordEvent {
    pub action: String,
    pub at: Millis,
    pub actor: String,
    pub detail: String,
    /// The audit log index of the entry; `None` for an `overridden` event, which is derived from a
    /// mandatory declaration rather than logged per record.
    pub log_index: Option<u64>,
}

/// Who asks for a person's records, which decides what the listing holds.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// An admin: every record of the person within `tenant`, with actors and details as logged.
    Operator { tenant: String },
    /// Whoever holds the person's opt-out token for `scope`.
    Token { scope: Scope },
}

/// The role words a person's view shows in place of an actor's name.
const YOU: &str = "you";
const A_SERVICE: &str = "a service";
const AN_OPERATOR: &str = "an operator";
const AN_IMPORT: &str = "an import";
const THE_SYSTEM: &str = "the system";

impl Viewer {
    /// The tenant whose records are read: a token names exactly one.
    pub fn tenant(&self) -> &str {
        match self {
            Viewer::Operator { tenant } => tenant,
            Viewer::Token { scope } => &scope.tenant,
        }
    }

    /// What of `all` (every record of the person in the tenant) this viewer is shown.
    pub(super) fn shown(&self, all: Vec<RecordHistory>) -> Vec<RecordHistory> {
        match self {
            Viewer::Operator { .. } => all,
            Viewer::Token { scope } => all
                .into_iter()
                .filter(|h| scope.includes(&h.record.record.scope))
                .map(withhold)
                .collect(),
        }
    }
}

/// A record as a person's token shows it. Destructured completely, so that a field added to a
/// record or an event has to be decided on here.
fn withhold(h: RecordHistory) -> RecordHistory {
    let RecordHistory { record, events } = h;
    let StoredRecord {
        record,
        ended_at,
        ended_by,
        import_batch: _,
    } = record;
    let Suppression {
        receipt,
        subject,
        scope,
        reason,
        source,
        actor: _,
        received_at,
        effective_at,
        expires_at,
        idempotency_key: _,
        sealed: _,
    } = record;
    let record = StoredRecord {
        record: Suppression {
            receipt,
            subject,
            scope,
            reason,
            source,
            actor: String::new(),
            received_at,
            effective_at,
            expires_at,
            idempotency_key: None,
            sealed: None,
        },
        ended_at,
        ended_by,
        import_batch: None,
    };
    let events = events
        .into_iter()
        .map(|e| {
            let role = role(&e);
            let RecordEvent {
                action,
                at,
                actor: _,
                detail: _,
                log_index,
            } = e;
            RecordEvent {
                action,
                at,
                actor: role.to_owned(),
                detail: String::new(),
                log_index,
            }
        })
        .collect();
    RecordHistory { record, events }
}

/// Who acted, in a word that names no one: the person themselves (their token), a keyed caller
/// that recorded an opt-out (a sender, the unsubscribe front, a support tool), an operator (an
/// admin's opt-in, a rollback, a mandatory declaration), an import, or the system (an expiry, and
/// any action added later until it is given a word of its own).
fn role(e: &RecordEvent) -> &'static str {
    if is_token_actor(&e.actor) {
        return YOU;
    }
    match e.action.as_str() {
        // A front holding a key may present the person's opt-in token; the detail says so.
        "opt_in" if e.detail.starts_with(TOKEN_OPT_IN_DETAIL) => YOU,
        "opt_in" | "rollback" | "overridden" => AN_OPERATOR,
        "opt_out" | "confirmation" => A_SERVICE,
        "import" => AN_IMPORT,
        _ => THE_SYSTEM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, actor: &str, detail: &str) -> RecordEvent {
        RecordEvent {
            action: action.into(),
            at: 0,
            actor: actor.into(),
            detail: detail.into(),
            log_index: Some(1),
        }
    }

    #[test]
    fn every_actor_becomes_a_role_word() {
        let cases = [
            (event("opt_out", "token:k1", ""), YOU),
            (event("opt_in", "token:k1", "opt-in token k1"), YOU),
            (event("opt_in", "front", "opt-in token k1"), YOU),
            (event("opt_in", "admin", "admin: ticket 4711"), AN_OPERATOR),
            (
                event("rollback", "admin", "batch b: wrong file"),
                AN_OPERATOR,
            ),
            (event("overridden", "admin", "mandatory …"), AN_OPERATOR),
            (event("opt_out", "mailer", ""), A_SERVICE),
            (event("import", "admin", "b"), AN_IMPORT),
            (event("expire", "mailer", ""), THE_SYSTEM),
            (event("something_new", "admin", "text"), THE_SYSTEM),
        ];
        for (e, want) in cases {
            assert_eq!(role(&e), want, "{e:?}");
        }
    }
}
