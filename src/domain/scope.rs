//! What a notice is ([`Notice`]: tenant, channel, topic, optional campaign) and what an opt-out leaves
//! ([`Scope`]: the same, with wildcards), and the rule that joins them: an opt-out *covers* a notice when
//! the tenant is equal and each of channel, topic and campaign is the wildcard or equal. A notice
//! therefore has at most eight candidate scopes ([`Notice::candidates`]), which is what lets the hot
//! path ask Redis for exactly those and nothing else.

use super::Invalid;

pub(crate) const MAX_TENANT: usize = 64;
pub(crate) const MAX_NAME: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Email,
    Sms,
    Push,
    Voice,
    Postal,
}

impl Channel {
    pub(crate) const ALL: [Channel; 5] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Voice,
        Channel::Postal,
    ];

    /// The number stored in Redis and the store (the proto's numbering; 0 is "every channel").
    pub fn code(self) -> u8 {
        match self {
            Channel::Email => 1,
            Channel::Sms => 2,
            Channel::Push => 3,
            Channel::Voice => 4,
            Channel::Postal => 5,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Channel::ALL.into_iter().find(|c| c.code() == code)
    }

    /// A channel by its lower-case name (`email`, `sms`, `push`, `voice`, `postal`), as
    /// configuration files write it.
    pub(crate) fn parse_name(name: &str) -> Option<Self> {
        let names = ["email", "sms", "push", "voice", "postal"];
        Channel::ALL
            .into_iter()
            .zip(names)
            .find_map(|(c, n)| (n == name).then_some(c))
    }
}

/// The code of an optional channel: 0 for the wildcard.
pub(crate) fn channel_code(channel: Option<Channel>) -> u8 {
    channel.map_or(0, Channel::code)
}

/// What an opt-out leaves. `channel: None`, `topic: ""` and `campaign: ""` are wildcards; the tenant
/// always matches exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub(crate) tenant: String,
    pub(crate) channel: Option<Channel>,
    pub(crate) topic: String,
    pub(crate) campaign: String,
}

/// A concrete notice a sender is about to send: channel and topic are required.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notice {
    pub(crate) tenant: String,
    pub(crate) channel: Channel,
    pub(crate) topic: String,
    pub(crate) campaign: String,
}

