//! Legal clocks: by when each regime wants an opt-out honoured, and whether it was. Pure: the rules
//! come from configuration ([`DeadlineRules::parse`] reads the text, the caller reads the file), a
//! deadline is computed from when the opt-out was received, and [`evaluate`] judges it against when
//! it was honoured (the record's effective time today; a destination's delivery time once
//! destinations exist) and "now".
//!
//! Business days are Monday to Friday in the rules' time zone, less the regime's listed holidays; a
//! window of N business days ends at the end of the Nth business day after the day of receipt. A
//! window in hours (the mailbox providers' one-click rule) runs from the instant of receipt.

use super::{Channel, Millis, Reason, Source, Suppression};
use jiff::{Timestamp, civil::Date, tz::TimeZone};
use serde::Deserialize;
use std::collections::BTreeSet;

/// A regime whose clock the service keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Regime {
    /// CAN-SPAM (commercial email): 10 business days.
    CanSpam,
    /// TCPA (calls and texts; the FCC's 2024 revocation rule): 10 business days.
    Tcpa,
    /// CCPA (opt-out of sale or sharing): 15 business days.
    Ccpa,
    /// Gmail and Yahoo bulk-sender rules (RFC 8058 one-click unsubscribe): 2 days.
    OneClick,
}

impl Regime {
    pub const ALL: [Regime; 4] = [
        Regime::CanSpam,
        Regime::Tcpa,
        Regime::Ccpa,
        Regime::OneClick,
    ];

    /// The name in configuration and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Regime::CanSpam => "can_spam",
            Regime::Tcpa => "tcpa",
            Regime::Ccpa => "ccpa",
            Regime::OneClick => "one_click",
        }
    }

    fn parse(name: &str) -> Option<Regime> {
        Regime::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// How long a regime allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    BusinessDays(u32),
    Hours(u32),
}

/// One regime's rule: its window, its holidays, and which opt-outs it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub regime: Regime,
    pub window: Window,
    pub holidays: BTreeSet<Date>,
    /// The channels it applies to (an opt-out of every channel is under every rule).
    pub channels: Vec<Channel>,
    /// Only opt-outs that arrived by this source (the one-click rule: `ONE_CLICK`).
    pub source: Option<Source>,
}

impl Rule {
    fn applies_to(&self, s: &Suppression) -> bool {
        let channel = s
            .scope
            .channel
            .is_none_or(|c| self.channels.is_empty() || self.channels.contains(&c));
        channel && self.source.is_none_or(|src| src == s.source)
    }

    fn is_business_day(&self, d: Date) -> bool {
        use jiff::civil::Weekday::{Saturday, Sunday};
        !matches!(d.weekday(), Saturday | Sunday) && !self.holidays.contains(&d)
    }

    /// The last millisecond by which an opt-out received at `received` must be honoured.
    pub fn due_at(&self, received: Millis, zone: &TimeZone) -> Millis {
        match self.window {
            Window::Hours(h) => received + i64::from(h) * 3_600_000,
            Window::BusinessDays(n) => {
                let start = Timestamp::from_millisecond(received).unwrap_or(Timestamp::UNIX_EPOCH);
                let mut day = start.to_zoned_datetime(zone.clone()).date();
                let mut counted = 0;
                while counted < n {
                    day = day.tomorrow().expect("within the calendar");
                    if self.is_business_day(day) {
                        counted += 1;
                    }
                }
                let next = day.tomorrow().expect("within the calendar");
                let end = next
                    .to_zoned_datetime(zone.clone())
                    .map(|z| z.timestamp().as_millisecond())
                    .unwrap_or(Millis::MAX);
                end - 1
            }
        }
    }
}

/// Where a deadline stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineState {
    /// Honoured by the due time.
    Met,
    /// Honoured after it, or not yet and the time has passed.
    Missed,
    /// Not yet honoured; still time.
    Pending,
}

/// One regime's deadline for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub regime: Regime,
    pub due_at: Millis,
    pub state: DeadlineState,
    /// Pending, and due within the rules' "near" margin.
    pub near: bool,
}

/// Judges a deadline: `honoured` is when the opt-out took effect where it counts (checks today, a
/// destination after delivery), `None` if it has not yet.
pub fn evaluate(
    regime: Regime,
    due_at: Millis,
    honoured: Option<Millis>,
    now: Millis,
    near_margin: Millis,
) -> Deadline {
    let state = match honoured {
        Some(at) if at <= due_at => DeadlineState::Met,
        Some(_) => DeadlineState::Missed,
        None if now > due_at => DeadlineState::Missed,
        None => DeadlineState::Pending,
    };
    Deadline {
        regime,
        due_at,
        state,
        near: state == DeadlineState::Pending && due_at - now <= near_margin,
    }
}

/// Every regime's rule, the time zone business days are counted in, and what "near" means.
#[derive(Debug, Clone)]
pub struct DeadlineRules {
    pub rules: Vec<Rule>,
    pub zone: TimeZone,
    /// A pending deadline this close is "near" (the metric's `state="near"`).
    pub near_margin: Millis,
}

