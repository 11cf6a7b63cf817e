//! How a replica follows the controls: it polls the store's version and reloads on a move
//! ([`ControlsPoller`]), and reports in Redis which version it answers by, which is what a change
//! waits on before it returns ([`Suppressions::propagate`]).

use super::super::{ServiceError, Suppressions};
use crate::{
    domain::{Millis, clock::system_now},
    telemetry::metrics::names,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A replica that has not reported for this long (or four of its polls, if longer) is taken for
/// gone, and not waited for.
const LIVE_WITHIN: Millis = 1_000;
/// The longest a change waits for the other replicas (plus two of the slowest one's polls) before
/// returning all the same.
const PROPAGATION_BOUND: Millis = 2_000;
/// How often a waiting change looks at the reports.
const PROPAGATION_POLL: Duration = Duration::from_millis(2);
/// Reports older than this are deleted (replicas that are gone).
const FORGET_AFTER: Millis = 60_000;

impl Suppressions {
    /// After a change committed: load it here, then wait until every live replica has.
    pub(super) async fn propagate(&self) -> Result<(), ServiceError> {
        let version = self.load_controls().await?;
        self.report_seen(version).await;
        let cache = &self.inner.cache;
        let replica = &self.inner.settings.replica;
        let started = tokio::time::Instant::now();
        loop {
            let seen = match cache.controls_seen().await {
                Ok(seen) => seen,
                Err(e) => {
                    tracing::warn!(error = %e, "Redis unreadable; waiting out the controls poll");
                    tokio::time::sleep(self.inner.settings.controls_poll * 2).await;
                    return Ok(());
                }
            };
            let now = system_now();
            let live: Vec<_> = seen
                .iter()
                .filter(|s| &s.replica != replica && now - s.at < LIVE_WITHIN.max(4 * s.every))
                .collect();
            let behind = live.iter().filter(|s| s.version < version).count();
            if behind == 0 {
                return Ok(());
            }
            let slowest = live.iter().map(|s| s.every).max().unwrap_or(0);
            let bound = Duration::from_millis((PROPAGATION_BOUND + 2 * slowest) as u64);
            if started.elapsed() >= bound {
                tracing::warn!(
                    behind,
                    "replicas have not loaded the new controls yet; they will at their next poll"
                );
                return Ok(());
            }
            tokio::time::sleep(PROPAGATION_POLL).await;
        }
    }

    /// Tells the other replicas which controls version this one answers by, as of now.
    async fn report_seen(&self, version: i64) {
        let replica = &self.inner.settings.replica;
        let every = self.inner.settings.controls_poll.as_millis() as Millis;
        if let Err(e) = self
            .inner
            .cache
            .report_controls_seen(replica, version, system_now(), every)
            .await
        {
            tracing::debug!(error = %e, "controls version not reported");
        }
    }
}

/// Keeps a replica's controls in step with the store: a loop around [`ControlsPoller::step`].
pub(crate) struct ControlsPoller {
    service: Suppressions,
    last_read: tokio::time::Instant,
}

impl ControlsPoller {
    pub(crate) fn new(service: Suppressions) -> Self {
        ControlsPoller {
            service,
            last_read: tokio::time::Instant::now(),
        }
    }

    /// Reads the version; reloads when it moved; reports what this replica answers by. Store errors
    /// leave the snapshot as it was.
    pub(crate) async fn step(&mut self) -> Result<(), ServiceError> {
        let service = &self.service;
        let mut version = service.inner.controls.load().version;
        let outcome = async {
            let stored = service.inner.store.controls_version().await?;
            if stored != version {
                version = service.load_controls().await?;
            }
            Ok::<_, ServiceError>(())
        }
        .await;
        if outcome.is_ok() {
            self.last_read = tokio::time::Instant::now();
            service.report_seen(version).await;
        }
        metrics::gauge!(names::CONTROLS_AGE).set(self.last_read.elapsed().as_secs_f64());
        outcome
    }

    /// Polls every `every` until shutdown; logs a store outage once when it starts.
    pub(crate) async fn run(mut self, every: Duration, shutdown: CancellationToken) {
        let mut failing = false;
        let mut forgot = tokio::time::Instant::now();
        loop {
            // The first step at once: the report lets changes wait for this replica from its start.
            match self.step().await {
                Ok(()) if failing => {
                    tracing::info!("controls are read from the store again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "controls unreadable; answering by the last ones loaded");
                    failing = true;
                }
                Err(_) => {}
            }
            if forgot.elapsed() > Duration::from_secs(10) {
                forgot = tokio::time::Instant::now();
                self.forget_gone().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => {
                    // Gone: a change need not wait for this replica's report to age out.
                    let replica = [self.service.inner.settings.replica.clone()];
                    let _ = self.service.inner.cache.forget_controls_seen(&replica).await;
                    return;
                }
            }
        }
    }

    async fn forget_gone(&self) {
        let cache = &self.service.inner.cache;
        if let Ok(seen) = cache.controls_seen().await {
            let now = system_now();
            let gone: Vec<String> = seen
                .into_iter()
                .filter(|s| now - s.at > FORGET_AFTER)
                .map(|s| s.replica)
                .collect();
            let _ = cache.forget_controls_seen(&gone).await;
        }
    }
}
