//! Mail providers' events (issue 21, item 2): Mailgun and SendGrid webhooks as each provider sends
//! them, signed in the test as the provider documents (Python's `hmac` for Mailgun, `cryptography`'s
//! ECDSA P-256 for SendGrid, through `tests/sign_webhook.py`).

use crate::{
    helpers::*,
    inbound::{app_with_entries, now_secs, post, sign},
};
use std::net::SocketAddr;
use suppressd::proto::{self, Channel};

const MAILGUN_KEY: &str = "key-mailgun-signing-0123456789";

fn mailgun_entry() -> String {
    format!(
        "[[inbound]]\nprovider = \"mailgun\"\nsecret = \"{MAILGUN_KEY}\"\ntenant = \"acme\"\n\
         bounce_expiry_days = 30\n\n"
    )
}

fn email_scope(topic: &str) -> proto::Scope {
    scope("acme", Channel::Email, topic, "")
}

/// A Mailgun event webhook, signed with `key` at `timestamp`.
fn mailgun_body(key: &str, timestamp: i64, event: serde_json::Value) -> String {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let signature = sign(&["mailgun", key, &timestamp.to_string(), &token]);
    serde_json::json!({
        "signature": {"timestamp": timestamp.to_string(), "token": token, "signature": signature},
        "event-data": event,
    })
    .to_string()
}

async fn mailgun(front: SocketAddr, body: &str) -> (u16, String) {
    let reply = post(front, "/inbound/mailgun", &[], "application/json", body).await;
    (reply.status, reply.body)
}

