//! Amazon SES events through SNS (issue 21, item 2): messages built as SNS posts them, signed in the
//! test with an RSA certificate issued by a test CA (Python's `cryptography`, over the string AWS
//! documents, through `tests/sign_webhook.py`), the certificate pinned in the key file.

use crate::{
    helpers::*,
    inbound::{app_with_entries, now_secs, post, sign},
};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};
use suppressd::proto::{self, Channel};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ses-events";
const CERT_URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem";

/// A signing certificate issued by a test CA: its directory (`signing.pem`, `signing.key`).
fn certificate() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sns-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    sign(&["sns-cert", dir.to_str().unwrap()]);
    dir
}

/// The SES entry, pinning `cert`'s certificate for [`CERT_URL`].
fn ses_entry(cert: &Path) -> String {
    let pem = std::fs::read_to_string(cert.join("signing.pem")).unwrap();
    format!(
        "[[inbound]]\nprovider = \"ses\"\ntenant = \"acme\"\ntopic_arns = [\"{TOPIC}\"]\n\
         bounce_expiry_days = 30\n[inbound.certificates]\n\"{CERT_URL}\" = \"\"\"\n{pem}\"\"\"\n\n"
    )
}

/// An SNS message of `kind` carrying `message`, signed with `cert`'s key (`version` 1: SHA-1, 2:
/// SHA-256) at `secs`; `tweak` changes fields before signing.
fn sns(
    cert: &Path,
    version: &str,
    kind: &str,
    message: &str,
    secs: i64,
    tweak: impl FnOnce(&mut serde_json::Value),
) -> String {
    let mut body = serde_json::json!({
        "Type": kind,
        "MessageId": uuid::Uuid::new_v4().to_string(),
        "TopicArn": TOPIC,
        "Message": message,
        "Timestamp": jiff::Timestamp::from_second(secs).unwrap().to_string(),
        "SignatureVersion": version,
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    });
    if kind != "Notification" {
        body["Token"] = "2336412f37fb687f5d51e6e241d638b1".into();
        body["SubscribeURL"] =
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f".into();
    }
    tweak(&mut body);
    let key = cert.join("signing.key");
    body["Signature"] = sign(&["sns", key.to_str().unwrap(), version, &body.to_string()]).into();
    body.to_string()
}

fn bounce(kind: &str, addresses: &[&str]) -> String {
    let recipients: Vec<_> = addresses
        .iter()
        .map(|a| serde_json::json!({"emailAddress": a, "action": "failed", "status": "5.1.1"}))
        .collect();
    serde_json::json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": kind, "bounceSubType": "General",
                   "bouncedRecipients": recipients, "timestamp": "2026-12-04T08:00:00.000Z",
                   "feedbackId": "0100-feedback"},
        "mail": {"messageId": "0100-mail", "source": "news@acme.example",
                 "destination": addresses},
    })
    .to_string()
}

/// A complaint as configuration-set event publishing sends it (`eventType`).
fn complaint(address: &str) -> String {
    serde_json::json!({
        "eventType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": address}],
                      "complaintFeedbackType": "abuse", "feedbackId": "0100-c"},
        "mail": {"messageId": "0100-mail2", "destination": [address]},
    })
    .to_string()
}

async fn deliver(front: SocketAddr, body: &str) -> (u16, String) {
    let reply = post(
        front,
        "/inbound/ses",
        &[],
        "text/plain; charset=UTF-8",
        body,
    )
    .await;
    (reply.status, reply.body)
}

