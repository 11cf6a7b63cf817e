//! The measurements, in the order they run: load the population into PostgreSQL, time the cache
//! rebuild and weigh it in Redis, then the load runs, each against the real server and its baseline
//! with the same client settings, one after the other (never at once: they would share 2 cores).

use super::{
    Sizes, fixtures,
    load::{Ctx, Load, cpu_per_call, intended_p99, ms, ok_rps, p, us},
    procs::{PgDatabase, PrivateRedis, Proc, free_port},
    raw,
    table::{Row, SuiteReport},
};
use crate::{
    bench::request::Call,
    cache::layout::{Keys, VALUE_LEN},
    domain::Pepper,
};
use anyhow::{Context, bail};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

const PEPPER: &str = "suppressd-benchmark-pepper-0123456789";
const PREFIX: &str = "bench:";
/// Buckets of about 200 entries, as the README advises (2^bits buckets).
fn bucket_bits(entries: u64) -> u8 {
    let per_bucket = (entries / 200).max(2);
    (63 - per_bucket.leading_zeros()).clamp(1, 24) as u8
}

pub async fn measure(
    bin: &Path,
    out: &Path,
    sizes: &Sizes,
    smoke: bool,
    redis: &PrivateRedis,
    db: &PgDatabase,
) -> anyhow::Result<SuiteReport> {
    let pepper = Pepper::new(PEPPER)?;
    let bits = bucket_bits(sizes.entries);
    let keys = Keys::new(PREFIX, bits);
    let mut cx = Ctx {
        report: SuiteReport {
            date: crate::bench::report::now_rfc3339(),
            mode: if smoke { "smoke" } else { "full" }.into(),
            machine: machine(),
            layout:
                "server, baseline, Redis and the load client share the machine's cores, unpinned"
                    .into(),
            entries: sizes.entries,
            rows: Vec::new(),
            warnings: Vec::new(),
            runs: BTreeMap::new(),
        },
    };

    // The population, straight into PostgreSQL (migrations first, by opening the store once).
    eprintln!("loading {} opt-outs into PostgreSQL…", sizes.entries);
    crate::store::Store::connect(&db.url).await?.close().await;
    let loaded = fixtures::load_store(&db.url, &pepper, sizes.entries).await?;

    // Rebuild: the server starts on an empty Redis and copies the store into it.
    let memory_before = redis.used_memory().await?;
    let server_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let serve_args: Vec<String> = [
        "serve",
        "--listen",
        &server_addr.to_string(),
        "--redis-url",
        &redis.url,
        "--redis-prefix",
        PREFIX,
        "--store-url",
        &db.url,
        "--cache-bucket-bits",
        &bits.to_string(),
        // A private server on loopback: measured without authentication (its cost is a SHA-256
        // and a table look-up per call), which is what `--dev-no-auth` allows there.
        "--dev-no-auth",
    ]
    .map(str::to_owned)
    .to_vec();
    let env = [("RUST_LOG", "warn"), ("SUPPRESSD_PEPPER", PEPPER)];
    eprintln!("starting the server; timing the cache rebuild…");
    let started = Instant::now();
    let mut server = Proc::spawn(
        "suppressd serve",
        bin,
        &serve_args,
        &env,
        &out.join("server.log"),
    )?;
    server.wait_listening(server_addr).await?;
    wait_complete(redis, &keys, sizes.rebuild_limit).await?;
    let rebuild = started.elapsed();
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
        format!("payload 16 B field + {VALUE_LEN} B value; 2^{bits} buckets (`used_memory` delta)"),
    ));

    let baseline_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let baseline_args = [
        "bench-baseline".to_owned(),
        "--listen".into(),
        baseline_addr.to_string(),
    ];
    let mut baseline = Proc::spawn(
        "bench-baseline",
        bin,
        &baseline_args,
        &[],
        &out.join("baseline.log"),
    )?;
    baseline.wait_listening(baseline_addr).await?;

    let checks = fixtures::draw(sizes.check_pool, 1, sizes.entries);
    let check_data = fixtures::check_data(&checks);
    let check_probes: Vec<_> = checks
        .iter()
        .map(|d| fixtures::probe(&pepper, &keys, d[0]))
        .collect();
    let (c, d) = (sizes.concurrency, sizes.run);
    let checking = Load {
        call: Call::CheckSuppressed,
        data: &check_data,
        concurrency: c,
        connections: sizes.connections,
        duration: d,
        rps: None,
    };
    if !sizes.warmup.is_zero() {
        let warmup = Load {
            duration: sizes.warmup,
            ..checking
        };
        cx.load("warmup-baseline", baseline_addr, warmup).await?;
        cx.load("warmup-server", server_addr, warmup).await?;
    }

    // Throughput, closed loop, with each process's CPU per call.
    eprintln!("CheckSuppressed throughput…");
    let cpu = baseline.cpu();
    let base = cx.load("check-baseline", baseline_addr, checking).await?;
    let base_cpu = cpu_per_call(baseline.cpu() - cpu, base.count);
    let (cpu, redis_cpu) = (server.cpu(), redis.cpu());
    let check = cx.load("check", server_addr, checking).await?;
    let server_cpu = cpu_per_call(server.cpu() - cpu, check.count);
    let check_redis_cpu = cpu_per_call(redis.cpu() - redis_cpu, check.count);
    cx.report.rows.push(Row::new(
        "check_throughput_ratio",
        &format!("CheckSuppressed throughput vs empty handler (c={c})"),
        ok_rps(&check) / ok_rps(&base),
        format!(
            "{:.2} ({:.0}/s)",
            ok_rps(&check) / ok_rps(&base),
            ok_rps(&check)
        ),
        format!("empty handler {:.0}/s", ok_rps(&base)),
    ));

    // Latency at concurrency 1, and a raw Redis round trip of the same keys.
    eprintln!("CheckSuppressed at concurrency 1…");
    let one = Load {
        concurrency: 1,
        ..checking
    };
    let base1 = cx.load("check-c1-baseline", baseline_addr, one).await?;
    let check1 = cx.load("check-c1", server_addr, one).await?;
    let rtt = raw::round_trips(redis.conn().await?, &check_probes, d).await?;
    let (p50, base_p50) = (p(&check1, 50), p(&base1, 50));
    cx.report.rows.push(Row::new(
        "check_p50_ratio",
        "CheckSuppressed p50 at c=1 vs empty handler p50",
        p50 as f64 / base_p50.max(1) as f64,
        format!("{:.2}× ({})", p50 as f64 / base_p50.max(1) as f64, us(p50)),
        format!(
            "empty handler {}; raw Redis HMGET round trip {}",
            us(base_p50),
            us(rtt.percentile(50.0))
        ),
    ));

    // p99 at half of the measured maximum, open loop.
    let half = (ok_rps(&check) / 2.0).max(1.0);
    eprintln!("CheckSuppressed open loop at {half:.0}/s…");
    let paced = Load {
        rps: Some(half),
        ..checking
    };
    let open = cx.load("check-half-load", server_addr, paced).await?;
    let open_base = cx
        .load("check-half-load-baseline", baseline_addr, paced)
        .await?;
    let p99 = p(&open, 99);
    cx.report.rows.push(Row::new(
        "check_p99_half_load_ms",
        &format!("CheckSuppressed p99 at 50 % of max throughput ({half:.0}/s, open loop)"),
        p99 as f64 / 1e6,
        ms(p99),
        format!(
            "empty handler {}; from intended start: suppressd {}, empty {} (incl. ~1 ms timer granularity)",
            ms(p(&open_base, 99)),
            ms(intended_p99(&open)),
            ms(intended_p99(&open_base)),
        ),
    ));

    // Batches of 100 vs raw pipelined reads of the same keys.
    eprintln!("CheckSuppressedBatch vs raw pipelined reads…");
    let draws = fixtures::draw(sizes.batch_pool, sizes.batch_size, sizes.entries);
    let batch_data = fixtures::batch_data(&draws);
    let bc = sizes.batch_concurrency;
    let (cpu, redis_cpu) = (server.cpu(), redis.cpu());
    let batching = Load {
        call: Call::CheckSuppressedBatch,
        data: &batch_data,
        concurrency: bc,
        ..checking
    };
    let batch = cx.load("batch", server_addr, batching).await?;
    let batch_cpu = cpu_per_call(server.cpu() - cpu, batch.count * sizes.batch_size as u64);
    let batch_redis_cpu = cpu_per_call(
        redis.cpu() - redis_cpu,
        batch.count * sizes.batch_size as u64,
    );
    let probes: Vec<Vec<_>> = draws
        .iter()
        .map(|b| {
            b.iter()
                .map(|&i| fixtures::probe(&pepper, &keys, i))
                .collect()
        })
        .collect();
    let raw_rate = raw::pipelined(redis.conn().await?, &probes, bc as usize, d).await?;
    let batch_rate = ok_rps(&batch) * sizes.batch_size as f64;
    cx.report.rows.push(Row::new(
        "batch_vs_pipelined_ratio",
        &format!(
            "CheckSuppressedBatch ({}/call, c={bc}) recipients/s vs raw pipelined reads",
            sizes.batch_size
        ),
        batch_rate / raw_rate,
        format!("{:.2} ({batch_rate:.0}/s)", batch_rate / raw_rate),
        format!("raw pipelined HMGETs, redis-rs, same keys, {bc} tasks: {raw_rate:.0}/s"),
    ));

    // OptOut, DURABLE, on PostgreSQL.
    eprintln!("OptOut DURABLE on PostgreSQL…");
    let (cpu, redis_cpu) = (server.cpu(), redis.cpu());
    let opt_out_data = fixtures::opt_out_data();
    let opting_out = Load {
        call: Call::OptOut,
        data: &opt_out_data,
        ..checking
    };
    let opt = cx.load("opt-out-durable", server_addr, opting_out).await?;
    let opt_cpu = cpu_per_call(server.cpu() - cpu, opt.count);
    let opt_redis_cpu = cpu_per_call(redis.cpu() - redis_cpu, opt.count);
    let opt_p99 = p(&opt, 99);
    cx.report.rows.push(Row::new(
        "opt_out_durable_rps",
        &format!("OptOut DURABLE on PostgreSQL throughput (c={c})"),
        ok_rps(&opt),
        format!("{:.0}/s", ok_rps(&opt)),
        format!("empty handler (CheckSuppressed) {:.0}/s", ok_rps(&base)),
    ));
    cx.report.rows.push(Row::new(
        "opt_out_durable_p99_ms",
        "OptOut DURABLE on PostgreSQL p99",
        opt_p99 as f64 / 1e6,
        ms(opt_p99),
        format!("p50 {}", ms(p(&opt, 50))),
    ));

    cx.report.rows.extend(tracing_rows());

    cx.report.rows.push(Row::new(
        "server_cpu_us_per_check",
        "server CPU per CheckSuppressed call",
        server_cpu,
        format!("{server_cpu:.1} µs"),
        format!("empty handler {base_cpu:.1} µs; Redis {check_redis_cpu:.1} µs"),
    ));
    cx.report.rows.push(Row::new(
        "server_cpu_us_per_batch_check",
        "server CPU per check in a batch",
        batch_cpu,
        format!("{batch_cpu:.1} µs"),
        format!("Redis {batch_redis_cpu:.1} µs"),
    ));
    cx.report.rows.push(Row::new(
        "server_cpu_us_per_opt_out",
        "server CPU per OptOut call (worker included)",
        opt_cpu,
        format!("{opt_cpu:.1} µs"),
        format!("Redis {opt_redis_cpu:.1} µs"),
    ));

    baseline.stop().await;
    server.stop().await;
    Ok(cx.report)
}

