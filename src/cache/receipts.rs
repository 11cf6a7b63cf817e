//! A receipt's life in Redis as its callers see it: whether it is still queued in the write-behind
//! stream (and for which tenant), and the announcements that a commit made receipts durable. The
//! stream's own reading and settling is [`super::stream`]'s; this reads what it leaves behind.

use super::{
    Cache, CacheError, Context,
    stream::{Entry, delivery},
};
use crate::domain::ReceiptId;
use redis::AsyncCommands;

impl Cache {
    /// Claims the one confirmation an opt-out may get (`service::confirmations`): `true` for the
    /// first claim within `ttl`, `false` after.
    pub(crate) async fn claim_confirmation(
        &self,
        id: ReceiptId,
        ttl: std::time::Duration,
    ) -> Result<bool, CacheError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.confirmed(id))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut self.conn())
            .await
            .context("SET NX confirmation claim")?;
        Ok(set.is_some())
    }

    /// Whether a receipt is queued (its marker is in Redis) and, while its entry is still in the
    /// stream, the tenant it was recorded for: `Some(None)` once the entry has left (committed, or
    /// set aside as unreadable).
    /// The id does not say which slot group holds the receipt, so every group is asked, at once.
    pub async fn queued_tenant(&self, id: ReceiptId) -> Result<Option<Option<String>>, CacheError> {
        let asked = self.keys.groups().iter().map(|keys| async move {
            let entry: Option<String> = self
                .conn()
                .get(keys.receipt(id))
                .await
                .context("GET receipt marker")?;
            Ok::<_, CacheError>(entry.map(|entry| (keys, entry)))
        });
        let found = futures_util::future::try_join_all(asked).await?;
        let Some((keys, entry)) = found.into_iter().flatten().next() else {
            return Ok(None);
        };
        let found: Vec<Entry> = self
            .conn()
            .xrange(keys.stream(), &entry, &entry)
            .await
            .context("XRANGE receipt entry")?;
        let tenant = found
            .into_iter()
            .next()
            .and_then(|e| delivery(e).record.ok())
            .map(|record| record.scope.tenant);
        Ok(Some(tenant))
    }

    /// Subscribes to the commit announcements that acknowledging committed entries publishes: each
    /// item is the receipts one commit made durable. The stream ends when Redis drops the
    /// connection; subscribe again then (an announcement missed meanwhile costs a waiter only
    /// latency: it asks the store when its wait runs out).
    pub async fn commit_announcements(
        &self,
    ) -> Result<impl tokio_stream::Stream<Item = Vec<ReceiptId>> + Send + use<>, CacheError> {
        let mut pubsub = self
            .redis()
            .pubsub()
            .await
            .context("connecting for commit announcements")?;
        pubsub
            .subscribe(self.keys.durable_channel())
            .await
            .context("subscribing to commit announcements")?;
        Ok(tokio_stream::StreamExt::map(
            pubsub.into_on_message(),
            |msg| {
                std::str::from_utf8(msg.get_payload_bytes())
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|id| ReceiptId::parse("receipt", id).ok())
                    .collect()
            },
        ))
    }
}
