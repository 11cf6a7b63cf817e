//! Bad input: INVALID_ARGUMENT, a message that names the field, and nothing stored.

use crate::helpers::*;
use suppressd::proto::{self, Channel, recipient::Id};
use tonic::Code;

fn recipient(id: Id) -> Option<proto::Recipient> {
    Some(proto::Recipient { id: Some(id) })
}

async fn each_invalid_opt_out_field_is_named_and_nothing_is_stored(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let valid = opt_out_request(
        email("v@example.com"),
        scope("acme", Channel::Email, "", ""),
    );
    let future = prost_types::Timestamp {
        seconds: 4_000_000_000,
        nanos: 0,
    };
    type Edit = Box<dyn Fn(&mut proto::OptOutRequest)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("recipient", Box::new(|r| r.recipient = None)),
        (
            "recipient",
            Box::new(|r| r.recipient = Some(proto::Recipient { id: None })),
        ),
        (
            "recipient.email",
            Box::new(|r| r.recipient = recipient(Id::Email("no-at".into()))),
        ),
        (
            "recipient.email",
            Box::new(|r| r.recipient = recipient(Id::Email(format!("{}@x", "a".repeat(260))))),
        ),
        (
            "recipient.phone",
            Box::new(|r| r.recipient = recipient(Id::Phone("0207 946 0958".into()))),
        ),
        (
            "recipient.user_id",
            Box::new(|r| r.recipient = recipient(Id::UserId("  ".into()))),
        ),
        (
            "recipient.push_token",
            Box::new(|r| r.recipient = recipient(Id::PushToken(String::new()))),
        ),
        (
            "recipient.postal_address",
            Box::new(|r| r.recipient = recipient(Id::PostalAddress("\n".into()))),
        ),
        ("scope", Box::new(|r| r.scope = None)),
        (
            "scope.tenant",
            Box::new(|r| r.scope = Some(scope("a c m e", Channel::Email, "", ""))),
        ),
        (
            "scope.topic",
            Box::new(|r| r.scope = Some(scope("", Channel::Email, &"t".repeat(129), ""))),
        ),
        (
            "scope.campaign",
            Box::new(|r| r.scope = Some(scope("", Channel::Email, "", "ré"))),
        ),
        (
            "scope.channel",
            Box::new(|r| r.scope.as_mut().unwrap().channel = 99),
        ),
        ("reason", Box::new(|r| r.reason = 0)),
        ("reason", Box::new(|r| r.reason = 42)),
        ("source", Box::new(|r| r.source = 0)),
        ("durability", Box::new(|r| r.durability = 7)),
        (
            "idempotency_key",
            Box::new(|r| r.idempotency_key = "k".repeat(129)),
        ),
        ("expires_at", Box::new(move |r| r.expires_at = Some(future))),
        (
            "expires_at",
            Box::new(|r| {
                r.reason = proto::Reason::Bounce as i32;
                r.expires_at = Some(prost_types::Timestamp {
                    seconds: 1_000,
                    nanos: 0,
                });
            }),
        ),
    ];
    for (field, edit) in &cases {
        let mut req = valid.clone();
        edit(&mut req);
        let status = app.client.opt_out(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{field}: {}",
            status.message()
        );
    }
    assert_eq!(app.rows(None).await, 0);
    let added: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(format!("{}stream", app.prefix()))
        .query_async(
            &mut redis::Client::open(redis_url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    let added = match added {
        redis::Value::Map(pairs) => pairs
            .into_iter()
            .find(|(k, _)| matches!(k, redis::Value::BulkString(b) if b == b"entries-added"))
            .map(|(_, v)| v),
        redis::Value::Array(items) => items
            .chunks(2)
            .find(|kv| matches!(&kv[0], redis::Value::BulkString(b) if b == b"entries-added"))
            .map(|kv| kv[1].clone()),
        _ => None,
    };
    assert_eq!(added, Some(redis::Value::Int(0)), "nothing was ever queued");
    assert!(
        !app.is_suppressed(
            email("v@example.com"),
            scope("acme", Channel::Email, "x", "")
        )
        .await
    );
}

async fn each_invalid_check_field_is_named(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let cases = [
        (
            "scope.channel",
            scope("", Channel::Unspecified, "recall", ""),
        ),
        ("scope.topic", scope("", Channel::Email, "", "")),
        (
            "scope.tenant",
            scope(&"t".repeat(65), Channel::Email, "recall", ""),
        ),
    ];
    for (field, s) in cases {
        let status = app
            .client
            .check_suppressed(proto::CheckSuppressedRequest {
                recipient: Some(email("c@example.com")),
                scope: Some(s),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    let mut checks: Vec<_> = (0..5)
        .map(|_| proto::CheckSuppressedRequest {
            recipient: Some(email("c@example.com")),
            scope: Some(scope("", Channel::Sms, "news", "")),
            ..Default::default()
        })
        .collect();
    checks[3].recipient = Some(phone("12"));
    let status = app
        .client
        .check_suppressed_batch(proto::CheckSuppressedBatchRequest { checks })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("checks[3].recipient.phone: "),
        "{}",
        status.message()
    );

    let status = app
        .client
        .get_receipt(proto::GetReceiptRequest {
            receipt_id: "r-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("receipt_id: "));
}

async fn a_batch_over_one_thousand_is_refused(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let check = proto::CheckSuppressedRequest {
        recipient: Some(email("b@example.com")),
        scope: Some(scope("", Channel::Sms, "news", "")),
        ..Default::default()
    };
    let ok = app
        .client
        .check_suppressed_batch(proto::CheckSuppressedBatchRequest {
            checks: vec![check.clone(); 1_000],
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().results.len(), 1_000);
    let status = app
        .client
        .check_suppressed_batch(proto::CheckSuppressedBatchRequest {
            checks: vec![check; 1_001],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "checks: at most 1000 checks per call, got 1001"
    );
}

on_both_stores!(
    each_invalid_opt_out_field_is_named_and_nothing_is_stored,
    each_invalid_check_field_is_named,
    a_batch_over_one_thousand_is_refused,
);
