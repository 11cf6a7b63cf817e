//! Refusals: non-admin callers, and each malformed halt, declaration, resume, consent requirement
//! or consent, named by field; none of them stores anything.

use super::{
    consent::{consent_request, require_request},
    *,
};

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

    let listed = all_controls(&mut app.client, "acme").await;
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

on_both_stores!(bad_requests_and_non_admins_are_refused_and_store_nothing);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_bound_admin_controls_only_its_own_tenant() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let mut acme = app.client_with_key(Some(ACME_ADMIN_KEY)).await;
    let own = acme
        .halt_campaign(halt_request("acme", "recall", "", "why"))
        .await
        .unwrap()
        .into_inner();
    let refused = acme
        .halt_campaign(halt_request("beta", "recall", "", "why"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut beta_declaration = declaration("recall", &[Channel::Postal], i64::MAX / 4);
    beta_declaration.tenant = "beta".into();
    let refused = acme.declare_mandatory(beta_declaration).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let beta_list = proto::ListControlsRequest {
        tenant: "beta".into(),
        include_ended: true,
    };
    let refused = acme.list_controls(beta_list).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // Another tenant's halt (made by an unrestricted admin) cannot be resumed by it.
    let beta = app
        .client
        .halt_campaign(halt_request("beta", "recall", "", "why"))
        .await
        .unwrap()
        .into_inner();
    let refused = acme
        .resume_campaign(resume_request(&beta.halt_id, "not yours"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    acme.resume_campaign(resume_request(&own.halt_id, "done"))
        .await
        .unwrap();
    let beta_check = scope("beta", Channel::Email, "recall", "");
    assert_halted(
        &app.check(email("b@example.com"), beta_check).await,
        &beta.halt_id,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_consent_requests_are_refused_by_field_and_store_nothing() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let with = |f: fn(&mut proto::RequireConsentRequest)| {
        let mut req = require_request(Channel::Email, "marketing");
        f(&mut req);
        req
    };
    for (req, field) in [
        (with(|r| r.topic.clear()), "topic"),
        (with(|r| r.topic = "a b".into()), "topic"),
        (with(|r| r.reason = " ".into()), "reason"),
        (with(|r| r.channel = 99), "channel"),
    ] {
        let status = app.client.require_consent(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().starts_with(field), "{field}: {status:?}");
    }
    for raw in ["", "nope"] {
        let status = app
            .client
            .drop_consent_requirement(proto::DropConsentRequirementRequest {
                requirement_id: raw.into(),
                reason: "why".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("requirement_id"), "{status:?}");
    }

    let marketing = scope("acme", Channel::Email, "marketing", "");
    let with = |f: fn(&mut proto::RecordConsentRequest)| {
        let mut req = consent_request(email("p@example.com"), marketing.clone());
        f(&mut req);
        req
    };
    let long = "x".repeat(1_001);
    let mut too_long = with(|_| {});
    too_long.evidence.as_mut().unwrap().proof = long;
    for (req, field) in [
        (with(|r| r.recipient = None), "recipient"),
        (
            with(|r| r.recipient = Some(email("no-at"))),
            "recipient.email",
        ),
        (with(|r| r.scope = None), "scope"),
        (
            with(|r| r.scope.as_mut().unwrap().topic = "a b".into()),
            "scope.topic",
        ),
        (
            with(|r| r.scope.as_mut().unwrap().channel = 99),
            "scope.channel",
        ),
        (with(|r| r.evidence = None), "evidence"),
        (
            with(|r| r.evidence.as_mut().unwrap().source.clear()),
            "evidence.source",
        ),
        (
            with(|r| r.evidence.as_mut().unwrap().actor = " ".into()),
            "evidence.actor",
        ),
        (too_long, "evidence.proof"),
    ] {
        let status = app.client.record_consent(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().starts_with(field), "{field}: {status:?}");
    }
    // NO_CONSENT is an answer, not a reason to opt out.
    let mut opt_out = opt_out_request(email("p@example.com"), marketing.clone());
    opt_out.reason = proto::Reason::NoConsent as i32;
    let status = app.client.opt_out(opt_out).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("reason"), "{status:?}");

    // Requirements are an admin's; consents a writer's (and not a checker's).
    let mut writer = app.client_with_key(Some(WRITE_KEY)).await;
    let refused = writer
        .require_consent(require_request(Channel::Email, "marketing"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut checker = app.client_with_key(Some(CHECK_KEY)).await;
    let refused = checker
        .record_consent(consent_request(email("p@example.com"), marketing))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    assert!(
        all_controls(&mut app.client, "acme")
            .await
            .consent_required
            .is_empty()
    );
    let listed = app
        .client
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: Some(email("p@example.com")),
            tenant: "acme".into(),
            token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.consents.is_empty() && listed.records.is_empty());
    assert_eq!(app.store().await.audit_size().await.unwrap(), 0);
}
