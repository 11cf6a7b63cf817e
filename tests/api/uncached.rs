//! A person's opt-out while Redis cannot take it (issue 18, item 2): the store takes it alone, every
//! check answers it at once, and the cache is not trusted until it holds it, on any replica, also
//! when Redis comes back with everything it had before (markers included) except that opt-out.

use crate::{
    failures::{cache_complete, wait_until},
    helpers::*,
    one_click::{FORM, http, marketing, receipt_in},
    processes::*,
    tokens::issue,
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use suppressd::{
    domain::Clock,
    proto::{self, Channel, ReceiptState},
};
use tonic::Code;

fn prefix() -> String {
    format!("u{}:", uuid::Uuid::new_v4().simple())
}

fn everywhere() -> proto::Scope {
    scope("acme", Channel::Unspecified, "", "")
}

fn notice() -> proto::Scope {
    scope("acme", Channel::Email, "recall", "RC-1")
}

fn check(person: &proto::Recipient) -> proto::CheckSuppressedRequest {
    proto::CheckSuppressedRequest {
        time_zone: String::new(),
        recipient: Some(person.clone()),
        scope: Some(notice()),
        purpose: 0,
    }
}

/// A person's opt-out, as the unsubscribe page or a sender relaying "STOP" would send it.
fn persons(person: &proto::Recipient, key: &str) -> proto::OptOutRequest {
    proto::OptOutRequest {
        idempotency_key: key.to_owned(),
        ..opt_out_request(person.clone(), everywhere())
    }
}

/// An operator's suppression: a system's write, which retries.
fn operators(person: &proto::Recipient) -> proto::OptOutRequest {
    proto::OptOutRequest {
        reason: proto::Reason::Operator as i32,
        source: proto::Source::Api as i32,
        ..opt_out_request(person.clone(), everywhere())
    }
}

async fn uncached_marks(store_url: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM uncached";
    if store_url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(store_url).await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    } else {
        let pool = sqlx::SqlitePool::connect(store_url).await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }
}

async fn opt_out_audit_entries(store_url: &str, receipt: &str) -> i64 {
    let pool = sqlx::PgPool::connect(store_url).await.unwrap();
    let n = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE receipt_id = $1 AND action = 'opt_out'",
    )
    .bind(receipt)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n
}

/// Checks `person` through `client` until `stop`: a "send" is a false send (the person opted out
/// before the loop began); UNAVAILABLE is allowed (the caller does not send).
fn check_loop(
    mut client: Client,
    person: proto::Recipient,
    false_sends: Arc<AtomicU64>,
    suppressed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let answer = tokio::time::timeout(
                Duration::from_secs(5),
                client.check_suppressed(check(&person)),
            )
            .await;
            match answer {
                Ok(Ok(r)) if r.get_ref().suppressed => suppressed.fetch_add(1, Ordering::Relaxed),
                Ok(Ok(_)) => false_sends.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
    })
}

