//! The controls in Redis, beside the store that is their source of truth. Two things live here:
//! - **the published snapshot** (`{prefix}controls`: `version`, `snapshot`): every replica that
//!   reads a newer version from the store publishes it, so a replica cut from the store still
//!   follows every change (SPEC §6) and can confirm that what it holds is current. A publish only
//!   ever moves the version forward (one script), so replicas racing to publish never go back.
//! - **the reports** (`{prefix}controls-seen`): which version each replica answers by, when it last
//!   confirmed it, and when it last said so; what a change waits on before it returns.
//!
//! The snapshot's text is the domain's ([`Controls::encode`](crate::domain::control::Controls));
//! this module only stores it.

use super::{Cache, CacheError, Context};
use crate::domain::Millis;
use redis::{AsyncCommands, Script};
use std::sync::LazyLock;

/// Writes `snapshot` at `version` unless the published version is already as new (or whatever is
/// there, when ARGV[3] is 1: the store was restored from a backup and went back).
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local have = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
          if ARGV[3] ~= '1' and have >= tonumber(ARGV[1]) then return 0 end
          redis.call('HSET', KEYS[1], 'version', ARGV[1], 'snapshot', ARGV[2])
          return 1",
    )
});

/// One replica's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) replica: String,
    /// The controls version it answers by.
    pub(crate) version: i64,
    /// When (wall clock) it last confirmed that version was current, from the store or Redis, as of
    /// the poll before the report (a poll reports as it reads).
    pub(crate) confirmed_at: Millis,
    /// How often it polls.
    pub(crate) every: Millis,
    /// When it wrote this report; a replica that stops reporting is taken for gone.
    pub(crate) reported_at: Millis,
    /// How long after `confirmed_at` it stops answering "send" unless it confirms again.
    pub(crate) stale_after: Millis,
}

impl Seen {
    fn encode(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            self.version, self.confirmed_at, self.every, self.reported_at, self.stale_after
        )
    }
}

impl Cache {
    pub(crate) async fn report_controls_seen(&self, seen: &Seen) -> Result<(), CacheError> {
        self.conn()
            .hset::<_, _, _, ()>(self.keys.controls_seen(), &seen.replica, seen.encode())
            .await
            .context("HSET controls-seen")
    }

    /// A poll's one round trip: writes the replica's report and reads the version published, if
    /// any.
    pub(crate) async fn report_and_read_controls_version(
        &self,
        seen: &Seen,
    ) -> Result<Option<i64>, CacheError> {
        let (version,): (Option<i64>,) = redis::pipe()
            .hset(self.keys.controls_seen(), &seen.replica, seen.encode())
            .ignore()
            .hget(self.keys.controls(), "version")
            .query_async(&mut self.conn())
            .await
            .context("HSET controls-seen, HGET controls version")?;
        Ok(version)
    }

    pub(crate) async fn controls_seen(&self) -> Result<Vec<Seen>, CacheError> {
        let all: Vec<(String, String)> = self
            .conn()
            .hgetall(self.keys.controls_seen())
            .await
            .context("HGETALL controls-seen")?;
        Ok(all
            .into_iter()
            .filter_map(|(replica, value)| {
                let mut parts = value.split(':').map(str::parse);
                let (version, confirmed_at, every) = (
                    parts.next()?.ok()?,
                    parts.next()?.ok()?,
                    parts.next()?.ok()?,
                );
                // A report of an older release (three fields) was written when it confirmed.
                let reported_at = parts.next().and_then(Result::ok).unwrap_or(confirmed_at);
                let stale_after = parts.next().and_then(Result::ok).unwrap_or(1_000);
                Some(Seen {
                    replica,
                    version,
                    confirmed_at,
                    every,
                    reported_at,
                    stale_after,
                })
            })
            .collect())
    }

    /// Drops the reports of replicas gone for good (they would only be skipped anyway).
    pub(crate) async fn forget_controls_seen(&self, replicas: &[String]) -> Result<(), CacheError> {
        if replicas.is_empty() {
            return Ok(());
        }
        self.conn()
            .hdel::<_, _, ()>(self.keys.controls_seen(), replicas)
            .await
            .context("HDEL controls-seen")
    }

    /// Publishes the controls at `version`; `false` when a version as new was already there (and
    /// not `replace`d).
    pub(crate) async fn publish_controls(
        &self,
        version: i64,
        snapshot: &str,
        replace: bool,
    ) -> Result<bool, CacheError> {
        let written: i64 = PUBLISH
            .key(self.keys.controls())
            .arg(version)
            .arg(snapshot)
            .arg(if replace { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .context("publishing the controls")?;
        Ok(written == 1)
    }

    /// The published version and its snapshot, if any.
    pub(crate) async fn published_controls(&self) -> Result<Option<(i64, String)>, CacheError> {
        let (version, snapshot): (Option<i64>, Option<String>) = redis::cmd("HMGET")
            .arg(self.keys.controls())
            .arg("version")
            .arg("snapshot")
            .query_async(&mut self.conn())
            .await
            .context("HMGET controls")?;
        Ok(version.zip(snapshot))
    }

    /// TESTS ONLY: how long this replica's next check is told to pause (taken once), if at all.
    #[cfg(feature = "failpoints")]
    pub(crate) async fn check_pause_failpoint(&self, replica: &str) -> Option<u64> {
        let key = self.keys.check_pause_failpoint(replica);
        redis::cmd("GETDEL")
            .arg(key)
            .query_async::<Option<u64>>(&mut self.conn())
            .await
            .ok()
            .flatten()
    }

    /// TESTS ONLY: what the test cut this replica's controls poller from: (store, Redis).
    #[cfg(feature = "failpoints")]
    pub(crate) async fn controls_cut_failpoint(&self, replica: &str) -> (bool, bool) {
        let key = self.keys.controls_cut_failpoint(replica);
        let told: Option<String> = self.conn().get(key).await.unwrap_or(None);
        match told.as_deref() {
            Some("store") => (true, false),
            Some("store+redis") => (true, true),
            _ => (false, false),
        }
    }
}
