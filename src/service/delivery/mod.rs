//! Destinations and webhook delivery: every change a destination wants, in audit log order,
//! POSTed to its URL and signed per Standard Webhooks ([`sign`]).
//!
//! Here: what a destination wants, registering, listing, resuming and removing destinations, and
//! each record's delivery state per destination. The worker that delivers is in [`deliverer`].

mod deliverer;
mod http;
pub(crate) mod sign;

pub(crate) use deliverer::{Deliverer, DeliverySettings};

use super::{ServiceError, Suppressions};
use crate::{
    audit::{Action, AuditEntry},
    domain::{Invalid, Millis, Source, Suppression},
    store::destinations::{DeliveryRow, DestinationRow},
};
use std::collections::BTreeSet;

/// What a destination wants: tenants and kinds (empty: every one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Wants {
    pub(crate) tenants: BTreeSet<String>,
    pub(crate) kinds: BTreeSet<String>,
}

impl Wants {
    pub(crate) fn covers(&self, entry: &AuditEntry) -> bool {
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

pub(crate) fn view(row: DestinationRow) -> Result<DestinationView, ServiceError> {
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
