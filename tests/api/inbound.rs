//! What people text to a tenant's number (issue 21): Twilio's messaging webhook and Standard Webhooks,
//! as each provider sends them, signed in the test by the provider's own library
//! (`tests/sign_webhook.py`: twilio's `RequestValidator`, `standardwebhooks`), not by our code.

use crate::{helpers::*, processes::*};
use std::{net::SocketAddr, path::PathBuf, process::Command};
use suppressd::{
    domain::Clock,
    proto::{self, Channel},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TWILIO_NUMBER: &str = "+15005550006";
const TWILIO_TOKEN: &str = "twilio-auth-token-0123456789abcdef";
const SMS_NUMBER: &str = "+15005550007";
/// `whsec_` + base64 of 24 bytes of 0x42.
const SMS_SECRET: &str = "whsec_QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJC";

fn key_file(extra: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("suppressd-inbound-{}.toml", uuid::Uuid::new_v4()));
    let text = key_file_text(&[(TOKEN_KEY.0, TOKEN_KEY.1, true)])
        + extra
        + &format!(
            "[[inbound]]\nprovider = \"twilio\"\nsecret = \"{TWILIO_TOKEN}\"\ntenant = \"acme\"\n\
             numbers = [\"{TWILIO_NUMBER}\"]\nstop_reply = \"Acme: you are unsubscribed & will get no more texts.\"\n\n\
             [[inbound]]\nprovider = \"sms\"\nsecret = \"{SMS_SECRET}\"\ntenant = \"acme\"\n\
             numbers = [\"{SMS_NUMBER}\"]\n"
        );
    std::fs::write(&path, text).unwrap();
    path
}

async fn app_with(tweak: impl FnOnce(&mut suppressd::config::ServeSettings)) -> TestApp {
    app_with_entries("", tweak).await
}

/// A server with the HTTP front and a key file holding the SMS accounts and `extra` entries.
pub(crate) async fn app_with_entries(
    extra: &str,
    tweak: impl FnOnce(&mut suppressd::config::ServeSettings),
) -> TestApp {
    let keys = key_file(extra);
    spawn_app_with(Backend::Sqlite, Clock::System, move |s| {
        s.http_listen = Some("127.0.0.1:0".parse().unwrap());
        s.auth.keys = Some(keys);
        tweak(s);
    })
    .await
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
}

pub(crate) async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    ct: &str,
    body: &str,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\
         Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    Reply {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        body: body.to_owned(),
    }
}

