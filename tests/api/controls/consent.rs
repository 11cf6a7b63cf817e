//! Consent-required topics (issue 19, item 4), through the generated client against the real
//! server: under a requirement a notice goes only to a person whose consent covers it; an opt-out
//! wins over consent and revokes it, an opt-in does not bring it back; a consent recorded on one
//! replica answers on another at once; requirements and consents are audited and listed (bad input:
//! `validation`; a replica that cannot read consents fails closed: `stale`).

use super::*;
use suppressd::startup::Application;
use tokio::sync::oneshot;

pub fn require_request(channel: Channel, topic: &str) -> proto::RequireConsentRequest {
    proto::RequireConsentRequest {
        tenant: "acme".into(),
        channel: channel as i32,
        topic: topic.into(),
        reason: "GDPR Art. 6(1)(a): marketing by consent only".into(),
    }
}

pub fn consent_request(
    recipient: proto::Recipient,
    scope: proto::Scope,
) -> proto::RecordConsentRequest {
    proto::RecordConsentRequest {
        recipient: Some(recipient),
        scope: Some(scope),
        evidence: Some(proto::ConsentEvidence {
            source: "signup-form".into(),
            proof: "sha256:9f2c…form-v3".into(),
            actor: "crm".into(),
        }),
    }
}

fn assert_no_consent(answer: &proto::CheckSuppressedResponse, requirement_id: &str) {
    assert!(answer.suppressed, "{answer:?}");
    let required = answer.consent_required.as_ref().expect("the requirement");
    assert_eq!(required.requirement_id, requirement_id);
    let matched = answer.matched.as_ref().expect("the requirement as record");
    assert_eq!(matched.reason, proto::Reason::NoConsent as i32);
    assert_eq!(matched.receipt_id, requirement_id);
}

/// Another server in this process on the same store and Redis prefix.
async fn replica(app: &TestApp) -> (Client, oneshot::Sender<()>) {
    let mut settings = app.settings.clone();
    settings.replica_name = Some("replica-b".into());
    let built = Application::build(&settings, app.clock.clone())
        .await
        .expect("the replica builds");
    let addr = built.local_addr();
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(built.run_until(async {
        let _ = stopped.await;
    }));
    (connect(addr).await, stop)
}