fn check_name(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.len() > max {
        return Err(Invalid::new(
            field,
            format!("must be at most {max} bytes, got {}", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(Invalid::new(
            field,
            format!("must be printable ASCII without spaces, found {c:?}"),
        ));
    }
    Ok(())
}

impl Scope {
    /// Takes owned names where the caller has them (a decoded request's), so that checking a
    /// notice copies none of them.
    pub fn parse(
        tenant: impl Into<String>,
        channel: Option<Channel>,
        topic: impl Into<String>,
        campaign: impl Into<String>,
    ) -> Result<Self, Invalid> {
        let (tenant, topic, campaign) = (tenant.into(), topic.into(), campaign.into());
        check_name("scope.tenant", &tenant, MAX_TENANT)?;
        check_name("scope.topic", &topic, MAX_NAME)?;
        check_name("scope.campaign", &campaign, MAX_NAME)?;
        Ok(Self {
            tenant,
            channel,
            topic,
            campaign,
        })
    }

    /// Whether this scope covers a notice (the rule a check runs through its candidate scopes;
    /// here for the tests that hold the two against each other).
    #[cfg(test)]
    pub(crate) fn covers(&self, notice: &Notice) -> bool {
        self.tenant == notice.tenant
            && self.channel.is_none_or(|c| c == notice.channel)
            && (self.topic.is_empty() || self.topic == notice.topic)
            && (self.campaign.is_empty() || self.campaign == notice.campaign)
    }

    /// Whether every notice `other` covers is covered by this scope too: the same tenant, and each
    /// of channel, topic and campaign here the wildcard or equal. This is what a person's token
    /// for this scope may show of their records (a record broader than the token speaks of notices
    /// the token is not about).
    pub(crate) fn includes(&self, other: &Scope) -> bool {
        self.tenant == other.tenant
            && self.channel.is_none_or(|c| other.channel == Some(c))
            && (self.topic.is_empty() || self.topic == other.topic)
            && (self.campaign.is_empty() || self.campaign == other.campaign)
    }

    /// How broad the scope is: the matched record is the one with the most wildcards.
    pub(crate) fn wildcards(&self) -> u8 {
        u8::from(self.channel.is_none())
            + u8::from(self.topic.is_empty())
            + u8::from(self.campaign.is_empty())
    }

    /// An unambiguous byte encoding (names are printable ASCII, so NUL separates them): the bytes
    /// the cache layout hashes into a field. The layout writes them inline without allocating, so
    /// this spelling is only for the tests that hold it to them (injective here, the same bytes in
    /// `cache::layout`). Changing it invalidates every cache, so it is versioned by the cache
    /// layout, not here.
    #[cfg(test)]
    pub(crate) fn canonical(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.tenant.len() + self.topic.len() + self.campaign.len() + 4);
        out.extend_from_slice(self.tenant.as_bytes());
        out.push(0);
        out.push(channel_code(self.channel));
        out.push(0);
        out.extend_from_slice(self.topic.as_bytes());
        out.push(0);
        out.extend_from_slice(self.campaign.as_bytes());
        out
    }
}

impl Notice {
    pub fn parse(
        tenant: impl Into<String>,
        channel: Option<Channel>,
        topic: impl Into<String>,
        campaign: impl Into<String>,
    ) -> Result<Self, Invalid> {
        let scope = Scope::parse(tenant, channel, topic, campaign)?;
        let channel =
            channel.ok_or_else(|| Invalid::new("scope.channel", "a check must name a channel"))?;
        if scope.topic.is_empty() {
            return Err(Invalid::new("scope.topic", "a check must name a topic"));
        }
        Ok(Self {
            tenant: scope.tenant,
            channel,
            topic: scope.topic,
            campaign: scope.campaign,
        })
    }

    /// Every scope that covers this notice: channel ∈ {this, any} × topic ∈ {this, any} × campaign ∈
    /// {this, any}; four when the notice names no campaign. (A check builds only the one it finds,
    /// with [`candidate`](Self::candidate); the tests hold the whole list to what "covers" means.)
    #[cfg(test)]
    pub(crate) fn candidates(&self) -> Vec<Scope> {
        let count = if self.campaign.is_empty() { 4 } else { 8 };
        (0..count).map(|k| self.candidate(k)).collect()
    }

    /// The `k`-th of [`candidates`](Self::candidates), built alone: a check that finds a record
    /// needs that record's scope, not all eight (a scope is up to three strings to allocate). The
    /// order, channel outermost and campaign innermost, is the one the cache's fields are in
    /// (`cache::layout::candidate_fields`).
    pub(crate) fn candidate(&self, k: usize) -> Scope {
        let named_campaign = !self.campaign.is_empty();
        let campaign = if named_campaign && k & 1 == 0 {
            self.campaign.as_str()
        } else {
            ""
        };
        let k = if named_campaign { k >> 1 } else { k };
        let topic = if k & 1 == 0 { self.topic.as_str() } else { "" };
        Scope {
            tenant: self.tenant.clone(),
            channel: (k & 2 == 0).then_some(self.channel),
            topic: topic.to_owned(),
            campaign: campaign.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scope(tenant: &str, channel: Option<Channel>, topic: &str, campaign: &str) -> Scope {
        Scope::parse(tenant, channel, topic, campaign).unwrap()
    }

    fn notice(channel: Channel, topic: &str, campaign: &str) -> Notice {
        Notice::parse("acme", Some(channel), topic, campaign).unwrap()
    }

    #[test]
    fn covers_table() {
        use Channel::*;
        let n = notice(Email, "recall", "RC-1");
        let cases = [
            (scope("acme", None, "", ""), true),
            (scope("acme", Some(Email), "", ""), true),
            (scope("acme", Some(Sms), "", ""), false),
            (scope("acme", None, "recall", ""), true),
            (scope("acme", None, "marketing", ""), false),
            (scope("acme", None, "", "RC-1"), true),
            (scope("acme", None, "", "RC-2"), false),
            (scope("acme", Some(Email), "recall", "RC-1"), true),
            (scope("other", None, "", ""), false),
            (scope("", None, "", ""), false),
        ];
        // A scope covers the notice iff it is one of the notice's candidates (what a check reads).
        let candidates = n.candidates();
        for (s, want) in cases {
            assert_eq!(candidates.contains(&s), want, "{s:?}");
        }
    }

    #[test]
    fn a_check_needs_a_channel_and_a_topic() {
        assert_eq!(
            Notice::parse("", None, "recall", "").unwrap_err().field,
            "scope.channel"
        );
        assert_eq!(
            Notice::parse("", Some(Channel::Sms), "", "")
                .unwrap_err()
                .field,
            "scope.topic"
        );
    }

    #[test]
    fn names_are_bounded_printable_ascii() {
        assert_eq!(
            Scope::parse("a b", None, "", "").unwrap_err().field,
            "scope.tenant"
        );
        assert_eq!(
            Scope::parse("", None, "x".repeat(129), "")
                .unwrap_err()
                .field,
            "scope.topic"
        );
        assert_eq!(
            Scope::parse("", None, "", "é").unwrap_err().field,
            "scope.campaign"
        );
    }

    #[test]
    fn a_notice_without_campaign_has_four_candidates_with_one_eight() {
        assert_eq!(notice(Channel::Sms, "t", "").candidates().len(), 4);
        assert_eq!(notice(Channel::Sms, "t", "c").candidates().len(), 8);
    }

    fn arb_channel() -> impl Strategy<Value = Option<Channel>> {
        prop::option::of(prop::sample::select(Channel::ALL.to_vec()))
    }

    fn arb_scope() -> impl Strategy<Value = Scope> {
        ("[ab]?", arb_channel(), "[xy]?", "[pq]?")
            .prop_map(|(t, c, topic, camp)| Scope::parse(&t, c, &topic, &camp).unwrap())
    }

    fn arb_notice() -> impl Strategy<Value = Notice> {
        (
            "[ab]?",
            prop::sample::select(Channel::ALL.to_vec()),
            "[xy]",
            "[pq]?",
        )
            .prop_map(|(t, c, topic, camp)| Notice::parse(&t, Some(c), &topic, &camp).unwrap())
    }

    /// The covers rule spelled out field by field, as SPEC §3 words it.
    fn reference_covers(s: &Scope, n: &Notice) -> bool {
        let channel_ok = match s.channel {
            None => true,
            Some(c) => c == n.channel,
        };
        let topic_ok = s.topic.is_empty() || s.topic == n.topic;
        let campaign_ok = s.campaign.is_empty() || s.campaign == n.campaign;
        s.tenant == n.tenant && channel_ok && topic_ok && campaign_ok
    }

    proptest! {
        #[test]
        fn candidates_are_exactly_the_covering_scopes(s in arb_scope(), n in arb_notice()) {
            // Brute force over the small universe: a scope covers the notice iff it is a candidate.
            prop_assert_eq!(n.candidates().contains(&s), reference_covers(&s, &n));
        }

        #[test]
        fn includes_means_covering_every_notice_the_other_covers(s in arb_scope(), o in arb_scope()) {
            // Every notice of a universe one name wider than the scopes' (topic z, campaign r), so
            // that a wildcard is told apart from any one name.
            let mut every = true;
            for tenant in ["", "a", "b"] {
                for channel in Channel::ALL {
                    for topic in ["x", "y", "z"] {
                        for campaign in ["", "p", "q", "r"] {
                            let n = Notice::parse(tenant, Some(channel), topic, campaign).unwrap();
                            every &= !o.covers(&n) || s.covers(&n);
                        }
                    }
                }
            }
            prop_assert_eq!(s.includes(&o), every);
        }

        #[test]
        fn canonical_encoding_is_injective(a in arb_scope(), b in arb_scope()) {
            prop_assert_eq!(a.canonical() == b.canonical(), a == b);
        }
    }
}