/// The provider's own library, through `tests/sign_webhook.py`.
pub(crate) fn sign(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/sign_webhook.py"
        ))
        .args(args)
        .env(
            "PYTHONPATH",
            std::env::var("SUPPRESSD_TEST_PYTHONPATH").unwrap_or_default(),
        )
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "signing failed (scripts/test installs twilio and standardwebhooks): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The form Twilio posts for an incoming SMS.
fn twilio_form(from: &str, to: &str, body: &str, sid: &str) -> Vec<(String, String)> {
    [
        ("ToCountry", "US"),
        ("ToState", "CA"),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("ToCity", ""),
        ("FromZip", "94105"),
        ("SmsSid", sid),
        ("FromState", "CA"),
        ("SmsStatus", "received"),
        ("FromCity", "SAN FRANCISCO"),
        ("Body", body),
        ("FromCountry", "US"),
        ("To", to),
        ("ToZip", ""),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("From", from),
        ("ApiVersion", "2010-04-01"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn twilio(front: SocketAddr, form: &[(String, String)], signature: Option<String>) -> Reply {
    let body = serde_urlencoded::to_string(form).unwrap();
    let headers: Vec<(&str, String)> = signature
        .map(|s| vec![("X-Twilio-Signature", s)])
        .unwrap_or_default();
    post(
        front,
        "/inbound/twilio",
        &headers,
        "application/x-www-form-urlencoded",
        &body,
    )
    .await
}

fn twilio_signature(front: SocketAddr, form: &[(String, String)]) -> String {
    let params: serde_json::Map<String, serde_json::Value> = form
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let url = format!("http://{front}/inbound/twilio");
    sign(&[
        "twilio",
        TWILIO_TOKEN,
        &url,
        &serde_json::Value::Object(params).to_string(),
    ])
}

/// A text delivered by Twilio, signed as Twilio signs it.
async fn text(front: SocketAddr, from: &str, body: &str, sid: &str) -> Reply {
    let form = twilio_form(from, TWILIO_NUMBER, body, sid);
    let signature = twilio_signature(front, &form);
    twilio(front, &form, Some(signature)).await
}

fn sms_scope() -> proto::Scope {
    scope("acme", Channel::Sms, "alerts", "")
}

async fn texts_blocked(app: &mut TestApp, number: &str) -> bool {
    app.is_suppressed(phone(number), sms_scope()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_then_start_by_twilio_and_a_redelivery_records_nothing_new() {
    let mut app = app_with(|_| {}).await;
    let front = app.http_addr.unwrap();
    let person = "+14155550101";

    let stop = text(front, person, "STOP", "SM0001").await;
    assert_eq!(stop.status, 200, "{}", stop.body);
    assert!(
        stop.body.contains(
            "<Message>Acme: you are unsubscribed &amp; will get no more texts.</Message>"
        ),
        "{}",
        stop.body
    );
    assert!(texts_blocked(&mut app, person).await);
    assert!(
        !app.is_suppressed(phone(person), scope("acme", Channel::Email, "alerts", ""))
            .await,
        "only texts"
    );
    assert_eq!(app.rows(None).await, 1);
    let receipt = app
        .check(phone(person), sms_scope())
        .await
        .matched
        .unwrap()
        .receipt_id;
    assert_eq!(
        app.actor_and_source(&receipt).await,
        (
            format!("twilio:{TWILIO_NUMBER}"),
            proto::Source::SmsKeyword as i64
        )
    );

    // The reply is the confirmation, on the trail under the opt-out's receipt.
    let confirmations = |app: &mut TestApp| {
        let mut client = app.client.clone();
        let receipt_id = receipt.clone();
        async move {
            client
                .get_receipt(proto::GetReceiptRequest { receipt_id })
                .await
                .unwrap()
                .into_inner()
                .confirmations
        }
    };
    let told = confirmations(&mut app).await;
    assert_eq!(told.len(), 1);
    assert_eq!(
        (told[0].actor.as_str(), told[0].channel),
        ("suppressd", proto::Channel::Sms as i32)
    );
    assert_eq!(told[0].provider_message_id, "reply to twilio:SM0001");
    let reply = "Acme: you are unsubscribed & will get no more texts.";
    assert_eq!(
        told[0].content_sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(reply))
    );

    // Twilio redelivers (a timeout on its side): the same message records nothing new, but the
    // reply goes again, and so is on the trail again.
    let again = text(front, person, "STOP", "SM0001").await;
    assert_eq!(again.status, 200);
    assert_eq!(app.rows(None).await, 1);
    assert_eq!(confirmations(&mut app).await.len(), 2);

    let start = text(front, person, "start", "SM0002").await;
    assert_eq!(start.status, 200);
    assert!(
        start
            .body
            .contains("You will receive text messages from acme again")
    );
    assert!(!texts_blocked(&mut app, person).await, "opted in by START");
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = 'opt_in' AND receipt_id = $1",
    )
    .bind(&receipt)
    .fetch_one(&sqlx::SqlitePool::connect(&app.db.url).await.unwrap())
    .await
    .unwrap();
    assert_eq!(detail, "keyword START via twilio (message SM0002)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_keyword_counts_and_near_misses_record_nothing() {
    let mut app = app_with(|_| {}).await;
    let front = app.http_addr.unwrap();
    let stops = [
        "STOP",
        "stopall",
        "Unsubscribe",
        "CANCEL",
        "end",
        "QUIT",
        "revoke",
        "OPTOUT",
        " Stop. ",
        "STOP!",
    ];
    for (i, word) in stops.iter().enumerate() {
        let person = format!("+1415555{:04}", 1000 + i);
        let reply = text(front, &person, word, &format!("SMK{i}")).await;
        assert_eq!(reply.status, 200, "{word}");
        assert!(reply.body.contains("<Message>"), "{word}: {}", reply.body);
        assert!(texts_blocked(&mut app, &person).await, "{word}");
    }
    let rows = app.rows(None).await;
    for (i, text_body) in ["stop please", "STOP ALL", "Stopp", "hello", ""]
        .iter()
        .enumerate()
    {
        let person = format!("+1415556{:04}", 1000 + i);
        let reply = text(front, &person, text_body, &format!("SMN{i}")).await;
        assert_eq!(reply.status, 200, "{text_body:?}");
        assert!(
            reply.body.ends_with("<Response/>"),
            "{text_body:?}: {}",
            reply.body
        );
        assert!(!texts_blocked(&mut app, &person).await, "{text_body:?}");
    }
    for word in ["HELP", "info"] {
        let reply = text(front, "+14155557000", word, "SMH").await;
        assert!(reply.body.contains("Reply STOP to stop"), "{}", reply.body);
    }
    assert_eq!(app.rows(None).await, rows, "nothing recorded for them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_forged_unknown_and_malformed_webhooks_are_refused_and_record_nothing() {
    let app = app_with(|_| {}).await;
    let front = app.http_addr.unwrap();
    let person = "+14155550199";
    let form = twilio_form(person, TWILIO_NUMBER, "STOP", "SMX1");
    let good = twilio_signature(front, &form);

    assert_eq!(twilio(front, &form, None).await.status, 403, "unsigned");
    assert_eq!(
        twilio(front, &form, Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()))
            .await
            .status,
        403,
        "a wrong signature"
    );
    let mut tampered = form.clone();
    tampered.iter_mut().find(|(k, _)| k == "From").unwrap().1 = "+14155550100".into();
    assert_eq!(
        twilio(front, &tampered, Some(good.clone())).await.status,
        403,
        "another person"
    );
    let other_number = twilio_form(person, "+15005550999", "STOP", "SMX2");
    let signed = twilio_signature(front, &other_number);
    assert_eq!(
        twilio(front, &other_number, Some(signed)).await.status,
        404,
        "unknown number"
    );
    let no_from: Vec<_> = form.iter().filter(|(k, _)| k != "From").cloned().collect();
    let signed = twilio_signature(front, &no_from);
    assert_eq!(
        twilio(front, &no_from, Some(signed)).await.status,
        400,
        "no From"
    );
    assert_eq!(app.rows(None).await, 0);
    assert_eq!(
        count_audit(&app).await,
        0,
        "no audit entry for anything refused"
    );
}

async fn count_audit(app: &TestApp) -> i64 {
    let pool = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap()
}

async fn standard(
    front: SocketAddr,
    body: &str,
    id: &str,
    at: i64,
    signature: Option<String>,
) -> Reply {
    let mut headers = vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", at.to_string()),
    ];
    if let Some(s) = signature {
        headers.push(("webhook-signature", s));
    }
    post(front, "/inbound/sms", &headers, "application/json", body).await
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_stop_is_verified_and_replays_are_refused() {
    let mut app = app_with(|_| {}).await;
    let front = app.http_addr.unwrap();
    let person = "+14155550123";
    let body = serde_json::json!({
        "from": person, "to": SMS_NUMBER, "body": "Stop", "message_id": "msg-1",
    })
    .to_string();
    let now = now_secs();
    let signature = sign(&["standard", SMS_SECRET, "wh_1", &now.to_string(), &body]);

    let reply = standard(front, &body, "wh_1", now, Some(signature.clone())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(answer["outcome"], "opted_out");
    assert!(answer["reply"].as_str().unwrap().contains("Reply START"));
    assert!(texts_blocked(&mut app, person).await);
    // Redelivered by the provider: the same message id records nothing new.
    let again = standard(front, &body, "wh_1", now, Some(signature.clone())).await;
    assert_eq!(again.status, 200);
    assert_eq!(app.rows(None).await, 1);

    // Refused: a signature over another body, none, and an old (replayed) timestamp.
    let other = body.replace("msg-1", "msg-2");
    assert_eq!(
        standard(front, &other, "wh_1", now, Some(signature))
            .await
            .status,
        403
    );
    assert_eq!(standard(front, &other, "wh_2", now, None).await.status, 403);
    let old = now - 600;
    let stale = sign(&["standard", SMS_SECRET, "wh_3", &old.to_string(), &other]);
    let replayed = standard(front, &other, "wh_3", old, Some(stale)).await;
    assert_eq!(replayed.status, 403);
    assert!(replayed.body.contains("stale"), "{}", replayed.body);
    assert_eq!(
        standard(front, "{not json", "wh_4", now, None).await.status,
        400
    );
    assert_eq!(app.rows(None).await, 1);
}

/// Redis and the store both gone: 503, which providers retry; the redelivery is taken once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_503_and_the_redelivery_is_taken() {
    let pg = PrivatePostgres::start().await;
    let mut redis = PrivateRedis::start().await;
    let (store_url, redis_url) = (pg.url(), redis.url());
    let mut app = app_with(move |s| {
        s.store_url = store_url;
        s.redis.redis_url = redis_url;
        s.write_behind.durable_wait_ms = 500;
    })
    .await;
    let front = app.http_addr.unwrap();
    let person = "+14155550777";
    redis.kill();
    pg.stop_immediate();
    let reply = text(front, person, "STOP", "SMO1").await;
    assert_eq!(reply.status, 503, "{}", reply.body);

    pg.start_again().await;
    redis.restart().await;
    let mut taken = None;
    for _ in 0..100 {
        let reply = text(front, person, "STOP", "SMO1").await;
        if reply.status == 200 {
            taken = Some(reply);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        taken.is_some(),
        "the redelivery is taken once both are back"
    );
    let again = text(front, person, "STOP", "SMO1").await;
    assert_eq!(again.status, 200);
    assert!(texts_blocked(&mut app, person).await);
    // The 200 may have come after the durable wait (500 ms here) with the record still queued: the
    // worker is then backing off from the outage. It commits the record once, however late.
    let mut rows = 0;
    for _ in 0..200 {
        rows = app.rows(None).await;
        if rows > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(rows, 1, "one record for the message");
}
