//! Halts, mandatory declarations, send windows, consent requirements and halt triggers: the use
//! cases that change them, and the in-memory snapshot every check reads.
//!
//! The store is the source of truth: each change is one transaction (row, `control_head` version,
//! audit entry), so controls survive restarts and Redis loss like opt-outs. Every replica polls the
//! version ([`ControlsPoller`]) and reloads when it moves. A check reads the snapshot with one atomic
//! load, so controls cost the hot path nothing when there are none.
//!
//! Every replica follows them through the store and through the snapshot published in Redis
//! (`poll`), so one store outage does not stop a change. A change returns once every live replica
//! answers by it, or says which did not (`propagate`). A replica that cannot confirm its controls
//! within the bound fails closed (`fresh`): SPEC §5.2 covers controls too.

use super::{ServiceError, Suppressions};
use crate::{
    audit::{Action, AuditEntry},
    domain::{
        Millis, Reason, ReceiptId, Source,
        control::{
            Answer, ChannelSet, ConsentRequirement, Control, Controls, Ended, Halt, HaltTrigger,
            MandatoryDeclaration, SendWindow, required_text,
        },
    },
    telemetry::{call::CallSpan, metrics::names},
};
use arc_swap::Guard;
use serde_json::json;
use std::sync::Arc;

mod consent;
mod fresh;
mod poll;
mod propagate;
mod triggers;
mod windows;
pub(crate) use consent::NewRequirement;
pub(crate) use fresh::Freshness;
pub(crate) use poll::ControlsPoller;
pub(crate) use propagate::Propagation;
pub(crate) use triggers::NewTrigger;
pub(crate) use windows::NewWindow;

/// A control as a change left it, and how far the change had reached when the call returned.
#[derive(Debug, Clone)]
pub(crate) struct Changed<T> {
    pub(crate) control: T,
    pub(crate) propagation: Propagation,
}

/// A halt as asked for; checked against the rules when the service gives it an id and a time.
#[derive(Debug, Clone)]
pub(crate) struct NewHalt {
    pub(crate) tenant: String,
    pub(crate) topic: String,
    pub(crate) campaign: String,
    pub(crate) channels: ChannelSet,
    pub(crate) reason: String,
}

/// A mandatory declaration as asked for.
#[derive(Debug, Clone)]
pub(crate) struct NewDeclaration {
    pub(crate) tenant: String,
    pub(crate) topic: String,
    pub(crate) channels: ChannelSet,
    pub(crate) legal_basis: String,
    pub(crate) approver: String,
    pub(crate) expires_at: Option<Millis>,
    /// The declaration's rule for send windows.
    pub(crate) ignore_send_windows: bool,
}

/// The controls a `ListControls` returns.
#[derive(Debug, Default)]
pub(crate) struct ControlList {
    pub(crate) halts: Vec<Halt>,
    pub(crate) mandatory: Vec<MandatoryDeclaration>,
    pub(crate) windows: Vec<SendWindow>,
    pub(crate) consent: Vec<ConsentRequirement>,
    pub(crate) triggers: Vec<HaltTrigger>,
}

