use super::*;

fn at(zoned: &str) -> Millis {
    zoned
        .parse::<jiff::ZonedDateTime>()
        .unwrap()
        .timestamp()
        .as_millisecond()
}

fn rule(window: Window, holidays: &[&str]) -> Rule {
    Rule {
        regime: Regime::CanSpam,
        window,
        holidays: holidays.iter().map(|d| d.parse().unwrap()).collect(),
        channels: vec![],
        source: None,
    }
}

#[test]
fn business_days_skip_the_weekend() {
    let ten = rule(Window::BusinessDays(10), &[]);
    // Monday 2026-11-02 → ten business days later is Monday 2026-11-16, end of day.
    let due = ten.due_at(at("2026-11-02T09:00[UTC]"), &TimeZone::UTC);
    assert_eq!(due, at("2026-11-17T00:00[UTC]") - 1);
    // Received on a Saturday: the count starts on Monday.
    let one = rule(Window::BusinessDays(1), &[]);
    let due = one.due_at(at("2026-11-07T23:00[UTC]"), &TimeZone::UTC);
    assert_eq!(due, at("2026-11-10T00:00[UTC]") - 1);
}

#[test]
fn a_holiday_on_a_friday_moves_the_deadline_over_the_weekend() {
    // Friday 2026-07-03 is the observed Independence Day.
    let one = rule(Window::BusinessDays(1), &["2026-07-03"]);
    let due = one.due_at(at("2026-07-02T15:00[UTC]"), &TimeZone::UTC);
    assert_eq!(due, at("2026-07-07T00:00[UTC]") - 1, "Monday the 6th");
    let without = rule(Window::BusinessDays(1), &[]);
    let due = without.due_at(at("2026-07-02T15:00[UTC]"), &TimeZone::UTC);
    assert_eq!(due, at("2026-07-04T00:00[UTC]") - 1, "Friday the 3rd");
}

#[test]
fn a_deadline_spans_the_year_end_and_its_holidays() {
    let ten = rule(Window::BusinessDays(10), &["2026-12-25", "2027-01-01"]);
    // Friday 2026-12-18: 21, 22, 23, 24, (25), 28, 29, 30, 31, (1), 4, 5.
    let due = ten.due_at(at("2026-12-18T12:00[UTC]"), &TimeZone::UTC);
    assert_eq!(due, at("2027-01-06T00:00[UTC]") - 1);
}

#[test]
fn business_days_are_counted_in_the_rules_zone() {
    let one = rule(Window::BusinessDays(1), &[]);
    let ny = TimeZone::get("America/New_York").unwrap();
    // 02:00 UTC on Saturday is still Friday evening in New York: Monday ends the window.
    let due = one.due_at(at("2026-11-07T02:00[UTC]"), &ny);
    assert_eq!(due, at("2026-11-10T00:00[America/New_York]") - 1);
}

#[test]
fn an_hours_window_runs_from_receipt() {
    let two_days = rule(Window::Hours(48), &[]);
    let received = at("2026-11-06T18:30[UTC]");
    assert_eq!(
        two_days.due_at(received, &TimeZone::UTC),
        received + 48 * 3_600_000
    );
}

#[test]
fn a_deadline_is_met_missed_or_pending() {
    let r = Regime::Tcpa;
    assert_eq!(
        evaluate(r, 100, Some(100), 500, 10).state,
        DeadlineState::Met
    );
    assert_eq!(
        evaluate(r, 100, Some(101), 500, 10).state,
        DeadlineState::Missed
    );
    assert_eq!(evaluate(r, 100, None, 101, 10).state, DeadlineState::Missed);
    let pending = evaluate(r, 100, None, 50, 10);
    assert_eq!(
        (pending.state, pending.near),
        (DeadlineState::Pending, false)
    );
    assert!(evaluate(r, 100, None, 95, 10).near);
}

#[test]
fn a_file_changes_the_defaults() {
    let rules = DeadlineRules::parse(
        "zone = \"America/New_York\"\nnear_hours = 6\n\
         [[regime]]\nname = \"tcpa\"\nbusiness_days = 5\nholidays = [\"2026-12-25\"]\n\
         [[regime]]\nname = \"ccpa\"\nenabled = false\n",
    )
    .unwrap();
    assert_eq!(rules.near_margin, 6 * 3_600_000);
    let tcpa = rules
        .rules
        .iter()
        .find(|r| r.regime == Regime::Tcpa)
        .unwrap();
    assert_eq!(tcpa.window, Window::BusinessDays(5));
    assert_eq!(tcpa.holidays.len(), 1);
    assert!(rules.rules.iter().all(|r| r.regime != Regime::Ccpa));
    for (text, want) in [
        ("[[regime]]\nname = \"gdpr\"", "unknown regime"),
        (
            "[[regime]]\nname = \"tcpa\"\nholidays = [\"25/12\"]",
            "YYYY-MM-DD",
        ),
        (
            "[[regime]]\nname = \"tcpa\"\nhours = 1\nbusiness_days = 1",
            "not both",
        ),
        ("zone = \"Mars/Olympus\"", "zone"),
    ] {
        let err = DeadlineRules::parse(text).unwrap_err();
        assert!(err.contains(want), "{text}: {err}");
    }
}
