//! A person's consents: recording one (`RecordConsent`), listing them, and the look-up a check makes
//! when its notice falls under a consent requirement.
//!
//! Where consents are looked up, and why. A requirement is a control, so every replica knows from
//! memory whether a notice needs consent; only then, and only when nothing else already decided
//! (no halt, no opt-out, no declaration), does a check ask the durable store whether a consent
//! covers it: one indexed query by subject and tenant. Checks of every other topic do exactly what
//! they did before, with no extra field in the Redis `HMGET` and nothing more in the near-cache.
//! Consents are not in Redis: they are few per person and read only under a requirement, and
//! keeping them out of the buckets keeps the cache's completeness, rebuild and write-behind rules
//! about opt-outs alone.
//!
//! The store being the only place consents live gives read-your-writes with no waiting: a consent
//! is committed (with its audit entry) before `RecordConsent` returns, and every replica's next
//! look-up reads it. When the store cannot be read, a check under a requirement cannot know, so it
//! answers `UNAVAILABLE` (SPEC §5.2); checks of other topics are unaffected.

use super::{ServiceError, Suppressions, Viewer, check::Check};
use crate::{
    audit::{Action, AuditEntry},
    domain::{
        ReceiptId, Recipient, Scope, SubjectHash,
        consent::{Consent, Evidence},
        control::Answer,
        scope::channel_code,
    },
    telemetry::metrics::names,
};
use serde_json::json;

/// A consent as asked for.
#[derive(Debug, Clone)]
pub(crate) struct NewConsent {
    pub(crate) recipient: Recipient,
    pub(crate) scope: Scope,
    pub(crate) evidence: Evidence,
}

impl Suppressions {
    /// Stores a person's consent with its audit entry (one transaction) and returns it once
    /// committed: from then on every replica's checks answer by it.
    #[tracing::instrument(name = "record_consent", skip_all, err)]
    pub(crate) async fn record_consent(
        &self,
        new: NewConsent,
        actor: String,
    ) -> Result<Consent, ServiceError> {
        let now = self.now();
        let consent = Consent {
            id: ReceiptId::new(now),
            subject: self.subject(&new.recipient),
            scope: new.scope,
            evidence: new.evidence,
            recorded_by: actor,
            at: now,
        };
        let Evidence {
            source,
            proof,
            actor: obtained_by,
        } = &consent.evidence;
        let entry = AuditEntry {
            v: AuditEntry::VERSION,
            seq: 0,
            time: now,
            actor: consent.recorded_by.clone(),
            action: Action::RecordConsent.as_str().to_owned(),
            tenant: consent.scope.tenant.clone(),
            subject: consent.subject.to_hex(),
            channel: channel_code(consent.scope.channel),
            topic: consent.scope.topic.clone(),
            campaign: consent.scope.campaign.clone(),
            reason: 0,
            source: 0,
            receipt: consent.id.to_string(),
            trace_id: String::new(),
            expires_at: None,
            detail: Some(
                json!({"source": source, "proof": proof, "obtained_by": obtained_by}).to_string(),
            ),
        };
        self.store()
            .insert_consent(&consent, entry, self.audit_log())
            .await?;
        Ok(consent)
    }

    /// A person's consents within the viewer's tenant, oldest first; a token sees those its scope
    /// includes, without evidence or who recorded them.
    pub(crate) async fn consents(
        &self,
        subject: &SubjectHash,
        viewer: &Viewer,
    ) -> Result<Vec<Consent>, ServiceError> {
        let all = self.store().consents_of(subject, viewer.tenant()).await?;
        Ok(match viewer {
            Viewer::Operator { .. } => all,
            Viewer::Token { scope } => all
                .into_iter()
                .filter(|c| scope.includes(&c.scope))
                .map(|c| Consent {
                    evidence: Evidence {
                        source: String::new(),
                        proof: String::new(),
                        actor: String::new(),
                    },
                    recorded_by: String::new(),
                    ..c
                })
                .collect(),
        })
    }

    /// Settles the answers that say "no consent" by asking the store: a check whose person has a
    /// consent covering its notice is decided again as consented (a send window may still say
    /// "not now"). Costs nothing when no answer says "no consent".
    pub(super) async fn with_consents(
        &self,
        mut answers: Vec<Answer>,
        checks: &[Check],
        subjects: &[SubjectHash],
    ) -> Result<Vec<Answer>, ServiceError> {
        if !answers
            .iter()
            .any(|a| matches!(a, Answer::NoConsent { .. }))
        {
            return Ok(answers);
        }
        let controls = self.controls();
        let now = self.now();
        for ((answer, check), subject) in answers.iter_mut().zip(checks).zip(subjects) {
            if !matches!(answer, Answer::NoConsent { .. }) {
                continue;
            }
            let found = self.store().consented(subject, &check.notice).await;
            let outcome = match &found {
                Ok(true) => "consented",
                Ok(false) => "no_consent",
                Err(_) => "failed",
            };
            metrics::counter!(names::CONSENT_LOOKUPS, "outcome" => outcome).increment(1);
            let consented = found.map_err(|e| {
                ServiceError::unavailable(
                    "this notice needs the person's consent and the store cannot be read to \
                     confirm it; do not send",
                    e,
                )
            })?;
            if consented {
                // No opt-out matched (else the answer would not say "no consent").
                *answer = controls.decide(None, &check.notice, check.zone.as_ref(), now, true);
            }
        }
        Ok(answers)
    }
}
