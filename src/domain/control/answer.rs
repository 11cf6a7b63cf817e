//! What a check answers once the controls have had their say: [`Controls::decide`] applies the
//! halts, declarations, consent requirements and send windows in force to the opt-out a lookup
//! found (if any).

use super::{
    ConsentRequirement, Control, CountsById, Halt, HaltTrigger, MandatoryDeclaration, SendWindow,
    Zone, index::Index,
};
use crate::domain::{Channel, Match, Millis, Notice, Scope};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The answer to one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Nothing blocks the notice: it may go.
    Send,
    /// An opt-out blocks it: the one a check names (`best_match`).
    Suppressed(Match),
    /// An operator halt blocks it, on the notice's channel.
    Halted { halt: Arc<Halt>, channel: Channel },
    /// A mandatory declaration lets it go despite the opt-out it overrode.
    Overridden {
        declaration: Arc<MandatoryDeclaration>,
        overridden: Match,
    },
    /// Not now: a send window is shut on the recipient's wall clock; it may go from `not_before`.
    NotNow {
        window: Arc<SendWindow>,
        not_before: Millis,
    },
    /// The one message that confirms this opt-out may go (`service::confirmations`).
    Confirms(Match),
    /// The notice's topic requires consent and the person has none covering it (on the notice's
    /// channel).
    NoConsent {
        requirement: Arc<ConsentRequirement>,
        channel: Channel,
    },
}

/// The controls in force, as one replica holds them: few, read on every check, replaced whole.
#[derive(Debug, Default)]
pub(crate) struct Controls {
    /// `control_head.version` they were read at.
    pub(crate) version: i64,
    /// In force; earliest first, so overlapping halts always name the same one.
    pub(crate) halts: Vec<Arc<Halt>>,
    /// Not revoked (possibly expired: expiry is decided at check time, by the service's clock).
    pub(crate) mandatory: Vec<Arc<MandatoryDeclaration>>,
    /// Send windows in force.
    pub(crate) windows: Vec<Arc<SendWindow>>,
    /// Consent requirements in force.
    pub(crate) consent: Vec<Arc<ConsentRequirement>>,
    /// Halt triggers in force, each with this replica's counters.
    pub(crate) triggers: Vec<Arc<HaltTrigger>>,
    /// The same, by tenant, campaign and topic: what a check looks at.
    index: Index,
}

impl Controls {
    /// Holds only what is (or may still be) in force, sorted by id, i.e. by creation time.
    #[cfg(test)]
    pub(crate) fn new(version: i64, controls: Vec<Control>) -> Controls {
        Controls::following(version, controls, &CountsById::default())
    }

    /// The controls in force of `controls`, sorted by id, i.e. by creation time, each trigger with
    /// this replica's counters of it (`counts`), so a reload of the controls loses no count.
    pub(crate) fn following(version: i64, controls: Vec<Control>, counts: &CountsById) -> Controls {
        let mut out = Controls {
            version,
            ..Controls::default()
        };
        for c in controls {
            match c {
                Control::Halt(h) if h.ended.is_none() => out.halts.push(Arc::new(h)),
                Control::Mandatory(d) if d.ended.is_none() => out.mandatory.push(Arc::new(d)),
                Control::Window(w) if w.ended.is_none() => out.windows.push(Arc::new(w)),
                Control::Consent(r) if r.ended.is_none() => out.consent.push(Arc::new(r)),
                Control::Trigger(mut t) if t.ended.is_none() => {
                    t.counts = counts.of(t.id);
                    out.triggers.push(Arc::new(t))
                }
                _ => {}
            }
        }
        out.halts.sort_by_key(|h| h.id);
        out.mandatory.sort_by_key(|d| d.id);
        out.windows.sort_by_key(|w| w.id);
        out.consent.sort_by_key(|r| r.id);
        out.triggers.sort_by_key(|t| t.id);
        out.index = Index::new(
            &out.halts,
            &out.mandatory,
            &out.windows,
            &out.consent,
            &out.triggers,
        );
        out
    }

