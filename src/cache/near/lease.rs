//! The lease protocol: a replica's renewals in [`Keys::near_replicas`](layout::Keys::near_replicas)
//! (each reporting the last change applied), and a writer's wait until every live lease has
//! applied its change ([`GroupCopy::settled`]). Both sides read Redis's clock, in Lua, so that no
//! two replicas' clocks are compared.

use super::{GroupCopy, LEASE, Stopped};
use crate::cache::Conn;
use crate::cache::{CacheError, Context, layout};
use redis::Script;
use std::{
    sync::{LazyLock, atomic::Ordering},
    time::{Duration, Instant},
};

/// How often a writer waiting on other replicas looks at their acknowledgements.
const POLL: Duration = Duration::from_millis(1);
/// Pause before a writer reads the leases again after the read failed.
const PEEK_RETRY: Duration = Duration::from_millis(20);
/// A writer gives up after this (a lease always runs out well before).
const SETTLE_LIMIT: Duration = Duration::from_secs(3);

/// A renewal as Redis recorded it.
pub(super) struct Lease {
    /// The registry value written, which the next renewal expects to find.
    pub(super) entry: String,
    /// When (this replica's clock) the renewal was sent: the lease runs from no earlier.
    pub(super) sent: Instant,
    /// The previous lease had run out by Redis's clock when this renewal came: writers meanwhile
    /// stopped waiting for this copy.
    pub(super) lapsed: bool,
}

/// One replica's line in the registry.
#[derive(Debug, PartialEq, Eq)]
struct Registered {
    replica: String,
    applied: u64,
    renewed_at: u64,
}

/// The leases as one read of Redis found them.
#[derive(Debug)]
pub struct Leases {
    /// When (this process's clock) the read was sent.
    asked: Instant,
    /// Redis's clock (ms) when it answered.
    now: u64,
    renewals: u64,
    registry: Vec<Registered>,
}

impl Leases {
    pub(in crate::cache) fn new(
        asked: Instant,
        now: u64,
        renewals: u64,
        registry: Vec<(String, String)>,
    ) -> Leases {
        Leases {
            asked,
            now,
            renewals,
            registry: parse_registry(registry),
        }
    }

    /// The replicas other than `me` that hold a live lease and have not applied `change`.
    fn behind<'a>(&'a self, change: u64, me: &'a str) -> impl Iterator<Item = &'a Registered> {
        let lease = LEASE.as_millis() as u64;
        self.registry.iter().filter(move |r| {
            r.replica != me && r.renewed_at + lease > self.now && r.applied < change
        })
    }
}

/// What a writer knows of the leases it may not see in the registry.
pub(super) struct View {
    /// The highest renewal count seen, and when the read that returned it came back: a smaller count
    /// from a read sent after that means Redis lost leases (reads in flight together may come back
    /// in any order).
    pub(super) renewals: u64,
    pub(super) seen_at: Instant,
    /// Until then a writer also waits out leases it cannot see.
    pub(super) blind_until: Instant,
}

