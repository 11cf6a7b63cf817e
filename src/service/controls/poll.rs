//! How a replica follows the controls ([`ControlsPoller`]): every poll it asks the store for the
//! controls version and Redis for the version published there, at once, each within half the
//! staleness bound. Whichever answers confirms the controls it holds (or brings newer ones), so a
//! replica cut from the store keeps following changes through Redis, and one cut from both turns
//! stale (`fresh`) rather than answering by controls it cannot vouch for.
//!
//! The Redis read carries this replica's report: the version it answers by, which is what a change
//! waits on (`propagate`); a poll that moves to another version reports again at once. The store
//! read also says whether any opt-out is marked uncached, which is how the replica learns whether
//! it may trust its cache (`service::uncached`). So a poll is one statement and one round trip.

use super::super::{ServiceError, Suppressions};
use crate::{
    cache::controls::Seen,
    domain::{Millis, clock::system_now, control::Controls},
    telemetry::metrics::names,
};
use std::{sync::Arc, time::Duration};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

/// Reports older than this are deleted (replicas that are gone).
const FORGET_AFTER: Millis = 60_000;

impl Suppressions {
    /// Reads the controls in force from the store, answers by them from now on (unless newer ones
    /// were installed meanwhile), and publishes them in Redis for replicas cut from the store.
    pub(crate) async fn load_controls(&self) -> Result<i64, ServiceError> {
        self.load_from_store(false).await
    }

    /// [`Self::load_controls`]; `going_back`: the store's version is below the one held because the
    /// store was restored from a backup, and what it holds replaces everything, here and in Redis.
    async fn load_from_store(&self, going_back: bool) -> Result<i64, ServiceError> {
        let asked = Instant::now();
        let (version, controls) = self.inner.store.controls_in_force().await?;
        // Triggers keep counting where they were (their counters are this replica's, by id).
        let counts = &self.inner.trigger_counts;
        let controls = Arc::new(Controls::following(version, controls, counts));
        if going_back {
            tracing::warn!(
                version,
                "the store's controls version went back; answering by the store"
            );
            self.inner.controls.store(controls.clone());
            self.inner.controls_fresh.confirm(asked);
        } else {
            self.install(controls.clone(), asked);
        }
        self.publish(&controls, going_back).await;
        Ok(version)
    }

    /// Answers by `controls` from now on, unless those held are newer (two loads racing: the later
    /// read wins); they were current when the read that brought them was sent (`asked`).
    fn install(&self, controls: Arc<Controls>, asked: Instant) {
        self.inner.controls.rcu(|held| {
            if held.version > controls.version {
                held.clone()
            } else {
                controls.clone()
            }
        });
        self.inner.controls_fresh.confirm(asked);
    }

    /// Publishes `controls` in Redis if they are newer than what is there (or whatever is there,
    /// with `replace`). Best effort: a replica that cannot publish is seen as behind by the changes
    /// that wait on it.
    async fn publish(&self, controls: &Controls, replace: bool) {
        let encoded = controls.encode();
        if let Err(e) = self
            .inner
            .cache
            .publish_controls(controls.version, &encoded, replace)
            .await
        {
            tracing::debug!(error = %e, "controls not published in Redis");
        }
    }

    /// Installs the snapshot published in Redis if it is newer than the controls held; `true` when
    /// it could be read (the controls held are then confirmed current).
    async fn load_published(&self, asked: Instant) -> bool {
        let Ok(Some((version, text))) = self.inner.cache.published_controls().await else {
            return false;
        };
        if version <= self.controls().version {
            self.inner.controls_fresh.confirm(asked);
            return true;
        }
        match Controls::decode_following(version, &text, &self.inner.trigger_counts) {
            Ok(controls) => {
                self.install(Arc::new(controls), asked);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, version, "the controls published in Redis do not decode");
                false
            }
        }
    }

    /// Tells the other replicas which controls version this one answers by, and since when it
    /// knows that version is current.
    pub(super) async fn report_seen(&self, version: i64, confirmed_at: Millis) {
        let seen = self.seen(version, confirmed_at);
        if let Err(e) = self.inner.cache.report_controls_seen(&seen).await {
            tracing::debug!(error = %e, "controls version not reported");
        }
    }

    /// This replica's report, as of now.
    fn seen(&self, version: i64, confirmed_at: Millis) -> Seen {
        let settings = &self.inner.settings;
        Seen {
            replica: settings.replica.clone(),
            version,
            confirmed_at,
            every: settings.controls_poll.as_millis() as Millis,
            reported_at: system_now(),
            stale_after: settings.controls_stale_after.as_millis() as Millis,
        }
    }

    /// TESTS ONLY: what the test cut this replica's controls from (store, Redis).
    #[cfg(feature = "failpoints")]
    async fn cut(&self) -> (bool, bool) {
        let replica = &self.inner.settings.replica;
        self.inner.cache.controls_cut_failpoint(replica).await
    }

    #[cfg(not(feature = "failpoints"))]
    async fn cut(&self) -> (bool, bool) {
        (false, false)
    }
}

/// Keeps a replica's controls in step with the store and Redis: a loop around
/// [`ControlsPoller::step`].
pub(crate) struct ControlsPoller {
    service: Suppressions,
    /// When (wall clock) the controls held were last confirmed current.
    confirmed_at: Millis,
}

/// Where a poll confirmed the controls from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Followed {
    Store,
    /// The store did not answer; the snapshot published in Redis did.
    RedisOnly,
}

