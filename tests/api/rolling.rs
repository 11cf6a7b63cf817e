//! The rolling update across versions: one replica of the previous release and one of this tree on
//! one Redis and one PostgreSQL database, under load, while the old replica is stopped and replaced
//! by a new one. Afterwards every opt-out acknowledged `DURABLE` is in the store and suppressed on
//! every live replica, no check answered "send" for a person whose opt-out had been acknowledged
//! (in any state) before the check started, and nothing was dead-lettered.
//!
//! The sequence is the only one the previous release allows: its migrator refuses a database with
//! migrations it does not know, so the old replica starts first on the fresh database (its schema),
//! then a new replica starts beside it (migrating to this tree's schema while the old one serves),
//! then the old one gets SIGTERM, as an orchestrator stops a pod, and a second new replica takes its
//! place. Load runs through every phase.
//!
//! The previous release's binary comes from `scripts/build-previous` (`scripts/test` runs it first).
//! A few seconds per phase here; `scripts/rolling-drill` runs the same test with longer phases
//! (`SUPPRESSD_ROLLING_SECS`, seconds per phase) and prints its counts.

use crate::{helpers::*, processes::*};
use rand::Rng;
use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};
use suppressd::proto::{self, Channel, ReceiptState};
use tonic::Code;

/// The previous release's binary: `SUPPRESSD_PREVIOUS_BIN`, else where `scripts/build-previous`
/// puts it. Missing, the test fails saying how to build it: it never skips.
pub(super) fn previous_release() -> (String, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let release = std::fs::read_to_string(root.join("scripts/previous-release"))
        .expect("scripts/previous-release names the previous release");
    let tag = release
        .split_whitespace()
        .next()
        .expect("scripts/previous-release holds '<tag> <commit>'")
        .to_owned();
    let binary = std::env::var_os("SUPPRESSD_PREVIOUS_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/previous").join(&tag).join("suppressd"));
    assert!(
        binary.is_file(),
        "the previous release's server ({tag}) is not built at {}: run scripts/build-previous \
         (scripts/test runs it before the tests)",
        binary.display()
    );
    (tag, binary)
}

/// Which build a replica runs, for the counts (in the layout drill: the old bits or the new).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Build {
    Old,
    New,
}

/// The replicas taking traffic now (a replica leaves this list before it is stopped).
pub(super) type Live = Arc<Mutex<Vec<(Build, Client)>>>;

fn pick(live: &Live) -> Option<(Build, Client)> {
    let live = live.lock().unwrap();
    (!live.is_empty()).then(|| live[rand::rng().random_range(0..live.len())].clone())
}

#[derive(Default)]
pub(super) struct Counts {
    pub(super) opt_outs: AtomicU64,
    pub(super) acknowledged: AtomicU64,
    pub(super) durable: AtomicU64,
    pub(super) acknowledged_by_old: AtomicU64,
    pub(super) acknowledged_by_new: AtomicU64,
    pub(super) checks: AtomicU64,
    pub(super) checks_by_old: AtomicU64,
    pub(super) false_sends: AtomicU64,
    pub(super) false_sends_by_old: AtomicU64,
    pub(super) unavailable: AtomicU64,
    pub(super) other_errors: AtomicU64,
}

/// What the writers were told: every acknowledged person, and the DURABLE ones with their receipt.
#[derive(Default)]
pub(super) struct Acks {
    pub(super) any: Vec<u64>,
    pub(super) durable: Vec<(u64, String)>,
}

fn person(i: u64) -> proto::Recipient {
    email(&format!("rolling{i}@example.com"))
}

/// A check of a scope every opt-out of the load covers (tenant-wide, every channel).
pub(super) fn check_request(i: u64) -> proto::CheckSuppressedRequest {
    proto::CheckSuppressedRequest {
        recipient: Some(person(i)),
        scope: Some(scope("acme", Channel::Sms, "recall", "RC-1")),
        ..Default::default()
    }
}

