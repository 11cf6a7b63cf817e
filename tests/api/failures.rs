//! SPEC §5 and §6 under real failures: Redis killed and restarted empty, PostgreSQL stopped, workers
//! and replicas killed, several replicas at once. Real processes on free ports; the shared Redis and
//! PostgreSQL are never touched (beyond a fresh database or key prefix of the test's own).

use crate::{helpers::*, processes::*};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use suppressd::proto::{self, Channel, ReceiptState};
use tonic::{Code, transport::Channel as GrpcChannel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn prefix() -> String {
    format!("f{}:", uuid::Uuid::new_v4().simple())
}

fn everywhere() -> proto::Scope {
    scope("acme", Channel::Unspecified, "", "")
}

fn notice() -> proto::Scope {
    scope("acme", Channel::Email, "recall", "RC-1")
}

/// Answers of checks on people who opted out: everything but `suppressed = false` is acceptable.
#[derive(Default, Debug)]
struct Tally {
    suppressed: AtomicU64,
    unavailable: AtomicU64,
    false_sends: AtomicU64,
    other_errors: AtomicU64,
}

impl Tally {
    fn record(
        &self,
        answer: Result<tonic::Response<proto::CheckSuppressedResponse>, tonic::Status>,
    ) {
        let counter = match answer {
            Ok(r) if r.get_ref().suppressed => &self.suppressed,
            Ok(_) => &self.false_sends,
            Err(s) if s.code() == Code::Unavailable => &self.unavailable,
            Err(_) => &self.other_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Loops checks on `people` through `client` until `stop`, tallying the answers.
fn check_loop(
    client: Client,
    people: Vec<proto::Recipient>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = client;
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let request = proto::CheckSuppressedRequest {
                recipient: Some(people[i % people.len()].clone()),
                scope: Some(notice()),
                ..Default::default()
            };
            let answer =
                tokio::time::timeout(Duration::from_secs(5), client.check_suppressed(request))
                    .await
                    .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("client timeout")));
            tally.record(answer);
            i += 1;
        }
    })
}

async fn opt_out_everyone(client: &mut Client, n: usize) -> Vec<proto::Recipient> {
    let mut people = Vec::new();
    for i in 0..n {
        let person = email(&format!("p{i}@example.com"));
        let receipt = client
            .opt_out(opt_out_request(person.clone(), everywhere()))
            .await
            .unwrap()
            .into_inner()
            .receipt
            .unwrap();
        assert_eq!(receipt.state, ReceiptState::Durable as i32);
        people.push(person);
    }
    people
}

async fn health_status(channel: GrpcChannel) -> Option<i32> {
    let mut health = HealthClient::new(channel);
    let reply = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(reply.into_inner().status)
}

pub(crate) async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn cache_complete(redis_url: &str, prefix: &str) -> bool {
    complete_generation(redis_url, prefix).await.is_some()
}