    /// The triggers an opt-out of `scope` counts for.
    pub(crate) fn triggers_naming<'a>(
        &'a self,
        scope: &'a Scope,
    ) -> impl Iterator<Item = &'a Arc<HaltTrigger>> + 'a {
        self.triggers.iter().filter(move |t| t.names(scope))
    }

    /// Whether a halt in force already stops everything `trigger` watches.
    pub(crate) fn halted_over(&self, trigger: &HaltTrigger) -> bool {
        self.halts.iter().any(|h| h.covers_all_of(trigger))
    }

    /// The controls in force as text, to be published in Redis for replicas cut from the store.
    pub(crate) fn encode(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            halts: Vec<&'a Halt>,
            mandatory: Vec<&'a MandatoryDeclaration>,
            windows: Vec<&'a SendWindow>,
            consent: Vec<&'a ConsentRequirement>,
            triggers: Vec<&'a HaltTrigger>,
        }
        let out = Out {
            halts: self.halts.iter().map(|h| &**h).collect(),
            mandatory: self.mandatory.iter().map(|d| &**d).collect(),
            windows: self.windows.iter().map(|w| &**w).collect(),
            consent: self.consent.iter().map(|r| &**r).collect(),
            triggers: self.triggers.iter().map(|t| &**t).collect(),
        };
        serde_json::to_string(&out).expect("controls serialize")
    }

    /// The controls [`Controls::encode`] wrote, read at `version`.
    #[cfg(test)]
    pub(crate) fn decode(version: i64, text: &str) -> Result<Controls, serde_json::Error> {
        Controls::decode_following(version, text, &CountsById::default())
    }

    /// The controls [`Controls::encode`] wrote, read at `version`, each trigger with this
    /// replica's counters of it.
    pub(crate) fn decode_following(
        version: i64,
        text: &str,
        counts: &CountsById,
    ) -> Result<Controls, serde_json::Error> {
        #[derive(Deserialize)]
        struct In {
            #[serde(default)]
            halts: Vec<Halt>,
            #[serde(default)]
            mandatory: Vec<MandatoryDeclaration>,
            #[serde(default)]
            windows: Vec<SendWindow>,
            #[serde(default)]
            consent: Vec<ConsentRequirement>,
            #[serde(default)]
            triggers: Vec<HaltTrigger>,
        }
        let In {
            halts,
            mandatory,
            windows,
            consent,
            triggers,
        } = serde_json::from_str(text)?;
        let controls = halts
            .into_iter()
            .map(Control::Halt)
            .chain(mandatory.into_iter().map(Control::Mandatory))
            .chain(windows.into_iter().map(Control::Window))
            .chain(consent.into_iter().map(Control::Consent))
            .chain(triggers.into_iter().map(Control::Trigger))
            .collect();
        Ok(Controls::following(version, controls, counts))
    }

    /// The answer of a replica whose controls may be stale (it could not confirm them within its
    /// bound): a halt or a revocation it has not seen may be in force, so nothing may go. A
    /// suppression stands; a mandatory override falls back to the opt-out it overrode; `None`
    /// where the answer would have been "send" (the check is then refused as `UNAVAILABLE`).
    pub(crate) fn when_stale(answer: Answer) -> Option<Answer> {
        match answer {
            Answer::Send => None,
            Answer::Overridden { overridden, .. } | Answer::Confirms(overridden) => {
                Some(Answer::Suppressed(overridden))
            }
            blocked @ (Answer::Suppressed(_)
            | Answer::Halted { .. }
            | Answer::NotNow { .. }
            | Answer::NoConsent { .. }) => Some(blocked),
        }
    }

    /// What a check answers, given the opt-out its lookup found (if any), whether the person has
    /// a consent covering the notice (`consented`; the caller first asks with `false` and looks
    /// consent up only when the answer is [`Answer::NoConsent`]), and the recipient's time zone (if
    /// the check named one). In order: a halt blocks; an opt-out blocks unless a declaration
    /// overrides it; a consent requirement blocks a notice without consent unless a declaration
    /// applies (a declaration is the notice's legal basis: it needs no consent); then a shut send
    /// window says "not now", unless the declaration that applies ignores windows. Allocates
    /// nothing when no control is in force.
    pub(crate) fn decide(
        &self,
        matched: Option<Match>,
        notice: &Notice,
        zone: Option<&Zone>,
        now: Millis,
        consented: bool,
    ) -> Answer {
        let Some(tenant) = self.index.tenant(notice) else {
            return matched.map_or(Answer::Send, Answer::Suppressed);
        };
        if let Some(halt) = tenant.halt(notice) {
            return Answer::Halted {
                halt: halt.clone(),
                channel: notice.channel,
            };
        }
        let windows = tenant.windows();
        let requirement = (!consented).then(|| tenant.requirement(notice)).flatten();
        if matched.is_none() && windows.is_empty() && requirement.is_none() {
            return Answer::Send;
        }
        let declaration = tenant.declaration(notice, now);
        let answer = match (matched, declaration) {
            (None, None) => match requirement {
                Some(r) => {
                    return Answer::NoConsent {
                        requirement: r.clone(),
                        channel: notice.channel,
                    };
                }
                None => Answer::Send,
            },
            (None, Some(_)) => Answer::Send,
            (Some(m), None) => return Answer::Suppressed(m),
            (Some(overridden), Some(d)) => Answer::Overridden {
                declaration: d.clone(),
                overridden,
            },
        };
        if declaration.is_some_and(|d| d.ignore_send_windows) {
            return answer;
        }
        match not_before(windows, notice, zone, now) {
            Some((window, not_before)) => Answer::NotNow { window, not_before },
            None => answer,
        }
    }
}

