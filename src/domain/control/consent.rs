//! Consent requirements: a tenant's notices of a topic (on one channel or every channel) that may go
//! only to people who said yes. The requirement is a control like a halt (every replica holds it in
//! memory, so asking "does this notice need consent?" costs a check one hash look-up); whether a
//! person gave consent is not a control but a record about them ([`crate::domain::consent`]), looked
//! up only for the checks a requirement applies to.

use super::{ChannelSet, Ended, Invalid, Millis, Notice, ReceiptId, required_text};
use serde::{Deserialize, Serialize};

/// Notices of `topic` on `channels` of `tenant` need the person's consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConsentRequirement {
    pub(crate) id: ReceiptId,
    pub(crate) tenant: String,
    /// One channel, or every channel.
    pub(crate) channels: ChannelSet,
    /// Always named: a requirement of every topic would make consent the default, which is a
    /// different product.
    pub(crate) topic: String,
    pub(crate) reason: String,
    pub(crate) actor: String,
    pub(crate) at: Millis,
    pub(crate) ended: Option<Ended>,
}

impl ConsentRequirement {
    /// A new requirement; `channels` empty means every channel.
    pub(crate) fn new(
        id: ReceiptId,
        (tenant, channels, topic): (&str, ChannelSet, &str),
        reason: &str,
        actor: String,
        at: Millis,
    ) -> Result<ConsentRequirement, Invalid> {
        super::names(tenant, topic, "")?;
        if topic.is_empty() {
            return Err(Invalid::new(
                "topic",
                "is required: name the topic that needs consent",
            ));
        }
        let reason = required_text("reason", reason)?;
        Ok(ConsentRequirement {
            id,
            tenant: tenant.to_owned(),
            channels: if channels.is_empty() {
                ChannelSet::EVERY
            } else {
                channels
            },
            topic: topic.to_owned(),
            reason,
            actor,
            at,
            ended: None,
        })
    }

    pub(crate) fn applies(&self, n: &Notice) -> bool {
        self.ended.is_none()
            && self.tenant == n.tenant
            && self.topic == n.topic
            && self.channels.contains(n.channel)
    }

    /// Whether `other` requires consent for the same tenant, channels and topic (setting one again
    /// is then refused as a duplicate rather than stacked).
    pub(crate) fn same_place(&self, other: &ConsentRequirement) -> bool {
        self.tenant == other.tenant && self.channels == other.channels && self.topic == other.topic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Channel,
        control::tests::{NOW, notice},
    };

    fn new(channels: &[Channel], topic: &str, reason: &str) -> Result<ConsentRequirement, Invalid> {
        let set = ChannelSet::of(channels.iter().copied());
        ConsentRequirement::new(
            ReceiptId::new(NOW),
            ("acme", set, topic),
            reason,
            "op".into(),
            NOW,
        )
    }

    #[test]
    fn a_requirement_applies_to_its_tenant_topic_and_channels() {
        let r = new(&[Channel::Email], "marketing", "why").unwrap();
        assert!(r.applies(&notice("acme", Channel::Email, "marketing", "X")));
        assert!(!r.applies(&notice("acme", Channel::Sms, "marketing", "")));
        assert!(!r.applies(&notice("acme", Channel::Email, "recall", "")));
        assert!(!r.applies(&notice("other", Channel::Email, "marketing", "")));
        let every = new(&[], "marketing", "why").unwrap();
        assert!(every.applies(&notice("acme", Channel::Push, "marketing", "")));
    }

    #[test]
    fn a_requirement_names_a_topic_and_a_reason() {
        assert_eq!(new(&[], "", "why").unwrap_err().field, "topic");
        assert_eq!(new(&[], "a b", "why").unwrap_err().field, "topic");
        assert_eq!(new(&[], "marketing", " ").unwrap_err().field, "reason");
    }
}