/// The rebuild generation the cache is complete under, if it is.
async fn complete_generation(redis_url: &str, prefix: &str) -> Option<String> {
    let client = redis::Client::open(redis_url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let (complete, generation): (Option<String>, Option<String>) = redis::pipe()
        .get(format!("{prefix}complete"))
        .get(format!("{prefix}generation"))
        .query_async(&mut conn)
        .await
        .ok()?;
    complete.filter(|c| generation.as_ref() == Some(c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_never_yields_a_false_send() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut redis = PrivateRedis::start().await;
    let replica = Replica::start(&ReplicaConfig::new(&db.url, &redis.url(), &prefix())).await;
    let mut client = replica.client().await;
    let people = opt_out_everyone(&mut client, 20).await;

    let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
    let loops: Vec<_> = (0..4)
        .map(|_| check_loop(client.clone(), people.clone(), tally.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    redis.restart().await; // empty
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    eprintln!("checks during a Redis kill and empty restart: {tally:?}");
    assert_eq!(tally.get(&tally.false_sends), 0, "never a false send");
    assert_eq!(tally.get(&tally.other_errors), 0);
    assert!(
        tally.get(&tally.suppressed) > 100,
        "the store kept answering"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_answers_from_the_store_then_the_rebuilt_cache() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut redis = PrivateRedis::start().await;
    let prefix = prefix();
    let replica = Replica::start(&ReplicaConfig::new(&db.url, &redis.url(), &prefix)).await;
    let mut client = replica.client().await;
    let people = opt_out_everyone(&mut client, 30).await;
    // A bounce that expires later, for a person who then opts out herself during the rebuild.
    let zoe = email("zoe@example.com");
    let mut bounce = opt_out_request(zoe.clone(), everywhere());
    bounce.reason = proto::Reason::Bounce as i32;
    bounce.expires_at = Some(prost_types::Timestamp {
        seconds: 4_000_000_000,
        nanos: 0,
    });
    client.opt_out(bounce).await.unwrap();

    redis.kill();
    redis.restart().await;
    // Hold the rebuild lease, so the test decides when the rebuild runs.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}rebuild-lease"))
        .arg("the-test")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();

    // Incomplete cache: every answer comes from the store.
    assert_all_suppressed(&mut client, &people).await;
    assert!(!cache_complete(&redis.url(), &prefix).await);
    let own = client
        .opt_out(opt_out_request(zoe.clone(), everywhere()))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();

    // Let the rebuild run: it copies the older bounce, and must not overwrite Zoe's own opt-out.
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}rebuild-lease"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = redis.url();
    wait_until("rebuild", Duration::from_secs(20), || {
        cache_complete(&url, &prefix)
    })
    .await;
    assert_all_suppressed(&mut client, &people).await;
    let answer = client
        .check_suppressed(check_request(&zoe, notice()))
        .await
        .unwrap()
        .into_inner();
    let matched = answer.matched.expect("suppressed");
    assert_eq!(
        matched.reason,
        proto::Reason::UserRequest as i32,
        "the person's own record stays"
    );
    assert_eq!(matched.receipt_id, own.receipt_id);
}

/// How the writes that the stale Redis will have lost were made.
#[derive(Clone, Copy)]
enum Later {
    OptOuts,
    Import,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_went_back_in_time_is_not_trusted() {
    went_back_in_time(Later::OptOuts).await;
}

/// The same, when what the old snapshot lacks is an import: the import bumps the write counter too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_went_back_to_before_an_import_is_not_trusted() {
    went_back_in_time(Later::Import).await;
}

async fn went_back_in_time(later: Later) {
    let db = TestDb::new(Backend::Postgres).await;
    let mut redis = PrivateRedis::start().await;
    let prefix = prefix();
    let replica = Replica::start(&ReplicaConfig::new(&db.url, &redis.url(), &prefix)).await;
    // Only checks: it learnt of the later writes from its near-cache's feed, not from replies; and
    // the replica that wrote them does not check meanwhile, so finds the loss only on its own.
    let checker = Replica::start(&ReplicaConfig::new(&db.url, &redis.url(), &prefix)).await;
    let mut client = replica.client().await;
    let url = redis.url();
    wait_until("cache complete", Duration::from_secs(20), || {
        cache_complete(&url, &prefix)
    })
    .await;
    let before = opt_out_everyone(&mut client, 3).await;
    let stale_generation = complete_generation(&url, &prefix).await;
    redis.snapshot(); // complete, marked, and about to be out of date
    let addresses: Vec<String> = (0..10).map(|i| format!("later{i}@example.com")).collect();
    match later {
        Later::OptOuts => {
            for address in &addresses {
                client
                    .opt_out(opt_out_request(email(address), everywhere()))
                    .await
                    .unwrap();
            }
        }
        Later::Import => {
            let rows = addresses
                .iter()
                .enumerate()
                .map(|(i, a)| crate::imports::row(i as u64 + 1, a, everywhere()));
            let summary = client
                .import_suppressions(tokio_stream::iter(rows.collect::<Vec<_>>()))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(summary.imported, 10);
        }
    }
    let after: Vec<_> = addresses.iter().map(|a| email(a)).collect();
    // The node comes back from the old snapshot: markers everywhere, the later opt-outs missing.
    redis.kill();
    redis.restart().await;
    let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
    let all: Vec<_> = before.iter().chain(&after).cloned().collect();
    let mut checks = checker.client().await;
    let checking = check_loop(checks.clone(), all.clone(), tally.clone(), stop.clone());
    wait_until("rebuilt", Duration::from_secs(20), || async {
        let now = complete_generation(&url, &prefix).await;
        now.is_some() && now != stale_generation
    })
    .await;
    // Long enough for both near-caches to have loaded again (they retry every 200 ms).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    checking.await.unwrap();
    eprintln!("checks against a stale Redis: {tally:?}");
    assert_eq!(tally.get(&tally.false_sends), 0, "{tally:?}");
    assert_all_suppressed(&mut client, &all).await;
    assert_all_suppressed(&mut checks, &all).await;
}

/// Every one of `people` is suppressed for the test's notice (and the call succeeds).
async fn assert_all_suppressed(client: &mut Client, people: &[proto::Recipient]) {
    for p in people {
        let answer = client
            .check_suppressed(check_request(p, notice()))
            .await
            .unwrap();
        assert!(answer.into_inner().suppressed);
    }
}

fn check_request(r: &proto::Recipient, s: proto::Scope) -> proto::CheckSuppressedRequest {
    proto::CheckSuppressedRequest {
        recipient: Some(r.clone()),
        scope: Some(s),
        ..Default::default()
    }
}

async fn receipt_state(client: &mut Client, id: &str) -> i32 {
    client
        .get_receipt(proto::GetReceiptRequest {
            receipt_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .state
}

async fn rows_in(url: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM suppressions")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_durable_becomes_accepted_then_durable_when_it_returns() {
    let pg = PrivatePostgres::start().await;
    let redis = PrivateRedis::start().await;
    let prefix = prefix();
    let config = ReplicaConfig::new(&pg.url(), &redis.url(), &prefix)
        .with("SUPPRESSD_DURABLE_WAIT_MS", "700")
        .with("SUPPRESSD_BACKLOG_LIMIT", "4");
    let replica = Replica::start(&config).await;
    let mut client = replica.client().await;
    let early = opt_out_everyone(&mut client, 1).await;
    // Checks can go on without the store only once the cache is complete.
    let url = redis.url();
    wait_until("cache complete", Duration::from_secs(20), || {
        cache_complete(&url, &prefix)
    })
    .await;

    pg.stop_immediate();
    let started = Instant::now();
    let receipt = client
        .opt_out(opt_out_request(email("during@example.com"), everywhere()))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert_eq!(
        receipt.state,
        ReceiptState::Accepted as i32,
        "never a false DURABLE"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after the bound, not never"
    );
    // Checks are unaffected, for old and new opt-outs alike.
    assert_all_suppressed(
        &mut client,
        &[early[0].clone(), email("during@example.com")],
    )
    .await;
    assert_eq!(
        receipt_state(&mut client, &receipt.receipt_id).await,
        ReceiptState::Accepted as i32
    );

    // The backlog limit refuses ACCEPTED-only writes; DURABLE ones are still taken.
    let mut accepted_only = Vec::new();
    let mut refused = 0;
    for i in 0..6 {
        let mut req = opt_out_request(email(&format!("q{i}@example.com")), everywhere());
        req.durability = proto::Durability::Accepted as i32;
        match client.opt_out(req).await {
            Ok(r) => accepted_only.push(r.into_inner().receipt.unwrap().receipt_id),
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                assert!(s.message().contains("backlog"), "{}", s.message());
                refused += 1;
            }
        }
    }
    assert_eq!(
        (accepted_only.len(), refused),
        (3, 3),
        "4 uncommitted at most"
    );
    let late = client
        .opt_out(opt_out_request(email("late@example.com"), everywhere()))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert_eq!(late.state, ReceiptState::Accepted as i32);
    // A queued receipt shows its tenant's keys alone: to another tenant's it does not exist.
    let mut acme = client_with(replica.channel().await, Some(ACME_WRITE_KEY));
    assert_eq!(
        receipt_state(&mut acme, &late.receipt_id).await,
        ReceiptState::Accepted as i32
    );
    let other = client
        .opt_out(opt_out_request(
            email("other@example.com"),
            scope("globex", Channel::Unspecified, "", ""),
        ))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    let refused = acme
        .get_receipt(proto::GetReceiptRequest {
            receipt_id: other.receipt_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");

    pg.start_again().await;
    let mut ids = vec![
        receipt.receipt_id.clone(),
        late.receipt_id.clone(),
        other.receipt_id.clone(),
    ];
    ids.extend(accepted_only);
    for id in &ids {
        let mut c = client.clone();
        wait_until("the receipt turns DURABLE", Duration::from_secs(20), || {
            let mut c2 = c.clone();
            let id = id.clone();
            async move { receipt_state(&mut c2, &id).await == ReceiptState::Durable as i32 }
        })
        .await;
        let _ = &mut c;
    }
    assert_eq!(
        rows_in(&pg.url()).await,
        1 + ids.len() as i64,
        "exactly one row each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_between_commit_and_ack_leaves_exactly_one_row() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = prefix();
    let config = ReplicaConfig::new(&db.url, redis_url(), &prefix);
    let mut doomed = Replica::start(
        &config
            .clone()
            .with("SUPPRESSD_FAILPOINT_CRASH_AFTER_COMMIT", "true"),
    )
    .await;
    let mut client = doomed.client().await;
    let mut req = opt_out_request(email("once@example.com"), everywhere());
    req.durability = proto::Durability::Accepted as i32;
    // The process may die before or after this answer reaches us; the record is queued either way.
    let _ = client.opt_out(req).await;
    let status = doomed.wait().await;
    assert!(!status.success(), "the failpoint aborted the replica");
    assert_eq!(rows_in(&db.url).await, 1, "committed before the crash");

    let survivor = Replica::start(&config).await;
    let keys = suppressd::cache::layout::Keys::new(&prefix, 6);
    let cache = suppressd::cache::Cache::connect_url(redis_url(), keys)
        .await
        .unwrap();
    wait_until(
        "the survivor settles the abandoned entry",
        Duration::from_secs(20),
        || {
            let cache = cache.clone();
            async move { cache.backlog().await.unwrap().length == 0 }
        },
    )
    .await;
    assert_eq!(rows_in(&db.url).await, 1, "redelivery added nothing");
    let mut client = survivor.client().await;
    assert!(
        client
            .check_suppressed(check_request(&email("once@example.com"), notice()))
            .await
            .unwrap()
            .into_inner()
            .suppressed
    );
    delete_prefix(redis_url(), &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_opt_outs_and_survive_each_other() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = prefix();
    let config = ReplicaConfig::new(&db.url, redis_url(), &prefix);
    let mut a = Replica::start(&config).await;
    let b = Replica::start(&config).await;
    let (mut via_a, mut via_b) = (a.client().await, b.client().await);

    // Read-your-writes across replicas, immediately after OptOut returns.
    for i in 0..30 {
        let person = email(&format!("x{i}@example.com"));
        let mut req = opt_out_request(person.clone(), everywhere());
        req.durability = proto::Durability::Accepted as i32;
        via_a.opt_out(req).await.unwrap();
        assert!(
            via_b
                .check_suppressed(check_request(&person, notice()))
                .await
                .unwrap()
                .into_inner()
                .suppressed
        );
    }

    // Kill A in the middle of a stream of opt-outs; B keeps answering.
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let (mut via_a, acked) = (via_a.clone(), acked.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let mut req = opt_out_request(email(&format!("y{i}@example.com")), everywhere());
                req.durability = proto::Durability::Accepted as i32;
                match via_a.opt_out(req).await {
                    Ok(r) => acked
                        .lock()
                        .unwrap()
                        .push((i, r.into_inner().receipt.unwrap().receipt_id)),
                    Err(_) => break,
                }
            }
        })
    };
    let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
    let people: Vec<_> = (0..30)
        .map(|i| email(&format!("x{i}@example.com")))
        .collect();
    let checks = check_loop(via_b.clone(), people, tally.clone(), stop.clone());
    // Killed once the stream is well under way, however slow the machine is.
    wait_until("A acknowledges opt-outs", Duration::from_secs(30), || {
        let acked = acked.clone();
        async move { acked.lock().unwrap().len() > 20 }
    })
    .await;
    a.kill();
    writer.await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    checks.await.unwrap();
    assert_eq!(
        tally.get(&tally.false_sends)
            + tally.get(&tally.unavailable)
            + tally.get(&tally.other_errors),
        0,
        "{tally:?}"
    );

    // Every opt-out A acknowledged, even as ACCEPTED, reaches the store through B.
    let keys = suppressd::cache::layout::Keys::new(&prefix, 6);
    let cache = suppressd::cache::Cache::connect_url(redis_url(), keys)
        .await
        .unwrap();
    wait_until("B drains A's entries", Duration::from_secs(20), || {
        let cache = cache.clone();
        async move { cache.backlog().await.unwrap().length == 0 }
    })
    .await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "A was busy when it died");
    for (i, id) in &acked {
        assert_eq!(
            receipt_state(&mut via_b, id).await,
            ReceiptState::Durable as i32
        );
        let person = email(&format!("y{i}@example.com"));
        assert!(
            via_b
                .check_suppressed(check_request(&person, notice()))
                .await
                .unwrap()
                .into_inner()
                .suppressed
        );
    }
    let rows = rows_in(&db.url).await;
    assert!(rows >= 30 + acked.len() as i64);
    eprintln!(
        "A acknowledged {} opt-outs before SIGKILL; store has {rows} rows",
        acked.len()
    );
    delete_prefix(redis_url(), &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_and_store_gone_it_refuses_then_recovers_without_restart() {
    let pg = PrivatePostgres::start().await;
    let mut redis = PrivateRedis::start().await;
    let replica = Replica::start(&ReplicaConfig::new(&pg.url(), &redis.url(), &prefix())).await;
    let mut client = replica.client().await;
    let people = opt_out_everyone(&mut client, 3).await;
    assert_eq!(
        health_status(replica.channel().await).await,
        Some(ServingStatus::Serving as i32)
    );

    redis.kill();
    pg.stop_immediate();
    let status = client
        .check_suppressed(check_request(&people[0], notice()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let status = client
        .opt_out(opt_out_request(email("nope@example.com"), everywhere()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let channel = replica.channel().await;
    wait_until("NOT_SERVING", Duration::from_secs(10), || {
        let channel = channel.clone();
        async move { health_status(channel).await == Some(ServingStatus::NotServing as i32) }
    })
    .await;

    redis.restart().await;
    pg.start_again().await;
    wait_until("SERVING again", Duration::from_secs(20), || {
        let channel = channel.clone();
        async move { health_status(channel).await == Some(ServingStatus::Serving as i32) }
    })
    .await;
    assert_all_suppressed(&mut client, &people).await;
    let after = client
        .opt_out(opt_out_request(email("after@example.com"), everywhere()))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert_eq!(after.state, ReceiptState::Durable as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_health_not_serving_before_draining() {
    let db = TestDb::new(Backend::Sqlite).await;
    let prefix = prefix();
    let mut replica = Replica::start(&ReplicaConfig::new(&db.url, redis_url(), &prefix)).await;
    let mut health = HealthClient::new(replica.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    replica.terminate();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("a status change before the connection closes")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    let status = replica.wait().await;
    assert!(status.success(), "a clean exit: {status:?}");
    delete_prefix(redis_url(), &prefix);
}
