//! The operator's levers that act on checks, with no I/O: a [`Halt`] (a campaign stopped, whatever
//! the recipients said) and a [`MandatoryDeclaration`] (a topic that must reach people on some
//! channels despite their opt-outs, with its legal basis). [`Controls`] is the set in force that every
//! replica holds in memory, and [`Controls::decide`] is the one rule that turns a check's opt-out
//! lookup into its [`Answer`]: a halt wins over everything, a declaration over an opt-out. A
//! [`ConsentRequirement`] makes a topic go only to people with a recorded consent.
//! [`HaltTrigger`] decides nothing at check time: it only counts, and halts through the service.

use super::{Channel, Invalid, Match, Millis, Notice, ReceiptId, Scope};
use serde::{Deserialize, Serialize};

mod answer;
mod consent;
mod index;
mod trigger;
mod window;
pub(crate) use answer::{Answer, Controls};
pub(crate) use consent::ConsentRequirement;
pub(crate) use trigger::{CountsById, Figures, HaltTrigger, TriggerParts};
pub(crate) use window::{SendWindow, WindowParts, Zone, time_of_day};

/// The longest free text (reasons, legal bases, approvers) a control carries.
pub(crate) const MAX_TEXT: usize = 1_000;

/// A set of channels, stored as a bit set (bit n = channel code n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct ChannelSet(u8);

impl ChannelSet {
    pub(crate) const EVERY: ChannelSet = ChannelSet(0b11_1110);

    pub(crate) fn of(channels: impl IntoIterator<Item = Channel>) -> Self {
        ChannelSet(channels.into_iter().fold(0, |b, c| b | (1 << c.code())))
    }

    /// The set a stored bit set names; `None` if it has bits no channel has.
    pub(crate) fn from_bits(bits: u8) -> Option<Self> {
        (bits & !Self::EVERY.0 == 0).then_some(ChannelSet(bits))
    }

    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    pub(crate) fn contains(self, c: Channel) -> bool {
        self.0 & (1 << c.code()) != 0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = Channel> {
        Channel::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

/// How a control ended: who ended it, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ended {
    pub(crate) at: Millis,
    pub(crate) by: String,
    pub(crate) reason: String,
}

/// A campaign halt: every notice it covers is suppressed until it is resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Halt {
    pub(crate) id: ReceiptId,
    pub(crate) tenant: String,
    /// `""`: every topic (the campaign is then named).
    pub(crate) topic: String,
    /// `""`: every campaign of the topic.
    pub(crate) campaign: String,
    pub(crate) channels: ChannelSet,
    pub(crate) reason: String,
    pub(crate) actor: String,
    pub(crate) at: Millis,
    pub(crate) ended: Option<Ended>,
}

/// A topic declared mandatory on some channels, until `expires_at` or a revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MandatoryDeclaration {
    pub(crate) id: ReceiptId,
    pub(crate) tenant: String,
    pub(crate) topic: String,
    pub(crate) channels: ChannelSet,
    pub(crate) legal_basis: String,
    pub(crate) approver: String,
    pub(crate) actor: String,
    pub(crate) at: Millis,
    pub(crate) expires_at: Millis,
    pub(crate) ended: Option<Ended>,
    /// The declaration's rule for send windows: its notices go at any hour when set.
    #[serde(default)]
    pub(crate) ignore_send_windows: bool,
}

/// Any lever, as the store keeps them all in one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    Halt(Halt),
    Mandatory(MandatoryDeclaration),
    Window(SendWindow),
    Consent(ConsentRequirement),
    Trigger(HaltTrigger),
}

impl Control {
    pub(crate) fn tenant(&self) -> &str {
        match self {
            Control::Halt(h) => &h.tenant,
            Control::Mandatory(d) => &d.tenant,
            Control::Window(w) => &w.tenant,
            Control::Consent(r) => &r.tenant,
            Control::Trigger(t) => &t.tenant,
        }
    }

    /// Who created it, and when.
    pub(crate) fn created(&self) -> (&str, Millis) {
        match self {
            Control::Halt(h) => (&h.actor, h.at),
            Control::Mandatory(d) => (&d.actor, d.at),
            Control::Window(w) => (&w.actor, w.at),
            Control::Consent(r) => (&r.actor, r.at),
            Control::Trigger(t) => (&t.actor, t.at),
        }
    }