pub(super) fn start_load(
    live: &Live,
    counts: &Arc<Counts>,
    acks: &Arc<Mutex<Acks>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (live, counts, acks, next, stop) = (
            live.clone(),
            counts.clone(),
            acks.clone(),
            next.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let Some((build, mut client)) = pick(&live) else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let i = next.fetch_add(1, Relaxed);
                let req = opt_out_request(person(i), scope("acme", Channel::Unspecified, "", ""));
                counts.opt_outs.fetch_add(1, Relaxed);
                let call = tokio::time::timeout(Duration::from_secs(5), client.opt_out(req)).await;
                let Ok(Ok(answer)) = call else {
                    continue;
                };
                let receipt = answer.into_inner().receipt.expect("a receipt");
                counts.acknowledged.fetch_add(1, Relaxed);
                match build {
                    Build::Old => counts.acknowledged_by_old.fetch_add(1, Relaxed),
                    Build::New => counts.acknowledged_by_new.fetch_add(1, Relaxed),
                };
                let mut acks = acks.lock().unwrap();
                acks.any.push(i);
                if receipt.state == ReceiptState::Durable as i32 {
                    counts.durable.fetch_add(1, Relaxed);
                    acks.durable.push((i, receipt.receipt_id));
                }
            }
        }));
    }
    for _ in 0..2 {
        let (live, counts, acks, stop) = (live.clone(), counts.clone(), acks.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                // Only people acknowledged before this check starts.
                let target = {
                    let acks = acks.lock().unwrap();
                    (!acks.any.is_empty())
                        .then(|| acks.any[rand::rng().random_range(0..acks.any.len())])
                };
                let (Some(i), Some((build, mut client))) = (target, pick(&live)) else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                counts.checks.fetch_add(1, Relaxed);
                if build == Build::Old {
                    counts.checks_by_old.fetch_add(1, Relaxed);
                }
                let call = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.check_suppressed(check_request(i)),
                )
                .await;
                match call {
                    Ok(Ok(r)) if !r.get_ref().suppressed => {
                        let which = if build == Build::Old { "old" } else { "new" };
                        eprintln!("FALSE SEND for rolling{i} by the {which} replica");
                        counts.false_sends.fetch_add(1, Relaxed);
                        if build == Build::Old {
                            counts.false_sends_by_old.fetch_add(1, Relaxed);
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(s)) if s.code() == Code::Unavailable => {
                        counts.unavailable.fetch_add(1, Relaxed);
                    }
                    _ => {
                        counts.other_errors.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
    }
    tasks
}

/// `XPENDING` of the write-behind group for one consumer: how many entries it holds.
fn pending_for(conn: &mut redis::Connection, stream: &str, consumer: &str) -> usize {
    let pending: Result<Vec<(String, String, u64, u64)>, _> = redis::cmd("XPENDING")
        .arg(stream)
        .arg("suppressd-writers")
        .arg("-")
        .arg("+")
        .arg(100_000)
        .arg(consumer)
        .query(conn);
    pending.map(|p| p.len()).unwrap_or(0)
}

/// What the end of a drill found.
pub(super) struct Afterwards {
    /// DURABLE opt-outs not in the store, or not suppressed on a live replica.
    pub(super) lost: std::collections::HashSet<u64>,
    pub(super) final_false_sends: u64,
    pub(super) dead_letters: usize,
    pub(super) stream_len: usize,
    pub(super) parked: usize,
}

/// Once the load stopped: lets the workers drain what was only ACCEPTED (bounded, and reported,
/// not assumed), then looks for every DURABLE receipt in the store and checks every acknowledged
/// person on every live replica.
pub(super) async fn afterwards(
    prefix: &str,
    db_url: &str,
    acks: &Mutex<Acks>,
    live: &[&Replica],
) -> Afterwards {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let stream = format!("{prefix}stream");
    let dead_key = format!("{prefix}dead-letters");
    for _ in 0..200 {
        let backlog: usize = redis::cmd("XLEN").arg(&stream).query(&mut conn).unwrap();
        if backlog == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stream_len: usize = redis::cmd("XLEN").arg(&stream).query(&mut conn).unwrap();
    let dead_letters: usize = redis::cmd("XLEN").arg(&dead_key).query(&mut conn).unwrap();
    let parked = pending_for(&mut conn, &stream, "newer-version");

    // Every DURABLE receipt is in the store.
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let pool = sqlx::PgPool::connect(db_url).await.unwrap();
    let receipts: Vec<String> = acks.durable.iter().map(|(_, r)| r.clone()).collect();
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT receipt_id FROM suppressions WHERE receipt_id = ANY($1)")
            .bind(&receipts)
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    let stored: std::collections::HashSet<String> = stored.into_iter().collect();
    let mut lost = std::collections::HashSet::new();
    for (i, receipt) in &acks.durable {
        if !stored.contains(receipt) {
            eprintln!("LOST: rolling{i} (receipt {receipt}) is not in the store");
            lost.insert(*i);
        }
    }
    // Every acknowledged person is suppressed on every live replica: a DURABLE one that is not is
    // lost, and any such answer is a false send.
    let durable: std::collections::HashSet<u64> = acks.durable.iter().map(|(i, _)| *i).collect();
    let mut final_false_sends = 0u64;
    for replica in live {
        let mut client = replica.client().await;
        for &i in &acks.any {
            let answer = client
                .check_suppressed(check_request(i))
                .await
                .unwrap_or_else(|s| panic!("the final check of rolling{i}: {s:?}"));
            if !answer.into_inner().suppressed {
                eprintln!(
                    "FALSE SEND at the end for rolling{i} by replica {}",
                    replica.pid
                );
                final_false_sends += 1;
                if durable.contains(&i) {
                    lost.insert(i);
                }
            }
        }
    }
    Afterwards {
        lost,
        final_false_sends,
        dead_letters,
        stream_len,
        parked,
    }
}

/// The harness's key file without the principals of roles the previous release does not know.
pub(super) fn key_file_known_to_both() -> String {
    let text = key_file_text(&[(TOKEN_KEY.0, TOKEN_KEY.1, true)]);
    text.split("[[")
        .filter(|entry| !entry.contains("roles = [\"watch\"]"))
        .collect::<Vec<_>>()
        .join("[[")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_replicas_through_a_rolling_update_lose_nothing() {
    let (tag, previous) = previous_release();
    let secs: u64 = std::env::var("SUPPRESSD_ROLLING_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let phase = Duration::from_secs(secs);
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = format!("roll{}:", uuid::Uuid::new_v4().simple());
    // The key file both releases read: a rollout adds a key-file entry a new release introduces
    // (the `watch` role) only once every replica runs it (docs/compatibility.md).
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = keys_dir.path().join("keys.toml");
    std::fs::write(&keys, key_file_known_to_both()).unwrap();
    let config = ReplicaConfig::new(&db.url, redis_url(), &prefix)
        .with("SUPPRESSD_KEYS", keys.to_str().unwrap());

    // 1. The old release alone, on a fresh database: it migrates it to its own schema.
    let mut old = Replica::try_start_binary(&previous, &config)
        .await
        .unwrap_or_else(|log| panic!("the {tag} replica did not start:\n{log}"));
    let client = old.client().await;
    let live: Live = Arc::new(Mutex::new(vec![(Build::Old, client)]));
    let counts = Arc::new(Counts::default());
    let acks: Arc<Mutex<Acks>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = start_load(&live, &counts, &acks, &stop);
    tokio::time::sleep(phase).await;
    let acked_by_old_alone = counts.acknowledged.load(Relaxed);

    // 2. A new replica beside it: it migrates the database to this tree's schema while the old one
    //    serves; both take traffic.
    let first = Replica::try_start(&config)
        .await
        .unwrap_or_else(|log| panic!("the new replica did not start beside {tag}:\n{log}"));
    let client = first.client().await;
    live.lock().unwrap().push((Build::New, client));
    tokio::time::sleep(phase).await;

    // 3. The old one is taken out of rotation and stopped (SIGTERM, its graceful drain), and a
    //    second new replica takes its place.
    live.lock()
        .unwrap()
        .retain(|(build, _)| *build == Build::New);
    old.terminate();
    let old_exit = old.wait().await;
    let old_warnings = old.warnings();
    let second = Replica::start(&config).await;
    let client = second.client().await;
    live.lock().unwrap().push((Build::New, client));
    tokio::time::sleep(phase).await;
    stop.store(true, Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let after = afterwards(&prefix, &db.url, &acks, &[&first, &second]).await;
    let (lost, final_false_sends, dead_letters, stream_len, parked) = (
        after.lost,
        after.final_false_sends,
        after.dead_letters,
        after.stream_len,
        after.parked,
    );
    let new_warnings: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|r| r.warnings())
        .collect();
    delete_prefix(redis_url(), &prefix);

    let c = |x: &AtomicU64| x.load(Relaxed);
    let false_sends = c(&counts.false_sends) + final_false_sends;
    eprintln!(
        "rolling drill ({tag} -> this tree, {secs}s per phase): opt_outs={} acknowledged={} durable={} \
         acknowledged_by_old={} acknowledged_by_new={} checks={} checks_by_old={} lost={} \
         false_sends={false_sends} false_sends_by_old={} dead_letters={dead_letters} \
         stream_len={stream_len} parked_newer_version={parked} unavailable={} other_errors={} \
         old_exit={} old_warnings={} new_warnings={}",
        c(&counts.opt_outs),
        c(&counts.acknowledged),
        c(&counts.durable),
        c(&counts.acknowledged_by_old),
        c(&counts.acknowledged_by_new),
        c(&counts.checks),
        c(&counts.checks_by_old),
        lost.len(),
        c(&counts.false_sends_by_old),
        c(&counts.unavailable),
        c(&counts.other_errors),
        old_exit
            .code()
            .map_or_else(|| "signal".to_owned(), |code| code.to_string()),
        old_warnings.len(),
        new_warnings.len(),
    );
    for line in old_warnings.iter().take(10) {
        eprintln!("[{tag} replica] {line}");
    }
    for line in new_warnings.iter().take(10) {
        eprintln!("[new replica] {line}");
    }

    assert!(
        acked_by_old_alone > 0 && c(&counts.acknowledged_by_new) > 0 && c(&counts.durable) > 0,
        "the run did something on both builds"
    );
    assert!(
        lost.is_empty(),
        "every DURABLE opt-out is in the store and suppressed"
    );
    assert_eq!(
        false_sends, 0,
        "no check after an acknowledgement said send"
    );
    assert_eq!(dead_letters, 0, "nothing was dead-lettered");
    assert!(
        old_exit.success(),
        "the {tag} replica drained and exited cleanly: {old_exit}"
    );
}
