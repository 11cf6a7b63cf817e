//! The first rows: the population loaded into PostgreSQL, then the server started on an empty
//! Redis, timed until its rebuild marks the cache complete, and the cache weighed in Redis.

use super::{Setup, near::Watched};
use crate::suite::{
    fixtures,
    load::{Ctx, Load, ms, ok_count, p},
    procs::{PrivateRedis, free_port},
    table::Row,
};
use anyhow::{Context, bail};
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use suppressd::cache::layout::{FIELD_LEN, Keys, VALUE_LEN};

/// How long checks are sent while the rebuild runs (from when the server listens), and how many a
/// second: a trickle, so that the rebuild row stays what it measures.
const DURING_REBUILD: Duration = Duration::from_secs(2);
const CHECKS_DURING_REBUILD: f64 = 100.0;

/// The population into PostgreSQL, then the server started on an empty Redis: how long it takes to
/// copy the store into the cache, and what the cache weighs there. Returns the server, running.
pub(super) async fn rebuild_rows(
    cx: &mut Ctx,
    setup: &Setup<'_>,
) -> anyhow::Result<(SocketAddr, Watched)> {
    let Setup {
        sizes,
        redis,
        db,
        pepper,
        keys,
        bits,
        ..
    } = setup;
    // The population, straight into PostgreSQL (migrations first, by opening the store once).
    eprintln!("loading {} opt-outs into PostgreSQL…", sizes.entries);
    suppressd::store::Store::connect(&db.url)
        .await?
        .close()
        .await;
    let loaded = fixtures::load_store(&db.url, pepper, sizes.entries).await?;

    // Rebuild: the server starts on an empty Redis and copies the store into it.
    let memory_before = redis.used_memory().await?;
    let server_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    eprintln!("starting the server; timing the cache rebuild…");
    let started = Instant::now();
    let server = Watched::start(setup, "suppressd serve", server_addr, &[], "server.log").await?;
    // Checks from the moment the server listens: while the cache is incomplete they are answered
    // from the store, and a check must never fail for the rebuild.
    let checks = fixtures::check_data(&fixtures::draw(200, 1, sizes.entries));
    let during = Load {
        call: "CheckSuppressed",
        data: &checks,
        concurrency: 4,
        connections: 1,
        duration: DURING_REBUILD,
        rps: Some(CHECKS_DURING_REBUILD),
    };
    let listening = started.elapsed();
    let (checked, complete) = tokio::join!(
        cx.load("checks-during-rebuild", server_addr, during),
        wait_complete(redis, keys, sizes.rebuild_limit)
    );
    let (checked, ()) = (checked?, complete?);
    let rebuild = started.elapsed();
    let answered = ok_count(&checked);
    cx.report.rows.push(Row::new(
        "rebuild_checks_ok_ratio",
        "checks answered during the cache rebuild (from the store while the cache is incomplete)",
        answered as f64 / checked.count.max(1) as f64,
        format!("{answered} of {}", checked.count),
        format!(
            "{CHECKS_DURING_REBUILD:.0}/s for the first {:.0} s from {:.1} s after process start \
             (when it listened); p50 {}, p99 {}; the rebuild took {:.1} s",
            DURING_REBUILD.as_secs_f64(),
            listening.as_secs_f64(),
            ms(p(&checked, 50)),
            ms(p(&checked, 99)),
            rebuild.as_secs_f64()
        ),
    ));
    let memory = redis.used_memory().await?.saturating_sub(memory_before);
    cx.report.rows.push(Row::new(
        "rebuild_seconds",
        &format!("cache rebuild from PostgreSQL, {} entries", sizes.entries),
        rebuild.as_secs_f64(),
        format!("{:.1} s", rebuild.as_secs_f64()),
        format!(
            "from process start; loading the rows with COPY took {:.1} s",
            loaded.as_secs_f64()
        ),
    ));
    let per_entry = memory as f64 / sizes.entries as f64;
    cx.report.rows.push(Row::new(
        "redis_bytes_per_entry",
        &format!(
            "Redis memory per active suppression ({} entries)",
            sizes.entries
        ),
        per_entry,
        format!("{per_entry:.1} B"),
        format!("payload {FIELD_LEN} B field + {VALUE_LEN} B value; 2^{bits} buckets (`used_memory` delta)"),
    ));
    Ok((server_addr, server))
}

/// Waits until the rebuild has marked the cache complete (the `complete` key equals `generation`).
pub(super) async fn wait_complete(
    redis: &PrivateRedis,
    keys: &Keys,
    limit: Duration,
) -> anyhow::Result<()> {
    let mut conn = redis.conn().await?;
    let deadline = Instant::now() + limit;
    loop {
        let (complete, generation): (Option<String>, Option<String>) = redis::pipe()
            .get(keys.group(0).complete())
            .get(keys.group(0).generation())
            .query_async(&mut conn)
            .await
            .context("reading the completeness marker")?;
        if complete.is_some() && complete == generation {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the cache rebuild did not complete within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
