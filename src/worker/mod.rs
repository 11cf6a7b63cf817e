//! The write-behind worker: moves opt-outs from the Redis stream into the durable store, a batch per
//! transaction (group commit), and acknowledges only what the store committed.
//!
//! Every `serve` process runs one as a member of one consumer group. Entries a dead member left
//! pending are claimed after an idle time; the store's keys make a redelivered entry a no-op, so each
//! record lands exactly once however often it is delivered; each new record gets its audit entry and
//! a signed checkpoint in the same transaction. Entries are taken in order: first this
//! member's own pending ones (a commit that failed), then abandoned ones, then new ones.
//!
//! Each slot group has a stream of its own (`cache::layout`), so a process runs one worker per
//! group, each reading its group's stream (with one group, as on a standalone Redis, one worker).

use crate::{
    audit::AuditLog,
    cache::{
        Cache, CacheError,
        layout::Group,
        stream::{Consumer, Delivery, Unreadable},
    },
    domain::{Clock, Suppression},
    store::{AuditHint, Store},
    telemetry::{metrics::names, propagation, sampling},
};
use std::{
    collections::HashSet,
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How often expired suppressions get their `expire` audit entry (as many per sweep as
/// `Store::log_expiries` takes).
const EXPIRY_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The longest pause between failing steps: short, so a returning store is drained promptly.
const MAX_PAUSE: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Most entries per transaction.
    pub batch: usize,
    /// How long a read waits for new entries.
    pub block: Duration,
    /// How long an entry stays unacknowledged by its consumer before another may claim it.
    pub claim_idle: Duration,
    /// Testing hook (feature `failpoints`): abort the process after the first commit, before
    /// acknowledging.
    #[cfg(feature = "failpoints")]
    pub crash_after_commit: bool,
}

/// What one step did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Entries taken from the stream.
    pub delivered: usize,
    /// Rows the store did not have before (redeliveries add none).
    pub inserted: u64,
    /// Entries that could not be decoded and were moved to the dead-letter stream.
    pub dead_lettered: usize,
    /// Entries of a newer format, left unacknowledged for a newer worker.
    pub left_for_newer: usize,
}

pub struct Worker {
    consumer: Consumer,
    /// The slot group whose stream it reads.
    group: Group,
    cache: Cache,
    store: Store,
    clock: Clock,
    log: AuditLog,
    /// The audit head this worker's last commit left (see [`Store::commit`]).
    audit_head: AuditHint,
    settings: WorkerSettings,
    /// Whether this worker logs expiries: one per process is enough (the first group's).
    sweeps_expiries: bool,
    /// Whether this member may hold pending entries of its own (at start, and after a failure).
    own_pending: bool,
    last_claim: Option<Instant>,
    last_expiry_sweep: Option<Instant>,
    /// Entries this worker found too new for itself, so that it does not take them again from
    /// those left for a newer worker (bounded: cleared when large).
    known_newer: HashSet<String>,
}

impl Worker {
    /// The worker of the first slot group (the only one on a standalone Redis).
    pub async fn new(
        cache: Cache,
        store: Store,
        clock: Clock,
        log: AuditLog,
        consumer_name: &str,
        settings: WorkerSettings,
    ) -> anyhow::Result<Worker> {
        Self::of_group(cache, store, clock, log, consumer_name, 0, settings).await
    }

    /// The worker of one slot group's stream.
    pub async fn of_group(
        cache: Cache,
        store: Store,
        clock: Clock,
        log: AuditLog,
        consumer_name: &str,
        group: Group,
        settings: WorkerSettings,
    ) -> anyhow::Result<Worker> {
        let consumer = Consumer::connect(&cache, consumer_name, group).await?;
        Ok(Worker {
            consumer,
            group,
            cache,
            store,
            clock,
            log,
            audit_head: AuditHint::default(),
            settings,
            sweeps_expiries: group == 0,
            own_pending: true,
            last_claim: None,
            last_expiry_sweep: None,
            known_newer: HashSet::new(),
        })
    }

    /// Reads, commits and acknowledges one batch.
    pub async fn step(&mut self) -> anyhow::Result<StepReport> {
        let (report, unsettled) = self.read_and_commit().await?;
        if let Some(unsettled) = unsettled
            && let Err(e) = unsettled.settle(self.cache.clone(), self.group).await
        {
            self.own_pending = true;
            return Err(e.into());
        }
        Ok(report)
    }

