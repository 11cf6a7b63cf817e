//! Destinations and webhook delivery: every change a destination wants, in audit log order,
//! POSTed to its URL and signed per Standard Webhooks ([`sign`]).
//!
//! Every replica runs a [`Deliverer`], a loop around a public `step`. A destination is delivered
//! by one replica at a time, the holder of its lease in the store (`store::destinations`), one
//! change after another from its cursor (`delivered_seq`), so deliveries to one destination keep
//! the log's order and two replicas never deliver the same change in the normal case. A replica
//! killed mid-delivery leaves its lease to run out; the next holder resumes after the last change
//! recorded as delivered, so that change may be POSTed again with the same `webhook-id` (the
//! receiver deduplicates on it), and the store still holds one delivery row per change.
//!
//! A failed attempt is retried with exponential backoff and jitter; after `failure_budget`
//! failures in a row the destination is parked: nothing is dropped (its cursor stays where it
//! is) and an admin resumes it. What this module must not do: skip a change, or move a cursor it
//! does not hold the lease for.

mod http;
pub(crate) mod sign;

use super::{ServiceError, Suppressions};
use crate::{
    audit::{Action, AuditEntry},
    domain::{Invalid, Millis, ReceiptId, Source, Suppression},
    store::destinations::{DeliveryRow, DestinationRow},
    telemetry::{metrics::names, propagation, sampling},
};
use opentelemetry::trace::SpanContext;
use std::{collections::BTreeSet, time::Duration};
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

/// What a destination wants: tenants and kinds (empty: every one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Wants {
    pub(crate) tenants: BTreeSet<String>,
    pub(crate) kinds: BTreeSet<String>,
}

impl Wants {
    fn covers(&self, entry: &AuditEntry) -> bool {
        self.covers_kind(&entry.tenant, &entry.action)
    }

    fn covers_kind(&self, tenant: &str, action: &str) -> bool {
        (self.tenants.is_empty() || self.tenants.contains(tenant))
            && (self.kinds.is_empty() || self.kinds.contains(action))
    }

    /// Whether the change that made this record (an `opt_out`, or an `import`'s) is wanted.
    pub(crate) fn covers_opt_out(&self, s: &Suppression) -> bool {
        let made_by = match s.source {
            Source::Import => Action::Import,
            _ => Action::OptOut,
        };
        self.covers_kind(&s.scope.tenant, made_by.as_str())
    }
}

/// A destination to register, validated.
#[derive(Debug, Clone)]
pub(crate) struct NewDestination {
    pub(crate) url: String,
    pub(crate) wants: Wants,
    /// `None`: the service makes one.
    pub(crate) secret: Option<String>,
    /// Deliveries carry the person's identifier from the vault.
    pub(crate) needs_identifier: bool,
}

impl NewDestination {
    pub(crate) fn parse(
        url: String,
        tenants: Vec<String>,
        kinds: Vec<String>,
        secret: String,
        needs_identifier: bool,
    ) -> Result<Self, Invalid> {
        let parsed: ::http::Uri = url
            .parse()
            .map_err(|_| Invalid::new("url", "is not a URL"))?;
        if !matches!(parsed.scheme_str(), Some("https" | "http")) || parsed.host().is_none() {
            return Err(Invalid::new(
                "url",
                "must be an http:// or https:// URL with a host",
            ));
        }
        for kind in &kinds {
            if Action::named(kind).is_none() {
                return Err(Invalid::new("kinds", format!("unknown kind {kind:?}")));
            }
        }
        let secret = (!secret.is_empty()).then_some(secret);
        if let Some(secret) = &secret {
            sign::secret_key(secret).map_err(|problem| Invalid::new("secret", problem))?;
        }
        Ok(NewDestination {
            url,
            wants: Wants {
                tenants: tenants.into_iter().collect(),
                kinds: kinds.into_iter().collect(),
            },
            secret,
            needs_identifier,
        })
    }
}

/// Where a destination stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DestinationState {
    Active,
    /// The failure budget ran out: no attempts until resumed.
    Parked,
}

/// A destination as an admin sees it (the secret only in the answer to its registration).
#[derive(Debug, Clone)]
pub(crate) struct DestinationView {
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) wants: Wants,
    pub(crate) secret: Option<String>,
    pub(crate) created_by: String,
    pub(crate) created_at: Millis,
    /// The last change delivered or not wanted.
    pub(crate) delivered_seq: Option<u64>,
    pub(crate) state: DestinationState,
    pub(crate) failures: u32,
    pub(crate) last_error: String,
    pub(crate) parked_at: Option<Millis>,
    pub(crate) needs_identifier: bool,
}

fn json_set(text: &str) -> Result<BTreeSet<String>, ServiceError> {
    serde_json::from_str(text)
        .map_err(|e| ServiceError::Internal(anyhow::anyhow!("a destination's list: {e}")))
}

fn view(row: DestinationRow) -> Result<DestinationView, ServiceError> {
    Ok(DestinationView {
        wants: Wants {
            tenants: json_set(&row.tenants)?,
            kinds: json_set(&row.kinds)?,
        },
        id: row.destination_id,
        url: row.url,
        secret: None,
        created_by: row.created_by,
        created_at: row.created_at,
        delivered_seq: u64::try_from(row.delivered_seq).ok(),
        state: match row.parked_at {
            Some(_) => DestinationState::Parked,
            None => DestinationState::Active,
        },
        failures: row.failures.max(0) as u32,
        last_error: row.last_error,
        parked_at: row.parked_at,
        needs_identifier: row.needs_identifier,
    })
}

