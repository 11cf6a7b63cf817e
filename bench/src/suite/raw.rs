//! The Redis baselines: what a plain redis-rs client gets from the same Redis for the same keys, with
//! none of suppressd around it. A round trip is one `HMGET bucket marker field₁…field₈` (what one check
//! asks); a pipelined read is 100 of them in one pipeline (what one batch asks).

use super::fixtures::Probe;
use crate::stats::Latencies;
use redis::aio::MultiplexedConnection;
use std::time::{Duration, Instant};
use suppressd::cache::layout::MARKER_FIELD;

fn hmget(pipe: &mut redis::Pipeline, p: &Probe) {
    pipe.cmd("HMGET").arg(&p.bucket).arg(MARKER_FIELD);
    for f in &p.fields {
        pipe.arg(&f[..]);
    }
}

type Replies = Vec<Vec<Option<Vec<u8>>>>;

/// One `HMGET` at a time for `duration`, cycling through `probes`: the latency of a raw round trip.
pub async fn round_trips(
    conn: MultiplexedConnection,
    probes: &[Probe],
    duration: Duration,
) -> anyhow::Result<Latencies> {
    let mut conn = conn;
    let mut latencies = Latencies::default();
    let end = Instant::now() + duration;
    let mut i = 0;
    while Instant::now() < end {
        let mut pipe = redis::pipe();
        hmget(&mut pipe, &probes[i % probes.len()]);
        let sent = Instant::now();
        let _: Replies = pipe.query_async(&mut conn).await?;
        latencies.record(sent.elapsed().as_nanos() as u64);
        i += 1;
    }
    Ok(latencies)
}

/// `concurrency` tasks sharing one multiplexed connection (as the server shares one), each sending
/// pipelines of one batch's probes, cycling through `batches`, for `duration`. Returns checks per
/// second.
pub async fn pipelined(
    conn: MultiplexedConnection,
    batches: &[Vec<Probe>],
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let pipes: std::sync::Arc<Vec<(redis::Pipeline, usize)>> = std::sync::Arc::new(
        batches
            .iter()
            .map(|b| {
                let mut pipe = redis::pipe();
                b.iter().for_each(|p| hmget(&mut pipe, p));
                (pipe, b.len())
            })
            .collect(),
    );
    let began = Instant::now();
    let end = began + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (mut conn, pipes) = (conn.clone(), pipes.clone());
            tokio::spawn(async move {
                let mut checks = 0u64;
                let mut i = t;
                while Instant::now() < end {
                    let (pipe, n) = &pipes[i % pipes.len()];
                    let _: Replies = pipe.query_async(&mut conn).await?;
                    checks += *n as u64;
                    i += concurrency;
                }
                anyhow::Ok(checks)
            })
        })
        .collect();
    let mut checks = 0;
    for t in tasks {
        checks += t.await??;
    }
    Ok(checks as f64 / began.elapsed().as_secs_f64())
}
