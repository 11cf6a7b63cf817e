//! Failing fast while the store is down, on the check path.
//!
//! A check that cannot use the cache reads the store; when the store is down, each such read
//! waits out the pool's acquire timeout (seconds) before it can say `UNAVAILABLE`, longer than a
//! sender's deadline for a check. Once a read has failed, the breaker is open: every check-path
//! read gets [`WHILE_OPEN`] instead, and the first read that answers closes it. The answer while
//! the store is down is the same ("do not send"), only sooner; the first read after it returns
//! succeeds, since every read still tries.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

/// How long a check-path read may take while the store failed last time.
pub(crate) const WHILE_OPEN: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
pub(crate) struct StoreBreaker {
    open: AtomicBool,
}

impl StoreBreaker {
    /// The time a read may take beyond the pool's own limits: [`WHILE_OPEN`] while open.
    pub(crate) fn limit(&self) -> Option<Duration> {
        self.open.load(Ordering::Relaxed).then_some(WHILE_OPEN)
    }

    /// A read failed (or ran out of its limit): open.
    pub(crate) fn failed(&self) {
        self.open.store(true, Ordering::Relaxed);
    }

    /// A read answered: closed.
    pub(crate) fn answered(&self) {
        if self.open.load(Ordering::Relaxed) {
            self.open.store(false, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_opens_and_an_answer_closes() {
        let b = StoreBreaker::default();
        assert_eq!(b.limit(), None, "closed: the pool's own limits");
        b.failed();
        assert_eq!(b.limit(), Some(WHILE_OPEN));
        b.answered();
        assert_eq!(b.limit(), None);
    }
}
