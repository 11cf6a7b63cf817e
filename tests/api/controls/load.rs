//! Halt under load (issue 5, part 1): two replica processes sharing a store and a Redis prefix are
//! kept busy with checks for one campaign; a halt through one of them must hold, on both, for every
//! check that started after the call returned. Resuming restores the earlier answers exactly.

use super::halt_request;
use crate::{helpers::*, processes::*};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use suppressd::proto::{self, Channel};

const PEOPLE: usize = 40;
const TASKS_PER_REPLICA: usize = 3;
/// Checks each replica answers before the halt, and again after it returned.
const ENOUGH: usize = 60;

fn person(i: usize) -> proto::Recipient {
    email(&format!("load{i}@example.com"))
}

fn notice() -> proto::Scope {
    scope("acme", Channel::Email, "recall", "RC-2026-0042")
}

/// One answered check: on which replica, when it started and ended, and the halt it named.
struct Answered {
    replica: usize,
    started: Instant,
    halt: Option<String>,
    suppressed: bool,
}

async fn answers(client: &mut Client) -> Vec<proto::CheckSuppressedResponse> {
    let mut out = Vec::with_capacity(PEOPLE);
    for i in 0..PEOPLE {
        let req = proto::CheckSuppressedRequest {
            recipient: Some(person(i)),
            scope: Some(notice()),
            ..Default::default()
        };
        out.push(client.check_suppressed(req).await.unwrap().into_inner());
    }
    out
}

/// The instant after which every answer of `replica` names the halt: the start of its last check
/// that did not (or `None` if all did).
fn last_unhalted(log: &[Answered], replica: usize, id: &str) -> Option<Instant> {
    log.iter()
        .filter(|a| a.replica == replica && a.halt.as_deref() != Some(id))
        .map(|a| a.started)
        .max()
}

/// Waits until each replica has answered enough checks that `count` selects (bounded: the machine
/// may be slow, but the load must have run).
async fn busy(log: &Mutex<Vec<Answered>>, count: impl Fn(&Answered) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = {
            let log = log.lock().unwrap();
            (0..2).all(|r| log.iter().filter(|a| a.replica == r && count(a)).count() >= ENOUGH)
        };
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "the replicas were not kept busy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ms_between(from: Instant, to: Option<Instant>) -> f64 {
    match to {
        Some(to) if to >= from => (to - from).as_secs_f64() * 1e3,
        Some(to) => -((from - to).as_secs_f64() * 1e3),
        None => f64::NAN,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_under_load_holds_on_every_replica_once_it_returns() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = format!("h{}:", uuid::Uuid::new_v4().simple());
    let config = ReplicaConfig::new(&db.url, redis_url(), &prefix);
    let replicas = [Replica::start(&config).await, Replica::start(&config).await];
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(r.client().await);
    }
    // Every third person opted out of the campaign's topic; the rest may be sent to.
    for i in (0..PEOPLE).step_by(3) {
        let req = opt_out_request(person(i), scope("acme", Channel::Unspecified, "recall", ""));
        clients[0].opt_out(req).await.unwrap();
    }
    let before = [
        answers(&mut clients[0]).await,
        answers(&mut clients[1]).await,
    ];
    assert_eq!(before[0], before[1], "both replicas answer alike");
    assert!(before[0].iter().any(|a| a.suppressed) && before[0].iter().any(|a| !a.suppressed));

    let log: Arc<Mutex<Vec<Answered>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (replica, client) in clients.iter().enumerate() {
        for t in 0..TASKS_PER_REPLICA {
            let (mut client, log, stop) = (client.clone(), log.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let req = proto::CheckSuppressedRequest {
                        recipient: Some(person(i % PEOPLE)),
                        scope: Some(notice()),
                        ..Default::default()
                    };
                    let started = Instant::now();
                    let answer = client.check_suppressed(req).await.unwrap().into_inner();
                    log.lock().unwrap().push(Answered {
                        replica,
                        started,
                        halt: answer.halt.map(|h| h.halt_id),
                        suppressed: answer.suppressed,
                    });
                    i += TASKS_PER_REPLICA;
                }
            }));
        }
    }
    // Load on both replicas before the halt.
    busy(&log, |_| true).await;

    let called = Instant::now();
    let halt = clients[0]
        .clone()
        .halt_campaign(halt_request(
            "acme",
            "recall",
            "RC-2026-0042",
            "wrong recall letter",
        ))
        .await
        .unwrap()
        .into_inner();
    let returned = Instant::now();
    busy(&log, |a| a.started > returned).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let log = std::mem::take(&mut *log.lock().unwrap());
    for replica in 0..2 {
        let after: Vec<_> = log
            .iter()
            .filter(|a| a.replica == replica && a.started > returned)
            .collect();
        for a in &after {
            assert!(
                a.suppressed,
                "replica {replica}: a check after the halt said send"
            );
            assert_eq!(
                a.halt.as_deref(),
                Some(halt.halt_id.as_str()),
                "replica {replica}"
            );
        }
    }
    let full = [0, 1].map(|r| last_unhalted(&log, r, &halt.halt_id));
    let worst = full.iter().flatten().max().copied();
    println!(
        "halt time to full effect: {:.1} ms after the call returned ({:.1} ms after it was made; \
         the call took {:.1} ms); per replica from the return: {:.1} / {:.1} ms; {} checks",
        ms_between(returned, worst),
        ms_between(called, worst),
        (returned - called).as_secs_f64() * 1e3,
        ms_between(returned, full[0]),
        ms_between(returned, full[1]),
        log.len(),
    );

    clients[1]
        .resume_campaign(proto::ResumeCampaignRequest {
            halt_id: halt.halt_id.clone(),
            reason: "letter corrected".into(),
        })
        .await
        .unwrap();
    let after = [
        answers(&mut clients[0]).await,
        answers(&mut clients[1]).await,
    ];
    assert_eq!(
        after, before,
        "resuming restores every earlier answer exactly"
    );
}
