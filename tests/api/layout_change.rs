//! A change of the bucket layout (`--cache-bucket-bits`) during a rolling update: replicas of this
//! tree with different bucket bits on one Redis and one store. An opt-out one replica acknowledged
//! must be suppressed on the other, however their layouts differ; replicas configured alike switch
//! to their layout together; a replica whose announcement lapsed is no longer written for, and
//! does not answer from the layout it missed writes in (docs/compatibility.md, "Changing the
//! bucket layout"). The drill under load is in `layout_drill`.

use crate::{helpers::*, processes::*};
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};
use suppressd::proto::{self, Channel};

fn person(i: u64) -> proto::Recipient {
    email(&format!("layout{i}@example.com"))
}

fn check_request(i: u64) -> proto::CheckSuppressedRequest {
    proto::CheckSuppressedRequest {
        recipient: Some(person(i)),
        scope: Some(scope("acme", Channel::Sms, "recall", "RC-1")),
        ..Default::default()
    }
}

/// A key prefix of the test's own on the shared Redis.
fn fresh_prefix() -> String {
    format!("lay{}:", uuid::Uuid::new_v4().simple())
}

/// What every test starts from: the replicas' configuration on `db` and `redis` under `prefix`,
/// with 6 bucket bits (a test starts its other replicas with 7), and a connection to read the
/// layouts' keys.
async fn six_bits(
    db: &TestDb,
    redis: &str,
    prefix: &str,
) -> (ReplicaConfig, redis::aio::MultiplexedConnection) {
    let config =
        ReplicaConfig::new(&db.url, redis, prefix).with("SUPPRESSD_CACHE_BUCKET_BITS", "6");
    let conn = redis::Client::open(redis)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (config, conn)
}

/// The checks of people `0..n` that either replica answered "send".
async fn false_sends(n: u64, replicas: [(&str, &mut Client); 2]) -> Vec<String> {
    let mut sent = Vec::new();
    for (name, client) in replicas {
        for i in 0..n {
            let answer = client.check_suppressed(check_request(i)).await.unwrap();
            if !answer.into_inner().suppressed {
                sent.push(format!("layout{i} on {name}"));
            }
        }
    }
    sent
}