fn email_scope() -> proto::Scope {
    scope("acme", Channel::Email, "news", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ses_permanent_bounces_and_complaints_are_recorded_once_with_either_signature() {
    let cert = certificate();
    let mut app = app_with_entries(&ses_entry(&cert), |_| {}).await;
    let front = app.http_addr.unwrap();
    let now = now_secs();
    let hard = sns(
        &cert,
        "1",
        "Notification",
        &bounce("Permanent", &["a@example.com", "b@example.com"]),
        now,
        |_| {},
    );
    let (status, answer) = deliver(front, &hard).await;
    assert_eq!(
        (status, answer.contains("recorded")),
        (200, true),
        "{answer}"
    );
    let spam = sns(
        &cert,
        "2",
        "Notification",
        &complaint("spam@example.com"),
        now,
        |m| {
            m["Subject"] = "Amazon SES Email Event Notification".into();
        },
    );
    assert_eq!(deliver(front, &spam).await.0, 200);
    for (message, what) in [
        (
            bounce("Transient", &["soft@example.com"]),
            "a transient bounce",
        ),
        (
            bounce("Undetermined", &["soft@example.com"]),
            "an undetermined bounce",
        ),
        (
            serde_json::json!({"notificationType": "Delivery",
                               "mail": {"destination": ["soft@example.com"]}})
            .to_string(),
            "a delivery",
        ),
        (
            "Successfully validated SNS topic for Amazon SES event publishing.".into(),
            "setup text",
        ),
    ] {
        let body = sns(&cert, "2", "Notification", &message, now, |_| {});
        let (status, answer) = deliver(front, &body).await;
        assert_eq!(
            (status, answer.contains("ignored")),
            (200, true),
            "{what}: {answer}"
        );
    }
    for who in ["a@example.com", "b@example.com"] {
        let matched = app
            .check(email(who), email_scope())
            .await
            .matched
            .expect(who);
        assert_eq!(matched.reason, proto::Reason::Bounce as i32);
        assert!(matched.expires_at.is_some(), "a bounce expires");
    }
    let matched = app
        .check(email("spam@example.com"), email_scope())
        .await
        .matched
        .unwrap();
    assert_eq!(matched.reason, proto::Reason::Complaint as i32);
    assert!(matched.expires_at.is_none(), "a complaint never expires");
    assert!(
        !app.is_suppressed(email("soft@example.com"), email_scope())
            .await
    );
    assert_eq!(app.rows(None).await, 3);
    // SNS delivers again (same message id): nothing new.
    assert_eq!(deliver(front, &hard).await.0, 200);
    assert_eq!(deliver(front, &spam).await.0, 200);
    assert_eq!(app.rows(None).await, 3);
    let _ = std::fs::remove_dir_all(cert);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_or_foreign_sns_messages_are_refused_and_record_nothing() {
    let cert = certificate();
    let other = certificate();
    let app = app_with_entries(&ses_entry(&cert), |_| {}).await;
    let front = app.http_addr.unwrap();
    let now = now_secs();
    let message = bounce("Permanent", &["x@example.com"]);
    let refusals = [
        (
            "signed by another key",
            sns(&other, "2", "Notification", &message, now, |_| {}),
            403,
            "bad_signature",
        ),
        (
            "ten minutes old",
            sns(&cert, "2", "Notification", &message, now - 600, |_| {}),
            403,
            "stale",
        ),
        (
            "a certificate off SNS",
            sns(&cert, "2", "Notification", &message, now, |m| {
                m["SigningCertURL"] =
                    "https://sns.us-east-1.amazonaws.com.evil.example/c.pem".into();
            }),
            403,
            "untrusted_certificate",
        ),
        (
            "an SNS certificate not pinned",
            sns(&cert, "2", "Notification", &message, now, |m| {
                m["SigningCertURL"] = "https://sns.us-east-1.amazonaws.com/Other.pem".into();
            }),
            403,
            "untrusted_certificate",
        ),
        (
            "an unknown signature version",
            sns(&cert, "3", "Notification", &message, now, |_| {}),
            403,
            "bad_signature",
        ),
        (
            "a topic no account lists",
            sns(&cert, "2", "Notification", &message, now, |m| {
                m["TopicArn"] = "arn:aws:sns:us-east-1:123456789012:other".into();
            }),
            404,
            "unknown_number",
        ),
        (
            "not an SNS message",
            "{\"Type\": \"Notification\"}".to_owned(),
            400,
            "malformed",
        ),
    ];
    for (what, body, status, cause) in refusals {
        let (got, answer) = deliver(front, &body).await;
        assert_eq!(
            (got, answer.contains(cause)),
            (status, true),
            "{what}: {answer}"
        );
    }
    // Signed, then changed: the address, or a subject added.
    let signed = sns(&cert, "1", "Notification", &message, now, |_| {});
    let tampered = signed.replace("x@example.com", "y@example.com");
    assert_eq!(deliver(front, &tampered).await.0, 403);
    let mut with_subject: serde_json::Value = serde_json::from_str(&signed).unwrap();
    with_subject["Subject"] = "added".into();
    assert_eq!(deliver(front, &with_subject.to_string()).await.0, 403);
    assert_eq!(app.rows(None).await, 0);
    let _ = std::fs::remove_dir_all(cert);
    let _ = std::fs::remove_dir_all(other);
}

/// A subscription confirmation is confirmed only at an SNS URL; when SNS cannot be reached (as
/// here: no internet), 503, so SNS asks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_confirmed_only_at_sns() {
    let cert = certificate();
    let app = app_with_entries(&ses_entry(&cert), |_| {}).await;
    let front = app.http_addr.unwrap();
    let message = "You have chosen to subscribe to the topic. To confirm, visit the SubscribeURL.";
    let foreign = sns(
        &cert,
        "2",
        "SubscriptionConfirmation",
        message,
        now_secs(),
        |m| {
            m["SubscribeURL"] = "https://attacker.example/?Action=ConfirmSubscription".into();
        },
    );
    let (status, answer) = deliver(front, &foreign).await;
    assert_eq!(
        (status, answer.contains("malformed")),
        (400, true),
        "{answer}"
    );
    let at_sns = sns(
        &cert,
        "2",
        "SubscriptionConfirmation",
        message,
        now_secs(),
        |_| {},
    );
    let (status, answer) = deliver(front, &at_sns).await;
    assert_eq!(
        (status, answer.contains("unavailable")),
        (503, true),
        "{answer}"
    );
    let unsubscribed = sns(
        &cert,
        "2",
        "UnsubscribeConfirmation",
        message,
        now_secs(),
        |_| {},
    );
    assert_eq!(deliver(front, &unsubscribed).await.0, 200);
    assert_eq!(app.rows(None).await, 0);
    let _ = std::fs::remove_dir_all(cert);
}
