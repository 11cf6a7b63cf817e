//! `OptOut`: visible at once (Redis), queued (the stream, in the same script), durable when the worker
//! commits it. A `DURABLE` caller waits for that commit, up to a bound, and is never told `DURABLE`
//! before it happened. A person's own opt-out that Redis cannot take goes to the store alone
//! ([`uncached`]).

use super::{ReceiptState, ReceiptView, ServiceError, Suppressions, uncached};
use crate::{
    cache::{Recorded, stream::StreamEntry},
    domain::{
        Invalid, Millis, Reason, ReceiptId, Scope, Source, Subject, SubjectHash, Suppression,
    },
    telemetry::metrics::{self, names},
};
use ::metrics::Counter;
use std::sync::OnceLock;
use tokio::sync::oneshot;
use tracing::Span;

const MAX_IDEMPOTENCY_KEY: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Answer after the store committed (or after the bound, with state `ACCEPTED`).
    Durable,
    /// Answer once visible and queued.
    Accepted,
}

/// A valid opt-out request. [`OptOutCommand::new`] holds the rules that need no clock.
#[derive(Debug, Clone)]
pub(crate) struct OptOutCommand {
    /// A raw recipient (hashed here) or the keyed hash an opt-out token carries.
    pub(crate) subject: Subject,
    pub(crate) scope: Scope,
    pub(crate) reason: Reason,
    pub(crate) source: Source,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) durability: Durability,
    pub(crate) expires_at: Option<Millis>,
    /// Who records it: the authenticated caller.
    pub(crate) actor: String,
    /// Seal the raw identifier for destinations that need it (see `vault`).
    pub(crate) keep_identifier: bool,
}

impl OptOutCommand {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        subject: Subject,
        scope: Scope,
        reason: Reason,
        source: Source,
        idempotency_key: &str,
        durability: Durability,
        expires_at: Option<Millis>,
        actor: String,
    ) -> Result<Self, Invalid> {
        check_expiry(reason, expires_at)?;
        if idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
            return Err(Invalid::new(
                "idempotency_key",
                format!("must be at most {MAX_IDEMPOTENCY_KEY} bytes"),
            ));
        }
        if idempotency_key.chars().any(char::is_control) {
            return Err(Invalid::new(
                "idempotency_key",
                "must not contain control characters",
            ));
        }
        Ok(Self {
            subject,
            scope,
            reason,
            source,
            idempotency_key: (!idempotency_key.is_empty()).then(|| idempotency_key.to_owned()),
            durability,
            expires_at,
            actor,
            keep_identifier: false,
        })
    }

    /// The same opt-out, asking to keep the raw identifier (sealed) for delivery. Only a raw
    /// recipient can be kept: an opt-out token carries the keyed hash alone.
    pub(crate) fn keeping_identifier(self) -> Result<Self, Invalid> {
        if !matches!(self.subject, Subject::Recipient(_)) {
            return Err(Invalid::new(
                "keep_identifier_for_delivery",
                "needs a recipient: an opt-out token carries only the keyed hash",
            ));
        }
        Ok(Self {
            keep_identifier: true,
            ..self
        })
    }
}

/// Only system-originated suppressions may carry an expiry (imports follow the same rule).
pub(super) fn check_expiry(reason: Reason, expires_at: Option<Millis>) -> Result<(), Invalid> {
    if expires_at.is_some() && !reason.may_expire() {
        return Err(Invalid::new(
            "expires_at",
            "only BOUNCE and OPERATOR suppressions may expire; a person's own opt-out never does",
        ));
    }
    Ok(())
}

