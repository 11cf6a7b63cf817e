//! A change of the bucket layout (`--cache-bucket-bits`) during a rolling update: replicas of this
//! tree with different bucket bits on one Redis and one store. An opt-out one replica acknowledged
//! must be suppressed on the other, however their layouts differ (docs/compatibility.md, "Changing
//! the bucket layout").

use crate::{helpers::*, processes::*};
use std::time::{Duration, Instant};
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
    let prefix = format!("lay{}:", uuid::Uuid::new_v4().simple());
    let config = ReplicaConfig::new(&db.url, redis_url(), &prefix)
        .with("SUPPRESSD_NO_NEAR_CACHE", "true")
        .with("SUPPRESSD_CACHE_BUCKET_BITS", "6");
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
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
    let mut false_sends = Vec::new();
    for i in 0..40 {
        for (name, client) in [("A", &mut on_a), ("B", &mut on_b)] {
            let answer = client.check_suppressed(check_request(i)).await.unwrap();
            if !answer.into_inner().suppressed {
                false_sends.push(format!("layout{i} on {name}"));
            }
        }
    }
    delete_prefix(redis_url(), &prefix);
    assert!(
        false_sends.is_empty(),
        "acknowledged opt-outs answered send: {false_sends:?}"
    );
}
