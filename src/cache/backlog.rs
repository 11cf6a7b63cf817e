//! The write-behind streams as the rest of the service sees them: how far behind the worker is (for
//! health, metrics and the backlog limit), and a barrier that says when everything queued so far
//! has been committed. Each slot group has its stream; these read them all, at once. The streams'
//! reading and settling is [`super::stream`]'s.

use super::{
    Cache, CacheError, Context,
    layout::{Group, GroupKeys},
    stream::GROUP,
};
use crate::domain::Millis;

/// Backlog figures, for health, metrics and the backlog limit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Entries not yet committed (read or not).
    pub length: u64,
    /// Entries delivered to a consumer and not yet acknowledged.
    pub pending: u64,
    /// When the oldest of those was added to the stream (its id's time).
    pub(crate) oldest_pending_at: Option<Millis>,
}

/// Where each group's write-behind stream stood: its newest entry, if it held any. A barrier for
/// [`Cache::settled_through`].
pub type StreamHeads = Vec<(Group, String)>;

impl Cache {
    /// The newest entry of every group's write-behind stream (groups whose stream is empty are
    /// left out): a barrier for [`Cache::settled_through`].
    pub async fn stream_head(&self) -> Result<StreamHeads, CacheError> {
        let asked = self.keys.groups().iter().map(|keys| async move {
            let newest: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
                .arg(keys.stream())
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut self.conn())
                .await
                .context("XREVRANGE")?;
            Ok::<_, CacheError>(newest.into_iter().next().map(|(id, _)| (keys.group(), id)))
        });
        Ok(futures_util::future::try_join_all(asked)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Whether every entry up to the barrier has left each group's stream: committed (or
    /// dead-lettered), since the worker deletes what it settles.
    pub async fn settled_through(&self, barrier: &StreamHeads) -> Result<bool, CacheError> {
        let asked = barrier.iter().map(|(group, head)| async move {
            let left: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(self.keys.group(*group).stream())
                .arg("-")
                .arg(head)
                .arg("COUNT")
                .arg(1)
                .query_async(&mut self.conn())
                .await
                .context("XRANGE")?;
            Ok::<_, CacheError>(left.is_empty())
        });
        Ok(futures_util::future::try_join_all(asked)
            .await?
            .into_iter()
            .all(|settled| settled))
    }

    /// The write-behind backlog, summed over the groups' streams.
    pub async fn backlog(&self) -> Result<Backlog, CacheError> {
        let asked = self
            .keys
            .groups()
            .iter()
            .map(|keys| self.group_backlog(keys));
        let mut total = Backlog::default();
        for b in futures_util::future::try_join_all(asked).await? {
            total.length += b.length;
            total.pending += b.pending;
            total.oldest_pending_at = match (total.oldest_pending_at, b.oldest_pending_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(total)
    }

    /// One group's write-behind backlog.
    async fn group_backlog(&self, keys: &GroupKeys) -> Result<Backlog, CacheError> {
        let mut conn = self.conn();
        let length: u64 = redis::cmd("XLEN")
            .arg(keys.stream())
            .query_async(&mut conn)
            .await
            .context("XLEN")?;
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(keys.stream())
            .arg(GROUP)
            .query_async(&mut conn)
            .await
            .or_else(|e| match e.code() {
                Some("NOGROUP") => Ok(redis::Value::Nil),
                _ => Err(e),
            })
            .context("XPENDING")?;
        // The summary form: [count, smallest id, greatest id, per-consumer counts].
        let (pending, oldest_pending_at) = match pending {
            redis::Value::Array(items) => {
                let count = match items.first() {
                    Some(redis::Value::Int(n)) => *n as u64,
                    _ => 0,
                };
                let oldest = match items.get(1) {
                    Some(redis::Value::BulkString(id)) => std::str::from_utf8(id)
                        .ok()
                        .and_then(|id| id.split('-').next()?.parse().ok()),
                    _ => None,
                };
                (count, oldest)
            }
            _ => (0, None),
        };
        Ok(Backlog {
            length,
            pending,
            oldest_pending_at,
        })
    }
}