async fn only_consented_people_get_notices_of_a_consent_required_topic(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let (mut other, _stop) = replica(&app).await;
    let mut writer = app.client_with_key(Some(WRITE_KEY)).await;
    let marketing = scope("acme", Channel::Email, "marketing", "");
    let requirement = app
        .client
        .require_consent(require_request(Channel::Email, "marketing"))
        .await
        .unwrap()
        .into_inner();
    let id = requirement.requirement_id.clone();
    assert_eq!(
        requirement.propagation.unwrap().outcome,
        proto::PropagationOutcome::Confirmed as i32
    );
    let duplicate = app
        .client
        .require_consent(require_request(Channel::Email, "marketing"))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::FailedPrecondition);

    // Nobody has consented yet; other topics and channels are untouched.
    assert_no_consent(
        &app.check(email("p@example.com"), marketing.clone()).await,
        &id,
    );
    let recall = scope("acme", Channel::Email, "recall", "");
    assert!(!app.is_suppressed(email("p@example.com"), recall).await);
    let sms = scope("acme", Channel::Sms, "marketing", "");
    assert!(!app.is_suppressed(email("p@example.com"), sms).await);

    // A consent recorded on one replica answers on the other at once.
    let consent = writer
        .record_consent(consent_request(email("p@example.com"), marketing.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(consent.recorded_by, "writer");
    assert!(
        !other
            .check_suppressed(check_of("p@example.com", &marketing))
            .await
            .unwrap()
            .into_inner()
            .suppressed
    );
    assert!(
        !app.is_suppressed(email("p@example.com"), marketing.clone())
            .await
    );
    // A consent to another topic does not cover this one; a wildcard consent does.
    let newsletter = scope("acme", Channel::Email, "newsletter", "");
    writer
        .record_consent(consent_request(email("q@example.com"), newsletter))
        .await
        .unwrap();
    assert_no_consent(
        &app.check(email("q@example.com"), marketing.clone()).await,
        &id,
    );
    writer
        .record_consent(consent_request(
            email("w@example.com"),
            scope("acme", Channel::Unspecified, "", ""),
        ))
        .await
        .unwrap();
    assert!(
        !app.is_suppressed(email("w@example.com"), marketing.clone())
            .await
    );

    // An opt-out wins over the consent, and revokes it: an opt-in ends the opt-out only.
    app.opt_out(opt_out_request(email("p@example.com"), marketing.clone()))
        .await;
    let answer = app.check(email("p@example.com"), marketing.clone()).await;
    assert!(
        answer.suppressed && answer.consent_required.is_none(),
        "{answer:?}"
    );
    assert_eq!(
        answer.matched.unwrap().reason,
        proto::Reason::UserRequest as i32
    );
    app.client
        .opt_in(proto::OptInRequest {
            recipient: Some(email("p@example.com")),
            scope: Some(marketing.clone()),
            token: String::new(),
            reason: "the person called support".into(),
        })
        .await
        .unwrap();
    assert_no_consent(
        &app.check(email("p@example.com"), marketing.clone()).await,
        &id,
    );
    // Opting in without ever consenting creates no consent either.
    app.opt_out(opt_out_request(email("r@example.com"), marketing.clone()))
        .await;
    app.client
        .opt_in(proto::OptInRequest {
            recipient: Some(email("r@example.com")),
            scope: Some(marketing.clone()),
            token: String::new(),
            reason: "the person called support".into(),
        })
        .await
        .unwrap();
    assert_no_consent(
        &app.check(email("r@example.com"), marketing.clone()).await,
        &id,
    );
    // A fresh consent counts again.
    writer
        .record_consent(consent_request(email("p@example.com"), marketing.clone()))
        .await
        .unwrap();
    assert!(
        !app.is_suppressed(email("p@example.com"), marketing.clone())
            .await
    );

    // A batch answers each check by its own person.
    let batch = app
        .client
        .check_suppressed_batch(proto::CheckSuppressedBatchRequest {
            checks: ["p@example.com", "q@example.com", "w@example.com"]
                .map(|a| check_of(a, &marketing))
                .to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let suppressed: Vec<bool> = batch.results.iter().map(|r| r.suppressed).collect();
    assert_eq!(suppressed, [false, true, false]);

    // Listed: the requirement among the controls, the consents among the person's records.
    let listed = all_controls(&mut app.client, "acme").await;
    assert_eq!(listed.consent_required.len(), 1);
    assert_eq!(listed.consent_required[0].requirement_id, id);
    let mine = app
        .client
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: Some(email("p@example.com")),
            tenant: "acme".into(),
            token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.consents.len(), 2);
    assert_eq!(mine.consents[0].consent_id, consent.consent_id);
    assert_eq!(
        mine.consents[0].evidence.as_ref().unwrap().source,
        "signup-form"
    );
    // With the person's token for marketing email: those consents, without their evidence.
    let token =
        crate::tokens::issue(&mut app.client, "p@example.com", marketing.clone(), 3600).await;
    let theirs = app
        .client
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: None,
            tenant: String::new(),
            token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(theirs.consents.len(), 2);
    assert!(
        theirs
            .consents
            .iter()
            .all(|c| c.evidence.is_none() && c.recorded_by.is_empty())
    );

    // Dropped, the topic goes to everyone not opted out.
    let dropped = app
        .client
        .drop_consent_requirement(proto::DropConsentRequirementRequest {
            requirement_id: id.clone(),
            reason: "policy changed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dropped.dropped_at.is_some() && dropped.propagation.is_some());
    assert!(
        !app.is_suppressed(email("q@example.com"), marketing.clone())
            .await
    );
    assert!(
        !other
            .check_suppressed(check_of("q@example.com", &marketing))
            .await
            .unwrap()
            .into_inner()
            .suppressed
    );

    let rows = app.store().await.audit_rows(-1, 100).await.unwrap();
    let consent_rows: Vec<&str> = rows
        .iter()
        .map(|r| r.action.as_str())
        .filter(|a| a.contains("consent"))
        .collect();
    assert_eq!(
        consent_rows,
        [
            "require_consent",
            "record_consent",
            "record_consent",
            "record_consent",
            "record_consent",
            "drop_consent_requirement",
        ]
    );
    let recorded = rows
        .iter()
        .find(|r| r.receipt_id == consent.consent_id)
        .unwrap();
    assert!(recorded.detail.as_deref().unwrap().contains("signup-form"));
    let store = app.store().await;
    let report = verify_log(&store, AuditLog::development().verifier(), None)
        .await
        .unwrap();
    assert_eq!((report.entries, report.problem), (rows.len() as u64, None));
}

pub fn check_of(address: &str, scope: &proto::Scope) -> proto::CheckSuppressedRequest {
    proto::CheckSuppressedRequest {
        recipient: Some(email(address)),
        scope: Some(scope.clone()),
        time_zone: String::new(),
        purpose: 0,
    }
}

on_both_stores!(only_consented_people_get_notices_of_a_consent_required_topic);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_requires_consent_records_one_lists_and_drops_the_requirement() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let server = app.addr.to_string();
    let out = suppressd(&[
        "consent",
        "require",
        "--server",
        &server,
        "--tenant",
        "acme",
        "--channel",
        "email",
        "--topic",
        "marketing",
        "--reason",
        "GDPR",
        "--json",
    ])
    .await;
    let requirement: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = requirement["requirement_id"].as_str().unwrap().to_owned();
    assert_eq!(requirement["channel"], "email");
    assert!(
        requirement["propagation"]
            .as_str()
            .unwrap()
            .starts_with("confirmed by"),
        "{out}"
    );
    let out = suppressd(&["controls", "list", "--server", &server, "--tenant", "acme"]).await;
    assert!(
        out.contains(&id) && out.contains("topic: marketing"),
        "{out}"
    );
    let marketing = scope("acme", Channel::Email, "marketing", "");
    assert_no_consent(
        &app.check(email("p@example.com"), marketing.clone()).await,
        &id,
    );

    let out = suppressd(&[
        "consent",
        "record",
        "--server",
        &server,
        "--email",
        "p@example.com",
        "--tenant",
        "acme",
        "--topic",
        "marketing",
        "--source",
        "signup-form",
        "--proof",
        "form-v3",
        "--obtained-by",
        "crm",
    ])
    .await;
    assert!(out.contains("source: signup-form"), "{out}");
    assert!(!app.is_suppressed(email("p@example.com"), marketing).await);

    let out = suppressd(&[
        "consent", "drop", &id, "--server", &server, "--reason", "done",
    ])
    .await;
    assert!(out.contains("drop_reason: done"), "{out}");
}
