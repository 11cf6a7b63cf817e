//! The write-behind worker, driven step by step: no server, no sleeps.

use crate::helpers::*;
use std::time::Duration;
use suppressd::{
    audit::AuditLog,
    cache::{Cache, Recorded, layout::Keys, stream::StreamEntry},
    domain::{
        Clock, Pepper, Reason, ReceiptId, Recipient, RecipientKind, Scope, Source, Suppression,
        clock::system_now,
    },
    service::audit::verify_log,
    store::{AuditHint, Committed, Store},
    worker::{Worker, WorkerSettings},
};

struct Rig {
    cache: Cache,
    store: Store,
    _db: TestDb,
    prefix: String,
}

impl Drop for Rig {
    fn drop(&mut self) {
        delete_prefix(redis_url(), &self.prefix);
    }
}

async fn rig(backend: Backend) -> Rig {
    rig_at(backend, redis_url()).await
}

/// A rig on the Redis at `url` (a private one, for tests that break it).
async fn rig_at(backend: Backend, url: &str) -> Rig {
    let db = TestDb::new(backend).await;
    let prefix = format!("w{}:", uuid::Uuid::new_v4().simple());
    Rig {
        cache: Cache::connect_url(url, Keys::new(&prefix, 4))
            .await
            .unwrap(),
        store: Store::connect(&db.url).await.unwrap(),
        _db: db,
        prefix,
    }
}

/// An opt-out of `user-{i}` from the news topic, received now.
fn suppression(i: usize) -> Suppression {
    let pepper = Pepper::new(PEPPER.as_bytes()).unwrap();
    let now = system_now();
    let recipient = Recipient::parse(RecipientKind::UserId, &format!("user-{i}")).unwrap();
    Suppression {
        receipt: ReceiptId::new(now),
        subject: pepper.subject(&recipient),
        scope: Scope::parse("", None, "news", "").unwrap(),
        reason: Reason::UserRequest,
        source: Source::Api,
        actor: "test".into(),
        received_at: now,
        effective_at: now,
        expires_at: None,
        idempotency_key: None,
        sealed: None,
    }
}

impl Rig {
    /// Queues `n` opt-outs the way `OptOut` does, and returns them.
    async fn queue(&self, n: usize) -> Vec<Suppression> {
        let mut queued = Vec::new();
        for i in 0..n {
            let s = suppression(i);
            let recorded = self
                .cache
                .record(&s, &StreamEntry::encode(&s), 0)
                .await
                .unwrap();
            assert!(matches!(recorded.outcome, Recorded::Queued { .. }));
            queued.push(s);
        }
        queued
    }

    async fn worker(&self, name: &str, claim_idle: Duration) -> Worker {
        self.worker_of(name, claim_idle, 100).await
    }

    async fn worker_of(&self, name: &str, claim_idle: Duration, batch: usize) -> Worker {
        let settings = WorkerSettings {
            batch,
            block: Duration::from_millis(10),
            claim_idle,
            crash_after_commit: false,
        };
        Worker::new(
            self.cache.clone(),
            self.store.clone(),
            Clock::System,
            AuditLog::development(),
            name,
            settings,
        )
        .await
        .unwrap()
    }

    async fn rows(&self) -> Vec<String> {
        let sql = "SELECT receipt_id FROM suppressions ORDER BY receipt_id";
        match &self.store {
            Store::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
            Store::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        }
        .unwrap()
    }
}

fn receipts(records: &[Suppression]) -> Vec<String> {
    let mut ids: Vec<_> = records.iter().map(|s| s.receipt.to_string()).collect();
    ids.sort();
    ids
}

const NEVER: Duration = Duration::from_secs(3600);

async fn a_batch_a_dead_consumer_read_is_claimed_and_persisted_once(backend: Backend) {
    let rig = rig(backend).await;
    let queued = rig.queue(10).await;
    let mut dying = rig.worker("dying", NEVER).await;
    let read = dying.next_batch().await.unwrap();
    assert_eq!(read.len(), 10);
    drop(dying); // dies before committing or acknowledging

    let mut survivor = rig.worker("survivor", Duration::ZERO).await;
    let report = survivor.step().await.unwrap();
    assert_eq!((report.delivered, report.inserted), (10, 10));
    assert_eq!(rig.rows().await, receipts(&queued));
    let backlog = rig.cache.backlog().await.unwrap();
    assert_eq!((backlog.length, backlog.pending), (0, 0));
    // Nothing is delivered again.
    assert_eq!(survivor.step().await.unwrap().delivered, 0);
}

