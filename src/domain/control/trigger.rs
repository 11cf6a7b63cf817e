//! Automatic halts: a [`HaltTrigger`] halts a tenant's campaign (or topic) when the opt-outs or
//! complaints naming it, within a sliding window, exceed a count or a rate of its checks.
//!
//! This module holds the rule, with no I/O: what a trigger counts ([`HaltTrigger::counts_check`],
//! [`HaltTrigger::names`]), the per-replica counters the check path bumps ([`TriggerCounts`],
//! relaxed atomics: a check pays one uncontended-in-the-common-case `fetch_add`, no lock and no
//! look-up beyond the control index it already consults), and the decision over the window's
//! figures ([`HaltTrigger::fires`]). Summing the replicas' counts over the window, and firing,
//! is the service's (`service::controls::triggers`).

use super::{Ended, Invalid, MAX_TEXT, Millis, Notice, ReceiptId, Scope, names, required_text};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

mod counts;
pub(crate) use counts::{CountsById, Figures, TriggerCounts};

/// The longest window a trigger may watch: a day.
pub(crate) const MAX_WINDOW_MS: Millis = 86_400_000;

/// A rate as parts per million of the window's checks (0.02 = 20,000): an integer, so triggers
/// compare and store exactly.
const PPM: u64 = 1_000_000;

/// An automatic halt of a tenant's campaign (or of every campaign of a topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HaltTrigger {
    pub(crate) id: ReceiptId,
    pub(crate) tenant: String,
    /// `""`: every topic (the campaign is then named).
    pub(crate) topic: String,
    /// `""`: every campaign of the topic.
    pub(crate) campaign: String,
    /// The sliding window the figures are summed over.
    pub(crate) window_ms: Millis,
    /// Fires when the window's opt-outs (complaints included) exceed this; 0 = no such threshold.
    pub(crate) max_opt_outs: u64,
    /// Fires when the window's complaints exceed this; 0 = no such threshold.
    pub(crate) max_complaints: u64,
    /// Fires when opt-outs / checks in the window exceed this many parts per million (once the
    /// window holds `min_checks`); 0 = no such threshold.
    pub(crate) max_rate_ppm: u64,
    /// The checks a window must hold before the rate applies, so one opt-out of two checks does
    /// not halt a campaign.
    pub(crate) min_checks: u64,
    pub(crate) reason: String,
    pub(crate) actor: String,
    pub(crate) at: Millis,
    pub(crate) ended: Option<Ended>,
    /// What this replica counted since its last flush; shared by every snapshot that holds the
    /// trigger ([`CountsById`]).
    #[serde(skip)]
    pub(crate) counts: Arc<TriggerCounts>,
}

/// A trigger as asked for, before it has an id.
pub(crate) struct TriggerParts<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) campaign: &'a str,
    pub(crate) window_seconds: u64,
    pub(crate) max_opt_outs: u64,
    pub(crate) max_complaints: u64,
    pub(crate) max_opt_out_rate: f64,
    pub(crate) min_checks: u64,
    pub(crate) reason: &'a str,
}

impl HaltTrigger {
    pub(crate) fn new(
        id: ReceiptId,
        p: TriggerParts<'_>,
        actor: String,
        at: Millis,
    ) -> Result<HaltTrigger, Invalid> {
        names(p.tenant, p.topic, p.campaign)?;
        if p.topic.is_empty() && p.campaign.is_empty() {
            return Err(Invalid::new(
                "topic",
                "name a topic or a campaign (or both): a trigger halts a campaign, not a tenant",
            ));
        }
        let max_seconds = MAX_WINDOW_MS / 1000;
        if p.window_seconds == 0 || p.window_seconds > max_seconds as u64 {
            return Err(Invalid::new(
                "window_seconds",
                format!("must be from 1 to {max_seconds} (a day)"),
            ));
        }
        let rate = p.max_opt_out_rate;
        if !rate.is_finite() || !(0.0..=1.0).contains(&rate) {
            return Err(Invalid::new(
                "max_opt_out_rate",
                "must be a fraction of the window's checks, above 0 and at most 1 (0 = none)",
            ));
        }
        let max_rate_ppm = (rate * PPM as f64).round() as u64;
        if rate > 0.0 && max_rate_ppm == 0 {
            return Err(Invalid::new(
                "max_opt_out_rate",
                "must be at least 0.000001 (one in a million)",
            ));
        }
        if p.max_opt_outs == 0 && p.max_complaints == 0 && max_rate_ppm == 0 {
            return Err(Invalid::new(
                "max_opt_outs",
                "name a threshold: max_opt_outs, max_complaints or max_opt_out_rate",
            ));
        }
        match (max_rate_ppm > 0, p.min_checks > 0) {
            (true, false) => {
                return Err(Invalid::new(
                    "min_checks",
                    "is required with max_opt_out_rate: the checks a window must hold before \
                     its rate counts",
                ));
            }
            (false, true) => {
                return Err(Invalid::new(
                    "min_checks",
                    "applies only with max_opt_out_rate",
                ));
            }
            _ => {}
        }
        Ok(HaltTrigger {
            id,
            tenant: p.tenant.to_owned(),
            topic: p.topic.to_owned(),
            campaign: p.campaign.to_owned(),
            window_ms: p.window_seconds as Millis * 1000,
            max_opt_outs: p.max_opt_outs,
            max_complaints: p.max_complaints,
            max_rate_ppm,
            min_checks: p.min_checks,
            reason: required_text("reason", p.reason)?,
            actor,
            at,
            ended: None,
            counts: Arc::default(),
        })
    }

