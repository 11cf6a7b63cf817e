//! The write path: receipts, durability, idempotency, expiry.

use crate::helpers::*;
use suppressd::{
    domain::Clock,
    proto::{self, Channel, ReceiptState},
};
use tonic::Code;

async fn a_durable_receipt_means_the_row_is_in_the_store(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let receipt = app
        .opt_out(opt_out_request(
            email("d@example.com"),
            scope("", Channel::Sms, "", ""),
        ))
        .await;
    assert_eq!(receipt.state, ReceiptState::Durable as i32);
    assert_eq!(app.rows(Some(&receipt.receipt_id)).await, 1);
    let fetched = app
        .client
        .get_receipt(proto::GetReceiptRequest {
            receipt_id: receipt.receipt_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let proof = fetched
        .proof
        .clone()
        .expect("a durable receipt carries its audit proof");
    assert_eq!(proof.log_index, 0);
    assert_eq!(
        proto::Receipt {
            proof: None,
            ..fetched
        },
        receipt
    );
}

async fn an_accepted_receipt_becomes_durable_in_order(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mut first = opt_out_request(email("a1@example.com"), scope("", Channel::Sms, "", ""));
    first.durability = proto::Durability::Accepted as i32;
    let accepted = app.opt_out(first).await;
    assert_ne!(accepted.state, ReceiptState::Unspecified as i32);
    // Visible at once, whatever the store has done.
    assert!(
        app.is_suppressed(email("a1@example.com"), scope("", Channel::Sms, "x", ""))
            .await
    );
    // The worker commits in order of arrival: once a later DURABLE opt-out is durable, so is this.
    let later = app
        .opt_out(opt_out_request(
            email("a2@example.com"),
            scope("", Channel::Sms, "", ""),
        ))
        .await;
    assert_eq!(later.state, ReceiptState::Durable as i32);
    let now = app
        .client
        .get_receipt(proto::GetReceiptRequest {
            receipt_id: accepted.receipt_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.state, ReceiptState::Durable as i32);
    assert_eq!(now.accepted_at, accepted.accepted_at);
}

async fn replays_with_one_idempotency_key_leave_one_row(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mut req = opt_out_request(
        email("i@example.com"),
        scope("acme", Channel::Email, "", ""),
    );
    req.idempotency_key = "stop-msg-42".into();
    let first = app.opt_out(req.clone()).await;
    for _ in 0..5 {
        let again = app.opt_out(req.clone()).await;
        assert_eq!(again.receipt_id, first.receipt_id);
        assert_eq!(again.accepted_at, first.accepted_at);
    }
    // Even concurrent replays of a new key settle on one receipt.
    let mut concurrent = req.clone();
    concurrent.idempotency_key = "stop-msg-43".into();
    let replays = (0..8).map(|_| {
        let mut client = app.client.clone();
        let req = concurrent.clone();
        tokio::spawn(async move {
            client
                .opt_out(req)
                .await
                .unwrap()
                .into_inner()
                .receipt
                .unwrap()
        })
    });
    let receipts: Vec<_> = futures_join(replays).await;
    assert!(
        receipts
            .iter()
            .all(|r| r.receipt_id == receipts[0].receipt_id)
    );
    // Replays after Redis forgot the key are answered from the store.
    app.flush_redis();
    app.restart().await;
    let after_restart = app.opt_out(req).await;
    assert_eq!(after_restart.receipt_id, first.receipt_id);
    assert_eq!(after_restart.state, ReceiptState::Durable as i32);
    assert_eq!(app.rows(None).await, 2);
    // The same key in another tenant is another opt-out.
    let mut other = concurrent.clone();
    other.scope = Some(scope("globex", Channel::Email, "", ""));
    let elsewhere = app.opt_out(other).await;
    assert_ne!(elsewhere.receipt_id, receipts[0].receipt_id);
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn expired_system_suppressions_stop_suppressing(backend: Backend) {
    let start = 1_900_000_000_000;
    let clock = Clock::manual(start);
    let mut app = spawn_app_with(backend, clock.clone(), |_| {}).await;
    let hour = 3_600_000;
    let bounced = email("bounce@example.com");
    let mut req = opt_out_request(bounced.clone(), scope("", Channel::Email, "", ""));
    req.reason = proto::Reason::Bounce as i32;
    req.source = proto::Source::Api as i32;
    req.expires_at = Some(prost_types::Timestamp {
        seconds: (start + hour) / 1000,
        nanos: 0,
    });
    app.opt_out(req).await;
    // A person's own opt-out on another channel never expires.
    app.opt_out(opt_out_request(
        bounced.clone(),
        scope("", Channel::Sms, "", ""),
    ))
    .await;
    let notice = scope("", Channel::Email, "news", "");
    assert!(app.is_suppressed(bounced.clone(), notice.clone()).await);

    clock.advance(hour + 1);
    assert!(
        !app.is_suppressed(bounced.clone(), notice.clone()).await,
        "expired in the cache"
    );
    assert!(
        app.is_suppressed(bounced.clone(), scope("", Channel::Sms, "x", ""))
            .await
    );

    // The store agrees, when it is the one answering.
    app.flush_redis();
    app.restart().await;
    assert!(
        !app.is_suppressed(bounced.clone(), notice).await,
        "expired in the store"
    );
    assert!(
        app.is_suppressed(bounced, scope("", Channel::Sms, "x", ""))
            .await
    );
}

async fn an_unknown_receipt_is_not_found(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let status = app
        .client
        .get_receipt(proto::GetReceiptRequest {
            receipt_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

on_both_stores!(
    a_durable_receipt_means_the_row_is_in_the_store,
    an_accepted_receipt_becomes_durable_in_order,
    replays_with_one_idempotency_key_leave_one_row,
    expired_system_suppressions_stop_suppressing,
    an_unknown_receipt_is_not_found,
);

on_cluster!(
    a_durable_receipt_means_the_row_is_in_the_store,
    an_accepted_receipt_becomes_durable_in_order,
    replays_with_one_idempotency_key_leave_one_row,
    expired_system_suppressions_stop_suppressing,
    an_unknown_receipt_is_not_found,
);
