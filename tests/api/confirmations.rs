//! Confirmations on the trail (issue 21, item 3): a sender's confirmation committed to the audit
//! log once and shown by GetReceipt and the person's history; the confirmation message let
//! through once, within five minutes, for that person's own opt-out only; bad input named and
//! nothing appended.

use crate::helpers::*;
use suppressd::{domain::Clock, proto};
use tonic::Code;

const START: i64 = 1_796_000_000_000;
const MINUTE: i64 = 60_000;

fn confirmation(receipt: &str, sent_at: i64) -> proto::RecordConfirmationRequest {
    proto::RecordConfirmationRequest {
        receipt_id: receipt.into(),
        channel: proto::Channel::Sms as i32,
        content_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        sent_at: Some(prost_types::Timestamp {
            seconds: sent_at / 1000,
            nanos: 0,
        }),
        provider_message_id: "SM0123456789abcdef".into(),
    }
}

fn sms() -> proto::Scope {
    scope("acme", proto::Channel::Sms, "", "")
}

fn confirming(person: &str) -> proto::CheckSuppressedRequest {
    proto::CheckSuppressedRequest {
        recipient: Some(phone(person)),
        scope: Some(scope(
            "acme",
            proto::Channel::Sms,
            "opt-out-confirmation",
            "",
        )),
        purpose: proto::CheckPurpose::OptOutConfirmation as i32,
        ..Default::default()
    }
}

async fn log_size(app: &mut TestApp) -> u64 {
    app.client
        .get_checkpoint(proto::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .tree_size
}

async fn a_senders_confirmation_is_on_the_trail_once(backend: Backend) {
    let mut app = spawn_app_with(backend, Clock::manual(START), |_| {}).await;
    let receipt = app
        .opt_out(opt_out_request(phone("+12025550100"), sms()))
        .await;
    let mut acme = app.client_with_key(Some(ACME_WRITE_KEY)).await;
    let first = acme
        .record_confirmation(confirmation(&receipt.receipt_id, START))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.receipt_id, receipt.receipt_id);
    assert_eq!(first.actor, "acme-writer");
    let size = log_size(&mut app).await;
    assert_eq!(first.log_index + 1, size, "the newest entry");
    // Recorded again (a retry): the same entry, nothing appended.
    let again = acme
        .record_confirmation(confirmation(&receipt.receipt_id, START))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.log_index, first.log_index);
    assert_eq!(log_size(&mut app).await, size);

    let shown = app
        .client
        .get_receipt(proto::GetReceiptRequest {
            receipt_id: receipt.receipt_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.confirmations, vec![first.clone()]);
    let history = app
        .client
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: Some(phone("+12025550100")),
            tenant: "acme".into(),
            token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    let events: Vec<&str> = history[0]
        .events
        .iter()
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(events, ["opt_out", "confirmation"]);

    // Another tenant's receipt does not exist for this key; nor does an unknown one.
    let theirs = app
        .opt_out(opt_out_request(
            phone("+12025550100"),
            scope("globex", proto::Channel::Sms, "", ""),
        ))
        .await;
    for id in [
        theirs.receipt_id.as_str(),
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    ] {
        let refused = acme
            .record_confirmation(confirmation(id, START))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound, "{id}");
    }
    // A key that may only check may not record.
    let mut checker = app.client_with_key(Some(CHECK_KEY)).await;
    let refused = checker
        .record_confirmation(confirmation(&receipt.receipt_id, START))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

async fn bad_confirmations_are_named_and_append_nothing(backend: Backend) {
    let mut app = spawn_app_with(backend, Clock::manual(START), |_| {}).await;
    let receipt = app
        .opt_out(opt_out_request(phone("+12025550101"), sms()))
        .await;
    let size = log_size(&mut app).await;
    let id = receipt.receipt_id.as_str();
    let cases: Vec<(&str, proto::RecordConfirmationRequest)> = vec![
        ("receipt_id", confirmation("not-a-receipt", START)),
        (
            "channel",
            proto::RecordConfirmationRequest {
                channel: 0,
                ..confirmation(id, START)
            },
        ),
        (
            "content_sha256",
            proto::RecordConfirmationRequest {
                content_sha256: "abc".into(),
                ..confirmation(id, START)
            },
        ),
        (
            "sent_at",
            proto::RecordConfirmationRequest {
                sent_at: None,
                ..confirmation(id, START)
            },
        ),
        ("sent_at", confirmation(id, START + 10 * MINUTE)),
        (
            "provider_message_id",
            proto::RecordConfirmationRequest {
                provider_message_id: "x".repeat(257),
                ..confirmation(id, START)
            },
        ),
    ];
    for (field, request) in cases {
        let refused = app.client.record_confirmation(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{field}");
        assert!(
            refused.message().starts_with(field),
            "{field}: {}",
            refused.message()
        );
    }
    assert_eq!(log_size(&mut app).await, size, "nothing appended");
}

async fn the_confirmation_goes_once_within_five_minutes_for_the_persons_own_opt_out(
    backend: Backend,
) {
    let clock = Clock::manual(START);
    let mut app = spawn_app_with(backend, clock.clone(), |_| {}).await;
    let mine = app
        .opt_out(opt_out_request(phone("+12025550102"), sms()))
        .await;
    let answer = app
        .client
        .check_suppressed(confirming("+12025550102"))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.suppressed, "{answer:?}");
    assert_eq!(answer.confirms_receipt_id, mine.receipt_id);
    // Once: a second confirmation, and any ordinary notice, is blocked.
    let again = app
        .client
        .check_suppressed(confirming("+12025550102"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.suppressed && again.confirms_receipt_id.is_empty());
    assert!(
        app.is_suppressed(
            phone("+12025550102"),
            scope("acme", proto::Channel::Sms, "news", "")
        )
        .await
    );

    // Not for a complaint (the person's wish only), nor for someone not opted out (an ordinary
    // "send", confirming nothing).
    let mut complaint = opt_out_request(phone("+12025550103"), sms());
    complaint.reason = proto::Reason::Complaint as i32;
    app.opt_out(complaint).await;
    let answer = app
        .client
        .check_suppressed(confirming("+12025550103"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        answer.suppressed,
        "a complaint is not the person's own opt-out"
    );
    let answer = app
        .client
        .check_suppressed(confirming("+12025550199"))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.suppressed && answer.confirms_receipt_id.is_empty());

    // Past five minutes: blocked, never claimed.
    app.opt_out(opt_out_request(phone("+12025550104"), sms()))
        .await;
    clock.advance(5 * MINUTE + 1);
    let late = app
        .client
        .check_suppressed(confirming("+12025550104"))
        .await
        .unwrap()
        .into_inner();
    assert!(late.suppressed && late.confirms_receipt_id.is_empty());
}

on_both_stores!(
    a_senders_confirmation_is_on_the_trail_once,
    bad_confirmations_are_named_and_append_nothing,
    the_confirmation_goes_once_within_five_minutes_for_the_persons_own_opt_out,
);

in_audit_blocks!(a_senders_confirmation_is_on_the_trail_once,);
