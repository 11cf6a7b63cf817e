//! What runs beside the gRPC server: the commit-announcement listener, the rebuilder, the controls
//! poller, the halt triggers' flush, the deadline gauges, the near-cache, the write-behind worker, the admin port, the health monitor, the key
//! file watcher and the HTTP front. [`Background::spawn`] starts them in the order they depend on
//! one another; [`Running::stop`] stops them in the order the drain needs. It binds nothing: every
//! listener was bound by `Application::build`.

use super::health;
use crate::{
    admin::Admin,
    auth::KeyStore,
    cache::{Cache, layouts::Announcer, near::NearCache},
    service::{
        controls::ControlsPoller,
        delivery::Deliverer,
        rebuild::{RebuildTrigger, Rebuilder},
        waiters::Waiters,
    },
    store::Store,
    worker::Worker,
};
use std::{sync::Arc, time::Duration};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

/// How often the key file's modification time is looked at (SIGHUP reloads at once).
const KEYS_POLL_EVERY: Duration = Duration::from_millis(500);

/// Everything that runs beside the gRPC server, built but not yet started.
pub(super) struct Background {
    /// The public HTTP front, when configured: its listener and its router.
    pub(super) http: Option<(TcpListener, axum::Router)>,
    pub(super) keys: KeyStore,
    pub(super) cache: Cache,
    pub(super) waiters: Arc<Waiters>,
    pub(super) trigger: Arc<RebuildTrigger>,
    /// The write-behind workers, one per slot group's stream.
    pub(super) workers: Vec<Worker>,
    pub(super) rebuilder: Rebuilder,
    pub(super) controls: ControlsPoller,
    /// Delivers webhooks to the destinations this replica holds the lease of.
    pub(super) deliverer: Deliverer,
    pub(super) controls_poll: Duration,
    /// How often the halt triggers' counts go to Redis.
    pub(super) trigger_flush: Duration,
    /// How often the deadline gauges are recounted.
    pub(super) deadlines_refresh: Duration,
    /// This replica's near-cache, to follow the feed (`None`: checks always ask Redis).
    pub(super) near: Option<Arc<NearCache>>,
    /// Announces which bucket layouts this replica reads and writes, and plans them.
    pub(super) announcer: Arc<Announcer>,
    pub(super) admin: Option<Admin>,
}