impl Suppressions {
    #[tracing::instrument(
        name = "opt_out",
        skip_all,
        fields(suppressd.reason = cmd.reason.as_str(), suppressd.source = cmd.source.as_str(),
               suppressd.durability = ?cmd.durability, suppressd.receipt_id)
    )]
    pub(crate) async fn opt_out(&self, cmd: OptOutCommand) -> Result<ReceiptView, ServiceError> {
        let inner = &self.inner;
        let now = self.now();
        if let Some(at) = cmd.expires_at
            && at <= now
        {
            return Err(Invalid::new("expires_at", "must lie in the future").into());
        }
        let subject = inner.pepper.subject_of(&cmd.subject);
        // The store's look-ups are boxed here and below: their futures are kilobytes, and inline
        // they would make every opt-out's future (moved and boxed on each call) as large.
        if let Some(key) = &cmd.idempotency_key
            && let Some(prior) =
                Box::pin(self.prior_receipt(&subject, &cmd.scope.tenant, key)).await?
        {
            return Ok(prior);
        }

        let receipt = ReceiptId::new(now);
        let sealed = match (&cmd.subject, cmd.keep_identifier) {
            (Subject::Recipient(r), true) => Some(self.seal(r, receipt)?),
            _ => None,
        };
        let record = Suppression {
            receipt,
            subject,
            scope: cmd.scope,
            reason: cmd.reason,
            source: cmd.source,
            actor: cmd.actor,
            received_at: now,
            effective_at: now,
            expires_at: cmd.expires_at,
            idempotency_key: cmd.idempotency_key,
            sealed,
        };
        Span::current().record("suppressd.receipt_id", record.receipt.to_string());
        // Register before the write, so a commit that lands first is not missed.
        let committed =
            (cmd.durability == Durability::Durable).then(|| inner.waiters.register(record.receipt));
        let written = self.write(&record, cmd.durability).await?;
        // A new opt-out (not a replayed key) counts for the halt triggers its scope names.
        if written.as_ref().is_none_or(|r| r.id == record.receipt) {
            self.count_opt_out(&record.scope, record.reason);
        }
        if let Some(replay) = written {
            return Ok(replay);
        }

        let accepted = ReceiptView {
            id: record.receipt,
            accepted_at: record.received_at,
            state: ReceiptState::Accepted,
            proof: None,
        };
        let Some(committed) = committed else {
            return Ok(accepted);
        };
        Ok(self.durable_or_accepted(accepted, committed).await)
    }

    /// Writes `record` to Redis (the bucket, the stream and the change feed in one script) and
    /// waits until every replica answers by it. `Some`: the answer is final: the idempotency key had
    /// been used, and this is its receipt, or Redis failed and the store took the opt-out. The
    /// receipt's commit waiter, if any, is forgotten when Redis or the wait for the replicas fails,
    /// and on a replay (a full backlog refuses only callers that have none).
    async fn write(
        &self,
        record: &Suppression,
        durability: Durability,
    ) -> Result<Option<ReceiptView>, ServiceError> {
        let inner = &self.inner;
        let backlog_limit = match durability {
            Durability::Accepted => inner.settings.backlog_limit,
            // A DURABLE caller learns the truth from its receipt; it is not refused for the backlog.
            Durability::Durable => 0,
        };
        let payload = StreamEntry::encode(record);
        let recorded = inner.cache.record(record, &payload, backlog_limit).await;
        let recorded = match recorded {
            Ok(r) => r,
            Err(e) => {
                inner.waiters.forget(record.receipt);
                inner.doubt.doubt();
                // What a person said is taken by the store alone (see `uncached`); a system's
                // opt-out is refused, and the system retries (SPEC §6).
                if uncached::taken_without_redis(record) {
                    return Box::pin(self.take_uncached(record)).await;
                }
                return Err(ServiceError::unavailable(
                    "Redis is unavailable; the opt-out was not recorded, retry",
                    e,
                ));
            }
        };
        inner.cache.saw_writes(recorded.group, recorded.writes);
        // In force on every replica before anything is returned (SPEC §5, invariant 1).
        let settled = self.settled(recorded.group, recorded.change, Some(recorded.leases));
        if let Err(e) = settled.await {
            inner.waiters.forget(record.receipt);
            return Err(e);
        }
        match recorded.outcome {
            Recorded::Queued { .. } => {
                count_opt_out(record.reason, record.source);
                Ok(None)
            }
            Recorded::Replay(prior) => {
                inner.waiters.forget(record.receipt);
                Box::pin(self.receipt(prior)).await.map(Some)
            }
            Recorded::BacklogFull { backlog } => Err(ServiceError::Unavailable {
                message: format!(
                    "the write-behind backlog is full ({backlog} uncommitted opt-outs); \
                     not recorded, retry later or use DURABLE"
                ),
                cause: None,
            }),
        }
    }

    /// `accepted`, made `DURABLE` if the store commits it within the wait (`committed` resolves)
    /// or, the announcement missed, the store already holds it.
    async fn durable_or_accepted(
        &self,
        accepted: ReceiptView,
        committed: oneshot::Receiver<()>,
    ) -> ReceiptView {
        let inner = &self.inner;
        if tokio::time::timeout(inner.settings.durable_wait, committed)
            .await
            .is_ok_and(|r| r.is_ok())
        {
            return ReceiptView {
                state: ReceiptState::Durable,
                ..accepted
            };
        }
        inner.waiters.forget(accepted.id);
        // The announcement may have been missed (a reconnecting subscriber): ask the store once.
        match inner.store.receipt(accepted.id).await {
            Ok(Some(_)) => ReceiptView {
                state: ReceiptState::Durable,
                ..accepted
            },
            _ => accepted,
        }
    }

    /// The receipt an idempotency key was first used for: from Redis while it remembers (in the
    /// slot group of `subject`; see `cache::record`), else (or when Redis cannot be read) from the
    /// store. If the store cannot be asked, the key is treated
    /// as new; the store's unique index still keeps a second record out.
    pub(super) async fn prior_receipt(
        &self,
        subject: &SubjectHash,
        tenant: &str,
        key: &str,
    ) -> Result<Option<ReceiptView>, ServiceError> {
        let inner = &self.inner;
        let group = inner.cache.keys().group_of(subject);
        match inner.cache.idempotent_receipt(group, tenant, key).await {
            Ok(Some(id)) => return self.receipt(id).await.map(Some),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "idempotency key unreadable in Redis"),
        }
        match inner.store.by_idempotency_key(tenant, key).await {
            Ok(found) => Ok(found.map(|s| ReceiptView {
                id: s.receipt,
                accepted_at: s.received_at,
                state: ReceiptState::Durable,
                proof: None,
            })),
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable for an idempotency look-up");
                Ok(None)
            }
        }
    }
}

/// Counts an opt-out taken (`suppressd_opt_outs_total`), on a series kept for its reason and
/// source rather than looked up in the recorder on every opt-out.
pub(super) fn count_opt_out(reason: Reason, source: Source) {
    const SOURCES: usize = Source::ALL.len();
    static OPT_OUTS: [[OnceLock<Counter>; SOURCES]; Reason::ALL.len()] =
        [const { [const { OnceLock::new() }; SOURCES] }; Reason::ALL.len()];
    metrics::once(&OPT_OUTS[reason as usize][source as usize], || {
        ::metrics::counter!(names::OPT_OUTS,
            "reason" => reason.as_str(), "source" => source.as_str())
    })
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::{Reason, Source};

    /// `count_opt_out` indexes its series by the enums' discriminants: each must be its place in
    /// `ALL`, or two labels would share a series.
    #[test]
    fn every_reason_and_source_indexes_its_own_series() {
        for (i, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "{}", reason.as_str());
        }
        for (i, source) in Source::ALL.into_iter().enumerate() {
            assert_eq!(source as usize, i, "{}", source.as_str());
        }
    }
}
