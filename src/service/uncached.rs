//! A person's opt-out when Redis cannot take it (SPEC §6). Someone who clicked an unsubscribe link
//! or texted STOP rarely tries again, so their opt-out (reason `USER_REQUEST` or `COMPLAINT`) is
//! taken whenever the store is reachable: the store commits the record, its audit entry and a mark
//! saying the cache may lack it, in one transaction.
//!
//! From then on the cache cannot vouch for an absence until it holds the record. One mechanism
//! keeps every replica honest about that, [`CacheDoubt`]: a replica answers checks from the cache
//! (near-cache or Redis) only after a pass of [`Suppressions::reconcile`] found no marked record and
//! reached Redis, with nothing doubted since. A Redis failure seen anywhere in the replica, and a
//! marked record found in the store, doubt the cache; checks then go to the store, which holds the
//! record. The pass writes marked records into the cache through the same merge as the worker's
//! (every near-cache applies it before the pass goes on), deletes their marks, and trusts the cache
//! again. Every replica looks for marks every `--controls-poll`, in the controls poll's own reads
//! (one statement for the controls version and the marks, one Redis round trip): finding none, with
//! Redis answering, is a pass that writes nothing ([`Suppressions::polled`]); finding some wakes
//! the pass.
//!
//! Read-your-writes: the opt-out returns once its mark is gone (some replica reached Redis and wrote
//! it there, every near-cache applied it), or after `--durable-wait-ms`. Past that bound no replica
//! that reaches both Redis and the store has run a pass (while Redis is down for every replica,
//! every check is answered by the store, which holds it). The one case this cannot cover is a
//! replica that reaches Redis but not the store for longer than the bound: it cannot learn of an
//! opt-out only the store holds (docs/operations.md says so).

use super::{ReceiptState, ReceiptView, ServiceError, Suppressions};
use crate::{
    domain::{ReceiptId, Suppression},
    store::uncached::TakenUncached,
    telemetry::metrics::names,
};
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often an opt-out taken by the store looks whether its mark is gone.
const MARK_POLL: Duration = Duration::from_millis(5);

/// Whether this replica may answer checks from the cache: a count of reasons to doubt it, and the
/// count a clean pass last cleared. Two atomic loads per check.
#[derive(Debug)]
pub(crate) struct CacheDoubt {
    doubts: AtomicU64,
    cleared: AtomicU64,
    /// A poll found marked records: the pass runs.
    marked: Notify,
}

impl Default for CacheDoubt {
    /// Doubted: the store may hold marked records from before this process started.
    fn default() -> Self {
        CacheDoubt {
            doubts: AtomicU64::new(1),
            cleared: AtomicU64::new(0),
            marked: Notify::new(),
        }
    }
}

impl CacheDoubt {
    /// Redis failed, or the store holds a record the cache may lack: answer from the store until a
    /// pass clears it.
    pub(crate) fn doubt(&self) {
        self.doubts.fetch_add(1, Ordering::SeqCst);
        metrics::gauge!(names::CACHE_TRUSTED).set(0.0);
    }

    pub(crate) fn trusted(&self) -> bool {
        self.cleared.load(Ordering::SeqCst) == self.doubts.load(Ordering::SeqCst)
    }

    /// The doubts so far; a pass (or a poll) that started after this may clear them, and only them.
    pub(super) fn mark(&self) -> u64 {
        self.doubts.load(Ordering::SeqCst)
    }

    fn clear(&self, mark: u64) {
        self.cleared.fetch_max(mark, Ordering::SeqCst);
        if self.trusted() {
            metrics::gauge!(names::CACHE_TRUSTED).set(1.0);
        }
    }
}

/// Whose opt-outs the store takes without Redis: what a person said themselves. Other callers are
/// systems that retry.
pub(super) fn taken_without_redis(s: &Suppression) -> bool {
    use crate::domain::Reason;
    matches!(s.reason, Reason::UserRequest | Reason::Complaint)
}

