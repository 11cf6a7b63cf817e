//! The use cases: check, opt out, read a receipt, and keep the cache complete. They speak domain types
//! and [`ServiceError`]; the API layer turns those into gRPC, and nothing here knows about tonic.
//!
//! The rule that runs through all of it (SPEC §5, invariant 2): "not suppressed" is said only from a
//! cache bucket that carries the completeness marker (in Redis, or in this replica's near-cache copy
//! of marked buckets), or from the durable store. Anything else is [`ServiceError::Unavailable`].

pub mod audit;
mod breaker;
mod check;
pub(crate) mod confirmations;
pub(crate) mod consent;
pub(crate) mod controls;
mod deadlines;
pub(crate) mod delivery;
pub(crate) mod import;
mod opt_out;
pub(crate) mod rebuild;
mod receipts;
pub(crate) mod records;
pub(crate) mod rollback;
pub(crate) mod uncached;
mod vault;
mod view;
pub(crate) mod waiters;
pub(crate) mod watch;

pub(crate) use crate::store::Erased;
use crate::{
    audit::AuditLog,
    cache::{
        Cache, CacheError, Merged,
        layout::Group,
        near::{Leases, NearCache, NotSettled},
    },
    domain::{
        Clock, IdentifierVault, Invalid, Millis, Pepper, ReceiptId, Recipient, SubjectHash,
        control::{Controls, CountsById},
    },
    store::{Store, StoreError},
};
use arc_swap::ArcSwap;
pub(crate) use check::{Check, Purpose};
pub(crate) use opt_out::{Durability, OptOutCommand};
use rebuild::RebuildTrigger;
pub(crate) use records::{OptInCommand, OptInGrounds};
use std::{sync::Arc, time::Duration};
pub use vault::Vault;
pub use view::Viewer;
pub use view::{RecordEvent, RecordHistory};
use waiters::Waiters;

/// Errors of the use cases, already sorted by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is wrong; nothing was changed.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    NotFound(String),
    /// A concurrent change stopped the operation (an import whose batch was rolled back meanwhile);
    /// retrying the same call will not help.
    #[error("{0}")]
    Aborted(String),
    /// The request is valid but the state it acts on does not allow it (a halt already resumed).
    #[error("{0}")]
    Precondition(String),
    /// The caller may not act on something the request reaches (a tenant of the records an import
    /// batch holds); nothing was changed.
    #[error("{0}")]
    Forbidden(String),
    /// The service cannot answer correctly now; the caller must not send and may retry.
    #[error("{message}")]
    Unavailable {
        message: String,
        #[source]
        cause: Option<anyhow::Error>,
    },
    /// A fault of ours. The client is told nothing more; the cause is logged once.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ServiceError {
    fn unavailable(message: impl Into<String>, cause: impl Into<anyhow::Error>) -> Self {
        ServiceError::Unavailable {
            message: message.into(),
            cause: Some(cause.into()),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Db { .. } => {
                ServiceError::unavailable("the durable store is unavailable", e)
            }
            other => ServiceError::Internal(other.into()),
        }
    }
}

impl From<CacheError> for ServiceError {
    fn from(e: CacheError) -> Self {
        ServiceError::unavailable("Redis is unavailable", e)
    }
}

/// Tunables of the use cases.
#[derive(Clone, Debug)]
pub(crate) struct ServiceSettings {
    /// How long a `DURABLE` opt-out waits for the store before answering `ACCEPTED`.
    pub(crate) durable_wait: Duration,
    /// Uncommitted stream entries above which `ACCEPTED`-only opt-outs are refused (0 = no limit).
    pub(crate) backlog_limit: u64,
    /// Signs the audit entries of the changes made here (opt-ins, controls), as the worker signs
    /// opt-outs.
    pub(crate) audit_log: AuditLog,
    /// This replica's name: how it reports the controls version it has loaded.
    pub(crate) replica: String,
    /// How often the store's controls version is polled.
    pub(crate) controls_poll: Duration,
    /// How long the controls are trusted without a confirmation (`controls::Freshness`).
    pub(crate) controls_stale_after: Duration,
    /// How often a caught-up `WatchChanges` stream polls the store for new audit entries.
    pub(crate) watch_poll: Duration,
    /// The legal clocks: which regimes apply, their windows and holidays.
    pub(crate) deadlines: crate::domain::deadline::DeadlineRules,
    /// TESTS ONLY: checks may be told to pause after reading the controls (`failpoint_check_pause`).
    #[cfg(feature = "failpoints")]
    pub(crate) check_pause_failpoint: bool,
}