async fn a_consumer_that_dies_between_commit_and_ack_leaves_one_row_each(backend: Backend) {
    let rig = rig(backend).await;
    let queued = rig.queue(7).await;
    let mut dying = rig.worker("dying", NEVER).await;
    let read = dying.next_batch().await.unwrap();
    let records: Vec<_> = read.into_iter().map(|d| d.record.unwrap()).collect();
    assert_eq!(
        rig.store
            .commit(
                &records,
                &[],
                system_now(),
                &AuditLog::development(),
                &mut Default::default(),
            )
            .await
            .unwrap()
            .inserted,
        7
    );
    drop(dying); // committed, never acknowledged

    let mut survivor = rig.worker("survivor", Duration::ZERO).await;
    let report = survivor.step().await.unwrap();
    assert_eq!(
        (report.delivered, report.inserted),
        (7, 0),
        "redelivered, nothing new"
    );
    assert_eq!(rig.rows().await, receipts(&queued));
    assert_eq!(rig.cache.backlog().await.unwrap().length, 0);
}

async fn entries_drain_in_order_of_arrival(backend: Backend) {
    let rig = rig(backend).await;
    let queued = rig.queue(25).await;
    let mut worker = rig.worker("only", NEVER).await;
    let first = worker.next_batch().await.unwrap();
    let ids: Vec<_> = first
        .iter()
        .map(|d| d.record.as_ref().unwrap().receipt)
        .collect();
    let expected: Vec<_> = queued.iter().map(|s| s.receipt).collect();
    assert_eq!(ids, expected);
}

