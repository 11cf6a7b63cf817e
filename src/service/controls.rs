//! Halts and mandatory declarations: the use cases that change them, and the in-memory snapshot every
//! check reads.
//!
//! The store is the source of truth: each change is one transaction (row, `control_head` version,
//! audit entry), so controls survive restarts and Redis loss like opt-outs. Every replica polls the
//! version ([`ControlsPoller`]) and reloads when it moves. A check reads the snapshot with one atomic
//! load, so controls cost the hot path nothing when there are none.
//!
//! "In force on every replica when the call returns" needs more than a poll: after its commit, the
//! changing replica waits until every live replica has reported (in Redis) a version at least as new.
//! Without Redis it waits out two poll intervals instead; a replica whose store is unreachable keeps
//! answering from the controls it last loaded (SPEC §6: store outages do not affect checks).

use super::{ServiceError, Suppressions};
use crate::{
    audit::{Action, AuditEntry},
    domain::{
        Millis, Reason, ReceiptId, Source,
        clock::system_now,
        control::{
            ChannelSet, Control, Controls, Ended, Halt, MandatoryDeclaration, required_text,
        },
    },
    telemetry::metrics::names,
};
use serde_json::json;
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// A replica that has not reported for this long is taken for gone, and not waited for.
const LIVE_WITHIN: Millis = 1_000;
/// The longest a change waits for the other replicas before returning all the same.
const PROPAGATION_BOUND: Duration = Duration::from_secs(2);
/// How often a waiting change looks at the reports.
const PROPAGATION_POLL: Duration = Duration::from_millis(2);
/// Reports older than this are deleted (replicas that are gone).
const FORGET_AFTER: Millis = 60_000;

/// A halt as asked for; checked against the rules when the service gives it an id and a time.
#[derive(Debug, Clone)]
pub struct NewHalt {
    pub tenant: String,
    pub topic: String,
    pub campaign: String,
    pub channels: ChannelSet,
    pub reason: String,
}

/// A mandatory declaration as asked for.
#[derive(Debug, Clone)]
pub struct NewDeclaration {
    pub tenant: String,
    pub topic: String,
    pub channels: ChannelSet,
    pub legal_basis: String,
    pub approver: String,
    pub expires_at: Option<Millis>,
}

/// The controls a `ListControls` returns.
#[derive(Debug, Default)]
pub struct ControlList {
    pub halts: Vec<Halt>,
    pub mandatory: Vec<MandatoryDeclaration>,
}

/// The audit entry of a change to a control: no subject; the receipt is the control's id; the
/// particulars (reason, legal basis, approver, channels) as JSON in `detail`.
fn entry(action: Action, control: &Control, actor: &str, at: Millis, detail: String) -> AuditEntry {
    let (id, tenant, topic, campaign, expires_at) = match control {
        Control::Halt(h) => (h.id, &h.tenant, &h.topic, h.campaign.as_str(), None),
        Control::Mandatory(d) => (d.id, &d.tenant, &d.topic, "", Some(d.expires_at)),
    };
    AuditEntry {
        v: AuditEntry::VERSION,
        seq: 0,
        time: at,
        actor: actor.to_owned(),
        action: action.as_str().to_owned(),
        tenant: tenant.clone(),
        subject: String::new(),
        channel: 0,
        topic: topic.clone(),
        campaign: campaign.to_owned(),
        reason: Reason::Operator.code(),
        source: Source::Api.code(),
        receipt: id.to_string(),
        trace_id: String::new(),
        expires_at,
        detail: Some(detail),
    }
}

fn channel_names(set: ChannelSet) -> Vec<String> {
    set.iter()
        .map(|c| format!("{c:?}").to_lowercase())
        .collect()
}

impl Suppressions {
    /// The controls this replica answers by.
    pub fn controls(&self) -> Arc<Controls> {
        self.inner.controls.load_full()
    }

    /// Reads the controls in force from the store and answers by them from now on.
    pub async fn load_controls(&self) -> Result<i64, ServiceError> {
        let (version, controls) = self.inner.store.controls_in_force().await?;
        self.inner
            .controls
            .store(Arc::new(Controls::new(version, controls)));
        Ok(version)
    }

