//! `ImportSuppressions`: a stream of rows becomes one batch of records, chunk by chunk, with bounded
//! memory (never more than a chunk is held; the gRPC stream's flow control pushes back on the sender).
//!
//! Each row is validated like an `OptOut`; an invalid row is rejected with its line and the problem,
//! and the import goes on. A row whose person already has an active record of the same scope and
//! reason (from before, or from an earlier row) is a duplicate: counted, nothing created.
//!
//! Per chunk the order is the one `OptOut` follows, cache first, then store: the store never holds a
//! record the (complete) cache lacks, so a check never answers a false "send". If Redis is away the
//! chunk is refused before anything is written; if the store fails after the cache took the chunk,
//! the cache holds extra suppressions, which is the safe side. Either way what earlier chunks imported
//! stays, and the batch is listed with its counts.

use super::{ServiceError, Suppressions};
use crate::domain::{Invalid, Millis, Reason, ReceiptId, Recipient, Scope, Source, Suppression};
use crate::store::imports::ChunkCounts;
use std::collections::HashSet;
use tracing::Span;

/// Rows validated, deduplicated and committed together.
pub(crate) const CHUNK: usize = 1_000;
/// Rejections the summary lists (all are counted).
pub(crate) const MAX_REJECTIONS: usize = 1_000;

/// One row as the caller sent it, parsed; the rules that need the clock are checked as it arrives.
#[derive(Debug, Clone)]
pub(crate) struct ImportItem {
    pub(crate) recipient: Recipient,
    pub(crate) scope: Scope,
    pub(crate) reason: Reason,
    pub(crate) source: Source,
    /// Backdated arrival; `None` = now.
    pub(crate) received_at: Option<Millis>,
    pub(crate) expires_at: Option<Millis>,
}

impl ImportItem {
    /// Only system-originated reasons may expire (the rule `OptOut` applies).
    pub(crate) fn new(
        recipient: Recipient,
        scope: Scope,
        reason: Reason,
        source: Source,
        received_at: Option<Millis>,
        expires_at: Option<Millis>,
    ) -> Result<Self, Invalid> {
        super::opt_out::check_expiry(reason, expires_at)?;
        Ok(ImportItem {
            recipient,
            scope,
            reason,
            source,
            received_at,
            expires_at,
        })
    }
}

/// A row that created nothing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) line: u64,
    pub(crate) problem: String,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub(crate) struct ImportSummary {
    pub(crate) batch_id: String,
    pub(crate) imported: u64,
    pub(crate) duplicates: u64,
    pub(crate) rejected: u64,
    /// The first [`MAX_REJECTIONS`].
    pub(crate) rejections: Vec<Rejection>,
}

/// An import in progress: rows go in with [`Import::add`], [`Import::finish`] commits the rest.
pub(crate) struct Import {
    service: Suppressions,
    actor: String,
    /// The records of the pending chunk's valid rows, in stream order.
    pending: Vec<Suppression>,
    /// Rejected rows of the pending chunk, counted with it.
    pending_rejected: u64,
    summary: ImportSummary,
    /// The batch, which every record's receipt names, and the number the next record gets.
    batch: ReceiptId,
    numbered: u32,
}

impl Suppressions {
    /// Opens a batch (listed from now on) for `actor`'s rows.
    #[tracing::instrument(name = "import", skip_all, fields(suppressd.batch_id))]
    pub(crate) async fn begin_import(&self, actor: String) -> Result<Import, ServiceError> {
        let now = self.now();
        let batch = ReceiptId::new_batch(now);
        let batch_id = batch.to_string();
        Span::current().record("suppressd.batch_id", batch_id.as_str());
        self.inner
            .store
            .create_import(&batch_id, &actor, now)
            .await?;
        tracing::info!(batch_id, "import started");
        Ok(Import {
            service: self.clone(),
            actor,
            pending: Vec::with_capacity(CHUNK),
            pending_rejected: 0,
            summary: ImportSummary {
                batch_id,
                ..ImportSummary::default()
            },
            batch,
            numbered: 0,
        })
    }
}

impl Import {
    /// The batch every row of this import joins.
    pub(crate) fn batch_id(&self) -> &str {
        &self.summary.batch_id
    }