    pub(crate) fn end(&mut self, end: Ended) {
        match self {
            Control::Halt(h) => h.ended = Some(end),
            Control::Mandatory(d) => d.ended = Some(end),
            Control::Window(w) => w.ended = Some(end),
            Control::Consent(r) => r.ended = Some(end),
            Control::Trigger(t) => t.ended = Some(end),
        }
    }
}

/// A required free-text field: present and bounded.
pub(crate) fn required_text(field: &str, value: &str) -> Result<String, Invalid> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    if value.len() > MAX_TEXT {
        return Err(Invalid::new(
            field,
            format!("must be at most {MAX_TEXT} bytes"),
        ));
    }
    Ok(value.to_owned())
}

/// Tenant, topic and campaign checked as an opt-out's scope would be, named as the request names them.
fn names(tenant: &str, topic: &str, campaign: &str) -> Result<(), Invalid> {
    Scope::parse(tenant, None, topic, campaign)
        .map(drop)
        .map_err(|e| Invalid {
            field: e.field.trim_start_matches("scope.").to_owned(),
            message: e.message,
        })
}

impl Halt {
    /// A new halt; `channels` empty means every channel.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: ReceiptId,
        tenant: &str,
        topic: &str,
        campaign: &str,
        channels: ChannelSet,
        reason: &str,
        actor: String,
        at: Millis,
    ) -> Result<Halt, Invalid> {
        names(tenant, topic, campaign)?;
        if topic.is_empty() && campaign.is_empty() {
            return Err(Invalid::new(
                "topic",
                "name a topic or a campaign (or both): a halt of a whole tenant is not a campaign halt",
            ));
        }
        let reason = required_text("reason", reason)?;
        let channels = if channels.is_empty() {
            ChannelSet::EVERY
        } else {
            channels
        };
        Ok(Halt {
            id,
            tenant: tenant.to_owned(),
            topic: topic.to_owned(),
            campaign: campaign.to_owned(),
            channels,
            reason,
            actor,
            at,
            ended: None,
        })
    }

    /// Whether this halt stops every notice of the place a trigger watches (the trigger then has
    /// nothing to halt, and does not count).
    pub(crate) fn covers_all_of(&self, t: &HaltTrigger) -> bool {
        self.ended.is_none()
            && self.tenant == t.tenant
            && (self.topic.is_empty() || self.topic == t.topic)
            && (self.campaign.is_empty() || self.campaign == t.campaign)
            && self.channels == ChannelSet::EVERY
    }

    pub(crate) fn covers(&self, n: &Notice) -> bool {
        self.ended.is_none()
            && self.tenant == n.tenant
            && (self.topic.is_empty() || self.topic == n.topic)
            && (self.campaign.is_empty() || self.campaign == n.campaign)
            && self.channels.contains(n.channel)
    }

    /// The record a check shows for a notice this halt blocks: an operator suppression whose receipt
    /// is the halt.
    pub(crate) fn as_match(&self, channel: Channel) -> Match {
        Match {
            scope: Scope {
                tenant: self.tenant.clone(),
                channel: Some(channel),
                topic: self.topic.clone(),
                campaign: self.campaign.clone(),
            },
            reason: super::Reason::Operator,
            source: super::Source::Api,
            received_at: self.at,
            effective_at: self.at,
            expires_at: None,
            receipt: self.id,
        }
    }
}

