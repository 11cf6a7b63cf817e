//! The future-version test (docs/compatibility.md): what a hypothetical next release could leave
//! in the shared Redis while this one runs beside it. Entries of a newer format are left for a
//! newer worker, never dead-lettered; entries that only add fields are read; a cached value this
//! version cannot read never yields "send"; a newer replica's controls report is read.

use crate::helpers::*;
use redis::Commands;
use std::time::Duration;
use suppressd::proto;

fn redis(app: &TestApp) -> redis::Connection {
    let _ = app;
    redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// A stream entry as this release writes it (format 1), with `extra` merged in.
fn entry(receipt: &str, subject: &str, extra: serde_json::Value) -> String {
    let now = chrono_millis();
    let mut e = serde_json::json!({
        "v": 1, "receipt": receipt, "subject": subject, "tenant": "", "channel": 1,
        "topic": "news", "campaign": "", "reason": 1, "source": 1, "actor": "next-release",
        "received_at": now, "effective_at": now, "expires_at": null, "idempotency_key": null,
    });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e.to_string()
}

fn chrono_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn receipt_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_format_in_the_stream_is_left_for_a_newer_worker_and_extra_fields_are_read() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut r = redis(&app);
    let stream = format!("{}stream", app.prefix());

    // Format 2: this release cannot know what it means.
    let newer: String = r
        .xadd(
            &stream,
            "*",
            &[(
                "r",
                serde_json::json!({"v": 2, "receipts": ["whatever a v2 holds"]}).to_string(),
            )],
        )
        .unwrap();
    // Format 1 with fields a next release added: read, committed.
    let readable_receipt = receipt_id();
    r.xadd::<_, _, _, _, String>(
        &stream,
        "*",
        &[(
            "r",
            entry(
                &readable_receipt,
                &"ab".repeat(32),
                serde_json::json!({"sealed_identifier": "…", "priority": 3}),
            ),
        )],
    )
    .unwrap();

    wait_until("the format-1 entry is committed", async || {
        app.rows(Some(&readable_receipt)).await == 1
    })
    .await;
    wait_until("the newer entry is parked", async || {
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&stream)
            .arg("suppressd-writers")
            .arg("-")
            .arg("+")
            .arg(10)
            .arg("newer-version")
            .query(&mut r)
            .unwrap();
        pending.iter().any(|(id, ..)| *id == newer)
    })
    .await;

    // Several claim cycles later it is still there, unacknowledged, and nothing was dead-lettered.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let still: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg(&newer)
        .arg(&newer)
        .query(&mut r)
        .unwrap();
    assert_eq!(still.len(), 1, "the newer entry stays in the stream");
    let dead: usize = r.xlen(format!("{}dead-letters", app.prefix())).unwrap();
    assert_eq!(dead, 0, "nothing is dead-lettered");

    // A newer worker takes it at once (no idle wait), as the parked consumer holds it.
    let taken: redis::streams::StreamRangeReply = redis::cmd("XCLAIM")
        .arg(&stream)
        .arg("suppressd-writers")
        .arg("v2-worker")
        .arg(0)
        .arg(&newer)
        .query(&mut r)
        .unwrap();
    assert_eq!(taken.ids.len(), 1);
    app.flush_redis();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_value_this_version_cannot_read_never_answers_send() {
    let mut app = spawn_app_with(Backend::Sqlite, suppressd::domain::Clock::System, |s| {
        s.no_near_cache = true
    })
    .await;
    let mut r = redis(&app);
    let news = scope("", proto::Channel::Email, "news", "");

    // Two opt-outs, committed; find each one's bucket field.
    let mut fields = Vec::new();
    for who in ["kept@example.com", "uncommitted@example.com"] {
        let receipt = app.opt_out(opt_out_request(email(who), news.clone())).await;
        let mut found = None;
        let keys: Vec<String> = r.keys(format!("{}v*", app.prefix())).unwrap();
        for key in keys {
            let all: Vec<(Vec<u8>, Vec<u8>)> = r.hgetall(&key).unwrap();
            for (field, value) in all {
                if field != b"complete"
                    && !fields.iter().any(|(k, f, _, _)| *k == key && *f == field)
                {
                    found = Some((key.clone(), field, value, receipt.receipt_id.clone()));
                }
            }
        }
        fields.push(found.expect("the opt-out's field"));
    }

    // A value a newer layout might write (one byte more than this version knows): unreadable.
    for (key, field, value, _) in &fields {
        let mut newer = value.clone();
        newer.push(0x01);
        let _: () = r.hset(key, field, newer).unwrap();
    }

    // The store explains the first: suppressed, with its record.
    let answer = app.check(email("kept@example.com"), news.clone()).await;
    assert!(answer.suppressed);
    assert_eq!(answer.matched.unwrap().receipt_id, fields[0].3);

    // The second, as if a newer replica had just taken it and the store did not have it yet:
    // nothing can explain the value, so the answer is UNAVAILABLE, never "send".
    let store = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
    sqlx::query("DELETE FROM suppressions WHERE receipt_id = ?")
        .bind(&fields[1].3)
        .execute(&store)
        .await
        .unwrap();
    let refused = app
        .client
        .check_suppressed(proto::CheckSuppressedRequest {
            recipient: Some(email("uncommitted@example.com")),
            scope: Some(news.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("cannot read"), "{refused:?}");
    app.flush_redis();
}
