//! The benchmark's data: a population of opted-out recipients (`bench-<i>@example.com`, i < N) loaded
//! straight into PostgreSQL, and pools of check requests over twice that range, so that about half the
//! checks are suppressed. The same recipients are also turned into the Redis keys and fields a check
//! reads, for the raw Redis baselines ("the same keys").

use anyhow::Context;
use rand::Rng;
use sqlx::postgres::PgPoolCopyExt;
use std::time::{Duration, Instant};
use suppressd::{
    cache::layout::{self, Keys},
    domain::{Channel, Notice, Pepper, ReceiptId, Recipient, RecipientKind, SubjectHash},
};

pub const TENANT: &str = "bench";
pub const TOPIC: &str = "marketing";
/// Checks name a campaign, so each reads all 8 candidate scopes (the most a check can read).
pub const CAMPAIGN: &str = "RC-2026-0042";
/// Rows appear committed a day before the run: a rebuild copies old data, as it would in production.
const AGE_MS: i64 = 24 * 3600 * 1000;
/// Rows per COPY message.
const COPY_CHUNK: usize = 20_000;

pub fn email(i: u64) -> String {
    format!("bench-{i}@example.com")
}

pub fn subject(pepper: &Pepper, i: u64) -> SubjectHash {
    let r = Recipient::parse(RecipientKind::Email, &email(i)).expect("a valid e-mail address");
    pepper.subject(&r)
}

/// Loads `entries` opt-outs (every e-mail of tenant `bench`, topic `marketing`) into PostgreSQL with
/// COPY. Benchmark fixtures, not product SQL: the columns are those of the first migration.
pub async fn load_store(db_url: &str, pepper: &Pepper, entries: u64) -> anyhow::Result<Duration> {
    let began = Instant::now();
    let pool = sqlx::PgPool::connect(db_url).await?;
    let at = suppressd::domain::clock::system_now() - AGE_MS;
    let channel = i32::from(Channel::Email.code());
    let reason = i32::from(suppressd::domain::Reason::UserRequest.code());
    let source = i32::from(suppressd::domain::Source::Import.code());
    let mut i = 0;
    while i < entries {
        let end = (i + COPY_CHUNK as u64).min(entries);
        let mut text = String::with_capacity(COPY_CHUNK * 200);
        for n in i..end {
            let receipt = ReceiptId::new(at);
            let subject = subject(pepper, n).to_hex();
            // COPY text format: tab-separated, `\N` is NULL, and a backslash must be doubled.
            text.push_str(&format!(
                "{receipt}\t\\\\x{subject}\t{TENANT}\t{channel}\t{TOPIC}\t\t{reason}\t{source}\t\
                 bench-import\t{at}\t{at}\t\\N\t\\N\t{at}\n"
            ));
        }
        let mut copy = pool
            .copy_in_raw(
                "COPY suppressions (receipt_id, subject, tenant, channel, topic, campaign, reason, \
                 source, actor, received_at, effective_at, expires_at, idempotency_key, \
                 committed_at) FROM STDIN",
            )
            .await
            .context("starting COPY")?;
        copy.send(text.into_bytes()).await.context("sending rows")?;
        copy.finish().await.context("finishing COPY")?;
        i = end;
    }
    // As an operator would after a bulk load: the planner's statistics, so that the rebuild's
    // catch-up pass reads its few rows through the index on `committed_at`; and the vacuum that
    // autovacuum would otherwise start on its own after so many inserts, in the middle of a later
    // row (at 10 M it took the first audit-cost round to −126 %). Then a checkpoint, which
    // writes out what the load and the vacuum dirtied: left to the checkpointer, that flush ran
    // through the first rounds of the later rows.
    for statement in ["VACUUM (ANALYZE) suppressions", "CHECKPOINT"] {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .with_context(|| format!("{statement} after the load"))?;
    }
    pool.close().await;
    Ok(began.elapsed())
}

/// Recipient indices for `calls` requests of `per_call` checks each, half of them opted out.
pub fn draw(calls: usize, per_call: usize, entries: u64) -> Vec<Vec<u64>> {
    let mut rng = rand::rng();
    (0..calls)
        .map(|_| {
            (0..per_call)
                .map(|_| rng.random_range(0..entries * 2))
                .collect()
        })
        .collect()
}

fn check_json(i: u64) -> serde_json::Value {
    serde_json::json!({
        "recipient": {"email": email(i)},
        "scope": {"tenant": TENANT, "channel": "CHANNEL_EMAIL", "topic": TOPIC, "campaign": CAMPAIGN},
    })
}

/// `--data` for CheckSuppressed: a JSON array of single checks, used round-robin.
pub fn check_data(draws: &[Vec<u64>]) -> String {
    let all: Vec<_> = draws.iter().map(|d| check_json(d[0])).collect();
    serde_json::Value::Array(all).to_string()
}

/// `--data` for CheckSuppressedBatch: a JSON array of batches, used round-robin.
pub fn batch_data(draws: &[Vec<u64>]) -> String {
    let all: Vec<_> = draws
        .iter()
        .map(
            |d| serde_json::json!({"checks": d.iter().map(|&i| check_json(i)).collect::<Vec<_>>()}),
        )
        .collect();
    serde_json::Value::Array(all).to_string()
}

/// `--data` for OptOut: a fresh recipient per request, recorded DURABLE.
pub fn opt_out_data() -> String {
    serde_json::json!({
        "recipient": {"email": "optout-{{.RequestNumber}}-{{randomString 8}}@example.com"},
        "scope": {"tenant": TENANT, "channel": "CHANNEL_EMAIL", "topic": TOPIC},
        "reason": "REASON_USER_REQUEST",
        "source": "SOURCE_API",
        "durability": "DURABILITY_DURABLE",
    })
    .to_string()
}

/// What one check reads in Redis: its bucket and the fields of its candidate scopes.
#[derive(Clone)]
pub struct Probe {
    pub bucket: String,
    pub fields: Vec<layout::Field>,
}

pub fn probe(pepper: &Pepper, keys: &Keys, i: u64) -> Probe {
    let subject = subject(pepper, i);
    let notice = Notice::parse(TENANT, Some(Channel::Email), TOPIC, CAMPAIGN)
        .expect("the benchmark notice is valid");
    Probe {
        bucket: keys.bucket_for(&subject),
        fields: {
            let (fields, n) = layout::candidate_fields(&subject, &notice);
            fields[..n].to_vec()
        },
    }
}
