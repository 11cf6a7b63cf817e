//! The randomized run: concurrent opt-outs and checks against two replicas while a driver kills and
//! restarts Redis (it comes back empty) and one replica. Afterwards every opt-out that was
//! acknowledged `DURABLE` must still be suppressed, and no check that started after an
//! acknowledgement may ever have answered "send".
//!
//! Short in CI; `SUPPRESSD_CHAOS_SECS=120 cargo test --test api chaos -- --nocapture` runs longer.

use crate::{helpers::*, processes::*};
use rand::Rng;
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};
use suppressd::proto::{self, Channel, ReceiptState};
use tonic::Code;

type Slot = Arc<Mutex<Option<Client>>>;

#[derive(Default)]
struct Counts {
    operations: AtomicU64,
    acknowledged: AtomicU64,
    checks: AtomicU64,
    false_sends: AtomicU64,
    unavailable: AtomicU64,
    kills: AtomicU64,
}

fn person(i: u64) -> proto::Recipient {
    email(&format!("chaos{i}@example.com"))
}

fn pick(slots: &[Slot]) -> Option<Client> {
    let i = rand::rng().random_range(0..slots.len());
    slots[i]
        .lock()
        .unwrap()
        .clone()
        .or_else(|| slots[1 - i].lock().unwrap().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_kills_lose_nothing_and_never_send_wrongly() {
    let secs: u64 = std::env::var("SUPPRESSD_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let db = TestDb::new(Backend::Postgres).await;
    let mut redis = PrivateRedis::start().await;
    let prefix = format!("c{}:", uuid::Uuid::new_v4().simple());
    let config = ReplicaConfig::new(&db.url, &redis.url(), &prefix)
        .with("SUPPRESSD_DURABLE_WAIT_MS", "1500");
    let mut a = Replica::start(&config).await;
    let b = Replica::start(&config).await;
    let slots: Vec<Slot> = vec![
        Arc::new(Mutex::new(Some(a.client().await))),
        Arc::new(Mutex::new(Some(b.client().await))),
    ];
    let counts = Arc::new(Counts::default());
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();

    for _ in 0..2 {
        let (slots, counts, acked, next, stop) = (
            slots.clone(),
            counts.clone(),
            acked.clone(),
            next.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let Some(mut client) = pick(&slots) else {
                    continue;
                };
                let i = next.fetch_add(1, Relaxed);
                let req = opt_out_request(person(i), scope("acme", Channel::Unspecified, "", ""));
                counts.operations.fetch_add(1, Relaxed);
                let call = tokio::time::timeout(Duration::from_secs(5), client.opt_out(req)).await;
                if let Ok(Ok(r)) = call
                    && r.into_inner().receipt.unwrap().state == ReceiptState::Durable as i32
                {
                    counts.acknowledged.fetch_add(1, Relaxed);
                    acked.lock().unwrap().push(i);
                }
            }
        }));
    }
    for _ in 0..2 {
        let (slots, counts, acked, stop) =
            (slots.clone(), counts.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let target = {
                    let acked = acked.lock().unwrap();
                    (!acked.is_empty()).then(|| acked[rand::rng().random_range(0..acked.len())])
                };
                let (Some(i), Some(mut client)) = (target, pick(&slots)) else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let req = proto::CheckSuppressedRequest {
                    recipient: Some(person(i)),
                    scope: Some(scope("acme", Channel::Sms, "recall", "RC-1")),
                    ..Default::default()
                };
                counts.operations.fetch_add(1, Relaxed);
                counts.checks.fetch_add(1, Relaxed);
                match tokio::time::timeout(Duration::from_secs(5), client.check_suppressed(req))
                    .await
                {
                    Ok(Ok(r)) if !r.get_ref().suppressed => {
                        eprintln!("FALSE SEND for chaos{i}");
                        counts.false_sends.fetch_add(1, Relaxed);
                    }
                    Ok(Err(s)) if s.code() == Code::Unavailable => {
                        counts.unavailable.fetch_add(1, Relaxed);
                    }
                    _ => {}
                }
            }
        }));
    }

    // The driver.
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let pause = rand::rng().random_range(300..900);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        counts.kills.fetch_add(1, Relaxed);
        if rand::rng().random_bool(0.5) {
            redis.kill();
            let down = rand::rng().random_range(100..600);
            tokio::time::sleep(Duration::from_millis(down)).await;
            redis.restart().await;
        } else {
            *slots[0].lock().unwrap() = None;
            a.kill();
            let down = rand::rng().random_range(100..500);
            tokio::time::sleep(Duration::from_millis(down)).await;
            a = Replica::start(&config).await;
            *slots[0].lock().unwrap() = Some(a.client().await);
        }
    }
    stop.store(true, Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    // Afterwards: every DURABLE acknowledgement is still suppressed, on both replicas.
    let acked = acked.lock().unwrap().clone();
    let mut lost = 0;
    for slot in &slots {
        let mut client = slot.lock().unwrap().clone().unwrap();
        for &i in &acked {
            let req = proto::CheckSuppressedRequest {
                recipient: Some(person(i)),
                scope: Some(scope("acme", Channel::Email, "news", "")),
                ..Default::default()
            };
            if !client
                .check_suppressed(req)
                .await
                .unwrap()
                .into_inner()
                .suppressed
            {
                lost += 1;
            }
        }
    }
    let c = |x: &AtomicU64| x.load(Relaxed);
    eprintln!(
        "chaos {secs}s: operations={} checks={} kills={} acknowledged={} lost={lost} false_sends={} \
         unavailable={}",
        c(&counts.operations),
        c(&counts.checks),
        c(&counts.kills),
        c(&counts.acknowledged),
        c(&counts.false_sends),
        c(&counts.unavailable),
    );
    assert!(
        c(&counts.acknowledged) > 0 && c(&counts.kills) > 0,
        "the run did something"
    );
    assert_eq!(lost, 0, "every DURABLE opt-out is still suppressed");
    assert_eq!(
        c(&counts.false_sends),
        0,
        "no check after an acknowledgement said send"
    );
}