/// Whether a record's changes reached one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeliveryState {
    Pending,
    /// Every change of the record the destination wants, the last at this time.
    Delivered(Millis),
    Parked,
}

/// A record's delivery to one destination that wants its changes.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryView {
    pub(crate) destination_id: String,
    pub(crate) state: DeliveryState,
    /// Set when the destination wants the change that made the record (its opt-out): when that
    /// change reached it, if it has. What the record's legal clocks at the destination are judged
    /// against.
    pub(crate) opt_out: Option<Option<Millis>>,
}

impl Suppressions {
    /// Registers a destination; it gets the changes committed from now on.
    pub(crate) async fn register_destination(
        &self,
        new: NewDestination,
        actor: &str,
    ) -> Result<DestinationView, ServiceError> {
        let store = &self.inner.store;
        let head = store.audit_size().await?;
        let secret = new.secret.unwrap_or_else(sign::new_secret);
        let row = DestinationRow {
            destination_id: format!("dst_{}", uuid::Uuid::now_v7().simple()),
            url: new.url,
            tenants: serde_json::to_string(&new.wants.tenants).expect("strings serialize"),
            kinds: serde_json::to_string(&new.wants.kinds).expect("strings serialize"),
            secret: secret.clone(),
            created_by: actor.to_owned(),
            created_at: self.now(),
            delivered_seq: head - 1,
            failures: 0,
            parked_at: None,
            last_error: String::new(),
            needs_identifier: new.needs_identifier,
        };
        store.insert_destination(&row).await?;
        let mut view = view(row)?;
        view.secret = Some(secret);
        Ok(view)
    }

    pub(crate) async fn list_destinations(&self) -> Result<Vec<DestinationView>, ServiceError> {
        let rows = self.inner.store.destinations().await?;
        rows.into_iter().map(view).collect()
    }

    async fn destination(&self, id: &str) -> Result<DestinationView, ServiceError> {
        self.list_destinations()
            .await?
            .into_iter()
            .find(|d| d.id == id)
            .ok_or_else(|| ServiceError::NotFound(format!("no destination {id:?}")))
    }

    /// Removes a destination: no more deliveries; what it was delivered stays on record.
    pub(crate) async fn remove_destination(
        &self,
        id: &str,
    ) -> Result<DestinationView, ServiceError> {
        let found = self.destination(id).await?;
        if !self.inner.store.remove_destination(id, self.now()).await? {
            return Err(ServiceError::NotFound(format!("no destination {id:?}")));
        }
        Ok(found)
    }

    /// Resumes a parked destination from where it stopped, with a fresh failure budget.
    pub(crate) async fn resume_destination(
        &self,
        id: &str,
    ) -> Result<DestinationView, ServiceError> {
        if !self.inner.store.resume_destination(id).await? {
            return Err(ServiceError::NotFound(format!("no destination {id:?}")));
        }
        self.destination(id).await
    }

    /// For each destination that wants a change of this receipt's record: whether every such
    /// change reached it. A record not yet committed has no changes in the log, so no entry.
    pub(crate) async fn deliveries_of(
        &self,
        receipt: &str,
    ) -> Result<Vec<DeliveryView>, ServiceError> {
        let store = &self.inner.store;
        let entries = store
            .audit_rows_of_receipt(receipt)
            .await?
            .iter()
            .map(|row| row.entry())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|problem| ServiceError::Internal(anyhow::anyhow!("audit entry: {problem}")))?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let delivered: Vec<DeliveryRow> = store.deliveries_of(receipt).await?;
        let mut views = Vec::new();
        for destination in self.list_destinations().await? {
            let row_of = |seq: u64| {
                delivered
                    .iter()
                    .find(|d| d.destination_id == destination.id && d.seq as u64 == seq)
            };
            // A change the cursor passed without a delivery came before the destination was
            // registered: not its concern.
            let passed = |seq: u64| destination.delivered_seq.is_some_and(|d| seq <= d);
            let wanted: Vec<_> = entries
                .iter()
                .filter(|e| destination.wants.covers(e))
                .filter(|e| !(passed(e.seq) && row_of(e.seq).is_none()))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let times: Vec<Millis> = wanted
                .iter()
                .filter_map(|e| row_of(e.seq).map(|d| d.delivered_at))
                .collect();
            let state = if times.len() == wanted.len() {
                DeliveryState::Delivered(times.into_iter().max().unwrap_or_default())
            } else if destination.state == DestinationState::Parked {
                DeliveryState::Parked
            } else {
                DeliveryState::Pending
            };
            let first = &entries[0];
            let opt_out = wanted
                .first()
                .filter(|e| e.seq == first.seq)
                .map(|e| row_of(e.seq).map(|d| d.delivered_at));
            views.push(DeliveryView {
                destination_id: destination.id,
                state,
                opt_out,
            });
        }
        Ok(views)
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
    async fn record(&mut self, store: &crate::store::Store) -> Result<bool, ServiceError> {
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