impl ControlsPoller {
    pub(crate) fn new(service: Suppressions) -> Self {
        ControlsPoller {
            service,
            confirmed_at: system_now(),
        }
    }

    /// The service it keeps in step (health asks it whether its controls are stale).
    pub(crate) fn service(&self) -> Suppressions {
        self.service.clone()
    }

    /// One poll: the store's version and Redis's published version, asked at once; reloads from
    /// whichever has newer controls; reports what this replica answers by. An error when neither
    /// confirmed the controls (they turn stale once the bound passes).
    pub(crate) async fn step(&mut self) -> Result<Followed, ServiceError> {
        let service = &self.service;
        let asked = Instant::now();
        let asked_wall = system_now();
        let (cut_store, cut_redis) = service.cut().await;
        let limit = service.inner.settings.controls_stale_after / 2;
        let late = |what: &str| ServiceError::Unavailable {
            message: format!("{what} did not answer within {limit:?}"),
            cause: None,
        };
        let doubts = service.inner.doubt.mark();
        let reported = service.controls().version;
        let from_store = async {
            if cut_store {
                return Err(late("the store (failpoint)"));
            }
            let held = reported;
            let read = service.inner.store.controls_version_and_marks();
            let (stored, marked) = timeout(limit, read)
                .await
                .map_err(|_| late("the store"))??;
            // Below the version held: a change loaded meanwhile (read again and it moved on), or a
            // store restored from a backup (it has not).
            let went_back = stored < held
                && timeout(limit, service.inner.store.controls_version())
                    .await
                    .map_err(|_| late("the store"))??
                    < held;
            if stored == held {
                service.inner.controls_fresh.confirm(asked);
            } else {
                timeout(limit, service.load_from_store(went_back))
                    .await
                    .map_err(|_| late("the store"))??;
            }
            Ok(marked)
        };
        let from_redis = async {
            if cut_redis {
                // The failpoint cuts the published snapshot only: the report still goes out.
                service.report_seen(reported, self.confirmed_at).await;
                return None;
            }
            let seen = service.seen(reported, self.confirmed_at);
            let version = service.inner.cache.report_and_read_controls_version(&seen);
            timeout(limit, version).await.ok()?.ok()
        };
        let (stored, published) = tokio::join!(from_store, from_redis);
        if !cut_redis {
            service.polled(doubts, stored.as_ref().ok().copied(), published.is_some());
        }
        let mut followed = stored.as_ref().ok().map(|_| Followed::Store);
        let held = service.controls();
        let store_read = stored.is_ok();
        match published {
            Some(Some(version)) if version == held.version => {
                service.inner.controls_fresh.confirm(asked);
                followed.get_or_insert(Followed::RedisOnly);
            }
            Some(Some(version)) if version > held.version => {
                // Newer in Redis: a change this poll's store read just missed, or, if the store
                // still says less, a snapshot from before the store was restored from a backup,
                // which the store's controls replace.
                let store_behind = store_read
                    && matches!(
                        timeout(limit, service.inner.store.controls_version()).await,
                        Ok(Ok(now)) if now < version
                    );
                if store_behind {
                    service.publish(&held, true).await;
                } else if service.load_published(asked).await {
                    followed.get_or_insert(Followed::RedisOnly);
                }
            }
            // Nothing published, or older than what this replica read from the store (Redis
            // restarted empty or went back in time): it says so there. It confirms nothing.
            Some(_) if store_read => service.publish(&held, false).await,
            Some(_) | None => {}
        }
        if followed.is_some() {
            self.confirmed_at = asked_wall;
        }
        if service.controls().version != reported {
            service
                .report_seen(service.controls().version, self.confirmed_at)
                .await;
        }
        let fresh = &service.inner.controls_fresh;
        let age = fresh.age().unwrap_or(Duration::MAX);
        metrics::gauge!(names::CONTROLS_AGE).set(age.as_secs_f64().min(1e9));
        metrics::gauge!(names::CONTROLS_STALE).set(if fresh.is_stale() { 1.0 } else { 0.0 });
        match followed {
            Some(f) => Ok(f),
            None => Err(stored.err().unwrap_or_else(|| late("the store"))),
        }
    }

    /// Polls every `every` until shutdown; logs each change of where the controls come from.
    pub(crate) async fn run(mut self, every: Duration, shutdown: CancellationToken) {
        let mut last: Option<Followed> = Some(Followed::Store);
        let mut forgot = tokio::time::Instant::now();
        loop {
            // The first step at once: the report lets changes wait for this replica from its start.
            let now = self.step().await;
            match (&now, last) {
                (Ok(f), l) if Some(*f) == l => {}
                (Ok(Followed::Store), _) => {
                    tracing::info!("controls are read from the store again")
                }
                (Ok(Followed::RedisOnly), _) => tracing::warn!(
                    "the store does not answer; following the controls through Redis"
                ),
                (Err(e), Some(_)) => tracing::error!(
                    error = %e,
                    stale_after = ?self.service.inner.controls_fresh.stale_after(),
                    "controls cannot be confirmed from the store or Redis; past the bound no \
                     check answers send"
                ),
                (Err(_), None) => {}
            }
            last = now.ok();
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
                .filter(|s| now - s.reported_at > FORGET_AFTER)
                .map(|s| s.replica)
                .collect();
            let _ = cache.forget_controls_seen(&gone).await;
        }
    }
}
