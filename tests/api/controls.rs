//! Issue 5, parts 1 and 4: campaign halts and mandatory declarations, through the generated client
//! against the real server (and, in [`load`], two real replica processes under check load).

mod load;

use crate::{helpers::*, processes::PrivateRedis};
use suppressd::{
    audit::AuditLog,
    domain::Clock,
    proto::{self, Channel},
    service::audit::verify_log,
};
use tonic::Code;

const HOUR: i64 = 3_600_000;

pub fn halt_request(
    tenant: &str,
    topic: &str,
    campaign: &str,
    reason: &str,
) -> proto::HaltCampaignRequest {
    proto::HaltCampaignRequest {
        tenant: tenant.into(),
        topic: topic.into(),
        campaign: campaign.into(),
        channels: vec![],
        reason: reason.into(),
    }
}

pub fn declaration(
    topic: &str,
    channels: &[Channel],
    expires_at: i64,
) -> proto::DeclareMandatoryRequest {
    proto::DeclareMandatoryRequest {
        tenant: "acme".into(),
        topic: topic.into(),
        channels: channels.iter().map(|c| *c as i32).collect(),
        legal_basis: "49 U.S.C. 30118 safety recall".into(),
        approver: "general counsel".into(),
        expires_at: Some(prost_types::Timestamp {
            seconds: expires_at / 1000,
            nanos: 0,
        }),
    }
}

fn resume_request(halt_id: &str, reason: &str) -> proto::ResumeCampaignRequest {
    proto::ResumeCampaignRequest {
        halt_id: halt_id.into(),
        reason: reason.into(),
    }
}

fn revoke_request(id: &str, reason: &str) -> proto::RevokeMandatoryRequest {
    proto::RevokeMandatoryRequest {
        declaration_id: id.into(),
        reason: reason.into(),
    }
}

/// Asserts the answer is a suppression by the halt `id`, with the halt as its record.
pub fn assert_halted(answer: &proto::CheckSuppressedResponse, id: &str) {
    assert!(answer.suppressed, "{answer:?}");
    assert_eq!(answer.halt.as_ref().map(|h| h.halt_id.as_str()), Some(id));
    let matched = answer
        .matched
        .as_ref()
        .expect("the halt is the matched record");
    assert_eq!(matched.receipt_id, id);
    assert_eq!(matched.reason, proto::Reason::Operator as i32);
    assert_eq!(matched.source, proto::Source::Api as i32);
}

async fn a_halt_survives_restarts_and_redis_loss(backend: Backend) {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let mut app = spawn_app_with(backend, Clock::System, |s| s.redis_url = url).await;
    let notice = scope("acme", Channel::Sms, "recall", "RC-7");
    let halt = app
        .client
        .halt_campaign(halt_request("acme", "", "RC-7", "wrong recipients list"))
        .await
        .unwrap()
        .into_inner();
    assert!(halt.channels.is_empty(), "every channel");
    assert_halted(
        &app.check(email("p@example.com"), notice.clone()).await,
        &halt.halt_id,
    );

    app.restart().await;
    assert_halted(
        &app.check(email("p@example.com"), notice.clone()).await,
        &halt.halt_id,
    );

    // Redis gone: checks answer from the store, and the halt still holds.
    redis.kill();
    assert_halted(
        &app.check(email("p@example.com"), notice.clone()).await,
        &halt.halt_id,
    );
    // Back empty, and the replica restarted meanwhile: still halted.
    redis.restart().await;
    app.restart().await;
    assert_halted(
        &app.check(email("p@example.com"), notice.clone()).await,
        &halt.halt_id,
    );
    // Other campaigns and tenants are untouched.
    let other = app
        .check(
            email("p@example.com"),
            scope("acme", Channel::Sms, "recall", "RC-8"),
        )
        .await;
    assert!(!other.suppressed && other.halt.is_none());
    let tenant = app
        .check(
            email("p@example.com"),
            scope("beta", Channel::Sms, "recall", "RC-7"),
        )
        .await;
    assert!(!tenant.suppressed);
}