    #[tracing::instrument(name = "halt", skip_all, err)]
    pub async fn halt(&self, new: NewHalt, actor: String) -> Result<Halt, ServiceError> {
        let now = self.now();
        let NewHalt {
            tenant,
            topic,
            campaign,
            channels,
            reason,
        } = new;
        let halt = Halt::new(
            ReceiptId::new(now),
            &tenant,
            &topic,
            &campaign,
            channels,
            &reason,
            actor,
            now,
        )?;
        let detail = json!({"reason": halt.reason, "channels": channel_names(halt.channels)});
        let control = Control::Halt(halt);
        let entry = entry(
            Action::Halt,
            &control,
            &actor_of(&control),
            now,
            detail.to_string(),
        );
        self.inner
            .store
            .insert_control(&control, entry, self.audit_log())
            .await?;
        self.propagate().await?;
        let Control::Halt(halt) = control else {
            unreachable!("built as a halt")
        };
        Ok(halt)
    }

    #[tracing::instrument(name = "resume", skip_all, err)]
    pub async fn resume(
        &self,
        id: ReceiptId,
        reason: &str,
        actor: String,
    ) -> Result<Halt, ServiceError> {
        match self.end(id, "halt", reason, actor, Action::Resume).await? {
            Control::Halt(h) => Ok(h),
            Control::Mandatory(_) => unreachable!("end checks the kind"),
        }
    }

    #[tracing::instrument(name = "declare_mandatory", skip_all, err)]
    pub async fn declare_mandatory(
        &self,
        new: NewDeclaration,
        actor: String,
    ) -> Result<MandatoryDeclaration, ServiceError> {
        let now = self.now();
        let d = MandatoryDeclaration::new(
            ReceiptId::new(now),
            &new.tenant,
            &new.topic,
            new.channels,
            &new.legal_basis,
            &new.approver,
            actor,
            now,
            new.expires_at,
        )?;
        let detail = json!({
            "legal_basis": d.legal_basis,
            "approver": d.approver,
            "channels": channel_names(d.channels),
        });
        let control = Control::Mandatory(d);
        let entry = entry(
            Action::DeclareMandatory,
            &control,
            &actor_of(&control),
            now,
            detail.to_string(),
        );
        self.inner
            .store
            .insert_control(&control, entry, self.audit_log())
            .await?;
        self.propagate().await?;
        let Control::Mandatory(d) = control else {
            unreachable!("built as a declaration")
        };
        Ok(d)
    }

    #[tracing::instrument(name = "revoke_mandatory", skip_all, err)]
    pub async fn revoke_mandatory(
        &self,
        id: ReceiptId,
        reason: &str,
        actor: String,
    ) -> Result<MandatoryDeclaration, ServiceError> {
        let action = Action::RevokeMandatory;
        match self.end(id, "declaration", reason, actor, action).await? {
            Control::Mandatory(d) => Ok(d),
            Control::Halt(_) => unreachable!("end checks the kind"),
        }
    }

    /// Resume or revoke: the control must exist, be of the kind named, and still be in force.
    async fn end(
        &self,
        id: ReceiptId,
        kind: &str,
        reason: &str,
        actor: String,
        action: Action,
    ) -> Result<Control, ServiceError> {
        let reason = required_text("reason", reason)?;
        let now = self.now();
        let not_found = || ServiceError::NotFound(format!("no {kind} {id}"));
        let mut control = self.inner.store.control(id).await?.ok_or_else(not_found)?;
        let ended = match (&control, action) {
            (Control::Halt(h), Action::Resume) => h.ended.is_some(),
            (Control::Mandatory(d), Action::RevokeMandatory) => {
                if d.ended.is_none() && d.expires_at <= now {
                    return Err(ServiceError::Precondition(format!(
                        "declaration {id} has already expired"
                    )));
                }
                d.ended.is_some()
            }
            _ => return Err(not_found()),
        };
        let already = || ServiceError::Precondition(format!("{kind} {id} has already ended"));
        if ended {
            return Err(already());
        }
        let end = Ended {
            at: now,
            by: actor,
            reason,
        };
        let detail = json!({"reason": end.reason}).to_string();
        let entry = entry(action, &control, &end.by, now, detail);
        let log = self.audit_log();
        if !self.inner.store.end_control(id, &end, entry, log).await? {
            return Err(already());
        }
        match &mut control {
            Control::Halt(h) => h.ended = Some(end),
            Control::Mandatory(d) => d.ended = Some(end),
        }
        self.propagate().await?;
        Ok(control)
    }

    /// One control, ended or not.
    pub async fn control(&self, id: ReceiptId) -> Result<Option<Control>, ServiceError> {
        Ok(self.inner.store.control(id).await?)
    }

