//! The admin HTTP port: `GET /metrics` in the Prometheus text format. It is a port of its own so it
//! can stay on a private interface while gRPC faces the senders, and so a scrape never queues
//! behind sender traffic.
//!
//! Gauges that describe shared state (the write-behind backlog, the cache's completeness) are read
//! from Redis when Prometheus scrapes, not polled in the background: they are as fresh as the scrape
//! and cost nothing between scrapes. Every replica reports the same backlog; dashboards take `max`.

use crate::{
    cache::Cache,
    domain::clock::system_now,
    telemetry::metrics::{self, names},
};
use anyhow::Context;
use axum::{extract::State, http::header, response::IntoResponse, routing::get};
use std::{net::SocketAddr, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a scrape waits for Redis before answering with the gauges it has.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(1);

/// The bound admin listener and what its handlers read.
pub(crate) struct Admin {
    listener: TcpListener,
    cache: Cache,
}

impl Admin {
    /// Binds the admin port (port 0 works) and installs the process's Prometheus recorder.
    pub(crate) async fn bind(addr: SocketAddr, cache: Cache) -> anyhow::Result<Admin> {
        metrics::prometheus();
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the admin port {addr}"))?;
        Ok(Admin { listener, cache })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled.
    pub(crate) async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let app = axum::Router::new()
            .route("/metrics", get(scrape))
            .with_state(self.cache);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("serving the admin port")
    }
}

async fn scrape(State(cache): State<Cache>) -> impl IntoResponse {
    if tokio::time::timeout(SAMPLE_TIMEOUT, sample(&cache))
        .await
        .is_err()
    {
        tracing::warn!("Redis too slow for a scrape; backlog gauges keep their last values");
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::prometheus().render(),
    )
}

/// Reads the shared-state gauges from Redis. A failure is already counted as a Redis error; the
/// cache then reports itself incomplete, which is what checks will find too.
async fn sample(cache: &Cache) {
    let complete = matches!(cache.is_complete().await, Ok(true));
    ::metrics::gauge!(names::CACHE_COMPLETE).set(if complete { 1.0 } else { 0.0 });
    if let Ok(backlog) = cache.backlog().await {
        ::metrics::gauge!(names::STREAM_LENGTH).set(backlog.length as f64);
        ::metrics::gauge!(names::PENDING).set(backlog.pending as f64);
        let age_ms = backlog
            .oldest_pending_at
            .map_or(0, |at| system_now().saturating_sub(at).max(0));
        ::metrics::gauge!(names::OLDEST_PENDING_AGE).set(age_ms as f64 / 1000.0);
    }
}