impl MandatoryDeclaration {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: ReceiptId,
        tenant: &str,
        topic: &str,
        channels: ChannelSet,
        legal_basis: &str,
        approver: &str,
        actor: String,
        at: Millis,
        expires_at: Option<Millis>,
    ) -> Result<MandatoryDeclaration, Invalid> {
        names(tenant, topic, "")?;
        if topic.is_empty() {
            return Err(Invalid::new(
                "topic",
                "is required: name the mandatory topic",
            ));
        }
        if channels.is_empty() {
            return Err(Invalid::new(
                "channels",
                "name at least one channel (CHANNEL_UNSPECIFIED is not a channel here)",
            ));
        }
        let legal_basis = required_text("legal_basis", legal_basis)?;
        let approver = required_text("approver", approver)?;
        let expires_at = expires_at
            .ok_or_else(|| Invalid::new("expires_at", "is required: a declaration must end"))?;
        if expires_at <= at {
            return Err(Invalid::new("expires_at", "must be in the future"));
        }
        Ok(MandatoryDeclaration {
            id,
            tenant: tenant.to_owned(),
            topic: topic.to_owned(),
            channels,
            legal_basis,
            approver,
            actor,
            at,
            expires_at,
            ended: None,
            ignore_send_windows: false,
        })
    }

    pub(crate) fn in_force_at(&self, now: Millis) -> bool {
        self.ended.is_none() && now < self.expires_at
    }

    pub(crate) fn applies(&self, n: &Notice, now: Millis) -> bool {
        self.in_force_at(now)
            && self.tenant == n.tenant
            && self.topic == n.topic
            && self.channels.contains(n.channel)
    }
}

#[cfg(test)]
// The fixtures are shared with `answer`'s tests.
mod tests {
    use super::*;

    pub(super) const NOW: Millis = 1_800_000_000_000;

    pub(super) fn notice(tenant: &str, channel: Channel, topic: &str, campaign: &str) -> Notice {
        Notice::parse(tenant, Some(channel), topic, campaign).unwrap()
    }

    pub(super) fn halt(topic: &str, campaign: &str, channels: &[Channel]) -> Halt {
        let set = ChannelSet::of(channels.iter().copied());
        Halt::new(
            ReceiptId::new(NOW),
            "acme",
            topic,
            campaign,
            set,
            "why",
            "op".into(),
            NOW,
        )
        .unwrap()
    }

    #[test]
    fn a_halt_covers_by_tenant_topic_campaign_and_channel() {
        let h = halt("recall", "RC-1", &[Channel::Email]);
        assert!(h.covers(&notice("acme", Channel::Email, "recall", "RC-1")));
        assert!(!h.covers(&notice("acme", Channel::Sms, "recall", "RC-1")));
        assert!(!h.covers(&notice("acme", Channel::Email, "recall", "RC-2")));
        assert!(!h.covers(&notice("other", Channel::Email, "recall", "RC-1")));
        let every = halt("", "RC-1", &[]);
        assert_eq!(every.channels, ChannelSet::EVERY);
        assert!(every.covers(&notice("acme", Channel::Postal, "marketing", "RC-1")));
    }

    #[test]
    fn a_halt_names_a_topic_or_a_campaign_and_a_reason() {
        let new = |topic, campaign, reason| {
            Halt::new(
                ReceiptId::new(NOW),
                "",
                topic,
                campaign,
                ChannelSet::EVERY,
                reason,
                "op".into(),
                NOW,
            )
        };
        assert_eq!(new("", "", "why").unwrap_err().field, "topic");
        assert_eq!(new("t", "", " ").unwrap_err().field, "reason");
        assert_eq!(new("a b", "", "why").unwrap_err().field, "topic");
    }

    #[test]
    fn a_declaration_needs_its_particulars_and_a_future_expiry() {
        let new = |channels, basis, expires| {
            MandatoryDeclaration::new(
                ReceiptId::new(NOW),
                "",
                "recall",
                channels,
                basis,
                "x",
                "op".into(),
                NOW,
                expires,
            )
        };
        let postal = ChannelSet::of([Channel::Postal]);
        assert_eq!(
            new(ChannelSet::default(), "b", Some(NOW + 1))
                .unwrap_err()
                .field,
            "channels"
        );
        assert_eq!(
            new(postal, "", Some(NOW + 1)).unwrap_err().field,
            "legal_basis"
        );
        assert_eq!(new(postal, "b", None).unwrap_err().field, "expires_at");
        assert_eq!(new(postal, "b", Some(NOW)).unwrap_err().field, "expires_at");
    }

    #[test]
    fn channel_sets_round_trip_their_bits() {
        let set = ChannelSet::of([Channel::Sms, Channel::Postal]);
        assert_eq!(ChannelSet::from_bits(set.bits()), Some(set));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Channel::Sms, Channel::Postal]
        );
        assert_eq!(ChannelSet::from_bits(1), None);
    }
}