/// The audit entry of a change to a control: no subject; the receipt is the control's id; the
/// particulars (reason, legal basis, approver, channels) as JSON in `detail`.
fn entry(action: Action, control: &Control, actor: &str, at: Millis, detail: String) -> AuditEntry {
    let (id, tenant, topic, campaign, expires_at) = match control {
        Control::Halt(h) => (h.id, &h.tenant, &h.topic, h.campaign.as_str(), None),
        Control::Mandatory(d) => (d.id, &d.tenant, &d.topic, "", Some(d.expires_at)),
        Control::Window(w) => (w.id, &w.tenant, &w.topic, "", None),
        Control::Consent(r) => (r.id, &r.tenant, &r.topic, "", None),
        Control::Trigger(t) => (t.id, &t.tenant, &t.topic, t.campaign.as_str(), None),
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
    /// The controls this replica answers by. A guard, not a clone of the `Arc`: a check takes
    /// them on every call, and a clone's two atomic operations on the count would write to a cache
    /// line that every core's checks share.
    pub(crate) fn controls(&self) -> Guard<Arc<Controls>> {
        self.inner.controls.load()
    }

    /// The answers of a call, as this replica may give them: unchanged while its controls are
    /// fresh, both before the call read them (`fresh_before`) and now; when they are stale, no
    /// answer says "send" (the call is refused as `UNAVAILABLE`) and no mandatory declaration
    /// overrides an opt-out (`Controls::when_stale`). Answers a control decided are counted
    /// (`suppressd_control_answers_total`) and named on the call's span (`suppressd.control`).
    pub(crate) fn unless_stale(
        &self,
        answers: Vec<Answer>,
        fresh_before: bool,
    ) -> Result<Vec<Answer>, ServiceError> {
        if fresh_before && !self.inner.controls_fresh.is_stale() {
            observe_controls(&answers);
            return Ok(answers);
        }
        let checks = answers.len() as u64;
        let out: Option<Vec<Answer>> = answers.into_iter().map(Controls::when_stale).collect();
        out.ok_or_else(|| {
            metrics::counter!(names::CHECKS_REFUSED_STALE).increment(checks);
            ServiceError::Unavailable {
                message: "this replica cannot confirm the current halts and mandatory \
                          declarations; do not send"
                    .into(),
                cause: None,
            }
        })
    }

    /// Whether this replica's controls are stale (health says NOT_SERVING then; a check asks
    /// before it reads them, see [`Self::unless_stale`]).
    pub(crate) fn controls_stale(&self) -> bool {
        self.inner.controls_fresh.is_stale()
    }

    #[tracing::instrument(name = "halt", skip_all, err)]
    pub(crate) async fn halt(
        &self,
        new: NewHalt,
        actor: String,
    ) -> Result<Changed<Halt>, ServiceError> {
        self.halt_with(new, actor, None).await
    }

    /// A halt, whoever makes it: an operator, or a trigger (`fired`: what fired it, for the audit
    /// entry's `detail`).
    async fn halt_with(
        &self,
        new: NewHalt,
        actor: String,
        fired: Option<serde_json::Value>,
    ) -> Result<Changed<Halt>, ServiceError> {
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
        let mut detail = json!({"reason": halt.reason, "channels": channel_names(halt.channels)});
        if let Some(fired) = fired {
            detail["fired"] = fired;
        }
        let (control, propagation) = self
            .create(Control::Halt(halt), &[], Action::Halt, detail, now)
            .await?;
        let Control::Halt(control) = control else {
            unreachable!("built as a halt")
        };
        Ok(Changed {
            control,
            propagation,
        })
    }

    /// Stores a new control with its audit entry (ending those it `replaces`, in the same
    /// transaction), then waits until the replicas answer by it.
    async fn create(
        &self,
        control: Control,
        replaces: &[(ReceiptId, Ended)],
        action: Action,
        detail: serde_json::Value,
        now: Millis,
    ) -> Result<(Control, Propagation), ServiceError> {
        let actor = control.created().0.to_owned();
        let entry = entry(action, &control, &actor, now, detail.to_string());
        self.inner
            .store
            .insert_control(&control, replaces, entry, self.audit_log())
            .await?;
        let propagation = self.propagate().await?;
        Ok((control, propagation))
    }

    #[tracing::instrument(name = "resume", skip_all, err)]
    pub(crate) async fn resume(
        &self,
        id: ReceiptId,
        reason: &str,
        actor: String,
    ) -> Result<Changed<Halt>, ServiceError> {
        match self.end(id, "halt", reason, actor, Action::Resume).await? {
            (Control::Halt(control), propagation) => Ok(Changed {
                control,
                propagation,
            }),
            _ => unreachable!("end checks the kind"),
        }
    }

    #[tracing::instrument(name = "declare_mandatory", skip_all, err)]
    pub(crate) async fn declare_mandatory(
        &self,
        new: NewDeclaration,
        actor: String,
    ) -> Result<Changed<MandatoryDeclaration>, ServiceError> {
        let now = self.now();
        let mut d = MandatoryDeclaration::new(
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
        d.ignore_send_windows = new.ignore_send_windows;
        let detail = json!({
            "legal_basis": d.legal_basis,
            "approver": d.approver,
            "channels": channel_names(d.channels),
            "ignore_send_windows": d.ignore_send_windows,
        });
        let control = Control::Mandatory(d);
        let (control, propagation) = self
            .create(control, &[], Action::DeclareMandatory, detail, now)
            .await?;
        let Control::Mandatory(control) = control else {
            unreachable!("built as a declaration")
        };
        Ok(Changed {
            control,
            propagation,
        })
    }

    #[tracing::instrument(name = "revoke_mandatory", skip_all, err)]
    pub(crate) async fn revoke_mandatory(
        &self,
        id: ReceiptId,
        reason: &str,
        actor: String,
    ) -> Result<Changed<MandatoryDeclaration>, ServiceError> {
        let action = Action::RevokeMandatory;
        match self.end(id, "declaration", reason, actor, action).await? {
            (Control::Mandatory(control), propagation) => Ok(Changed {
                control,
                propagation,
            }),
            _ => unreachable!("end checks the kind"),
        }
    }

    /// Resume, revoke or remove: the control must exist, be of the kind named, and still be in
    /// force.
    async fn end(
        &self,
        id: ReceiptId,
        kind: &str,
        reason: &str,
        actor: String,
        action: Action,
    ) -> Result<(Control, Propagation), ServiceError> {
        let reason = required_text("reason", reason)?;
        let now = self.now();
        let not_found = || ServiceError::NotFound(format!("no {kind} {id}"));
        let mut control = self.inner.store.control(id).await?.ok_or_else(not_found)?;
        let ended = match (&control, action) {
            (Control::Halt(h), Action::Resume) => h.ended.is_some(),
            (Control::Window(w), Action::RemoveSendWindow) => w.ended.is_some(),
            (Control::Consent(r), Action::DropConsentRequirement) => r.ended.is_some(),
            (Control::Trigger(t), Action::RemoveHaltTrigger) => t.ended.is_some(),
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
        control.end(end);
        let propagation = self.propagate().await?;
        Ok((control, propagation))
    }

    /// One control, ended or not.
    pub(crate) async fn control(&self, id: ReceiptId) -> Result<Option<Control>, ServiceError> {
        Ok(self.inner.store.control(id).await?)
    }

    /// Every control of a tenant (or of all tenants); ended and expired ones only if asked.
    pub(crate) async fn list_controls(
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
                Control::Window(w) if include_ended || w.ended.is_none() => out.windows.push(w),
                Control::Consent(r) if include_ended || r.ended.is_none() => out.consent.push(r),
                Control::Trigger(t) if include_ended || t.ended.is_none() => out.triggers.push(t),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Counts the answers a control decided, by kind, and names the last kind on the call's span.
/// Nothing is done for a call no control touched: the usual case costs a pass over its answers.
fn observe_controls(answers: &[Answer]) {
    let mut last = None;
    for answer in answers {
        let kind = match answer {
            Answer::Halted { .. } => "halt",
            Answer::Overridden { .. } => "mandatory",
            Answer::NotNow { .. } => "send_window",
            // Not a control: the opt-out's one confirmation, counted alongside.
            Answer::Confirms(_) => "confirmation",
            Answer::NoConsent { .. } => "consent",
            Answer::Send | Answer::Suppressed(_) => continue,
        };
        metrics::counter!(names::CONTROL_ANSWERS, "control" => kind).increment(1);
        last = Some(kind);
    }
    if let Some(kind) = last {
        CallSpan::current().record_str("suppressd.control", kind);
    }
}