/// Redis dies; a person's opt-out is taken by the store and answered at once; an operator's is
/// refused. Redis then comes back from a snapshot taken before the opt-out, markers and write
/// counter intact: no replica says "send" for that person at any moment, and once the cache holds
/// the record it answers with the store stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_opt_out_is_taken_while_redis_is_down_and_the_cache_is_not_trusted_until_it_holds_it()
 {
    let pg = PrivatePostgres::start().await;
    let mut redis = PrivateRedis::start().await;
    let prefix = prefix();
    let config = ReplicaConfig::new(&pg.url(), &redis.url(), &prefix);
    let a = Replica::start(&config).await;
    let b = Replica::start(&config).await;
    let (mut via_a, mut via_b) = (a.client().await, b.client().await);
    let earlier = email("earlier@example.com");
    via_a.opt_out(persons(&earlier, "")).await.unwrap();
    let redis_url = redis.url();
    wait_until("the cache is complete", Duration::from_secs(20), || {
        let (url, prefix) = (redis_url.clone(), prefix.clone());
        async move { cache_complete(&url, &prefix).await }
    })
    .await;
    redis.snapshot();
    redis.kill();

    let person = email("clicked-once@example.com");
    let receipt = via_a
        .opt_out(persons(&person, "click-1"))
        .await
        .expect("a person's opt-out is taken while the store is reachable")
        .into_inner()
        .receipt
        .unwrap();
    assert_eq!(
        receipt.state,
        ReceiptState::Durable as i32,
        "committed by the store"
    );
    assert_eq!(
        opt_out_audit_entries(&pg.url(), &receipt.receipt_id).await,
        1
    );
    let again = via_b
        .opt_out(persons(&person, "click-1"))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert_eq!(
        again.receipt_id, receipt.receipt_id,
        "the idempotency key holds without Redis"
    );
    let refused = via_a
        .opt_out(operators(&email("system@example.com")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    for client in [&mut via_a, &mut via_b] {
        let answer = client.check_suppressed(check(&person)).await.unwrap();
        assert!(answer.get_ref().suppressed, "answered by the store at once");
    }
    assert_eq!(uncached_marks(&pg.url()).await, 1);

    let (false_sends, suppressed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let loops = [a.client().await, a.client().await, b.client().await].map(|c| {
        check_loop(
            c,
            person.clone(),
            false_sends.clone(),
            suppressed.clone(),
            stop.clone(),
        )
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Back with every marker and the write counter as they were: only the opt-out is missing.
    redis.restart().await;
    let store_url = pg.url();
    wait_until(
        "the cache holds the opt-out",
        Duration::from_secs(20),
        || {
            let url = store_url.clone();
            async move { uncached_marks(&url).await == 0 }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(
        false_sends.load(Ordering::Relaxed),
        0,
        "no replica said send"
    );
    assert!(suppressed.load(Ordering::Relaxed) > 0);

    // The cache itself holds it now: with the store gone, both replicas still answer it.
    pg.stop_immediate();
    for client in [&mut via_a, &mut via_b] {
        let answer = client.check_suppressed(check(&person)).await.unwrap();
        assert!(answer.get_ref().suppressed, "answered by the cache");
    }
}

/// One replica is cut off from Redis while another is not. The cut-off replica takes a person's
/// opt-out through the store, and when it answers, the other replica (answering from its near-cache
/// until then) already answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_taken_by_a_replica_cut_off_from_redis_is_answered_by_the_others_when_it_returns()
 {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = prefix();
    let partition = Partition::to(redis_url()).await;
    let a = Replica::start(&ReplicaConfig::new(&db.url, &partition.url(), &prefix)).await;
    let b = Replica::start(&ReplicaConfig::new(&db.url, redis_url(), &prefix)).await;
    let (mut via_a, mut via_b) = (a.client().await, b.client().await);
    via_b
        .opt_out(persons(&email("warm@example.com"), ""))
        .await
        .unwrap();
    wait_until("the cache is complete", Duration::from_secs(20), || {
        let prefix = prefix.clone();
        async move { cache_complete(redis_url(), &prefix).await }
    })
    .await;

    partition.cut();
    for i in 0..5 {
        let person = email(&format!("cut-off-{i}@example.com"));
        let before = via_b.check_suppressed(check(&person)).await.unwrap();
        assert!(!before.get_ref().suppressed);
        let receipt = via_a
            .opt_out(persons(&person, ""))
            .await
            .expect("taken by the store")
            .into_inner()
            .receipt
            .unwrap();
        assert_eq!(receipt.state, ReceiptState::Durable as i32);
        let after = via_b.check_suppressed(check(&person)).await.unwrap();
        assert!(
            after.get_ref().suppressed,
            "read-your-writes on the replica that still reaches Redis (opt-out {i})"
        );
    }
    assert_eq!(uncached_marks(&db.url).await, 0, "written into the cache");
    let refused = via_a
        .opt_out(operators(&email("system@example.com")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);

    partition.mend();
    let person = email("cut-off-0@example.com");
    for client in [&mut via_a, &mut via_b] {
        let answer = client.check_suppressed(check(&person)).await.unwrap();
        assert!(answer.get_ref().suppressed);
    }
    delete_prefix(redis_url(), &prefix);
}

/// The one-click page no longer answers "try again" while Redis is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_is_taken_while_redis_is_down() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let mut app = spawn_app_with(Backend::Sqlite, Clock::System, |s| {
        s.http_listen = Some("127.0.0.1:0".parse().unwrap());
        s.redis.redis_url = url;
        s.write_behind.durable_wait_ms = 500;
    })
    .await;
    let front = app.http_addr.unwrap();
    let token = issue(&mut app.client, "click@example.com", marketing(), 3600).await;
    redis.kill();

    let done = http(
        front,
        "POST",
        &format!("/unsubscribe/{token}"),
        FORM,
        "List-Unsubscribe=One-Click",
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    let receipt = receipt_in(&done.body).to_owned();
    assert_eq!(app.rows(Some(&receipt)).await, 1);
    assert!(
        app.is_suppressed(email("click@example.com"), marketing())
            .await
    );
}

/// A replica reads the marked records every controls poll while any is marked, and the worker
/// sweeps expiries every second, each time with a new time bound. On SQLite (the default store)
/// neither statement may be prepared again each time: with their `LIMIT` bound, both were, at
/// every call.
#[tokio::test]
async fn sqlite_prepares_the_polled_statements_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    suppressd::store::Store::connect(&url).await.unwrap(); // creates the schema
    // One connection, so that every call prepares on it and its statements are all in one place.
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let store = suppressd::store::Store::Sqlite(pool.clone());
    let log = suppressd::audit::AuditLog::new("audit.test/log", None).unwrap();
    for now in 1..=20 {
        store.uncached(now).await.unwrap();
        store.log_expiries(now, &log).await.unwrap();
    }
    let mut conn = pool.acquire().await.unwrap();
    let mut handle = conn.lock_handle().await.unwrap();
    let db = handle.as_raw_handle().as_ptr();
    let (mut seen, mut reprepared) = (0, 0);
    // SAFETY: the handle is locked for this thread; its statements are only read.
    unsafe {
        let mut stmt = libsqlite3_sys::sqlite3_next_stmt(db, std::ptr::null_mut());
        while !stmt.is_null() {
            let sql = std::ffi::CStr::from_ptr(libsqlite3_sys::sqlite3_sql(stmt));
            let sql = sql.to_string_lossy();
            if sql.contains("FROM uncached") || sql.contains("action = 'expire'") {
                seen += 1;
                reprepared += libsqlite3_sys::sqlite3_stmt_status(
                    stmt,
                    libsqlite3_sys::SQLITE_STMTSTATUS_REPREPARE,
                    0,
                );
            }
            stmt = libsqlite3_sys::sqlite3_next_stmt(db, stmt);
        }
    }
    assert_eq!(seen, 2, "both statements are cached");
    assert_eq!(
        reprepared, 0,
        "prepared again after they were first prepared"
    );
}
