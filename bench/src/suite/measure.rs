//! The measurements, in the order they run: load the population into PostgreSQL, time the cache
//! rebuild and weigh it in Redis, then the load runs, each against the real server and its baseline
//! with the same client settings, one after the other (never at once: they would share 2 cores).

use super::{
    Bins, Sizes, SuiteSettings, fixtures,
    load::{Ctx, Load, cpu_per_call, intended_p99, ms, ok_count, ok_rps, p, us},
    otlp_sink,
    procs::{PgDatabase, PrivateRedis, Proc, free_port},
    raw,
    table::{Row, SuiteReport},
};
use crate::request::Call;
use anyhow::{Context, bail};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};
use suppressd::{
    cache::layout::{FIELD_LEN, Keys, VALUE_LEN},
    domain::Pepper,
};

const PEPPER: &str = "suppressd-benchmark-pepper-0123456789";
const PREFIX: &str = "bench:";
/// The key prefix of the server that commits without the audit log (the audit cost baseline).
const UNAUDITED_PREFIX: &str = "bench-unaudited:";
/// Rounds of the audit cost row (unaudited, then audited, each round; audited once before). Single
/// rounds on a shared 2-core machine spread over ±10 points (PostgreSQL's checkpoints and the
/// worker's batch sizes); five keep the mean within a few.
const AUDIT_ROUNDS: usize = 5;
/// Rounds of the tracing rows (off, 1 %, always on, each round; off once more at the end).
const TRACING_ROUNDS: usize = 3;
/// Buckets of 40 to 80 entries, as the README advises (2^bits buckets): a check's `HMGET` scans its
/// bucket's listpack once per field, so Redis CPU per check grows with the bucket, while below ~30
/// entries the per-key overhead pushes memory per entry up.
fn bucket_bits(entries: u64) -> u8 {
    let buckets = (entries / 40).max(2);
    (63 - buckets.leading_zeros()).clamp(1, 24) as u8
}

