//! Assembles a process: pools, the listener, the gRPC server, the worker, the rebuilder, the health
//! monitor. [`Application::build`] binds (port 0 works) and exposes [`Application::local_addr`];
//! [`Application::run_until`] serves until a shutdown future resolves, which is what lets every test
//! start the real server.
//!
//! The tasks that run beside the server live in `background`, the secrets and TLS it loads first in
//! `secrets`; this file builds the process and serves.

mod background;
pub mod health;
mod secrets;

use crate::{
    admin::Admin,
    api::{self, Router},
    audit::AuditLog,
    auth::KeyStore,
    cache::{Cache, layouts::Announcer, near::NearCache},
    config::ServeSettings,
    domain::Clock,
    service::{
        ServiceSettings, Suppressions, Vault,
        controls::ControlsPoller,
        delivery::{Deliverer, DeliverySettings},
        rebuild::{RebuildTrigger, Rebuilder},
        waiters::Waiters,
    },
    store::Store,
    worker::{Worker, WorkerSettings},
};
use anyhow::Context;
use background::Background;
use secrets::Secrets;
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::ServerTlsConfig;
use tonic_health::{ServingStatus, server::HealthReporter};

/// How long a worker read blocks waiting for new entries (also bounds its shutdown).
const WORKER_BLOCK: Duration = Duration::from_millis(500);

pub struct Application {
    listener: TcpListener,
    router: Router,
    health: HealthReporter,
    store: Store,
    /// What runs beside the server, started by [`Application::run_until`].
    background: Background,
    grace: Duration,
    vault: Vault,
}

impl Application {
    /// Builds the process in the order its parts depend on one another: secrets and TLS (a bad one
    /// fails before anything connects), the store and Redis, the service over them, the worker and
    /// the rebuilder, then the listeners. Binds, but serves nothing until [`Self::run_until`].
    pub async fn build(settings: &ServeSettings, clock: Clock) -> anyhow::Result<Application> {
        settings.check()?;
        // One crypto provider for every TLS use in the process (STACK.md trap 1). Installing twice
        // (tests build many applications) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let secrets = Secrets::load(settings)?;
        let replica = settings.replica_name();
        let (store, cache) = connect(settings).await?;
        // Which bucket layouts to write and read, before the first write or check.
        let announcer = Arc::new(Announcer::new(cache.clone(), &replica));
        if let Err(e) = announcer.step().await {
            tracing::warn!(error = %e, "could not announce the bucket layouts yet; retrying");
        }
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
            secrets.pepper,
            Arc::new(secrets.keys.clone()),
            clock.clone(),
            ServiceSettings {
                durable_wait: settings.write_behind.durable_wait(),
                backlog_limit: settings.write_behind.backlog_limit,
                audit_log: secrets.audit_log.clone(),
                replica: replica.clone(),
                controls_poll: settings.controls.controls_poll,
                controls_stale_after: settings.controls.controls_stale_after,
                watch_poll: settings.changes.watch_poll,
                deadlines: settings.deadlines.rules()?,
                #[cfg(feature = "failpoints")]
                check_pause_failpoint: settings.failpoint_check_pause,
            },
            waiters.clone(),
            trigger.clone(),
        );
        // Halts must hold from the first check on: no store, no start.
        service
            .load_controls()
            .await
            .context("loading halts and mandatory declarations")?;
        // Opt-outs the store took while Redis could not, before the cache answers a check.
        if let Err(e) = service.reconcile().await {
            tracing::warn!(error = %e, "checks ask the store until the cache can be vouched for");
        }
        let controls = ControlsPoller::new(service.clone());
        let deliverer = Deliverer::new(
            service.clone(),
            DeliverySettings {
                interval: settings.changes.delivery_interval,
                failure_budget: settings.changes.delivery_failure_budget,
                backoff_base: settings.changes.delivery_backoff_base,
                backoff_max: settings.changes.delivery_backoff_max,
                request_timeout: settings.changes.delivery_timeout,
            },
            replica.clone(),
        )
        .context("the webhook client")?;
        let workers = workers(
            settings,
            &cache,
            &store,
            &clock,
            &secrets.audit_log,
            &replica,
        )
        .await?;
        let rebuilder = Rebuilder::new(cache.clone(), store.clone(), clock, replica.clone());
        let admin = match settings.admin_listen {
            Some(addr) => Some(Admin::bind(addr, cache.clone()).await?),
            None => None,
        };
        let http = bind_http(settings, &service, &secrets.keys).await?;
        let tls_on = secrets.tls.is_some();
        let vault = Vault::new(service.clone());
        let (listener, router, health) =
            bind_grpc(settings, service, secrets.keys.clone(), secrets.tls).await?;
        tracing::info!(
            addr = %listener.local_addr()?,
            replica,
            store = store.engine(),
            admin = ?admin.as_ref().map(Admin::local_addr),
            tls = tls_on,
            mtls = settings.auth.tls_client_ca.is_some(),
            authentication = !settings.auth.dev_no_auth,
            "suppressd ready to serve"
        );
        Ok(Application {
            listener,
            router,
            health,
            store,
            background: Background {
                http,
                keys: secrets.keys,
                cache,
                waiters,
                trigger,
                workers,
                rebuilder,
                controls,
                deliverer,
                controls_poll: settings.controls.controls_poll,
                trigger_flush: settings.controls.trigger_flush,
                deadlines_refresh: settings.deadlines.deadlines_refresh,
                near: (!settings.no_near_cache).then_some(near),
                announcer,
                admin,
            },
            grace: settings.shutdown_grace(),
            vault,
        })
    }

    /// The identifier vault: what delivers to a `needs_identifier` destination reveals with it.
    pub fn vault(&self) -> Vault {
        self.vault.clone()
    }

    /// This replica's near-cache, when it follows the feed (tests look at whether it serves).
    pub fn near_cache(&self) -> Option<Arc<NearCache>> {
        self.background.near.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The admin (metrics) port's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.background.admin.as_ref().map(Admin::local_addr)
    }

    /// The HTTP front's address, when it is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.background
            .http
            .as_ref()
            .map(|(l, _)| l.local_addr().expect("a bound listener has an address"))
    }

    /// Serves until `shutdown` resolves; then turns readiness NOT_SERVING, stops accepting, drains
    /// in-flight calls, and lets the worker finish its current batch.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Application {
            listener,
            router,
            health,
            store,
            background,
            grace,
            vault: _,
        } = self;
        let running = background.spawn(&health, &store).await;
        let served = serve(
            router,
            listener,
            shutdown,
            health,
            running.background(),
            grace,
        )
        .await;
        running.stop(grace).await;
        store.close().await;
        tracing::info!("suppressd stopped");
        served.context("serving gRPC")
    }
}