impl GroupCopy {
    /// Returns once every replica that may answer from memory has applied `change`, or its lease has
    /// run out; at once for 0 (nothing fed). `leases`: a read of them made after the write, if the
    /// write brought one back. Fails when that cannot be known in time (Redis away).
    pub(crate) async fn settled(
        &self,
        change: u64,
        leases: Option<Leases>,
    ) -> Result<(), NotSettled> {
        if change == 0 {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        if self.registered.load(Ordering::Acquire) {
            let mut applied = self.applied.subscribe();
            let here =
                applied.wait_for(|&a| a >= change || !self.registered.load(Ordering::Acquire));
            tokio::time::timeout_at(deadline, here)
                .await
                .map_err(|_| self.local_timeout(change))?
                .map_err(|_| self.local_timeout(change))?;
        }
        let mut leases = leases;
        loop {
            let read = match leases.take() {
                Some(read) => Ok(read),
                None => self.peek().await,
            };
            let read = match read {
                Ok(read) => read,
                // A slow or reconnecting Redis: ask again while there is time.
                Err(e) if tokio::time::Instant::now() + PEEK_RETRY < deadline => {
                    tracing::debug!(error = %e, "reading the near-cache leases; retrying");
                    tokio::time::sleep(PEEK_RETRY).await;
                    continue;
                }
                Err(e) => return Err(NotSettled::Redis(e)),
            };
            let blind_until = self.observe(read.renewals, read.asked);
            let behind = read.behind(change, &self.replica).next().is_some();
            let blind = Instant::now() < blind_until;
            if !behind && !blind {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let mut waiting: Vec<String> = read
                    .behind(change, &self.replica)
                    .map(|r| {
                        format!(
                            "replica {} at change {} (renewed {} ms before)",
                            r.replica,
                            r.applied,
                            read.now.saturating_sub(r.renewed_at)
                        )
                    })
                    .collect();
                if blind {
                    waiting.push("leases Redis lost".into());
                }
                return Err(NotSettled::Timeout(format!(
                    "change {change}: waiting on {}",
                    waiting.join(", ")
                )));
            }
            let pause = if behind {
                POLL
            } else {
                blind_until.saturating_duration_since(Instant::now())
            };
            tokio::time::sleep(pause).await;
        }
    }

    fn local_timeout(&self, change: u64) -> NotSettled {
        NotSettled::Timeout(format!(
            "change {change}: waiting on this replica, at change {}",
            *self.applied.borrow()
        ))
    }

    /// Notes a renewal count read from Redis by a read sent at `asked`; returns until when writers
    /// must also wait out leases they cannot see.
    fn observe(&self, renewals: u64, asked: Instant) -> Instant {
        let mut view = self.view.lock().expect("view lock");
        if renewals < view.renewals && asked > view.seen_at {
            tracing::warn!(
                renewals,
                seen = view.renewals,
                "Redis lost near-cache leases; writes wait a lease out"
            );
            view.blind_until = view.blind_until.max(Instant::now() + LEASE);
            view.renewals = renewals;
            view.seen_at = Instant::now();
        } else if renewals > view.renewals {
            view.renewals = renewals;
            view.seen_at = Instant::now();
        }
        view.blind_until
    }

    /// Reads the leases: Redis's clock, the renewal count and the registry, in one round trip.
    async fn peek(&self) -> Result<Leases, CacheError> {
        let keys = self.keys();
        let asked = Instant::now();
        let (now, renewals, registry): (u64, u64, Vec<(String, String)>) = PEEK
            .key(keys.near_replicas())
            .key(keys.near_renewals())
            .invoke_async(&mut self.cache.conn())
            .await
            .context("reading the near-cache leases")?;
        Ok(Leases::new(asked, now, renewals, registry))
    }

    /// Renews this replica's lease, reporting `applied`; `previous` is the entry the last renewal
    /// wrote (`None` when registering).
    pub(super) async fn renew(
        &self,
        conn: &mut Conn,
        applied: u64,
        previous: Option<&str>,
        generation: &str,
    ) -> Result<Lease, Stopped> {
        let keys = self.keys();
        let seen = self.cache.writes_seen(self.group);
        let sent = Instant::now();
        let (kept, entry, complete, renewals, lapsed, writes): (
            bool,
            String,
            String,
            u64,
            bool,
            u64,
        ) = RENEW
            .key(keys.near_replicas())
            .key(keys.near_renewals())
            .key(keys.generation())
            .key(keys.complete())
            .key(keys.writes())
            .arg(&self.replica)
            .arg(applied)
            .arg(previous.unwrap_or(""))
            .arg(10 * LEASE.as_millis() as u64)
            .arg(LEASE.as_millis() as u64)
            .invoke_async(conn)
            .await
            .context("renewing the near-cache lease")?;
        self.observe(renewals, sent);
        if writes < seen {
            return Err(Stopped::WentBack { writes, seen });
        }
        if previous.is_some() && !kept {
            return Err(Stopped::LeaseLost);
        }
        if complete != generation {
            return Err(Stopped::Rebuilt);
        }
        Ok(Lease {
            entry,
            sent,
            lapsed: previous.is_some() && lapsed,
        })
    }
}

/// Why a write could not confirm that every replica answers by it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotSettled {
    #[error("the near-cache leases could not be read")]
    Redis(#[source] CacheError),
    /// What it was still waiting on.
    #[error("replicas did not confirm the change in time ({0})")]
    Timeout(String),
}

fn parse_registry(registry: Vec<(String, String)>) -> Vec<Registered> {
    registry
        .into_iter()
        .filter_map(|(replica, value)| {
            let mut parts = value.split(':').map(str::parse);
            Some(Registered {
                replica,
                applied: parts.next()?.ok()?,
                renewed_at: parts.next()?.ok()?,
            })
        })
        .collect()
}

/// KEYS: registry, renewal counter. Returns Redis's clock (ms), the counter and the registry.
static PEEK: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{}return leases({{}})", layout::leases_fn(1, 2))));
static RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{}{RENEW_SCRIPT}", layout::NOW_MS_FN)));

/// Renews one replica's lease. KEYS: registry, renewal counter, generation, complete, write counter.
/// ARGV: replica, applied, the entry its last renewal wrote ('' when registering), how long (ms) a
/// silent replica's entry is kept, the lease (ms). Returns whether the previous entry was found as
/// written, the new entry, the generation the cache is complete under ('' if none), the renewal
/// count, whether the previous lease had run out (as writers count it: renewed + lease <= now), and
/// the write counter.
const RENEW_SCRIPT: &str = r"
local now = now_ms()
local kept = (redis.call('HGET', KEYS[1], ARGV[1]) or '') == ARGV[3]
local before = tonumber(string.match(ARGV[3], '^%d+:(%d+)') or '')
local lapsed = before ~= nil and before + tonumber(ARGV[5]) <= now
local n = redis.call('INCR', KEYS[2])
local entry = ARGV[2] .. ':' .. now .. ':' .. n
redis.call('HSET', KEYS[1], ARGV[1], entry)
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local renewed = tonumber(string.match(all[i + 1], '^%d+:(%d+)'))
  if renewed and renewed + tonumber(ARGV[4]) < now then redis.call('HDEL', KEYS[1], all[i]) end
end
local gen = redis.call('GET', KEYS[3])
local complete = redis.call('GET', KEYS[4])
local whole = ''
if gen and gen == complete then whole = gen end
local writes = tonumber(redis.call('GET', KEYS[5]) or '0')
return {kept and 1 or 0, entry, whole, n, lapsed and 1 or 0, writes}
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;