async fn a_mandatory_declaration_overrides_opt_outs_only_where_declared(backend: Backend) {
    let start = 1_900_000_000_000;
    let clock = Clock::manual(start);
    let mut app = spawn_app_with(backend, clock.clone(), |_| {}).await;
    let person = || email("owner@example.com");
    let everything = app
        .opt_out(opt_out_request(
            person(),
            scope("acme", Channel::Unspecified, "", ""),
        ))
        .await;
    app.opt_out(opt_out_request(
        person(),
        scope("beta", Channel::Unspecified, "", ""),
    ))
    .await;
    let d = app
        .client
        .declare_mandatory(declaration("recall", &[Channel::Postal], start + HOUR))
        .await
        .unwrap()
        .into_inner();

    // Declared channel and topic: sent, naming the declaration and the opt-out it overrode.
    let postal = scope("acme", Channel::Postal, "recall", "RC-1");
    let answer = app.check(person(), postal.clone()).await;
    assert!(!answer.suppressed);
    assert!(answer.matched.is_none() && answer.halt.is_none());
    let over = answer.mandatory.expect("the override is named");
    assert_eq!(over.declaration.unwrap().declaration_id, d.declaration_id);
    assert_eq!(over.overridden.unwrap().receipt_id, everything.receipt_id);
    // Elsewhere the opt-out holds: another channel, another topic, another tenant.
    for other in [
        scope("acme", Channel::Email, "recall", "RC-1"),
        scope("acme", Channel::Postal, "marketing", ""),
        scope("beta", Channel::Postal, "recall", "RC-1"),
    ] {
        let answer = app.check(person(), other).await;
        assert!(
            answer.suppressed && answer.mandatory.is_none(),
            "{answer:?}"
        );
    }
    // Nobody opted out: a plain "send", nothing overridden.
    let plain = app.check(email("other@example.com"), postal.clone()).await;
    assert!(!plain.suppressed && plain.mandatory.is_none());

    // A halt still wins; resuming it brings the override back.
    let halt = app
        .client
        .halt_campaign(halt_request("acme", "recall", "", "printer error"))
        .await
        .unwrap()
        .into_inner();
    assert_halted(&app.check(person(), postal.clone()).await, &halt.halt_id);
    app.client
        .resume_campaign(resume_request(&halt.halt_id, "reprinted"))
        .await
        .unwrap();
    assert!(
        app.check(person(), postal.clone())
            .await
            .mandatory
            .is_some()
    );

    // Past its expiry the opt-out suppresses again, and the declaration can no longer be revoked.
    clock.advance(HOUR);
    let answer = app.check(person(), postal.clone()).await;
    assert!(answer.suppressed && answer.mandatory.is_none());
    let late = app
        .client
        .revoke_mandatory(revoke_request(&d.declaration_id, "too late"))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);

    // A revoked declaration stops at once; a second revocation is refused.
    let d2 = app
        .client
        .declare_mandatory(declaration(
            "recall",
            &[Channel::Postal, Channel::Sms],
            clock.now() + HOUR,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        app.check(person(), postal.clone())
            .await
            .mandatory
            .is_some()
    );
    let revoked = app
        .client
        .revoke_mandatory(revoke_request(&d2.declaration_id, "recall closed"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.revoked_by, "admin");
    assert!(app.check(person(), postal.clone()).await.suppressed);
    let again = app
        .client
        .revoke_mandatory(revoke_request(&d2.declaration_id, "again"))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let listed = app
        .client
        .list_controls(proto::ListControlsRequest {
            tenant: "acme".into(),
            include_ended: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((listed.halts.len(), listed.mandatory.len()), (1, 2));
}

async fn bad_requests_and_non_admins_are_refused_and_store_nothing(backend: Backend) {
    let mut app = spawn_app(backend).await;
    for key in [CHECK_KEY, WRITE_KEY] {
        let mut client = app.client_with_key(Some(key)).await;
        let halt = client
            .halt_campaign(halt_request("acme", "recall", "", "why"))
            .await
            .unwrap_err();
        assert_eq!(halt.code(), Code::PermissionDenied, "{halt:?}");
        let declare = client
            .declare_mandatory(declaration("recall", &[Channel::Postal], i64::MAX / 4))
            .await
            .unwrap_err();
        assert_eq!(declare.code(), Code::PermissionDenied);
        let list = client
            .list_controls(proto::ListControlsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(list.code(), Code::PermissionDenied);
    }
    let future = suppressd::domain::clock::system_now() + HOUR;
    let mut halts = vec![
        (halt_request("acme", "recall", "", ""), "reason"),
        (halt_request("acme", "", "", "why"), "topic"),
        (halt_request("a b", "recall", "", "why"), "tenant"),
        (halt_request("acme", "recall", "RC 1", "why"), "campaign"),
    ];
    let mut unspecified = halt_request("acme", "recall", "", "why");
    unspecified.channels = vec![Channel::Email as i32, Channel::Unspecified as i32];
    halts.push((unspecified, "channels[1]"));
    for (req, field) in halts {
        let status = app.client.halt_campaign(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    let with = |f: fn(&mut proto::DeclareMandatoryRequest)| {
        let mut req = declaration("recall", &[Channel::Postal], future);
        f(&mut req);
        req
    };
    let declarations = [
        (with(|r| r.topic.clear()), "topic"),
        (with(|r| r.channels.clear()), "channels"),
        (with(|r| r.channels = vec![0]), "channels[0]"),
        (with(|r| r.legal_basis.clear()), "legal_basis"),
        (with(|r| r.approver = " ".into()), "approver"),
        (with(|r| r.expires_at = None), "expires_at"),
        (
            with(|r| r.expires_at.as_mut().unwrap().seconds -= 2 * HOUR / 1000),
            "expires_at",
        ),
    ];
    for (req, field) in declarations {
        let status = app.client.declare_mandatory(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    let bad_id = app
        .client
        .resume_campaign(resume_request("nope", "why"))
        .await
        .unwrap_err();
    assert!(bad_id.message().starts_with("halt_id"), "{bad_id:?}");
    let unknown = uuid::Uuid::now_v7().to_string();
    let status = app
        .client
        .resume_campaign(resume_request(&unknown, "why"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = app
        .client
        .revoke_mandatory(revoke_request(&unknown, "why"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let listed = app
        .client
        .list_controls(proto::ListControlsRequest {
            tenant: "acme".into(),
            include_ended: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.halts.is_empty() && listed.mandatory.is_empty());
    assert_eq!(app.store().await.audit_size().await.unwrap(), 0);

    // A resume without a reason is refused and leaves the halt in force.
    let halt = app
        .client
        .halt_campaign(halt_request("acme", "recall", "", "why"))
        .await
        .unwrap()
        .into_inner();
    let status = app
        .client
        .resume_campaign(resume_request(&halt.halt_id, ""))
        .await
        .unwrap_err();
    assert!(status.message().starts_with("reason"), "{status:?}");
    let answer = app
        .check(
            email("x@example.com"),
            scope("acme", Channel::Email, "recall", ""),
        )
        .await;
    assert_halted(&answer, &halt.halt_id);
}

async fn each_change_is_one_verifiable_audit_entry(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let halt = app
        .client
        .halt_campaign(halt_request("acme", "recall", "RC-1", "wrong list"))
        .await
        .unwrap()
        .into_inner();
    app.client
        .resume_campaign(resume_request(&halt.halt_id, "list fixed"))
        .await
        .unwrap();
    let future = suppressd::domain::clock::system_now() + HOUR;
    let d = app
        .client
        .declare_mandatory(declaration("recall", &[Channel::Postal], future))
        .await
        .unwrap()
        .into_inner();
    app.client
        .revoke_mandatory(revoke_request(&d.declaration_id, "closed"))
        .await
        .unwrap();

    let store = app.store().await;
    let rows = store.audit_rows(-1, 100).await.unwrap();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.action.as_str(), r.receipt_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("halt", halt.halt_id.as_str()),
            ("resume", halt.halt_id.as_str()),
            ("declare_mandatory", d.declaration_id.as_str()),
            ("revoke_mandatory", d.declaration_id.as_str()),
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.subject.is_empty() && r.actor == "admin")
    );
    assert!(rows[0].detail.as_deref().unwrap().contains("wrong list"));
    assert!(
        rows[2]
            .detail
            .as_deref()
            .unwrap()
            .contains("general counsel")
    );
    let report = verify_log(&store, AuditLog::development().verifier(), None)
        .await
        .unwrap();
    assert_eq!((report.entries, report.problem), (4, None));
}

on_both_stores!(
    a_halt_survives_restarts_and_redis_loss,
    a_mandatory_declaration_overrides_opt_outs_only_where_declared,
    bad_requests_and_non_admins_are_refused_and_store_nothing,
    each_change_is_one_verifiable_audit_entry,
);

async fn suppressd(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(args)
        .env("SUPPRESSD_API_KEY", ADMIN_KEY)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "suppressd {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_halts_resumes_and_lists() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let server = app.addr.to_string();
    let notice = || scope("acme", Channel::Email, "recall", "RC-3");
    let out = suppressd(&[
        "halt",
        "--server",
        &server,
        "--tenant",
        "acme",
        "--campaign",
        "RC-3",
        "--channel",
        "email",
        "--reason",
        "bad batch",
        "--json",
    ])
    .await;
    let halt: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = halt["halt_id"].as_str().unwrap().to_owned();
    assert_eq!(halt["channels"], serde_json::json!(["email"]));
    assert_halted(&app.check(email("c@example.com"), notice()).await, &id);

    let out = suppressd(&["resume", &id, "--server", &server, "--reason", "fixed"]).await;
    assert!(out.contains("resume_reason: fixed"), "{out}");
    assert!(!app.is_suppressed(email("c@example.com"), notice()).await);

    let out = suppressd(&[
        "controls", "list", "--server", &server, "--tenant", "acme", "--all",
    ])
    .await;
    assert!(
        out.contains(&id) && out.contains("resumed_by: admin"),
        "{out}"
    );
    let out = suppressd(&["controls", "list", "--server", &server, "--tenant", "acme"]).await;
    assert_eq!(out, "no controls\n");
}