/// Serves gRPC on `listener` until `shutdown` resolves; then turns health NOT_SERVING, cancels
/// `draining` and waits for in-flight calls, at most `grace` longer.
async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    health: HealthReporter,
    draining: CancellationToken,
    grace: Duration,
) -> Result<(), tonic::transport::Error> {
    let (drain_started, drain_deadline) = tokio::sync::oneshot::channel::<()>();
    let serve = router.serve_with_incoming_shutdown(api::incoming(listener), async move {
        shutdown.await;
        tracing::info!("shutting down: NOT_SERVING, draining in-flight calls");
        health::set_readiness(&health, ServingStatus::NotServing).await;
        draining.cancel();
        let _ = drain_started.send(());
    });
    // Graceful shutdown waits for every open call; a client holding a stream open (a health
    // watch) must not keep the process alive past the grace period.
    tokio::select! {
        served = serve => served,
        _ = async {
            let _ = drain_deadline.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("grace period over; closing the remaining connections");
            Ok(())
        }
    }
}

/// Opens the durable store (running its migrations) and connects to Redis.
async fn connect(settings: &ServeSettings) -> anyhow::Result<(Store, Cache)> {
    let store = Store::connect(&settings.store_url)
        .await
        .context("opening the durable store")?;
    #[cfg(feature = "bench-baseline")]
    if settings.bench_connection_manager {
        let cache =
            Cache::connect_on_connection_manager(&settings.redis.redis_url, settings.cache_keys()?)
                .await
                .context("connecting to Redis")?;
        return Ok((store, cache));
    }
    let cache = Cache::connect(&settings.redis_topology()?, settings.cache_keys()?)
        .await
        .context("connecting to Redis")?;
    Ok((store, cache))
}

/// The write-behind workers, one per slot group, each joined to its group's consumer group.
async fn workers(
    settings: &ServeSettings,
    cache: &Cache,
    store: &Store,
    clock: &Clock,
    audit_log: &AuditLog,
    replica: &str,
) -> anyhow::Result<Vec<Worker>> {
    let joined = cache.keys().groups().iter().map(|g| {
        Worker::of_group(
            cache.clone(),
            store.clone(),
            clock.clone(),
            audit_log.clone(),
            replica,
            g.group(),
            WorkerSettings {
                batch: settings.write_behind.worker_batch as usize,
                block: WORKER_BLOCK,
                claim_idle: settings.write_behind.worker_claim_idle(),
                #[cfg(feature = "failpoints")]
                crash_after_commit: settings.failpoint_crash_after_commit,
            },
        )
    });
    futures_util::future::try_join_all(joined)
        .await
        .context("joining the write-behind consumer groups")
}

/// The gRPC server's router and health reporter, and its listener, bound.
async fn bind_grpc(
    settings: &ServeSettings,
    service: Suppressions,
    keys: KeyStore,
    tls: Option<ServerTlsConfig>,
) -> anyhow::Result<(TcpListener, Router, HealthReporter)> {
    let (router, health) = api::router(
        service,
        api::ApiSettings {
            keys,
            authenticate: !settings.auth.dev_no_auth,
            rate_limit_per_principal: settings.limits.rate_limit_per_principal,
            max_concurrent_checks: settings.limits.max_concurrent_checks as usize,
            max_concurrent_writes: settings.limits.max_concurrent_writes as usize,
            max_concurrent_audit_reads: settings.limits.max_concurrent_audit_reads as usize,
            tls,
        },
    )?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    Ok((listener, router, health))
}

/// Binds the public HTTP front, when one is configured.
async fn bind_http(
    settings: &ServeSettings,
    service: &Suppressions,
    key_store: &KeyStore,
) -> anyhow::Result<Option<(TcpListener, axum::Router)>> {
    Ok(match settings.http_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the HTTP front to {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "HTTP front listening");
            Some((
                listener,
                crate::http::router(
                    service.clone(),
                    key_store.clone(),
                    settings.http_public_url.clone(),
                ),
            ))
        }
        None => None,
    })
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
