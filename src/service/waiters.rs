//! `DURABLE` opt-outs waiting for their commit. Any replica's worker may commit a record, so workers
//! announce committed receipts on a Redis pub/sub channel and every replica's listener wakes its own
//! waiters. A missed announcement costs only latency: a waiter that times out asks the store.

use crate::{cache::Cache, domain::ReceiptId};
use std::{collections::HashMap, sync::Mutex, time::Duration};
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Waiters {
    waiting: Mutex<HashMap<ReceiptId, oneshot::Sender<()>>>,
}

impl Waiters {
    /// Returns a receiver that completes when `id` is announced as committed.
    pub fn register(&self, id: ReceiptId) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiters lock").insert(id, tx);
        rx
    }

    pub fn forget(&self, id: ReceiptId) {
        self.waiting.lock().expect("waiters lock").remove(&id);
    }

    /// Wakes the waiters of these receipts, if they are on this replica.
    pub fn committed(&self, ids: impl IntoIterator<Item = ReceiptId>) {
        let mut waiting = self.waiting.lock().expect("waiters lock");
        for id in ids {
            if let Some(tx) = waiting.remove(&id) {
                let _ = tx.send(());
            }
        }
    }

    /// Listens for announcements until shutdown, resubscribing whenever Redis drops the connection.
    /// `ready` is cancelled once the first subscription is in place.
    pub async fn listen(
        &self,
        cache: Cache,
        ready: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let channel = cache.keys().durable_channel();
        while !shutdown.is_cancelled() {
            let subscribed = async {
                let mut pubsub = cache.client().get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = match subscribed.await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to commit announcements; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            ready.cancel();
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    msg = messages.next() => match msg {
                        Some(msg) => {
                            let payload = msg.get_payload_bytes();
                            let ids = std::str::from_utf8(payload)
                                .unwrap_or_default()
                                .split(',')
                                .filter_map(|id| ReceiptId::parse("receipt", id).ok());
                            self.committed(ids);
                        }
                        None => break,
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
            tracing::warn!("commit announcements interrupted; resubscribing");
        }
    }
}
