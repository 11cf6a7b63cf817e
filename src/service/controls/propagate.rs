//! "In force on every replica when the call returns, or the caller knows": after its commit, a
//! change to a control loads and publishes the new controls, then waits until every live replica
//! reports (in Redis) that it answers by them, and says which did ([`Propagation`]).
//!
//! The wait is bounded by the slowest live replica's staleness bound plus two of its polls. That
//! bound is what makes an unconfirmed answer safe to act on: a replica still behind when it passes
//! last confirmed its controls before the change was published, so by then it is stale and answers
//! no check with "send" (`fresh`). A replica that stopped reporting for its bound is gone (or stale
//! by the same reckoning) and is not waited for.

use super::super::{ServiceError, Suppressions};
use crate::{
    cache::controls::Seen,
    domain::{Millis, clock::system_now},
    telemetry::metrics::names,
};
use std::time::Duration;

/// How often a waiting change looks at the reports.
const PROPAGATION_POLL: Duration = Duration::from_millis(2);

/// How far a change to a control had reached when its call returned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Propagation {
    /// The replicas that answer by the change: this one first, then the others by name.
    pub(crate) confirmed: Vec<String>,
    /// Live replicas that had not loaded it within the bound; they answer no check with "send"
    /// until they do.
    pub(crate) unconfirmed: Vec<String>,
    /// Why the other replicas could not be asked at all (Redis unreadable), if so.
    pub(crate) unknown: Option<String>,
}

impl Propagation {
    /// Every live replica answers by the change.
    pub(crate) fn is_confirmed(&self) -> bool {
        self.unconfirmed.is_empty() && self.unknown.is_none()
    }
}

impl Suppressions {
    /// After a change committed: load and publish it here, then wait until every live replica has
    /// it, or the bound passed.
    pub(super) async fn propagate(&self) -> Result<Propagation, ServiceError> {
        let version = self.load_controls().await?;
        let settings = &self.inner.settings;
        let me = settings.replica.clone();
        self.report_seen(version, system_now()).await;
        let started = tokio::time::Instant::now();
        let outcome = loop {
            let seen = match self.inner.cache.controls_seen().await {
                Ok(seen) => seen,
                Err(e) => {
                    // Nobody can be asked. After this wait every replica has read the store since
                    // the commit, or is stale.
                    let own = settings.controls_stale_after + settings.controls_poll * 2;
                    tokio::time::sleep(own).await;
                    break Propagation {
                        confirmed: vec![me],
                        unconfirmed: Vec::new(),
                        unknown: Some(format!(
                            "Redis is unreadable, so the other replicas could not be asked: {e}"
                        )),
                    };
                }
            };
            let now = system_now();
            let live: Vec<&Seen> = seen
                .iter()
                .filter(|s| s.replica != me && now - s.reported_at < s.stale_after.max(4 * s.every))
                .collect();
            let (mut ok, mut behind): (Vec<&Seen>, Vec<&Seen>) =
                live.iter().copied().partition(|s| s.version >= version);
            let bound: Millis = live
                .iter()
                .map(|s| s.stale_after + 2 * s.every)
                .max()
                .unwrap_or(0);
            if behind.is_empty() || started.elapsed() >= Duration::from_millis(bound as u64) {
                ok.sort_by(|a, b| a.replica.cmp(&b.replica));
                behind.sort_by(|a, b| a.replica.cmp(&b.replica));
                let names =
                    |list: Vec<&Seen>| list.into_iter().map(|s| s.replica.clone()).collect();
                let mut confirmed = vec![me];
                confirmed.extend(names(ok));
                break Propagation {
                    confirmed,
                    unconfirmed: names(behind),
                    unknown: None,
                };
            }
            tokio::time::sleep(PROPAGATION_POLL).await;
        };
        let label = if outcome.is_confirmed() {
            "confirmed"
        } else {
            tracing::warn!(
                unconfirmed = ?outcome.unconfirmed,
                unknown = ?outcome.unknown,
                version,
                "a control change is committed but not confirmed by every live replica; those \
                 answer no check with send until they load it"
            );
            "unconfirmed"
        };
        metrics::counter!(names::CONTROL_PROPAGATIONS, "outcome" => label).increment(1);
        Ok(outcome)
    }
}