/// The live announcements (renewed within the last 5 s, by Redis's clock): replica → (reads,
/// writes).
pub(super) async fn announced(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> HashMap<String, (String, String)> {
    let ((secs, micros), registry): ((u64, u64), HashMap<String, String>) = redis::pipe()
        .cmd("TIME")
        .hgetall(format!("{prefix}layout-replicas"))
        .query_async(conn)
        .await
        .unwrap();
    let now = secs * 1000 + micros / 1000;
    registry
        .into_iter()
        .filter_map(|(replica, entry)| {
            let parts: Vec<&str> = entry.split('|').collect();
            let at: u64 = parts[0].parse().unwrap();
            (at + 5_000 > now).then(|| (replica, (parts[2].to_owned(), parts[3].to_owned())))
        })
        .collect()
}

/// Waits until `replica` announces that it reads `reads` and writes `writes` (comma-separated).
pub(super) async fn wait_announced(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    replica: &str,
    reads: &str,
    writes: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = announced(conn, prefix).await;
        if now.get(replica) == Some(&(reads.to_owned(), writes.to_owned())) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{replica} never announced reads {reads} writes {writes}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The states of the layouts of a (one-group) deployment's cache.
async fn layout_states(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(format!("{prefix}layouts"))
        .query_async(conn)
        .await
        .unwrap()
}

fn signal(replica: &Replica, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &replica.pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until a bucket carries its completeness marker (a rebuild or a fill marked its layout).
async fn wait_marked(conn: &mut redis::aio::MultiplexedConnection, bucket: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let marked: bool = redis::cmd("HEXISTS")
            .arg(bucket)
            .arg("complete")
            .query_async(conn)
            .await
            .unwrap();
        if marked {
            return;
        }
        assert!(Instant::now() < deadline, "{bucket} was never marked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replica A keeps the old bits (6), replica B starts with new ones (7) and builds its layout; then
/// each takes opt-outs and the other checks them, through Redis (no near-cache, whose change feed
/// would hide a layout that misses a write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_on_a_replica_with_other_bucket_bits_is_never_answered_send() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = fresh_prefix();
    let (config, mut conn) = six_bits(&db, redis_url(), &prefix).await;
    let config = config.with("SUPPRESSD_NO_NEAR_CACHE", "true");
    let a = Replica::start(&config).await;
    wait_marked(&mut conn, &format!("{prefix}v2b6:0")).await;
    let b = Replica::start(&config.clone().with("SUPPRESSD_CACHE_BUCKET_BITS", "7")).await;
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);
    // A check on B finds its layout unmarked and has it built.
    on_b.check_suppressed(check_request(1_000)).await.unwrap();
    wait_marked(&mut conn, &format!("{prefix}v2b7:0")).await;

    let scope_all = || scope("acme", Channel::Unspecified, "", "");
    for i in 0..40 {
        let client = if i % 2 == 0 { &mut on_a } else { &mut on_b };
        client
            .opt_out(opt_out_request(person(i), scope_all()))
            .await
            .unwrap();
    }
    let sent = false_sends(40, [("A", &mut on_a), ("B", &mut on_b)]).await;
    delete_prefix(redis_url(), &prefix);
    assert!(
        sent.is_empty(),
        "acknowledged opt-outs answered send: {sent:?}"
    );
}

/// Two replicas with new bits start together beside one with the old bits: neither waits for the
/// other, the new layout is filled once, and both read it; once the old replica stops, writes
/// drop the old layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_new_bits_starting_together_both_switch() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = fresh_prefix();
    let (config, mut conn) = six_bits(&db, redis_url(), &prefix).await;
    let old = Replica::start(&config.clone().with("SUPPRESSD_REPLICA_NAME", "old")).await;
    wait_announced(&mut conn, &prefix, "old", "v2b6", "v2b6").await;
    let new = config.with("SUPPRESSD_CACHE_BUCKET_BITS", "7");
    let (b1_config, b2_config) = (
        new.clone().with("SUPPRESSD_REPLICA_NAME", "b1"),
        new.with("SUPPRESSD_REPLICA_NAME", "b2"),
    );
    let (b1, b2) = tokio::join!(Replica::start(&b1_config), Replica::start(&b2_config));
    for name in ["b1", "b2"] {
        wait_announced(&mut conn, &prefix, name, "v2b7", "v2b7,v2b6").await;
    }
    wait_announced(&mut conn, &prefix, "old", "v2b6", "v2b6,v2b7").await;

    let mut old = old;
    old.terminate();
    old.wait().await;
    // With no live replica reading it, the next write leaves the old layout out, and drops it.
    wait_announced(&mut conn, &prefix, "b1", "v2b7", "v2b7").await;
    b1.client()
        .await
        .opt_out(opt_out_request(
            person(1),
            scope("acme", Channel::Unspecified, "", ""),
        ))
        .await
        .unwrap();
    let states = layout_states(&mut conn, &prefix).await;
    assert!(states["v2b7"].starts_with("ok:"), "{states:?}");
    assert!(!states.contains_key("v2b6"), "{states:?}");
    let answer = b2
        .client()
        .await
        .check_suppressed(check_request(1))
        .await
        .unwrap();
    assert!(answer.into_inner().suppressed);
    delete_prefix(redis_url(), &prefix);
}

/// A replica frozen past its announcement's life is no longer written for: the next write drops
/// its layout, and once it runs again it does not answer "send" from that layout, which missed the
/// write; later its layout is filled again and it reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_announcement_lapsed_is_not_written_for_and_does_not_trust_its_layout() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = fresh_prefix();
    let (config, mut conn) = six_bits(&db, redis_url(), &prefix).await;
    let config = config.with("SUPPRESSD_NO_NEAR_CACHE", "true");
    let a = Replica::start(&config.clone().with("SUPPRESSD_REPLICA_NAME", "a")).await;
    wait_announced(&mut conn, &prefix, "a", "v2b6", "v2b6").await;
    let b = Replica::start(
        &config
            .with("SUPPRESSD_CACHE_BUCKET_BITS", "7")
            .with("SUPPRESSD_REPLICA_NAME", "b"),
    )
    .await;
    wait_announced(&mut conn, &prefix, "b", "v2b7", "v2b7,v2b6").await;

    signal(&b, "-STOP");
    wait_announced(&mut conn, &prefix, "a", "v2b6", "v2b6").await;
    let mut on_a = a.client().await;
    on_a.opt_out(opt_out_request(
        person(2),
        scope("acme", Channel::Unspecified, "", ""),
    ))
    .await
    .unwrap();
    let states = layout_states(&mut conn, &prefix).await;
    assert!(!states.contains_key("v2b7"), "dropped: {states:?}");
    signal(&b, "-CONT");

    let mut on_b = b.client().await;
    let answer = on_b.check_suppressed(check_request(2)).await.unwrap();
    assert!(
        answer.into_inner().suppressed,
        "b answered send from a layout that missed a write"
    );
    // It announces again, a writes for it again, and its layout is filled and read once more.
    wait_announced(&mut conn, &prefix, "b", "v2b7", "v2b7,v2b6").await;
    let answer = on_b.check_suppressed(check_request(2)).await.unwrap();
    assert!(answer.into_inner().suppressed);
    delete_prefix(redis_url(), &prefix);
}

/// Redis flushed while a replica with new bits fills its layout (a private Redis): every layout
/// is forgotten with the markers, no check answers "send" for an acknowledged opt-out meanwhile,
/// and afterwards the cache is rebuilt and each replica reads its own layout again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_during_a_layout_change_fails_closed_and_recovers() {
    let db = TestDb::new(Backend::Postgres).await;
    let redis = PrivateRedis::start().await;
    let prefix = "flush:";
    let (config, mut conn) = six_bits(&db, &redis.url(), prefix).await;
    let config = config.with("SUPPRESSD_NO_NEAR_CACHE", "true");
    let a = Replica::start(&config.clone().with("SUPPRESSD_REPLICA_NAME", "a")).await;
    wait_announced(&mut conn, prefix, "a", "v2b6", "v2b6").await;
    let (mut on_a, scope_all) = (a.client().await, || {
        scope("acme", Channel::Unspecified, "", "")
    });
    for i in 0..10 {
        on_a.opt_out(opt_out_request(person(i), scope_all()))
            .await
            .unwrap();
    }
    let b = Replica::start(
        &config
            .with("SUPPRESSD_CACHE_BUCKET_BITS", "7")
            .with("SUPPRESSD_REPLICA_NAME", "b"),
    )
    .await;
    let mut on_b = b.client().await;
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    for i in 10..20 {
        let client = if i % 2 == 0 { &mut on_a } else { &mut on_b };
        client
            .opt_out(opt_out_request(person(i), scope_all()))
            .await
            .unwrap();
    }
    let mut sent = false_sends(20, [("a", &mut on_a), ("b", &mut on_b)]).await;
    wait_announced(&mut conn, prefix, "a", "v2b6", "v2b6,v2b7").await;
    wait_announced(&mut conn, prefix, "b", "v2b7", "v2b7,v2b6").await;
    sent.extend(false_sends(20, [("a", &mut on_a), ("b", &mut on_b)]).await);
    assert!(sent.is_empty(), "answered send: {sent:?}");
}

