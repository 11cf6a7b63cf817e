//! Failing fast while the store is down, on the check path.
//!
//! A check that cannot use the cache reads the store; when the store is down, each such read
//! waits out the pool's acquire timeout (seconds) before it can say `UNAVAILABLE`, longer than a
//! sender's deadline for a check. After a read fails, the breaker is open: for the next
//! [`OPEN_FOR`], check-path reads fail at once with `UNAVAILABLE`, and once per interval a probe
//! in the background (not a caller's read) asks the store and closes the breaker when it
//! answers. The answer is the same as waiting would give ("do not send"); only sooner.

use std::{
    sync::{
        LazyLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// How long after a failure reads fail at once, and how often one probe tries meanwhile.
pub(crate) const OPEN_FOR: Duration = Duration::from_millis(500);

/// The process's start, so that instants fit an atomic.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// What a check-path read may do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    Through,
    /// Fail at once; `probe`: this caller starts the background probe.
    Refused {
        probe: bool,
    },
}

#[derive(Debug, Default)]
pub(crate) struct StoreBreaker {
    open: AtomicBool,
    /// While open: when the next probe may go (ms since [`EPOCH`]).
    next_probe: AtomicU64,
}

impl StoreBreaker {
    /// Whether this read may go to the store: always while closed. While open it may not, and the
    /// first refused read after each interval is told to start the probe.
    pub(crate) fn pass(&self) -> Pass {
        if !self.open.load(Ordering::Acquire) {
            return Pass::Through;
        }
        let now = now_ms();
        let due = self.next_probe.load(Ordering::Acquire);
        let probe = now >= due
            && self
                .next_probe
                .compare_exchange(
                    due,
                    now + OPEN_FOR.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
        Pass::Refused { probe }
    }

    /// A read failed: open (again) for [`OPEN_FOR`].
    pub(crate) fn failed(&self) {
        self.next_probe
            .store(now_ms() + OPEN_FOR.as_millis() as u64, Ordering::Release);
        self.open.store(true, Ordering::Release);
    }

    /// A read answered: closed.
    pub(crate) fn answered(&self) {
        if self.open.load(Ordering::Acquire) {
            self.open.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_lets_every_read_through() {
        let b = StoreBreaker::default();
        assert_eq!(b.pass(), Pass::Through);
        assert_eq!(b.pass(), Pass::Through);
    }

    #[test]
    fn open_refuses_and_asks_for_one_probe_per_interval() {
        let b = StoreBreaker::default();
        b.failed();
        assert_eq!(
            b.pass(),
            Pass::Refused { probe: false },
            "at once after a failure"
        );
        std::thread::sleep(OPEN_FOR + Duration::from_millis(20));
        assert_eq!(b.pass(), Pass::Refused { probe: true }, "the probe's turn");
        assert_eq!(
            b.pass(),
            Pass::Refused { probe: false },
            "one probe per interval"
        );
        b.answered();
        assert_eq!(b.pass(), Pass::Through, "closed again");
    }
}