async fn an_undecodable_entry_is_dead_lettered_not_lost_or_blocking(backend: Backend) {
    let rig = rig(backend).await;
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut worker = rig.worker("only", NEVER).await;
    let _: String = redis::cmd("XADD")
        .arg(format!("{}stream", rig.prefix))
        .arg("*")
        .arg("r")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let queued = rig.queue(2).await;
    let report = worker.step().await.unwrap();
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(report.inserted, 2);
    assert_eq!(rig.rows().await, receipts(&queued));
    let dead: u64 = redis::cmd("XLEN")
        .arg(format!("{}dead-letters", rig.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dead, 1);
}

/// An idempotency key reused for another person where Redis could not see the first use (on
/// Redis Cluster, the first person's slot group holds the key while their opt-out is queued): the
/// store keeps the second opt-out without the key, with its audit entry, so no acknowledged opt-out
/// is lost. A true replay (same person and scope, a receipt of its own) and a redelivery add
/// nothing.
async fn a_reused_idempotency_key_never_drops_another_persons_opt_out(backend: Backend) {
    let rig = rig(backend).await;
    let log = AuditLog::development();
    let keyed = |i: usize| Suppression {
        idempotency_key: Some("request-1".into()),
        ..suppression(i)
    };
    let (first, other, replay) = (keyed(1), keyed(2), keyed(1));
    let commit = async |batch: &[Suppression]| {
        rig.store
            .commit(batch, &[], system_now(), &log, &mut Default::default())
            .await
            .unwrap()
            .inserted
    };
    assert_eq!(commit(std::slice::from_ref(&first)).await, 1);
    assert_eq!(commit(&[other.clone(), replay.clone()]).await, 1);
    assert_eq!(
        commit(&[first.clone(), other.clone()]).await,
        0,
        "redelivered"
    );

    assert_eq!(rig.rows().await, receipts(&[first.clone(), other.clone()]));
    let key: Option<Option<String>> = {
        let sql = "SELECT idempotency_key FROM suppressions WHERE receipt_id = $1";
        let id = other.receipt.to_string();
        match &rig.store {
            Store::Postgres(pool) => sqlx::query_scalar(sql).bind(id).fetch_optional(pool).await,
            Store::Sqlite(pool) => sqlx::query_scalar(sql).bind(id).fetch_optional(pool).await,
        }
        .unwrap()
    };
    assert_eq!(key, Some(None), "kept, without the key");
    let report = verify_log(&rig.store, log.verifier(), None).await.unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert_eq!(report.entries, 2, "one entry per opt-out kept");
}

on_both_stores!(
    a_reused_idempotency_key_never_drops_another_persons_opt_out,
    a_batch_a_dead_consumer_read_is_claimed_and_persisted_once,
    a_consumer_that_dies_between_commit_and_ack_leaves_one_row_each,
    entries_drain_in_order_of_arrival,
    an_undecodable_entry_is_dead_lettered_not_lost_or_blocking,
    the_stream_barrier_passes_once_everything_before_it_is_committed,
);

/// On PostgreSQL a worker commits a batch in one round trip planned on the audit head it last wrote.
/// When another writer has moved the head since, or a record of the batch is already stored, the
/// statement planned on the old head writes nothing and the batch commits under the head's lock
/// instead: one entry per new record either way, and a log that verifies. A moved head is the
/// usual refusal with several replicas, so it raises no error (PostgreSQL would log each one, with
/// the statement): its own PostgreSQL's log shows none until the redelivered record.
#[tokio::test]
async fn a_commit_planned_on_a_moved_head_or_with_a_stored_record_falls_back_whole() {
    let pg = crate::processes::PrivatePostgres::start().await;
    let store = Store::connect(&pg.url()).await.unwrap();
    let log = AuditLog::development();
    let records: Vec<_> = (0..15).map(suppression).collect();
    let (mut a, mut b) = (AuditHint::default(), AuditHint::default());
    let commit = async |batch: &[Suppression], hint: &mut AuditHint| {
        store
            .commit(batch, &[], system_now(), &log, hint)
            .await
            .unwrap()
    };
    let committed = |inserted, at_once| Committed { inserted, at_once };

    // No hint yet: under the lock. Then planned on the head it left: at once.
    assert_eq!(commit(&records[0..3], &mut a).await, committed(3, false));
    assert_eq!(commit(&records[3..6], &mut a).await, committed(3, true));
    // Another writer moves the head: A's next plan is refused, and A commits under the lock.
    assert_eq!(commit(&records[6..8], &mut b).await, committed(2, false));
    assert_eq!(commit(&records[8..11], &mut a).await, committed(3, false));
    let errors = || -> Vec<String> {
        let log = pg.log();
        log.lines()
            .filter(|l| l.contains("ERROR"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(errors(), Vec::<String>::new());
    // A redelivered record among new ones: refused whole, then only the new ones get entries.
    let mixed = [&records[10..11], &records[11..13]].concat();
    assert_eq!(commit(&mixed, &mut a).await, committed(2, false));
    assert_eq!(commit(&records[13..15], &mut a).await, committed(2, true));

    let Store::Postgres(pool) = &store else {
        unreachable!("a PostgreSQL store")
    };
    let mut rows: Vec<String> = sqlx::query_scalar("SELECT receipt_id FROM suppressions")
        .fetch_all(pool)
        .await
        .unwrap();
    rows.sort();
    assert_eq!(rows, receipts(&records));
    let report = verify_log(&store, log.verifier(), None).await.unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert_eq!((report.entries, report.checkpoints), (15, 6));
    let errors = errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("a record was already stored"),
        "{errors:#?}"
    );
}

/// The barrier an ending waits on: the newest queued entry, passed once the worker has committed
/// (and so deleted) everything up to it.
async fn the_stream_barrier_passes_once_everything_before_it_is_committed(backend: Backend) {
    let rig = rig(backend).await;
    assert!(rig.cache.stream_head().await.unwrap().is_empty());
    rig.queue(3).await;
    let barrier = rig.cache.stream_head().await.unwrap();
    assert!(!barrier.is_empty(), "entries queued");
    assert!(!rig.cache.settled_through(&barrier).await.unwrap());
    let mut worker = rig.worker("only", NEVER).await;
    assert_eq!(worker.step().await.unwrap().inserted, 3);
    assert!(rig.cache.settled_through(&barrier).await.unwrap());
    assert!(rig.cache.stream_head().await.unwrap().is_empty());
}

/// Whether `s`'s field is in its bucket in Redis.
async fn in_its_bucket(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    s: &Suppression,
) -> bool {
    let field = suppressd::cache::layout::field(&s.subject, &s.scope);
    redis::cmd("HEXISTS")
        .arg(keys.bucket_for(&s.subject))
        .arg(&field[..])
        .query_async(conn)
        .await
        .unwrap()
}

/// Redis forgets its scripts when it restarts. An opt-out and the worker's merge both `EVALSHA`
/// without loading their script first, so on `NOSCRIPT` each must load its script and send the
/// call again instead of failing every call from then on.
#[tokio::test]
async fn opt_outs_and_merges_load_their_scripts_again_when_redis_has_forgotten_them() {
    let redis = crate::processes::PrivateRedis::start().await;
    let keys = Keys::new("m:", 4);
    let cache = Cache::connect_url(&redis.url(), keys.clone())
        .await
        .unwrap();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for round in 0..3 {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
        let opted_out = suppression(100 + round);
        let recorded = cache
            .record(&opted_out, &StreamEntry::encode(&opted_out), 0)
            .await
            .unwrap();
        assert!(
            matches!(recorded.outcome, Recorded::Queued { .. }),
            "round {round}: the opt-out was queued"
        );
        assert!(
            in_its_bucket(&mut conn, &keys, &opted_out).await,
            "round {round}: the opt-out is in its bucket"
        );
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
        let records: Vec<_> = (round * 4..round * 4 + 4).map(suppression).collect();
        let merged = cache.merge(&records, true).await.unwrap();
        assert!(
            merged.last_change() > 0,
            "round {round}: the merge fed its changes"
        );
        for s in &records {
            let present = in_its_bucket(&mut conn, &keys, s).await;
            assert!(present, "round {round}: {} merged", s.receipt);
        }
    }
}

/// A merge writes a group's records in script calls of `MERGE_BATCH` records each: every record of
/// a merge that takes several calls reaches its bucket and feeds a change of its own, and the
/// same records merged again change nothing and feed nothing.
#[tokio::test]
async fn a_merge_of_several_script_calls_writes_and_feeds_every_record() {
    let rig = rig(Backend::Postgres).await;
    let (cache, keys) = (&rig.cache, Keys::new(&rig.prefix, 4));
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let n = 3 * suppressd::cache::layout::MERGE_BATCH + 1;
    let records: Vec<_> = (0..n).map(suppression).collect();

    let merged = cache.merge(&records, true).await.unwrap();
    assert_eq!(merged.last_change(), n as u64, "one change fed per record");
    for s in &records {
        assert!(
            in_its_bucket(&mut conn, &keys, s).await,
            "{} merged",
            s.receipt
        );
    }

    let again = cache.merge(&records, true).await.unwrap();
    assert_eq!(again.last_change(), 0, "nothing changed, nothing fed");
}

/// The receipts announced as durable on `prefix`'s channel, as the announcements arrive.
async fn announcements(url: &str, prefix: &str) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    use futures_util::StreamExt;
    let mut pubsub = redis::Client::open(url)
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(format!("{prefix}durable")).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let receipts: String = message.get_payload().unwrap();
            for receipt in receipts.split(',') {
                if tx.send(receipt.to_owned()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The receipts announced within `wait` of the last one (or of the call), sorted.
async fn announced(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    wait: Duration,
) -> Vec<String> {
    let mut seen = Vec::new();
    while let Ok(Some(receipt)) = tokio::time::timeout(wait, rx.recv()).await {
        seen.push(receipt);
    }
    seen.sort();
    seen
}

/// A batch larger than one script call (`MERGE_BATCH` records) is merged, acknowledged, deleted and
/// announced whole: every entry once, every receipt once.
#[tokio::test]
async fn a_batch_of_several_script_calls_is_settled_and_announced_whole() {
    let rig = rig(Backend::Postgres).await;
    let n = 2 * suppressd::cache::layout::MERGE_BATCH + 3;
    let mut heard = announcements(redis_url(), &rig.prefix).await;
    let queued = rig.queue(n).await;
    let mut worker = rig.worker_of("only", NEVER, n).await;
    let report = worker.step().await.unwrap();
    assert_eq!((report.delivered, report.inserted), (n, n as u64));
    let backlog = rig.cache.backlog().await.unwrap();
    assert_eq!((backlog.length, backlog.pending), (0, 0), "all settled");
    assert_eq!(
        announced(&mut heard, Duration::from_secs(2)).await,
        receipts(&queued),
        "each receipt announced once"
    );
    assert_eq!(worker.step().await.unwrap().delivered, 0);
}

/// A rig on a private Redis (these tests make it refuse writes), its keys, and a connection to it.
async fn private_rig(
    backend: Backend,
) -> (
    crate::processes::PrivateRedis,
    Rig,
    Keys,
    redis::aio::MultiplexedConnection,
) {
    let redis = crate::processes::PrivateRedis::start().await;
    let rig = rig_at(backend, &redis.url()).await;
    let keys = Keys::new(&rig.prefix, 4);
    let conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (redis, rig, keys, conn)
}

/// Deletes `queued`'s fields from their buckets (as a flush that a rebuild had already read past
/// would), so that merging them again needs memory Redis can refuse.
async fn forget_fields(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    queued: &[Suppression],
) {
    for s in queued {
        let field = suppressd::cache::layout::field(&s.subject, &s.scope);
        let _: () = redis::cmd("HDEL")
            .arg(keys.bucket_for(&s.subject))
            .arg(&field[..])
            .query_async(conn)
            .await
            .unwrap();
    }
}

async fn config_set(conn: &mut redis::aio::MultiplexedConnection, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async(conn)
        .await
        .unwrap();
}

/// The merge after a commit and the settling of its entries are one script: when Redis refuses the
/// merge (out of memory under `noeviction`) nothing is acknowledged or announced, and the entries
/// stay pending until a merge succeeds. A settle sent beside a failed merge (as a pipeline would)
/// would acknowledge records the cache lacks: here, records whose fields were lost, as in a flush
/// that a rebuild had already read past.
#[tokio::test]
async fn a_merge_redis_refuses_settles_nothing() {
    let (redis, rig, keys, mut conn) = private_rig(Backend::Sqlite).await;
    let mut heard = announcements(&redis.url(), &rig.prefix).await;
    let queued = rig.queue(5).await;
    forget_fields(&mut conn, &keys, &queued).await;
    config_set(&mut conn, "maxmemory-policy", "noeviction").await;
    let mut worker = rig.worker("only", NEVER).await;
    config_set(&mut conn, "maxmemory", "1").await;

    let refused = worker.step().await;
    assert!(refused.is_err(), "the merge was refused: {refused:?}");
    assert_eq!(
        rig.rows().await,
        receipts(&queued),
        "committed to the store"
    );
    let backlog = rig.cache.backlog().await.unwrap();
    assert_eq!(
        (backlog.length, backlog.pending),
        (5, 5),
        "nothing acknowledged or deleted"
    );
    assert!(
        announced(&mut heard, Duration::from_millis(500))
            .await
            .is_empty(),
        "nothing announced"
    );
    for s in &queued {
        assert!(!in_its_bucket(&mut conn, &keys, s).await);
    }

    config_set(&mut conn, "maxmemory", "0").await;
    let report = worker.step().await.unwrap();
    assert_eq!((report.delivered, report.inserted), (5, 0), "redelivered");
    for s in &queued {
        assert!(in_its_bucket(&mut conn, &keys, s).await, "merged at last");
    }
    let backlog = rig.cache.backlog().await.unwrap();
    assert_eq!((backlog.length, backlog.pending), (0, 0), "then settled");
    assert_eq!(
        announced(&mut heard, Duration::from_secs(2)).await,
        receipts(&queued)
    );
}

/// The running worker settles each batch while it commits the next: when Redis refuses the merges,
/// the batch committed meanwhile is committed, and nothing is acknowledged or announced; once Redis
/// takes merges again every batch is committed, merged and settled, each record stored once, each
/// receipt announced.
#[tokio::test]
async fn the_running_worker_settles_every_batch_whose_merge_was_refused() {
    let (redis, rig, keys, mut conn) = private_rig(Backend::Postgres).await;
    let mut heard = announcements(&redis.url(), &rig.prefix).await;
    let queued = rig.queue(7).await;
    forget_fields(&mut conn, &keys, &queued).await;
    config_set(&mut conn, "maxmemory-policy", "noeviction").await;
    // Batches of two: four batches, each committed while the one before it settles.
    let worker = rig.worker_of("only", NEVER, 2).await;
    config_set(&mut conn, "maxmemory", "1").await;
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));

    let committed = tokio::time::timeout(Duration::from_secs(20), async {
        while rig.rows().await.len() < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        committed.is_ok(),
        "the first batch, and the one committed while it settled"
    );
    // Refused settlings are retried after a pause, from the worker's own pending entries.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backlog = rig.cache.backlog().await.unwrap();
    assert_eq!(
        (backlog.length, backlog.pending),
        (7, rig.rows().await.len() as u64),
        "nothing deleted, and every entry committed still pending"
    );
    assert!(
        announced(&mut heard, Duration::from_millis(500))
            .await
            .is_empty(),
        "nothing announced"
    );

    config_set(&mut conn, "maxmemory", "0").await;
    let settled = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let backlog = rig.cache.backlog().await.unwrap();
            if (backlog.length, backlog.pending) == (0, 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "every batch settled once Redis took merges"
    );
    for s in &queued {
        assert!(in_its_bucket(&mut conn, &keys, s).await, "merged");
    }
    let mut heard_once = announced(&mut heard, Duration::from_secs(2)).await;
    heard_once.dedup();
    assert_eq!(heard_once, receipts(&queued), "every receipt announced");
    assert_eq!(
        rig.rows().await,
        receipts(&queued),
        "each record stored once"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the worker stops")
        .unwrap();
}