    /// The rate threshold as the request said it (0 = none).
    pub(crate) fn max_opt_out_rate(&self) -> f64 {
        self.max_rate_ppm as f64 / PPM as f64
    }

    /// Whether a check of this notice counts for the trigger (its tenant, topic and campaign).
    pub(crate) fn counts_check(&self, n: &Notice) -> bool {
        self.ended.is_none()
            && self.tenant == n.tenant
            && (self.topic.is_empty() || self.topic == n.topic)
            && (self.campaign.is_empty() || self.campaign == n.campaign)
    }

    /// Whether an opt-out of this scope names what the trigger watches: the same tenant, and the
    /// trigger's campaign (for a campaign trigger) and topic (for a topic trigger). An opt-out of
    /// a whole tenant or topic names no campaign, so it does not count for a campaign's trigger.
    pub(crate) fn names(&self, scope: &Scope) -> bool {
        self.ended.is_none()
            && self.tenant == scope.tenant
            && (self.topic.is_empty() || self.topic == scope.topic)
            && (self.campaign.is_empty() || self.campaign == scope.campaign)
    }

    /// The reason of the halt this trigger makes: the threshold `crossed`, the figures, then the
    /// trigger's own reason, cut to the length a halt's reason may have (a long reason must not
    /// keep a trigger from firing).
    pub(crate) fn halt_reason(&self, crossed: &str, f: &Figures) -> String {
        let mut reason = format!(
            "halt trigger {}: {crossed} within {} s ({} checks, {} opt-outs, {} complaints); {}",
            self.id,
            self.window_ms / 1000,
            f.checks,
            f.opt_outs,
            f.complaints,
            self.reason
        );
        if reason.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        reason
    }