/// The earliest moment from `now` on at which every window of `windows` that applies to the
/// notice is open, and the window that was shut last; `None` if they all are open now. Windows meet
/// rarely, so a few rounds settle it (a set of windows that never opens together answers after the
/// last round).
fn not_before(
    windows: &[Arc<SendWindow>],
    notice: &Notice,
    zone: Option<&Zone>,
    now: Millis,
) -> Option<(Arc<SendWindow>, Millis)> {
    let mut at = now;
    let mut shut = None;
    for _ in 0..4 {
        let mut moved = false;
        for w in windows.iter().filter(|w| w.applies(notice)) {
            if let Some(next) = w.not_before(at, zone) {
                (at, moved, shut) = (next, true, Some(w.clone()));
            }
        }
        if !moved {
            break;
        }
    }
    shut.map(|w| (w, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Reason, ReceiptId, Scope, Source,
        control::{
            ChannelSet,
            tests::{NOW, halt, notice},
        },
    };

    fn postal_recalls(expires_at: Millis) -> MandatoryDeclaration {
        let set = ChannelSet::of([Channel::Postal]);
        MandatoryDeclaration::new(
            ReceiptId::new(NOW),
            "acme",
            "recall",
            set,
            "49 U.S.C. 30118",
            "counsel",
            "op".into(),
            NOW,
            Some(expires_at),
        )
        .unwrap()
    }

    fn opt_out() -> Match {
        Match {
            scope: Scope::parse("acme", None, "", "").unwrap(),
            reason: Reason::UserRequest,
            source: Source::Link,
            received_at: 1,
            effective_at: 1,
            expires_at: None,
            receipt: ReceiptId::from_bytes([7; 16]),
        }
    }

    #[test]
    fn a_halt_wins_over_a_declaration_which_wins_over_an_opt_out() {
        let n = notice("acme", Channel::Postal, "recall", "");
        let declared = Control::Mandatory(postal_recalls(NOW + 10));
        let controls = Controls::new(1, vec![declared.clone()]);
        let got = controls.decide(Some(opt_out()), &n, None, NOW, false);
        assert!(matches!(got, Answer::Overridden { .. }), "{got:?}");
        assert_eq!(controls.decide(None, &n, None, NOW, false), Answer::Send);
        assert_eq!(
            controls.decide(Some(opt_out()), &n, None, NOW + 10, false),
            Answer::Suppressed(opt_out())
        );
        let halted = Control::Halt(halt("recall", "", &[]));
        let controls = Controls::new(2, vec![declared, halted]);
        let got = controls.decide(Some(opt_out()), &n, None, NOW, false);
        assert!(matches!(got, Answer::Halted { .. }), "{got:?}");
    }

    #[test]
    fn a_check_finds_the_halts_of_its_tenant_campaign_and_topic_among_many() {
        let mut all: Vec<_> = (0..50)
            .map(|i| Control::Halt(halt("recall", &format!("RC-{i}"), &[])))
            .collect();
        all.push(Control::Halt(halt("marketing", "", &[Channel::Email])));
        let controls = Controls::new(1, all);
        let halted = |n: Notice| controls.decide(None, &n, None, NOW, false);
        let got = halted(notice("acme", Channel::Email, "recall", "RC-7"));
        assert!(
            matches!(&got, Answer::Halted { halt, .. } if halt.campaign == "RC-7"),
            "{got:?}"
        );
        let got = halted(notice("acme", Channel::Email, "marketing", "X"));
        assert!(matches!(got, Answer::Halted { .. }), "{got:?}");
        for n in [
            notice("acme", Channel::Email, "recall", "RC-99"),
            notice("acme", Channel::Sms, "marketing", "X"),
            notice("other", Channel::Email, "recall", "RC-7"),
        ] {
            assert_eq!(halted(n), Answer::Send);
        }
    }

    #[test]
    fn a_snapshot_decodes_to_what_was_encoded() {
        let controls = Controls::new(
            7,
            vec![
                Control::Mandatory(postal_recalls(NOW + 10)),
                Control::Halt(halt("recall", "RC-1", &[Channel::Sms])),
                Control::Consent(
                    ConsentRequirement::new(
                        ReceiptId::new(NOW),
                        ("acme", ChannelSet::EVERY, "marketing"),
                        "why",
                        "op".into(),
                        NOW,
                    )
                    .unwrap(),
                ),
            ],
        );
        let back = Controls::decode(7, &controls.encode()).unwrap();
        assert_eq!(back.version, 7);
        assert_eq!(back.halts, controls.halts);
        assert_eq!(back.mandatory, controls.mandatory);
        assert_eq!(back.consent, controls.consent);
    }

    #[test]
    fn stale_controls_never_let_a_notice_go() {
        let n = notice("acme", Channel::Postal, "recall", "");
        let controls = Controls::new(1, vec![Control::Mandatory(postal_recalls(NOW + 10))]);
        let overridden = controls.decide(Some(opt_out()), &n, None, NOW, false);
        assert_eq!(
            Controls::when_stale(overridden),
            Some(Answer::Suppressed(opt_out()))
        );
        assert_eq!(
            Controls::when_stale(controls.decide(None, &n, None, NOW, false)),
            None
        );
    }

    #[test]
    fn a_declaration_applies_only_to_its_topic_and_channels() {
        let controls = Controls::new(1, vec![Control::Mandatory(postal_recalls(NOW + 10))]);
        for n in [
            notice("acme", Channel::Email, "recall", ""),
            notice("acme", Channel::Postal, "marketing", ""),
            notice("other", Channel::Postal, "recall", ""),
        ] {
            assert_eq!(
                controls.decide(Some(opt_out()), &n, None, NOW, false),
                Answer::Suppressed(opt_out())
            );
        }
    }

    #[test]
    fn a_requirement_lets_only_consented_notices_go_an_opt_out_wins_a_declaration_needs_none() {
        let r = ConsentRequirement::new(
            ReceiptId::new(NOW),
            ("acme", ChannelSet::EVERY, "recall"),
            "why",
            "op".into(),
            NOW,
        );
        let declared = Control::Mandatory(postal_recalls(NOW + 10));
        let controls = Controls::new(1, vec![Control::Consent(r.unwrap()), declared]);
        let decide =
            |m: Option<Match>, n: &Notice, consented| controls.decide(m, n, None, NOW, consented);
        let email = notice("acme", Channel::Email, "recall", "");
        let got = decide(None, &email, false);
        assert!(matches!(got, Answer::NoConsent { .. }), "{got:?}");
        assert_eq!(Controls::when_stale(got.clone()), Some(got));
        assert_eq!(decide(None, &email, true), Answer::Send);
        for consented in [true, false] {
            assert_eq!(
                decide(Some(opt_out()), &email, consented),
                Answer::Suppressed(opt_out())
            );
        }
        // Another topic needs no consent; the postal recalls are declared mandatory.
        for n in [("marketing", Channel::Email), ("recall", Channel::Postal)] {
            let n = notice("acme", n.1, n.0, "");
            assert_eq!(decide(None, &n, false), Answer::Send);
        }
    }
}
