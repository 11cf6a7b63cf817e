//! Send windows: the hours of the day, on the recipient's wall clock, when a tenant's notices of a
//! channel (and topic) may go, e.g. the TCPA's 8 am to 9 pm for texts and calls, or an operator's
//! quiet hours. Outside its window a check answers "not now" with the next moment the notice may
//! go.
//!
//! Times of day are minutes after local midnight in an IANA time zone: the recipient's when the
//! check names one, else the window's own. The zone rules (DST included) come from the time zone
//! database compiled into the binary (`jiff`'s bundle), so no file is read and every replica
//! decides alike. A window that opens at a local time skipped by a DST change opens when the
//! clocks jump past it.

use super::{ChannelSet, Ended, Invalid, Millis, Notice, ReceiptId, required_text};
use jiff::{Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};

/// An IANA time zone, parsed once: its name (as given) and its rules.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    pub(crate) fn parse(field: &str, name: &str) -> Result<Zone, Invalid> {
        if name.is_empty() {
            return Err(Invalid::new(
                field,
                "is required: an IANA time zone, e.g. America/New_York",
            ));
        }
        let tz = TimeZone::get(name).map_err(|_| {
            Invalid::new(
                field,
                format!("{name:?} is not an IANA time zone (e.g. America/New_York)"),
            )
        })?;
        Ok(Zone {
            name: name.to_owned(),
            tz,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

impl Serialize for Zone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Zone, D::Error> {
        let name = String::deserialize(d)?;
        Zone::parse("zone", &name).map_err(serde::de::Error::custom)
    }
}

/// A local time of day, `HH:MM` (24-hour), as minutes after midnight.
pub(crate) fn parse_time_of_day(field: &str, text: &str) -> Result<u16, Invalid> {
    let bad = || {
        Invalid::new(
            field,
            format!("{text:?} is not a time of day HH:MM (00:00 to 23:59)"),
        )
    };
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// The minute of the local day in `tz` at `at`, from the zone's offset alone: what every check
/// under a window asks, where building the local date (and cloning the zone's rules for it) cost
/// more than the rest of the window's test.
fn minute_of_day(tz: &TimeZone, at: Timestamp) -> u16 {
    let local = at.as_second() + i64::from(tz.to_offset(at).seconds());
    (local.rem_euclid(86_400) / 60) as u16
}

pub(crate) fn time_of_day(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// When a tenant's notices of some channels (and a topic) may go, on the recipient's wall clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SendWindow {
    pub(crate) id: ReceiptId,
    pub(crate) tenant: String,
    /// One channel, or every channel.
    pub(crate) channels: ChannelSet,
    /// `""`: every topic.
    pub(crate) topic: String,
    /// Opens at this minute of the local day.
    pub(crate) start: u16,
    /// Closes at this minute (exclusive); before `start`, the window spans midnight.
    pub(crate) end: u16,
    /// The zone of a check that names none.
    pub(crate) zone: Zone,
    pub(crate) reason: String,
    pub(crate) actor: String,
    pub(crate) at: Millis,
    pub(crate) ended: Option<Ended>,
}

/// A window as asked for, before it has an id.
pub(crate) struct WindowParts<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) channels: ChannelSet,
    pub(crate) topic: &'a str,
    pub(crate) start: &'a str,
    pub(crate) end: &'a str,
    pub(crate) zone: &'a str,
    pub(crate) reason: &'a str,
}

impl SendWindow {
    pub(crate) fn new(
        id: ReceiptId,
        parts: WindowParts<'_>,
        actor: String,
        at: Millis,
    ) -> Result<SendWindow, Invalid> {
        super::names(parts.tenant, parts.topic, "")?;
        let start = parse_time_of_day("start", parts.start)?;
        let end = parse_time_of_day("end", parts.end)?;
        if start == end {
            return Err(Invalid::new(
                "end",
                "must differ from start (a window open all day is no window: remove it)",
            ));
        }
        let zone = Zone::parse("time_zone", parts.zone)?;
        let reason = required_text("reason", parts.reason)?;
        let channels = if parts.channels.is_empty() {
            ChannelSet::EVERY
        } else {
            parts.channels
        };
        Ok(SendWindow {
            id,
            tenant: parts.tenant.to_owned(),
            channels,
            topic: parts.topic.to_owned(),
            start,
            end,
            zone,
            reason,
            actor,
            at,
            ended: None,
        })
    }

