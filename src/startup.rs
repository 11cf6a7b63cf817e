//! Assembles a process: pools, the listener, the gRPC server, the worker, the rebuilder, the health
//! monitor. [`Application::build`] binds (port 0 works) and exposes [`Application::local_addr`];
//! [`Application::run_until`] serves until a shutdown future resolves, which is what lets every test
//! start the real server.

use crate::{
    admin::Admin,
    api::{self, Router},
    auth::{KeyStore, KeyTable},
    cache::{Cache, layout::Keys, near::NearCache},
    config::ServeSettings,
    domain::Clock,
    service::{
        ServiceSettings, Suppressions,
        controls::ControlsPoller,
        rebuild::{RebuildTrigger, Rebuilder},
        waiters::Waiters,
    },
    store::Store,
    worker::{Worker, WorkerSettings},
};
use anyhow::Context;
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::{ServingStatus, server::HealthReporter};

/// How often health is re-evaluated.
const HEALTH_EVERY: Duration = Duration::from_millis(500);
/// How long a worker read blocks waiting for new entries (also bounds its shutdown).
const WORKER_BLOCK: Duration = Duration::from_millis(500);
/// How often the key file's modification time is looked at (SIGHUP reloads at once).
const KEYS_POLL_EVERY: Duration = Duration::from_millis(500);

pub struct Application {
    listener: TcpListener,
    router: Router,
    /// The public HTTP front, when configured: its listener and its router.
    http: Option<(TcpListener, axum::Router)>,
    keys: KeyStore,
    health: HealthReporter,
    cache: Cache,
    store: Store,
    waiters: Arc<Waiters>,
    trigger: Arc<RebuildTrigger>,
    worker: Worker,
    rebuilder: Rebuilder,
    controls: ControlsPoller,
    controls_poll: Duration,
    /// This replica's near-cache, to follow the feed (`None`: checks always ask Redis).
    near: Option<Arc<NearCache>>,
    admin: Option<Admin>,
    grace: Duration,
}