    /// Reads the next batch and commits it to the store; what it committed is still to be settled.
    async fn read_and_commit(&mut self) -> anyhow::Result<(StepReport, Option<Unsettled>)> {
        let batch = self.next_batch().await?;
        if batch.is_empty() {
            // An idle read: nothing to commit, and no span for it.
            return Ok((StepReport::default(), None));
        }
        // Each batch starts a trace of its own (linked to its requests' traces), sampled here.
        let decision = sampling::decide(None);
        match sampling::Sampled::new(self.commit(batch, decision), decision).await {
            Ok(done) => Ok(done),
            Err(e) => {
                self.own_pending = true;
                Err(e)
            }
        }
    }

    /// The next entries to commit, in the order that keeps arrival order as far as it can.
    pub async fn next_batch(&mut self) -> anyhow::Result<Vec<Delivery>> {
        let n = self.settings.batch;
        if self.own_pending {
            let own = self.consumer.read("0", n, None).await?;
            if !own.is_empty() {
                return Ok(own);
            }
            self.own_pending = false;
        }
        let claim_every = self.settings.claim_idle.min(Duration::from_secs(1));
        if self.last_claim.is_none_or(|at| at.elapsed() >= claim_every) {
            self.last_claim = Some(Instant::now());
            // Entries an older worker left for a newer one: this worker may be that one.
            let left = self
                .consumer
                .take_left_for_newer(n, &self.known_newer)
                .await?;
            if !left.is_empty() {
                return Ok(left);
            }
            let claimed = self
                .consumer
                .claim_abandoned(self.settings.claim_idle, n)
                .await?;
            if !claimed.is_empty() {
                tracing::info!(
                    claimed = claimed.len(),
                    "claimed entries of a dead consumer"
                );
                return Ok(claimed);
            }
        }
        Ok(self
            .consumer
            .read(">", n, Some(self.settings.block))
            .await?)
    }