impl Default for DeadlineRules {
    /// The statutory windows, UTC, no holidays, near = within a day.
    fn default() -> Self {
        let rule = |regime, window, channels: &[Channel], source| Rule {
            regime,
            window,
            holidays: BTreeSet::new(),
            channels: channels.to_vec(),
            source,
        };
        DeadlineRules {
            rules: vec![
                rule(
                    Regime::CanSpam,
                    Window::BusinessDays(10),
                    &[Channel::Email],
                    None,
                ),
                rule(
                    Regime::Tcpa,
                    Window::BusinessDays(10),
                    &[Channel::Sms, Channel::Voice],
                    None,
                ),
                rule(Regime::Ccpa, Window::BusinessDays(15), &[], None),
                rule(
                    Regime::OneClick,
                    Window::Hours(48),
                    &[Channel::Email],
                    Some(Source::OneClick),
                ),
            ],
            zone: TimeZone::UTC,
            near_margin: 24 * 3_600_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    zone: Option<String>,
    near_hours: Option<u32>,
    #[serde(default)]
    regime: Vec<RegimeEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegimeEntry {
    name: String,
    #[serde(default = "yes")]
    enabled: bool,
    business_days: Option<u32>,
    hours: Option<u32>,
    channels: Option<Vec<String>>,
    #[serde(default)]
    holidays: Vec<String>,
}

fn yes() -> bool {
    true
}

impl DeadlineRules {
    /// The rules of a deadlines file (TOML): the defaults, changed by what it lists. Example:
    ///
    /// ```toml
    /// zone = "America/New_York"     # business days are counted here (default UTC)
    /// near_hours = 24               # a pending deadline this close counts as near
    ///
    /// [[regime]]
    /// name = "can_spam"             # can_spam | tcpa | ccpa | one_click
    /// business_days = 10            # or hours = 48
    /// channels = ["email"]          # email | sms | push | voice | postal; [] = every channel
    /// holidays = ["2026-12-25", "2027-01-01"]
    /// # enabled = false             # keeps no clock for this regime
    /// ```
    pub fn parse(text: &str) -> Result<DeadlineRules, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut rules = DeadlineRules::default();
        if let Some(zone) = file.zone {
            rules.zone = TimeZone::get(&zone).map_err(|e| format!("zone {zone:?}: {e}"))?;
        }
        if let Some(h) = file.near_hours {
            rules.near_margin = i64::from(h) * 3_600_000;
        }
        let mut seen = BTreeSet::new();
        for entry in file.regime {
            let regime = Regime::parse(&entry.name).ok_or_else(|| {
                format!(
                    "unknown regime {:?} (can_spam, tcpa, ccpa or one_click)",
                    entry.name
                )
            })?;
            if !seen.insert(regime) {
                return Err(format!("regime {:?} is listed twice", entry.name));
            }
            let name = &entry.name;
            let at = rules
                .rules
                .iter()
                .position(|r| r.regime == regime)
                .expect("every regime has a default");
            if !entry.enabled {
                rules.rules.remove(at);
                continue;
            }
            let rule = &mut rules.rules[at];
            rule.window = match (entry.business_days, entry.hours) {
                (Some(_), Some(_)) => {
                    return Err(format!("regime {name:?}: business_days or hours, not both"));
                }
                (Some(0), _) | (_, Some(0)) => {
                    return Err(format!("regime {name:?}: a window of zero"));
                }
                (Some(d), None) => Window::BusinessDays(d),
                (None, Some(h)) => Window::Hours(h),
                (None, None) => rule.window,
            };
            if let Some(channels) = entry.channels {
                rule.channels = channels
                    .iter()
                    .map(|c| {
                        Channel::parse_name(c)
                            .ok_or_else(|| format!("regime {name:?}: unknown channel {c:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            for day in entry.holidays {
                let date: Date = day
                    .parse()
                    .map_err(|_| format!("regime {name:?}: holiday {day:?} is not YYYY-MM-DD"))?;
                rule.holidays.insert(date);
            }
        }
        Ok(rules)
    }

    /// The deadlines of a record, judged against `honoured`. A system's suppression (a bounce, an
    /// operator's) answers no one's request and has none.
    pub fn deadlines(
        &self,
        s: &Suppression,
        honoured: Option<Millis>,
        now: Millis,
    ) -> Vec<Deadline> {
        if !s.reason.is_persons_own() || s.reason == Reason::Legal {
            return Vec::new();
        }
        self.rules
            .iter()
            .filter(|r| r.applies_to(s))
            .map(|r| {
                let due = r.due_at(s.received_at, &self.zone);
                evaluate(r.regime, due, honoured, now, self.near_margin)
            })
            .collect()
    }

    /// The shortest time any rule allows: a record honoured sooner after receipt met every
    /// deadline (what lets the metric's query skip most records).
    pub fn shortest_window(&self) -> Millis {
        self.rules
            .iter()
            .map(|r| match r.window {
                Window::Hours(h) => i64::from(h) * 3_600_000,
                // The day of receipt may end a moment after it: count one day less.
                Window::BusinessDays(n) => i64::from(n.saturating_sub(1)) * 86_400_000,
            })
            .min()
            .unwrap_or(Millis::MAX)
    }

    /// The longest a deadline can lie after receipt, for how far back the metric looks: every
    /// window in calendar days, weekends and holidays included, with a margin.
    pub fn longest_reach(&self) -> Millis {
        self.rules
            .iter()
            .map(|r| match r.window {
                Window::Hours(h) => i64::from(h) * 3_600_000,
                Window::BusinessDays(n) => {
                    (i64::from(n) * 7 / 5 + r.holidays.len() as i64 + 3) * 86_400_000
                }
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
