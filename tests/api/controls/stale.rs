//! Controls that never fail silently (issue 19, items 1, 2 and 4): two replicas share the store and
//! Redis; replica B is cut first from the store (it follows through Redis), then from both (its
//! controls turn stale and it fails closed), while replica A halts campaigns. A change says which
//! replicas confirmed it, and names B when B could not; B never says "send" for a halted campaign,
//! stops honouring a mandatory override while stale, says so in health, and recovers by itself.
//!
//! The cut is the `failpoints` feature's: B's controls poller treats the store (and then Redis's
//! published snapshot) as unreachable, told through a Redis key; everything else of B keeps
//! working, so what the test sees is the controls' own failure handling.
//!
//! And one replica cut from the store alone: a check under a consent requirement cannot confirm the
//! person's consent, so it answers `UNAVAILABLE`, while every other check goes on as before.

use super::{
    consent::{check_of, consent_request, require_request},
    *,
};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use suppressd::cache::layout::Keys;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Cuts B's controls poller from `what` (`store`, `store+redis`), or restores it (`None`).
fn cut(a: &TestApp, replica: &str, what: Option<&str>) {
    let key = Keys::new(a.prefix(), 0).controls_cut_failpoint(replica);
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = match what {
        Some(what) => redis::cmd("SET").arg(&key).arg(what).query(&mut conn),
        None => redis::cmd("DEL").arg(&key).query(&mut conn),
    }
    .unwrap();
}

async fn health(channel: tonic::transport::Channel) -> i32 {
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    reply.into_inner().status
}