/// The started tasks, and the three tokens that stop them: `background` when the drain begins,
/// the worker (and the admin port) and the controls (and the near-cache) once calls have drained.
pub(super) struct Running {
    background: CancellationToken,
    stop_worker: CancellationToken,
    stop_controls: CancellationToken,
    listening: JoinHandle<()>,
    rebuilding: JoinHandle<()>,
    polling: JoinHandle<()>,
    reconciling: JoinHandle<()>,
    counting: JoinHandle<()>,
    clocking: JoinHandle<()>,
    following: Option<JoinHandle<()>>,
    announcing: JoinHandle<()>,
    working: JoinHandle<()>,
    delivering: JoinHandle<()>,
    admin: Option<JoinHandle<anyhow::Result<()>>>,
    monitoring: JoinHandle<()>,
    watching: JoinHandle<()>,
    front: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts every task, and health as the cache and store find it now.
    pub(super) async fn spawn(self, reporter: &HealthReporter, store: &Store) -> Running {
        let Background {
            http,
            keys,
            cache,
            waiters,
            trigger,
            workers,
            rebuilder,
            controls,
            deliverer,
            controls_poll,
            trigger_flush,
            deadlines_refresh,
            near,
            announcer,
            admin,
        } = self;
        let background = CancellationToken::new();
        let subscribed = CancellationToken::new();
        let listening = {
            let (cache, token, ready) = (cache.clone(), background.clone(), subscribed.clone());
            tokio::spawn(async move { waiters.listen(cache, ready, token).await })
        };
        // DURABLE answers rely on the announcements; give the subscription a moment to be in place.
        let _ = tokio::time::timeout(Duration::from_secs(2), subscribed.cancelled()).await;
        let rebuilding = tokio::spawn(rebuilder.run(trigger, background.clone()));
        // Runs until the very end of the drain: calls still in flight keep answering by fresh controls.
        let stop_controls = CancellationToken::new();
        let service = controls.service();
        let polling = tokio::spawn(controls.run(controls_poll, stop_controls.clone()));
        let reconciling = tokio::spawn(
            service
                .clone()
                .reconcile_loop(controls_poll, stop_controls.clone()),
        );
        // Stops with the controls: counts of calls still draining are flushed once more.
        let counting = tokio::spawn(
            service
                .clone()
                .trigger_loop(trigger_flush, stop_controls.clone()),
        );
        let clocking = tokio::spawn(
            service
                .clone()
                .deadline_loop(deadlines_refresh, background.clone()),
        );
        let following = near.map(|near| tokio::spawn(near.run(stop_controls.clone())));
        // Until the very end too: writes of calls still draining keep every layout read.
        let announcing = tokio::spawn(announcer.run(stop_controls.clone()));
        let stop_worker = CancellationToken::new();
        let working = {
            let runs: Vec<_> = workers
                .into_iter()
                .map(|w| w.run(stop_worker.clone()))
                .collect();
            tokio::spawn(async move {
                futures_util::future::join_all(runs).await;
            })
        };
        // Stops when the drain begins: a POST under way finishes, the next waits for a replica.
        let delivering = tokio::spawn(deliverer.run(background.clone()));
        // Metrics stay scrapable while calls drain; the admin port closes with the worker.
        let admin = admin.map(|admin| tokio::spawn(admin.serve(stop_worker.clone())));
        let monitoring =
            health::follow(reporter, cache, store.clone(), service, background.clone()).await;

        let watching = tokio::spawn(watch_keys(keys, background.clone()));
        let front = http.map(|(listener, app)| {
            let stop = background.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the HTTP front stopped");
                }
            })
        });
        Running {
            background,
            stop_worker,
            stop_controls,
            listening,
            rebuilding,
            polling,
            reconciling,
            counting,
            clocking,
            following,
            announcing,
            working,
            delivering,
            admin,
            monitoring,
            watching,
            front,
        }
    }
}

impl Running {
    /// Cancelled when the drain begins: stops the HTTP front, the rebuilder, the health monitor,
    /// the announcement listener and the key watcher.
    pub(super) fn background(&self) -> CancellationToken {
        self.background.clone()
    }

    /// Stops every task and waits for them, within `grace`; the worker finishes its current batch.
    pub(super) async fn stop(self, grace: Duration) {
        let Running {
            background,
            stop_worker,
            stop_controls,
            listening,
            rebuilding,
            polling,
            reconciling,
            counting,
            clocking,
            following,
            announcing,
            working,
            delivering,
            admin,
            monitoring,
            watching,
            front,
        } = self;
        background.cancel();
        stop_worker.cancel();
        stop_controls.cancel();
        let finished = async {
            let _ = working.await;
            if let Some(admin) = admin {
                let _ = admin.await;
            }
            let _ = tokio::join!(
                rebuilding,
                monitoring,
                listening,
                watching,
                polling,
                reconciling,
                counting,
                delivering,
                clocking,
                announcing
            );
            if let Some(front) = front {
                let _ = front.await;
            }
            if let Some(following) = following {
                let _ = following.await;
            }
        };
        if tokio::time::timeout(grace, finished).await.is_err() {
            tracing::warn!("shutdown grace period over; pending entries stay in the stream");
        }
    }
}

/// Reloads the key file on SIGHUP and whenever it changes on disk, until shutdown.
async fn watch_keys(keys: KeyStore, shutdown: CancellationToken) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        tokio::select! {
            _ = hup => {
                tracing::info!("SIGHUP: reloading the key file");
                if let Err(e) = keys.reload() {
                    tracing::error!(error = format!("{e:#}"), "key file not reloaded; the old keys stay");
                }
            }
            _ = tokio::time::sleep(KEYS_POLL_EVERY) => keys.reload_if_changed(),
            _ = shutdown.cancelled() => return,
        }
    }
}
