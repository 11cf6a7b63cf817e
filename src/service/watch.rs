//! `WatchChanges`: the audit log as a stream of changes, for the systems that keep lists of their
//! own. The log is the order: every change is appended to it in the transaction that makes it,
//! numbered without gaps, so a watcher reads it by `seq` page by page and then follows it by polling
//! the store (which also sees what other replicas committed, and what the controls wrote directly).
//!
//! Guarantees, and where they come from:
//! - **No skips, no reordering.** Pages are read in `seq` order and each entry must be the one after
//!   the last: an entry that is not yet visible ends the page there, and the next poll reads from it.
//! - **Backpressure.** The stream is a bounded channel; the reader task reads a page only after the
//!   previous one was handed over, so a slow watcher holds the task back (HTTP/2 flow control holds
//!   the channel) and nothing is buffered without bound or dropped.
//! - **Resumable anywhere.** The cursor is the log's own `seq`, the same on every replica: a client
//!   cut off (or whose replica died) starts again after the last `seq` it received.
//!
//! This module reads the log; it never writes it and knows nothing of gRPC.

use super::{ServiceError, Suppressions};
use crate::{
    audit::{Action, AuditEntry},
    domain::Invalid,
    telemetry::metrics::names,
};
use std::{collections::BTreeSet, time::Duration};
use tokio::sync::mpsc;

/// Entries read from the store per page.
const PAGE: usize = 500;

/// Changes handed over but not yet taken by the transport. Small on purpose: this (and HTTP/2's
/// window) is all a slow watcher can have waiting for it.
const CHANNEL: usize = 64;

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// After the entry with this `seq` (the cursor a client kept).
    After(u64),
    /// From the first entry of the log.
    Beginning,
    /// After the last entry committed when the watch began.
    Head,
}

/// Which changes a watcher wants; an empty set means every one.
#[derive(Debug, Clone, Default)]
pub(crate) struct WatchFilter {
    tenants: BTreeSet<String>,
    kinds: BTreeSet<&'static str>,
}

impl WatchFilter {
    /// A filter on these tenants and kinds (audit actions); an unknown kind is refused, naming it.
    pub(crate) fn parse(
        tenants: impl IntoIterator<Item = String>,
        kinds: impl IntoIterator<Item = String>,
    ) -> Result<Self, Invalid> {
        let kinds = kinds
            .into_iter()
            .map(|k| {
                Action::named(&k).map(Action::as_str).ok_or_else(|| {
                    let known: Vec<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
                    Invalid::new(
                        "kinds",
                        format!("unknown kind {k:?} (one of {})", known.join(", ")),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(WatchFilter {
            tenants: tenants.into_iter().collect(),
            kinds,
        })
    }

    /// The tenants named, if any (the API checks the caller may use each).
    pub(crate) fn tenants(&self) -> &BTreeSet<String> {
        &self.tenants
    }

    fn wants(&self, entry: &AuditEntry) -> bool {
        (self.tenants.is_empty() || self.tenants.contains(&entry.tenant))
            && (self.kinds.is_empty() || self.kinds.contains(entry.action.as_str()))
    }
}

/// The changes of one watch, in log order; an error ends it (the client resumes from its cursor).
pub(crate) type Changes = mpsc::Receiver<Result<AuditEntry, ServiceError>>;

impl Suppressions {
    /// Starts a watch. The head is read before this returns, so a watch that cannot reach the store
    /// fails here rather than as a stream that never says anything.
    pub(crate) async fn watch_changes(
        &self,
        start: Start,
        filter: WatchFilter,
    ) -> Result<Changes, ServiceError> {
        let next = match start {
            Start::After(seq) => seq + 1,
            Start::Beginning => 0,
            Start::Head => self.inner.store.audit_size().await? as u64,
        };
        let (tx, rx) = mpsc::channel(CHANNEL);
        let watcher = Watcher {
            service: self.clone(),
            filter,
            next,
            poll: self.inner.settings.watch_poll,
        };
        tokio::spawn(watcher.run(tx));
        Ok(rx)
    }
}

/// One watch's reader: where it is in the log and what it wants.
struct Watcher {
    service: Suppressions,
    filter: WatchFilter,
    /// The `seq` of the next entry to read.
    next: u64,
    poll: Duration,
}

impl Watcher {
    async fn run(mut self, tx: mpsc::Sender<Result<AuditEntry, ServiceError>>) {
        metrics::gauge!(names::WATCHERS).increment(1.0);
        let _gone = scopeguard(|| metrics::gauge!(names::WATCHERS).decrement(1.0));
        loop {
            match self.step(&tx).await {
                Ok(Step::More) => continue,
                Ok(Step::CaughtUp) => {
                    // Wait for the next poll, or stop at once if the watcher went away.
                    tokio::select! {
                        _ = tokio::time::sleep(self.poll) => {}
                        _ = tx.closed() => return,
                    }
                }
                Ok(Step::Gone) => return,
                Err(e) => {
                    tracing::warn!(error = %e, next = self.next, "a watch stopped on a store error");
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    }

    /// Reads one page from `next` and hands over the wanted entries, each only once the channel
    /// has room: the loop around it is the whole watch, and a test can follow it entry by entry.
    async fn step(
        &mut self,
        tx: &mpsc::Sender<Result<AuditEntry, ServiceError>>,
    ) -> Result<Step, ServiceError> {
        let after = self.next as i64 - 1;
        let rows = self.service.inner.store.audit_rows(after, PAGE).await?;
        let full = rows.len() == PAGE;
        for row in rows {
            let entry = row.entry().map_err(|problem| {
                ServiceError::Internal(anyhow::anyhow!("audit entry {}: {problem}", row.seq))
            })?;
            if entry.seq != self.next {
                // Not yet visible (or never written): stop before it and read it again, so the
                // stream never skips an entry.
                return Ok(Step::CaughtUp);
            }
            self.next += 1;
            if self.filter.wants(&entry) && tx.send(Ok(entry)).await.is_err() {
                return Ok(Step::Gone);
            }
        }
        Ok(if full { Step::More } else { Step::CaughtUp })
    }
}

enum Step {
    /// A full page was read: read the next at once.
    More,
    /// The end of the log (as visible now) was reached: poll again later.
    CaughtUp,
    /// The watcher went away.
    Gone,
}

/// Runs `f` when dropped (the watcher task ends however it ends).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    Guard(Some(f))
}