async fn wait_health(channel: &tonic::transport::Channel, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(channel.clone()).await != want as i32 {
        assert!(Instant::now() < deadline, "health never turned {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn person(i: usize) -> proto::Recipient {
    email(&format!("drill{i}@example.com"))
}

fn campaign(c: &str) -> proto::Scope {
    scope("acme", Channel::Email, "news", c)
}

/// One check B answered under load: when it started, for which campaign, and whether it said send.
struct Answered {
    started: Instant,
    campaign: &'static str,
    send: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_from_the_store_follows_halts_through_redis_and_fails_closed_when_stale() {
    let mut a = spawn_app_with(Backend::Postgres, Clock::System, |s| {
        s.replica_name = Some(format!("a-{}", uuid::Uuid::new_v4().simple()));
    })
    .await;
    let b_name = format!("b-{}", uuid::Uuid::new_v4().simple());
    let (mut b, b_health, _stop_b) = replica_b(&a, &b_name).await;
    a.wait_cache_complete().await;
    // A person opted out of everything, whose postal recall letters a declaration lets through.
    let owner = email("owner@example.com");
    a.opt_out(opt_out_request(
        owner.clone(),
        scope("acme", Channel::Unspecified, "", ""),
    ))
    .await;
    let future = suppressd::domain::clock::system_now() + HOUR;
    a.client
        .declare_mandatory(declaration("recall", &[Channel::Postal], future))
        .await
        .unwrap();
    let letter = scope("acme", Channel::Postal, "recall", "");
    let overridden = b.check_suppressed(proto::CheckSuppressedRequest {
        recipient: Some(owner.clone()),
        scope: Some(letter.clone()),
        ..Default::default()
    });
    assert!(overridden.await.unwrap().into_inner().mandatory.is_some());

    // Load on B for the whole drill: checks of two campaigns for people who never opted out.
    let log: Arc<Mutex<Vec<Answered>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (mut b, log, stop) = (b.clone(), log.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let which = if i % 2 == 0 { "C1" } else { "C2" };
                let started = Instant::now();
                let req = proto::CheckSuppressedRequest {
                    recipient: Some(person(i % 50)),
                    scope: Some(campaign(which)),
                    ..Default::default()
                };
                let send = match b.check_suppressed(req).await {
                    Ok(answer) => !answer.into_inner().suppressed,
                    Err(status) => {
                        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                        false
                    }
                };
                log.lock().unwrap().push(Answered {
                    started,
                    campaign: which,
                    send,
                });
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // 1. B cut from the store: a halt through A reaches B through Redis, and A says so.
    cut(&a, &b_name, Some("store"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let h1 = a
        .client
        .halt_campaign(halt_request("acme", "", "C1", "wrong list"))
        .await
        .unwrap()
        .into_inner();
    let c1_returned = Instant::now();
    let p1 = h1
        .propagation
        .clone()
        .expect("a change says how far it reached");
    assert_eq!(
        p1.outcome,
        proto::PropagationOutcome::Confirmed as i32,
        "{p1:?}"
    );
    assert!(p1.confirmed_replicas.contains(&b_name), "{p1:?}");
    assert!(p1.unconfirmed_replicas.is_empty(), "{p1:?}");
    let answer = b.check_suppressed(proto::CheckSuppressedRequest {
        recipient: Some(person(1)),
        scope: Some(campaign("C1")),
        ..Default::default()
    });
    assert_halted(&answer.await.unwrap().into_inner(), &h1.halt_id);
    assert_eq!(
        health(b_health.clone()).await,
        ServingStatus::Serving as i32
    );

    // 2. B cut from both: the next halt is committed but unconfirmed, naming B; B is stale by the
    //    time the call returns, so it lets nothing go and no override through.
    cut(&a, &b_name, Some("store+redis"));
    let h2 = a
        .client
        .halt_campaign(halt_request("acme", "", "C2", "duplicate send"))
        .await
        .unwrap()
        .into_inner();
    let c2_returned = Instant::now();
    let p2 = h2.propagation.clone().unwrap();
    assert_eq!(
        p2.outcome,
        proto::PropagationOutcome::Unconfirmed as i32,
        "{p2:?}"
    );
    assert_eq!(p2.unconfirmed_replicas, std::slice::from_ref(&b_name));
    assert!(!p2.confirmed_replicas.contains(&b_name), "{p2:?}");
    let status = b
        .check_suppressed(proto::CheckSuppressedRequest {
            recipient: Some(person(2)),
            scope: Some(campaign("C2")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let answer = b.check_suppressed(proto::CheckSuppressedRequest {
        recipient: Some(owner.clone()),
        scope: Some(letter.clone()),
        ..Default::default()
    });
    let answer = answer.await.unwrap().into_inner();
    assert!(
        answer.suppressed && answer.mandatory.is_none(),
        "{answer:?}"
    );
    wait_health(&b_health, ServingStatus::NotServing).await;
    // A itself is unaffected.
    let on_a = a.check(person(3), campaign("C2")).await;
    assert_halted(&on_a, &h2.halt_id);
    assert!(!a.is_suppressed(person(3), campaign("C3")).await);

    // 3. Restored: B catches up by itself.
    cut(&a, &b_name, None);
    wait_health(&b_health, ServingStatus::Serving).await;
    let answer = b.check_suppressed(proto::CheckSuppressedRequest {
        recipient: Some(person(4)),
        scope: Some(campaign("C2")),
        ..Default::default()
    });
    assert_halted(&answer.await.unwrap().into_inner(), &h2.halt_id);
    let other = b.check_suppressed(proto::CheckSuppressedRequest {
        recipient: Some(person(4)),
        scope: Some(campaign("C3")),
        ..Default::default()
    });
    assert!(!other.await.unwrap().into_inner().suppressed);

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let log = std::mem::take(&mut *log.lock().unwrap());
    let after = |a: &&Answered| {
        (a.campaign == "C1" && a.started > c1_returned)
            || (a.campaign == "C2" && a.started > c2_returned)
    };
    let checked = log.iter().filter(after).count();
    println!(
        "stale-replica drill: {} checks on B, {checked} of halted campaigns after their halt \
         returned",
        log.len()
    );
    assert!(checked > 20, "the load ran: {checked}");
    let false_sends: Vec<String> = log
        .iter()
        .filter(after)
        .filter(|a| a.send)
        .map(|a| {
            let returned = if a.campaign == "C1" {
                c1_returned
            } else {
                c2_returned
            };
            format!(
                "{} sent {:?} after its halt returned",
                a.campaign,
                a.started - returned
            )
        })
        .collect();
    assert!(false_sends.is_empty(), "{false_sends:?}");
}

fn published_version(a: &TestApp) -> Option<i64> {
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("HGET")
        .arg(format!("{}controls", a.prefix()))
        .arg("version")
        .query(&mut conn)
        .unwrap()
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The store is the source of truth: controls published in Redis that the store does not have
/// (Redis ahead of a store restored from a backup) are replaced by the store's, and a store whose
/// version went back (restored) is followed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_wins_over_redis_when_it_was_restored_from_a_backup() {
    let mut a = spawn_app(Backend::Postgres).await;
    let halt = a
        .client
        .halt_campaign(halt_request("acme", "", "C1", "wrong list"))
        .await
        .unwrap()
        .into_inner();
    let stored = published_version(&a).expect("published");
    // A restore: the halt's row and the version bump are gone from the store.
    let pool = sqlx::PgPool::connect(&a.db.url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("DELETE FROM controls")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE control_head SET version = 0")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    eventually("the replica follows the store back", async || {
        !a.check(person(1), campaign("C1")).await.suppressed
    })
    .await;
    assert_eq!(
        published_version(&a),
        Some(0),
        "Redis says what the store says"
    );
    assert!(stored > 0);

    // Redis ahead of the store (a snapshot from before the restore): not adopted, replaced.
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{}controls", a.prefix()))
        .arg("version")
        .arg(stored + 5)
        .query(&mut conn)
        .unwrap();
    eventually("Redis is brought back to the store's version", async || {
        published_version(&a) == Some(0)
    })
    .await;
    assert!(!a.check(person(1), campaign("C1")).await.suppressed);
    assert!(!halt.halt_id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_under_a_requirement_fails_closed_while_the_store_is_unreachable() {
    let pg = PrivatePostgres::start().await;
    let url = pg.url();
    let mut app = spawn_app_with(Backend::Postgres, Clock::System, |s| s.store_url = url).await;
    app.wait_cache_complete().await;
    app.client
        .require_consent(require_request(Channel::Email, "marketing"))
        .await
        .unwrap();
    let mut writer = app.client_with_key(Some(WRITE_KEY)).await;
    let marketing = scope("acme", Channel::Email, "marketing", "");
    writer
        .record_consent(consent_request(email("p@example.com"), marketing.clone()))
        .await
        .unwrap();
    assert!(
        !app.is_suppressed(email("p@example.com"), marketing.clone())
            .await
    );

    // Off the worker thread, so that the server's tasks on it keep running meanwhile.
    tokio::task::block_in_place(|| pg.stop_immediate());
    // Other topics answer from the cache as before (once this replica confirmed its controls
    // through Redis: on a loaded machine that poll may first let it turn stale and refuse).
    let recall = scope("acme", Channel::Email, "recall", "");
    assert_eq!(
        answer(&mut app.client, "p@example.com", &recall).await,
        Some(false)
    );
    // The consent cannot be confirmed: no "send", but UNAVAILABLE, saying why.
    let status = app
        .client
        .check_suppressed(check_of("p@example.com", &marketing))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("consent"), "{status:?}");
    // Nor can a consent be recorded.
    let status = writer
        .record_consent(consent_request(email("q@example.com"), marketing.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    pg.start_again().await;
    assert_eq!(
        answer(&mut app.client, "p@example.com", &marketing).await,
        Some(false)
    );
}

/// Whether the check is suppressed, once the replica answers it at all (a replica whose controls
/// turned stale refuses `UNAVAILABLE` until it confirms them again); `None` if it never does.
async fn answer(client: &mut Client, who: &str, scope: &proto::Scope) -> Option<bool> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match client.check_suppressed(check_of(who, scope)).await {
            Ok(answer) => return Some(answer.into_inner().suppressed),
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    None
}

/// A check on a replica whose controls turn fresh again while the check runs: it read the controls
/// held while stale (without the halt made meanwhile), and the confirmation that came before it
/// answered is of the ones that replaced them. It must not say "send": whether the controls may be
/// trusted is judged before they are read (the stale-replica drill met this once under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_read_controls_while_stale_is_refused_though_they_turn_fresh_meanwhile() {
    let a = spawn_app_with(Backend::Postgres, Clock::System, |s| {
        s.replica_name = Some(format!("a-{}", uuid::Uuid::new_v4().simple()));
        s.failpoint_check_pause = true;
    })
    .await;
    let b_name = format!("b-{}", uuid::Uuid::new_v4().simple());
    let (b, b_health, _stop_b) = replica_b(&a, &b_name).await;
    a.wait_cache_complete().await;

    // B cut from the store and Redis: the halt is committed without it, and B turns stale.
    cut(&a, &b_name, Some("store+redis"));
    let halt = a
        .client
        .clone()
        .halt_campaign(halt_request("acme", "", "C9", "wrong list"))
        .await
        .unwrap()
        .into_inner();
    wait_health(&b_health, ServingStatus::NotServing).await;

    // B's next check pauses after reading its controls; meanwhile B is restored and turns fresh.
    let pause = Keys::new(a.prefix(), 0).check_pause_failpoint(&b_name);
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&pause)
        .arg(4_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let check = tokio::spawn({
        let mut b = b.clone();
        async move {
            b.check_suppressed(proto::CheckSuppressedRequest {
                recipient: Some(person(9)),
                scope: Some(campaign("C9")),
                ..Default::default()
            })
            .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let told: bool = redis::cmd("EXISTS")
            .arg(&pause)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !told {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the check never reached the pause"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cut(&a, &b_name, None);
    wait_health(&b_health, ServingStatus::Serving).await;

    match check.await.unwrap() {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(answer) => assert!(
            answer.get_ref().suppressed,
            "B said send for a campaign halted ({}) before the check began",
            halt.halt_id
        ),
    }
    // And once fresh, B answers by the halt.
    let after = b
        .clone()
        .check_suppressed(proto::CheckSuppressedRequest {
            recipient: Some(person(9)),
            scope: Some(campaign("C9")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_halted(&after, &halt.halt_id);
}