impl Application {
    pub async fn build(settings: &ServeSettings, clock: Clock) -> anyhow::Result<Application> {
        settings.check()?;
        // One crypto provider for every TLS use in the process (STACK.md trap 1). Installing twice
        // (tests build many applications) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key_store = match &settings.keys {
            Some(path) => KeyStore::load(path)?,
            None => KeyStore::fixed(KeyTable::default()),
        };
        if settings.dev_no_auth {
            tracing::warn!(
                "!!! --dev-no-auth: authentication is OFF and every caller is an admin. Listening on \
                 loopback only. Never run like this outside a developer machine !!!"
            );
        }
        let tls = tls_config(settings)?;
        let (pepper, dev_pepper) = settings.pepper()?;
        if dev_pepper {
            tracing::warn!(
                "!!! SUPPRESSD_PEPPER is not set: using the DEVELOPMENT pepper. Recipient hashes are \
                 guessable; never run like this with real data !!!"
            );
        }
        let (audit_log, dev_audit_key) = settings.audit_log()?;
        if dev_audit_key {
            tracing::warn!(
                "!!! SUPPRESSD_AUDIT_SIGNING_KEY is not set: audit checkpoints are signed with the \
                 DEVELOPMENT key, which anyone can use to forge them !!!"
            );
        }
        let replica = settings.replica_name();
        let store = Store::connect(&settings.store_url)
            .await
            .context("opening the durable store")?;
        let keys = Keys::new(&settings.redis_prefix, settings.cache_bucket_bits);
        let cache = Cache::connect(&settings.redis_url, keys)
            .await
            .context("connecting to Redis")?;
        let waiters = Arc::new(Waiters::default());
        let trigger = Arc::new(RebuildTrigger::default());
        #[allow(unused_mut)] // changed only by the tests' failpoint
        let mut near = NearCache::new(cache.clone(), &replica);
        #[cfg(feature = "failpoints")]
        if settings.failpoint_near_stall {
            near = near.with_stall_failpoint();
        }
        let near = Arc::new(near);
        let service = Suppressions::new(
            cache.clone(),
            near.clone(),
            store.clone(),
            pepper,
            clock.clone(),
            ServiceSettings {
                durable_wait: settings.durable_wait(),
                backlog_limit: settings.backlog_limit,
                audit_log: audit_log.clone(),
                replica: replica.clone(),
                controls_poll: settings.controls_poll,
            },
            waiters.clone(),
            trigger.clone(),
        );
        // Halts must hold from the first check on: no store, no start.
        service
            .load_controls()
            .await
            .context("loading halts and mandatory declarations")?;
        let controls = ControlsPoller::new(service.clone());
        let worker = Worker::new(
            cache.clone(),
            store.clone(),
            clock.clone(),
            audit_log.clone(),
            &replica,
            WorkerSettings {
                batch: settings.worker_batch as usize,
                block: WORKER_BLOCK,
                claim_idle: settings.worker_claim_idle(),
                #[cfg(feature = "failpoints")]
                crash_after_commit: settings.failpoint_crash_after_commit,
            },
        )
        .await
        .context("joining the write-behind consumer group")?;
        let rebuilder = Rebuilder::new(cache.clone(), store.clone(), clock, replica.clone());
        let admin = match settings.admin_listen {
            Some(addr) => Some(Admin::bind(addr, cache.clone()).await?),
            None => None,
        };
        let http = match settings.http_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the HTTP front to {addr}"))?;
                tracing::info!(addr = %listener.local_addr()?, "HTTP front listening");
                Some((
                    listener,
                    crate::http::router(service.clone(), key_store.clone()),
                ))
            }
            None => None,
        };
        let tls_on = tls.is_some();
        let (router, health) = api::router(
            service,
            api::ApiSettings {
                keys: key_store.clone(),
                authenticate: !settings.dev_no_auth,
                rate_limit_per_principal: settings.rate_limit_per_principal,
                max_concurrent_checks: settings.max_concurrent_checks as usize,
                max_concurrent_writes: settings.max_concurrent_writes as usize,
                tls,
            },
        )?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        tracing::info!(
            addr = %listener.local_addr()?,
            replica,
            store = store.engine(),
            admin = ?admin.as_ref().map(Admin::local_addr),
            tls = tls_on,
            mtls = settings.tls_client_ca.is_some(),
            authentication = !settings.dev_no_auth,
            "suppressd ready to serve"
        );
        Ok(Application {
            listener,
            router,
            http,
            keys: key_store,
            health,
            cache,
            store,
            waiters,
            trigger,
            worker,
            rebuilder,
            controls,
            controls_poll: settings.controls_poll,
            near: (!settings.no_near_cache).then_some(near),
            admin,
            grace: settings.shutdown_grace(),
        })
    }

    /// This replica's near-cache, when it follows the feed (tests look at whether it serves).
    pub fn near_cache(&self) -> Option<Arc<NearCache>> {
        self.near.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The admin (metrics) port's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::local_addr)
    }

    /// The HTTP front's address, when it is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
            .as_ref()
            .map(|(l, _)| l.local_addr().expect("a bound listener has an address"))
    }

    /// Serves until `shutdown` resolves; then turns health NOT_SERVING, stops accepting, drains
    /// in-flight calls, and lets the worker finish its current batch.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Application {
            listener,
            router,
            http,
            keys,
            health,
            cache,
            store,
            waiters,
            trigger,
            worker,
            rebuilder,
            controls,
            controls_poll,
            near,
            admin,
            grace,
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
        let polling = tokio::spawn(controls.run(controls_poll, stop_controls.clone()));
        let following = near.map(|near| tokio::spawn(near.run(stop_controls.clone())));
        let stop_worker = CancellationToken::new();
        let working = tokio::spawn(worker.run(stop_worker.clone()));
        // Metrics stay scrapable while calls drain; the admin port closes with the worker.
        let admin = admin.map(|admin| tokio::spawn(admin.serve(stop_worker.clone())));
        set_health(&health, serving(&cache, &store).await).await;
        let monitoring = tokio::spawn(monitor_health(
            health.clone(),
            cache,
            store.clone(),
            background.clone(),
        ));

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

        let draining = background.clone();
        let (drain_started, drain_deadline) = tokio::sync::oneshot::channel::<()>();
        let serve = router.serve_with_incoming_shutdown(api::incoming(listener), async move {
            shutdown.await;
            tracing::info!("shutting down: NOT_SERVING, draining in-flight calls");
            set_health(&health, ServingStatus::NotServing).await;
            draining.cancel();
            let _ = drain_started.send(());
        });
        // Graceful shutdown waits for every open call; a client holding a stream open (a health
        // watch) must not keep the process alive past the grace period.
        let served = tokio::select! {
            served = serve => served,
            _ = async {
                let _ = drain_deadline.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("grace period over; closing the remaining connections");
                Ok(())
            }
        };

        background.cancel();
        stop_worker.cancel();
        stop_controls.cancel();
        let finished = async {
            let _ = working.await;
            if let Some(admin) = admin {
                let _ = admin.await;
            }
            let _ = tokio::join!(rebuilding, monitoring, listening, watching, polling);
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
        store.close().await;
        tracing::info!("suppressd stopped");
        served.context("serving gRPC")
    }
}

/// The gRPC server's TLS: a certificate and key, and for mTLS the CA that client certificates must
/// chain to (a client without one is refused at the handshake).
fn tls_config(settings: &ServeSettings) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &settings.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
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

/// SERVING when a check can be answered correctly: from a complete cache, or from the store.
async fn serving(cache: &Cache, store: &Store) -> ServingStatus {
    let cache_ready = matches!(cache.is_complete().await, Ok(true));
    if cache_ready || store.ping().await.is_ok() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_serving::<api::SuppressionServer>().await;
    health
        .set_service_status(
            <api::SuppressionServer as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health.set_service_status("", status).await;
}

async fn monitor_health(
    health: HealthReporter,
    cache: Cache,
    store: Store,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
        let status = serving(&cache, &store).await;
        if !shutdown.is_cancelled() {
            set_health(&health, status).await;
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
