//! What a check answers: the cover rule, tenants, spellings, batches.

use crate::helpers::*;
use suppressd::proto::{self, Channel};

async fn opt_out_then_check_is_suppressed(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let jane = email("jane@example.com");
    let recall = scope("acme", Channel::Email, "recall", "RC-1");
    assert!(!app.is_suppressed(jane.clone(), recall.clone()).await);

    let receipt = app
        .opt_out(opt_out_request(
            jane.clone(),
            scope("acme", Channel::Email, "recall", ""),
        ))
        .await;

    let answer = app.check(jane, recall).await;
    assert!(answer.suppressed);
    let matched = answer.matched.expect("the blocking record is named");
    assert_eq!(matched.receipt_id, receipt.receipt_id);
    assert_eq!(matched.reason, proto::Reason::UserRequest as i32);
    assert_eq!(matched.source, proto::Source::Link as i32);
    assert_eq!(matched.scope.unwrap().topic, "recall");
    assert_eq!(matched.received_at, receipt.accepted_at);
}

/// Each wildcard of an opt-out, and the notices it must and must not cover.
async fn each_cover_rule_and_its_negative(backend: Backend) {
    let mut app = spawn_app(backend).await;
    use Channel::*;
    // (opt-out scope, notices covered, notices not covered)
    let rules = [
        (
            scope("acme", Unspecified, "", ""),
            vec![
                scope("acme", Sms, "recall", ""),
                scope("acme", Postal, "news", "C1"),
            ],
            vec![scope("other", Sms, "recall", "")],
        ),
        (
            scope("acme", Sms, "", ""),
            vec![
                scope("acme", Sms, "recall", ""),
                scope("acme", Sms, "news", "C1"),
            ],
            vec![scope("acme", Email, "recall", "")],
        ),
        (
            scope("acme", Unspecified, "marketing", ""),
            vec![
                scope("acme", Email, "marketing", ""),
                scope("acme", Push, "marketing", "C9"),
            ],
            vec![scope("acme", Email, "recall", "")],
        ),
        (
            scope("acme", Unspecified, "", "RC-7"),
            vec![
                scope("acme", Voice, "recall", "RC-7"),
                scope("acme", Email, "news", "RC-7"),
            ],
            vec![
                scope("acme", Voice, "recall", "RC-8"),
                scope("acme", Voice, "recall", ""),
            ],
        ),
        (
            scope("acme", Email, "recall", "RC-7"),
            vec![scope("acme", Email, "recall", "RC-7")],
            vec![
                scope("acme", Sms, "recall", "RC-7"),
                scope("acme", Email, "news", "RC-7"),
                scope("acme", Email, "recall", "RC-8"),
                scope("acme", Email, "recall", ""),
            ],
        ),
    ];
    for (i, (opted_out, covered, not_covered)) in rules.into_iter().enumerate() {
        let person = email(&format!("rule{i}@example.com"));
        app.opt_out(opt_out_request(person.clone(), opted_out.clone()))
            .await;
        for notice in covered {
            assert!(
                app.is_suppressed(person.clone(), notice.clone()).await,
                "{opted_out:?} must cover {notice:?}"
            );
        }
        for notice in not_covered {
            assert!(
                !app.is_suppressed(person.clone(), notice.clone()).await,
                "{opted_out:?} must not cover {notice:?}"
            );
        }
    }
}

async fn the_broadest_covering_opt_out_is_named(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let bob = email("bob@example.com");
    app.opt_out(opt_out_request(
        bob.clone(),
        scope("", Channel::Email, "recall", "RC-1"),
    ))
    .await;
    let broad = app
        .opt_out(opt_out_request(
            bob.clone(),
            scope("", Channel::Unspecified, "recall", ""),
        ))
        .await;
    app.opt_out(opt_out_request(
        bob.clone(),
        scope("", Channel::Email, "", ""),
    ))
    .await;
    let answer = app
        .check(bob, scope("", Channel::Email, "recall", "RC-1"))
        .await;
    // Two records have two wildcards; the earlier one wins.
    assert_eq!(answer.matched.unwrap().receipt_id, broad.receipt_id);
}