    /// Takes one row (or the reason it could not be parsed); commits a chunk when one is full.
    pub(crate) async fn add(
        &mut self,
        line: u64,
        row: Result<ImportItem, Invalid>,
    ) -> Result<(), ServiceError> {
        let now = self.service.now();
        let receipt = self
            .numbered
            .checked_add(1)
            .map(|next| {
                ReceiptId::imported(self.batch, std::mem::replace(&mut self.numbered, next))
            })
            .ok_or_else(|| Invalid::new("row", "a batch holds at most 4,294,967,295 records"));
        match receipt.and_then(|receipt| {
            row.and_then(|item| record(&self.service, item, receipt, &self.actor, now))
        }) {
            Ok(r) => self.pending.push(r),
            Err(invalid) => self.reject(line, invalid.to_string()),
        }
        if self.pending.len() + self.pending_rejected as usize >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    /// Commits what is pending and closes the batch.
    pub(crate) async fn finish(mut self) -> Result<ImportSummary, ServiceError> {
        self.flush().await?;
        let now = self.service.now();
        self.service
            .inner
            .store
            .finish_import(&self.summary.batch_id, now)
            .await
            .map_err(|e| self.failed(e.into()))?;
        let s = &self.summary;
        tracing::info!(
            batch_id = s.batch_id,
            imported = s.imported,
            duplicates = s.duplicates,
            rejected = s.rejected,
            "import finished"
        );
        Ok(self.summary)
    }

    fn reject(&mut self, line: u64, problem: String) {
        self.pending_rejected += 1;
        self.summary.rejected += 1;
        if self.summary.rejections.len() < MAX_REJECTIONS {
            self.summary.rejections.push(Rejection { line, problem });
        }
    }

    /// Drops the pending chunk's duplicates (against the store and within the chunk), then writes
    /// it: cache, then store (records, audit entries, counts), then the cache once more.
    async fn flush(&mut self) -> Result<(), ServiceError> {
        if self.pending.is_empty() && self.pending_rejected == 0 {
            return Ok(());
        }
        let service = self.service.clone();
        let inner = &service.inner;
        let now = service.now();
        let mut records = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK));
        let subjects: Vec<_> = records
            .iter()
            .map(|r| r.subject)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let active = inner
            .store
            .active_of_subjects(&subjects, now)
            .await
            .map_err(|e| self.failed(e.into()))?;
        let mut seen: HashSet<_> = active.iter().map(key).collect();
        let before = records.len();
        records.retain(|r| seen.insert(key(r)));
        let counts = ChunkCounts {
            duplicates: (before - records.len()) as u64,
            rejected: std::mem::take(&mut self.pending_rejected),
        };
        let batch = self.summary.batch_id.clone();
        if inner
            .store
            .import_rolled_back(&batch)
            .await
            .map_err(|e| self.failed(e.into()))?
        {
            return Err(self.rolled_back());
        }
        let merged = match inner.cache.merge(&records, true).await {
            Ok(merged) => {
                inner.cache.saw_merged(&merged);
                merged
            }
            Err(e) => {
                return Err(self.failed(ServiceError::unavailable(
                    "Redis is unavailable; this chunk was not imported",
                    e,
                )));
            }
        };
        match inner
            .store
            .commit_import_chunk(&batch, &records, counts, now, service.audit_log())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                // The cache took records the store will never hold: refill their fields from what
                // the store has (best effort; a rebuild would drop them too).
                if let Err(e) = service.retract(&records).await {
                    tracing::warn!(error = %e, batch_id = batch, "retracting an abandoned chunk");
                }
                return Err(self.rolled_back());
            }
            Err(e) => {
                return Err(self.failed(ServiceError::unavailable(
                    "the durable store failed after Redis took this chunk (its rows suppress \
                     until the cache is next rebuilt, but none of them is in the batch)",
                    e,
                )));
            }
        }
        // A rebuild that read the store just before this commit would miss the chunk: merge it once
        // more, as the worker does after each commit. Best effort; the catch-up pass covers a miss.
        match inner.cache.merge(&records, true).await {
            Ok(merged) => inner.cache.saw_merged(&merged),
            Err(e) => {
                tracing::warn!(error = %e, batch_id = batch, "re-applying an import chunk to Redis")
            }
        }
        // Every replica answers by the chunk before it counts as imported.
        service
            .settled_merged(&merged)
            .await
            .map_err(|e| self.failed(e))?;
        self.summary.imported += records.len() as u64;
        self.summary.duplicates += counts.duplicates;
        Ok(())
    }

    /// What a failure midway leaves: names the batch, so the operator knows what was kept and what
    /// to roll back.
    pub fn stopped(&self) -> String {
        let s = &self.summary;
        format!(
            "import batch {} stopped; {} rows imported before this point stay (roll back the \
             batch to undo them)",
            s.batch_id, s.imported
        )
    }

    /// An error that names the batch (see [`Import::stopped`]).
    fn failed(&self, e: ServiceError) -> ServiceError {
        let s = &self.summary;
        let kept = self.stopped();
        match e {
            ServiceError::Unavailable { message, cause } => ServiceError::Unavailable {
                message: format!("{message}; {kept}"),
                cause,
            },
            ServiceError::Internal(cause) => {
                ServiceError::Internal(cause.context(format!("import batch {}", s.batch_id)))
            }
            other => other,
        }
    }

    fn rolled_back(&self) -> ServiceError {
        ServiceError::Aborted(format!(
            "import batch {} was rolled back while it ran; the rest of the stream was not imported",
            self.summary.batch_id
        ))
    }
}

/// What makes two records duplicates: the person, the exact scope and the reason.
fn key(s: &Suppression) -> (crate::domain::SubjectHash, Scope, Reason) {
    (s.subject, s.scope.clone(), s.reason)
}

/// The record a row creates, once the rules that need the clock hold.
fn record(
    service: &Suppressions,
    item: ImportItem,
    receipt: ReceiptId,
    actor: &str,
    now: Millis,
) -> Result<Suppression, Invalid> {
    let ImportItem {
        recipient,
        scope,
        reason,
        source,
        received_at,
        expires_at,
    } = item;
    if received_at.is_some_and(|at| at > now) {
        return Err(Invalid::new("received_at", "must not lie in the future"));
    }
    if expires_at.is_some_and(|at| at <= now) {
        return Err(Invalid::new("expires_at", "must lie in the future"));
    }
    Ok(Suppression {
        receipt,
        subject: service.subject(&recipient),
        scope,
        reason,
        source,
        actor: actor.to_owned(),
        received_at: received_at.unwrap_or(now),
        effective_at: now,
        expires_at,
        idempotency_key: None,
        sealed: None,
    })
}
