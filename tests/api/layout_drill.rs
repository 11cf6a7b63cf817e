//! The layout drill: a rolling update that changes `--cache-bucket-bits` (6 → 7), under the rolling
//! drill's load (`rolling`), on one Redis and one PostgreSQL database. A replica with the old bits
//! serves alone; one with the new bits starts beside it, fills its layout and switches to it while
//! both take traffic (its checks through Redis, the others' from their near-caches); the old one
//! is stopped (SIGTERM) and a second new one takes its place.
//! Afterwards every opt-out acknowledged `DURABLE` is in the store and suppressed on every live
//! replica, no check answered "send" for a person acknowledged before it started, nothing was
//! dead-lettered, and both new replicas read (and write only) the new layout.
//!
//! A few seconds per phase here; `scripts/rolling-drill --layout [SECONDS]` runs it longer
//! (`SUPPRESSD_LAYOUT_SECS`) and prints its counts.

use crate::{
    helpers::*,
    layout_change::wait_announced,
    processes::*,
    rolling::{Acks, Build, Counts, Live, afterwards, start_load},
};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_through_a_bucket_layout_change_lose_nothing() {
    let secs: u64 = std::env::var("SUPPRESSD_LAYOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let phase = Duration::from_secs(secs);
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = format!("ldrill{}:", uuid::Uuid::new_v4().simple());
    let old_bits =
        ReplicaConfig::new(&db.url, redis_url(), &prefix).with("SUPPRESSD_CACHE_BUCKET_BITS", "6");
    let new_bits = old_bits.clone().with("SUPPRESSD_CACHE_BUCKET_BITS", "7");
    let named =
        |config: &ReplicaConfig, name: &str| config.clone().with("SUPPRESSD_REPLICA_NAME", name);
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    // 1. The old bits alone.
    let mut old = Replica::start(&named(&old_bits, "old")).await;
    let live: Live = Arc::new(Mutex::new(vec![(Build::Old, old.client().await)]));
    let counts = Arc::new(Counts::default());
    let acks: Arc<Mutex<Acks>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = start_load(&live, &counts, &acks, &stop);
    tokio::time::sleep(phase).await;

    // 2. New bits beside it: its layout is filled and it switches to it, both taking traffic. Its
    //    checks go through Redis (no near-cache), so they read the buckets of each layout in turn.
    let first =
        Replica::start(&named(&new_bits, "new1").with("SUPPRESSD_NO_NEAR_CACHE", "true")).await;
    let client = first.client().await;
    live.lock().unwrap().push((Build::New, client));
    let started = Instant::now();
    wait_announced(&mut conn, &prefix, "new1", "v2b7", "v2b7,v2b6").await;
    let switched_after = started.elapsed();
    tokio::time::sleep(phase).await;

    // 3. The old one out of rotation and stopped; a second replica with the new bits.
    live.lock()
        .unwrap()
        .retain(|(build, _)| *build == Build::New);
    old.terminate();
    let old_exit = old.wait().await;
    let second = Replica::start(&named(&new_bits, "new2")).await;
    let client = second.client().await;
    live.lock().unwrap().push((Build::New, client));
    tokio::time::sleep(phase).await;
    stop.store(true, Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    // With the old replica gone, both read the new layout and write only it.
    for name in ["new1", "new2"] {
        wait_announced(&mut conn, &prefix, name, "v2b7", "v2b7").await;
    }

    let after = afterwards(&prefix, &db.url, &acks, &[&first, &second]).await;
    let warnings: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|r| r.warnings())
        .chain(old.warnings())
        .collect();
    delete_prefix(redis_url(), &prefix);

    let c = |x: &AtomicU64| x.load(Relaxed);
    let false_sends = c(&counts.false_sends) + after.final_false_sends;
    eprintln!(
        "layout drill (--cache-bucket-bits 6 -> 7, {secs}s per phase): opt_outs={} \
         acknowledged={} durable={} acknowledged_by_old_bits={} acknowledged_by_new_bits={} \
         checks={} checks_by_old_bits={} lost={} false_sends={false_sends} dead_letters={} \
         stream_len={} unavailable={} other_errors={} switched_after_ms={} old_exit={} \
         warnings={}",
        c(&counts.opt_outs),
        c(&counts.acknowledged),
        c(&counts.durable),
        c(&counts.acknowledged_by_old),
        c(&counts.acknowledged_by_new),
        c(&counts.checks),
        c(&counts.checks_by_old),
        after.lost.len(),
        after.dead_letters,
        after.stream_len,
        c(&counts.unavailable),
        c(&counts.other_errors),
        switched_after.as_millis(),
        old_exit
            .code()
            .map_or_else(|| "signal".to_owned(), |code| code.to_string()),
        warnings.len(),
    );
    for line in warnings.iter().take(10) {
        eprintln!("[replica] {line}");
    }
    assert!(
        c(&counts.acknowledged_by_old) > 0 && c(&counts.acknowledged_by_new) > 0,
        "both layouts took opt-outs"
    );
    assert!(
        c(&counts.durable) > 0,
        "the run acknowledged DURABLE opt-outs"
    );
    assert!(after.lost.is_empty(), "every DURABLE opt-out is kept");
    assert_eq!(
        false_sends, 0,
        "no check after an acknowledgement said send"
    );
    assert_eq!(after.dead_letters, 0, "nothing was dead-lettered");
    assert!(old_exit.success(), "the old replica drained: {old_exit}");
}
