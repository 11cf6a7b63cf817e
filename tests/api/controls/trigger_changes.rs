//! Halt triggers as changes to the controls (issue 19 item 3): bad input for each new RPC is
//! refused, naming the field, and stores nothing; setting one replaces the trigger of the same
//! campaign, and every change is listed and audited; the CLI sets, lists and removes them. What
//! makes them fire: `triggers`.

use super::{triggers::trigger_request, *};

async fn bad_triggers_are_refused_by_field_and_store_nothing(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let with = |f: fn(&mut proto::SetHaltTriggerRequest)| {
        let mut req = trigger_request("RC-1");
        req.max_opt_outs = 10;
        f(&mut req);
        req
    };
    let cases = [
        (with(|r| r.tenant = "a b".into()), "tenant"),
        (with(|r| r.campaign = "RC 1".into()), "campaign"),
        (
            with(|r| {
                r.topic.clear();
                r.campaign.clear();
            }),
            "topic",
        ),
        (with(|r| r.window_seconds = 0), "window_seconds"),
        (with(|r| r.window_seconds = 86_401), "window_seconds"),
        (with(|r| r.max_opt_outs = 0), "max_opt_outs"),
        (with(|r| r.max_opt_out_rate = 1.5), "max_opt_out_rate"),
        (with(|r| r.max_opt_out_rate = -0.1), "max_opt_out_rate"),
        (with(|r| r.max_opt_out_rate = 0.1), "min_checks"),
        (with(|r| r.min_checks = 5), "min_checks"),
        (with(|r| r.reason = " ".into()), "reason"),
    ];
    for (req, field) in cases {
        let status = app.client.set_halt_trigger(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    let bad_id = proto::RemoveHaltTriggerRequest {
        trigger_id: "nope".into(),
        reason: "why".into(),
    };
    let status = app.client.remove_halt_trigger(bad_id).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("trigger_id"), "{status:?}");
    let unknown = proto::RemoveHaltTriggerRequest {
        trigger_id: uuid::Uuid::now_v7().to_string(),
        reason: "why".into(),
    };
    let status = app.client.remove_halt_trigger(unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let bad_tenant = proto::ListHaltTriggersRequest {
        tenant: "a b".into(),
        include_ended: true,
    };
    let status = app.client.list_halt_triggers(bad_tenant).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("tenant"), "{status:?}");
    for key in [CHECK_KEY, WRITE_KEY] {
        let mut client = app.client_with_key(Some(key)).await;
        let refused = client.set_halt_trigger(with(|_| {})).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
    let listed = all_controls(&mut app.client, "acme").await;
    assert!(listed.triggers.is_empty() && listed.halts.is_empty());
    assert_eq!(app.store().await.audit_size().await.unwrap(), 0);

    // A removal without a reason leaves the trigger in force; with one, it is listed as removed.
    let set = app
        .client
        .set_halt_trigger(with(|_| {}))
        .await
        .unwrap()
        .into_inner();
    let no_reason = proto::RemoveHaltTriggerRequest {
        trigger_id: set.trigger_id.clone(),
        reason: String::new(),
    };
    let status = app.client.remove_halt_trigger(no_reason).await.unwrap_err();
    assert!(status.message().starts_with("reason"), "{status:?}");
    let in_force = proto::ListHaltTriggersRequest {
        tenant: "acme".into(),
        include_ended: false,
    };
    let listed = app
        .client
        .list_halt_triggers(in_force.clone())
        .await
        .unwrap();
    assert_eq!(listed.into_inner().triggers.len(), 1);
    let removed = proto::RemoveHaltTriggerRequest {
        trigger_id: set.trigger_id.clone(),
        reason: "campaign over".into(),
    };
    let removed = app
        .client
        .remove_halt_trigger(removed)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.remove_reason, "campaign over");
    let listed = app.client.list_halt_triggers(in_force).await.unwrap();
    assert!(listed.into_inner().triggers.is_empty());
}

async fn setting_a_trigger_replaces_the_one_for_the_same_campaign_and_is_listed_and_audited(
    backend: Backend,
) {
    let mut app = spawn_app(backend).await;
    let mut first = trigger_request("RC-2");
    first.max_complaints = 3;
    let first = app
        .client
        .set_halt_trigger(first)
        .await
        .unwrap()
        .into_inner();
    let mut second = trigger_request("RC-2");
    second.max_opt_out_rate = 0.05;
    second.min_checks = 100;
    let second = app
        .client
        .set_halt_trigger(second)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.max_opt_out_rate, 0.05);
    assert_eq!((second.min_checks, second.window_seconds), (100, 600));

    let listed = all_controls(&mut app.client, "acme").await.triggers;
    let ids: Vec<(&str, &str)> = listed
        .iter()
        .map(|t| (t.trigger_id.as_str(), t.remove_reason.as_str()))
        .collect();
    let replaced = format!("replaced by {}", second.trigger_id);
    assert_eq!(
        ids,
        [
            (first.trigger_id.as_str(), replaced.as_str()),
            (second.trigger_id.as_str(), "")
        ]
    );
    let rows = app.store().await.audit_rows(-1, 100).await.unwrap();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.action.as_str(), r.receipt_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("set_halt_trigger", first.trigger_id.as_str()),
            ("set_halt_trigger", second.trigger_id.as_str()),
        ]
    );
    let detail = rows[1].detail.as_deref().unwrap();
    assert!(detail.contains(&first.trigger_id), "{detail}");
    assert!(detail.contains("\"min_checks\":100"), "{detail}");
}

on_both_stores!(
    bad_triggers_are_refused_by_field_and_store_nothing,
    setting_a_trigger_replaces_the_one_for_the_same_campaign_and_is_listed_and_audited,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_lists_and_removes_triggers() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let server = app.addr.to_string();
    let out = suppressd(&[
        "trigger",
        "set",
        "--server",
        &server,
        "--tenant",
        "acme",
        "--topic",
        "recall",
        "--campaign",
        "RC-4",
        "--window",
        "10m",
        "--max-rate",
        "0.02",
        "--min-checks",
        "500",
        "--max-complaints",
        "20",
        "--reason",
        "wrong letter",
        "--json",
    ])
    .await;
    let trigger: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = trigger["trigger_id"].as_str().unwrap().to_owned();
    assert_eq!(trigger["window_seconds"], 600);
    assert_eq!(trigger["max_opt_out_rate"], 0.02);
    assert_eq!(trigger["max_opt_outs"], serde_json::Value::Null, "not set");
    let propagation = trigger["propagation"].as_str().unwrap();
    assert!(propagation.starts_with("confirmed by"), "{out}");
    let out = suppressd(&["trigger", "list", "--server", &server, "--tenant", "acme"]).await;
    assert!(
        out.contains(&id) && out.contains("min_checks: 500"),
        "{out}"
    );
    let out = suppressd(&["controls", "list", "--server", &server, "--tenant", "acme"]).await;
    assert!(out.contains(&id), "{out}");
    let out = suppressd(&[
        "trigger", "remove", &id, "--server", &server, "--reason", "done",
    ])
    .await;
    assert!(out.contains("remove_reason: done"), "{out}");
    let listed = all_controls(&mut app.client, "acme").await;
    assert_eq!(listed.triggers.len(), 1);
    assert!(listed.triggers[0].removed_at.is_some());
}
