//! The controls in force, indexed by what a check names, so that a check looks only at those that
//! can apply to its notice: one hash look-up for its tenant ([`Index::tenant`]), then, in what that
//! finds, its campaign and topic. Hundreds of halts of other campaigns or tenants then cost a check
//! nothing (the benchmark's controls rows hold this).
//!
//! Halt triggers sit beside the halts of the same campaign or topic ([`Place`]), so the look-up
//! that finds a check's halts also finds the triggers its check counts for: counting costs a
//! check no look-up of its own, only a relaxed atomic add per trigger that names its notice.

use super::{ConsentRequirement, Halt, HaltTrigger, MandatoryDeclaration, SendWindow};
use crate::domain::{Millis, Notice};
use std::{collections::HashMap, sync::Arc};

#[derive(Debug, Default)]
pub(super) struct Index {
    tenants: HashMap<String, TenantControls>,
}

/// The controls of one tenant: what a check asks after its one look-up of the tenant.
#[derive(Debug, Default)]
pub(super) struct TenantControls {
    /// Halts and triggers that name a campaign, by campaign.
    by_campaign: HashMap<String, Place>,
    /// Halts and triggers of every campaign of a topic, by topic.
    by_topic: HashMap<String, Place>,
    mandatory_by_topic: HashMap<String, Vec<Arc<MandatoryDeclaration>>>,
    windows: Vec<Arc<SendWindow>>,
    consent_by_topic: HashMap<String, Vec<Arc<ConsentRequirement>>>,
}

/// What a campaign (or a topic) has: its halts, and the triggers that count its checks.
#[derive(Debug, Default)]
struct Place {
    halts: Vec<Arc<Halt>>,
    triggers: Vec<Arc<HaltTrigger>>,
}

impl Index {
    pub(super) fn new(
        halts: &[Arc<Halt>],
        mandatory: &[Arc<MandatoryDeclaration>],
        windows: &[Arc<SendWindow>],
        consent: &[Arc<ConsentRequirement>],
        triggers: &[Arc<HaltTrigger>],
    ) -> Index {
        let mut index = Index::default();
        for h in halts {
            let t = index.tenants.entry(h.tenant.clone()).or_default();
            t.place(&h.topic, &h.campaign).halts.push(h.clone());
        }
        for tr in triggers {
            let t = index.tenants.entry(tr.tenant.clone()).or_default();
            t.place(&tr.topic, &tr.campaign).triggers.push(tr.clone());
        }
        for d in mandatory {
            let t = index.tenants.entry(d.tenant.clone()).or_default();
            let by_topic = t.mandatory_by_topic.entry(d.topic.clone()).or_default();
            by_topic.push(d.clone());
        }
        for w in windows {
            let t = index.tenants.entry(w.tenant.clone()).or_default();
            t.windows.push(w.clone());
        }
        for r in consent {
            let t = index.tenants.entry(r.tenant.clone()).or_default();
            let by_topic = t.consent_by_topic.entry(r.topic.clone()).or_default();
            by_topic.push(r.clone());
        }
        index
    }

    /// The controls of the notice's tenant; `None` when no control is in force for it.
    pub(super) fn tenant(&self, n: &Notice) -> Option<&TenantControls> {
        if self.tenants.is_empty() {
            return None;
        }
        self.tenants.get(&n.tenant)
    }
}

impl TenantControls {
    /// The place of a control naming `topic` and `campaign`: by campaign when it names one.
    fn place(&mut self, topic: &str, campaign: &str) -> &mut Place {
        let (map, key) = if campaign.is_empty() {
            (&mut self.by_topic, topic)
        } else {
            (&mut self.by_campaign, campaign)
        };
        map.entry(key.to_owned()).or_default()
    }

    /// The earliest halt that covers the notice; on the way, counts the check for every trigger
    /// that watches its campaign or topic.
    pub(super) fn halt(&self, n: &Notice) -> Option<&Arc<Halt>> {
        let by_campaign = (!n.campaign.is_empty())
            .then(|| self.by_campaign.get(&n.campaign))
            .flatten();
        let by_topic = self.by_topic.get(&n.topic);
        let mut earliest: Option<&Arc<Halt>> = None;
        for place in by_campaign.into_iter().chain(by_topic) {
            for trigger in &place.triggers {
                if trigger.counts_check(n) {
                    trigger.counts.check();
                }
            }
            for h in place.halts.iter().filter(|h| h.covers(n)) {
                if earliest.is_none_or(|e| h.id < e.id) {
                    earliest = Some(h);
                }
            }
        }
        earliest
    }

    /// The earliest declaration in force at `now` that applies to the notice.
    pub(super) fn declaration(
        &self,
        n: &Notice,
        now: Millis,
    ) -> Option<&Arc<MandatoryDeclaration>> {
        self.mandatory_by_topic
            .get(&n.topic)?
            .iter()
            .filter(|d| d.applies(n, now))
            .min_by_key(|d| d.id)
    }

    /// The tenant's send windows (each still to be asked whether it applies).
    pub(super) fn windows(&self) -> &[Arc<SendWindow>] {
        &self.windows
    }

    /// The earliest consent requirement that applies to the notice.
    pub(super) fn requirement(&self, n: &Notice) -> Option<&Arc<ConsentRequirement>> {
        self.consent_by_topic
            .get(&n.topic)?
            .iter()
            .filter(|r| r.applies(n))
            .min_by_key(|r| r.id)
    }
}