/// A replica of the previous release (which neither announces nor keeps the layout hashes) serves
/// with its near-cache: a replica of this tree with new bits reads the old layout beside it, does
/// not fill its own while the old one serves, and does once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_layout_waits_while_a_previous_release_replica_serves() {
    let (tag, previous) = crate::rolling::previous_release();
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = fresh_prefix();
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = keys_dir.path().join("keys.toml");
    std::fs::write(&keys, crate::rolling::key_file_known_to_both()).unwrap();
    let (config, mut conn) = six_bits(&db, redis_url(), &prefix).await;
    let config = config.with("SUPPRESSD_KEYS", keys.to_str().unwrap());
    let mut old = Replica::try_start_binary(&previous, &config)
        .await
        .unwrap_or_else(|log| panic!("the {tag} replica did not start:\n{log}"));
    wait_marked(&mut conn, &format!("{prefix}v2b6:0")).await;
    let new = Replica::start(
        &config
            .with("SUPPRESSD_CACHE_BUCKET_BITS", "7")
            .with("SUPPRESSD_REPLICA_NAME", "new"),
    )
    .await;
    wait_announced(&mut conn, &prefix, "new", "v2b6", "v2b7,v2b6").await;
    let (mut on_old, mut on_new) = (old.client().await, new.client().await);
    for i in 0..10 {
        on_old
            .opt_out(opt_out_request(
                person(i),
                scope("acme", Channel::Unspecified, "", ""),
            ))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let states = layout_states(&mut conn, &prefix).await;
    assert!(!states.contains_key("v2b7"), "not filled: {states:?}");
    assert!(new.log().contains("without announcing"), "it says why");
    for i in 0..10 {
        let answer = on_new.check_suppressed(check_request(i)).await.unwrap();
        assert!(
            answer.into_inner().suppressed,
            "layout{i} on the new replica"
        );
    }

    old.terminate();
    old.wait().await;
    wait_announced(&mut conn, &prefix, "new", "v2b7", "v2b7").await;
    for i in 0..10 {
        let answer = on_new.check_suppressed(check_request(i)).await.unwrap();
        assert!(answer.into_inner().suppressed, "layout{i} after the switch");
    }
    delete_prefix(redis_url(), &prefix);
}