    /// The threshold a window's figures cross, in words for the halt's reason; `None` when they
    /// cross none. Strictly above: a trigger set at 10 opt-outs fires on the eleventh.
    pub(crate) fn fires(&self, f: &Figures) -> Option<String> {
        if self.max_opt_outs > 0 && f.opt_outs > self.max_opt_outs {
            return Some(format!(
                "{} opt-outs exceed {}",
                f.opt_outs, self.max_opt_outs
            ));
        }
        if self.max_complaints > 0 && f.complaints > self.max_complaints {
            return Some(format!(
                "{} complaints exceed {}",
                f.complaints, self.max_complaints
            ));
        }
        let rate_crossed = u128::from(f.opt_outs) * u128::from(PPM)
            > u128::from(self.max_rate_ppm) * u128::from(f.checks);
        if self.max_rate_ppm > 0 && f.checks >= self.min_checks && rate_crossed {
            return Some(format!(
                "{} opt-outs of {} checks exceed a rate of {}",
                f.opt_outs,
                f.checks,
                self.max_opt_out_rate()
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Channel, control::tests::NOW};

    fn parts() -> TriggerParts<'static> {
        TriggerParts {
            tenant: "acme",
            topic: "",
            campaign: "RC-1",
            window_seconds: 60,
            max_opt_outs: 0,
            max_complaints: 0,
            max_opt_out_rate: 0.05,
            min_checks: 100,
            reason: "too many opt-outs",
        }
    }

    fn trigger(f: impl FnOnce(&mut TriggerParts<'static>)) -> Result<HaltTrigger, Invalid> {
        let mut p = parts();
        f(&mut p);
        HaltTrigger::new(ReceiptId::new(NOW), p, "op".into(), NOW)
    }

    #[test]
    fn a_trigger_needs_a_place_a_window_a_threshold_and_a_reason() {
        let field = |f: fn(&mut TriggerParts<'static>)| trigger(f).unwrap_err().field;
        assert_eq!(field(|p| p.campaign = ""), "topic");
        assert_eq!(field(|p| p.campaign = "a b"), "campaign");
        assert_eq!(field(|p| p.window_seconds = 0), "window_seconds");
        assert_eq!(field(|p| p.window_seconds = 86_401), "window_seconds");
        assert_eq!(field(|p| p.max_opt_out_rate = 1.5), "max_opt_out_rate");
        assert_eq!(field(|p| p.max_opt_out_rate = f64::NAN), "max_opt_out_rate");
        assert_eq!(
            field(|p| {
                p.max_opt_out_rate = 0.0;
                p.max_opt_outs = 5;
            }),
            "min_checks"
        );
        assert_eq!(field(|p| p.min_checks = 0), "min_checks");
        assert_eq!(
            field(|p| {
                p.max_opt_out_rate = 0.0;
                p.min_checks = 0;
            }),
            "max_opt_outs"
        );
        assert_eq!(field(|p| p.reason = " "), "reason");
    }

    #[test]
    fn the_rate_waits_for_its_minimum_of_checks_and_counts_fire_strictly_above() {
        let t = trigger(|_| {}).unwrap();
        let at = |checks, opt_outs| Figures {
            checks,
            opt_outs,
            complaints: 0,
        };
        assert_eq!(t.fires(&at(2, 1)), None, "one opt-out of two checks");
        assert_eq!(t.fires(&at(100, 5)), None, "exactly the rate");
        assert!(t.fires(&at(100, 6)).is_some());
        let t = trigger(|p| {
            p.max_opt_out_rate = 0.0;
            p.min_checks = 0;
            p.max_complaints = 2;
        })
        .unwrap();
        let complaints = |n| Figures {
            checks: 0,
            opt_outs: n,
            complaints: n,
        };
        assert_eq!(t.fires(&complaints(2)), None);
        assert_eq!(
            t.fires(&complaints(3)).as_deref(),
            Some("3 complaints exceed 2")
        );
        let long = trigger(|p| p.reason = "é".repeat(499).leak()).unwrap();
        let reason = long.halt_reason("3 complaints exceed 2", &complaints(3));
        assert!(
            reason.len() <= MAX_TEXT && reason.starts_with("halt trigger "),
            "{reason}"
        );
    }

    #[test]
    fn a_trigger_counts_the_checks_and_opt_outs_that_name_its_campaign() {
        let t = trigger(|_| {}).unwrap();
        let notice = |campaign| Notice::parse("acme", Some(Channel::Sms), "recall", campaign);
        assert!(t.counts_check(&notice("RC-1").unwrap()));
        assert!(!t.counts_check(&notice("RC-2").unwrap()));
        assert!(t.names(&Scope::parse("acme", None, "recall", "RC-1").unwrap()));
        assert!(!t.names(&Scope::parse("acme", None, "recall", "").unwrap()));
        assert!(!t.names(&Scope::parse("beta", None, "", "RC-1").unwrap()));
        t.counts.check();
        t.counts.opt_out(true);
        let taken = t.counts.take();
        assert_eq!((taken.checks, taken.opt_outs, taken.complaints), (1, 1, 1));
        assert!(t.counts.take().is_empty());
    }

    #[test]
    fn a_check_counts_through_the_index_and_snapshots_share_the_counts() {
        use crate::domain::control::{Control, Controls, tests::halt};
        let watched = trigger(|_| {}).unwrap();
        let of_topic = trigger(|p| {
            p.topic = "recall";
            p.campaign = "";
        })
        .unwrap();
        let all = vec![
            Control::Trigger(watched.clone()),
            Control::Trigger(of_topic.clone()),
        ];
        let counts = CountsById::default();
        let controls = Controls::following(1, all.clone(), &counts);
        let n = |campaign| Notice::parse("acme", Some(Channel::Email), "recall", campaign).unwrap();
        for notice in [n("RC-1"), n("RC-1"), n("RC-2")] {
            controls.decide(None, &notice, None, NOW, false);
        }
        // Built while the first is in force (a poll racing a change): it counts in the same place.
        let reloaded = Controls::following(2, all, &counts);
        reloaded.decide(None, &n("RC-1"), None, NOW, false);
        let checks = |id| {
            let t = reloaded.triggers.iter().find(|t| t.id == id).unwrap();
            t.counts.take().checks
        };
        let (first, topic) = (checks(watched.id), checks(of_topic.id));
        assert_eq!(
            (first, topic),
            (3, 4),
            "campaign RC-1; every campaign of recall"
        );
        assert!(!reloaded.halted_over(&watched));
        let topic_halted = Controls::new(3, vec![Control::Halt(halt("recall", "", &[]))]);
        assert!(topic_halted.halted_over(&of_topic) && !topic_halted.halted_over(&watched));
        let campaign_halted = Controls::new(4, vec![Control::Halt(halt("", "RC-1", &[]))]);
        assert!(campaign_halted.halted_over(&watched) && !campaign_halted.halted_over(&of_topic));
    }
}
