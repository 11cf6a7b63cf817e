//! The delivery worker. Every replica runs a [`Deliverer`], a loop around a public `step`. A
//! destination is delivered by one replica at a time, the holder of its lease in the store
//! (`store::destinations`), one change after another from its cursor (`delivered_seq`), so
//! deliveries to one destination keep the log's order and two replicas never deliver the same
//! change in the normal case. The deliveries of a page are recorded together; a replica killed
//! mid-page leaves its lease to run out, and the next holder resumes after the last change
//! recorded as delivered, so the page's changes may be POSTed again with the same `webhook-id`s
//! (the receiver deduplicates on them), and the store still holds one delivery row per change.
//!
//! A failed attempt is retried with exponential backoff and jitter; after `failure_budget`
//! failures in a row the destination is parked: nothing is dropped (its cursor stays where it
//! is) and an admin resumes it. What this module must not do: skip a change, or move a cursor it
//! does not hold the lease for.

use super::{http, sign, view};
use crate::{
    domain::{Millis, ReceiptId},
    service::{ServiceError, Suppressions},
    store::{Store, destinations::DeliveryRow},
    telemetry::{metrics::names, propagation, sampling},
};
use opentelemetry::trace::SpanContext;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Changes read per destination and step.
const PAGE: usize = 100;

/// How deliveries are paced.
#[derive(Clone, Debug)]
pub(crate) struct DeliverySettings {
    /// How often a replica looks for destinations with changes to deliver.
    pub(crate) interval: Duration,
    /// Failed attempts in a row after which a destination is parked.
    pub(crate) failure_budget: u32,
    /// The first retry's delay; each later one doubles, up to `backoff_max`.
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    /// How long one POST may take.
    pub(crate) request_timeout: Duration,
}

impl DeliverySettings {
    /// How long a lease lasts: two POSTs and a step's pause, so a live holder renews in time.
    fn lease(&self) -> Duration {
        self.request_timeout * 2 + self.interval
    }

    /// The delay before the attempt after `failures` failures: exponential, capped, with jitter
    /// (between half and all of it), so receivers coming back are not hit by every replica at once.
    fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let full = exp.min(self.backoff_max);
        full.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

/// This replica's delivery worker.
pub(crate) struct Deliverer {
    service: Suppressions,
    settings: DeliverySettings,
    poster: http::Poster,
    /// This replica's name, as a lease owner.
    owner: String,
}

impl Deliverer {
    pub(crate) fn new(
        service: Suppressions,
        settings: DeliverySettings,
        owner: String,
    ) -> anyhow::Result<Self> {
        let poster = http::Poster::new(settings.request_timeout)?;
        Ok(Deliverer {
            service,
            settings,
            poster,
            owner,
        })
    }

