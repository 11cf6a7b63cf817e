//! A person's records after the fact: ending them (a verified opt-in; a rollback uses the same
//! primitive), taking ended records out of the cache, and reading one person's records with their
//! history for a data-subject request.
//!
//! An ending first waits until every opt-out queued before it has been committed
//! ([`Suppressions::queued_committed`]): an opt-in ends all of a person's earlier opt-outs, those still
//! in the write-behind stream too, and a refilled cache field must not miss one that is about to land.
//!
//! The order of an ending is store first, cache second: the store transaction ends the records and
//! logs it; then each affected cache field is refilled from what remains active. If the cache step
//! fails, the cache still suppresses (never a false "send"), and repeating the call heals it,
//! because the cache step works from every ended record of the field, not only the newly ended.

use super::{
    ServiceError, Suppressions,
    view::{RecordEvent, RecordHistory, TOKEN_OPT_IN_DETAIL, Viewer},
};
use crate::{
    audit::Action,
    cache::{Cache, Merged, Retraction, layout},
    domain::{
        Match, Millis, Scope, SubjectHash, Suppression,
        control::{Control, MandatoryDeclaration},
    },
    store::{Store, records::StoredRecord},
};
use std::collections::{HashMap, HashSet};

/// How often [`Suppressions::queued_committed`] looks at the stream again.
const QUEUE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Why an opt-in is allowed: the stronger proof SPEC issue 5 asks for.
#[derive(Debug, Clone)]
pub(crate) enum OptInGrounds {
    /// An opt-in token for exactly this person and scope (its key id).
    Token { key_id: String },
    /// An admin's written reason.
    Admin { reason: String },
    /// START texted from the number that texted STOP: the provider's signature vouches for the
    /// number, which is the person's own.
    Keyword {
        provider: &'static str,
        message_id: String,
    },
}

/// A verified opt-in: the person, the exact scope of the opt-out to remove, who asks and why.
#[derive(Debug, Clone)]
pub(crate) struct OptInCommand {
    pub(crate) subject: SubjectHash,
    pub(crate) scope: Scope,
    pub(crate) actor: String,
    pub(crate) grounds: OptInGrounds,
}

impl Suppressions {
    /// Ends the person's own opt-outs (USER_REQUEST, COMPLAINT, LEGAL) of exactly `cmd.scope`, and
    /// nothing else: a bounce or an operator's suppression of the same scope stays. Returns the
    /// records it ended (none on a repeat); NOT_FOUND if the person never had one of that scope.
    #[tracing::instrument(name = "opt_in", skip_all, err)]
    pub(crate) async fn opt_in(&self, cmd: OptInCommand) -> Result<Vec<Suppression>, ServiceError> {
        self.queued_committed().await?;
        let now = self.now();
        let own: Vec<StoredRecord> = self
            .store()
            .records_of(&cmd.subject, &cmd.scope.tenant)
            .await?
            .into_iter()
            .filter(|r| r.record.scope == cmd.scope && r.record.reason.is_persons_own())
            .collect();
        if own.is_empty() {
            // Refused rather than a silent no-op: a token or a request for the wrong person or
            // scope should be noticed. A repeat (everything already ended) is not refused.
            return Err(ServiceError::NotFound(
                "the person has no opt-out of their own for exactly this scope (wildcards are \
                 literal: name the scope as it was opted out of)"
                    .into(),
            ));
        }
        let active: Vec<_> = own
            .iter()
            .filter(|r| r.is_active_at(now))
            .map(|r| r.record.receipt)
            .collect();
        let detail = match &cmd.grounds {
            OptInGrounds::Token { key_id } => format!("{TOKEN_OPT_IN_DETAIL}{key_id}"),
            OptInGrounds::Admin { reason } => format!("admin: {reason}"),
            OptInGrounds::Keyword {
                provider,
                message_id,
            } => format!("keyword START via {provider} (message {message_id})"),
        };
        let ended = self
            .store()
            .end_records(
                &active,
                Action::OptIn,
                &cmd.actor,
                Some(&detail),
                now,
                self.audit_log(),
            )
            .await?;
        // Every own record of the scope is ended now, including any an earlier opt-in ended but
        // could not take out of the cache.
        let all: Vec<Suppression> = own.into_iter().map(|r| r.record).collect();
        let changed = retract(&self.inner.cache, self.store(), &all, now).await?;
        self.settled_merged(&changed).await?;
        Ok(ended)
    }

