//! SPEC §5 on every Redis topology (issue 20): the service on a private Redis Cluster and behind
//! Sentinel, and the drills that break them under load: a Cluster master killed, slots resharded, a
//! Sentinel failover, a promoted replica that lost writes. Each drill counts what callers were told
//! (`DURABLE` opt-outs acknowledged, checks answered) and then what was lost (lost = 0, false
//! sends = 0). The everyday tests run on the Cluster too, through `on_cluster!`.

mod cluster;
mod groups;
pub mod nodes;
mod sentinel;

use crate::{helpers::*, processes::*};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use suppressd::proto::{self, Channel, ReceiptState};
use tokio::sync::OnceCell;
use tonic::Code;

/// The Cluster every `on_cluster!` test shares (they use prefixes of their own); its seed list.
pub async fn shared_cluster() -> String {
    static CLUSTER: OnceCell<nodes::Cluster> = OnceCell::const_new();
    CLUSTER
        .get_or_init(|| async {
            tokio::task::spawn_blocking(nodes::Cluster::start)
                .await
                .unwrap()
        })
        .await
        .seeds()
}

fn everywhere() -> proto::Scope {
    scope("acme", Channel::Unspecified, "", "")
}

fn notice() -> proto::Scope {
    scope("acme", Channel::Email, "recall", "RC-1")
}

/// Two replicas of a drill, on the topology `config` names.
pub struct Drill {
    pub a: Replica,
    pub b: Replica,
    _db: TestDb,
}

impl Drill {
    pub async fn start(redis_url: &str, prefix: &str, topology: &[(&str, &str)]) -> Drill {
        let db = TestDb::new(Backend::Postgres).await;
        let mut config = ReplicaConfig::new(&db.url, redis_url, prefix);
        for (k, v) in topology {
            config = config.with(k, v);
        }
        let a = Replica::start(&config).await;
        let b = Replica::start(&config).await;
        Drill { a, b, _db: db }
    }
}

/// What the callers were told while a drill ran.
#[derive(Default, Debug)]
pub struct Counts {
    /// `DURABLE` receipts handed out (each a promise: this person is never sent to).
    pub acknowledged: AtomicU64,
    /// Opt-outs refused (UNAVAILABLE while Redis failed over): nothing promised.
    pub refused: AtomicU64,
    /// Checks of acknowledged people answered "suppressed".
    pub suppressed: AtomicU64,
    /// Checks answered UNAVAILABLE (callers must not send).
    pub unavailable: AtomicU64,
    /// Checks of acknowledged people answered "send": must stay 0.
    pub false_sends: AtomicU64,
    /// Any other error: must stay 0.
    pub other_errors: AtomicU64,
}

fn n(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Load on both replicas: writers opt people out (`DURABLE`) and remember each acknowledged one;
/// checkers check acknowledged people, round robin, on both replicas. `act` runs meanwhile; the
/// load goes on for `after` more. Then every acknowledged person must be suppressed (lost = 0).
pub async fn under_load<F: std::future::Future<Output = ()>>(
    drill: &Drill,
    label: &str,
    act: F,
    after: Duration,
) -> Arc<Counts> {
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<Vec<proto::Recipient>>> = Arc::default();
    let (mut a, b) = (drill.a.client().await, drill.b.client().await);
    // People acknowledged before anything breaks.
    for i in 0..20 {
        let person = email(&format!("before{i}@example.com"));
        let receipt = a
            .opt_out(opt_out_request(person.clone(), everywhere()))
            .await
            .unwrap()
            .into_inner()
            .receipt
            .unwrap();
        assert_eq!(receipt.state, ReceiptState::Durable as i32);
        counts.acknowledged.fetch_add(1, Ordering::Relaxed);
        acknowledged.lock().unwrap().push(person);
    }
    let mut tasks = Vec::new();
    for w in 0..2 {
        let (mut client, counts, stop, acknowledged) = (
            if w == 0 { a.clone() } else { b.clone() },
            counts.clone(),
            stop.clone(),
            acknowledged.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let person = email(&format!("w{w}-{i}@example.com"));
                i += 1;
                let answer = tokio::time::timeout(
                    Duration::from_secs(10),
                    client.opt_out(opt_out_request(person.clone(), everywhere())),
                )
                .await;
                match answer {
                    Ok(Ok(r))
                        if r.get_ref().receipt.as_ref().unwrap().state
                            == ReceiptState::Durable as i32 =>
                    {
                        counts.acknowledged.fetch_add(1, Ordering::Relaxed);
                        acknowledged.lock().unwrap().push(person);
                    }
                    // ACCEPTED (the store was slow) promises only what a Redis loss may take.
                    Ok(Ok(_)) => {}
                    _ => {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    for c in 0..4 {
        let (mut client, counts, stop, acknowledged) = (
            if c % 2 == 0 { a.clone() } else { b.clone() },
            counts.clone(),
            stop.clone(),
            acknowledged.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let person = {
                    let all = acknowledged.lock().unwrap();
                    all[i % all.len()].clone()
                };
                i += 7;
                let answer = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.check_suppressed(proto::CheckSuppressedRequest {
                        time_zone: String::new(),
                        recipient: Some(person),
                        scope: Some(notice()),
                        purpose: 0,
                    }),
                )
                .await
                .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("client timeout")));
                let counter = match answer {
                    Ok(r) if r.get_ref().suppressed => &counts.suppressed,
                    Ok(_) => &counts.false_sends,
                    Err(s) if s.code() == Code::Unavailable => &counts.unavailable,
                    Err(_) => &counts.other_errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    act.await;
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    // Lost: an acknowledged person a check says may be sent to, once the dust has settled.
    let everyone = acknowledged.lock().unwrap().clone();
    let mut lost = Vec::new();
    let mut check = a.clone();
    for person in &everyone {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match check
                .check_suppressed(proto::CheckSuppressedRequest {
                    time_zone: String::new(),
                    recipient: Some(person.clone()),
                    scope: Some(notice()),
                    purpose: 0,
                })
                .await
            {
                Ok(r) if r.get_ref().suppressed => break,
                Ok(_) => {
                    lost.push(person.clone());
                    break;
                }
                Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => panic!("{label}: a check after the drill failed: {s}"),
            }
        }
    }
    eprintln!(
        "{label}: acknowledged {}, lost {}, false sends {}, refused {}, checks suppressed {}, \
         unavailable {}, other errors {}",
        n(&counts.acknowledged),
        lost.len(),
        n(&counts.false_sends),
        n(&counts.refused),
        n(&counts.suppressed),
        n(&counts.unavailable),
        n(&counts.other_errors),
    );
    assert!(lost.is_empty(), "{label}: acknowledged and lost: {lost:?}");
    assert_eq!(n(&counts.false_sends), 0, "{label}: false sends");
    assert_eq!(n(&counts.other_errors), 0, "{label}: other errors");
    assert!(n(&counts.acknowledged) > 20, "{label}: writes went on");
    assert!(n(&counts.suppressed) > 100, "{label}: checks went on");
    counts
}
