//! Send windows (issue 19, item 5), through the generated client against the real server with a
//! fixed test clock: inside a window a notice may go; outside it the check answers suppressed with
//! the next opening, on the recipient's wall clock when the check names a time zone, across a DST
//! change; mandatory notices follow their declaration's rule; setting a window replaces the one
//! for the same place; every change is audited and listed; bad input stores nothing.

use super::*;

/// 2026-03-07 12:30 UTC: 07:30 EST in New York, the day before the clocks spring forward.
const SATURDAY_0730_EST: i64 = 1_772_886_600_000;
const MINUTE: i64 = 60_000;

pub fn window_request(
    channel: Channel,
    start: &str,
    end: &str,
    zone: &str,
) -> proto::SetSendWindowRequest {
    proto::SetSendWindowRequest {
        tenant: "acme".into(),
        channel: channel as i32,
        topic: String::new(),
        start: start.into(),
        end: end.into(),
        time_zone: zone.into(),
        reason: "TCPA 47 CFR 64.1200(c)(1)".into(),
    }
}

async fn check_at(
    app: &mut TestApp,
    channel: Channel,
    time_zone: &str,
) -> proto::CheckSuppressedResponse {
    app.client
        .check_suppressed(proto::CheckSuppressedRequest {
            recipient: Some(phone("+12025550143")),
            scope: Some(scope("acme", channel, "marketing", "")),
            time_zone: time_zone.into(),
            purpose: 0,
        })
        .await
        .unwrap()
        .into_inner()
}

fn not_before(answer: &proto::CheckSuppressedResponse) -> Option<i64> {
    assert_eq!(answer.suppressed, answer.not_before.is_some(), "{answer:?}");
    answer.not_before.map(|t| t.seconds * 1000)
}