/// The application's use cases over its ports. Cheap to clone; every replica holds one.
#[derive(Clone)]
pub(crate) struct Suppressions {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Cache,
    near: Arc<NearCache>,
    store: Store,
    pepper: Pepper,
    /// Seals and opens kept identifiers (the key file's vault keys, reloaded with it).
    vault: Arc<dyn IdentifierVault>,
    clock: Clock,
    settings: ServiceSettings,
    waiters: Arc<Waiters>,
    rebuild: Arc<RebuildTrigger>,
    /// The halts and mandatory declarations in force, read on every check; replaced whole.
    controls: ArcSwap<Controls>,
    /// Whether checks may be answered from the cache (see [`uncached`]).
    doubt: uncached::CacheDoubt,
    /// Whether check-path store reads fail at once (the store failed moments ago).
    store_breaker: breaker::StoreBreaker,
    /// Whether `controls` may be trusted: confirmed current within the bound.
    controls_fresh: controls::Freshness,
    /// The halt triggers' counters, by trigger: what every snapshot of `controls` counts in.
    trigger_counts: CountsById,
}

impl Suppressions {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cache: Cache,
        near: Arc<NearCache>,
        store: Store,
        pepper: Pepper,
        vault: Arc<dyn IdentifierVault>,
        clock: Clock,
        settings: ServiceSettings,
        waiters: Arc<Waiters>,
        rebuild: Arc<RebuildTrigger>,
    ) -> Self {
        let controls_fresh = controls::Freshness::new(settings.controls_stale_after);
        Suppressions {
            inner: Arc::new(Inner {
                cache,
                near,
                store,
                pepper,
                vault,
                clock,
                settings,
                waiters,
                rebuild,
                controls: ArcSwap::from_pointee(Controls::default()),
                doubt: uncached::CacheDoubt::default(),
                store_breaker: breaker::StoreBreaker::default(),
                controls_fresh,
                trigger_counts: CountsById::default(),
            }),
        }
    }

    fn now(&self) -> Millis {
        self.inner.clock.now()
    }

    /// Waits until every replica answers by the cache writes of a slot group up to `change` (see
    /// `cache::near`).
    pub(crate) async fn settled(
        &self,
        group: Group,
        change: u64,
        leases: Option<Leases>,
    ) -> Result<(), ServiceError> {
        let settled = self.inner.near.settled(group, change, leases).await;
        settled.map_err(not_settled)
    }

    /// [`Self::settled`] for every group a merge or a retraction wrote to.
    pub(crate) async fn settled_merged(&self, merged: &Merged) -> Result<(), ServiceError> {
        let settled = self.inner.near.settled_merged(merged).await;
        settled.map_err(not_settled)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Signs the audit entries of the changes the use cases make directly (opt-ins, controls).
    pub(crate) fn audit_log(&self) -> &AuditLog {
        &self.inner.settings.audit_log
    }

    /// The legal clocks' rules.
    pub(crate) fn deadline_rules(&self) -> &crate::domain::deadline::DeadlineRules {
        &self.inner.settings.deadlines
    }

    /// The service's notion of "now"; opt-out tokens expire by it.
    pub(crate) fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The keyed hash of a recipient, which is what an opt-out token carries instead of the raw
    /// identifier.
    pub(crate) fn subject(&self, recipient: &Recipient) -> SubjectHash {
        self.inner.pepper.subject(recipient)
    }
}

fn not_settled(e: NotSettled) -> ServiceError {
    ServiceError::unavailable(
        "the change is recorded but not yet confirmed by every replica; retry (an opt-out with the \
         same idempotency key returns the same receipt)",
        e,
    )
}

/// A receipt as the caller sees it.
#[derive(Debug, Clone)]
pub(crate) struct ReceiptView {
    pub(crate) id: ReceiptId,
    pub(crate) accepted_at: Millis,
    pub(crate) state: ReceiptState,
    /// Once durable and asked for with `GetReceipt`: the audit entry and its proof.
    pub(crate) proof: Option<crate::audit::verify::ReceiptProof>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReceiptState {
    /// Visible to checks and queued; not yet committed.
    Accepted,
    /// Committed by the durable store.
    Durable,
}
