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
use std::time::Duration;

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
        let cpu = proc.cpu();
        let run = cx.load(name, addr, checking).await?;
        runs.push(Closed {
            rps: ok_rps(&run),
            cpu: cpu_per_call(proc.cpu() - cpu, run.count),
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
    // CPU per call, pinned (`cpu_runs`): unpinned, as in the runs above, it moves with where the
    // scheduler puts each server beside the client.
    eprintln!("CheckSuppressed CPU per call, servers and client pinned…");
    let pinned = cpu_runs(cx, rig).await?;
    let cpu_ratio = pinned.check.per_call() / pinned.base.per_call();
    cx.report.rows.push(Row::new(
        "check_cpu_ratio",
        &format!("Server CPU per CheckSuppressed vs the empty handler's per call (c={c})"),
        cpu_ratio,
        format!("{cpu_ratio:.2}× ({:.1} µs)", pinned.check.per_call()),
        format!(
            "medians of {CPU_ROUNDS} runs each, alternating, the servers on one CPU and the \
             client on the other: empty handler {:.1} µs ({}), suppressd ({}); unpinned, in the \
             throughput runs above: {:.2}× ({:.1} vs {:.1} µs)",
            pinned.base.per_call(),
            pinned.base.each(),
            pinned.check.each(),
            mean(server_cpu) / mean(base_cpu),
            mean(server_cpu),
            mean(base_cpu),
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
        base_cpu: pinned.base.per_call(),
        cpu: Cpu {
            server: pinned.check.per_call(),
            redis: pinned.check.redis_per_call(),
        },
    })
}

/// One closed-loop run of the throughput rows: calls answered per second, and the CPU per call of
/// the process that answered.
struct Closed {
    rps: f64,
    cpu: f64,
}

/// Rounds of the CPU-per-call runs, each one run of each server.
const CPU_ROUNDS: usize = 4;

/// The CPU per call (µs) of each run of one server in [`cpu_runs`], its own and Redis's, in order.
#[derive(Default)]
struct CpuRuns {
    runs: Vec<f64>,
    redis: Vec<f64>,
}

impl CpuRuns {
    fn add(&mut self, cpu: Duration, redis: Duration, calls: u64) {
        self.runs.push(cpu_per_call(cpu, calls));
        self.redis.push(cpu_per_call(redis, calls));
    }

    /// The median run's: a run that something else on the machine slowed (one in a few, by up
    /// to half) does not move it.
    fn per_call(&self) -> f64 {
        median(&self.runs)
    }

    fn redis_per_call(&self) -> f64 {
        median(&self.redis)
    }

    /// Each run's figure, for a row's detail.
    fn each(&self) -> String {
        let runs: Vec<_> = self.runs.iter().map(|us| format!("{us:.1}")).collect();
        format!("{} µs", runs.join(", "))
    }
}

/// The middle value (the mean of the middle two of an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The empty handler's and suppressd's CPU per call under the check workload, with both servers on
/// one CPU and the client on the other (`Rig::place`), which keeps each server's share of the
/// machine the same from run to run: unpinned, the same binary against the same empty handler
/// gave ratios from 1.06 to 1.25. [`CPU_ROUNDS`] rounds, which server goes first alternating, so
/// that a machine that drifts moves both sides alike; each side's figure is its median run's.
async fn cpu_runs(cx: &mut Ctx, rig: &Rig<'_>) -> anyhow::Result<CpuPair> {
    let _pinned = rig.place(Placement::Apart)?;
    let redis = rig.setup.redis;
    let mut runs = CpuPair::default();
    for round in 0..CPU_ROUNDS {
        // The empty handler first in even rounds, suppressd first in odd ones.
        for suppressd in [round % 2 == 1, round % 2 == 0] {
            let (name, addr, proc, into) = if suppressd {
                ("check-cpu", rig.server_addr, &rig.server, &mut runs.check)
            } else {
                (
                    "check-cpu-baseline",
                    rig.baseline_addr,
                    &rig.baseline,
                    &mut runs.base,
                )
            };
            let (cpu, redis_cpu) = (proc.cpu(), redis.cpu());
            let run = cx
                .load(&format!("{name}-{}", round + 1), addr, rig.checking)
                .await?;
            into.add(proc.cpu() - cpu, redis.cpu() - redis_cpu, run.count);
        }
    }
    Ok(runs)
}

/// The CPU-per-call runs of the empty handler and of suppressd.
#[derive(Default)]
struct CpuPair {
    base: CpuRuns,
    check: CpuRuns,
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

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_takes_the_middle_run_whatever_the_order() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[30.7, 18.8, 19.1]), 19.1);
        assert_eq!(median(&[19.0, 30.0, 17.0, 18.0]), 18.5);
    }
}