    /// Every control of a tenant (or of all tenants); ended and expired ones only if asked.
    pub async fn list_controls(
        &self,
        tenant: Option<&str>,
        include_ended: bool,
    ) -> Result<ControlList, ServiceError> {
        let now = self.now();
        let mut out = ControlList::default();
        for control in self.inner.store.controls(tenant).await? {
            match control {
                Control::Halt(h) if include_ended || h.ended.is_none() => out.halts.push(h),
                Control::Mandatory(d) if include_ended || d.in_force_at(now) => {
                    out.mandatory.push(d)
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// After a change committed: load it here, then wait until every live replica has.
    async fn propagate(&self) -> Result<(), ServiceError> {
        let version = self.load_controls().await?;
        self.report_seen(version).await;
        let cache = &self.inner.cache;
        let replica = &self.inner.settings.replica;
        let deadline = tokio::time::Instant::now() + PROPAGATION_BOUND;
        loop {
            let seen = match cache.controls_seen().await {
                Ok(seen) => seen,
                Err(e) => {
                    tracing::warn!(error = %e, "Redis unreadable; waiting out the controls poll");
                    tokio::time::sleep(self.inner.settings.controls_poll * 2).await;
                    return Ok(());
                }
            };
            let now = system_now();
            let behind = seen
                .iter()
                .filter(|s| &s.replica != replica && now - s.at < LIVE_WITHIN)
                .filter(|s| s.version < version)
                .count();
            if behind == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    behind,
                    "replicas have not loaded the new controls yet; they will at their next poll"
                );
                return Ok(());
            }
            tokio::time::sleep(PROPAGATION_POLL).await;
        }
    }

    /// Tells the other replicas which controls version this one answers by, as of now.
    async fn report_seen(&self, version: i64) {
        let replica = &self.inner.settings.replica;
        if let Err(e) = self
            .inner
            .cache
            .report_controls_seen(replica, version, system_now())
            .await
        {
            tracing::debug!(error = %e, "controls version not reported");
        }
    }
}

fn actor_of(control: &Control) -> String {
    match control {
        Control::Halt(h) => h.actor.clone(),
        Control::Mandatory(d) => d.actor.clone(),
    }
}

/// Keeps a replica's controls in step with the store: a loop around [`ControlsPoller::step`].
pub struct ControlsPoller {
    service: Suppressions,
    last_read: tokio::time::Instant,
}

impl ControlsPoller {
    pub fn new(service: Suppressions) -> Self {
        ControlsPoller {
            service,
            last_read: tokio::time::Instant::now(),
        }
    }

    /// Reads the version; reloads when it moved; reports what this replica answers by. Store errors
    /// leave the snapshot as it was.
    pub async fn step(&mut self) -> Result<(), ServiceError> {
        let service = &self.service;
        let mut version = service.inner.controls.load().version;
        let outcome = async {
            let stored = service.inner.store.controls_version().await?;
            if stored != version {
                version = service.load_controls().await?;
            }
            Ok::<_, ServiceError>(())
        }
        .await;
        if outcome.is_ok() {
            self.last_read = tokio::time::Instant::now();
            service.report_seen(version).await;
        }
        metrics::gauge!(names::CONTROLS_AGE).set(self.last_read.elapsed().as_secs_f64());
        outcome
    }

    /// Polls every `every` until shutdown; logs a store outage once when it starts.
    pub async fn run(mut self, every: Duration, shutdown: CancellationToken) {
        let mut failing = false;
        let mut forgot = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => {
                    // Gone: a change need not wait for this replica's report to age out.
                    let replica = [self.service.inner.settings.replica.clone()];
                    let _ = self.service.inner.cache.forget_controls_seen(&replica).await;
                    return;
                }
            }
            match self.step().await {
                Ok(()) if failing => {
                    tracing::info!("controls are read from the store again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "controls unreadable; answering by the last ones loaded");
                    failing = true;
                }
                Err(_) => {}
            }
            if forgot.elapsed() > Duration::from_secs(10) {
                forgot = tokio::time::Instant::now();
                self.forget_gone().await;
            }
        }
    }

    async fn forget_gone(&self) {
        let cache = &self.service.inner.cache;
        if let Ok(seen) = cache.controls_seen().await {
            let now = system_now();
            let gone: Vec<String> = seen
                .into_iter()
                .filter(|s| now - s.at > FORGET_AFTER)
                .map(|s| s.replica)
                .collect();
            let _ = cache.forget_controls_seen(&gone).await;
        }
    }
}
