//! The near-cache (src/cache/near.rs): checks answered from each replica's copy in memory, and the
//! first invariant of SPEC §5 kept with it: an opt-out that returned is in force on every replica,
//! including one that was frozen while it was written.

use crate::helpers::*;
use crate::processes::{Replica, ReplicaConfig};
use std::{sync::Arc, time::Duration};
use suppressd::{
    cache::{layout, near::NearCache},
    domain::{Channel as DomainChannel, Recipient, RecipientKind, Scope},
    proto::{self, Channel},
    startup::Application,
};
use tokio::sync::oneshot;

/// Another replica in this process, on the same store and Redis prefix as `settings`.
struct Peer {
    client: Client,
    near: Option<Arc<NearCache>>,
    _stop: oneshot::Sender<()>,
}

async fn peer(app: &TestApp, near_cache: bool) -> Peer {
    peer_with(app, near_cache, false).await
}

/// A peer whose near-cache stalls when told to (see `NearCache::with_stall_failpoint`).
async fn peer_with(app: &TestApp, near_cache: bool, stall_failpoint: bool) -> Peer {
    let mut settings = app.settings.clone();
    settings.no_near_cache = !near_cache;
    settings.failpoint_near_stall = stall_failpoint;
    let built = Application::build(&settings, app.clock.clone())
        .await
        .expect("the peer builds");
    let (addr, near) = (built.local_addr(), built.near_cache());
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(built.run_until(async {
        let _ = stopped.await;
    }));
    Peer {
        client: connect(addr).await,
        near,
        _stop: stop,
    }
}

