//! Webhook delivery (issue 22): one destination, registered for the benchmark tenant's opt-outs and
//! pointing at a receiver inside this process, while `OptOut` `DURABLE` runs open loop at a fixed
//! rate; then a bounded wait until the receiver holds every change. The receiver answers 204 at
//! once and notes, for each change, when it arrived and the change's `recorded_at` from the body.
//!
//! Rows: deliveries per second while the load ran and up to the last change, with how many were
//! still undelivered when the load stopped; and the lag from `recorded_at` (milliseconds in the
//! payload) to the receiver's clock, p50 / p99 / max. Informational: no target yet.

use super::Rig;
use crate::suite::{
    fixtures::TENANT,
    load::{Ctx, Load, ms, ok_count},
    table::Row,
};
use anyhow::Context;
use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};
use suppressd::proto::{self, suppression_client::SuppressionClient};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel as GrpcChannel;

/// The offered opt-outs per second of a full run, and of a smoke run (a few hundred in 300 ms).
const RATE: f64 = 2_000.0;
const SMOKE_RATE: f64 = 1_000.0;
/// The longest wait, after the load, for the last change to arrive.
const DRAIN_LIMIT: Duration = Duration::from_secs(180);
const SMOKE_DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// One change as it reached the receiver (the first time, if it came twice).
#[derive(Clone, Copy)]
struct Arrival {
    /// Since the load began.
    at: Duration,
    /// Receiver's wall clock minus the change's `recorded_at`, in nanoseconds (clamped at 0).
    lag_ns: u64,
}

struct Receiver {
    began: Instant,
    /// By `seq`.
    arrivals: Mutex<BTreeMap<u64, Arrival>>,
    /// POSTs whose body had no `data.seq` or readable `data.recorded_at`.
    unreadable: Mutex<u64>,
    /// POSTs of a change already received.
    repeats: Mutex<u64>,
}

impl Receiver {
    fn received(&self) -> usize {
        self.arrivals.lock().expect("not poisoned").len()
    }
}

/// The change's `seq` and `recorded_at` (nanoseconds since the epoch) from a webhook body.
fn read_change(body: &[u8]) -> Option<(u64, i128)> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = json.get("data")?;
    let seq = data.get("seq")?.as_u64()?;
    let recorded = data.get("recorded_at")?.as_str()?;
    let at = time::OffsetDateTime::parse(recorded, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some((seq, at.unix_timestamp_nanos()))
}

async fn receive(State(rx): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let at = rx.began.elapsed();
    match read_change(&body) {
        Some((seq, recorded)) => {
            let lag_ns = (now - recorded).max(0) as u64;
            let mut arrivals = rx.arrivals.lock().expect("not poisoned");
            if arrivals.insert(seq, Arrival { at, lag_ns }).is_some() {
                *rx.repeats.lock().expect("not poisoned") += 1;
            }
        }
        None => *rx.unreadable.lock().expect("not poisoned") += 1,
    }
    StatusCode::NO_CONTENT
}

/// The value at `q` (0..=1) of sorted `v`.
fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

pub(super) async fn delivery_rows(
    cx: &mut Ctx,
    rig: &Rig<'_>,
    opting_out: Load<'_>,
    smoke: bool,
    rate: Option<f64>,
) -> anyhow::Result<()> {
    let (default_rate, drain_limit) = if smoke {
        (SMOKE_RATE, SMOKE_DRAIN_LIMIT)
    } else {
        (RATE, DRAIN_LIMIT)
    };
    let rate = rate.unwrap_or(default_rate);
    eprintln!("Webhook delivery of OptOut DURABLE at {rate:.0}/s…");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let rx = Arc::new(Receiver {
        began: Instant::now(),
        arrivals: Mutex::new(BTreeMap::new()),
        unreadable: Mutex::new(0),
        repeats: Mutex::new(0),
    });
    let stop = CancellationToken::new();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(rx.clone());
    let serving = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );

    let channel = GrpcChannel::from_shared(format!("http://{}", rig.server_addr))?
        .connect()
        .await?;
    let mut client = SuppressionClient::new(channel);
    let destination = client
        .register_destination(proto::RegisterDestinationRequest {
            url: hook,
            tenants: vec![TENANT.into()],
            kinds: vec!["opt_out".into()],
            secret: String::new(),
            needs_identifier: false,
        })
        .await
        .context("registering the webhook destination")?
        .into_inner();

    let measured = measure(cx, rig, opting_out, rate, drain_limit, &rx).await;
    // Whatever happened, later rows run against a server with no destination.
    let removed = client
        .remove_destination(proto::RemoveDestinationRequest {
            destination_id: destination.destination_id,
        })
        .await;
    stop.cancel();
    serving.await??;
    let rows = measured?;
    removed.context("removing the webhook destination")?;
    cx.report.rows.extend(rows);
    Ok(())
}

