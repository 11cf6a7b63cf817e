//! The read rows: CheckSuppressed against the empty handler (throughput, p50 at concurrency 1, p99
//! at half load, open loop) and CheckSuppressedBatch against raw pipelined Redis reads of the same
//! keys.

use super::{Alternated, Checked, Cpu, Placement, Rig};
use crate::suite::{
    fixtures::{self, Probe},
    load::{Ctx, Load, cpu_per_call, intended_p99, ms, ok_rps, p, us},
    raw,
    table::Row,
};

/// Throughput and CPU per call, latency at concurrency 1 and p99 at half load of CheckSuppressed,
/// each against the empty handler.
pub(super) async fn check_rows(
    cx: &mut Ctx,
    rig: &Rig<'_>,
    check_probes: &[Probe],
) -> anyhow::Result<Checked> {
    let (server_addr, baseline_addr, checking) = (rig.server_addr, rig.baseline_addr, rig.checking);
    let (server, baseline, redis) = (&rig.server, &rig.baseline, rig.setup.redis);
    let (c, d) = (rig.setup.sizes.concurrency, rig.setup.sizes.run);
    // Throughput, closed loop, with each process's CPU per call: the empty handler, the server
    // twice, the empty handler again, and the means compared, so that a machine drifting within
    // the minute (a shared one does, by a tenth and more) weighs on both sides alike.
    eprintln!("CheckSuppressed throughput…");
    let mut runs = Vec::new();
    for (name, addr, proc) in [
        ("check-baseline", baseline_addr, baseline),
        ("check", server_addr, server),
        ("check-2", server_addr, server),
        ("check-baseline-2", baseline_addr, baseline),
    ] {
        let (cpu, redis_cpu) = (proc.cpu(), redis.cpu());
        let run = cx.load(name, addr, checking).await?;
        runs.push(Closed {
            rps: ok_rps(&run),
            cpu: cpu_per_call(proc.cpu() - cpu, run.count),
            redis_cpu: cpu_per_call(redis.cpu() - redis_cpu, run.count),
        });
    }
    // Each figure's two runs, baseline's and suppressd's, and their means.
    let pair = |of: fn(&Closed) -> f64, at: [usize; 2]| at.map(|i| of(&runs[i]));
    let mean = |x: [f64; 2]| (x[0] + x[1]) / 2.0;
    let (base, check) = ([0, 3], [1, 2]);
    let (base_rps, check_rps) = (pair(|r| r.rps, base), pair(|r| r.rps, check));
    let (base_cpu, server_cpu) = (pair(|r| r.cpu, base), pair(|r| r.cpu, check));
    let rps_ratio = mean(check_rps) / mean(base_rps);
    cx.report.rows.push(Row::new(
        "check_throughput_ratio",
        &format!("CheckSuppressed throughput vs empty handler (c={c})"),
        rps_ratio,
        format!("{rps_ratio:.2} ({:.0}/s)", mean(check_rps)),
        format!(
            "means of two runs each, alternating; empty handler {:.0}/s ({:.0}, {:.0}/s); \
             suppressd {:.0}, {:.0}/s",
            mean(base_rps),
            base_rps[0],
            base_rps[1],
            check_rps[0],
            check_rps[1]
        ),
    ));
    let cpu_ratio = mean(server_cpu) / mean(base_cpu);
    cx.report.rows.push(Row::new(
        "check_cpu_ratio",
        &format!("Server CPU per CheckSuppressed vs the empty handler's per call (c={c})"),
        cpu_ratio,
        format!("{cpu_ratio:.2}× ({:.1} µs)", mean(server_cpu)),
        format!(
            "the same runs; empty handler {:.1} µs ({:.1}, {:.1} µs); suppressd {:.1}, {:.1} µs",
            mean(base_cpu),
            base_cpu[0],
            base_cpu[1],
            server_cpu[0],
            server_cpu[1]
        ),
    ));

    // Latency at concurrency 1 with the client on the other CPU, then on the servers' (see
    // `Rig::place`), and a raw Redis round trip of the same keys.
    eprintln!("CheckSuppressed at concurrency 1…");
    let one = Load {
        concurrency: 1,
        ..checking
    };
    let apart = at_one(cx, rig, one, Placement::Apart).await?;
    let together = at_one(cx, rig, one, Placement::Together).await?;
    let rtt = raw::round_trips(redis.conn().await?, check_probes, d).await?;
    cx.report.rows.push(Row::new(
        "check_p50_ratio",
        "CheckSuppressed p50 at c=1 vs empty handler p50 (client on another CPU)",
        apart.ratio(),
        format!("{:.2}× ({})", apart.ratio(), us(apart.check())),
        format!(
            "means of two runs each, alternating; {}; {}; raw Redis HMGET round trip {}",
            apart.detail(),
            together.detail(),
            us(rtt.percentile(50.0))
        ),
    ));

    // p99 at half of the measured maximum, open loop.
    let half = (mean(check_rps) / 2.0).max(1.0);
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
    Ok(Checked {
        base_rps: mean(base_rps),
        base_cpu: mean(base_cpu),
        cpu: Cpu {
            server: mean(server_cpu),
            redis: mean(pair(|r| r.redis_cpu, check)),
        },
    })
}

/// One closed-loop run of the throughput rows: calls answered per second, and the CPU per call of
/// the process that answered and of Redis.
struct Closed {
    rps: f64,
    cpu: f64,
    redis_cpu: f64,
}

/// The four runs at concurrency 1 of [`Alternated`], with the client placed as `placement`.
async fn at_one(
    cx: &mut Ctx,
    rig: &Rig<'_>,
    one: Load<'_>,
    placement: Placement,
) -> anyhow::Result<Alternated> {
    let _pinned = rig.place(placement)?;
    let name = |run: &str| format!("check-c1-{run}-{}", placement.name());
    let base1 = cx.load(&name("baseline"), rig.baseline_addr, one).await?;
    let check1 = cx.load(&name("server"), rig.server_addr, one).await?;
    let check2 = cx.load(&name("server-2"), rig.server_addr, one).await?;
    let base2 = cx.load(&name("baseline-2"), rig.baseline_addr, one).await?;
    Ok(Alternated {
        placement,
        base: [p(&base1, 50), p(&base2, 50)],
        check: [p(&check1, 50), p(&check2, 50)],
    })
}

/// Batches against raw pipelined reads of the same keys, in recipients per second.
pub(super) async fn batch_rows(cx: &mut Ctx, rig: &Rig<'_>) -> anyhow::Result<Cpu> {
    let (server_addr, checking, server) = (rig.server_addr, rig.checking, &rig.server);
    let (sizes, redis, d) = (rig.setup.sizes, rig.setup.redis, rig.setup.sizes.run);
    let (pepper, keys) = (&rig.setup.pepper, &rig.setup.keys);
    // Batches of 100 vs raw pipelined reads of the same keys.
    eprintln!("CheckSuppressedBatch vs raw pipelined reads…");
    let draws = fixtures::draw(sizes.batch_pool, sizes.batch_size, sizes.entries);
    let batch_data = fixtures::batch_data(&draws);
    let bc = sizes.batch_concurrency;
    let (cpu, redis_cpu) = (server.cpu(), redis.cpu());
    let batching = Load {
        call: "CheckSuppressedBatch",
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
                .map(|&i| fixtures::probe(pepper, keys, i))
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
    Ok(Cpu {
        server: batch_cpu,
        redis: batch_redis_cpu,
    })
}
