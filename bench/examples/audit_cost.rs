//! What the audit log costs the write path: the store-side throughput of the worker's group commit
//! with the audit log (entries, Merkle subtrees, a signed checkpoint per batch) against the same
//! batches inserted without it, side by side on fresh PostgreSQL databases in one run.
//!
//! `cargo run --release --example audit_cost [-- POSTGRES_ADMIN_URL [BATCHES [BATCH_SIZE]]]`
//!
//! It also prints the CPU each side spent per record (PostgreSQL's backends, and this process,
//! which builds the batches as the worker would and, with the log, the entries, their hashes and
//! the checkpoint's signature), because on a shared machine CPU is what the log takes from the rest.
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

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let admin = args
        .get(1)
        .cloned()
        .unwrap_or("postgres://postgres@127.0.0.1:5432/postgres".into());
    let batches: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let size: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let pepper = Pepper::new(*b"0123456789abcdef").unwrap();
    let log = AuditLog::development();
    let mut rates = Vec::new();
    for with_log in [false, true, false, true] {
        let (name, url) = fresh_db(&admin).await;
        let store = Store::connect(&url).await.unwrap();
        // The baseline is the store's own (`serve --bench-unaudited-baseline`): the same statement
        // shape, records only.
        let log = AuditLog {
            bench_unaudited: !with_log,
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
        let store_us = backends_cpu(&url).await / records * 1e6;
        let own_us = (cpu_seconds("self") - own_cpu) / records * 1e6;
        println!(
            "{:<28} {rate:>10.0} records/s  PostgreSQL CPU {store_us:5.1} µs/record, \
             client CPU {own_us:5.1} µs/record",
            if with_log {
                "commit with audit log"
            } else {
                "commit without audit log"
            }
        );
        rates.push((with_log, rate));
        store.close().await;
        let pool = sqlx::PgPool::connect(&admin).await.unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&pool)
        .await;
    }
    let mean = |w: bool| {
        let v: Vec<f64> = rates.iter().filter(|r| r.0 == w).map(|r| r.1).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    println!(
        "ratio with/without: {:.3} (batches of {size}, {batches} batches per run)",
        mean(true) / mean(false)
    );
}