    /// Commits one batch in one transaction; the cache and the stream follow when the returned
    /// batch is settled ([`Unsettled::settle`]). Its span starts a trace of its own, linked to the
    /// span of every request whose opt-out it commits, and holds the settling too.
    #[tracing::instrument(name = "writebehind.commit", skip_all, fields(
        otel.kind = "consumer", messaging.system = "redis", messaging.operation.type = "process",
        messaging.batch.message_count = batch.len() as i64, suppressd.inserted))]
    async fn commit(
        &mut self,
        batch: Vec<Delivery>,
        decision: Option<bool>,
    ) -> anyhow::Result<(StepReport, Option<Unsettled>)> {
        let span = Span::current();
        for link in batch.iter().filter_map(|d| d.trace.as_ref()) {
            if let Some(request) = propagation::span_context(link) {
                span.add_link(request);
            }
        }
        let mut report = StepReport {
            delivered: batch.len(),
            ..StepReport::default()
        };
        let mut ids = Vec::with_capacity(batch.len());
        let mut records: Vec<Suppression> = Vec::with_capacity(batch.len());
        // The trace of the request behind each record goes into its audit entry.
        let mut trace_ids = Vec::with_capacity(batch.len());
        let mut newer = Vec::new();
        for delivery in batch {
            match delivery.record {
                Ok(record) => {
                    ids.push(delivery.id);
                    records.push(record);
                    trace_ids.push(
                        delivery
                            .trace
                            .as_ref()
                            .and_then(propagation::span_context)
                            .map(|sc| sc.trace_id().to_string())
                            .unwrap_or_default(),
                    );
                }
                Err(Unreadable::Newer(version)) => {
                    tracing::warn!(
                        id = delivery.id,
                        version,
                        "stream entry of a newer format left for a newer worker"
                    );
                    newer.push(delivery.id);
                }
                Err(Unreadable::Broken(problem)) => {
                    tracing::error!(
                        id = delivery.id,
                        problem,
                        "undecodable stream entry dead-lettered"
                    );
                    self.consumer.dead_letter(&delivery.id, &problem).await?;
                    metrics::counter!(names::DEAD_LETTERS).increment(1);
                    report.dead_lettered += 1;
                }
            }
        }
        if !newer.is_empty() {
            self.consumer.leave_for_newer(&newer).await?;
            metrics::counter!(names::NEWER_ENTRIES).increment(newer.len() as u64);
            report.left_for_newer = newer.len();
            if self.known_newer.len() > 100_000 {
                self.known_newer.clear();
            }
            self.known_newer.extend(newer);
        }
        if records.is_empty() {
            return Ok((report, None));
        }
        let started = Instant::now();
        let committed = self
            .store
            .commit(
                &records,
                &trace_ids,
                self.clock.now(),
                &self.log,
                &mut self.audit_head,
            )
            .await?;
        #[cfg(feature = "failpoints")]
        if self.settings.crash_after_commit {
            tracing::error!("failpoint: aborting between the store commit and the acknowledgement");
            std::process::abort();
        }
        report.inserted = committed.inserted;
        let path = if committed.at_once {
            "at_once"
        } else {
            "locked"
        };
        metrics::histogram!(names::COMMIT_DURATION, "path" => path).record(started.elapsed());
        metrics::histogram!(names::BATCH_SIZE).record(records.len() as f64);
        metrics::counter!(names::COMMITTED).increment(report.inserted);
        span.record("suppressd.inserted", report.inserted as i64);
        tracing::debug!(
            delivered = report.delivered,
            inserted = report.inserted,
            "batch committed"
        );
        Ok((
            report,
            Some(Unsettled {
                records,
                ids,
                span,
                decision,
            }),
        ))
    }

    /// Appends an `expire` audit entry for each system suppression that expired since the last
    /// sweep (the check path already ignores expired records; this puts the change on the record).
    pub(crate) async fn log_expiries(&mut self) -> anyhow::Result<u64> {
        self.last_expiry_sweep = Some(Instant::now());
        Ok(self.store.log_expiries(self.clock.now(), &self.log).await?)
    }

    /// Steps until shutdown, settling each committed batch while the next is read and committed:
    /// the cache's merge, the acknowledgement and the announcement (Redis) overlap the next
    /// batch's commit (PostgreSQL), which would otherwise wait for them. Batches are still
    /// settled one at a time and in the order they committed, each once its commit is done.
    ///
    /// A failing step (store or Redis away) is retried with a growing pause; the entries stay
    /// pending meanwhile, so nothing is lost. A batch whose settling failed is read again from
    /// this member's pending entries, committed again (a no-op in the store) and settled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut pause = Duration::from_millis(50);
        let mut unsettled: Option<Unsettled> = None;
        while !shutdown.is_cancelled() {
            let settling = Unsettled::settle_any(unsettled.take(), self.cache.clone(), self.group);
            let (next, settled) = tokio::join!(self.sweep_and_step(), settling);
            let mut failed = false;
            if let Err(e) = settled {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "settling a committed batch failed; it is read again"
                );
                self.own_pending = true;
                failed = true;
            }
            match next {
                Ok((_, next)) => unsettled = next,
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "write-behind step failed; retrying"
                    );
                    failed = true;
                }
            }
            if failed {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => {}
                }
                pause = (pause * 2).min(MAX_PAUSE);
            } else {
                pause = Duration::from_millis(50);
            }
        }
        // What was committed last is settled before the worker stops: its callers are waiting.
        if let Err(e) = Unsettled::settle_any(unsettled, self.cache.clone(), self.group).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "settling the last committed batch failed; it stays pending"
            );
        }
    }

    /// The expiry sweep when it is due, then [`Self::read_and_commit`].
    async fn sweep_and_step(&mut self) -> anyhow::Result<(StepReport, Option<Unsettled>)> {
        if self.sweeps_expiries
            && self
                .last_expiry_sweep
                .is_none_or(|at| at.elapsed() >= EXPIRY_SWEEP_EVERY)
            && let Err(e) = self.log_expiries().await
        {
            tracing::warn!(
                error = format!("{e:#}"),
                "logging expiries failed; will retry"
            );
        }
        self.read_and_commit().await
    }
}

/// A batch the store committed whose records are not yet in the cache, nor its stream entries
/// acknowledged: its callers still wait.
struct Unsettled {
    records: Vec<Suppression>,
    ids: Vec<String>,
    /// The commit's span and sampling decision, under which it is settled.
    span: Span,
    decision: Option<bool>,
}

impl Unsettled {
    /// Merges the records into the cache, and acknowledges and announces them as durable, in the
    /// same calls.
    async fn settle(self, cache: Cache, group: Group) -> Result<(), CacheError> {
        let Unsettled {
            records,
            ids,
            span,
            decision,
        } = self;
        let settling = async {
            let merged = cache.merge_and_settle(group, &records, &ids).await?;
            cache.saw_merged(&merged);
            Ok(())
        };
        sampling::Sampled::new(settling.instrument(span), decision).await
    }

    async fn settle_any(
        unsettled: Option<Unsettled>,
        cache: Cache,
        group: Group,
    ) -> Result<(), CacheError> {
        match unsettled {
            Some(unsettled) => unsettled.settle(cache, group).await,
            None => Ok(()),
        }
    }
}