    /// A renewal that comes after the lease ran out says so, and the follower then catches up
    /// before it answers again (writers stopped waiting for it meanwhile); one in time does not;
    /// one that finds its entry gone is lost, whatever the time.
    #[tokio::test]
    async fn a_renewal_after_the_lease_ran_out_is_lapsed() {
        let prefix = format!("lapse{}:", uuid::Uuid::new_v4().simple());
        let all = layout::Keys::new(&prefix, 2);
        let keys = all.group(0).clone();
        // The test Redis, as the integration tests find it (scripts/test may start a private one).
        let url = std::env::var("SUPPRESSD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let cache = Cache::connect_url(&url, all).await.unwrap();
        let near = GroupCopy::new(cache.clone(), "r1", 0);
        let mut conn = cache.conn();
        let () = redis::pipe()
            .set(keys.generation(), "g")
            .set(keys.complete(), "g")
            .query_async(&mut conn)
            .await
            .unwrap();

        let first = near.renew(&mut conn, 0, None, "g").await.unwrap();
        assert!(!first.lapsed, "registering");
        let in_time = near
            .renew(&mut conn, 1, Some(&first.entry), "g")
            .await
            .unwrap();
        assert!(!in_time.lapsed, "renewed at once");
        tokio::time::sleep(LEASE + Duration::from_millis(20)).await;
        let late = near
            .renew(&mut conn, 2, Some(&in_time.entry), "g")
            .await
            .unwrap();
        assert!(late.lapsed, "renewed a lease late");
        let () = redis::cmd("HDEL")
            .arg(keys.near_replicas())
            .arg("r1")
            .query_async(&mut conn)
            .await
            .unwrap();
        let gone = near.renew(&mut conn, 3, Some(&late.entry), "g").await;
        assert!(matches!(gone, Err(Stopped::LeaseLost)), "{:?}", gone.err());

        let () = redis::cmd("DEL")
            .arg(keys.near_replicas())
            .arg(keys.near_renewals())
            .arg(keys.generation())
            .arg(keys.complete())
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    #[test]
    fn registry_lines_parse_and_bad_ones_are_skipped() {
        let parsed = parse_registry(vec![
            ("a".into(), "12:1800000000000:7".into()),
            ("b".into(), "garbage".into()),
        ]);
        assert_eq!(
            parsed,
            vec![Registered {
                replica: "a".into(),
                applied: 12,
                renewed_at: 1_800_000_000_000,
            }]
        );
    }
}
