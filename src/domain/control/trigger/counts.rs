//! What a halt trigger counts on one replica ([`TriggerCounts`]: relaxed atomics a check bumps
//! through the control index, with no lock), where every snapshot of the controls finds them
//! ([`CountsById`]), and the figures a window holds ([`Figures`]), which the trigger's rule reads.

use crate::domain::ReceiptId;
use serde::Serialize;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

/// What a window held: checks of notices the trigger names, and opt-outs (complaints among
/// them) naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub(crate) struct Figures {
    pub(crate) checks: u64,
    pub(crate) opt_outs: u64,
    pub(crate) complaints: u64,
}

impl Figures {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Figures::default()
    }
}

/// One replica's counts for one trigger since its last flush. Shared by every snapshot of the
/// controls that holds the trigger, so a check still reading an older snapshot counts too.
#[derive(Debug, Default)]
pub(crate) struct TriggerCounts {
    checks: AtomicU64,
    opt_outs: AtomicU64,
    complaints: AtomicU64,
}

/// Counters are state, not part of what a trigger is: two triggers alike in every setting are
/// equal whatever they counted.
impl PartialEq for TriggerCounts {
    fn eq(&self, _: &TriggerCounts) -> bool {
        true
    }
}

impl Eq for TriggerCounts {}

impl TriggerCounts {
    pub(crate) fn check(&self) {
        self.checks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn opt_out(&self, complaint: bool) {
        self.opt_outs.fetch_add(1, Ordering::Relaxed);
        if complaint {
            self.complaints.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What was counted since the last take, leaving zero. Relaxed is enough: a count landing
    /// during the take goes to this take or the next, never to neither.
    pub(crate) fn take(&self) -> Figures {
        Figures {
            checks: self.checks.swap(0, Ordering::Relaxed),
            opt_outs: self.opt_outs.swap(0, Ordering::Relaxed),
            complaints: self.complaints.swap(0, Ordering::Relaxed),
        }
    }
}

/// This replica's counters of each trigger, by id. Every snapshot of the controls that holds a
/// trigger takes its counters from here, so snapshots built at once (a poll and a change racing,
/// or two versions landing together) share them, and a check that counts in one that is about to
/// be replaced counts where the next flush looks. Weak: the counters go with the last snapshot
/// that holds them. Locked only when a snapshot is built, never by a check.
#[derive(Debug, Default)]
pub(crate) struct CountsById(Mutex<HashMap<ReceiptId, Weak<TriggerCounts>>>);

impl CountsById {
    /// The counters of trigger `id`: those a live snapshot holds, or new ones.
    pub(crate) fn of(&self, id: ReceiptId) -> Arc<TriggerCounts> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(counts) = map.get(&id).and_then(Weak::upgrade) {
            return counts;
        }
        map.retain(|_, held| held.strong_count() > 0);
        let counts = Arc::default();
        map.insert(id, Arc::downgrade(&counts));
        counts
    }
}
