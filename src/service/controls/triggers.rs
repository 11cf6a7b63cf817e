//! Halt triggers: setting one (which replaces the trigger set before for the same tenant, topic
//! and campaign, in the same transaction), removing one, and what makes them fire.
//!
//! **Counting.** Checks, opt-outs and complaints arrive at any replica. Each replica counts in
//! memory: a check bumps a relaxed atomic of every trigger of its campaign or topic, found by the
//! control-index look-up the check makes anyway (`domain::control::index`), so the check path
//! takes no lock, makes no I/O and no look-up of its own; an opt-out bumps those of the triggers
//! its scope names. Every `--trigger-flush` (250 ms) [`Suppressions::flush_triggers`] takes each
//! trigger's counts and adds them into the trigger's current time slot in Redis
//! (`cache::triggers`), reading back the window's sums over every replica; whoever sees a
//! threshold crossed claims the firing (one script: exactly one claimant) and halts the campaign
//! through the same use case as `HaltCampaign`, with `trigger:<id>` as the actor and the figures
//! in the audit entry's `detail`.
//!
//! **How approximate.** A count reaches Redis within one flush interval; the window slides by
//! slots of a sixtieth of the window (at least a second), so its edge is that coarse; a trigger
//! therefore fires up to a flush interval after the figures crossed, and may count up to one
//! slot of figures just older than the window. When Redis cannot be written, the counts of that
//! flush are dropped (`suppressd_halt_trigger_counts_lost_total` says how many): a trigger
//! undercounts during a Redis outage, and never fires on counts it did not see.
//!
//! **Firing once.** While a halt in force stops everything a trigger watches, what it counts is
//! discarded and its window restarts; after it fires, only what happens after the firing counts.
//! So a campaign an operator resumed is halted again only if it crosses the threshold again after
//! the resume, on fresh figures.

use super::{Changed, NewHalt};
use crate::{
    audit::Action,
    cache::triggers::Slots,
    domain::{
        Millis, Reason, ReceiptId, Scope,
        control::{ChannelSet, Control, Controls, Ended, Figures, HaltTrigger, TriggerParts},
    },
    service::{ServiceError, Suppressions},
    telemetry::{
        metrics::names,
        sampling::{self, Sampled},
    },
};
use serde_json::json;
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// A halt trigger as asked for.
#[derive(Debug, Clone)]
pub(crate) struct NewTrigger {
    pub(crate) tenant: String,
    pub(crate) topic: String,
    pub(crate) campaign: String,
    pub(crate) window_seconds: u64,
    pub(crate) max_opt_outs: u64,
    pub(crate) max_complaints: u64,
    pub(crate) max_opt_out_rate: f64,
    pub(crate) min_checks: u64,
    pub(crate) reason: String,
}

/// The actor of the halts a trigger makes.
pub(crate) fn trigger_actor(id: ReceiptId) -> String {
    format!("trigger:{id}")
}

/// The slots of a trigger's window at `now`: a sixtieth of the window each, at least a second.
fn slots(t: &HaltTrigger, now: Millis) -> Slots {
    let width = (t.window_ms / 60).max(1_000);
    Slots {
        now: now / width,
        span: (t.window_ms + width - 1) / width,
        ttl_ms: t.window_ms + 2 * width,
    }
}

impl Suppressions {
    #[tracing::instrument(name = "set_halt_trigger", skip_all, err)]
    pub(crate) async fn set_halt_trigger(
        &self,
        new: NewTrigger,
        actor: String,
    ) -> Result<Changed<HaltTrigger>, ServiceError> {
        let now = self.now();
        let trigger = HaltTrigger::new(
            ReceiptId::new(now),
            TriggerParts {
                tenant: &new.tenant,
                topic: &new.topic,
                campaign: &new.campaign,
                window_seconds: new.window_seconds,
                max_opt_outs: new.max_opt_outs,
                max_complaints: new.max_complaints,
                max_opt_out_rate: new.max_opt_out_rate,
                min_checks: new.min_checks,
                reason: &new.reason,
            },
            actor.clone(),
            now,
        )?;
        let replaced: Vec<ReceiptId> = self
            .inner
            .store
            .controls(Some(&trigger.tenant))
            .await?
            .into_iter()
            .filter_map(|c| match c {
                Control::Trigger(t)
                    if t.ended.is_none()
                        && t.topic == trigger.topic
                        && t.campaign == trigger.campaign =>
                {
                    Some(t.id)
                }
                _ => None,
            })
            .collect();
        let end = Ended {
            at: now,
            by: actor,
            reason: format!("replaced by {}", trigger.id),
        };
        let replaces: Vec<_> = replaced.iter().map(|id| (*id, end.clone())).collect();
        let detail = json!({
            "reason": trigger.reason,
            "window_seconds": trigger.window_ms / 1000,
            "max_opt_outs": trigger.max_opt_outs,
            "max_complaints": trigger.max_complaints,
            "max_opt_out_rate": trigger.max_opt_out_rate(),
            "min_checks": trigger.min_checks,
            "replaces": replaced.iter().map(ReceiptId::to_string).collect::<Vec<_>>(),
        });
        let control = Control::Trigger(trigger);
        let action = Action::SetHaltTrigger;
        let (control, propagation) = self.create(control, &replaces, action, detail, now).await?;
        let Control::Trigger(control) = control else {
            unreachable!("built as a trigger")
        };
        Ok(Changed {
            control,
            propagation,
        })
    }

