//! What the audit log costs the write path: the store-side throughput of the worker's group commit
//! with the audit log (entries, Merkle subtrees, a signed checkpoint per batch) against the same
//! batches inserted without it, side by side on fresh PostgreSQL databases in one run.
//!
//! `cargo run --release --example audit_cost [-- POSTGRES_ADMIN_URL [BATCHES [BATCH_SIZE]]]`
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
            }
        })
        .collect()
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
        let started = Instant::now();
        for b in 0..batches {
            let records = batch(&pepper, b * size, size);
            store
                .commit(&records, &[], system_now(), &log, &mut hint)
                .await
                .unwrap();
        }
        let rate = (batches * size) as f64 / started.elapsed().as_secs_f64();
        println!(
            "{:<28} {rate:>10.0} records/s",
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