async fn tenants_never_see_each_other(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let ann = email("ann@example.com");
    app.opt_out(opt_out_request(
        ann.clone(),
        scope("acme", Channel::Unspecified, "", ""),
    ))
    .await;
    assert!(
        app.is_suppressed(ann.clone(), scope("acme", Channel::Sms, "news", ""))
            .await
    );
    assert!(
        !app.is_suppressed(ann.clone(), scope("globex", Channel::Sms, "news", ""))
            .await
    );
    assert!(
        !app.is_suppressed(ann, scope("", Channel::Sms, "news", ""))
            .await
    );
}

async fn spellings_of_one_address_hit_the_same_record(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let news = scope("", Channel::Unspecified, "news", "");
    let notice = scope("", Channel::Sms, "news", "");
    app.opt_out(opt_out_request(
        email("  Mixed.Case@Example.COM "),
        news.clone(),
    ))
    .await;
    assert!(
        app.is_suppressed(email("mixed.case@example.com"), notice.clone())
            .await
    );
    app.opt_out(opt_out_request(phone("+44 (20) 7946-0958"), news))
        .await;
    assert!(
        app.is_suppressed(phone("+442079460958"), notice.clone())
            .await
    );
    assert!(
        app.is_suppressed(phone("+44.20.7946.0958"), notice.clone())
            .await
    );
    assert!(!app.is_suppressed(phone("+442079460959"), notice).await);
}

async fn a_batch_answers_in_order_and_equals_single_checks(backend: Backend) {
    let mut app = spawn_app(backend).await;
    use Channel::*;
    for i in (0..60).step_by(3) {
        let s = match i % 4 {
            0 => scope("t", Unspecified, "", ""),
            1 => scope("t", Sms, "", ""),
            2 => scope("t", Unspecified, "news", ""),
            _ => scope("t", Email, "recall", "RC-1"),
        };
        let mut req = opt_out_request(email(&format!("p{i}@example.com")), s);
        req.durability = proto::Durability::Accepted as i32;
        app.opt_out(req).await;
    }
    let notices = [
        scope("t", Email, "recall", "RC-1"),
        scope("t", Sms, "news", ""),
        scope("t", Push, "recall", "RC-2"),
        scope("u", Email, "recall", "RC-1"),
    ];
    let checks: Vec<proto::CheckSuppressedRequest> = (0..1_000)
        .map(|i| proto::CheckSuppressedRequest {
            recipient: Some(email(&format!("p{}@example.com", i % 70))),
            scope: Some(notices[i % notices.len()].clone()),
            ..Default::default()
        })
        .collect();
    let batch = app
        .client
        .check_suppressed_batch(proto::CheckSuppressedBatchRequest {
            checks: checks.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(batch.len(), 1_000);
    let mut suppressed = 0;
    for (i, (check, answer)) in checks.into_iter().zip(batch).enumerate() {
        let single = app
            .client
            .check_suppressed(check)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer, single, "check {i}");
        suppressed += usize::from(answer.suppressed);
    }
    assert!(
        suppressed > 100 && suppressed < 900,
        "a mixed set: {suppressed} suppressed"
    );
}

on_both_stores!(
    opt_out_then_check_is_suppressed,
    each_cover_rule_and_its_negative,
    the_broadest_covering_opt_out_is_named,
    tenants_never_see_each_other,
    spellings_of_one_address_hit_the_same_record,
    a_batch_answers_in_order_and_equals_single_checks,
);

on_cluster!(
    opt_out_then_check_is_suppressed,
    each_cover_rule_and_its_negative,
    the_broadest_covering_opt_out_is_named,
    tenants_never_see_each_other,
    spellings_of_one_address_hit_the_same_record,
    a_batch_answers_in_order_and_equals_single_checks,
);