async fn a_send_window_says_not_now_until_it_opens_on_the_recipients_clock(backend: Backend) {
    let clock = Clock::manual(SATURDAY_0730_EST);
    let mut app = spawn_app_with(backend, clock.clone(), |_| {}).await;
    let window = app
        .client
        .set_send_window(window_request(
            Channel::Sms,
            "08:00",
            "21:00",
            "America/New_York",
        ))
        .await
        .unwrap()
        .into_inner();
    let propagation = window.propagation.clone().unwrap();
    assert_eq!(
        propagation.outcome,
        proto::PropagationOutcome::Confirmed as i32
    );
    assert_eq!(
        (window.start.as_str(), window.end.as_str()),
        ("08:00", "21:00")
    );

    // 07:30 in New York: not now; it opens at 08:00 EST = 13:00 UTC.
    let answer = check_at(&mut app, Channel::Sms, "").await;
    assert_eq!(not_before(&answer), Some(SATURDAY_0730_EST + 30 * MINUTE));
    assert_eq!(answer.window.as_ref().unwrap().window_id, window.window_id);
    assert!(answer.halt.is_none() && answer.matched.is_none());
    // Other channels are not windowed.
    assert!(!check_at(&mut app, Channel::Email, "").await.suppressed);
    // The recipient in Chicago (06:30 CST): the window opens at 08:00 CST = 14:00 UTC.
    let answer = check_at(&mut app, Channel::Sms, "America/Chicago").await;
    assert_eq!(not_before(&answer), Some(SATURDAY_0730_EST + 90 * MINUTE));
    // The recipient in London (12:30 GMT): open.
    assert!(
        !check_at(&mut app, Channel::Sms, "Europe/London")
            .await
            .suppressed
    );

    // 08:00 in New York: open. 21:00: shut until 08:00 the next day, which is after the clocks
    // sprang forward: 08:00 EDT = 12:00 UTC, 23 hours later, not 24.
    clock.advance(30 * MINUTE);
    assert!(!check_at(&mut app, Channel::Sms, "").await.suppressed);
    clock.advance(13 * 60 * MINUTE);
    let at_21 = SATURDAY_0730_EST + 30 * MINUTE + 13 * 60 * MINUTE;
    let answer = check_at(&mut app, Channel::Sms, "").await;
    assert_eq!(not_before(&answer), Some(at_21 + 10 * 60 * MINUTE));

    // A batch answers each check by its own time zone.
    let batch = app
        .client
        .check_suppressed_batch(proto::CheckSuppressedBatchRequest {
            checks: ["", "America/Los_Angeles"]
                .map(|zone| proto::CheckSuppressedRequest {
                    recipient: Some(phone("+12025550143")),
                    scope: Some(scope("acme", Channel::Sms, "marketing", "")),
                    time_zone: zone.into(),
                    purpose: 0,
                })
                .to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    // 21:00 in New York (shut), 18:00 in Los Angeles (open).
    assert!(batch.results[0].suppressed && !batch.results[1].suppressed);
}

async fn mandatory_notices_follow_their_declarations_rule_and_opt_outs_still_win(backend: Backend) {
    let clock = Clock::manual(SATURDAY_0730_EST);
    let mut app = spawn_app_with(backend, clock.clone(), |_| {}).await;
    app.client
        .set_send_window(window_request(
            Channel::Unspecified,
            "08:00",
            "21:00",
            "America/New_York",
        ))
        .await
        .unwrap();
    let letter = || scope("acme", Channel::Postal, "recall", "");
    let waits = |app: &mut TestApp, who: &str| {
        let req = proto::CheckSuppressedRequest {
            recipient: Some(email(who)),
            scope: Some(letter()),
            time_zone: String::new(),
            purpose: 0,
        };
        let mut client = app.client.clone();
        async move { client.check_suppressed(req).await.unwrap().into_inner() }
    };
    // A person opted out: a permanent "no" beats "not now".
    app.opt_out(opt_out_request(
        email("out@example.com"),
        scope("acme", Channel::Unspecified, "", ""),
    ))
    .await;
    let answer = waits(&mut app, "out@example.com").await;
    assert!(answer.suppressed && answer.not_before.is_none() && answer.matched.is_some());
    // A declaration that keeps to the windows: its override waits for the window too.
    let mut declared = declaration("recall", &[Channel::Postal], SATURDAY_0730_EST + 48 * HOUR);
    let d = app
        .client
        .declare_mandatory(declared.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!d.ignore_send_windows);
    let answer = waits(&mut app, "out@example.com").await;
    assert!(
        answer.suppressed && answer.not_before.is_some(),
        "{answer:?}"
    );
    app.client
        .revoke_mandatory(revoke_request(&d.declaration_id, "replaced"))
        .await
        .unwrap();
    // One that ignores them: the override goes out at 07:30, and so does a notice to a person who
    // never opted out.
    declared.ignore_send_windows = true;
    let d = app
        .client
        .declare_mandatory(declared)
        .await
        .unwrap()
        .into_inner();
    assert!(d.ignore_send_windows);
    let answer = waits(&mut app, "out@example.com").await;
    assert!(
        !answer.suppressed && answer.mandatory.is_some(),
        "{answer:?}"
    );
    assert!(!waits(&mut app, "in@example.com").await.suppressed);
}

async fn setting_a_window_replaces_the_one_for_the_same_place_and_each_change_is_audited(
    backend: Backend,
) {
    let clock = Clock::manual(SATURDAY_0730_EST);
    let mut app = spawn_app_with(backend, clock.clone(), |_| {}).await;
    let first = app
        .client
        .set_send_window(window_request(
            Channel::Sms,
            "08:00",
            "21:00",
            "America/New_York",
        ))
        .await
        .unwrap()
        .into_inner();
    // Quiet hours overnight instead: open 22:00 to 07:00.
    let second = app
        .client
        .set_send_window(window_request(
            Channel::Sms,
            "22:00",
            "07:00",
            "America/New_York",
        ))
        .await
        .unwrap()
        .into_inner();
    let listed = all_controls(&mut app.client, "acme").await;
    let in_force: Vec<_> = listed
        .windows
        .iter()
        .filter(|w| w.removed_at.is_none())
        .collect();
    assert_eq!(in_force.len(), 1);
    assert_eq!(in_force[0].window_id, second.window_id);
    let replaced = listed
        .windows
        .iter()
        .find(|w| w.window_id == first.window_id)
        .unwrap();
    assert!(
        replaced.remove_reason.contains(&second.window_id),
        "{replaced:?}"
    );
    // 07:30 is outside 22:00–07:00: it opens at 22:00 EST = 03:00 UTC the next day.
    let answer = check_at(&mut app, Channel::Sms, "").await;
    assert_eq!(
        not_before(&answer),
        Some(SATURDAY_0730_EST + (14 * 60 + 30) * MINUTE)
    );

    let removed = app
        .client
        .remove_send_window(proto::RemoveSendWindowRequest {
            window_id: second.window_id.clone(),
            reason: "campaign over".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.removed_at.is_some() && removed.propagation.is_some());
    assert!(!check_at(&mut app, Channel::Sms, "").await.suppressed);
    let again = app
        .client
        .remove_send_window(proto::RemoveSendWindowRequest {
            window_id: second.window_id.clone(),
            reason: "twice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    let rows = app.store().await.audit_rows(-1, 100).await.unwrap();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.action.as_str(), r.receipt_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("set_send_window", first.window_id.as_str()),
            ("set_send_window", second.window_id.as_str()),
            ("remove_send_window", second.window_id.as_str()),
        ]
    );
    assert!(
        rows[1]
            .detail
            .as_deref()
            .unwrap()
            .contains(&first.window_id)
    );
}

on_both_stores!(
    a_send_window_says_not_now_until_it_opens_on_the_recipients_clock,
    mandatory_notices_follow_their_declarations_rule_and_opt_outs_still_win,
    setting_a_window_replaces_the_one_for_the_same_place_and_each_change_is_audited,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_windows_and_time_zones_are_refused_by_field_and_store_nothing() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let with = |f: fn(&mut proto::SetSendWindowRequest)| {
        let mut req = window_request(Channel::Sms, "08:00", "21:00", "America/New_York");
        f(&mut req);
        req
    };
    let cases = [
        (with(|r| r.start = "8am".into()), "start"),
        (with(|r| r.end = "24:00".into()), "end"),
        (with(|r| r.end = "08:00".into()), "end"),
        (with(|r| r.time_zone.clear()), "time_zone"),
        (
            with(|r| r.time_zone = "Mars/Olympus_Mons".into()),
            "time_zone",
        ),
        (with(|r| r.reason = " ".into()), "reason"),
        (with(|r| r.topic = "a b".into()), "topic"),
        (with(|r| r.channel = 99), "channel"),
    ];
    for (req, field) in cases {
        let status = app.client.set_send_window(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    let mut check_client = app.client_with_key(Some(CHECK_KEY)).await;
    let refused = check_client
        .set_send_window(window_request(Channel::Sms, "08:00", "21:00", "UTC"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let status = app
        .client
        .remove_send_window(proto::RemoveSendWindowRequest {
            window_id: "nope".into(),
            reason: "why".into(),
        })
        .await
        .unwrap_err();
    assert!(status.message().starts_with("window_id"), "{status:?}");
    // A check naming a zone that does not exist is refused, in a batch by its index.
    let status = app
        .client
        .check_suppressed_batch(proto::CheckSuppressedBatchRequest {
            checks: vec![proto::CheckSuppressedRequest {
                recipient: Some(email("a@example.com")),
                scope: Some(scope("acme", Channel::Sms, "marketing", "")),
                time_zone: "Nowhere/Land".into(),
                purpose: 0,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("checks[0].time_zone"),
        "{status:?}"
    );

    let listed = all_controls(&mut app.client, "acme").await;
    assert!(listed.windows.is_empty());
    assert_eq!(app.store().await.audit_size().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_lists_and_removes_windows() {
    let app = spawn_app(Backend::Sqlite).await;
    let server = app.addr.to_string();
    let out = suppressd(&[
        "window",
        "set",
        "--server",
        &server,
        "--tenant",
        "acme",
        "--channel",
        "sms",
        "--start",
        "08:00",
        "--end",
        "21:00",
        "--time-zone",
        "America/New_York",
        "--reason",
        "TCPA",
        "--json",
    ])
    .await;
    let window: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = window["window_id"].as_str().unwrap().to_owned();
    assert_eq!(window["channel"], "sms");
    assert!(
        window["propagation"]
            .as_str()
            .unwrap()
            .starts_with("confirmed by"),
        "{out}"
    );
    let out = suppressd(&["controls", "list", "--server", &server, "--tenant", "acme"]).await;
    assert!(
        out.contains(&id) && out.contains("time_zone: America/New_York"),
        "{out}"
    );
    let out = suppressd(&[
        "window", "remove", &id, "--server", &server, "--reason", "done",
    ])
    .await;
    assert!(out.contains("remove_reason: done"), "{out}");
}
