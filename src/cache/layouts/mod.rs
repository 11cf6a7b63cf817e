//! Changing the bucket layout (the layout version or `--cache-bucket-bits`, both part of every
//! bucket's name) while replicas of both layouts serve, without a false send: which layouts this
//! replica writes, which one its checks read, and how a new layout becomes readable.
//!
//! **What a reader may trust.** Each slot group keeps a small hash of layouts
//! (`GroupKeys::layouts`): `ok:{generation}` for a layout whose buckets hold every active
//! suppression of the group, `fill:{generation}` for one being filled. Every script that writes a bucket field (an opt-out, a merge of committed records, a
//! retraction) writes the subject's bucket of each layout it was given and, in the same atomic
//! call, removes from the hash every layout it was not given. So, for a layout `L` found `ok`:
//! every write that Redis ran since `L` was filled wrote `L`. A check reads its buckets and then,
//! in the same pipeline (run in order on one node), `L`'s entry; a near-cache checks it after it
//! copied the buckets. Found `ok` after the read, every write before the read reached `L`, or came
//! before the fill, which the fill covers; anything else makes the bucket incomplete and the check
//! asks the store. Safety rests on that alone, not on clocks, announcements or timing.
//!
//! **The fill covers what came before.** A layout is made `ok` by a rebuild (after a flush, every
//! layout this replica writes) or by a fill of one layout under the group's current generation
//! (`service::rebuild`): its buckets are emptied, then it is set `fill`, then every active record
//! in the store is copied in (with the rebuild's final pass over recent commits and endings), then
//! every entry still in the write-behind stream, then its buckets are marked and it is set `ok`
//! only if it is still `fill` under that generation. A write before `fill` that missed the layout
//! is either committed to the store by then (the copy has it), or still in the stream (the worker
//! deletes an entry only after it has merged it back into the cache, so the stream pass has it,
//! or a write after `fill` did). A write after `fill` wrote the layout, or removed its entry and
//! the fill comes to nothing. A flush removes the generation, and the marking fails as a rebuild's
//! does.
//!
//! **Announcements make it happen.** Every second each replica writes, under its name, in the
//! deployment-wide `Keys::layout_replicas`, the layout it is configured with (*wants*), those its
//! checks read and those it writes, stamped with Redis's clock; an entry not renewed for `LIVE_FOR` is ignored, and removed later. A replica writes its
//! own layouts and every layout a live replica wants or reads (`Plan`). It fills its configured
//! layout once every live replica announces that it writes it (and, for `LIVE_FOR`, since it
//! started, no replica with a near-cache lease was silent: an older release, which writes only its
//! own layout), and reads it once it is
//! `ok`; until then it reads a layout that is `ok` (the one the others read). Nothing waits for
//! another replica to *read* anything, so two replicas configured alike fill once and both switch;
//! a replica whose announcement lapsed is no longer written for, its layout is dropped by the next
//! write, and it falls back to the store until it is written for again.
//!
//! The change feed carries fields and values, which no bucket layout of this version changes, so a
//! near-cache's copy holds the same records whichever `ok` layout it was copied from; writes feed
//! a field's value from an `ok` layout, and skip a change number (every near-cache loads again)
//! when they write none.

mod announce;
mod validity;

pub use announce::Announcer;
pub(crate) use validity::Validity;

use super::layout::{Group, Keys, Layout};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often a replica announces its layouts (and learns the others').
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// How long an announcement counts without being renewed (Redis's clock).
pub(crate) const LIVE_FOR: Duration = Duration::from_secs(5);

/// The layouts one replica writes and reads now.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Every layout a write goes to, this replica's configured one first, with its key names.
    pub(crate) writes: Vec<(Layout, Keys)>,
    /// By slot group, the layout checks and the near-cache read.
    pub(crate) reads: Vec<(Layout, Keys)>,
}

impl Plan {
    /// The layouts written, by name, in the order of [`Plan::writes`].
    pub(crate) fn write_names(&self) -> Vec<String> {
        self.writes.iter().map(|(l, _)| l.to_string()).collect()
    }

    /// The layout a group's checks read.
    pub(crate) fn read(&self, group: Group) -> &(Layout, Keys) {
        &self.reads[group as usize]
    }
}

/// This replica's layouts: its configured one and the current `Plan`, which the [`Announcer`]
/// replaces as replicas come and go and layouts are filled.
pub struct Layouts {
    configured: Keys,
    plan: RwLock<Arc<Plan>>,
    /// What the announcer's last step learnt.
    view: Mutex<announce::View>,
    /// When this replica started, and when it last saw a replica answering from a near-cache
    /// without announcing: it fills no layout within [`LIVE_FOR`] of either.
    started: Instant,
    silent_seen: Mutex<Option<Instant>>,
}

impl Layouts {
    /// Writing and reading only the configured layout, until the first announcement says more.
    pub(crate) fn new(configured: Keys) -> Layouts {
        let own = (configured.layout(), configured.clone());
        let plan = Plan {
            writes: vec![own.clone()],
            reads: vec![own; configured.group_count() as usize],
        };
        Layouts {
            configured,
            plan: RwLock::new(Arc::new(plan)),
            view: Mutex::default(),
            started: Instant::now(),
            silent_seen: Mutex::default(),
        }
    }

    /// The configured layout.
    pub fn configured(&self) -> Layout {
        self.configured.layout()
    }

    pub(crate) fn plan(&self) -> Arc<Plan> {
        self.plan.read().expect("plan lock").clone()
    }

    fn replace(&self, plan: Plan) {
        *self.plan.write().expect("plan lock") = Arc::new(plan);
    }

    /// Key names for a layout this build can write (same prefix and slot groups), if it can.
    pub(crate) fn keys_for(&self, layout: Layout) -> Option<Keys> {
        self.configured.for_layout(layout)
    }
}
