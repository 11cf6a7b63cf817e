//! Whether this replica may trust the controls it holds: they are *fresh* while the last
//! confirmation that they are current (from the store, or from the snapshot published in Redis) is
//! younger than the bound (`--controls-stale-after`). A replica past the bound fails closed: a
//! halt or a revocation it has not seen may be in force, so no check it answers says "send"
//! (`Controls::when_stale`), health says NOT_SERVING, and a metric says why.
//!
//! The check path reads it with one clock read and one atomic load. It is computed there rather
//! than flagged by the poller, so a poller stuck on a store that hangs (or a replica frozen and
//! resumed) is stale on time, not when the poller next gets round to saying so.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Freshness {
    base: Instant,
    /// Milliseconds from `base` to the start of the last read that confirmed the controls, plus 1;
    /// 0 before the first.
    confirmed: AtomicU64,
    stale_after: Duration,
}

impl Freshness {
    pub(crate) fn new(stale_after: Duration) -> Freshness {
        Freshness {
            base: Instant::now(),
            confirmed: AtomicU64::new(0),
            stale_after,
        }
    }

    /// The controls held were current as of `at` (when the read that said so was sent).
    pub(crate) fn confirm(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.base).as_millis() as u64 + 1;
        self.confirmed.fetch_max(ms, Ordering::AcqRel);
    }

    /// How long since the controls were last confirmed (`None`: never).
    pub(crate) fn age(&self) -> Option<Duration> {
        let confirmed = self.confirmed.load(Ordering::Acquire).checked_sub(1)?;
        let since = self.base.elapsed().as_millis() as u64;
        Some(Duration::from_millis(since.saturating_sub(confirmed)))
    }

    pub(crate) fn is_stale(&self) -> bool {
        self.age().is_none_or(|age| age > self.stale_after)
    }

    pub(crate) fn stale_after(&self) -> Duration {
        self.stale_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn controls_turn_stale_past_the_bound_and_fresh_on_confirmation() {
        let fresh = Freshness::new(Duration::from_millis(50));
        assert!(fresh.is_stale(), "never confirmed");
        fresh.confirm(Instant::now());
        assert!(!fresh.is_stale());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(fresh.is_stale());
        fresh.confirm(Instant::now());
        assert!(!fresh.is_stale());
    }
}
