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

/// Throughput, latency at concurrency 1 and p99 at half load of CheckSuppressed, each against the
/// empty handler.
pub(super) async fn check_rows(
    cx: &mut Ctx,
    rig: &Rig<'_>,
    check_probes: &[Probe],
) -> anyhow::Result<Checked> {
    let (server_addr, baseline_addr, checking) = (rig.server_addr, rig.baseline_addr, rig.checking);
    let (server, baseline, redis) = (&rig.server, &rig.baseline, rig.setup.redis);
    let (c, d) = (rig.setup.sizes.concurrency, rig.setup.sizes.run);
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
    Ok(Checked {
        base_rps: ok_rps(&base),
        base_cpu,
        cpu: Cpu {
            server: server_cpu,
            redis: check_redis_cpu,
        },
    })
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