pub async fn measure(
    bins: &Bins,
    out: &Path,
    sizes: &Sizes,
    settings: &SuiteSettings,
    redis: &PrivateRedis,
    db: &PgDatabase,
) -> anyhow::Result<SuiteReport> {
    let pepper = Pepper::new(PEPPER)?;
    let bits = bucket_bits(sizes.entries);
    let keys = Keys::new(PREFIX, bits);
    let mut cx = Ctx {
        report: SuiteReport {
            date: crate::report::now_rfc3339(),
            mode: match (settings.smoke, settings.only_tracing) {
                (_, true) => "tracing rows only",
                (true, false) => "smoke",
                (false, false) => "full",
            }
            .into(),
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
    suppressd::store::Store::connect(&db.url)
        .await?
        .close()
        .await;
    let loaded = fixtures::load_store(&db.url, &pepper, sizes.entries).await?;

    // Rebuild: the server starts on an empty Redis and copies the store into it.
    let memory_before = redis.used_memory().await?;
    let server_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let serve_args = |listen: SocketAddr| -> Vec<String> {
        [
            "serve",
            "--listen",
            &listen.to_string(),
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
        .to_vec()
    };
    let env = [("RUST_LOG", "warn"), ("SUPPRESSD_PEPPER", PEPPER)];
    eprintln!("starting the server; timing the cache rebuild…");
    let started = Instant::now();
    let mut server = Proc::spawn(
        "suppressd serve",
        &bins.server,
        &serve_args(server_addr),
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
        format!("payload {FIELD_LEN} B field + {VALUE_LEN} B value; 2^{bits} buckets (`used_memory` delta)"),
    ));

    let baseline_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let baseline_args = [
        "baseline".to_owned(),
        "--listen".into(),
        baseline_addr.to_string(),
    ];
    let mut baseline = Proc::spawn(
        "suppressd-bench baseline",
        &bins.bench,
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
    let traced = Traced {
        bin: &bins.server,
        out,
        args: &serve_args,
        env: &env,
    };
    // Against the untraced server started above; last in a full run, alone with --only-tracing.
    let measure_tracing = async |cx: &mut Ctx| {
        tracing_rows(cx, &traced, (server_addr, &server), checking, sizes.warmup).await
    };
    if settings.only_tracing {
        let tracing = measure_tracing(&mut cx).await;
        baseline.stop().await;
        server.stop().await;
        cx.report.rows.extend(tracing?);
        return Ok(cx.report);
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
    // Baseline, server, server, baseline: a machine that speeds up or slows down over the four
    // runs moves both sides alike (single pairs spread 1.01–1.18× on the same code).
    let base1 = cx.load("check-c1-baseline", baseline_addr, one).await?;
    let check1 = cx.load("check-c1", server_addr, one).await?;
    let check2 = cx.load("check-c1-2", server_addr, one).await?;
    let base2 = cx.load("check-c1-baseline-2", baseline_addr, one).await?;
    let rtt = raw::round_trips(redis.conn().await?, &check_probes, d).await?;
    let p50 = (p(&check1, 50) + p(&check2, 50)) / 2;
    let base_p50 = (p(&base1, 50) + p(&base2, 50)) / 2;
    cx.report.rows.push(Row::new(
        "check_p50_ratio",
        "CheckSuppressed p50 at c=1 vs empty handler p50",
        p50 as f64 / base_p50.max(1) as f64,
        format!("{:.2}× ({})", p50 as f64 / base_p50.max(1) as f64, us(p50)),
        format!(
            "means of two runs each, alternating: empty handler {} ({}, {}), suppressd {}, {}; raw Redis HMGET round trip {}",
            us(base_p50),
            us(p(&base1, 50)),
            us(p(&base2, 50)),
            us(p(&check1, 50)),
            us(p(&check2, 50)),
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

    // What the audit log costs the write path (issue 6: at most 10 %): the same OptOut load against a
    // server whose worker commits without audit entries, between two runs of the audited one. It
    // has its own key prefix (its own stream and consumer group, so the audited server's worker
    // cannot take its entries) and rebuilds its own cache first.
    eprintln!("OptOut DURABLE without the audit log (baseline)…");
    let unaudited_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let mut unaudited_args = serve_args(unaudited_addr);
    let prefix_at = unaudited_args
        .iter()
        .position(|a| a == PREFIX)
        .expect("the prefix is set");
    unaudited_args[prefix_at] = UNAUDITED_PREFIX.into();
    unaudited_args[0] = "serve-unaudited".into();
    let mut unaudited = Proc::spawn(
        "suppressd-bench serve-unaudited",
        &bins.bench,
        &unaudited_args,
        &env,
        &out.join("server-unaudited.log"),
    )?;
    unaudited.wait_listening(unaudited_addr).await?;
    wait_complete(
        redis,
        &Keys::new(UNAUDITED_PREFIX, bits),
        sizes.rebuild_limit,
    )
    .await?;
    // A fresh process runs its first seconds slower (its allocator, pools and connections warm
    // up); the audited server has been warm for minutes.
    if !sizes.warmup.is_zero() {
        let warmup = Load {
            duration: sizes.warmup,
            ..opting_out
        };
        cx.load("warmup-unaudited", unaudited_addr, warmup).await?;
    }
    // Alternating rounds (audited, unaudited, audited, …), each unaudited run compared with the
    // audited runs on either side of it, so that drift on a shared machine lands on both alike.
    let mut audited = vec![ok_rps(&opt)];
    let mut costs = Vec::new();
    let mut bare = Vec::new();
    let rounds = async {
        for round in 0..AUDIT_ROUNDS {
            let without = cx
                .load(
                    &format!("opt-out-durable-unaudited-{round}"),
                    unaudited_addr,
                    opting_out,
                )
                .await?;
            let with = cx
                .load(
                    &format!("opt-out-durable-{}", round + 1),
                    server_addr,
                    opting_out,
                )
                .await?;
            audited.push(ok_rps(&with));
            let around = (audited[round] + audited[round + 1]) / 2.0;
            bare.push(ok_rps(&without));
            costs.push((1.0 - around / ok_rps(&without)) * 100.0);
        }
        anyhow::Ok(())
    }
    .await;
    unaudited.stop().await;
    rounds?;
    let cost = costs.iter().sum::<f64>() / costs.len() as f64;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let list = |v: &[f64], decimals: usize| {
        v.iter()
            .map(|x| format!("{x:.decimals$}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    cx.report.rows.push(Row::new(
        "audit_log_cost_pct",
        "audit log cost: OptOut DURABLE throughput on PostgreSQL, with vs without the log",
        cost,
        format!("{cost:.1} % ({:.0}/s)", mean(&audited)),
        format!(
            "mean of {} rounds ({} %); without the log (`suppressd-bench serve-unaudited`): \
             {}/s; with it: {}/s",
            costs.len(),
            list(&costs, 1),
            list(&bare, 0),
            list(&audited, 0)
        ),
    ));

    let tracing = measure_tracing(&mut cx).await?;
    cx.report.rows.extend(tracing);

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

/// How to start one more `suppressd serve` on the same Redis and database, with other variables.
struct Traced<'a> {
    bin: &'a Path,
    out: &'a Path,
    args: &'a dyn Fn(SocketAddr) -> Vec<String>,
    env: &'a [(&'a str, &'a str)],
}

/// Tracing cost at 1 % sampling and always on: closed-loop CheckSuppressed runs against the measured
/// server (traces off) and two more servers on the same Redis and database, one per sampler,
/// exporting over OTLP/gRPC to a sink in this process. The sink decodes and counts the spans, so the
/// export is real; the exporters' queues are raised (`OTEL_BSP_MAX_QUEUE_SIZE`) so that spans are
/// exported, not dropped, which would flatter the always-on row, and each traced run's count waits
/// for its exporter to have sent its queue (see [`otlp_sink::Sink::drained`]). The three alternate for
/// `TRACING_ROUNDS` rounds (off, 1 %, always, …, off), and each traced run is compared with the mean
/// of the untraced runs on either side of it, so that drift on a shared machine lands on all alike.
/// Each row also gives each server's CPU per call over all its measured runs (the traced ones read
/// a second after the last run, so that their exporters have sent what they queued): contention
/// moves it far less than throughput, which other work on the machine swings by tens of percent.
async fn tracing_rows(
    cx: &mut Ctx,
    traced: &Traced<'_>,
    (untraced, untraced_proc): (SocketAddr, &Proc),
    checking: Load<'_>,
    warmup: Duration,
) -> anyhow::Result<Vec<Row>> {
    eprintln!("tracing off / 1 % / always on…");
    let sink = otlp_sink::Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let stop = tokio_util::sync::CancellationToken::new();
    sink.serve(listener, stop.clone());
    let samplers = [
        ("1pct", "parentbased_traceidratio", "0.01"),
        ("always", "parentbased_always_on", "1"),
    ];
    let mut servers = Vec::new();
    for (name, sampler, arg) in samplers {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut env = traced.env.to_vec();
        env.extend([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_TRACES_SAMPLER", sampler),
            ("OTEL_TRACES_SAMPLER_ARG", arg),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
        ]);
        let mut server = Proc::spawn(
            "suppressd serve (traced)",
            traced.bin,
            &(traced.args)(addr),
            &env,
            &traced.out.join(format!("server-trace-{name}.log")),
        )?;
        server.wait_listening(addr).await?;
        servers.push((addr, server));
    }
    // Fresh processes run their first seconds slower; the untraced server is long warm.
    if !warmup.is_zero() {
        for (k, (addr, _)) in servers.iter().enumerate() {
            let load = Load {
                duration: warmup,
                ..checking
            };
            cx.load(&format!("warmup-trace-{}", samplers[k].0), *addr, load)
                .await?;
        }
    }
    // CPU at the start of the measured runs: the untraced server's, then each traced server's.
    let cpu_before: Vec<Duration> = std::iter::once(untraced_proc.cpu())
        .chain(servers.iter().map(|(_, s)| s.cpu()))
        .collect();
    // Successful calls made to each server, in the same order.
    let mut calls = [0u64; 3];
    let measured = async {
        let run = cx.load("trace-off-0", untraced, checking).await?;
        calls[0] += ok_count(&run);
        let mut off = vec![ok_rps(&run)];
        // (rps, the untraced runs' mean around it, spans per call), per round, per sampler.
        let mut runs: [Vec<(f64, f64, f64)>; 2] = [Vec::new(), Vec::new()];
        for round in 0..TRACING_ROUNDS {
            let mut this_round = Vec::new();
            for (k, (addr, _)) in servers.iter().enumerate() {
                let spans = sink.spans();
                let run = cx
                    .load(&format!("trace-{}-{round}", samplers[k].0), *addr, checking)
                    .await?;
                calls[k + 1] += ok_count(&run);
                this_round.push((ok_rps(&run), sink.drained().await - spans, ok_count(&run)));
            }
            let run = cx
                .load(&format!("trace-off-{}", round + 1), untraced, checking)
                .await?;
            calls[0] += ok_count(&run);
            off.push(ok_rps(&run));
            let around = (off[off.len() - 2] + off[off.len() - 1]) / 2.0;
            for (k, (rps, spans, calls)) in this_round.into_iter().enumerate() {
                runs[k].push((rps, around, spans as f64 / calls.max(1) as f64));
            }
        }
        anyhow::Ok((off, runs))
    }
    .await;
    let untraced_cpu = untraced_proc.cpu();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_after: Vec<Duration> = std::iter::once(untraced_cpu)
        .chain(servers.iter().map(|(_, s)| s.cpu()))
        .collect();
    let cpu_us: Vec<f64> = (0..3)
        .map(|k| cpu_per_call(cpu_after[k] - cpu_before[k], calls[k]))
        .collect();
    for (_, server) in servers {
        server.stop().await;
    }
    stop.cancel();
    let (off, runs) = measured?;
    let off_shown = off
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    let row = |id: &str, what: &str, runs: &[(f64, f64, f64)], cpu: f64| {
        let costs: Vec<f64> = runs
            .iter()
            .map(|(rps, around, _)| (1.0 - rps / around) * 100.0)
            .collect();
        let cost = costs.iter().sum::<f64>() / costs.len() as f64;
        let rps = runs.iter().map(|r| r.0).sum::<f64>() / runs.len() as f64;
        let spans = runs.iter().map(|r| r.2).sum::<f64>() / runs.len() as f64;
        let each = costs
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        Row::new(
            id,
            what,
            cost,
            format!("{cost:.1} % ({rps:.0}/s)"),
            format!(
                "mean of {} rounds ({each} %) against the untraced runs around each; untraced runs: \
                 {off_shown}/s; {spans:.2} spans exported per call; server CPU per call {cpu:.1} µs \
                 vs {:.1} µs untraced ({:+.1} µs)",
                runs.len(),
                cpu_us[0],
                cpu - cpu_us[0],
            ),
        )
    };
    Ok(vec![
        row(
            "tracing_1pct_cost_pct",
            "tracing cost at 1 % sampling (CheckSuppressed throughput)",
            &runs[0],
            cpu_us[1],
        ),
        row(
            "tracing_always_cost_pct",
            "tracing cost, always on (CheckSuppressed throughput)",
            &runs[1],
            cpu_us[2],
        ),
    ])
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
    fn buckets_hold_forty_to_eighty() {
        assert_eq!(bucket_bits(1_000_000), 14);
        assert_eq!(bucket_bits(100_000), 11);
        assert_eq!(bucket_bits(2_000), 5);
        assert_eq!(bucket_bits(10), 1);
    }
}