async fn serving(near: &NearCache) {
    for _ in 0..2_000 {
        if near.serving() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the near-cache never served");
}

fn notice() -> proto::Scope {
    scope("acme", Channel::Email, "recall", "")
}

fn accepted(address: &str) -> proto::OptOutRequest {
    proto::OptOutRequest {
        durability: proto::Durability::Accepted as i32,
        ..opt_out_request(email(address), notice())
    }
}

async fn suppressed(client: &mut Client, address: &str) -> bool {
    client
        .check_suppressed(proto::CheckSuppressedRequest {
            recipient: Some(email(address)),
            scope: Some(notice()),
            ..Default::default()
        })
        .await
        .expect("the check answers")
        .into_inner()
        .suppressed
}

/// Deletes an opt-out's field from Redis directly, behind the change feed's back.
async fn remove_behind_the_feed(app: &TestApp, address: &str) {
    let (pepper, _) = app.settings.secrets.pepper().unwrap();
    let subject = pepper.subject(&Recipient::parse(RecipientKind::Email, address).unwrap());
    let scope = Scope::parse("acme", Some(DomainChannel::Email), "recall", "").unwrap();
    let bucket = app.cache().await.keys().bucket_for(&subject);
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let removed: u64 = redis::cmd("HDEL")
        .arg(bucket)
        .arg(&layout::field(&subject, &scope)[..])
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the opt-out of {address} was in Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_answer_from_the_copy_in_memory_once_it_has_loaded() {
    let mut app = spawn_app(Backend::Postgres).await;
    app.wait_cache_complete().await;
    app.opt_out(accepted("before@example.com")).await;
    app.wait_near_cache_serving().await;
    app.opt_out(accepted("after@example.com")).await;

    // Redis alone now says "send" for both (a replica without a near-cache shows it) …
    let mut redis_only = peer(&app, false).await;
    for who in ["before@example.com", "after@example.com"] {
        remove_behind_the_feed(&app, who).await;
        assert!(!suppressed(&mut redis_only.client, who).await);
    }
    // … while the copy, loaded with the first and fed the second, still holds both.
    for who in ["before@example.com", "after@example.com"] {
        assert!(suppressed(&mut app.client, who).await, "{who}");
    }
    assert!(!suppressed(&mut app.client, "never@example.com").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_is_in_force_on_every_replica_when_it_returns() {
    in_force_on_every_replica(Backend::Postgres).await;
}

async fn in_force_on_every_replica(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.wait_cache_complete().await;
    let mut other = peer(&app, true).await;
    app.wait_near_cache_serving().await;
    serving(other.near.as_ref().unwrap()).await;
    // Each opt-out returns on one replica, and the very next call asks the other one, which
    // learns of it only through the feed.
    for i in 0..300 {
        let who = format!("race-{i}@example.com");
        let (writer, reader) = if i % 2 == 0 {
            (&mut app.client, &mut other.client)
        } else {
            (&mut other.client, &mut app.client)
        };
        writer.opt_out(accepted(&who)).await.expect("opt-out");
        assert!(
            suppressed(reader, &who).await,
            "opt-out {i} returned, yet the other replica said send"
        );
    }
    // And an opt-in ends it everywhere too.
    let opt_in = proto::OptInRequest {
        recipient: Some(email("race-0@example.com")),
        scope: Some(notice()),
        token: String::new(),
        reason: "verified by phone".into(),
    };
    app.client.opt_in(opt_in).await.expect("opt-in");
    assert!(!suppressed(&mut other.client, "race-0@example.com").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_stops_answering_from_memory_and_holds_writers_up_only_for_its_lease() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = format!("n{}:", uuid::Uuid::new_v4().simple());
    let config = ReplicaConfig::new(&db.url, redis_url(), &prefix);
    let a = Replica::start(&config).await;
    let b = Replica::start(&config).await;
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Both hold a lease (and so have loaded their copies).
    for _ in 0..2_000 {
        let leases: u64 = redis::cmd("HLEN")
            .arg(format!("{prefix}near-replicas"))
            .query_async(&mut redis)
            .await
            .unwrap();
        if leases == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut at_a, mut at_b) = (a.client().await, b.client().await);
    assert!(!suppressed(&mut at_b, "frozen@example.com").await);

    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &b.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    // The writer waits for b's lease to run out, not for b.
    let written = tokio::time::timeout(
        Duration::from_secs(5),
        at_a.opt_out(accepted("frozen@example.com")),
    )
    .await;
    signal("-CONT");
    written
        .expect("the opt-out returned")
        .expect("the opt-out succeeded");
    // Woken, b must not answer from the copy it had before the opt-out.
    assert!(suppressed(&mut at_b, "frozen@example.com").await);
}

/// A replica whose copy stalls past its lease just as it renews is skipped by writers meanwhile, so
/// it must catch up on the feed before it answers from memory again. Here it is then slow to read
/// the feed, too (the failpoint stalls it 800 ms before the renewal and 600 ms after): a copy that
/// answered as soon as it renewed would say "send" for the opt-out written meanwhile, all that time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_renews_after_its_lease_ran_out_catches_up_before_it_answers() {
    let mut app = spawn_app(Backend::Postgres).await;
    app.wait_cache_complete().await;
    let mut stalled = peer_with(&app, true, true).await;
    app.wait_near_cache_serving().await;
    let near = stalled.near.clone().unwrap();
    serving(&near).await;
    assert!(!suppressed(&mut stalled.client, "lapse@example.com").await);

    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let told =
        layout::Keys::new(app.prefix(), app.settings.cache_bucket_bits).near_stall_failpoint();
    let () = redis::cmd("SET")
        .arg(&told)
        .arg("800:600")
        .query_async(&mut redis)
        .await
        .unwrap();
    // Until the copy has taken the order: from then on it stalls.
    for _ in 0..500 {
        let left: Option<String> = redis::cmd("GET")
            .arg(&told)
            .query_async(&mut redis)
            .await
            .unwrap();
        if left.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Returns once the stalled copy's lease has run out.
    app.opt_out(accepted("lapse@example.com")).await;
    let until = std::time::Instant::now() + Duration::from_millis(800 + 600 + 300);
    let mut asked = 0;
    while std::time::Instant::now() < until {
        assert!(
            suppressed(&mut stalled.client, "lapse@example.com").await,
            "check {asked} after the opt-out returned said send"
        );
        asked += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    serving(&near).await;
    assert!(suppressed(&mut stalled.client, "lapse@example.com").await);
}

on_cluster!(in_force_on_every_replica);
