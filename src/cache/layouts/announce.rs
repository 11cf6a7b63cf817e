//! The announcements (see the parent module): each replica says, every [`ANNOUNCE_EVERY`], which
//! layout it wants, reads and writes, and from everyone's live announcements and the groups'
//! layout hashes it plans its own writes and reads. A loop around [`Announcer::step`].

use super::{ANNOUNCE_EVERY, LIVE_FOR, Layouts, Plan, Validity};
use crate::cache::{
    Cache, CacheError, Context,
    layout::{Group, Keys, Layout},
    near::LEASE,
};
use redis::Script;
use std::{
    sync::{Arc, LazyLock},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

/// An entry not renewed for this long is removed from the registry (it stopped counting long
/// before, after [`LIVE_FOR`]).
const FORGET_AFTER: u64 = 60_000;

/// KEYS: registry. ARGV: replica, entry, forget after (ms). Writes the entry stamped with Redis's
/// clock, removes entries long silent, returns the clock (ms) and the registry.
static ANNOUNCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{}
local now = now_ms()
redis.call('HSET', KEYS[1], ARGV[1], now .. '|' .. ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local at = tonumber(string.match(all[i + 1], '^(%d+)|') or '')
  if at == nil or at + tonumber(ARGV[3]) < now then redis.call('HDEL', KEYS[1], all[i]) end
end
return {{now, redis.call('HGETALL', KEYS[1])}}
",
        crate::cache::layout::NOW_MS_FN
    ))
});

/// KEYS: a group's near-cache leases. Returns Redis's clock (ms) and the leases.
static LEASES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}\nreturn {{now_ms(), redis.call('HGETALL', KEYS[1])}}",
        crate::cache::layout::NOW_MS_FN
    ))
});

/// One replica's live announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announced {
    pub(crate) replica: String,
    pub(crate) wants: Option<Layout>,
    pub(crate) reads: Vec<Layout>,
    pub(crate) writes: Vec<Layout>,
}

/// What the last step learnt: the live announcements, the replicas that answer from a near-cache
/// but announce nothing (an older release), and the groups' layout hashes.
#[derive(Debug, Default)]
pub(crate) struct View {
    pub(crate) live: Vec<Announced>,
    pub(crate) silent: Vec<String>,
    pub(crate) validity: Validity,
}

/// Announces this replica's layouts and plans them (see the module doc).
pub struct Announcer {
    cache: Cache,
    replica: String,
}

impl Announcer {
    pub fn new(cache: Cache, replica: &str) -> Announcer {
        Announcer {
            cache,
            replica: replica.to_owned(),
        }
    }

    fn layouts(&self) -> &Layouts {
        self.cache.layouts()
    }

    /// Reads the layout hashes (adopting a cache built before them), plans reads and writes,
    /// announces them, and plans again with what the others announced.
    pub async fn step(&self) -> Result<(), CacheError> {
        let layouts = self.layouts();
        let mut validity = self.cache.validity().await?;
        let mut adopted = false;
        for g in 0..self.cache.keys().group_count() {
            if validity.missing(g) {
                adopted |= self.cache.adopt_layout(g).await?;
            }
        }
        if adopted {
            validity = self.cache.validity().await?;
        }
        let others = layouts.view().live.clone();
        self.install(self.plan(&validity, &others));
        let mut announced = self.announce(&layouts.plan()).await?;
        let replanned = self.plan(&validity, &announced);
        if replanned.write_names() != layouts.plan().write_names() {
            // Writes take in the newcomers' layouts before this replica says it writes them.
            self.install(replanned);
            announced = self.announce(&layouts.plan()).await?;
        }
        let silent = self.silent(&announced).await?;
        if !silent.is_empty() {
            *layouts.silent_seen.lock().expect("silent lock") = Some(Instant::now());
        }
        *layouts.view() = View {
            live: announced,
            silent,
            validity,
        };
        Ok(())
    }

    /// Puts a plan in force, saying when a group's checks turn to another layout.
    fn install(&self, plan: Plan) {
        let layouts = self.layouts();
        let before = layouts.plan();
        for (g, (read, _)) in plan.reads.iter().enumerate() {
            if before.reads[g].0 != *read {
                tracing::info!(group = g, layout = %read, configured = %layouts.configured(),
                    "checks read bucket layout {read}");
            }
        }
        layouts.replace(plan);
    }

    /// Reads: the configured layout where it is `ok`, else an `ok` one this build can read
    /// (preferring what the others read), else the configured one (whose checks go to the store).
    /// Writes: the configured layout, those read, and every layout a live replica wants or reads.
    fn plan(&self, validity: &Validity, live: &[Announced]) -> Plan {
        let layouts = self.layouts();
        let configured = layouts.configured();
        let own = (configured, layouts.configured.clone());
        let with_keys = |l: Layout| layouts.keys_for(l).map(|k| (l, k));
        let reads: Vec<(Layout, Keys)> = (0..self.cache.keys().group_count())
            .map(|g: Group| {
                if validity.ok(g, configured) {
                    return own.clone();
                }
                let ok = validity.ok_layouts(g);
                let read_by_others = |l: &Layout| {
                    live.iter()
                        .filter(|a| a.replica != self.replica && a.reads.contains(l))
                        .count()
                };
                ok.into_iter()
                    .filter_map(with_keys)
                    .max_by_key(|(l, _)| read_by_others(l))
                    .unwrap_or_else(|| own.clone())
            })
            .collect();
        let mut writes = vec![own.clone()];
        let needed = reads.iter().map(|(l, _)| *l).chain(
            live.iter()
                .filter(|a| a.replica != self.replica)
                .flat_map(|a| a.wants.iter().chain(&a.reads).copied()),
        );
        for layout in needed {
            if writes.iter().any(|(l, _)| *l == layout) {
                continue;
            }
            match with_keys(layout) {
                Some(w) => writes.push(w),
                None => tracing::warn!(%layout, "a replica reads or wants a bucket layout this \
                    release cannot write: that layout is dropped by every write from here"),
            }
        }
        Plan { writes, reads }
    }