    /// Waits until every opt-out queued so far is in the store, up to the DURABLE wait; UNAVAILABLE
    /// past it (the store is behind: nothing was changed, retry).
    pub(super) async fn queued_committed(&self) -> Result<(), ServiceError> {
        let cache = &self.inner.cache;
        let barrier = cache.stream_head().await?;
        if barrier.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.inner.settings.durable_wait;
        while !cache.settled_through(&barrier).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(ServiceError::Unavailable {
                    message: "opt-outs received before this change are not committed yet; \
                              nothing was changed, retry"
                        .into(),
                    cause: None,
                });
            }
            tokio::time::sleep(QUEUE_POLL).await;
        }
        Ok(())
    }

    /// Takes ended records out of the cache (see [`retract`]), on every replica before it returns.
    pub(crate) async fn retract(&self, ended: &[Suppression]) -> Result<(), ServiceError> {
        let changed = retract(&self.inner.cache, self.store(), ended, self.now()).await?;
        self.settled_merged(&changed).await
    }

    /// The records of a person within a tenant, oldest first, each with its audit entries: all of
    /// them as logged for an operator, what their token covers and no operator's names or text
    /// for the holder of their token ([`Viewer`]).
    pub(crate) async fn history(
        &self,
        subject: &SubjectHash,
        viewer: &Viewer,
    ) -> Result<Vec<RecordHistory>, ServiceError> {
        let tenant = viewer.tenant();
        let records = self.store().records_of(subject, tenant).await?;
        let rows = self
            .store()
            .audit_rows_for_subject(&subject.0, tenant)
            .await?;
        let mut events: HashMap<String, Vec<RecordEvent>> = HashMap::new();
        for row in rows {
            events
                .entry(row.receipt_id.clone())
                .or_default()
                .push(RecordEvent {
                    action: row.action,
                    at: row.recorded_at,
                    actor: row.actor,
                    detail: row.detail.unwrap_or_default(),
                    log_index: Some(row.seq as u64),
                });
        }
        let declarations: Vec<MandatoryDeclaration> = self
            .store()
            .controls(Some(tenant))
            .await?
            .into_iter()
            .filter_map(|c| match c {
                Control::Mandatory(d) => Some(d),
                Control::Halt(_)
                | Control::Window(_)
                | Control::Consent(_)
                | Control::Trigger(_) => None,
            })
            .collect();
        let now = self.now();
        let all = records
            .into_iter()
            .map(|record| {
                let mut events = events
                    .remove(&record.record.receipt.to_string())
                    .unwrap_or_default();
                events.extend(
                    declarations
                        .iter()
                        .filter_map(|d| overridden(&record, d, now)),
                );
                events.sort_by_key(|e| e.at);
                RecordHistory { record, events }
            })
            .collect();
        Ok(viewer.shown(all))
    }
}

/// The `overridden` event of a record, if a mandatory declaration covered part of its scope while
/// both were in force: from then on, checks of those notices went out despite it.
fn overridden(r: &StoredRecord, d: &MandatoryDeclaration, now: Millis) -> Option<RecordEvent> {
    let scope = &r.record.scope;
    let topic = scope.topic.is_empty() || scope.topic == d.topic;
    let channel = scope.channel.is_none_or(|c| d.channels.contains(c));
    let record_end = r.ended_at.or(r.record.expires_at).unwrap_or(now);
    let declaration_end = d
        .ended
        .as_ref()
        .map_or(d.expires_at, |e| e.at.min(d.expires_at));
    let at = r.record.received_at.max(d.at);
    if !(topic && channel) || at >= record_end.min(declaration_end) {
        return None;
    }
    let channels: Vec<String> = d
        .channels
        .iter()
        .map(|c| format!("{c:?}").to_lowercase())
        .collect();
    Some(RecordEvent {
        action: "overridden".into(),
        at,
        actor: d.actor.clone(),
        detail: format!(
            "mandatory declaration {} for topic {:?} on {}: {} (approved by {})",
            d.id,
            d.topic,
            channels.join(", "),
            d.legal_basis,
            d.approver
        ),
        log_index: None,
    })
}

/// Refills the cache fields that `ended` records held from the records of those fields that remain
/// active in the store. A field now holding a record not among `ended` (written meanwhile) is left
/// alone. Shared with the rebuild, which re-applies endings that raced with its copy. Returns the
/// changes it fed to the near-caches, by slot group.
pub(crate) async fn retract(
    cache: &Cache,
    store: &Store,
    ended: &[Suppression],
    now: Millis,
) -> Result<Merged, ServiceError> {
    let mut fields: HashMap<layout::Field, Retraction> = HashMap::new();
    for s in ended {
        fields
            .entry(layout::field(&s.subject, &s.scope))
            .or_insert_with(|| Retraction {
                subject: s.subject,
                scope: s.scope.clone(),
                ended: Vec::new(),
                remaining: Vec::new(),
            })
            .ended
            .push(s.receipt);
    }
    if fields.is_empty() {
        return Ok(Merged::default());
    }
    let mut subjects: Vec<SubjectHash> = fields.values().map(|r| r.subject).collect();
    subjects.sort_unstable_by_key(|s| s.0);
    subjects.dedup();
    for s in store.active_of_subjects(&subjects, now).await? {
        if let Some(r) = fields.get_mut(&layout::field(&s.subject, &s.scope)) {
            r.remaining.push(Match::from(&s));
        }
    }
    let retractions: Vec<Retraction> = fields.into_values().collect();
    let mut changed = cache.retract(&retractions).await?;
    // A record committed after the query above, whose own cache write was refused while the field
    // still held an ended record (the merge rule keeps a permanent record), would now be missing:
    // write back what is active now. Its write came before the retract emptied the field, so this
    // later query sees it.
    let fields: HashSet<layout::Field> = retractions
        .iter()
        .map(|r| layout::field(&r.subject, &r.scope))
        .collect();
    let active: Vec<Suppression> = store
        .active_of_subjects(&subjects, now)
        .await?
        .into_iter()
        .filter(|s| fields.contains(&layout::field(&s.subject, &s.scope)))
        .collect();
    let refilled = cache.merge(&active, true).await?;
    cache.saw_merged(&refilled);
    changed.groups.extend(refilled.groups);
    Ok(changed)
}
