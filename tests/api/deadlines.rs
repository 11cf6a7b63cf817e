//! Legal clocks in a listing: each record of a person's own carries one deadline per regime that
//! applies to it, computed across weekends and the configured holidays, met or missed by when it
//! took effect; a system's suppression carries none.

use crate::helpers::*;
use crate::imports::{at, import, row};
use suppressd::{
    domain::Clock,
    proto::{self, Channel, DeadlineState, Durability, Reason, Regime, Source},
};

/// Friday 2026-12-18 12:00 UTC.
const START_MS: i64 = 1_797_595_200_000;
const DAY_MS: i64 = 86_400_000;

fn ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// Midnight UTC at the start of `y-m-d`, in ms.
fn midnight(date: &str) -> i64 {
    format!("{date}T00:00:00Z")
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond()
}

async fn listed(app: &mut TestApp, address: &str) -> Vec<proto::RecordHistory> {
    app.client
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: Some(email(address)),
            tenant: "acme".into(),
            token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .records
}

fn deadline(h: &proto::RecordHistory, regime: Regime) -> Option<(i64, DeadlineState)> {
    h.deadlines
        .iter()
        .find(|d| d.regime == regime as i32)
        .map(|d| (ms(d.due_at.as_ref().unwrap()), d.state()))
}

async fn deadlines_cross_weekends_and_holidays_and_say_whether_they_were_met(backend: Backend) {
    assert_eq!(
        jiff::Timestamp::from_millisecond(START_MS)
            .unwrap()
            .to_string(),
        "2026-12-18T12:00:00Z"
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("deadlines.toml");
    std::fs::write(
        &rules,
        "[[regime]]\nname = \"can_spam\"\nholidays = [\"2026-12-25\", \"2027-01-01\"]\n",
    )
    .unwrap();
    let mut app = spawn_app_with(backend, Clock::manual(START_MS), |s| {
        s.deadlines.deadlines_file = Some(rules);
    })
    .await;

    let mut one_click = opt_out_request(
        email("clock@example.com"),
        scope("acme", Channel::Email, "news", ""),
    );
    one_click.source = Source::OneClick as i32;
    one_click.durability = Durability::Durable as i32;
    app.opt_out(one_click).await;
    let records = listed(&mut app, "clock@example.com").await;
    let [record] = records.as_slice() else {
        panic!("{records:?}")
    };
    // Ten business days from Friday the 18th, without the 25th and the 1st: Tuesday 5 January.
    assert_eq!(
        deadline(record, Regime::CanSpam),
        Some((midnight("2027-01-06") - 1, DeadlineState::Met))
    );
    // CCPA lists no holidays: fifteen business days end on Friday 8 January.
    assert_eq!(
        deadline(record, Regime::Ccpa),
        Some((midnight("2027-01-09") - 1, DeadlineState::Met))
    );
    assert_eq!(
        deadline(record, Regime::OneClick),
        Some((START_MS + 2 * DAY_MS, DeadlineState::Met))
    );
    assert_eq!(
        deadline(record, Regime::Tcpa),
        None,
        "an email is not a call"
    );

    // Received forty days ago, in force only now (an import of an old list): missed.
    let mut old = row(1, "late@example.com", scope("acme", Channel::Sms, "", ""));
    old.received_at = at((START_MS - 40 * DAY_MS) / 1000);
    import(&mut app.client, vec![old]).await;
    let records = listed(&mut app, "late@example.com").await;
    assert_eq!(
        deadline(&records[0], Regime::Tcpa).map(|d| d.1),
        Some(DeadlineState::Missed)
    );
    assert_eq!(deadline(&records[0], Regime::CanSpam), None);

    // A bounce answers nobody's request: no clock.
    let mut bounce = opt_out_request(
        email("bounced@example.com"),
        scope("acme", Channel::Email, "", ""),
    );
    bounce.reason = Reason::Bounce as i32;
    bounce.source = Source::Api as i32;
    app.opt_out(bounce).await;
    let records = listed(&mut app, "bounced@example.com").await;
    assert!(records[0].deadlines.is_empty());
}

on_both_stores!(deadlines_cross_weekends_and_holidays_and_say_whether_they_were_met);