    pub(crate) fn applies(&self, n: &Notice) -> bool {
        self.channels.contains(n.channel)
            && (self.topic.is_empty() || self.topic == n.topic)
            && self.ended.is_none()
            && self.tenant == n.tenant
    }

    /// Whether two windows are for the same notices (setting one replaces the other).
    pub(crate) fn same_place(&self, other: &SendWindow) -> bool {
        self.tenant == other.tenant && self.topic == other.topic && self.channels == other.channels
    }

    fn inside(&self, minute: u16) -> bool {
        if self.start < self.end {
            self.start <= minute && minute < self.end
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// `None` when a notice may go at `now` in `zone` (the recipient's; else the window's own);
    /// otherwise the next moment it may.
    pub(crate) fn not_before(&self, now: Millis, zone: Option<&Zone>) -> Option<Millis> {
        let tz = &zone.unwrap_or(&self.zone).tz;
        let at = Timestamp::from_millisecond(now).ok()?;
        if self.inside(minute_of_day(tz, at)) {
            return None;
        }
        let local = at.to_zoned_datetime(tz.clone());
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        // Outside, so before today's opening (or after it, with the window shut: tomorrow's).
        let date = if minute < self.start {
            local.date()
        } else {
            local.date().tomorrow().ok()?
        };
        let (h, m) = ((self.start / 60) as i8, (self.start % 60) as i8);
        let opening = date.at(h, m, 0, 0).to_zoned_datetime(tz.clone()).ok()?;
        if opening.hour() == h && opening.minute() == m {
            return Some(opening.timestamp().as_millisecond());
        }
        // The opening time was skipped by a DST change: the window opens when the clocks jump.
        let jump = tz.preceding(opening.timestamp()).next()?;
        Some(jump.timestamp().as_millisecond())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel;

    fn at(text: &str) -> Millis {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn window(start: &str, end: &str, zone: &str) -> SendWindow {
        SendWindow::new(
            ReceiptId::new(0),
            WindowParts {
                tenant: "acme",
                channels: ChannelSet::of([Channel::Sms]),
                topic: "",
                start,
                end,
                zone,
                reason: "TCPA",
            },
            "op".into(),
            0,
        )
        .unwrap()
    }

    #[test]
    fn inside_the_window_a_notice_may_go_and_outside_it_names_the_next_opening() {
        let w = window("08:00", "21:00", "America/New_York");
        // 12:00 in New York (EST, UTC-5).
        assert_eq!(w.not_before(at("2026-01-15T17:00:00Z"), None), None);
        // 21:00 is closed; opens 08:00 the next day.
        assert_eq!(
            w.not_before(at("2026-01-16T02:00:00Z"), None),
            Some(at("2026-01-16T13:00:00Z"))
        );
        // 07:59 opens the same day at 08:00.
        assert_eq!(
            w.not_before(at("2026-01-15T12:59:00Z"), None),
            Some(at("2026-01-15T13:00:00Z"))
        );
    }

    #[test]
    fn the_recipients_zone_wins_over_the_windows_own() {
        let w = window("08:00", "21:00", "America/New_York");
        let la = Zone::parse("time_zone", "America/Los_Angeles").unwrap();
        // 12:00 UTC: 07:00 in New York (shut), 04:00 in Los Angeles (shut, opens at 16:00 UTC).
        let now = at("2026-01-15T12:00:00Z");
        assert_eq!(
            w.not_before(now, Some(&la)),
            Some(at("2026-01-15T16:00:00Z"))
        );
        // 20:30 in New York (open) is 17:30 in Los Angeles (open).
        assert_eq!(w.not_before(at("2026-01-16T01:30:00Z"), Some(&la)), None);
    }

    #[test]
    fn dst_changes_move_the_opening_in_utc() {
        let w = window("08:00", "21:00", "America/New_York");
        // Spring forward on 2026-03-08: 07:30 EDT is 11:30 UTC; it opens at 08:00 EDT = 12:00 UTC
        // (the day before, 08:00 EST was 13:00 UTC).
        assert_eq!(
            w.not_before(at("2026-03-08T11:30:00Z"), None),
            Some(at("2026-03-08T12:00:00Z"))
        );
        assert_eq!(
            w.not_before(at("2026-03-07T12:30:00Z"), None),
            Some(at("2026-03-07T13:00:00Z"))
        );
        // Fall back on 2026-11-01: 20:59 EST (01:59 UTC next day) is open, 21:00 EST is shut.
        assert_eq!(w.not_before(at("2026-11-02T01:59:00Z"), None), None);
        assert_eq!(
            w.not_before(at("2026-11-02T02:00:00Z"), None),
            Some(at("2026-11-02T13:00:00Z"))
        );
    }

    #[test]
    fn an_opening_skipped_by_dst_opens_when_the_clocks_jump() {
        // 02:30 does not exist in New York on 2026-03-08; clocks jump from 02:00 EST to 03:00 EDT
        // at 07:00 UTC.
        let w = window("02:30", "05:00", "America/New_York");
        assert_eq!(
            w.not_before(at("2026-03-08T06:00:00Z"), None),
            Some(at("2026-03-08T07:00:00Z"))
        );
    }

    #[test]
    fn the_minute_of_the_day_is_the_local_clock_s() {
        // Against jiff's own local date, every 7 minutes over two years, in zones with DST
        // either way, offsets of whole hours, half and quarter hours, and a date line jump.
        let zones = [
            "America/New_York",
            "Europe/London",
            "Australia/Lord_Howe",
            "Asia/Kathmandu",
            "Pacific/Apia",
            "UTC",
        ];
        for name in zones {
            let tz = TimeZone::get(name).unwrap();
            let mut at = at("2025-12-25T00:00:00Z");
            while at < self::at("2027-12-25T00:00:00Z") {
                let t = Timestamp::from_millisecond(at).unwrap();
                let local = t.to_zoned_datetime(tz.clone());
                let want = local.hour() as u16 * 60 + local.minute() as u16;
                assert_eq!(minute_of_day(&tz, t), want, "{name} at {t}");
                at += 7 * 60_000;
            }
        }
        // Before 1970, where the division must round down.
        let t = Timestamp::from_millisecond(at("1969-12-31T23:59:30Z")).unwrap();
        assert_eq!(minute_of_day(&TimeZone::UTC, t), 23 * 60 + 59);
    }

    #[test]
    fn a_window_across_midnight() {
        let w = window("22:00", "06:00", "Europe/London");
        assert_eq!(w.not_before(at("2026-01-15T23:00:00Z"), None), None);
        assert_eq!(w.not_before(at("2026-01-15T05:59:00Z"), None), None);
        assert_eq!(
            w.not_before(at("2026-01-15T06:00:00Z"), None),
            Some(at("2026-01-15T22:00:00Z"))
        );
    }

    #[test]
    fn bad_windows_name_their_field() {
        let new = |start, end, zone| {
            SendWindow::new(
                ReceiptId::new(0),
                WindowParts {
                    tenant: "acme",
                    channels: ChannelSet::EVERY,
                    topic: "",
                    start,
                    end,
                    zone,
                    reason: "r",
                },
                "op".into(),
                0,
            )
        };
        assert_eq!(new("8:00", "21:00", "UTC").unwrap_err().field, "start");
        assert_eq!(new("08:00", "24:00", "UTC").unwrap_err().field, "end");
        assert_eq!(new("08:00", "08:00", "UTC").unwrap_err().field, "end");
        assert_eq!(
            new("08:00", "21:00", "Mars/Olympus").unwrap_err().field,
            "time_zone"
        );
        assert_eq!(new("08:00", "21:00", "").unwrap_err().field, "time_zone");
    }
}
