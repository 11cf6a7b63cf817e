//! Mandatory declarations (issue 5, part 4): opt-outs stop suppressing a declared topic on the
//! declared channels of one tenant, until expiry or revocation; halts still win.

use super::*;

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
    let listed = all_controls(&mut app.client, "acme").await;
    assert_eq!((listed.halts.len(), listed.mandatory.len()), (1, 2));
}

on_both_stores!(a_mandatory_declaration_overrides_opt_outs_only_where_declared);
