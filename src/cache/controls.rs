//! Which controls version each replica has loaded, so that a replica changing a control can wait
//! until every live replica answers by it before it returns. Redis only speeds that up: the
//! controls themselves live in the store, and without Redis the change waits out the poll instead.

use super::{Cache, CacheError, Context};
use crate::domain::Millis;
use redis::AsyncCommands;

/// One replica's report: the version it loaded, and when (wall clock) it last read the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub replica: String,
    pub version: i64,
    pub at: Millis,
}

impl Cache {
    pub async fn report_controls_seen(
        &self,
        replica: &str,
        version: i64,
        at: Millis,
    ) -> Result<(), CacheError> {
        self.conn()
            .hset::<_, _, _, ()>(
                self.keys.controls_seen(),
                replica,
                format!("{version}:{at}"),
            )
            .await
            .context("HSET controls-seen")
    }

    pub async fn controls_seen(&self) -> Result<Vec<Seen>, CacheError> {
        let all: Vec<(String, String)> = self
            .conn()
            .hgetall(self.keys.controls_seen())
            .await
            .context("HGETALL controls-seen")?;
        Ok(all
            .into_iter()
            .filter_map(|(replica, value)| {
                let (version, at) = value.split_once(':')?;
                Some(Seen {
                    replica,
                    version: version.parse().ok()?,
                    at: at.parse().ok()?,
                })
            })
            .collect())
    }

    /// Drops the reports of replicas gone for good (they would only be skipped anyway).
    pub async fn forget_controls_seen(&self, replicas: &[String]) -> Result<(), CacheError> {
        if replicas.is_empty() {
            return Ok(());
        }
        self.conn()
            .hdel::<_, _, ()>(self.keys.controls_seen(), replicas)
            .await
            .context("HDEL controls-seen")
    }
}
