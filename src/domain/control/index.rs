//! The controls in force, indexed by what a check names, so that a check looks only at those that
//! can apply to its notice: one hash look-up for its tenant, then its campaign and topic. Hundreds
//! of halts of other campaigns or tenants then cost a check nothing (the benchmark's controls rows
//! hold this).

use super::{ConsentRequirement, Halt, MandatoryDeclaration, SendWindow};
use crate::domain::{Millis, Notice};
use std::{collections::HashMap, sync::Arc};

#[derive(Debug, Default)]
pub(super) struct Index {
    tenants: HashMap<String, TenantControls>,
}

#[derive(Debug, Default)]
struct TenantControls {
    /// Halts that name a campaign, by campaign.
    halts_by_campaign: HashMap<String, Vec<Arc<Halt>>>,
    /// Halts of every campaign of a topic, by topic.
    halts_by_topic: HashMap<String, Vec<Arc<Halt>>>,
    mandatory_by_topic: HashMap<String, Vec<Arc<MandatoryDeclaration>>>,
    windows: Vec<Arc<SendWindow>>,
    consent_by_topic: HashMap<String, Vec<Arc<ConsentRequirement>>>,
}

impl Index {
    pub(super) fn new(
        halts: &[Arc<Halt>],
        mandatory: &[Arc<MandatoryDeclaration>],
        windows: &[Arc<SendWindow>],
        consent: &[Arc<ConsentRequirement>],
    ) -> Index {
        let mut index = Index::default();
        for h in halts {
            let t = index.tenants.entry(h.tenant.clone()).or_default();
            let (map, key) = if h.campaign.is_empty() {
                (&mut t.halts_by_topic, &h.topic)
            } else {
                (&mut t.halts_by_campaign, &h.campaign)
            };
            map.entry(key.clone()).or_default().push(h.clone());
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

    fn tenant(&self, n: &Notice) -> Option<&TenantControls> {
        if self.tenants.is_empty() {
            return None;
        }
        self.tenants.get(&n.tenant)
    }

    /// Whether any control is in force for the notice's tenant.
    pub(super) fn any(&self, n: &Notice) -> bool {
        self.tenant(n).is_some()
    }

    /// The earliest halt that covers the notice.
    pub(super) fn halt(&self, n: &Notice) -> Option<&Arc<Halt>> {
        let t = self.tenant(n)?;
        let by_campaign = (!n.campaign.is_empty())
            .then(|| t.halts_by_campaign.get(&n.campaign))
            .flatten();
        let by_topic = t.halts_by_topic.get(&n.topic);
        by_campaign
            .into_iter()
            .chain(by_topic)
            .flatten()
            .filter(|h| h.covers(n))
            .min_by_key(|h| h.id)
    }

    /// The earliest declaration in force at `now` that applies to the notice.
    pub(super) fn declaration(
        &self,
        n: &Notice,
        now: Millis,
    ) -> Option<&Arc<MandatoryDeclaration>> {
        let t = self.tenant(n)?;
        t.mandatory_by_topic
            .get(&n.topic)?
            .iter()
            .filter(|d| d.applies(n, now))
            .min_by_key(|d| d.id)
    }

    /// The send windows of the notice's tenant (each still to be asked whether it applies).
    pub(super) fn windows(&self, n: &Notice) -> &[Arc<SendWindow>] {
        self.tenant(n).map_or(&[], |t| &t.windows)
    }

    /// The earliest consent requirement that applies to the notice.
    pub(super) fn requirement(&self, n: &Notice) -> Option<&Arc<ConsentRequirement>> {
        let t = self.tenant(n)?;
        t.consent_by_topic
            .get(&n.topic)?
            .iter()
            .filter(|r| r.applies(n))
            .min_by_key(|r| r.id)
    }
}
