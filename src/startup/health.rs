//! What `grpc.health.v1.Health` says, and why there are two answers.
//!
//! **Readiness** ("" — the server as a whole —, `readiness` and `suppress.v1.Suppression`) follows
//! the dependencies: SERVING while a check can be answered correctly (a complete cache, or a
//! reachable store), NOT_SERVING when neither can be read and from the moment a drain begins. A load
//! balancer or a Kubernetes readiness probe uses it to stop sending calls this replica would refuse.
//!
//! **Liveness** (`liveness`) says only that the process and its runtime answer: it is SERVING from
//! the moment the server serves until the process exits, whatever Redis and the store do, and it
//! stays SERVING through a drain. A liveness probe restarts what fails it; restarting every replica
//! because Redis is down would only add cold starts to an outage the replicas already ride out (they
//! recover by themselves when it returns), and killing a draining replica would cut its drain short.
//! A process whose runtime is wedged does not answer at all, and the probe's timeout catches that.
//!
//! This module owns every status set on the reporter; nothing else calls it.

use crate::{api, cache::Cache, service::Suppressions, store::Store};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

/// The health service name of liveness: for a liveness probe or a container HEALTHCHECK.
pub const LIVENESS: &str = "liveness";
/// A name of readiness beside "" and `suppress.v1.Suppression`, so that a probe can say what it asks.
pub const READINESS: &str = "readiness";

/// How often readiness is re-evaluated.
const EVERY: Duration = Duration::from_millis(500);

/// Sets liveness and readiness as the cache and store find them now, then follows the dependencies
/// in a task of its own until `shutdown`.
pub(super) async fn follow(
    reporter: &HealthReporter,
    cache: Cache,
    store: Store,
    service: Suppressions,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    let deps = (cache, store, service);
    let status = ready(&deps).await;
    set_readiness(reporter, status).await;
    tokio::spawn(monitor(reporter.clone(), status, deps, shutdown))
}

/// SERVING when a check can be answered correctly: from a complete cache, or from the store, and
/// by controls this replica can vouch for (stale ones let nothing go: `service::controls`).
async fn ready((cache, store, service): &(Cache, Store, Suppressions)) -> ServingStatus {
    if service.controls_stale() {
        return ServingStatus::NotServing;
    }
    let cache_ready = matches!(cache.is_complete().await, Ok(true));
    if cache_ready || store.ping().await.is_ok() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Sets readiness: `suppress.v1.Suppression`, `readiness` and the server as a whole (""). Liveness
/// is left alone, also when a drain turns readiness off.
pub(super) async fn set_readiness(reporter: &HealthReporter, status: ServingStatus) {
    let suppression = <api::SuppressionServer as tonic::server::NamedService>::NAME;
    for name in [suppression, READINESS, ""] {
        reporter.set_service_status(name, status).await;
    }
}

/// Follows the dependencies and sets readiness when it changes, and only then: every set is a
/// message to each `Health/Watch` stream, which should hear of changes, not of polls.
async fn monitor(
    reporter: HealthReporter,
    mut last: ServingStatus,
    deps: (Cache, Store, Suppressions),
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
        let status = ready(&deps).await;
        if status != last && !shutdown.is_cancelled() {
            set_readiness(&reporter, status).await;
            last = status;
        }
    }
}