    /// Steps until `stop`, pausing `interval` whenever nothing was left to deliver.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let busy = match self.step().await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::warn!(error = %e, "a delivery step failed");
                    false
                }
            };
            if stop.is_cancelled() {
                return;
            }
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.interval) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }

    /// One pass over every destination this replica may lease now; true if a destination had a
    /// full page (more may be waiting).
    pub async fn step(&self) -> Result<bool, ServiceError> {
        let mut busy = false;
        for destination in self.service.inner.store.destinations().await? {
            busy |= self.deliver(&destination.destination_id).await?;
        }
        Ok(busy)
    }

    /// Takes the lease of one destination if it is due, and delivers a page of its changes in
    /// order, stopping at the first failure. The page's deliveries are recorded together, in one
    /// store transaction at its end (or before its failure is): a replica that dies mid-page leaves
    /// them to be POSTed again by the next holder, with the same `webhook-id`s.
    async fn deliver(&self, id: &str) -> Result<bool, ServiceError> {
        let store = &self.service.inner.store;
        let lease_for = self.settings.lease().as_millis() as Millis;
        let now = self.service.now();
        let Some(row) = store
            .lease_destination(id, &self.owner, now, now + lease_for)
            .await?
        else {
            return Ok(false);
        };
        let mut lease_until = now + lease_for;
        let key = sign::secret_key(&row.secret).map_err(|problem| {
            ServiceError::Internal(anyhow::anyhow!("destination {id}: its secret {problem}"))
        })?;
        let wants = view(row.clone())?.wants;
        let mut failures = row.failures.max(0) as u32;
        let rows = store.audit_rows(row.delivered_seq, PAGE).await?;
        let full = rows.len() == PAGE;
        let commits = store.append_spans(row.delivered_seq, PAGE).await?;
        let mut page = Page {
            id,
            owner: &self.owner,
            recorded: row.delivered_seq,
            cursor: row.delivered_seq,
            delivered: Vec::new(),
        };
        for audit in rows {
            if audit.seq != page.cursor + 1 {
                break; // not yet visible: never skip it
            }
            let entry = audit.entry().map_err(|problem| {
                ServiceError::Internal(anyhow::anyhow!("audit entry {}: {problem}", audit.seq))
            })?;
            if !wants.covers(&entry) {
                page.cursor = audit.seq;
                continue;
            }
            // Renew whenever the lease could run out during this POST, so a page of slow answers
            // never outlives it.
            let now = self.service.now();
            if lease_until - now < self.settings.request_timeout.as_millis() as Millis * 3 / 2 {
                if store
                    .lease_destination(id, &self.owner, now, now + lease_for)
                    .await?
                    .is_none()
                {
                    return Ok(false); // the new holder POSTs this page's deliveries again
                }
                lease_until = now + lease_for;
            }
            // The person's identifier goes only to a destination registered as needing it, and
            // exists only for a record whose opt-out kept it (sealed in the vault).
            let identifier = match ReceiptId::parse("receipt", &entry.receipt) {
                Ok(receipt) if row.needs_identifier => self.service.reveal(receipt).await?,
                _ => None,
            };
            let webhook_id = sign::webhook_id(entry.seq);
            // Each delivery starts a trace of its own, linked to the commit of its change.
            let post = async {
                let span = tracing::info_span!(
                    "webhook delivery",
                    destination = id,
                    seq = entry.seq,
                    change_trace_id = entry.trace_id.as_str()
                );
                if let Some(commit) = commit_of(&commits, audit.seq) {
                    span.add_link(commit);
                }
                let body = sign::body(&entry, identifier.as_deref());
                let post = self
                    .poster
                    .post(&row.url, &key, &webhook_id, now / 1000, body);
                post.instrument(span).await
            };
            let posted = sampling::Sampled::new(post, sampling::decide(None)).await;
            match posted {
                Ok(()) => {
                    let delivered_at = self.service.now();
                    metrics::counter!(names::DELIVERIES, "outcome" => "delivered").increment(1);
                    metrics::gauge!(names::DELIVERY_LAG, "destination" => id.to_owned())
                        .set((delivered_at - entry.time).max(0) as f64 / 1000.0);
                    page.delivered.push(DeliveryRow {
                        destination_id: id.to_owned(),
                        seq: audit.seq,
                        receipt_id: entry.receipt.clone(),
                        delivered_at,
                        attempts: failures as i32 + 1,
                    });
                    failures = 0;
                    page.cursor = audit.seq;
                }
                Err(e) => {
                    if !page.record(store).await? {
                        return Ok(false);
                    }
                    failures += 1;
                    let park = failures >= self.settings.failure_budget;
                    let now = self.service.now();
                    let next = now + self.settings.backoff(failures).as_millis() as Millis;
                    metrics::counter!(names::DELIVERIES, "outcome" => if park { "parked" } else { "failed" })
                        .increment(1);
                    tracing::warn!(destination = id, seq = entry.seq, failures, park, error = %format!("{e:#}"), "a webhook delivery failed");
                    store
                        .record_failure(
                            id,
                            &self.owner,
                            &format!("{e:#}"),
                            next,
                            park.then_some(now),
                        )
                        .await?;
                    return Ok(false);
                }
            }
        }
        Ok(page.record(store).await? && full)
    }
}

/// The span that committed the change `seq`: the append of the first checkpoint past it.
fn commit_of(commits: &[(i64, String)], seq: i64) -> Option<SpanContext> {
    let at = commits.partition_point(|(size, _)| *size <= seq);
    let (_, traceparent) = commits.get(at)?;
    propagation::span_context(&propagation::Carrier::from([(
        "traceparent".to_owned(),
        traceparent.clone(),
    )]))
}

/// A page's progress not yet in the store: the changes delivered, and the cursor (past changes not
/// wanted too).
struct Page<'a> {
    id: &'a str,
    owner: &'a str,
    /// The cursor as stored.
    recorded: i64,
    cursor: i64,
    delivered: Vec<DeliveryRow>,
}

impl Page<'_> {
    /// Stores the progress; false if the lease was lost meanwhile (nothing stored: the new holder
    /// goes on from the stored cursor).
    async fn record(&mut self, store: &Store) -> Result<bool, ServiceError> {
        if self.cursor == self.recorded {
            return Ok(true);
        }
        let delivered = std::mem::take(&mut self.delivered);
        if !store
            .record_deliveries(self.id, self.owner, self.cursor, &delivered)
            .await?
        {
            return Ok(false);
        }
        self.recorded = self.cursor;
        Ok(true)
    }
}