/// Tracing cost at 1 % sampling and always on.
fn tracing_rows() -> Vec<Row> {
    // TODO: restart the server with OTEL_TRACES_SAMPLER=parentbased_traceidratio and
    // OTEL_TRACES_SAMPLER_ARG=0.01 / always_on and an OTLP sink, rerun the closed-loop CheckSuppressed
    // run, and report 1 − rps/rps_off. `serve` reads OTEL_* now; `examples/trace_cost.rs` measures it
    // meanwhile.
    let why = "not wired into the suite yet (cargo run --release --example trace_cost)";
    vec![
        Row::not_measured("tracing_1pct_cost_pct", "tracing cost at 1 % sampling", why),
        Row::not_measured("tracing_always_cost_pct", "tracing cost, always on", why),
    ]
}

/// Waits until the rebuild has marked the cache complete (the `complete` key equals `generation`).
async fn wait_complete(redis: &PrivateRedis, keys: &Keys, limit: Duration) -> anyhow::Result<()> {
    let mut conn = redis.conn().await?;
    let deadline = Instant::now() + limit;
    loop {
        let (complete, generation): (Option<String>, Option<String>) = redis::pipe()
            .get(keys.complete())
            .get(keys.generation())
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

/// CPU count and model, for the table's heading.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Other work on the machine skews every figure; the load average says how much there was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!("{cpus} cores ({model}), load average {load} at start")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_about_two_hundred() {
        assert_eq!(bucket_bits(1_000_000), 12);
        assert_eq!(bucket_bits(2_000), 3);
        assert_eq!(bucket_bits(10), 1);
    }
}
