//! What the audit log costs the write path: the store-side throughput of the worker's group commit
//! with the audit log (entries, Merkle subtrees, a signed checkpoint per batch), its entries stored
//! as rows and as one block per batch (`--audit-blocks`), against the same batches inserted without
//! it, side by side on fresh PostgreSQL databases in one run.
//!
//! `cargo run --release --example audit_cost [-- POSTGRES_ADMIN_URL [BATCHES [BATCH_SIZE]]]`
//!
//! It also prints the CPU each side spent per record (PostgreSQL's backends, and this process,
//! which builds the batches as the worker would and, with the log, the entries, their hashes and
//! the checkpoint's signature), because on a shared machine CPU is what the log takes from the rest.
//!
//! Without a batch size it measures two, 8 and 64, with the same records at each (BATCHES batches
//! of 64, 200 by default), and splits what the log adds into a part per record (the entry row and
//! its index entries, its hash) and a part per commit (the checkpoint, its signature, the head),
//! solving `extra = per record + per commit / size` from the two: which of them a change to the
//! log would have to take away.
//!
//! The commit is the only part of a DURABLE opt-out the log touches, so this ratio bounds the
//! end-to-end cost from above.

use std::time::Instant;
use suppressd::{
    audit::AuditLog,
    domain::{
        Pepper, Reason, ReceiptId, Recipient, RecipientKind, Scope, Source, Suppression,
        clock::system_now,
    },
    store::{AuditHint, Store},
};

fn batch(pepper: &Pepper, start: usize, n: usize) -> Vec<Suppression> {
    (start..start + n)
        .map(|i| {
            let now = system_now();
            let r = Recipient::parse(RecipientKind::UserId, &format!("u{i}")).unwrap();
            Suppression {
                receipt: ReceiptId::new(now),
                subject: pepper.subject(&r),
                scope: Scope::parse("acme", None, "news", "").unwrap(),
                reason: Reason::UserRequest,
                source: Source::Api,
                actor: "bench".into(),
                received_at: now,
                effective_at: now,
                expires_at: None,
                idempotency_key: None,
                sealed: None,
            }
        })
        .collect()
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used so far by the PostgreSQL backends serving database `url` (but this query's).
async fn backends_cpu(url: &str) -> f64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    pids.iter().map(|pid| cpu_seconds(&pid.to_string())).sum()
}

async fn fresh_db(admin: &str) -> (String, String) {
    let name = format!("suppressd_cost_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    let url = admin
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/{name}"))
        .unwrap();
    (name, url)
}

/// One side's run: records/s, and CPU µs per record of PostgreSQL's backends and of this process.
struct Run {
    rate: f64,
    store_us: f64,
    own_us: f64,
}

/// How a run commits: without the log, or with its entries as rows or as blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Without,
    Rows,
    Blocks,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Without => "commit without audit log",
            Side::Rows => "commit with log, rows",
            Side::Blocks => "commit with log, blocks",
        }
    }
}

/// Commits `batches` batches of `size` on a fresh database, on one side.
async fn run(admin: &str, log: &AuditLog, side: Side, batches: usize, size: usize) -> Run {
    let pepper = Pepper::new(*b"0123456789abcdef").unwrap();
    let (name, url) = fresh_db(admin).await;
    let store = Store::connect(&url).await.unwrap();
    // The baseline is the store's own (`suppressd-bench serve-unaudited`'s): the same statement
    // shape, records only.
    let log = AuditLog {
        bench_unaudited: side == Side::Without,
        blocks: side == Side::Blocks,
        ..log.clone()
    };
    let mut hint = AuditHint::default();
    let own_cpu = cpu_seconds("self");
    let started = Instant::now();
    for b in 0..batches {
        let records = batch(&pepper, b * size, size);
        store
            .commit(&records, &[], system_now(), &log, &mut hint)
            .await
            .unwrap();
    }
    let records = (batches * size) as f64;
    let rate = records / started.elapsed().as_secs_f64();
    // Per record: the backends' CPU (PostgreSQL's side; the backends live as long as the store),
    // and this process's (building the batch, the entries, the hashes and the signature).
    let run = Run {
        rate,
        store_us: backends_cpu(&url).await / records * 1e6,
        own_us: (cpu_seconds("self") - own_cpu) / records * 1e6,
    };
    store.close().await;
    let pool = sqlx::PgPool::connect(admin).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
    run
}