    #[tracing::instrument(name = "remove_halt_trigger", skip_all, err)]
    pub(crate) async fn remove_halt_trigger(
        &self,
        id: ReceiptId,
        reason: &str,
        actor: String,
    ) -> Result<Changed<HaltTrigger>, ServiceError> {
        let action = Action::RemoveHaltTrigger;
        match self.end(id, "halt trigger", reason, actor, action).await? {
            (Control::Trigger(control), propagation) => Ok(Changed {
                control,
                propagation,
            }),
            _ => unreachable!("end checks the kind"),
        }
    }

    /// Counts an opt-out taken here for the triggers its scope names (a complaint also as one).
    pub(crate) fn count_opt_out(&self, scope: &Scope, reason: Reason) {
        let controls = self.controls();
        for t in controls.triggers_naming(scope) {
            t.counts.opt_out(reason == Reason::Complaint);
        }
    }

    /// One flush: adds what this replica counted for each trigger into Redis, reads the window's
    /// sums, and fires the triggers whose threshold they cross (each in a task of its own, so a
    /// halt waiting for its propagation does not hold the next flush up). Answers how many this
    /// replica fired. A flush with nothing counted does nothing (and makes no span).
    pub(crate) async fn flush_triggers(&self) -> usize {
        let controls = self.controls();
        let counted: Vec<(&Arc<HaltTrigger>, Figures)> = controls
            .triggers
            .iter()
            .map(|t| (t, t.counts.take()))
            .filter(|(_, f)| !f.is_empty())
            .collect();
        if counted.is_empty() {
            return 0;
        }
        // A trace of its own, sampled like a call's.
        let flush = self.flush_counted(&controls, counted);
        Sampled::new(flush, sampling::decide(None)).await
    }

    #[tracing::instrument(name = "flush_halt_triggers", skip_all, fields(suppressd.fired))]
    async fn flush_counted(
        &self,
        controls: &Controls,
        counted: Vec<(&Arc<HaltTrigger>, Figures)>,
    ) -> usize {
        let now = self.now();
        let cache = &self.inner.cache;
        let mut fired = 0;
        for (t, counted) in counted {
            let covered = controls.halted_over(t);
            let slots = slots(t, now);
            let added = cache.add_trigger_counts(t.id, slots, counted, covered);
            let window = match added.await {
                Ok(window) => window,
                Err(e) => {
                    let lost = counted.checks + counted.opt_outs;
                    metrics::counter!(names::TRIGGER_COUNTS_LOST).increment(lost);
                    tracing::debug!(error = %e, lost, "halt trigger counts not flushed");
                    continue;
                }
            };
            if covered {
                continue;
            }
            let Some(crossed) = t.fires(&window.figures) else {
                continue;
            };
            match cache.claim_trigger(t.id, window.floor, slots.now).await {
                Ok(true) => {
                    fired += 1;
                    let (service, t) = (self.clone(), t.clone());
                    let undo = (window.floor, slots.now);
                    let fire = async move { service.fire(t, window.figures, crossed, undo).await };
                    tokio::spawn(Sampled::new(fire, sampling::decide(None)));
                }
                Ok(false) => {} // another replica fired it
                Err(e) => tracing::warn!(error = %e, "a halt trigger could not be claimed"),
            }
        }
        tracing::Span::current().record("suppressd.fired", fired);
        fired
    }

    /// Halts what `t` watches, as an operator's halt would, with the trigger as the actor and the
    /// figures on the record. If the halt cannot be made, the claim is given back (`undo`: the
    /// floor before and after it), so the next flush tries again.
    #[tracing::instrument(name = "fire_halt_trigger", skip_all, fields(suppressd.trigger_id = %t.id))]
    async fn fire(&self, t: Arc<HaltTrigger>, f: Figures, crossed: String, undo: (i64, i64)) {
        let window_seconds = t.window_ms / 1000;
        let new = NewHalt {
            tenant: t.tenant.clone(),
            topic: t.topic.clone(),
            campaign: t.campaign.clone(),
            channels: ChannelSet::EVERY,
            reason: t.halt_reason(&crossed, &f),
        };
        let figures = json!({
            "trigger": t.id.to_string(),
            "crossed": crossed,
            "window_seconds": window_seconds,
            "checks": f.checks,
            "opt_outs": f.opt_outs,
            "complaints": f.complaints,
        });
        match self
            .halt_with(new, trigger_actor(t.id), Some(figures))
            .await
        {
            Ok(Changed { control, .. }) => {
                metrics::counter!(names::TRIGGER_FIRINGS, "outcome" => "halted").increment(1);
                tracing::warn!(trigger = %t.id, halt = %control.id, %crossed, "a halt trigger halted a campaign");
            }
            Err(e) => {
                metrics::counter!(names::TRIGGER_FIRINGS, "outcome" => "failed").increment(1);
                tracing::error!(error = %e, trigger = %t.id, "a halt trigger could not halt; it will try again");
                let (before, after) = undo;
                if let Err(e) = self.inner.cache.claim_trigger(t.id, after, before).await {
                    tracing::warn!(error = %e, "a halt trigger's claim could not be given back");
                }
            }
        }
    }

    /// Flushes the triggers' counts every `every`, until shutdown (then once more).
    pub(crate) async fn trigger_loop(self, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => break,
            }
            self.flush_triggers().await;
        }
        self.flush_triggers().await;
    }
}