impl Suppressions {
    /// Commits `record` in the store, marked uncached, and waits (up to the DURABLE wait) until a
    /// replica has written it into the cache. `Some` always: the store's answer is final, `DURABLE`
    /// (or the receipt the idempotency key was first used for).
    pub(super) async fn take_uncached(
        &self,
        record: &Suppression,
    ) -> Result<Option<ReceiptView>, ServiceError> {
        let inner = &self.inner;
        inner.doubt.doubt();
        let taken = inner
            .store
            .take_uncached(record, "", self.now(), self.audit_log())
            .await
            .map_err(|e| {
                ServiceError::unavailable(
                    "neither Redis nor the durable store can take the opt-out; retry",
                    e,
                )
            })?;
        if taken == TakenUncached::Present {
            let key = record.idempotency_key.as_deref().unwrap_or_default();
            return match self
                .prior_receipt(&record.subject, &record.scope.tenant, key)
                .await?
            {
                Some(prior) => Ok(Some(prior)),
                None => Err(ServiceError::Internal(anyhow::anyhow!(
                    "the store refused a new receipt without a prior record"
                ))),
            };
        }
        metrics::counter!(names::UNCACHED_OPT_OUTS, "reason" => record.reason.as_str())
            .increment(1);
        super::opt_out::count_opt_out(record.reason, record.source);
        tracing::warn!(
            receipt = %record.receipt,
            "Redis is unavailable; the store took a person's opt-out directly"
        );
        self.wait_cached(record.receipt).await;
        Ok(Some(ReceiptView {
            id: record.receipt,
            accepted_at: record.received_at,
            state: ReceiptState::Durable,
            proof: None,
        }))
    }

    /// Waits until `receipt`'s mark is gone, up to the DURABLE wait.
    async fn wait_cached(&self, receipt: ReceiptId) {
        let deadline = tokio::time::Instant::now() + self.inner.settings.durable_wait;
        loop {
            match self.inner.store.is_uncached(receipt).await {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => tracing::debug!(error = %e, "reading an uncached mark"),
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    %receipt,
                    "no replica could write the opt-out into the cache yet; the store answers it"
                );
                return;
            }
            tokio::time::sleep(MARK_POLL).await;
        }
    }

    /// One pass: writes every marked record into the cache (on every near-cache before it goes
    /// on), deletes the marks, and trusts the cache again if nothing was doubted meanwhile.
    /// Returns how many records it wrote.
    pub(crate) async fn reconcile(&self) -> Result<usize, ServiceError> {
        let inner = &self.inner;
        let mut written = 0;
        loop {
            let mark = inner.doubt.mark();
            let marked = inner.store.uncached(self.now()).await?;
            if marked.is_empty() {
                inner
                    .cache
                    .ping()
                    .await
                    .inspect_err(|_| inner.doubt.doubt())?;
                inner.doubt.clear(mark);
                return Ok(written);
            }
            inner.doubt.doubt();
            let active: Vec<Suppression> = marked
                .iter()
                .filter(|m| !m.ended)
                .map(|m| m.record.clone())
                .collect();
            let merged = inner
                .cache
                .merge(&active, true)
                .await
                .inspect_err(|_| inner.doubt.doubt())?;
            inner.cache.saw_merged(&merged);
            self.settled_merged(&merged).await?;
            let ids: Vec<ReceiptId> = marked.iter().map(|m| m.record.receipt).collect();
            inner.store.forget_uncached(&ids).await?;
            written += active.len();
        }
    }

    /// What a controls poll found, its reads sent after the doubts counted `doubts`: whether the
    /// store holds marked records (`None`: the store did not answer) and whether Redis answered.
    /// No mark with Redis answering is what a pass that writes nothing finds, and clears as much;
    /// a mark doubts the cache and wakes the pass; so does Redis not answering, as any Redis
    /// failure does.
    pub(super) fn polled(&self, doubts: u64, marked: Option<bool>, redis_answered: bool) {
        let doubt = &self.inner.doubt;
        match marked {
            Some(false) if redis_answered => doubt.clear(doubts),
            Some(true) => {
                doubt.doubt();
                doubt.marked.notify_one();
            }
            _ => {}
        }
        if !redis_answered {
            doubt.doubt();
        }
    }

    /// Runs [`reconcile`](Self::reconcile) whenever a poll finds marked records (and again every
    /// `every` while a pass fails) until shutdown; logs an outage once.
    pub(crate) async fn reconcile_loop(self, every: Duration, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            let woken = self.inner.doubt.marked.notified();
            tokio::select! {
                _ = woken, if !failing => {}
                _ = tokio::time::sleep(every), if failing => {}
                _ = shutdown.cancelled() => return,
            }
            match self.reconcile().await {
                Ok(written) => {
                    if written > 0 {
                        tracing::info!(written, "opt-outs the store took alone are in the cache");
                    }
                    if failing {
                        tracing::info!("the cache is trusted again");
                        failing = false;
                    }
                }
                Err(e) if !failing => {
                    tracing::warn!(
                        error = %e,
                        "writing opt-outs the store took alone into the cache failed; retrying"
                    );
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}