fn mailgun_event(event: &str, severity: &str, to: &str, id: &str) -> serde_json::Value {
    serde_json::json!({
        "event": event, "severity": severity, "recipient": to, "id": id,
        "timestamp": 1_521_233_195.375_624, "log-level": "error",
        "message": {"headers": {"message-id": "20180316213225.1.5E5F4D0B@example.com"}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailgun_bounces_complaints_and_unsubscribes_are_recorded_once() {
    let mut app = app_with_entries(&mailgun_entry(), |_| {}).await;
    let front = app.http_addr.unwrap();
    let now = now_secs();
    let cases = [
        (
            "failed",
            "permanent",
            "hard@example.com",
            "ev-1",
            Some(proto::Reason::Bounce),
        ),
        (
            "complained",
            "",
            "spam@example.com",
            "ev-2",
            Some(proto::Reason::Complaint),
        ),
        (
            "unsubscribed",
            "",
            "unsub@example.com",
            "ev-3",
            Some(proto::Reason::UserRequest),
        ),
        ("failed", "temporary", "soft@example.com", "ev-4", None),
        ("delivered", "", "ok@example.com", "ev-5", None),
    ];
    for (event, severity, to, id, reason) in cases {
        let body = mailgun_body(MAILGUN_KEY, now, mailgun_event(event, severity, to, id));
        let (status, answer) = mailgun(front, &body).await;
        assert_eq!(status, 200, "{event}: {answer}");
        let check = app.check(email(to), email_scope("news")).await;
        match reason {
            Some(reason) => {
                let matched = check.matched.expect(to);
                assert_eq!(matched.reason, reason as i32, "{event}");
                assert_eq!(matched.source, proto::Source::Api as i32);
                assert_eq!(
                    matched.expires_at.is_some(),
                    reason == proto::Reason::Bounce,
                    "only a bounce expires"
                );
            }
            None => assert!(!check.suppressed, "{event} {severity} records nothing"),
        }
        // Redelivered: nothing new.
        mailgun(front, &body).await;
    }
    assert_eq!(app.rows(None).await, 3);
    assert!(
        !app.is_suppressed(
            email("hard@example.com"),
            scope("acme", Channel::Sms, "news", "")
        )
        .await,
        "only email"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_replayed_mailgun_events_are_refused() {
    let app = app_with_entries(&mailgun_entry(), |_| {}).await;
    let front = app.http_addr.unwrap();
    let event = mailgun_event("complained", "", "x@example.com", "ev-9");
    let forged = mailgun_body("another-key", now_secs(), event.clone());
    assert_eq!(mailgun(front, &forged).await.0, 403);
    let old = mailgun_body(MAILGUN_KEY, now_secs() - 600, event.clone());
    let (status, body) = mailgun(front, &old).await;
    assert_eq!((status, body.contains("stale")), (403, true), "{body}");
    let mut tampered: serde_json::Value =
        serde_json::from_str(&mailgun_body(MAILGUN_KEY, now_secs(), event)).unwrap();
    tampered["signature"]["token"] = "other-token".into();
    assert_eq!(mailgun(front, &tampered.to_string()).await.0, 403);
    assert_eq!(mailgun(front, "{\"signature\": 1}").await.0, 400);
    assert_eq!(app.rows(None).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendgrid_events_are_verified_with_the_ecdsa_key_and_groups_map_to_topics() {
    let pem = std::env::temp_dir().join(format!("sendgrid-{}.pem", uuid::Uuid::new_v4()));
    let public_key = sign(&["sendgrid-key", pem.to_str().unwrap()]);
    let entry = format!(
        "[[inbound]]\nprovider = \"sendgrid\"\npublic_key = \"{public_key}\"\ntenant = \"acme\"\n\
         groups = {{ \"4242\" = \"newsletter\" }}\n\n"
    );
    let mut app = app_with_entries(&entry, |_| {}).await;
    let front = app.http_addr.unwrap();
    let events = serde_json::json!([
        {"email": "bounced@example.com", "timestamp": 1_700_000_000, "event": "bounce",
         "type": "bounce", "sg_event_id": "sg-1", "sg_message_id": "m1", "reason": "550 5.1.1"},
        {"email": "blocked@example.com", "timestamp": 1_700_000_000, "event": "bounce",
         "type": "blocked", "sg_event_id": "sg-2"},
        {"email": "spam@example.com", "timestamp": 1_700_000_000, "event": "spamreport",
         "sg_event_id": "sg-3"},
        {"email": "group@example.com", "timestamp": 1_700_000_000, "event": "group_unsubscribe",
         "asm_group_id": 4242, "sg_event_id": "sg-4"},
        {"email": "opened@example.com", "timestamp": 1_700_000_000, "event": "open",
         "sg_event_id": "sg-5"},
    ])
    .to_string();
    let now = now_secs().to_string();
    let signature = sign(&["sendgrid", pem.to_str().unwrap(), &now, &events]);
    let headers = [
        ("X-Twilio-Email-Event-Webhook-Signature", signature.clone()),
        ("X-Twilio-Email-Event-Webhook-Timestamp", now.clone()),
    ];
    let reply = post(
        front,
        "/inbound/sendgrid",
        &headers,
        "application/json",
        &events,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        app.is_suppressed(email("bounced@example.com"), email_scope("news"))
            .await
    );
    assert!(
        !app.is_suppressed(email("blocked@example.com"), email_scope("news"))
            .await
    );
    assert!(
        app.is_suppressed(email("spam@example.com"), email_scope("news"))
            .await
    );
    assert!(
        app.is_suppressed(email("group@example.com"), email_scope("newsletter"))
            .await
    );
    assert!(
        !app.is_suppressed(email("group@example.com"), email_scope("recall"))
            .await,
        "a group unsubscribe covers its topic only"
    );
    assert!(
        !app.is_suppressed(email("opened@example.com"), email_scope("news"))
            .await
    );
    assert_eq!(app.rows(None).await, 3);

    // Redelivered whole: nothing new. Tampered, unsigned or stale: refused, nothing recorded.
    let again = post(
        front,
        "/inbound/sendgrid",
        &headers,
        "application/json",
        &events,
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(app.rows(None).await, 3);
    let tampered = events.replace("spam@example.com", "other@example.com");
    let reply = post(
        front,
        "/inbound/sendgrid",
        &headers,
        "application/json",
        &tampered,
    )
    .await;
    assert_eq!(reply.status, 403);
    let unsigned = post(
        front,
        "/inbound/sendgrid",
        &[],
        "application/json",
        &tampered,
    )
    .await;
    assert_eq!(unsigned.status, 403);
    let old = (now_secs() - 600).to_string();
    let stale_signature = sign(&["sendgrid", pem.to_str().unwrap(), &old, &tampered]);
    let stale = [
        ("X-Twilio-Email-Event-Webhook-Signature", stale_signature),
        ("X-Twilio-Email-Event-Webhook-Timestamp", old),
    ];
    let reply = post(
        front,
        "/inbound/sendgrid",
        &stale,
        "application/json",
        &tampered,
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(app.rows(None).await, 3);
    let _ = std::fs::remove_file(pem);
}
