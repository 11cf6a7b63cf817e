//! The tracing rows: what tracing costs a check at 1 % sampling and always on, against servers that
//! export to a sink in this process.

use super::near::Watched;
use crate::suite::{
    load::{Ctx, Load, cpu_per_call, ok_count, ok_rps},
    otlp_sink,
    procs::{Proc, free_port},
    table::Row,
};
use std::{net::SocketAddr, path::Path, time::Duration};

/// Spans per call that an always-on run must export in each round: fewer, and its exporter
/// dropped some (a call makes one span, its server span).
const ALL_EXPORTED: f64 = 0.99;
/// Rounds of the tracing rows (off, 1 %, always on, each round; off once more at the end).
const TRACING_ROUNDS: usize = 3;
/// The traced servers: a name for their runs and logs, the sampler, its argument.
const SAMPLERS: [(&str, &str, &str); 2] = [
    ("1pct", "parentbased_traceidratio", "0.01"),
    ("always", "parentbased_always_on", "1"),
];

/// How to start one more `suppressd serve` on the same Redis and database, with other variables.
pub(super) struct Traced<'a> {
    pub(super) bin: &'a Path,
    pub(super) out: &'a Path,
    pub(super) args: &'a dyn Fn(SocketAddr) -> Vec<String>,
    pub(super) env: &'a [(&'a str, &'a str)],
}

/// Tracing cost at 1 % sampling and always on: closed-loop CheckSuppressed runs against the measured
/// server (traces off) and two more servers on the same Redis and database, one per sampler,
/// exporting over OTLP/gRPC to a sink in this process. The sink decodes and counts the spans, so the
/// export is real; the exporters' queues and batches are raised (`OTEL_BSP_MAX_QUEUE_SIZE`,
/// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: with 512 spans a batch, the default, the always-on exporter
/// fell behind at ~56,000 calls/s and dropped 45 % of its spans) so that spans are exported, not
/// dropped, which would flatter the always-on row, and each traced run's count waits for its
/// exporter to have sent its queue (see [`otlp_sink::Sink::drained`]). An always-on row whose
/// exporter still dropped spans is not judged. The three alternate for
/// `TRACING_ROUNDS` rounds (off, 1 %, always, …, off), and each traced run is compared with the mean
/// of the untraced runs on either side of it, so that drift on a shared machine lands on all alike.
/// Each row also gives each server's CPU per call over all its measured runs (the traced ones read
/// a second after the last run, so that their exporters have sent what they queued): contention
/// moves it far less than throughput, which other work on the machine swings by tens of percent.
pub(super) async fn tracing_rows(
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
    let servers = spawn_traced(traced, &endpoint).await?;
    // Fresh processes run their first seconds slower; the untraced server is long warm.
    if !warmup.is_zero() {
        for (k, (addr, _)) in servers.iter().enumerate() {
            let load = Load {
                duration: warmup,
                ..checking
            };
            cx.load(&format!("warmup-trace-{}", SAMPLERS[k].0), *addr, load)
                .await?;
        }
    }
    // CPU at the start of the measured runs: the untraced server's, then each traced server's.
    let cpu_before: Vec<Duration> = std::iter::once(untraced_proc.cpu())
        .chain(servers.iter().map(|(_, s)| s.cpu()))
        .collect();
    // Successful calls made to each server, in the same order.
    let mut calls = [0u64; 3];
    let measured = tracing_rounds(cx, &sink, untraced, &servers, checking, &mut calls).await;
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
        tracing_row(id, what, runs, cpu, cpu_us[0], &off_shown)
    };
    let always = row(
        "tracing_always_cost_pct",
        "tracing cost, always on (CheckSuppressed throughput)",
        &runs[1],
        cpu_us[2],
    );
    let exported = runs[1].iter().map(|r| r.2).fold(f64::INFINITY, f64::min);
    let always = if exported < ALL_EXPORTED {
        always.not_judged(&format!(
            "with {exported:.2} spans exported per call in a round (the exporter dropped spans, \
             which makes tracing look cheaper)"
        ))
    } else {
        always
    };
    Ok(vec![
        row(
            "tracing_1pct_cost_pct",
            "tracing cost at 1 % sampling (CheckSuppressed throughput)",
            &runs[0],
            cpu_us[1],
        ),
        always,
    ])
}

/// Starts one more server per sampler, exporting to `endpoint`, and waits until each answers from
/// its near-cache: copies still loading (seconds at ten million) would take the cores from the
/// first rounds.
async fn spawn_traced(
    traced: &Traced<'_>,
    endpoint: &str,
) -> anyhow::Result<Vec<(SocketAddr, Proc)>> {
    let mut servers = Vec::new();
    for (name, sampler, arg) in SAMPLERS {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut env = traced.env.to_vec();
        env.extend([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_TRACES_SAMPLER", sampler),
            ("OTEL_TRACES_SAMPLER_ARG", arg),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"),
            // A batch not yet full goes after 100 ms instead of 5 s: the last of a run's spans
            // arrive before `Sink::drained` sees 300 ms of quiet, not in the next run.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ]);
        let server = Watched::spawn(
            "suppressd serve (traced)",
            traced.bin,
            (traced.args)(addr),
            &env,
            &traced.out.join(format!("server-trace-{name}.log")),
            addr,
        )
        .await?;
        servers.push((addr, server));
    }
    let mut ready = Vec::new();
    for (addr, server) in servers {
        server.wait_near_serving().await?;
        ready.push((addr, server.proc));
    }
    Ok(ready)
}

/// The measured runs: untraced first, then per round each traced server and untraced again, so
/// that every traced run has an untraced one on either side. Returns the untraced rates and, per
/// sampler and round, (rps, the untraced mean around it, spans per call); adds each server's
/// successful calls to `calls` (untraced first).
async fn tracing_rounds(
    cx: &mut Ctx,
    sink: &otlp_sink::Sink,
    untraced: SocketAddr,
    servers: &[(SocketAddr, Proc)],
    checking: Load<'_>,
    calls: &mut [u64; 3],
) -> anyhow::Result<(Vec<f64>, [Vec<(f64, f64, f64)>; 2])> {
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
                .load(&format!("trace-{}-{round}", SAMPLERS[k].0), *addr, checking)
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

/// One tracing row: the mean cost over the rounds of `runs` (see [`tracing_rounds`]), with the
/// server's CPU per call (`cpu`) beside the untraced server's.
fn tracing_row(
    id: &str,
    what: &str,
    runs: &[(f64, f64, f64)],
    cpu: f64,
    untraced_cpu: f64,
    off_shown: &str,
) -> Row {
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
            untraced_cpu,
            cpu - untraced_cpu,
        ),
    )
}