async fn measure(
    cx: &mut Ctx,
    rig: &Rig<'_>,
    opting_out: Load<'_>,
    rate: f64,
    drain_limit: Duration,
    rx: &Receiver,
) -> anyhow::Result<[Row; 2]> {
    let load = Load {
        rps: Some(rate),
        ..opting_out
    };
    let began = rx.began.elapsed();
    let report = cx.load("webhook-opt-out", rig.server_addr, load).await?;
    let load_end = rx.began.elapsed();
    let at_stop = rx.received();
    // Every opt-out answered OK is one committed `opt_out` change of the tenant.
    let expected = ok_count(&report) as usize;
    let deadline = Instant::now() + drain_limit;
    while rx.received() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals: Vec<Arrival> = rx
        .arrivals
        .lock()
        .expect("not poisoned")
        .values()
        .copied()
        .collect();
    let (unreadable, repeats) = (
        *rx.unreadable.lock().expect("not poisoned"),
        *rx.repeats.lock().expect("not poisoned"),
    );
    if arrivals.len() < expected {
        cx.report.warnings.push(format!(
            "webhook delivery: {} of {expected} changes arrived within {drain_limit:?} after the load",
            arrivals.len()
        ));
    }
    if unreadable > 0 {
        cx.report.warnings.push(format!(
            "webhook delivery: {unreadable} bodies without data.seq or a readable data.recorded_at"
        ));
    }

    let loaded_for = (load_end - began).as_secs_f64().max(1e-9);
    let during = arrivals.iter().filter(|a| a.at <= load_end).count();
    let last = arrivals.iter().map(|a| a.at).max().unwrap_or(load_end);
    let drained_for = (last.max(load_end) - began).as_secs_f64().max(1e-9);
    let (during_rps, overall_rps) = (
        during as f64 / loaded_for,
        arrivals.len() as f64 / drained_for,
    );
    let mut lags: Vec<u64> = arrivals.iter().map(|a| a.lag_ns).collect();
    lags.sort_unstable();
    let (p50, p99, max) = (
        quantile(&lags, 0.5),
        quantile(&lags, 0.99),
        lags.last().copied().unwrap_or(0),
    );
    let undelivered = expected.saturating_sub(at_stop);
    Ok([
        Row::new(
            "webhook_delivery_rps",
            &format!(
                "webhook deliveries to one destination, OptOut DURABLE open loop at {rate:.0}/s"
            ),
            overall_rps,
            format!(
                "{overall_rps:.0}/s to the last change ({:.1} s); {during_rps:.0}/s while \
                 loaded; {undelivered} of {expected} undelivered when the load stopped",
                drained_for
            ),
            format!(
                "OptOut {:.0}/s answered OK over {loaded_for:.1} s; receiver answers 204 at once; \
                 {repeats} sent twice",
                expected as f64 / loaded_for
            ),
        ),
        Row::new(
            "webhook_delivery_lag_p99_ms",
            "webhook delivery lag p99 (recorded_at to receipt)",
            p99 as f64 / 1e6,
            ms(p99),
            format!(
                "p50 {}, max {}; over {} changes; recorded_at has ms resolution",
                ms(p50),
                ms(max),
                lags.len()
            ),
        ),
    ])
}