/// What the log adds at one batch size: µs per record of PostgreSQL and of this process.
struct Extra {
    size: usize,
    store_us: f64,
    own_us: f64,
}

/// Runs every side twice, alternating, at one batch size; prints each run and the ratios. Returns
/// what the log adds as rows and as blocks.
async fn compare(admin: &str, log: &AuditLog, batches: usize, size: usize) -> [Extra; 2] {
    let sides = [Side::Without, Side::Rows, Side::Blocks];
    let mut runs: Vec<(Side, Run)> = Vec::new();
    for side in sides.into_iter().chain(sides) {
        let r = run(admin, log, side, batches, size).await;
        println!(
            "{:<28} {:>10.0} records/s  PostgreSQL CPU {:5.1} µs/record, client CPU {:5.1} µs/record",
            side.name(),
            r.rate,
            r.store_us,
            r.own_us,
        );
        runs.push((side, r));
    }
    let mean = |side: Side, f: fn(&Run) -> f64| {
        let v: Vec<f64> = runs
            .iter()
            .filter(|r| r.0 == side)
            .map(|r| f(&r.1))
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    println!(
        "ratio with/without: rows {:.3}, blocks {:.3} (batches of {size}, {batches} batches per run)",
        mean(Side::Rows, |r| r.rate) / mean(Side::Without, |r| r.rate),
        mean(Side::Blocks, |r| r.rate) / mean(Side::Without, |r| r.rate),
    );
    [Side::Rows, Side::Blocks].map(|side| Extra {
        size,
        store_us: mean(side, |r| r.store_us) - mean(Side::Without, |r| r.store_us),
        own_us: mean(side, |r| r.own_us) - mean(Side::Without, |r| r.own_us),
    })
}

/// Splits what the log adds, measured at two batch sizes, into µs per record and per commit:
/// `extra = per_record + per_commit / size`.
fn split(small: f64, small_size: usize, large: f64, large_size: usize) -> (f64, f64) {
    let per_commit = (small - large) / (1.0 / small_size as f64 - 1.0 / large_size as f64);
    (small - per_commit / small_size as f64, per_commit)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let admin = args
        .get(1)
        .cloned()
        .unwrap_or("postgres://postgres@127.0.0.1:5432/postgres".into());
    let batches: Option<usize> = args.get(2).and_then(|s| s.parse().ok());
    let size: Option<usize> = args.get(3).and_then(|s| s.parse().ok());
    let log = AuditLog::development();
    if let Some(size) = size {
        compare(&admin, &log, batches.unwrap_or(200), size).await;
        return;
    }
    // The same records at both sizes (12,800 by default).
    let records = batches.unwrap_or(200) * 64;
    let (small, large) = (
        compare(&admin, &log, records / 8, 8).await,
        compare(&admin, &log, records / 64, 64).await,
    );
    for (shape, (small, large)) in ["rows", "blocks"].iter().zip(small.iter().zip(&large)) {
        let (store_record, store_commit) =
            split(small.store_us, small.size, large.store_us, large.size);
        let (own_record, own_commit) = split(small.own_us, small.size, large.own_us, large.size);
        println!(
            "what the log adds as {shape}: PostgreSQL {store_record:.1} µs a record + \
             {store_commit:.0} µs a commit; client {own_record:.1} µs a record + {own_commit:.0} µs \
             a commit"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_recovers_the_parts_of_a_cost() {
        // 5 µs a record and 80 µs a commit: 15 at batches of 8, 6.25 at batches of 64.
        let (per_record, per_commit) = super::split(15.0, 8, 6.25, 64);
        assert!((per_record - 5.0).abs() < 1e-9, "{per_record}");
        assert!((per_commit - 80.0).abs() < 1e-9, "{per_commit}");
    }
}