    /// Writes this replica's announcement; returns the live ones (this one's included).
    async fn announce(&self, plan: &Plan) -> Result<Vec<Announced>, CacheError> {
        let names = |ls: &mut dyn Iterator<Item = Layout>| {
            let mut v: Vec<String> = ls.map(|l| l.to_string()).collect();
            v.dedup();
            v.join(",")
        };
        let entry = format!(
            "{}|{}|{}",
            self.layouts().configured(),
            names(&mut plan.reads.iter().map(|(l, _)| *l)),
            names(&mut plan.writes.iter().map(|(l, _)| *l)),
        );
        let (now, registry): (u64, Vec<(String, String)>) = ANNOUNCE
            .key(self.cache.keys().layout_replicas())
            .arg(&self.replica)
            .arg(entry)
            .arg(FORGET_AFTER)
            .invoke_async(&mut self.cache.conn())
            .await
            .context("announcing the layouts")?;
        Ok(parse_registry(registry, now))
    }

    /// The replicas holding a live near-cache lease in some group that announce no layout.
    async fn silent(&self, live: &[Announced]) -> Result<Vec<String>, CacheError> {
        let mut silent = Vec::new();
        for g in self.cache.keys().groups() {
            let (now, leases): (u64, Vec<(String, String)>) = LEASES
                .key(g.near_replicas())
                .invoke_async(&mut self.cache.conn())
                .await
                .context("reading the near-cache leases")?;
            for (replica, value) in leases {
                let renewed = value.split(':').nth(1).and_then(|v| v.parse::<u64>().ok());
                let leased = renewed.is_some_and(|at| at + LEASE.as_millis() as u64 > now);
                if leased
                    && !live.iter().any(|a| a.replica == replica)
                    && !silent.contains(&replica)
                {
                    silent.push(replica);
                }
            }
        }
        Ok(silent)
    }

    /// Announces until `stop`, then withdraws the announcement.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Err(e) = self.step().await {
                tracing::warn!(error = %e, "could not announce the bucket layouts; retrying");
            }
            tokio::select! {
                () = tokio::time::sleep(ANNOUNCE_EVERY) => {}
                () = stop.cancelled() => break,
            }
        }
        let _ = redis::cmd("HDEL")
            .arg(self.cache.keys().layout_replicas())
            .arg(&self.replica)
            .query_async::<()>(&mut self.cache.conn())
            .await;
    }
}

/// The live entries of the registry (`at|wants|reads|writes`, renewed within [`LIVE_FOR`]).
fn parse_registry(registry: Vec<(String, String)>, now: u64) -> Vec<Announced> {
    let layouts =
        |s: &str| -> Vec<Layout> { s.split(',').filter_map(|l| l.parse().ok()).collect() };
    registry
        .into_iter()
        .filter_map(|(replica, value)| {
            let mut parts = value.split('|');
            let at: u64 = parts.next()?.parse().ok()?;
            if at + (LIVE_FOR.as_millis() as u64) <= now {
                return None;
            }
            Some(Announced {
                replica,
                wants: parts.next()?.parse().ok(),
                reads: layouts(parts.next()?),
                writes: layouts(parts.next()?),
            })
        })
        .collect()
}

impl Layouts {
    /// The groups where the configured layout should be filled now: it is not `ok` there, every
    /// live replica announces that it writes it, and no replica answers from a near-cache without
    /// announcing (an older release, which would write only its own layout).
    pub(crate) fn to_fill(&self) -> Vec<Group> {
        let view = self.view.lock().expect("view lock");
        let configured = self.configured();
        let groups: Vec<Group> = (0..self.configured.group_count())
            .filter(|&g| !view.validity.missing(g) && !view.validity.ok(g, configured))
            .collect();
        let written = view.live.iter().all(|a| a.writes.contains(&configured));
        if groups.is_empty() || !written || view.live.is_empty() {
            return Vec::new();
        }
        if !view.silent.is_empty() {
            tracing::warn!(replicas = ?view.silent, layout = %configured,
                "replicas answer from a near-cache without announcing a bucket layout (an older \
                 release?): the layout is not filled until they are gone");
            return Vec::new();
        }
        // A silent replica's near-cache may be loading (no lease meanwhile), or not yet seen by a
        // replica that just started: both wait a while.
        let last_silent = *self.silent_seen.lock().expect("silent lock");
        let recent = |at: Instant| at.elapsed() < LIVE_FOR;
        if recent(self.started) || last_silent.is_some_and(recent) {
            return Vec::new();
        }
        groups
    }

    pub(crate) fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().expect("view lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_well_formed_announcements_count() {
        let parsed = parse_registry(
            vec![
                ("a".into(), "1000|v2b16|v2b16|v2b16,v2b17".into()),
                ("b".into(), "100|v2b17|v2b16|v2b16,v2b17".into()),
                ("c".into(), "garbage".into()),
            ],
            5_500,
        );
        assert_eq!(
            parsed,
            vec![Announced {
                replica: "a".into(),
                wants: Some(Layout::with_bits(16)),
                reads: vec![Layout::with_bits(16)],
                writes: vec![Layout::with_bits(16), Layout::with_bits(17)],
            }]
        );
    }
}
