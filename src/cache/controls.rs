//! Which controls version each replica has loaded, so that a replica changing a control can wait
//! until every live replica answers by it before it returns. Redis only speeds that up: the
//! controls themselves live in the store, and without Redis the change waits out the poll instead.

use super::{Cache, CacheError, Context};
use crate::domain::Millis;
use redis::AsyncCommands;

/// One replica's report: the version it loaded, when (wall clock) it last read the store, and how
/// often it reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) replica: String,
    pub(crate) version: i64,
    pub(crate) at: Millis,
    pub(crate) every: Millis,
}

impl Cache {
    pub(crate) async fn report_controls_seen(
        &self,
        replica: &str,
        version: i64,
        at: Millis,
        every: Millis,
    ) -> Result<(), CacheError> {
        let report = format!("{version}:{at}:{every}");
        self.conn()
            .hset::<_, _, _, ()>(self.keys.controls_seen(), replica, report)
            .await
            .context("HSET controls-seen")
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
                let mut parts = value.splitn(3, ':').map(str::parse);
                Some(Seen {
                    replica,
                    version: parts.next()?.ok()?,
                    at: parts.next()?.ok()?,
                    every: parts.next()?.ok()?,
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
}
